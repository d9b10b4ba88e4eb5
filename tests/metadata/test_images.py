"""Image records in the SQLite metadata store (containerd 1.6's ``metadata/images.go`` semantics):
create, get, update by field paths, list with filters, delete with its GC hooks; the rules of
:mod:`ctrd.images`; the namespace's emptiness; the schema migration that adds the table."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from ctrd import errdefs, limits, namespaces
from ctrd.content import write_blob
from ctrd.content.local import LocalStore
from ctrd.images import Descriptor, Image, ImageStore, adaptor, apply_update, mediatypes, validate
from ctrd.metadata import (
    DB,
    CollectingImageStore,
    NamespacedContentStore,
    SharingPolicy,
    SqliteImageStore,
    SqliteNamespaceStore,
)
from ctrd.metadata._schema import MIGRATIONS, SCHEMA_VERSION
from ctrd.metadata.db import labels_to_json, to_us
from ctrd.metadata.images import _LIST_BATCH

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
TARGET = Descriptor(mediatypes.OCI_MANIFEST, D1, 100)


def image(name: str, target: Descriptor = TARGET, **labels: str) -> Image:
    return Image(name=name, target=target, labels=labels)


class Env:
    def __init__(self, db: DB, tmp: Path) -> None:
        self.db = db
        self.tmp = tmp
        self.deletions = 0
        self.images = SqliteImageStore(db, on_delete=self._deleted)
        self.namespaces = SqliteNamespaceStore(db)

    def _deleted(self) -> None:
        self.deletions += 1

    async def names(self, *filters: str) -> list[str]:
        return [i.name async for i in self.images.list(*filters)]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    db = DB(tmp_path / "meta.db")
    await db.open()
    try:
        yield Env(db, tmp_path)
    finally:
        await db.close()


def test_protocols() -> None:
    assert issubclass(SqliteImageStore, ImageStore)
    assert issubclass(CollectingImageStore, ImageStore)


# -- create and get ------------------------------------------------------------------------------


async def test_create_and_get(env: Env) -> None:
    before = _dt.datetime.now(_dt.UTC)
    target = Descriptor(mediatypes.OCI_INDEX, D1, 321, {"a": "1", "gone": ""})
    with namespaces.with_namespace("default"):
        created = await env.images.create(
            Image("docker.io/library/x:1", target, {"k": "v", "empty": ""}, created_at=before)
        )
        got = await env.images.get("docker.io/library/x:1")
    assert created == got
    assert got.target == Descriptor(mediatypes.OCI_INDEX, D1, 321, {"a": "1"})  # empty values not stored
    assert got.labels == {"k": "v"}
    assert got.created_at == got.updated_at
    assert got.created_at.tzinfo is _dt.UTC
    assert before - _dt.timedelta(seconds=1) <= got.created_at <= _dt.datetime.now(_dt.UTC)
    assert await env.namespaces.list() == ["default"]  # created implicitly


async def test_create_duplicate_is_already_exists(env: Env) -> None:
    with namespaces.with_namespace("default"):
        first = await env.images.create(image("x"))
        with pytest.raises(errdefs.AlreadyExists) as ei:
            await env.images.create(image("x", Descriptor(mediatypes.OCI_INDEX, D2, 5), a="b"))
        assert str(ei.value) == 'image "x": already exists'
        assert await env.images.get("x") == first
    with namespaces.with_namespace("other"):  # names are per namespace
        await env.images.create(image("x", Descriptor(mediatypes.OCI_INDEX, D2, 5)))
        assert (await env.images.get("x")).target.digest == D2


async def test_get_unknown_and_namespaces_apart(env: Env) -> None:
    with namespaces.with_namespace("a"):
        await env.images.create(image("x"))
    with namespaces.with_namespace("b"), pytest.raises(errdefs.NotFound) as ei:
        await env.images.get("x")
    assert str(ei.value) == 'image "x": not found'
    with namespaces.with_namespace("b"):
        assert await env.names() == []


async def test_namespace_required(env: Env) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: env.images.get("x"),
        lambda: env.images.create(image("x")),
        lambda: env.images.update(image("x")),
        lambda: env.images.delete("x"),
        env.names,
    ]
    for call in calls:
        with pytest.raises(errdefs.FailedPrecondition) as ei:
            await call()
        assert ei.value.context == "namespace is required"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (image(""), "image name must not be empty"),
        (image("n" * (limits.MAX_IMAGE_NAME_BYTES + 1)), "image name n"),
        (image("x", k="v" * 4096), "image.Labels: label key and value length (4097 bytes) greater than"),
        (
            image("x", Descriptor(mediatypes.OCI_MANIFEST, D1, 1, {"a": "b" * 4096})),
            "image.Target.Annotations: annotation key and value length (4097 bytes) greater than",
        ),
        (image("x", **{"": "v"}), "image.Labels: label key must not be empty"),
        (
            image("x", Descriptor(mediatypes.OCI_MANIFEST, D1, 1, {"": "v"})),
            "image.Target.Annotations: annotation key must not be empty",
        ),
        (
            image("x", Descriptor(mediatypes.OCI_MANIFEST, "", 1)),
            'Target.Digest "" invalid: invalid checksum',
        ),
        (
            image("x", Descriptor(mediatypes.OCI_MANIFEST, "sha256:abc", 1)),
            'Target.Digest "sha256:abc" invalid: invalid checksum digest length',
        ),
        (
            image("x", Descriptor(mediatypes.OCI_MANIFEST, "md5:" + "0" * 32, 1)),
            'Target.Digest "md5:' + "0" * 32 + '" invalid: unsupported digest algorithm',
        ),
        (image("x", Descriptor(mediatypes.OCI_MANIFEST, D1, 0)), "Target.Size must be greater than zero"),
        (image("x", Descriptor(mediatypes.OCI_MANIFEST, D1, -1)), "Target.Size must be greater than zero"),
        (image("x", Descriptor("", D1, 1)), "Target.MediaType must be set"),
        (
            image("x", Descriptor("m" * (limits.MAX_MEDIA_TYPE_BYTES + 1), D1, 1)),
            "Target.MediaType m",
        ),
    ],
    ids=[
        "empty-name",
        "long-name",
        "label",
        "annotation",
        "empty-label-key",
        "empty-annotation-key",
        "no-digest",
        "short-digest",
        "algorithm",
        "size-0",
        "size-negative",
        "no-media-type",
        "long-media-type",
    ],
)
async def test_create_validates(env: Env, record: Image, message: str) -> None:
    with namespaces.with_namespace("default"):
        with pytest.raises(errdefs.InvalidArgument) as ei:
            await env.images.create(record)
        assert ei.value.context.startswith(message), ei.value.context
        assert len(str(ei.value)) < 400  # a long value is echoed short
        assert await env.names() == []


async def test_bounds_are_inclusive(env: Env) -> None:
    name = "é" * (limits.MAX_IMAGE_NAME_BYTES // 2)  # 2 bytes each: exactly the bound
    with namespaces.with_namespace("default"):
        await env.images.create(image(name, Descriptor("m" * limits.MAX_MEDIA_TYPE_BYTES, D1, 1)))
        assert await env.names() == [name]


# -- update ----------------------------------------------------------------------------------------


async def test_update_label_paths(env: Env) -> None:
    with namespaces.with_namespace("default"):
        created = await env.images.create(image("x", a="1", b="2"))
        await asyncio.sleep(0.002)
        got = await env.images.update(image("x", a="10", c="3", z="no"), ["labels.a", "labels.c", "labels.b"])
        # a set, c added, b removed (absent from the change: ""), z not named: untouched
        assert got.labels == {"a": "10", "c": "3"}
        assert got.target == created.target
        assert got.created_at == created.created_at
        assert got.updated_at > created.updated_at
        assert await env.images.get("x") == got
        replaced = await env.images.update(image("x", only="one"), ["labels"])
        assert replaced.labels == {"only": "one"}


async def test_update_annotation_and_target_paths(env: Env) -> None:
    with namespaces.with_namespace("default"):
        await env.images.create(image("x", Descriptor(mediatypes.OCI_MANIFEST, D1, 10, {"a": "1", "b": "2"})))
        change = image("x", Descriptor(mediatypes.OCI_INDEX, D2, 20, {"a": "10", "n": "new"}), lbl="ignored")
        got = await env.images.update(change, ["annotations.a", "annotations.b"])
        assert got.target == Descriptor(mediatypes.OCI_MANIFEST, D1, 10, {"a": "10"})
        assert got.labels == {}
        got = await env.images.update(change, ["annotations"])
        assert got.target == Descriptor(mediatypes.OCI_MANIFEST, D1, 10, {"a": "10", "n": "new"})
        got = await env.images.update(change, ["target"])  # the target as a unit, annotations included
        assert got.target == change.target
        # paths apply in order: the target, then one annotation of the original change removed
        got = await env.images.update(dataclasses.replace(change, target=TARGET), ["target", "annotations.x"])
        assert got.target == TARGET


async def test_update_without_paths_replaces_all_but_created_at(env: Env) -> None:
    with namespaces.with_namespace("default"):
        created = await env.images.create(
            image("x", Descriptor(mediatypes.OCI_MANIFEST, D1, 10, {"a": "1"}), a="1")
        )
        new_target = Descriptor(mediatypes.OCI_INDEX, D2, 20)
        epoch = _dt.datetime(2000, 1, 1, tzinfo=_dt.UTC)
        got = await env.images.update(Image("x", new_target, {"b": "2"}, created_at=epoch, updated_at=epoch))
        assert got == Image("x", new_target, {"b": "2"}, created.created_at, got.updated_at)
        assert got.updated_at >= created.updated_at
        assert await env.images.get("x") == got


@pytest.mark.parametrize("path", ["name", "created_at", "target.digest", "labels.", "annotations.", ""])
async def test_update_other_paths_are_invalid(env: Env, path: str) -> None:
    with namespaces.with_namespace("default"):
        before = await env.images.create(image("x", a="1"))
        with pytest.raises(errdefs.InvalidArgument) as ei:
            await env.images.update(image("x", a="2"), ["labels.a", path])
        assert ei.value.context == f'cannot update "{path}" field on image "x"'
        assert await env.images.get("x") == before  # nothing applied


async def test_update_errors(env: Env) -> None:
    with namespaces.with_namespace("default"):
        with pytest.raises(errdefs.InvalidArgument, match=r"^image name is required for update: invalid"):
            await env.images.update(image(""))
        with pytest.raises(errdefs.NotFound, match=r'^image "x": not found$'):
            await env.images.update(image("x"))
        before = await env.images.create(image("x"))
        with pytest.raises(
            errdefs.InvalidArgument, match=r"^Target\.Size must be greater than zero: invalid argument$"
        ):
            await env.images.update(image("x", Descriptor(mediatypes.OCI_MANIFEST, D1, 0)), ["target"])
        with pytest.raises(errdefs.InvalidArgument, match=r"^image\.Labels: label key"):
            await env.images.update(image("x", k="v" * 5000), ["labels.k"])
        assert await env.images.get("x") == before


async def test_create_exists_then_update_as_ctr_content_fetch(env: Env) -> None:
    """``ctr content fetch`` (containerd's ``createNewImage``): Create, ALREADY_EXISTS, then Update
    with no paths, which keeps the record's creation time."""
    with namespaces.with_namespace("default"):
        first = await env.images.create(image("r"))
        fetched = image("r", Descriptor(mediatypes.OCI_INDEX, D2, 7))
        with pytest.raises(errdefs.AlreadyExists):
            await env.images.create(fetched)
        got = await env.images.update(fetched)
        assert got.target == fetched.target
        assert got.created_at == first.created_at


# -- list ------------------------------------------------------------------------------------------


async def test_list_sorted_by_name_bytes(env: Env) -> None:
    names = ["b", "B", "a:1", "a", "é", "z/x", "Z", "a-b"]
    with namespaces.with_namespace("default"):
        for n in names:
            await env.images.create(image(n))
        got = await env.names()
    assert got == sorted(names, key=lambda s: s.encode())


async def test_list_filters(env: Env) -> None:
    with namespaces.with_namespace("default"):
        await env.images.create(
            image("docker.io/library/a:1", Descriptor(mediatypes.OCI_INDEX, D1, 1), x="1")
        )
        await env.images.create(
            image("docker.io/library/b:1", Descriptor(mediatypes.OCI_MANIFEST, D2, 1, {"ann": "v"}), x="2")
        )
        await env.images.create(image("example.com/c", Descriptor(mediatypes.DOCKER_MANIFEST, D2, 1)))
        assert await env.names() == ["docker.io/library/a:1", "docker.io/library/b:1", "example.com/c"]
        assert await env.names("") == await env.names()
        assert await env.names("name==example.com/c") == ["example.com/c"]
        assert await env.names("name~=^docker") == ["docker.io/library/a:1", "docker.io/library/b:1"]
        assert await env.names(f"target.mediatype=={mediatypes.OCI_INDEX}") == ["docker.io/library/a:1"]
        assert await env.names(f"target.digest=={D2}") == ["docker.io/library/b:1", "example.com/c"]
        assert await env.names("labels.x") == ["docker.io/library/a:1", "docker.io/library/b:1"]
        assert await env.names("labels.x==2") == ["docker.io/library/b:1"]
        assert await env.names("labels.x!=2") == ["docker.io/library/a:1", "example.com/c"]
        assert await env.names("annotations.ann==v") == ["docker.io/library/b:1"]
        assert await env.names(f"target.digest=={D2},labels.x") == ["docker.io/library/b:1"]
        # several filters: OR
        assert await env.names("labels.x==1", "name==example.com/c") == [
            "docker.io/library/a:1",
            "example.com/c",
        ]
        assert await env.names("target") == []
        with pytest.raises(errdefs.InvalidArgument, match="filters: parse error"):
            await env.names("name==")


async def test_list_pages(env: Env) -> None:
    n = 2 * _LIST_BATCH + 88  # more than two pages of the listing
    now = to_us(_dt.datetime.now(_dt.UTC))
    async with env.db.update() as tx:
        await tx.ensure_namespace("default", now)
        await tx.ensure_namespace("other", now)
        await tx.many(
            "INSERT INTO images(namespace, name, media_type, digest, size, labels, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
            [
                (
                    ns,
                    f"img-{i:05d}",
                    mediatypes.OCI_MANIFEST,
                    D1,
                    labels_to_json({"odd": "1"} if i % 2 else {}),
                    now,
                    now,
                )
                for ns in ("default", "other")
                for i in range(n)
            ],
        )
    with namespaces.with_namespace("default"):
        got = await env.names()
        assert got == [f"img-{i:05d}" for i in range(n)]
        assert len(await env.names("labels.odd")) == n // 2


# -- delete ----------------------------------------------------------------------------------------


async def test_delete(env: Env) -> None:
    with namespaces.with_namespace("default"):
        await env.images.create(image("x"))
        await env.images.create(image("y"))
        await env.images.delete("x", sync=True)  # the bare store cannot collect: just deletes
        assert env.deletions == 1
        assert await env.names() == ["y"]
        with pytest.raises(errdefs.NotFound) as ei:
            await env.images.delete("x")
        assert str(ei.value) == 'image "x": not found'
        assert env.deletions == 1  # nothing deleted, no collection asked for
        await env.images.create(image("x"))  # the name is free again


async def test_deletion_hook_errors_are_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    env.images.observe_deletions(broken)
    with namespaces.with_namespace("default"):
        await env.images.create(image("x"))
        await env.images.delete("x")
        assert await env.names() == []
    assert env.deletions == 1
    assert "image deletion hook failed" in caplog.text


async def test_collecting_store_waits_for_a_collection_on_sync_delete(env: Env) -> None:
    collected: list[str] = []

    async def collect() -> None:
        await asyncio.sleep(0)
        collected.append("gc")

    store = CollectingImageStore(env.images, collect)
    with namespaces.with_namespace("default"):
        created = await store.create(image("x", a="1"))
        assert await store.get("x") == created
        assert (await store.update(image("x", a="2"), ["labels.a"])).labels == {"a": "2"}
        assert [i.name async for i in store.list()] == ["x"]
        await store.create(image("y"))
        await store.delete("y")
        assert collected == []
        await store.delete("x", sync=True)
        assert collected == ["gc"]
        with pytest.raises(errdefs.NotFound):
            await store.delete("x", sync=True)
        assert collected == ["gc"]


async def test_collecting_store_propagates_collection_errors(env: Env) -> None:
    async def collect() -> None:
        raise errdefs.Unavailable("gc failed")

    store = CollectingImageStore(env.images, collect)
    with namespaces.with_namespace("default"):
        await store.create(image("x"))
        with pytest.raises(errdefs.Unavailable):
            await store.delete("x", sync=True)
        assert [i.name async for i in store.list()] == []  # deleted all the same


# -- namespaces ------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", list(SharingPolicy))
async def test_namespace_with_images_cannot_be_deleted(env: Env, policy: SharingPolicy) -> None:
    backend = LocalStore(env.tmp / "content")
    content = NamespacedContentStore(env.db, backend, policy)
    with namespaces.with_namespace("n"):
        await env.images.create(image("x"))
    with pytest.raises(errdefs.FailedPrecondition) as ei:
        await env.namespaces.delete("n")
    assert ei.value.context == 'namespace "n" must be empty, but it still has images'
    with namespaces.with_namespace("n"):
        await write_blob(content, "r", b"data")
    with pytest.raises(errdefs.FailedPrecondition) as ei:
        await env.namespaces.delete("n")
    assert ei.value.context == 'namespace "n" must be empty, but it still has images, blobs'
    with namespaces.with_namespace("n"):
        await env.images.delete("x")
    with pytest.raises(errdefs.FailedPrecondition, match=r"still has blobs: failed precondition$"):
        await env.namespaces.delete("n")


# -- the rules, directly ---------------------------------------------------------------------------


def test_rules_leave_the_name_and_creation_time() -> None:
    epoch = _dt.datetime(2001, 1, 1, tzinfo=_dt.UTC)
    current = Image("x", TARGET, {"a": "1"}, created_at=epoch, updated_at=epoch)
    got = apply_update(current, Image("y", TARGET, {"a": "2"}), ["labels"])
    assert (got.name, got.created_at, got.labels) == ("x", epoch, {"a": "2"})
    got = apply_update(current, Image("y", TARGET, {"a": "2"}), [])
    assert (got.name, got.created_at) == ("x", epoch)
    validate(got)


def test_adaptor_fields() -> None:
    img = Image("n", Descriptor("m", D1, 1, {"k.x": "v"}), {"l/y": "w"})
    adapt = adaptor(img)
    assert adapt(["name"]) == ("n", True)
    assert adapt(["target", "digest"]) == (D1, True)
    assert adapt(["target", "mediatype"]) == ("m", True)
    assert adapt(["target", "size"]) == ("", False)
    assert adapt(["target"]) == ("", False)
    assert adapt(["annotations", "k", "x"]) == ("v", True)
    assert adapt(["labels", "l/y"]) == ("w", True)
    assert adapt(["labels", "nope"]) == ("", False)
    assert adapt([]) == ("", False)
    assert adaptor(Image("", Descriptor("", "", 0)))(["name"]) == ("", False)


# -- the schema ------------------------------------------------------------------------------------


async def test_version_1_database_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.executescript(MIGRATIONS[0])
    conn.execute("INSERT INTO schema_version(version) VALUES (1)")
    conn.execute("INSERT INTO namespaces(name, created_at) VALUES ('old', 0)")
    conn.execute(
        "INSERT INTO blobs(namespace, digest, size, created_at, updated_at) VALUES ('old', ?, 1, 0, 0)", (D1,)
    )
    conn.close()
    assert SCHEMA_VERSION == 2
    db = DB(path)
    await db.open()
    try:
        assert await db.view_all("SELECT version FROM schema_version") == [(2,)]
        assert await db.view_all("SELECT namespace, digest FROM blobs") == [("old", D1)]
        images = SqliteImageStore(db)
        with namespaces.with_namespace("old"):
            await images.create(image("x"))
            assert [i.name async for i in images.list()] == ["x"]
    finally:
        await db.close()
