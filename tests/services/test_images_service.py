"""ImagesService over the real SQLite image store, through real stubs and ctrd's call handling (in
memory): containerd 1.6's answers and events, ``Delete`` with ``sync``, namespace authorization,
and the plugin registrations."""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status as G
from grpclib.exceptions import GRPCError

from ctrd import namespaces
from ctrd.api.containerd import types as api_types
from ctrd.api.containerd.services.images import v1 as api
from ctrd.api.google.protobuf import FieldMask
from ctrd.authz import Peer, Policy, Principal
from ctrd.events.exchange import Exchange
from ctrd.images import mediatypes
from ctrd.metadata import DB, CollectingImageStore, SqliteImageStore
from ctrd.server.authz import Authorizer
from ctrd.services.events import EventsService
from ctrd.services.images import ImagesService
from ctrd.wire.convert import image_from_proto, image_to_proto
from ctrd.wire.typeurl import unpack_event

from .conftest import Serve
from .test_events_service import Sub

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
MD = {namespaces.GRPC_HEADER: "default"}


class Publisher:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    async def publish(self, namespace: str, topic: str, event: Any) -> None:
        self.events.append((namespace, topic, event))


def target(digest: str = D1, size: int = 10, media_type: str = mediatypes.OCI_MANIFEST, **ann: str) -> Any:
    return api_types.Descriptor(media_type=media_type, digest=digest, size=size, annotations=ann)


def pb_image(name: str, desc: Any = None, **labels: str) -> api.Image:
    return api.Image(name=name, target=desc if desc is not None else target(), labels=labels)


class Env:
    def __init__(self, db: DB, channel: Channel, publisher: Publisher, collections: list[int]) -> None:
        self.db = db
        self.publisher = publisher
        self.collections = collections
        self.stub = api.ImagesStub(channel, metadata=MD)
        self.bare = api.ImagesStub(channel)

    def topics(self) -> list[str]:
        return [topic for _, topic, _ in self.publisher.events]


@pytest.fixture
async def env(serve: Serve, tmp_path: Path) -> AsyncIterator[Env]:
    db = DB(tmp_path / "meta.db")
    await db.open()
    publisher = Publisher()
    collections: list[int] = []

    async def collect() -> None:
        collections.append(1)

    store = CollectingImageStore(SqliteImageStore(db), collect)
    try:
        async with serve(ImagesService(store, publisher)) as ch:
            yield Env(db, ch, publisher, collections)
    finally:
        await db.close()


async def error_of(coro: Any) -> GRPCError:
    with pytest.raises(GRPCError) as ei:
        await coro
    return ei.value


async def test_create_get_and_event(env: Env) -> None:
    before = _dt.datetime.now(_dt.UTC)
    resp = await env.stub.create(
        api.CreateImageRequest(image=pb_image("docker.io/library/x:1", target(a="1", gone=""), k="v", e=""))
    )
    img = resp.image
    assert img is not None
    assert img.name == "docker.io/library/x:1"
    assert img.labels == {"k": "v"}
    assert img.target == target(a="1")
    assert img.created_at is not None
    assert img.created_at == img.updated_at
    assert before - _dt.timedelta(seconds=1) <= img.created_at <= _dt.datetime.now(_dt.UTC)
    got = await env.stub.get(api.GetImageRequest(name="docker.io/library/x:1"))
    assert got.image == img
    assert env.publisher.events == [
        ("default", "/images/create", api.ImageCreate(name=img.name, labels={"k": "v"}))
    ]


