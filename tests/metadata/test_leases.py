"""Leases in the SQLite metadata store: the lease manager, the ``containerd-lease`` context
lease on content writes (containerd's TestContentLeased / TestIngestLeased), isolation."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ctrd import errdefs, namespaces
from ctrd.content import open_writer, read_blob, sha256_of, write_blob
from ctrd.content.local import LocalStore
from ctrd.metadata import (
    DB,
    CollectingLeaseManager,
    Lease,
    LeaseManager,
    NamespacedContentStore,
    Resource,
    SharingPolicy,
    SqliteLeaseStore,
    SqliteNamespaceStore,
)
from ctrd.metadata.leases import generate_id

GC_EXPIRE = "containerd.io/gc.expire"


@contextlib.contextmanager
def ns(name: str | None, lease: str | None = None) -> Iterator[None]:
    with namespaces.with_namespace(name), namespaces.with_lease(lease):
        yield


class Env:
    def __init__(self, db: DB, backend: LocalStore, root: Path) -> None:
        self.db = db
        self.backend = backend
        self.root = root
        self.leases = SqliteLeaseStore(db)
        self.namespaces = SqliteNamespaceStore(db, backend)

    def content(self, policy: SharingPolicy = SharingPolicy.SHARED) -> NamespacedContentStore:
        return NamespacedContentStore(self.db, self.backend, policy)

    async def resources(self, namespace: str, lease: str) -> list[tuple[str, str]]:
        with ns(namespace):
            return [(r.type, r.id) for r in await self.leases.list_resources(lease)]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    db = DB(tmp_path / "meta.db")
    await db.open()
    try:
        yield Env(db, LocalStore(tmp_path / "content"), tmp_path)
    finally:
        await db.close()


# -- the lease manager ---------------------------------------------------------------------


def test_protocol() -> None:
    assert issubclass(SqliteLeaseStore, LeaseManager)


def test_generated_id_format() -> None:
    # containerd's generateLeaseID: <nanosecond of the second>-<base64url of 3 bytes>
    for _ in range(50):
        lid = generate_id()
        m = re.fullmatch(r"(\d{1,9})-([A-Za-z0-9_-]{4})", lid)
        assert m, lid
        assert int(m.group(1)) < 1_000_000_000


async def test_create_and_list(env: Env) -> None:
    before = _dt.datetime.now(_dt.UTC)
    with ns("default"):
        lease = await env.leases.create("L", {"foo": "bar", GC_EXPIRE: "2030-01-01T00:00:00Z", "empty": ""})
        assert lease == Lease(
            id="L", created_at=lease.created_at, labels={"foo": "bar", GC_EXPIRE: "2030-01-01T00:00:00Z"}
        )
        assert lease.created_at.tzinfo is _dt.UTC
        assert before - _dt.timedelta(seconds=1) <= lease.created_at <= _dt.datetime.now(_dt.UTC)
        await env.leases.create("A")
        listed = await env.leases.list()
    assert [x.id for x in listed] == ["A", "L"]  # sorted by id, like bolt's key order
    assert listed[1] == lease
    assert listed[0].labels == {}


async def test_create_generates_id(env: Env) -> None:
    with ns("default"):
        lease = await env.leases.create("", {GC_EXPIRE: "2030-01-01T00:00:00Z"})
        assert re.fullmatch(r"\d{1,9}-[A-Za-z0-9_-]{4}", lease.id)
        assert [x.id for x in await env.leases.list()] == [lease.id]


async def test_create_duplicate(env: Env) -> None:
    with ns("default"):
        await env.leases.create("L")
        with pytest.raises(errdefs.AlreadyExists) as ei:
            await env.leases.create("L", {"a": "b"})
        assert str(ei.value) == 'lease "L": already exists'
        assert (await env.leases.list())[0].labels == {}
    with ns("other"):  # leases are per namespace
        await env.leases.create("L")


async def test_create_namespace_implicitly(env: Env) -> None:
    assert await env.namespaces.list() == []
    with ns("fresh"):
        await env.leases.create("L")
    assert await env.namespaces.list() == ["fresh"]


async def test_create_validates_labels(env: Env) -> None:
    with ns("default"), pytest.raises(errdefs.InvalidArgument, match=r"^lease\.Labels: label key and value"):
        await env.leases.create("L", {"k": "v" * 4096})
    with ns("default"):
        assert await env.leases.list() == []


async def test_namespace_required(env: Env) -> None:
    calls = [
        env.leases.create("L"),
        env.leases.delete("L"),
        env.leases.list(),
        env.leases.add_resource("L", Resource(id="r", type="ingests")),
        env.leases.delete_resource("L", Resource(id="r", type="ingests")),
        env.leases.list_resources("L"),
    ]
    for call in calls:
        with ns(None), pytest.raises(errdefs.FailedPrecondition, match="namespace is required"):
            await call
    with ns("bad/ns"), pytest.raises(errdefs.InvalidArgument, match="namespace validation"):
        await env.leases.list()


async def test_list_filters(env: Env) -> None:
    with ns("default"):
        await env.leases.create("L", {GC_EXPIRE: "2030-01-01T00:00:00Z", "foo": "bar"})
        await env.leases.create("M", {"foo": "baz"})
        await env.leases.create("forever")

        async def ids(*fs: str) -> list[str]:
            return [x.id for x in await env.leases.list(*fs)]

        assert await ids() == ["L", "M", "forever"]
        assert await ids("id==L") == ["L"]
        assert await ids("id~=^f") == ["forever"]
        assert await ids("labels.foo") == ["L", "M"]
        assert await ids("labels.foo==baz") == ["M"]
        assert await ids(f'labels."{GC_EXPIRE}"') == ["L"]
        assert await ids("id==forever", "labels.foo==bar") == ["L", "forever"]  # OR-ed
        assert await ids("id==L,labels.foo==baz") == []  # AND
        assert await ids("created_at") == []  # not a lease field (as containerd)
        with pytest.raises(errdefs.InvalidArgument, match="filters: parse error"):
            await env.leases.list("id==")
    with ns("other"):
        assert await env.leases.list() == []


async def test_delete(env: Env) -> None:
    with ns("default"):
        await env.leases.create("L")
        await env.leases.add_resource("L", Resource(id=sha256_of(b"x"), type="content"))
        await env.leases.delete("L")
        assert await env.leases.list() == []
        with pytest.raises(errdefs.NotFound) as ei:
            await env.leases.delete("L")
        assert str(ei.value) == 'lease "L": not found'
        with pytest.raises(errdefs.NotFound):
            await env.leases.list_resources("L")
    assert await env.db.view_all("SELECT * FROM lease_resources") == []
    with ns("default"):  # the id is free again, with no resources
        await env.leases.create("L")
        assert await env.leases.list_resources("L") == []


async def test_delete_is_per_namespace(env: Env) -> None:
    with ns("a"):
        await env.leases.create("L")
    with ns("b"), pytest.raises(errdefs.NotFound):
        await env.leases.delete("L")
    with ns("a"):
        assert [x.id for x in await env.leases.list()] == ["L"]


async def test_delete_notifies_gc(env: Env) -> None:
    calls: list[str] = []
    env.leases.observe_deletions(lambda: calls.append("scheduled"))
    with ns("default"):
        await env.leases.create("L")
        with pytest.raises(errdefs.NotFound):
            await env.leases.delete("nosuch")
        assert calls == []
        await env.leases.delete("L")
        assert calls == ["scheduled"]
        # the store cannot collect: sync just deletes (and still schedules)
        await env.leases.create("S")
        await env.leases.delete("S", sync=True)
        assert calls == ["scheduled", "scheduled"]


async def test_sync_delete_waits_for_the_collection(env: Env) -> None:
    events: list[str] = []

    async def collector() -> object:
        events.append("gc start")
        await asyncio.sleep(0.05)
        # the lease is already gone when the collection runs
        rows = await env.db.view_all("SELECT id FROM leases")
        events.append(f"gc done, leases={len(rows)}")
        return {"removed": 0}

    env.leases.observe_deletions(lambda: events.append("scheduled"))
    leases = CollectingLeaseManager(env.leases, collector)
    assert isinstance(leases, LeaseManager)
    with ns("default"):
        await leases.create("L")
        await leases.delete("L", sync=True)
        events.append("delete returned")
        assert events == ["scheduled", "gc start", "gc done, leases=0", "delete returned"]
        await leases.create("M")
        await leases.delete("M")  # not sync: only scheduled
        assert events[-1] == "scheduled"
        assert events.count("gc start") == 1
        # everything else goes to the store
        await leases.create("N", {"k": "v"})
        await leases.add_resource("N", Resource(id="r", type="ingests"))
        assert [x.id for x in await leases.list("labels.k==v")] == ["N"]
        assert await leases.list_resources("N") == [Resource(id="r", type="ingests")]
        await leases.delete_resource("N", Resource(id="r", type="ingests"))
        assert await env.leases.list_resources("N") == []


async def test_sync_delete_propagates_collector_errors(env: Env) -> None:
    async def collector() -> object:
        raise errdefs.Unavailable("gc is busy")

    leases = CollectingLeaseManager(env.leases, collector)
    with ns("default"):
        await leases.create("L")
        with pytest.raises(errdefs.Unavailable):
            await leases.delete("L", sync=True)
        assert await leases.list() == []  # the lease is deleted anyway


async def test_failing_delete_hook_is_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    def on_delete() -> None:
        raise RuntimeError("boom")

    env.leases.observe_deletions(on_delete)
    with ns("default"):
        await env.leases.create("L")
        with caplog.at_level(logging.WARNING, logger="ctrd.metadata"):
            await env.leases.delete("L")
    assert "lease deletion hook failed" in caplog.text


# -- resources -----------------------------------------------------------------------------


async def test_resources(env: Env) -> None:
    d1, d2 = sha256_of(b"1"), sha256_of(b"2")
    with ns("default"):
        await env.leases.create("L")
        for r in [
            Resource(id="ref-b", type="ingests"),
            Resource(id=d2, type="content"),
            Resource(id="key1", type="snapshots/overlayfs"),
            Resource(id=d1, type="content"),
            Resource(id="ref-a", type="ingests"),
            Resource(id="key0", type="snapshots/native"),
            Resource(id=d1, type="content"),  # twice: recorded once
        ]:
            await env.leases.add_resource("L", r)
    assert await env.resources("default", "L") == [
        ("content", min(d1, d2)),
        ("content", max(d1, d2)),
        ("ingests", "ref-a"),
        ("ingests", "ref-b"),
        ("snapshots/native", "key0"),
        ("snapshots/overlayfs", "key1"),
    ]
    with ns("default"):
        await env.leases.delete_resource("L", Resource(id=d1, type="content"))
        await env.leases.delete_resource("L", Resource(id=d1, type="content"))  # absent: no-op
        await env.leases.delete_resource("L", Resource(id="key0", type="snapshots/native"))
    assert await env.resources("default", "L") == [
        ("content", d2),
        ("ingests", "ref-a"),
        ("ingests", "ref-b"),
        ("snapshots/overlayfs", "key1"),
    ]


async def test_resource_errors(env: Env) -> None:
    with ns("default"):
        await env.leases.create("L")
        cases: list[tuple[Resource, type[errdefs.Error], str]] = [
            (
                Resource(id="x", type="images"),
                errdefs.Unimplemented,
                "resource type images not supported yet",
            ),
            (Resource(id="x", type=""), errdefs.Unimplemented, "resource type  not supported yet"),
            (  # a long type is echoed cut: the message keeps its meaning under the status limit
                Resource(id="x", type="Z" * 1000),
                errdefs.Unimplemented,
                "resource type " + "Z" * 128 + "…(1000 characters) not supported yet",
            ),
            (  # over the bound of ids and types (ctrd.limits), refused
                Resource(id="x", type="Z" * 2000),
                errdefs.InvalidArgument,
                "resource type " + "Z" * 128 + "…(2000 characters) is longer than the maximum of 1024 bytes",
            ),
            (
                Resource(id="x", type="content/extra"),
                errdefs.InvalidArgument,
                "invalid resource type content/extra",
            ),
            (Resource(id="x", type="ingests/x"), errdefs.InvalidArgument, "invalid resource type ingests/x"),
            (
                Resource(id="k", type="snapshots"),
                errdefs.InvalidArgument,
                "invalid snapshot resource type snapshots",
            ),
            (
                Resource(id="k", type="snapshots/a/b"),
                errdefs.InvalidArgument,
                "invalid snapshot resource type",
            ),
            (
                Resource(id="nodigest", type="content"),
                errdefs.InvalidArgument,
                "invalid content resource id nodigest",
            ),
            (Resource(id="", type="ingests"), errdefs.InvalidArgument, "resource id must not be empty"),
        ]
        for resource, cls, message in cases:
            with pytest.raises(cls) as ei:
                await env.leases.add_resource("L", resource)
            assert str(ei.value).startswith(message), (resource, str(ei.value))
            with pytest.raises(cls):
                await env.leases.delete_resource("L", resource)
        assert await env.leases.list_resources("L") == []
        # unknown lease: NOT_FOUND before the resource is even looked at (containerd's order)
        for call in (
            env.leases.add_resource("nosuch", Resource(id="x", type="images")),
            env.leases.delete_resource("nosuch", Resource(id="x", type="images")),
            env.leases.list_resources("nosuch"),
        ):
            with pytest.raises(errdefs.NotFound, match=r'^lease "nosuch": not found$'):
                await call


async def test_delete_resource_notifies_gc(env: Env) -> None:
    calls: list[int] = []
    env.leases.observe_deletions(lambda: calls.append(1))
    d = sha256_of(b"x")
    with ns("default"):
        await env.leases.create("L")
        await env.leases.add_resource("L", Resource(id=d, type="content"))
        assert calls == []
        await env.leases.delete_resource("L", Resource(id=d, type="content"))
        assert calls == [1]
        await env.leases.delete_resource("L", Resource(id=d, type="content"))  # nothing removed
        assert calls == [1]


async def test_namespace_delete_drops_its_leases(env: Env) -> None:
    with ns("gone"):
        await env.leases.create("L")
        await env.leases.add_resource("L", Resource(id="r", type="ingests"))
    await env.namespaces.delete("gone")
    with ns("gone"):
        assert await env.leases.list() == []
    assert await env.db.view_all("SELECT * FROM lease_resources") == []


@pytest.mark.parametrize("policy", list(SharingPolicy))
async def test_add_resource_never_admits_a_blob(env: Env, policy: SharingPolicy) -> None:
    """A lease reference to a digest the namespace does not hold grants nothing."""
    store = env.content(policy)
    data = b"alice's layer" * 100
    d = sha256_of(data)
    with ns("alice"):
        await write_blob(store, "a", data, expected=d)
    with ns("mallory"):
        await env.leases.create("grab")
        await env.leases.add_resource("grab", Resource(id=d, type="content"))
        assert await env.leases.list_resources("grab") == [Resource(id=d, type="content")]
        with pytest.raises(errdefs.NotFound):
            await store.info(d)
        with pytest.raises(errdefs.NotFound):
            await store.reader_at(d)
        assert [i async for i in store.walk()] == []
    with ns("mallory", "grab"):
        w = await store.writer("steal", total=len(data), expected=d)
        try:
            st = await w.status()
            if policy is SharingPolicy.ISOLATED:
                assert st.offset == 0  # the lease does not waive the upload
                with pytest.raises(errdefs.FailedPrecondition):
                    await w.commit(len(data), d)
            else:
                assert st.offset == len(data)  # shared: knowing the digest is enough, lease or not
        finally:
            await w.close()
    rows = await env.db.view_all("SELECT namespace FROM blobs WHERE digest = ?", (d,))
    assert [r[0] for r in rows] == ["alice"]


# -- the context lease (containerd-lease header) on content writes --------------------------


async def test_content_leased(env: Env) -> None:
    """containerd's TestContentLeased."""
    store = env.content()
    data = b"any content"
    d = sha256_of(data)
    with ns("default"):
        await env.leases.create("lease-1")
    with ns("default", "lease-1"):
        await write_blob(store, "test-1", data, total=11, expected=d)
    assert await env.resources("default", "lease-1") == [("content", d)]  # and not the ingest

    with ns("default"):
        await env.leases.create("lease-2")
    with ns("default", "lease-2"), pytest.raises(errdefs.AlreadyExists):
        await store.writer("test-2", 11, d)
    # the digest is added to lease-2 although the call failed; test-2 is no ingest of it
    assert await env.resources("default", "lease-2") == [("content", d)]


