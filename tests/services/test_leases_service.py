"""LeasesService over the real SQLite lease store, through real stubs and ctrd's interceptor;
and the ``containerd-lease`` header on Content.Write (TestContentLeased / TestIngestLeased over gRPC)."""

from __future__ import annotations

import asyncio
import datetime as _dt
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status as G
from grpclib.exceptions import GRPCError

from ctrd import errdefs, namespaces
from ctrd.api.containerd.services.leases import v1 as api
from ctrd.client import RemoteContentStore
from ctrd.content import sha256_of, write_blob
from ctrd.content.local import LocalStore
from ctrd.metadata import (
    DB,
    CollectingLeaseManager,
    NamespacedContentStore,
    SharingPolicy,
    SqliteLeaseStore,
)
from ctrd.services.content import ContentService
from ctrd.services.leases import LeasesService

from .conftest import Serve

MD = {namespaces.GRPC_HEADER: "default"}
GC_EXPIRE = "containerd.io/gc.expire"


class Env:
    def __init__(
        self, db: DB, leases: SqliteLeaseStore, content: NamespacedContentStore, ch: Channel
    ) -> None:
        self.db = db
        self.leases = leases
        self.content = content
        self.channel = ch
        self.stub = api.LeasesStub(ch, metadata=MD)
        self.bare = api.LeasesStub(ch)
        self.remote = RemoteContentStore(ch, namespace="default")

    async def resources(self, lease: str) -> list[tuple[str, str]]:
        resp = await self.stub.list_resources(api.ListResourcesRequest(id=lease))
        return [(r.type, r.id) for r in resp.resources]


@pytest.fixture
async def env(serve: Serve, tmp_path: Path) -> AsyncIterator[Env]:
    db = DB(tmp_path / "meta.db")
    await db.open()
    leases = SqliteLeaseStore(db)
    content = NamespacedContentStore(db, LocalStore(tmp_path / "content"), SharingPolicy.SHARED)
    try:
        async with serve(LeasesService(leases), ContentService(content)) as ch:
            yield Env(db, leases, content, ch)
    finally:
        await db.close()


async def grpc_error(coro: object) -> GRPCError:
    with pytest.raises(GRPCError) as ei:
        await coro  # type: ignore[misc]
    return ei.value


async def test_create_with_id_and_labels(env: Env) -> None:
    before = _dt.datetime.now(_dt.UTC)
    resp = await env.stub.create(
        api.CreateRequest(id="L", labels={"foo": "bar", GC_EXPIRE: "2030-01-01T00:00:00Z"})
    )
    lease = resp.lease
    assert lease is not None
    assert lease.id == "L"
    assert lease.labels == {"foo": "bar", GC_EXPIRE: "2030-01-01T00:00:00Z"}
    assert lease.created_at is not None
    assert lease.created_at.tzinfo is not None
    assert before - _dt.timedelta(seconds=1) <= lease.created_at <= _dt.datetime.now(_dt.UTC)


async def test_create_generates_id(env: Env) -> None:
    resp = await env.stub.create(api.CreateRequest())
    assert resp.lease is not None
    assert re.fullmatch(r"\d{1,9}-[A-Za-z0-9_-]{4}", resp.lease.id)
    listed = await env.stub.list(api.ListRequest())
    assert [x.id for x in listed.leases] == [resp.lease.id]


async def test_create_duplicate(env: Env) -> None:
    await env.stub.create(api.CreateRequest(id="L"))
    err = await grpc_error(env.stub.create(api.CreateRequest(id="L")))
    assert err.status is G.ALREADY_EXISTS
    assert err.message == 'lease "L": already exists'


async def test_namespace_required(env: Env) -> None:
    for call in (
        env.bare.create(api.CreateRequest(id="L")),
        env.bare.delete(api.DeleteRequest(id="L")),
        env.bare.list(api.ListRequest()),
        env.bare.add_resource(api.AddResourceRequest(id="L", resource=api.Resource(id="r", type="ingests"))),
        env.bare.delete_resource(
            api.DeleteResourceRequest(id="L", resource=api.Resource(id="r", type="ingests"))
        ),
        env.bare.list_resources(api.ListResourcesRequest(id="L")),
    ):
        err = await grpc_error(call)
        assert err.status is G.FAILED_PRECONDITION
        assert err.message == "namespace is required: failed precondition"


async def test_list_filters(env: Env) -> None:
    await env.stub.create(api.CreateRequest(id="L", labels={"foo": "bar"}))
    await env.stub.create(api.CreateRequest(id="forever"))
    other = api.LeasesStub(env.channel, metadata={namespaces.GRPC_HEADER: "other"})
    await other.create(api.CreateRequest(id="elsewhere"))

    async def ids(*fs: str) -> list[str]:
        return [x.id for x in (await env.stub.list(api.ListRequest(filters=list(fs)))).leases]

    assert await ids() == ["L", "forever"]
    assert await ids("id==L") == ["L"]
    assert await ids("labels.foo==bar") == ["L"]
    assert await ids("id==forever", "labels.foo") == ["L", "forever"]
    listed = (await env.stub.list(api.ListRequest(filters=["id==L"]))).leases[0]
    assert listed.labels == {"foo": "bar"}
    assert listed.created_at is not None
    err = await grpc_error(env.stub.list(api.ListRequest(filters=["id=="])))
    assert err.status is G.INVALID_ARGUMENT