async def test_errors_are_containerds(env: Env) -> None:
    await env.stub.create(api.CreateImageRequest(image=pb_image("x")))
    cases = [
        (
            env.stub.create(api.CreateImageRequest(image=pb_image("x"))),
            G.ALREADY_EXISTS,
            'image "x": already exists',
        ),
        (env.stub.get(api.GetImageRequest(name="nope")), G.NOT_FOUND, 'image "nope": not found'),
        (env.stub.delete(api.DeleteImageRequest(name="nope")), G.NOT_FOUND, 'image "nope": not found'),
        (
            env.stub.update(api.UpdateImageRequest(image=pb_image("nope"))),
            G.NOT_FOUND,
            'image "nope": not found',
        ),
        (
            env.stub.create(api.CreateImageRequest()),
            G.INVALID_ARGUMENT,
            "Image.Name required: invalid argument",
        ),
        (
            env.stub.update(api.UpdateImageRequest(image=pb_image(""))),
            G.INVALID_ARGUMENT,
            "Image.Name required: invalid argument",
        ),
        (
            env.stub.create(api.CreateImageRequest(image=api.Image(name="y"))),
            G.INVALID_ARGUMENT,
            'Target.Digest "" invalid: invalid checksum digest format: invalid argument',
        ),
        (
            env.stub.create(api.CreateImageRequest(image=pb_image("y", target(size=0)))),
            G.INVALID_ARGUMENT,
            "Target.Size must be greater than zero: invalid argument",
        ),
        (
            env.stub.create(api.CreateImageRequest(image=pb_image("y", target(media_type="")))),
            G.INVALID_ARGUMENT,
            "Target.MediaType must be set: invalid argument",
        ),
        (
            env.stub.update(
                api.UpdateImageRequest(image=pb_image("x"), update_mask=FieldMask(paths=["name"]))
            ),
            G.INVALID_ARGUMENT,
            'cannot update "name" field on image "x": invalid argument',
        ),
        (
            env.stub.list(api.ListImagesRequest(filters=["name=="])),
            G.INVALID_ARGUMENT,
            None,
        ),
        (
            env.bare.get(api.GetImageRequest(name="x")),
            G.FAILED_PRECONDITION,
            "namespace is required: failed precondition",
        ),
    ]
    for call, status, message in cases:
        err = await error_of(call)
        assert err.status is status, (err.status, err.message)
        if message is not None:
            assert err.message == message
    assert env.topics() == ["/images/create"]  # failures publish nothing


async def test_update_with_and_without_mask(env: Env) -> None:
    created = (
        await env.stub.create(api.CreateImageRequest(image=pb_image("x", target(a="1"), a="1", b="2")))
    ).image
    assert created is not None
    await asyncio.sleep(0.002)
    resp = await env.stub.update(
        api.UpdateImageRequest(
            image=pb_image("x", target(D2, 99, a="10"), a="10"),
            update_mask=FieldMask(paths=["labels.a", "labels.b", "annotations.a"]),
        )
    )
    img = resp.image
    assert img is not None
    assert img.labels == {"a": "10"}
    assert img.target == target(a="10")  # only the annotation changed
    assert img.created_at == created.created_at
    assert img.updated_at is not None
    assert created.updated_at is not None
    assert img.updated_at > created.updated_at
    # no mask (what ctr content fetch sends after ALREADY_EXISTS): all but created_at replaced
    resp = await env.stub.update(api.UpdateImageRequest(image=pb_image("x", target(D2, 99), n="1")))
    assert resp.image is not None
    assert (resp.image.labels, resp.image.target, resp.image.created_at) == (
        {"n": "1"},
        target(D2, 99),
        created.created_at,
    )
    # an empty mask is no mask
    resp = await env.stub.update(
        api.UpdateImageRequest(image=pb_image("x", target(D1, 5)), update_mask=FieldMask(paths=[]))
    )
    assert resp.image is not None
    assert (resp.image.labels, resp.image.target) == ({}, target(D1, 5))
    assert env.publisher.events[1:] == [
        ("default", "/images/update", api.ImageUpdate(name="x", labels={"a": "10"})),
        ("default", "/images/update", api.ImageUpdate(name="x", labels={"n": "1"})),
        ("default", "/images/update", api.ImageUpdate(name="x", labels={})),
    ]


async def test_list_sorted_and_filtered(env: Env) -> None:
    for name, desc, labels in [
        ("b", target(D2), {"x": "1"}),
        ("a", target(D1, media_type=mediatypes.OCI_INDEX), {}),
        ("c", target(D2), {"x": "2"}),
    ]:
        await env.stub.create(api.CreateImageRequest(image=pb_image(name, desc, **labels)))
    names = [i.name for i in (await env.stub.list(api.ListImagesRequest())).images]
    assert names == ["a", "b", "c"]
    resp = await env.stub.list(api.ListImagesRequest(filters=[f"target.digest=={D2},labels.x==2", "name==a"]))
    assert [i.name for i in resp.images] == ["a", "c"]
    resp = await env.stub.list(api.ListImagesRequest(filters=[f"target.mediatype=={mediatypes.OCI_INDEX}"]))
    assert [i.name for i in resp.images] == ["a"]
    in_other = api.ImagesStub(env.stub.channel, metadata={namespaces.GRPC_HEADER: "other"})
    assert (await in_other.list(api.ListImagesRequest())).images == []