async def test_ingest_leased(env: Env) -> None:
    """containerd's TestIngestLeased."""
    store = env.content()
    data = b"any content"
    d = sha256_of(data)
    with ns("default"):
        await env.leases.create("lease-1")
    with ns("default", "lease-1"):
        w = await store.writer("test-1", 11, d)
        await w.close()
    assert await env.resources("default", "lease-1") == [("ingests", "test-1")]
    # a leased ingest does not expire
    rows = await env.db.view_all("SELECT expires_at FROM ingests WHERE ref = 'test-1'")
    assert rows == [(None,)]
    with ns("default", "lease-1"):
        await store.abort("test-1")
    assert await env.resources("default", "lease-1") == []


@pytest.mark.parametrize("policy", list(SharingPolicy))
async def test_unknown_header_lease_writes_nothing(env: Env, policy: SharingPolicy) -> None:
    store = env.content(policy)
    data = b"payload"
    d = sha256_of(data)
    with ns("ghost", "nosuch"):
        with pytest.raises(errdefs.NotFound, match='lease "nosuch" does not exist'):
            await store.writer("r", len(data), d)
        with pytest.raises(errdefs.NotFound):
            await write_blob(store, "r", data, expected=d)
    assert await env.namespaces.list() == []  # not even the namespace
    assert await env.db.view_all("SELECT * FROM ingests") == []
    assert await env.db.view_all("SELECT * FROM blobs") == []
    # also when the blob is in the namespace already (the AlreadyExists path)
    with ns("default"):
        await write_blob(store, "r", data, expected=d)
    with ns("default", "nosuch"), pytest.raises(errdefs.NotFound):
        await store.writer("r2", len(data), d)
    assert await env.db.view_all("SELECT * FROM lease_resources") == []


