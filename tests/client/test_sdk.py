"""The SDK against ctrd and against a private real containerd: every call, both ways.

Each test runs twice (``backend`` = ctrd subprocess, containerd 1.6 subprocess)
in a namespace of its own. What a test writes is held under a lease
(``client.lease()``) or the ``containerd.io/gc.root`` label, as containerd's
collector would otherwise remove it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ctrd import errdefs
from ctrd.api.containerd import events as events_api
from ctrd.client import (
    GC_EXPIRE_LABEL,
    GC_ROOT_LABEL,
    Client,
    ContentDelete,
    Envelope,
    NamespaceCreate,
    NamespaceUpdate,
    RawEvent,
    Resource,
)
from ctrd.content import Store, write_blob
from ctrd.remote import PIPELINE

from .conftest import Backend

MiB = 1 << 20


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    """Poll an async predicate until it is true."""
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


# -- connection, introspection ---------------------------------------------------------------------


async def test_version_plugins_server_info(client: Client, backend: Backend) -> None:
    v = await client.version()
    assert v.version
    if backend.is_containerd:
        assert v.version.startswith("1.6")
    info = await client.server_info()
    assert uuid.UUID(info.uuid)
    assert info.uuid == (await client.server_info()).uuid

    plugins = await client.plugins()
    uris = {p.uri for p in plugins}
    for want in (
        "io.containerd.grpc.v1.content",
        "io.containerd.grpc.v1.leases",
        "io.containerd.grpc.v1.events",
    ):
        assert want in uris
    grpc = await client.plugins(["type==io.containerd.grpc.v1"])
    assert grpc
    assert all(p.type == "io.containerd.grpc.v1" for p in grpc)
    assert {p.id for p in await client.plugins(["id==content"])} == {"content"}
    assert all(p.status in ("ok", "skip", "error") for p in plugins)
    with pytest.raises(errdefs.InvalidArgument):
        await client.plugins(["type=="])


async def test_addresses_and_namespace_defaults(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINERD_NAMESPACE", "from-env")
    monkeypatch.setenv("CONTAINERD_ADDRESS", backend.address)
    async with Client() as c:
        assert c.namespace == "from-env"
        assert c.address == backend.address
        assert (await c.version()).version
    monkeypatch.delenv("CONTAINERD_NAMESPACE")
    async with Client("unix://" + backend.address, namespace=None) as c:
        assert c.namespace == "default"
        assert (await c.version()).version
    c = Client(backend.address)  # no context manager: connects on first call
    assert (await c.version()).version
    await c.close()
    with pytest.raises(errdefs.FailedPrecondition):
        await c.version()


async def test_errors_are_errdefs(client: Client, backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(errdefs.NotFound, match="not found"):
        await client.content.info("sha256:" + "0" * 64)
    with pytest.raises(errdefs.InvalidArgument):
        await client.content.info("sha256:nothex")
    async with Client(str(tmp_path / "missing.sock"), timeout=2) as gone:
        with pytest.raises(errdefs.Unavailable, match="cannot connect"):
            await gone.version()
    # a namespace header that is not a valid namespace
    with pytest.raises(errdefs.InvalidArgument):
        await client.with_namespace("-bad-").content.list_statuses()


# -- content ---------------------------------------------------------------------------------------


async def test_content_calls(client: Client, backend: Backend) -> None:
    data = os.urandom(3 * MiB + 5)
    dgst = sha(data)
    async with client.lease() as lease:
        info = await client.content.ingest("c1", data, labels={"a": "1", "b": "2"})
        assert (info.digest, info.size, dict(info.labels)) == (dgst, len(data), {"a": "1", "b": "2"})
        assert info.created_at.tzinfo is not None
        assert (await client.content.info(dgst)).size == len(data)

        # read: whole, ranges, chunked, past the end
        assert await client.content.read_all(dgst) == data
        part = b"".join([c async for c in client.content.read(dgst, offset=MiB - 3, size=MiB + 7)])
        assert part == data[MiB - 3 : 2 * MiB + 4]
        tail = b"".join([c async for c in client.content.read(dgst, offset=3 * MiB)])
        assert tail == data[3 * MiB :]
        chunks = [len(c) async for c in client.content.read(dgst)]
        assert sum(chunks) == len(data)
        assert max(chunks) <= MiB
        with pytest.raises(errdefs.OutOfRange):
            _ = [c async for c in client.content.read(dgst, offset=len(data) + 1)]
        # stopping early does not disturb the connection
        async with contextlib.aclosing(client.content.read(dgst)) as it:
            async for _ in it:
                break
        assert (await client.content.info(dgst)).digest == dgst

        # labels: merge by key, remove with "" or None, replace all
        got = await client.content.update(dgst, {"b": "", "c": "3"})
        assert dict(got.labels) == {"a": "1", "c": "3"}
        got = await client.content.update(dgst, {"a": None})
        assert dict(got.labels) == {"c": "3"}
        got = await client.content.update(dgst, {"only": "x", GC_ROOT_LABEL: "keep"}, fieldpaths=["labels"])
        assert dict(got.labels) == {"only": "x", GC_ROOT_LABEL: "keep"}
        assert dict((await client.content.info(dgst)).labels) == dict(got.labels)
        with pytest.raises(errdefs.InvalidArgument):
            await client.content.update(dgst, {"x": "y"}, fieldpaths=["size"])
        with pytest.raises(errdefs.NotFound):
            await client.content.update("sha256:" + "1" * 64, {"x": "y"})

        # list, with filters
        small = await client.content.ingest("c2", b"small blob", labels={"kind": "small"})
        listed = [i.digest async for i in client.content.list()]
        assert listed == sorted([dgst, small.digest])
        assert [i.digest async for i in client.content.list('labels."kind"==small')] == [small.digest]
        assert [
            i.digest async for i in client.content.list("labels.only==x", "labels.kind==small")
        ] == sorted([dgst, small.digest])
        # another namespace sees none of it
        other = client.with_namespace(client.namespace + "-other")
        assert [i async for i in other.content.list()] == []
        with pytest.raises(errdefs.NotFound):
            await other.content.info(dgst)

        # delete
        await client.content.delete(small.digest)
        with pytest.raises(errdefs.NotFound):
            await client.content.info(small.digest)
        with pytest.raises(errdefs.NotFound):
            await client.content.delete(small.digest)
        with pytest.raises(errdefs.NotFound):
            await client.content.read_all(small.digest)
        assert {r.id for r in await client.leases.list_resources(lease.id)} >= {dgst}
        await client.content.delete(dgst)


async def test_writer_status_abort(client: Client, backend: Backend) -> None:
    data = os.urandom(2 * MiB + 100)
    dgst = sha(data)
    async with client.lease():
        async with client.content.writer("w1", total=len(data), expected=dgst) as w:
            assert (w.ref, w.offset) == ("w1", 0)
            assert await w.write(data[:MiB]) == MiB
            st = await w.status()
            assert (st.ref, st.offset, st.total) == ("w1", MiB, len(data))
        # closed without commit: the ingest stays, resumable
        st = await client.content.status("w1")
        assert (st.offset, st.total) == (MiB, len(data))
        assert st.started_at <= st.updated_at
        assert [s.ref for s in await client.content.list_statuses()] == ["w1"]
        assert [s.ref for s in await client.content.list_statuses("ref==w1")] == ["w1"]
        assert await client.content.list_statuses("ref==nope") == []

        async with client.content.writer("w1", total=len(data), expected=dgst) as w:
            assert w.offset == MiB
            # a second writer on the same ref is locked out
            with pytest.raises(errdefs.Unavailable):
                await client.content.writer("w1", lock_timeout=0)
            await w.write(data[MiB:])
            assert w.digest == dgst
            assert await w.commit(len(data), dgst, labels={"via": "writer"}) == dgst
            with pytest.raises(errdefs.FailedPrecondition):
                await w.write(b"after commit")
        info = await client.content.info(dgst)
        assert (info.size, dict(info.labels)) == (len(data), {"via": "writer"})
        with pytest.raises(errdefs.NotFound):
            await client.content.status("w1")

        # truncate, wrong digest, abort
        w2 = await client.content.writer("w2")
        await w2.write(b"garbage!")
        await w2.truncate(0)
        assert w2.offset == 0
        assert (await w2.status()).offset == 0
        await w2.write(b"payload")
        with pytest.raises(errdefs.FailedPrecondition):
            await w2.commit(7, "sha256:" + "2" * 64)
        assert (await client.content.status("w2")).offset == 7  # kept after a failed commit
        await client.content.abort("w2")
        with pytest.raises(errdefs.NotFound):
            await client.content.status("w2")
        with pytest.raises(errdefs.NotFound):
            await client.content.abort("w2")
        # opening with an expected digest that exists: AlreadyExists
        with pytest.raises(errdefs.AlreadyExists):
            async with client.content.writer("w3", expected=dgst):
                pass
        with pytest.raises(errdefs.InvalidArgument):
            await client.content.writer("")


async def test_ingest_sources_and_existing(client: Client, backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(MiB + 999)
    dgst = sha(data)
    path = tmp_path / "blob"
    path.write_bytes(data)

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 300_000):
            yield data[i : i + 300_000]

    async with client.lease():
        seen: list[tuple[int, int | None]] = []
        info = await client.content.ingest("src-path", path, progress=lambda o, t: seen.append((o, t)))
        assert info.digest == dgst
        assert seen[0] == (0, len(data))
        assert seen[-1] == (len(data), len(data))
        assert [o for o, _ in seen] == sorted(o for o, _ in seen)
        await client.content.delete(dgst)
        with path.open("rb") as f:
            assert (await client.content.ingest("src-file", f, dgst)).digest == dgst
        await client.content.delete(dgst)
        assert (await client.content.ingest("src-stream", stream(), dgst, size=len(data))).digest == dgst
        await client.content.delete(dgst)
        assert (await client.content.ingest("src-bytes", memoryview(data))).digest == dgst

        # already there: success, labels applied, no active ingest left behind
        again = await client.content.ingest("src-again", data, dgst, labels={"k": "v"})
        assert again.digest == dgst
        assert again.labels["k"] == "v"
        again = await client.content.ingest("src-again2", path, labels={"k2": "v2"})  # no expected digest
        assert dict(again.labels) == {"k": "v", "k2": "v2"}
        assert await client.content.list_statuses() == []

        # wrong digest: error, the ingest stays for inspection
        with pytest.raises(errdefs.FailedPrecondition):
            await client.content.ingest("src-bad", b"other bytes", "sha256:" + "3" * 64)
        assert [s.ref for s in await client.content.list_statuses()] == ["src-bad"]
        await client.content.abort("src-bad")
        # a declared size that does not match
        with pytest.raises(errdefs.FailedPrecondition):
            await client.content.ingest("src-size", stream(), size=len(data) + 1)
        await client.content.abort("src-size")


async def _interrupted_ingest(backend: Backend, ns: str, ref: str, data: bytes, stop_at: int) -> None:
    """Start an ingest on a connection of its own and kill that connection once the
    server holds at least *stop_at* bytes (as if the process had died)."""
    victim = Client(backend.address, namespace=ns, timeout=30)
    reached = asyncio.Event()

    def progress(offset: int, total: int | None) -> None:
        if offset >= stop_at:
            reached.set()

    async def slow() -> AsyncIterator[bytes]:
        for i in range(0, len(data), MiB):
            yield data[i : i + MiB]
            await asyncio.sleep(0.01)

    task = asyncio.create_task(victim.content.ingest(ref, slow(), progress=progress))
    await asyncio.wait_for(reached.wait(), 30)
    await victim.close()  # the stream dies with the connection
    with pytest.raises(errdefs.Error):
        await task


@pytest.mark.parametrize("source_kind", ["bytes", "stream"])
async def test_resume_after_killed_stream(
    client: Client, backend: Backend, ns: str, source_kind: str
) -> None:
    data = os.urandom(8 * MiB + 123)
    dgst = sha(data)
    ref = f"resume-{source_kind}"
    async with client.lease() as lease:
        await _interrupted_ingest(backend, ns, ref, data, 3 * MiB)

        async def settled() -> bool:
            # the daemon notices the reset and releases the ref
            try:
                async with client.content.writer(ref, lock_timeout=0):
                    return True
            except errdefs.Unavailable:
                return False

        await wait_for(settled)
        st = await client.content.status(ref)
        assert 3 * MiB <= st.offset < len(data)
        assert st.offset % MiB == 0

        async with client.content.writer(ref) as w:  # the offset survives a reopen
            assert w.offset == st.offset
            assert w.digest == sha(data[: st.offset])  # the digest of what the server holds

        async def stream() -> AsyncIterator[bytes]:
            for i in range(0, len(data), 700_001):
                yield data[i : i + 700_001]

        seen: list[int] = []
        source = data if source_kind == "bytes" else stream()
        info = await client.content.ingest(ref, source, dgst, progress=lambda o, t: seen.append(o))
        assert seen[0] == st.offset  # resumed, not restarted
        assert info.digest == dgst
        assert info.size == len(data)
        assert await client.content.read_all(dgst) == data
        assert dgst in {r.id for r in await client.leases.list_resources(lease.id)}
        await client.content.delete(dgst)


@pytest.mark.parametrize("source_kind", ["bytes", "stream"])
async def test_ingest_over_stale_ingest(client: Client, backend: Backend, source_kind: str) -> None:
    """A ref that holds other bytes: a rewindable source starts over, a stream is refused."""
    data = os.urandom(MiB + 10)
    async with client.lease():
        async with client.content.writer("stale") as w:
            await w.write(os.urandom(1000))

        async def stream() -> AsyncIterator[bytes]:
            yield data

        if source_kind == "bytes":
            seen: list[int] = []
            info = await client.content.ingest("stale", data, progress=lambda o, t: seen.append(o))
            assert info.digest == sha(data)
            assert seen[0] == 0
        else:
            with pytest.raises(errdefs.FailedPrecondition, match="not the start of this stream"):
                await client.content.ingest("stale", stream())
            assert (await client.content.status("stale")).offset == 1000
            await client.content.abort("stale")


async def test_ingest_64mib_file(client: Client, backend: Backend, tmp_path: Path) -> None:
    block = os.urandom(MiB)
    path = tmp_path / "big"
    h = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(64):
            chunk = block[i:] + block[:i]
            f.write(chunk)
            h.update(chunk)
    dgst = "sha256:" + h.hexdigest()
    progress: list[int] = []
    async with client.lease():
        info = await client.content.ingest("big", path, dgst, progress=lambda o, t: progress.append(o))
        assert (info.digest, info.size) == (dgst, 64 * MiB)
        assert progress[0] == 0
        assert progress[-1] == 64 * MiB
        assert progress == sorted(set(progress))
        assert len(progress) >= 65 - PIPELINE  # the last PIPELINE replies come in one flush
        back = hashlib.sha256()
        async for chunk in client.content.read(dgst):
            back.update(chunk)
        assert "sha256:" + back.hexdigest() == dgst
        await client.content.delete(dgst)


async def test_store_protocol_view(client: Client, backend: Backend) -> None:
    store = client.content.store
    assert isinstance(store, Store)
    async with client.lease():
        await write_blob(store, "helper", b"through the helpers", expected=sha(b"through the helpers"))
        assert (await store.info(sha(b"through the helpers"))).size == 19


# -- namespaces ------------------------------------------------------------------------------------


async def test_namespaces(client: Client, backend: Backend, ns: str) -> None:
    name = ns + "-x"
    created = await client.namespaces.create(name, {"team": "a"})
    assert created.name == name
    assert dict((await client.namespaces.get(name)).labels) == {"team": "a"}
    with pytest.raises(errdefs.AlreadyExists):
        await client.namespaces.create(name)
    with pytest.raises(errdefs.InvalidArgument):
        await client.namespaces.create("bad name!")
    listed = {n.name: dict(n.labels) for n in await client.namespaces.list()}
    assert listed[name] == {"team": "a"}

    updated = await client.namespaces.update(name, {"x": "y", "team": None})
    assert dict(updated.labels) == {"x": "y"}
    updated = await client.namespaces.update(name, {"z": "1"}, fieldpaths=["labels.z"])
    assert dict(updated.labels) == {"x": "y", "z": "1"}

    # a namespace holding content cannot be deleted
    view = client.with_namespace(name)
    blob = await view.content.ingest("ns-blob", b"pin", labels={GC_ROOT_LABEL: "t"})
    with pytest.raises(errdefs.FailedPrecondition):
        await client.namespaces.delete(name)
    await view.content.delete(blob.digest)
    await client.namespaces.delete(name)
    assert name not in {n.name for n in await client.namespaces.list()}
    with pytest.raises(errdefs.NotFound):
        await client.namespaces.delete(name)


# -- leases ----------------------------------------------------------------------------------------


async def test_leases(client: Client, backend: Backend) -> None:
    lease = await client.leases.create("L-one", labels={"owner": "me"}, expire=_dt.timedelta(hours=1))
    assert lease.id == "L-one"
    assert lease.labels["owner"] == "me"
    assert lease.expires_at is not None
    assert _dt.timedelta(minutes=59) < lease.expires_at - _dt.datetime.now(_dt.UTC) <= _dt.timedelta(hours=1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lease.labels[GC_EXPIRE_LABEL])
    with pytest.raises(errdefs.AlreadyExists):
        await client.leases.create("L-one")
    generated = await client.leases.create()
    assert generated.id
    assert generated.expires_at is None

    assert {x.id for x in await client.leases.list()} == {"L-one", generated.id}
    assert [x.id for x in await client.leases.list("id==L-one")] == ["L-one"]
    assert [x.id for x in await client.leases.list("labels.owner==me")] == ["L-one"]

    blob = await client.with_lease("L-one").content.ingest("leased", b"leased bytes")
    assert await client.leases.list_resources("L-one") == [Resource(id=blob.digest, type="content")]
    extra = Resource(id=sha(b"not stored"), type="content")
    await client.leases.add_resource("L-one", extra)
    assert {r.id for r in await client.leases.list_resources("L-one")} == {blob.digest, extra.id}
    await client.leases.delete_resource("L-one", extra)
    await client.leases.delete_resource("L-one", extra)  # absent: no error
    assert {r.id for r in await client.leases.list_resources("L-one")} == {blob.digest}

    await client.leases.delete(generated.id)
    await client.leases.delete("L-one", sync=True)
    with pytest.raises(errdefs.NotFound):
        await client.leases.delete("L-one")
    assert await client.leases.list() == []
    # the blob had nothing but the lease: the (synchronous) collection took it
    with pytest.raises(errdefs.NotFound):
        await client.content.info(blob.digest)


async def test_lease_context(client: Client, backend: Backend) -> None:
    other = client.with_namespace(client.namespace + "-o")
    async with client.lease(expire=_dt.timedelta(minutes=5), labels={"purpose": "test"}) as lease:
        assert client.lease_id == lease.id
        assert other.lease_id is None
        assert lease.labels["purpose"] == "test"
        # a separate client of the same daemon and namespace is covered too, in sub-tasks as well
        async with Client(client.address, namespace=client.namespace) as second:
            info = await asyncio.create_task(second.content.ingest("ctx", b"in the lease"))
        async with client.content.writer("ctx-partial") as w:
            await w.write(b"half")
        types = {(r.type, r.id) for r in await client.leases.list_resources(lease.id)}
        assert ("content", info.digest) in types
        assert ("ingests", "ctx-partial") in types
        # another namespace does not get this lease's header
        await other.content.ingest("outside", b"outside", labels={GC_ROOT_LABEL: "x"})
    assert client.lease_id is None
    assert lease.id not in {x.id for x in await client.leases.list()}
    await client.content.abort("ctx-partial")
    async with client.lease(delete=False) as kept:
        pass
    assert kept.id in {x.id for x in await client.leases.list()}
    await client.leases.delete(kept.id)


# -- events ----------------------------------------------------------------------------------------


class Collector:
    """A subscription read by a background task into a queue."""

    def __init__(self, client: Client, *filters: str) -> None:
        self.sub = client.events.subscribe(*filters)
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for env in self.sub:
            await self.queue.put(env)

    async def next(self, topic: str, timeout: float = 10.0) -> Envelope:
        """The next envelope on *topic* (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                env = await self.queue.get()
                if env.topic == topic:
                    return env

    async def ready(self, client: Client) -> None:
        """Publish probes until one arrives: the subscription is then live."""
        for _ in range(200):
            await client.events.publish("/probe/ready", ContentDelete(digest="probe"))
            try:
                await self.next("/probe/ready", timeout=0.05)
                return
            except TimeoutError:
                continue
        raise AssertionError("subscription never became live")

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.sub.close()


async def test_events(client: Client, backend: Backend, ns: str) -> None:
    col = Collector(client, f"namespace=={ns}", f"namespace=={ns}-ev")
    try:
        await col.ready(client)
        await client.events.publish("/custom/thing", ContentDelete(digest="sha256:abc"))
        env = await col.next("/custom/thing")
        assert env.namespace == ns
        assert env.event == ContentDelete(digest="sha256:abc")
        assert env.type_url == "containerd.events.ContentDelete"
        assert env.fields == {"digest": "sha256:abc"}
        assert abs(env.timestamp - _dt.datetime.now(_dt.UTC)) < _dt.timedelta(minutes=1)

        raw = RawEvent(type_url="example.com/not.registered", value=b"\x01\x02")
        await client.events.publish("/custom/raw", raw)
        got = await col.next("/custom/raw")
        assert got.event == raw
        assert got.fields == {}
        # a generated message is accepted as well
        await client.events.publish("/custom/msg", events_api.NamespaceDelete(name="n"))
        assert (await col.next("/custom/msg")).fields == {"name": "n"}

        # the daemon's own events, decoded
        await client.namespaces.create(ns + "-ev", {"k": "v"})
        created = await col.next("/namespaces/create")
        assert created.event == NamespaceCreate(name=ns + "-ev", labels={"k": "v"})
        await client.namespaces.update(ns + "-ev", {"k2": "v2"})
        upd = await col.next("/namespaces/update")
        assert isinstance(upd.event, NamespaceUpdate)
        assert upd.event.labels["k2"] == "v2"
        view = client.with_namespace(ns + "-ev")
        blob = await view.content.ingest("ev", b"event blob", labels={GC_ROOT_LABEL: "e"})
        await view.content.delete(blob.digest)
        deleted = await col.next("/content/delete")
        assert deleted.namespace == ns + "-ev"
        assert deleted.event == ContentDelete(digest=blob.digest)
        await client.namespaces.delete(ns + "-ev")
        gone = await col.next("/namespaces/delete")
        assert gone.namespace == ns + "-ev"
        assert gone.fields == {"name": ns + "-ev"}

        with pytest.raises(errdefs.InvalidArgument):
            await client.events.publish("no-slash", ContentDelete(digest="x"))
    finally:
        await col.close()

    # topic filters, and closing a subscription through its context manager
    async with client.events.subscribe('topic=="/only/this"') as sub:
        probe = asyncio.create_task(anext(sub))
        for _ in range(200):
            await client.events.publish("/not/this", ContentDelete(digest="n"))
            await client.events.publish("/only/this", ContentDelete(digest="y"))
            done, _ = await asyncio.wait({probe}, timeout=0.05)
            if done:
                break
        assert probe.result().topic == "/only/this"


async def test_subscription_closed_from_another_task(client: Client) -> None:
    sub = client.events.subscribe('topic=="/never"')
    pending = asyncio.create_task(anext(sub))
    await asyncio.sleep(0.1)
    await sub.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 5)
    with pytest.raises(StopAsyncIteration):
        await anext(sub)


async def test_ingest_shared_blob_sends_nothing(client: Client, backend: Backend) -> None:
    """Both daemons run the ``shared`` policy: a blob committed in another namespace is
    linked into this one without its bytes (the first STAT already reports the full offset)."""
    data = os.urandom(2 * MiB)
    dgst = sha(data)
    other = client.with_namespace(client.namespace + "-src")
    await other.content.ingest("src", data, labels={GC_ROOT_LABEL: "s"})
    seen: list[int] = []
    info = await client.content.ingest(
        "dst", data, dgst, labels={GC_ROOT_LABEL: "d"}, progress=lambda o, t: seen.append(o)
    )
    assert info.digest == dgst
    assert seen == [len(data)]
    await other.content.delete(dgst)
    assert await client.content.read_all(dgst) == data
    await client.content.delete(dgst)