async def test_delete(env: Env) -> None:
    await env.stub.create(api.CreateRequest(id="L"))
    await env.stub.delete(api.DeleteRequest(id="L"))
    assert (await env.stub.list(api.ListRequest())).leases == []
    err = await grpc_error(env.stub.delete(api.DeleteRequest(id="nosuch")))
    assert err.status is G.NOT_FOUND
    assert err.message == 'lease "nosuch": not found'


async def test_delete_sync_waits_for_gc(serve: Serve, env: Env) -> None:
    done = asyncio.Event()

    async def collector() -> object:
        await asyncio.sleep(0.05)
        done.set()
        return None

    async with serve(LeasesService(CollectingLeaseManager(env.leases, collector))) as ch:
        stub = api.LeasesStub(ch, metadata=MD)
        await stub.create(api.CreateRequest(id="L"))
        await stub.delete(api.DeleteRequest(id="L", sync=True))
        assert done.is_set()
        done.clear()
        await stub.create(api.CreateRequest(id="M"))
        await stub.delete(api.DeleteRequest(id="M"))  # not sync: no collection awaited
        assert not done.is_set()


async def test_resources(env: Env) -> None:
    d = sha256_of(b"x")
    await env.stub.create(api.CreateRequest(id="L"))
    for r in (
        api.Resource(id="ref", type="ingests"),
        api.Resource(id=d, type="content"),
        api.Resource(id="key", type="snapshots/overlayfs"),
    ):
        await env.stub.add_resource(api.AddResourceRequest(id="L", resource=r))
    assert await env.resources("L") == [("content", d), ("ingests", "ref"), ("snapshots/overlayfs", "key")]
    await env.stub.delete_resource(
        api.DeleteResourceRequest(id="L", resource=api.Resource(id="ref", type="ingests"))
    )
    assert await env.resources("L") == [("content", d), ("snapshots/overlayfs", "key")]

    err = await grpc_error(
        env.stub.add_resource(api.AddResourceRequest(id="L", resource=api.Resource(id="i", type="images")))
    )
    assert err.status is G.UNIMPLEMENTED
    assert err.message == "resource type images not supported yet: not implemented"
    err = await grpc_error(env.stub.add_resource(api.AddResourceRequest(id="L")))  # no resource at all
    assert err.status is G.UNIMPLEMENTED
    err = await grpc_error(
        env.stub.add_resource(api.AddResourceRequest(id="L", resource=api.Resource(id="zz", type="content")))
    )
    assert err.status is G.INVALID_ARGUMENT
    assert (err.message or "").startswith("invalid content resource id zz: ")
    for call in (
        env.stub.add_resource(
            api.AddResourceRequest(id="nosuch", resource=api.Resource(id=d, type="content"))
        ),
        env.stub.delete_resource(
            api.DeleteResourceRequest(id="nosuch", resource=api.Resource(id=d, type="content"))
        ),
        env.stub.list_resources(api.ListResourcesRequest(id="nosuch")),
    ):
        err = await grpc_error(call)
        assert err.status is G.NOT_FOUND
        assert err.message == 'lease "nosuch": not found'


# -- the containerd-lease header on Content.Write ------------------------------------------


async def test_content_leased_over_grpc(env: Env) -> None:
    data = b"any content"
    d = sha256_of(data)
    await env.stub.create(api.CreateRequest(id="lease-1"))
    with namespaces.with_lease("lease-1"):
        await write_blob(env.remote, "test-1", data, total=11, expected=d)
    assert await env.resources("lease-1") == [("content", d)]
    await env.stub.create(api.CreateRequest(id="lease-2"))

    async def open_and_status() -> None:
        w = await env.remote.writer("test-2", 11, d)
        try:
            await w.status()  # the server answers the first message
        finally:
            await w.close()

    with namespaces.with_lease("lease-2"), pytest.raises(errdefs.AlreadyExists):
        await open_and_status()
    assert await env.resources("lease-2") == [("content", d)]


async def test_ingest_leased_over_grpc(env: Env) -> None:
    d = sha256_of(b"any content")
    await env.stub.create(api.CreateRequest(id="lease-1"))
    with namespaces.with_lease("lease-1"):
        w = await env.remote.writer("test-1", 11, d)
        await w.write(b"any")
        await w.close()
    assert await env.resources("lease-1") == [("ingests", "test-1")]
    with namespaces.with_lease("lease-1"):
        await env.remote.abort("test-1")
    assert await env.resources("lease-1") == []


async def test_unknown_header_lease_is_not_found(env: Env) -> None:
    data = b"payload"
    d = sha256_of(data)
    with (
        namespaces.with_lease("nosuch"),
        pytest.raises(errdefs.NotFound, match='lease "nosuch" does not exist'),
    ):
        await write_blob(env.remote, "r", data, expected=d)
    assert await env.db.view_all("SELECT * FROM ingests") == []
    assert await env.db.view_all("SELECT * FROM blobs") == []