async def test_shared_admission_is_leased(env: Env) -> None:
    """A blob admitted through the shared policy (no bytes sent) is held by the header lease."""
    store = env.content(SharingPolicy.SHARED)
    data = b"base layer" * 1000
    d = sha256_of(data)
    with ns("a"):
        await write_blob(store, "up", data, expected=d)
    with ns("b"):
        await env.leases.create("pull")
    with ns("b", "pull"):
        w = await store.writer("share", total=len(data), expected=d)
        assert (await w.status()).offset == len(data)
        assert await env.resources("b", "pull") == [("ingests", "share")]
        await w.commit(len(data), d)
        await w.close()
    assert await env.resources("b", "pull") == [("content", d)]
    with ns("b"):
        assert await read_blob(store, d) == data


async def test_isolated_reupload_is_leased(env: Env) -> None:
    store = env.content(SharingPolicy.ISOLATED)
    data = b"base layer" * 1000
    d = sha256_of(data)
    with ns("a"):
        await write_blob(store, "up", data, expected=d)
    with ns("b"):
        await env.leases.create("pull")
    with ns("b", "pull"):
        await write_blob(store, "again", data, expected=d)
    assert await env.resources("b", "pull") == [("content", d)]


async def test_lease_deleted_before_commit(env: Env) -> None:
    """As in containerd: attaching to a vanished lease fails the commit; nothing is admitted."""
    store = env.content()
    data = b"late"
    d = sha256_of(data)
    with ns("default"):
        await env.leases.create("L")
    with ns("default", "L"):
        w = await open_writer(store, "r", len(data), d)
        await w.write(data)
    with ns("default"):
        await env.leases.delete("L")
    with ns("default", "L"):
        with pytest.raises(errdefs.NotFound, match="does not exist"):
            await w.commit(len(data), d)
        await w.close()
    with ns("default"), pytest.raises(errdefs.NotFound):
        await store.info(d)


async def test_delete_with_header_lease_detaches(env: Env) -> None:
    store = env.content()
    data = b"detach me"
    d = sha256_of(data)
    with ns("default"):
        await env.leases.create("L")
    with ns("default", "L"):
        await write_blob(store, "r", data, expected=d)
        assert await env.resources("default", "L") == [("content", d)]
        await store.delete(d)
    assert await env.resources("default", "L") == []