async def test_delete_and_sync(env: Env) -> None:
    for n in ("x", "y"):
        await env.stub.create(api.CreateImageRequest(image=pb_image(n)))
    await env.stub.delete(api.DeleteImageRequest(name="x"))
    assert env.collections == []
    await env.stub.delete(api.DeleteImageRequest(name="y", sync=True))
    assert env.collections == [1]
    assert (await env.stub.list(api.ListImagesRequest())).images == []
    assert env.publisher.events[2:] == [
        ("default", "/images/delete", api.ImageDelete(name="x")),
        ("default", "/images/delete", api.ImageDelete(name="y")),
    ]


def test_conversions_round_trip() -> None:
    epoch = _dt.datetime(2020, 1, 2, 3, 4, 5, 6000, tzinfo=_dt.UTC)
    msg = api.Image(name="n", labels={"a": "b"}, target=target(c="d"), created_at=epoch, updated_at=epoch)
    img = image_from_proto(msg)
    assert img.target.annotations == {"c": "d"}
    assert image_to_proto(img) == msg
    empty = image_from_proto(None)
    assert (empty.name, empty.target.digest, empty.target.size) == ("", "", 0)
    assert image_from_proto(api.Image(name="n")).target.media_type == ""


def test_event_type_urls_are_containerd_1_6s() -> None:
    from ctrd.wire.typeurl import type_url

    assert type_url(api.ImageCreate) == "containerd.services.images.v1.ImageCreate"
    assert type_url(api.ImageUpdate) == "containerd.services.images.v1.ImageUpdate"
    assert type_url(api.ImageDelete) == "containerd.services.images.v1.ImageDelete"


# -- through the event exchange and authorization ------------------------------------------------

POLICY = Policy([Principal("team-a", uids=frozenset({1000}), namespaces=("team-a",))])
TEAM_A = Peer("unix", uid=1000, gid=1000, pid=1)


async def test_authorization_and_events_on_the_exchange(serve: Serve, tmp_path: Path) -> None:
    """A principal acts on images in its namespaces only; its subscription gets the image events
    as ``ctr events`` decodes them (containerd 1.6's type URLs)."""
    db = DB(tmp_path / "meta.db")
    await db.open()
    exchange = Exchange(queue_size=64)
    services = (ImagesService(SqliteImageStore(db), exchange), EventsService(exchange))
    try:
        async with (
            serve(*services, authorizer=Authorizer(POLICY), identify=lambda transport: TEAM_A) as ch,
            Sub(ch, exchange) as sub,
        ):
            mine = api.ImagesStub(ch, metadata={namespaces.GRPC_HEADER: "team-a"})
            theirs = api.ImagesStub(ch, metadata={namespaces.GRPC_HEADER: "team-b"})
            await mine.create(api.CreateImageRequest(image=pb_image("x", k="v")))
            for call in (
                theirs.create(api.CreateImageRequest(image=pb_image("x"))),
                theirs.list(api.ListImagesRequest()),
                theirs.get(api.GetImageRequest(name="x")),
                theirs.delete(api.DeleteImageRequest(name="x")),
            ):
                assert (await error_of(call)).status is G.PERMISSION_DENIED
            await mine.update(
                api.UpdateImageRequest(image=pb_image("x"), update_mask=FieldMask(paths=["labels"]))
            )
            await mine.delete(api.DeleteImageRequest(name="x"))
            got = [await sub.next() for _ in range(3)]
            assert sub.empty()
    finally:
        await db.close()
    assert [(e.namespace, e.topic) for e in got] == [
        ("team-a", "/images/create"),
        ("team-a", "/images/update"),
        ("team-a", "/images/delete"),
    ]
    assert [e.event.type_url for e in got if e.event is not None] == [
        "containerd.services.images.v1.ImageCreate",
        "containerd.services.images.v1.ImageUpdate",
        "containerd.services.images.v1.ImageDelete",
    ]
    assert got[0].event is not None
    assert unpack_event(got[0].event) == api.ImageCreate(name="x", labels={"k": "v"})
