"""ContentService over ctrd.testing's in-memory store (instrumented), real stubs and the interceptor."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from typing import Any, cast

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.const import Status as G
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ctrd import errdefs, namespaces
from ctrd.api.containerd.events import ContentDelete
from ctrd.api.containerd.services.content import v1 as api
from ctrd.api.google.protobuf import FieldMask
from ctrd.content._store import Info, Status
from ctrd.content.digest import EMPTY_SHA256, sha256_of
from ctrd.services.content import ContentService
from ctrd.testing.memory import MemoryBlob, MemoryReader, MemoryStore, MemoryWriter
from ctrd.wire import convert
from ctrd.wire.typeurl import pack_event, type_url, unpack_event

from .conftest import Serve

NS = "default"
MD = {namespaces.GRPC_HEADER: NS}
WRITE = "/containerd.services.content.v1.Content/Write"
STAT_A, WRITE_A, COMMIT_A = api.WriteAction.STAT, api.WriteAction.WRITE, api.WriteAction.COMMIT


# -- fakes ---------------------------------------------------------------------------------


class FakeReader:
    """A :class:`MemoryReader` that counts open readers and reads on its store."""

    def __init__(self, store: FakeStore, inner: MemoryReader) -> None:
        self._store = store
        self._inner = inner
        self.closed = False
        store.open_readers += 1

    @property
    def size(self) -> int:
        return self._inner.size

    async def read_at(self, offset: int, n: int) -> bytes:
        self._store.reads.append((offset, n))
        await asyncio.sleep(0)
        return await self._inner.read_at(offset, n)

    async def close(self) -> None:
        assert not self.closed
        self.closed = True
        self._store.open_readers -= 1
        await self._inner.close()


class FakeWriter:
    """A :class:`MemoryWriter` with failures on demand, recording what the service did."""

    def __init__(self, store: FakeStore, inner: MemoryWriter) -> None:
        self._store = store
        self._inner = inner
        self.closed = False

    async def write(self, data: bytes | memoryview) -> int:
        self._store.write_types.add(type(data))
        limit = self._store.fail_writes_after
        if limit is not None and (await self._inner.status()).offset + len(data) > limit:
            await asyncio.sleep(0.01)  # fail later than an early reply goes out
            raise errdefs.ResourceExhausted("write to ref: no space left on device")
        if self._store.short_write:
            return await self._inner.write(data[: len(data) - 1])
        return await self._inner.write(data)

    def digest(self) -> str:
        return self._inner.digest()

    async def status(self) -> Status:
        return await self._inner.status()

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> None:
        self._store.commits.append((size, expected, None if labels is None else dict(labels)))
        await self._inner.commit(size, expected, labels)

    async def truncate(self, size: int) -> None:
        if self._store.truncate_error is not None:
            raise self._store.truncate_error
        assert size == 0
        await self._inner.truncate(size)

    async def close(self) -> None:
        assert not self.closed, "writer closed twice"
        self.closed = True
        if self._store.close_delay:
            await asyncio.sleep(self._store.close_delay)  # the local store fsyncs before unlocking
        await self._inner.close()
        self._store.closed_writers += 1


class FakeStore(MemoryStore):
    """ctrd.testing's namespaced in-memory store, instrumented (calls, filters, readers, writers)."""

    def __init__(self, *, check_expected: bool = True) -> None:
        super().__init__(namespaced=True)
        self.check_expected = check_expected
        self.short_write = False
        self.fail_writes_after: int | None = None  # ingest size past which writes fail (disk full)
        self.truncate_error: Exception | None = None
        self.status_error: Exception | None = None
        self.close_delay = 0.0  # seconds a writer's close keeps its ref locked
        self.open_readers = 0
        self.closed_writers = 0
        self.reads: list[tuple[int, int]] = []
        self.commits: list[tuple[int, str, dict[str, str] | None]] = []
        self.walk_filters: list[tuple[str, ...]] = []
        self.walk_closed = 0
        self.status_filters: list[tuple[str, ...]] = []
        self.write_types: set[type] = set()
        self.info_calls = 0

    def add(self, data: bytes, ns: str = NS, labels: dict[str, str] | None = None) -> str:
        d = sha256_of(data)
        t = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        self.blobs[ns][d] = MemoryBlob(data, t, t + dt.timedelta(seconds=1), dict(labels or {}))
        return d

    async def info(self, dgst: str) -> Info:
        self.info_calls += 1
        return await super().info(dgst)

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        self.walk_filters.append(filters)
        try:
            async for info in super().walk(*filters):
                yield info
        finally:
            self.walk_closed += 1

    async def reader_at(self, dgst: str) -> FakeReader:  # type: ignore[override]
        return FakeReader(self, await super().reader_at(dgst))

    async def status(self, ref: str) -> Status:
        if self.status_error is not None:
            raise self.status_error
        return await super().status(ref)

    async def list_statuses(self, *filters: str) -> list[Status]:
        self.status_filters.append(filters)
        return await super().list_statuses(*filters)

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> FakeWriter:  # type: ignore[override]
        inner = await super().writer(ref, total, expected if self.check_expected else "")
        return FakeWriter(self, inner)


class FakePublisher:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    async def publish(self, namespace: str, topic: str, event: Any) -> None:
        self.events.append((namespace, topic, event))


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def channel(serve: Serve, store: FakeStore, publisher: FakePublisher) -> AsyncIterator[Channel]:
    async with serve(ContentService(store, publisher)) as ch:
        yield ch


@pytest.fixture
def stub(channel: Channel) -> api.ContentStub:
    return api.ContentStub(channel, metadata=MD)


async def _error(aw: Any) -> GRPCError:
    with pytest.raises(GRPCError) as ei:
        await aw
    return ei.value


async def _collect(it: AsyncIterator[Any]) -> list[Any]:
    return [m async for m in it]


async def exchange(
    channel: Channel,
    requests: Iterable[api.WriteContentRequest],
    *,
    metadata: Mapping[str, str] | None = None,
    lockstep: bool = True,
    end: bool = True,
) -> tuple[list[api.WriteContentResponse], GRPCError | None]:
    """Drive a Write stream like ctr: send one request, read one reply; then half-close and drain.

    Returns the replies and the final error (None for OK).
    """
    out: list[api.WriteContentResponse] = []
    try:
        async with channel.request(
            WRITE,
            Cardinality.STREAM_STREAM,
            api.WriteContentRequest,
            api.WriteContentResponse,
            metadata=dict(MD if metadata is None else metadata),
        ) as stream:
            await stream.send_request()
            ended = False
            for req in requests:
                await stream.send_message(req)
                if lockstep:
                    resp = await stream.recv_message()
                    if resp is None:
                        ended = True
                        break
                    out.append(resp)
            if end:
                with contextlib.suppress(StreamTerminatedError):
                    await stream.end()
            if not ended:
                async for resp in stream:
                    out.append(resp)
            await stream.recv_trailing_metadata()
    except GRPCError as exc:
        return out, exc
    return out, None


def _stat(**kw: Any) -> api.WriteContentRequest:
    return api.WriteContentRequest(action=STAT_A, **kw)


def _write(**kw: Any) -> api.WriteContentRequest:
    return api.WriteContentRequest(action=WRITE_A, **kw)


def _commit(**kw: Any) -> api.WriteContentRequest:
    return api.WriteContentRequest(action=COMMIT_A, **kw)


# -- Info ----------------------------------------------------------------------------------


async def test_info(stub: api.ContentStub, store: FakeStore) -> None:
    d = store.add(b"hello", labels={"a": "b"})
    resp = await stub.info(api.InfoRequest(digest=d))
    assert resp.info is not None
    assert resp.info.digest == d
    assert resp.info.size == 5
    assert resp.info.labels == {"a": "b"}
    assert resp.info.created_at == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert resp.info.updated_at == dt.datetime(2024, 1, 2, 3, 4, 6, tzinfo=dt.UTC)


async def test_info_invalid_digest(stub: api.ContentStub) -> None:
    err = await _error(stub.info(api.InfoRequest(digest="sha256:xyz")))
    assert err.status is G.INVALID_ARGUMENT
    assert err.message == '"sha256:xyz" failed validation: invalid checksum digest length: invalid argument'
    err = await _error(stub.info(api.InfoRequest(digest="")))
    assert err.message == '"" failed validation: invalid checksum digest format: invalid argument'


async def test_info_not_found_and_namespace_isolation(stub: api.ContentStub, store: FakeStore) -> None:
    d = store.add(b"other", ns="other")
    err = await _error(stub.info(api.InfoRequest(digest=d)))
    assert err.status is G.NOT_FOUND
    assert err.message == f"content digest {d}: not found"
    resp = await stub.info(api.InfoRequest(digest=d), metadata={namespaces.GRPC_HEADER: "other"})
    assert resp.info is not None
    assert resp.info.size == 5


async def test_info_without_namespace(channel: Channel, store: FakeStore) -> None:
    d = store.add(b"x")
    err = await _error(api.ContentStub(channel).info(api.InfoRequest(digest=d)))
    assert err.status is G.FAILED_PRECONDITION
    assert err.message == "namespace is required: failed precondition"


# -- Update --------------------------------------------------------------------------------


def _update(d: str, labels: dict[str, str], paths: list[str] | None) -> api.UpdateRequest:
    mask = None if paths is None else FieldMask(paths=paths)
    return api.UpdateRequest(info=api.Info(digest=d, labels=labels), update_mask=mask)


@pytest.mark.parametrize("paths", [None, [], ["labels"]])
async def test_update_replaces_all(stub: api.ContentStub, store: FakeStore, paths: list[str] | None) -> None:
    d = store.add(b"x", labels={"old": "1", "keep": "2"})
    resp = await stub.update(_update(d, {"new": "3"}, paths))
    assert resp.info is not None
    assert resp.info.labels == {"new": "3"}
    assert resp.info.updated_at is not None
    assert resp.info.updated_at.tzinfo is not None
    assert store.blobs[NS][d].labels == {"new": "3"}


async def test_update_single_keys(stub: api.ContentStub, store: FakeStore) -> None:
    d = store.add(b"x", labels={"a": "1", "b": "2", "c": "3"})
    resp = await stub.update(_update(d, {"a": "9", "ignored": "x"}, ["labels.a", "labels.b", "labels.new"]))
    assert resp.info is not None
    assert resp.info.labels == {"a": "9", "c": "3"}


@pytest.mark.parametrize("path", ["size", "digest", "labels.", "createdat", "labelsx"])
async def test_update_invalid_path(stub: api.ContentStub, store: FakeStore, path: str) -> None:
    d = store.add(b"x", labels={"a": "1"})
    err = await _error(stub.update(_update(d, {}, ["labels.a", path])))
    assert err.status is G.INVALID_ARGUMENT
    assert err.message == f'cannot update "{path}" field on content info "{d}": invalid argument'
    assert store.blobs[NS][d].labels == {"a": "1"}


async def test_update_oversize_label(stub: api.ContentStub, store: FakeStore) -> None:
    d = store.add(b"x")
    err = await _error(stub.update(_update(d, {"k": "v" * 4096}, ["labels.k"])))
    assert err.status is G.INVALID_ARGUMENT
    assert err.message is not None
    assert err.message.startswith(
        "info.Labels: label key and value length (4097 bytes) greater than maximum size"
    )
    # exactly 4096 is fine; an oversize label outside the mask is not applied, so not checked
    ok = await stub.update(_update(d, {"k": "v" * 4095, "big": "x" * 5000}, ["labels.k"]))
    assert ok.info is not None
    assert set(ok.info.labels) == {"k"}


async def test_update_errors(stub: api.ContentStub, store: FakeStore) -> None:
    err = await _error(stub.update(api.UpdateRequest()))
    assert err.status is G.INVALID_ARGUMENT
    assert err.message == '"" failed validation: invalid checksum digest format: invalid argument'
    missing = sha256_of(b"missing")
    err = await _error(stub.update(_update(missing, {"a": "b"}, None)))
    assert err.status is G.NOT_FOUND


# -- List ----------------------------------------------------------------------------------


async def test_list_batches_of_100(stub: api.ContentStub, store: FakeStore) -> None:
    digests = sorted(store.add(str(i).encode()) for i in range(250))
    msgs = await _collect(stub.list(api.ListContentRequest()))
    assert [len(m.info) for m in msgs] == [100, 100, 50]
    infos = [i for m in msgs for i in m.info]
    assert [i.digest for i in infos] == digests
    assert all(i.updated_at == dt.datetime(2024, 1, 2, 3, 4, 6, tzinfo=dt.UTC) for i in infos)
    assert store.walk_closed == 1


async def test_list_exact_multiple(stub: api.ContentStub, store: FakeStore) -> None:
    for i in range(200):
        store.add(str(i).encode())
    msgs = await _collect(stub.list(api.ListContentRequest()))
    assert [len(m.info) for m in msgs] == [100, 100]


async def test_list_empty_sends_nothing(stub: api.ContentStub, store: FakeStore) -> None:
    assert await _collect(stub.list(api.ListContentRequest())) == []
    store.add(b"elsewhere", ns="other")
    assert await _collect(stub.list(api.ListContentRequest())) == []


async def test_list_passes_filters(stub: api.ContentStub, store: FakeStore) -> None:
    store.add(b"x")
    await _collect(stub.list(api.ListContentRequest(filters=["labels.a==b", "digest~=sha"])))
    assert store.walk_filters == [("labels.a==b", "digest~=sha")]


# -- Delete --------------------------------------------------------------------------------


async def test_delete_publishes_event(
    stub: api.ContentStub, store: FakeStore, publisher: FakePublisher
) -> None:
    d = store.add(b"bye")
    await stub.delete(api.DeleteContentRequest(digest=d))
    assert d not in store.blobs[NS]
    assert len(publisher.events) == 1
    ns, topic, event = publisher.events[0]
    assert (ns, topic) == (NS, "/content/delete")
    assert isinstance(event, ContentDelete)
    assert event.digest == d
    err = await _error(stub.info(api.InfoRequest(digest=d)))
    assert err.status is G.NOT_FOUND


async def test_delete_errors_publish_nothing(stub: api.ContentStub, publisher: FakePublisher) -> None:
    err = await _error(stub.delete(api.DeleteContentRequest(digest="nope")))
    assert err.status is G.INVALID_ARGUMENT
    assert err.message == "invalid checksum digest format: invalid argument"
    missing = sha256_of(b"missing")
    err = await _error(stub.delete(api.DeleteContentRequest(digest=missing)))
    assert err.status is G.NOT_FOUND
    assert err.message == f"content digest {missing}: not found"
    assert publisher.events == []


async def test_delete_without_publisher(serve: Serve, store: FakeStore) -> None:
    d = store.add(b"x")
    async with serve(ContentService(store)) as ch:
        await api.ContentStub(ch, metadata=MD).delete(api.DeleteContentRequest(digest=d))
    assert d not in store.blobs[NS]


# -- Read ----------------------------------------------------------------------------------

MIB = 1 << 20


def _blob(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


async def _read(
    stub: api.ContentStub, d: str, offset: int = 0, size: int = 0
) -> list[api.ReadContentResponse]:
    return await _collect(stub.read(api.ReadContentRequest(digest=d, offset=offset, size=size)))


async def test_read_whole_blob_in_1mib_chunks(stub: api.ContentStub, store: FakeStore) -> None:
    data = _blob(2 * MIB + MIB // 2)
    d = store.add(data)
    msgs = await _read(stub, d)
    assert [len(m.data) for m in msgs] == [MIB, MIB, MIB // 2]
    assert [m.offset for m in msgs] == [0, MIB, 2 * MIB]
    assert b"".join(m.data for m in msgs) == data
    assert store.open_readers == 0


@pytest.mark.parametrize(
    ("offset", "size", "start", "end"),
    [
        (10, 5, 10, 15),  # a range
        (-7, 5, 0, 5),  # negative offset reads from 0
        (90, 50, 90, 100),  # past the end: to the end
        (30, 0, 30, 100),  # size 0: to the end
        (30, -1, 30, 100),  # negative size: to the end
        (0, 100, 0, 100),
    ],
)
async def test_read_ranges(
    stub: api.ContentStub, store: FakeStore, offset: int, size: int, start: int, end: int
) -> None:
    data = _blob(100)
    d = store.add(data)
    msgs = await _read(stub, d, offset, size)
    assert len(msgs) == 1
    assert msgs[0].offset == 0  # relative to the requested offset (containerd quirk)
    assert msgs[0].data == data[start:end]


async def test_read_offset_relative_across_chunks(stub: api.ContentStub, store: FakeStore) -> None:
    data = _blob(MIB + 1000)
    d = store.add(data)
    msgs = await _read(stub, d, offset=500)
    assert [(m.offset, len(m.data)) for m in msgs] == [(0, MIB), (MIB, 500)]
    assert b"".join(m.data for m in msgs) == data[500:]


async def test_read_at_end_sends_nothing(stub: api.ContentStub, store: FakeStore) -> None:
    d = store.add(_blob(100))
    assert await _read(stub, d, offset=100) == []
    empty = store.add(b"")
    assert await _read(stub, empty) == []
    assert store.open_readers == 0


async def test_read_past_end_out_of_range(stub: api.ContentStub, store: FakeStore) -> None:
    d = store.add(_blob(100))
    err = await _error(_read(stub, d, offset=101))
    assert err.status is G.OUT_OF_RANGE
    assert err.message == "read past object length 100 bytes: out of range"
    assert store.open_readers == 0


async def test_read_errors(stub: api.ContentStub) -> None:
    err = await _error(_read(stub, "sha256:abc"))
    assert err.status is G.INVALID_ARGUMENT
    assert err.message == "sha256:abc: invalid checksum digest length: invalid argument"
    missing = sha256_of(b"missing")
    err = await _error(_read(stub, missing))
    assert err.status is G.NOT_FOUND
    assert err.message == f"content digest {missing}: not found"


async def test_read_client_cancel_closes_reader(stub: api.ContentStub, store: FakeStore) -> None:
    d = store.add(_blob(8 * MIB))
    stream = cast(AsyncGenerator[api.ReadContentResponse, None], stub.read(api.ReadContentRequest(digest=d)))
    async with contextlib.aclosing(stream) as it:
        first = await anext(it)
        assert len(first.data) == MIB
    for _ in range(200):
        if store.open_readers == 0:
            break
        await asyncio.sleep(0.01)
    assert store.open_readers == 0
    assert len(store.reads) < 8  # the server stopped reading


# -- Status / ListStatuses / Abort ---------------------------------------------------------


async def test_status(stub: api.ContentStub, store: FakeStore, channel: Channel) -> None:
    _, err = await exchange(channel, [_write(ref="r1", total=10, data=b"abc")])
    assert err is None
    resp = await stub.status(api.StatusRequest(ref="r1"))
    st = resp.status
    assert st is not None
    assert (st.ref, st.offset, st.total, st.expected) == ("r1", 3, 10, "")
    assert st.started_at is not None
    assert st.started_at.tzinfo is dt.UTC
    assert st.updated_at is not None


async def test_status_not_found(stub: api.ContentStub, store: FakeStore) -> None:
    err = await _error(stub.status(api.StatusRequest(ref="x")))
    assert err.status is G.NOT_FOUND
    assert err.message == 'could not get status for ref "x": reference x: not found'


async def test_status_never_reveals_paths(stub: api.ContentStub, store: FakeStore) -> None:
    store.status_error = errdefs.NotFound("open /var/lib/ctrd/ingest/abc/data: no such file or directory")
    err = await _error(stub.status(api.StatusRequest(ref="x")))
    assert err.status is G.NOT_FOUND
    assert err.message == 'could not get status for ref "x": reference x: not found'
    store.status_error = FileNotFoundError(2, "No such file or directory", "/var/lib/ctrd/secret")
    err = await _error(stub.status(api.StatusRequest(ref="x")))
    assert err.status is G.UNKNOWN
    assert err.message is not None
    assert "/var/lib" not in err.message
    store.status_error = errdefs.Unavailable("busy")
    err = await _error(stub.status(api.StatusRequest(ref='a"b')))
    assert err.status is G.UNAVAILABLE
    assert err.message == 'could not get status for ref "a\\"b": busy: unavailable'


async def test_list_statuses(stub: api.ContentStub, store: FakeStore, channel: Channel) -> None:
    assert (await stub.list_statuses(api.ListStatusesRequest(filters=[""]))).statuses == []
    for ref in ("b", "a"):
        _, err = await exchange(channel, [_write(ref=ref, data=ref.encode() * 2)])
        assert err is None
    resp = await stub.list_statuses(api.ListStatusesRequest(filters=["ref==a", "ref==b"]))
    assert [(s.ref, s.offset) for s in resp.statuses] == [("a", 2), ("b", 2)]
    assert all(s.started_at is not None for s in resp.statuses)
    assert store.status_filters == [("",), ("ref==a", "ref==b")]


async def test_abort(stub: api.ContentStub, store: FakeStore, channel: Channel) -> None:
    _, err = await exchange(channel, [_write(ref="r", data=b"x")])
    assert err is None
    await stub.abort(api.AbortRequest(ref="r"))
    assert "r" not in store.ingests[NS]
    err2 = await _error(stub.abort(api.AbortRequest(ref="r")))
    assert err2.status is G.NOT_FOUND
    assert err2.message == "reference r: not found"


# -- Write ---------------------------------------------------------------------------------


async def test_write_ctr_sequence(channel: Channel, store: FakeStore) -> None:
    data = _blob(MIB + 17)
    d = sha256_of(data)
    replies, err = await exchange(
        channel,
        [
            _stat(ref="ref1"),
            _stat(),  # ctr's second STAT carries no ref
            _write(offset=0, data=data[:MIB]),
            _write(offset=MIB, data=data[MIB:]),
            _commit(offset=len(data)),
        ],
    )
    assert err is None
    assert [r.action for r in replies] == [STAT_A, STAT_A, WRITE_A, WRITE_A, COMMIT_A, COMMIT_A]
    assert [r.offset for r in replies] == [0, 0, MIB, len(data), len(data), len(data)]
    assert replies[0].digest == EMPTY_SHA256
    assert replies[3].digest == d
    assert replies[4].digest == d
    # the response message is reused: STAT's fields stay in later replies
    started = replies[0].started_at
    assert started is not None
    assert started.tzinfo is dt.UTC
    assert all(r.started_at == started for r in replies)
    assert all(r.total == 0 for r in replies)
    # the commit reply is pumped once more
    assert bytes(replies[4]) == bytes(replies[5])
    assert store.blobs[NS][d].data == data
    assert store.blobs[NS][d].labels == {}
    assert store.commits == [(0, "", None)]
    assert "ref1" not in store.ingests[NS]
    assert store.closed_writers == 1
    # WRITE data arrives as a zero-copy view into the received message (ctrd.wire.codecs)
    assert store.write_types == {memoryview}


async def test_write_pipelined_client(channel: Channel, store: FakeStore) -> None:
    data = b"hello world"
    replies, err = await exchange(
        channel,
        [_stat(ref="p", total=len(data)), _write(data=data), _commit(offset=len(data), total=len(data))],
        lockstep=False,
    )
    assert err is None
    assert [r.action for r in replies] == [STAT_A, WRITE_A, COMMIT_A, COMMIT_A]
    assert sha256_of(data) in store.blobs[NS]


async def test_write_stat_fields_and_total(channel: Channel, store: FakeStore) -> None:
    replies, err = await exchange(
        channel,
        [
            _stat(ref="t", total=10),
            _write(data=b"abc"),
            _stat(),
            _stat(total=20),
            _stat(total=-5),  # non-positive totals do not change it
        ],
    )
    assert err is None
    assert [r.total for r in replies] == [10, 10, 10, 20, 20, 20]
    assert replies[2].digest == sha256_of(b"abc")
    assert replies[2].offset == 3
    assert replies[2].updated_at is not None
    assert replies[0].updated_at is not None
    assert replies[2].updated_at >= replies[0].updated_at
    # half-close without commit: the last reply is pumped; the ingest stays
    assert replies[-1].action == STAT_A
    assert bytes(replies[-1]) == bytes(replies[-2])
    assert "t" in store.ingests[NS]
    assert store.ingests[NS]["t"].locked is False


async def test_write_half_close_after_write(channel: Channel, store: FakeStore) -> None:
    replies, err = await exchange(channel, [_write(ref="h", data=b"abc")])
    assert err is None
    assert [(r.action, r.offset) for r in replies] == [(WRITE_A, 3), (WRITE_A, 3)]
    assert replies[0].digest == sha256_of(b"abc")
    assert bytes(store.ingests[NS]["h"].data) == b"abc"


async def test_write_offset_out_of_range(channel: Channel, store: FakeStore) -> None:
    replies, err = await exchange(channel, [_write(ref="o", data=b"abc"), _write(offset=5, data=b"de")])
    assert err is not None
    assert err.status is G.OUT_OF_RANGE
    assert err.message == "write @5 must occur at current offset 3: out of range"
    assert len(replies) == 1  # no pump after an error
    assert bytes(store.ingests[NS]["o"].data) == b"abc"
    assert store.closed_writers == 1


async def test_write_offset_zero_truncates(channel: Channel, store: FakeStore) -> None:
    replies, err = await exchange(channel, [_write(ref="z", data=b"abcdef")])
    assert err is None
    # resume: the ingest holds 6 bytes; a WRITE at offset 0 starts over
    replies, err = await exchange(
        channel, [_stat(ref="z"), _write(offset=0, data=b"xy"), _write(offset=2, data=b"z")]
    )
    assert err is None
    assert [r.offset for r in replies] == [6, 2, 3, 3]
    assert bytes(store.ingests[NS]["z"].data) == b"xyz"


async def test_write_offset_zero_without_data_truncates_to_zero(channel: Channel, store: FakeStore) -> None:
    await exchange(channel, [_write(ref="z", data=b"abc")])
    replies, err = await exchange(channel, [_write(ref="z")])
    assert err is None
    assert replies[0].offset == 0
    assert bytes(store.ingests[NS]["z"].data) == b""


async def test_write_commit_at_offset_zero_truncates_then_fails(channel: Channel, store: FakeStore) -> None:
    # containerd: COMMIT must carry the current offset, else the ingest is truncated
    _replies, err = await exchange(channel, [_write(ref="c", data=b"abc"), _commit(offset=0, total=3)])
    assert err is not None
    assert err.status is G.FAILED_PRECONDITION
    assert err.message == '"c" failed size validation: 0 != 3: failed precondition'
    assert "c" in store.ingests[NS]  # kept for resumption


async def test_write_truncate_failure_is_unknown(channel: Channel, store: FakeStore) -> None:
    await exchange(channel, [_write(ref="u", data=b"abc")])
    store.truncate_error = errdefs.InvalidArgument("truncate: unsupported size")
    _, err = await exchange(channel, [_write(ref="u", data=b"x")])
    assert err is not None
    assert err.status is G.UNKNOWN
    assert err.message == "truncate failed: truncate: unsupported size: invalid argument: unknown"


async def test_write_expected_exists_in_store_writer(channel: Channel, store: FakeStore) -> None:
    d = store.add(b"there")
    replies, err = await exchange(channel, [_stat(ref="e", expected=d)])
    assert replies == []
    assert err is not None
    assert err.status is G.ALREADY_EXISTS
    assert err.message == f"content {d}: already exists"
    assert "e" not in store.ingests[NS]


async def test_write_expected_exists_first_message_service_check(serve: Serve) -> None:
    store = FakeStore(check_expected=False)  # as if committed between the store's check and ours
    d = store.add(b"there")
    async with serve(ContentService(store)) as ch:
        replies, err = await exchange(ch, [_stat(ref="e", expected=d)])
    assert replies == []
    assert err is not None
    assert err.status is G.ALREADY_EXISTS
    assert err.message == f"blob with expected digest {d} exists: already exists"
    assert "e" not in store.ingests[NS]  # aborted
    assert store.closed_writers == 1  # closed exactly once


async def test_write_expected_exists_later_message(channel: Channel, store: FakeStore) -> None:
    data = b"payload"
    d = sha256_of(data)
    replies, err = await exchange(channel, [_stat(ref="l"), _write(data=data)])
    assert err is None
    assert len(replies) == 3
    calls = store.info_calls
    # the same blob gets committed elsewhere meanwhile; COMMIT carries expected
    store.add(data)
    replies, err = await exchange(channel, [_stat(ref="l"), _commit(offset=len(data), expected=d)])
    assert [r.action for r in replies] == [STAT_A]
    assert err is not None
    assert err.status is G.ALREADY_EXISTS
    assert err.message == f"blob with expected digest {d} exists: already exists"
    assert "l" not in store.ingests[NS]
    assert store.closed_writers == 2
    assert store.info_calls == calls + 1  # only messages carrying expected are checked


async def test_write_expected_checked_on_every_message(channel: Channel, store: FakeStore) -> None:
    d = sha256_of(b"abc")
    replies, err = await exchange(
        channel, [_stat(ref="x", expected=d), _write(data=b"abc", expected=d), _commit(offset=3, expected=d)]
    )
    assert err is None
    assert store.info_calls == 3
    assert [r.action for r in replies] == [STAT_A, WRITE_A, COMMIT_A, COMMIT_A]
    assert store.commits == [(0, d, None)]


async def test_write_commit_with_labels(channel: Channel, store: FakeStore) -> None:
    _replies, err = await exchange(
        channel,
        [
            _write(ref="lb", data=b"abc"),
            _commit(offset=3, total=3, labels={"a": "b", "containerd.io/gc.root": "x"}),
        ],
    )
    assert err is None
    d = sha256_of(b"abc")
    assert store.blobs[NS][d].labels == {"a": "b", "containerd.io/gc.root": "x"}
    assert store.commits == [(3, "", {"a": "b", "containerd.io/gc.root": "x"})]


async def test_write_commit_oversize_label(channel: Channel, store: FakeStore) -> None:
    _replies, err = await exchange(
        channel, [_write(ref="big", data=b"abc"), _commit(offset=3, labels={"k": "v" * 5000})]
    )
    assert err is not None
    assert err.status is G.INVALID_ARGUMENT
    assert err.message is not None
    assert err.message.startswith("info.Labels: label key and value length")
    assert store.commits == []
    assert "big" in store.ingests[NS]


async def test_write_single_message_commit(channel: Channel, store: FakeStore) -> None:
    data = b"one shot"
    d = sha256_of(data)
    replies, err = await exchange(channel, [_commit(ref="one", total=len(data), expected=d, data=data)])
    assert err is None
    assert len(replies) == 2
    for r in replies:
        assert (r.action, r.offset, r.digest) == (COMMIT_A, len(data), d)
        assert r.started_at is None  # no STAT on this stream
    assert store.blobs[NS][d].data == data
    assert store.commits == [(len(data), d, None)]


async def test_write_stream_ends_after_commit(channel: Channel, store: FakeStore) -> None:
    replies, err = await exchange(
        channel, [_commit(ref="end", data=b"abc"), _stat(), _write(data=b"more")], lockstep=False
    )
    assert err is None
    assert [r.action for r in replies] == [COMMIT_A, COMMIT_A]
    assert sha256_of(b"abc") in store.blobs[NS]


async def test_write_commit_failure_keeps_ingest(channel: Channel, store: FakeStore) -> None:
    bad = sha256_of(b"something else")
    replies, err = await exchange(channel, [_write(ref="bad", data=b"abc"), _commit(offset=3, expected=bad)])
    assert err is not None
    assert err.status is G.FAILED_PRECONDITION
    assert err.message == f"unexpected commit digest {sha256_of(b'abc')}, expected {bad}: failed precondition"
    assert [r.action for r in replies] == [WRITE_A]
    assert "bad" in store.ingests[NS]
    assert not store.ingests[NS]["bad"].locked


async def test_write_commit_already_exists(channel: Channel, store: FakeStore) -> None:
    d = store.add(b"dup")
    _, err = await exchange(channel, [_write(ref="dup", data=b"dup"), _commit(offset=3)])
    assert err is not None
    assert err.status is G.ALREADY_EXISTS
    assert err.message == f"content {d}: already exists"


@pytest.mark.parametrize("first", [None, _stat(), _write(data=b"x"), _commit(data=b"x")])
async def test_write_first_message_needs_ref(
    channel: Channel, store: FakeStore, first: api.WriteContentRequest | None
) -> None:
    replies, err = await exchange(channel, [] if first is None else [first])
    assert replies == []
    assert err is not None
    assert err.status is G.INVALID_ARGUMENT
    assert err.message == "first message must have a reference: invalid argument"
    assert store.ingests[NS] == {}


async def test_write_short_write_is_data_loss(channel: Channel, store: FakeStore) -> None:
    store.short_write = True
    _, err = await exchange(channel, [_write(ref="s", data=b"abcd")])
    assert err is not None
    assert err.status is G.DATA_LOSS
    assert err.message == "wrote 3 of 4 bytes: data loss"


async def test_write_locked_ref_unavailable(channel: Channel, store: FakeStore) -> None:
    async with channel.request(
        WRITE, Cardinality.STREAM_STREAM, api.WriteContentRequest, api.WriteContentResponse, metadata=MD
    ) as stream:
        await stream.send_request()
        await stream.send_message(_stat(ref="lock"))
        assert await stream.recv_message() is not None
        _, err = await exchange(channel, [_stat(ref="lock")])
        assert err is not None
        assert err.status is G.UNAVAILABLE
        await stream.end()
        rest = [m async for m in stream]
        assert len(rest) == 1
    assert not store.ingests[NS]["lock"].locked


async def _hold(channel: Channel, ref: str, data: bytes) -> Any:
    """A Write call (opened with ``__aenter__``) that wrote *data* to *ref* and holds it."""
    stream = channel.request(
        WRITE, Cardinality.STREAM_STREAM, api.WriteContentRequest, api.WriteContentResponse, metadata=MD
    )
    await stream.__aenter__()
    await stream.send_request()
    await stream.send_message(_write(ref=ref, data=data))
    reply = await stream.recv_message()
    assert reply is not None
    assert reply.offset == len(data)
    return stream


async def test_write_reopen_after_half_close_waits_for_release(channel: Channel, store: FakeStore) -> None:
    # containerd's Go client closes a writer with a half-close and reopens the ref at once;
    # the first call still holds the ref while its writer closes
    store.close_delay = 0.05
    first = await _hold(channel, "hc", b"abc")
    try:
        await first.end()
        replies, err = await exchange(channel, [_stat(ref="hc"), _write(offset=3, data=b"de")])
        assert err is None, err
        assert [(r.action, r.offset) for r in replies] == [(STAT_A, 3), (WRITE_A, 5), (WRITE_A, 5)]
        assert [m.offset async for m in first] == [3]  # the first call's pumped reply
        await first.recv_trailing_metadata()
    finally:
        await first.__aexit__(None, None, None)
    assert bytes(store.ingests[NS]["hc"].data) == b"abcde"
    assert store.closed_writers == 2


async def test_write_reopen_after_cancel_waits_for_release(channel: Channel, store: FakeStore) -> None:
    store.close_delay = 0.05
    first = await _hold(channel, "cc", b"abc")
    try:
        await first.cancel()
        replies, err = await exchange(channel, [_stat(ref="cc")])
        assert err is None, err
        assert [r.offset for r in replies] == [3, 3]
    finally:
        await first.__aexit__(None, None, None)
    assert store.closed_writers == 2


async def test_write_live_holder_fails_at_once_even_with_slow_close(
    channel: Channel, store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # only a holder whose client ended its side is waited for
    monkeypatch.setattr("ctrd.services._write.RELEASE_WAIT", 3600.0)
    store.close_delay = 0.05
    first = await _hold(channel, "live", b"abc")
    try:
        _, err = await exchange(channel, [_stat(ref="live")])
        assert err is not None
        assert err.status is G.UNAVAILABLE
        assert err.message == "ref live locked: unavailable"
        await first.end()
        assert [m.offset async for m in first] == [3]
    finally:
        await first.__aexit__(None, None, None)


async def test_write_wait_for_release_is_bounded(
    channel: Channel, store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ctrd.services._write.RELEASE_WAIT", 0.02)
    store.close_delay = 0.5  # a close far slower than the wait
    first = await _hold(channel, "stuck", b"abc")
    try:
        await first.end()
        _, err = await exchange(channel, [_stat(ref="stuck")])
        assert err is not None
        assert err.status is G.UNAVAILABLE
        assert err.message == "ref stuck locked: unavailable"
        assert store.closed_writers == 0
        assert [m.offset async for m in first] == [3]  # the first call ends once closed
    finally:
        await first.__aexit__(None, None, None)
    assert store.closed_writers == 1


async def test_write_unknown_action_is_echoed(channel: Channel, store: FakeStore) -> None:
    raw = bytes(_stat(ref="u")) + b"\x08\x07"  # action = 7
    req = api.WriteContentRequest.parse(raw)
    replies, err = await exchange(channel, [req, _stat()])
    assert err is None
    assert int(replies[0].action) == 7
    assert replies[0].digest == ""
    assert replies[1].digest == EMPTY_SHA256


async def test_write_without_namespace(channel: Channel, store: FakeStore) -> None:
    _, err = await exchange(channel, [_stat(ref="n")], metadata={})
    assert err is not None
    assert err.status is G.FAILED_PRECONDITION


async def test_write_in_other_namespace(channel: Channel, store: FakeStore) -> None:
    _, err = await exchange(
        channel, [_commit(ref="n", data=b"abc")], metadata={namespaces.GRPC_HEADER: "other"}
    )
    assert err is None
    assert sha256_of(b"abc") in store.blobs["other"]
    assert sha256_of(b"abc") not in store.blobs[NS]


async def test_write_client_cancel_closes_writer(channel: Channel, store: FakeStore) -> None:
    async with channel.request(
        WRITE, Cardinality.STREAM_STREAM, api.WriteContentRequest, api.WriteContentResponse, metadata=MD
    ) as stream:
        await stream.send_request()
        await stream.send_message(_write(ref="cx", data=b"abc"))
        assert await stream.recv_message() is not None
        await stream.cancel()
    for _ in range(200):
        if store.closed_writers:
            break
        await asyncio.sleep(0.01)
    assert store.closed_writers == 1
    assert not store.ingests[NS]["cx"].locked
    assert bytes(store.ingests[NS]["cx"].data) == b"abc"


# -- conversions and event packing ---------------------------------------------------------


def test_convert_round_trip_and_utc() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    info = Info(
        "sha256:" + "a" * 64,
        3,
        dt.datetime(2024, 1, 1, 12, tzinfo=plus2),
        dt.datetime(2024, 1, 1),
        {"a": "b"},
    )
    msg = convert.info_to_proto(info)
    assert msg.created_at == dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC)
    assert msg.created_at is not None
    assert msg.created_at.tzinfo is dt.UTC
    assert msg.updated_at == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    back = convert.info_from_proto(api.Info.parse(bytes(msg)))
    assert back.digest == info.digest
    assert back.labels == {"a": "b"}
    assert back.size == 3
    assert back.created_at.tzinfo is not None
    empty = convert.info_from_proto(api.Info(digest="d"))
    assert empty.created_at == convert.EPOCH
    st = Status("r", 1, 2, dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "e")
    smsg = convert.status_to_proto(st)
    assert convert.status_from_proto(api.Status.parse(bytes(smsg))) == dataclasses.replace(
        st, started_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    )
    assert convert.status_from_proto(None).ref == ""


def test_pack_event_bare_type_url() -> None:
    ev = ContentDelete(digest="sha256:" + "b" * 64)
    anyv = pack_event(ev)
    assert anyv.type_url == "containerd.events.ContentDelete"
    assert anyv.value == bytes(ev)
    assert pack_event(anyv) is anyv
    back = unpack_event(anyv)
    assert isinstance(back, ContentDelete)
    assert back.digest == ev.digest
    assert type_url(ContentDelete) == "containerd.events.ContentDelete"
    with pytest.raises(TypeError):
        type_url(FakeStore)  # type: ignore[arg-type]


# -- Write with early_write_ack ------------------------------------------------------------


@pytest.fixture
async def early(serve: Serve, store: FakeStore, publisher: FakePublisher) -> AsyncIterator[Channel]:
    async with serve(ContentService(store, publisher, early_write_ack=True)) as ch:
        yield ch


async def test_early_ack_ctr_sequence(early: Channel, store: FakeStore) -> None:
    data = _blob(2 * MIB + 17)
    d = sha256_of(data)
    replies, err = await exchange(
        early,
        [
            _stat(ref="e1"),
            _write(offset=0, data=data[:MIB]),
            _write(offset=MIB, data=data[MIB : 2 * MIB]),
            _write(offset=2 * MIB, data=data[2 * MIB :]),
            _stat(),
            _commit(offset=len(data), expected=d),
        ],
    )
    assert err is None
    assert [r.action for r in replies] == [STAT_A, WRITE_A, WRITE_A, WRITE_A, STAT_A, COMMIT_A, COMMIT_A]
    assert [r.offset for r in replies] == [0, MIB, 2 * MIB, len(data), len(data), len(data), len(data)]
    # WRITE replies go out before the chunk is hashed: no digest; STAT and COMMIT carry it
    assert [r.digest for r in replies[1:4]] == ["", "", ""]
    assert replies[0].digest == EMPTY_SHA256
    assert replies[4].digest == d
    assert replies[5].digest == d
    assert store.blobs[NS][d].data == data


async def test_early_ack_failed_write_fails_the_next_reply(early: Channel, store: FakeStore) -> None:
    store.fail_writes_after = MIB
    data = _blob(2 * MIB)
    replies, err = await exchange(
        early,
        [
            _stat(ref="e2"),
            _write(offset=0, data=data[:MIB]),
            _write(offset=MIB, data=data[MIB:]),  # acknowledged, then fails on "disk"
            _commit(offset=len(data), expected=sha256_of(data)),
        ],
    )
    assert [(r.action, r.offset) for r in replies] == [(STAT_A, 0), (WRITE_A, MIB), (WRITE_A, 2 * MIB)]
    assert err is not None, err
    assert err.status is G.RESOURCE_EXHAUSTED, err
    assert err.message == "write to ref: no space left on device: resource exhausted"
    assert store.blobs[NS] == {}
    assert len(store.ingests[NS]["e2"].data) == MIB  # what really reached the disk
    assert store.closed_writers == 1


async def test_early_ack_failed_last_write_fails_the_stream(early: Channel, store: FakeStore) -> None:
    store.fail_writes_after = 0
    replies, err = await exchange(early, [_stat(ref="e3"), _write(data=b"abc")])
    assert [(r.action, r.offset) for r in replies] == [(STAT_A, 0), (WRITE_A, 3)]
    # the half-close waits for the chunk: its failure is the stream's status, not a pumped reply
    assert err is not None, err
    assert err.status is G.RESOURCE_EXHAUSTED, err
    assert len(store.ingests[NS]["e3"].data) == 0


async def test_early_ack_truncate_and_out_of_range_still_checked(early: Channel, store: FakeStore) -> None:
    replies, err = await exchange(
        early, [_write(ref="e4", data=b"abcd"), _write(offset=0, data=b"xy"), _write(offset=9, data=b"z")]
    )
    assert [r.offset for r in replies] == [4, 2]
    assert err is not None
    assert err.status is G.OUT_OF_RANGE
    assert bytes(store.ingests[NS]["e4"].data) == b"xy"


# -- the SDK's pipelined RemoteWriter against the service ----------------------------------


async def test_remote_writer_pipelines_and_surfaces_failures(channel: Channel, store: FakeStore) -> None:
    from ctrd.remote import PIPELINE, RemoteWriter

    data = _blob(6 * MIB)
    d = sha256_of(data)
    w = RemoteWriter(channel, "pipe", MD, pipeline=PIPELINE)
    await w.open(len(data), d)
    for i in range(6):
        assert await w.write(memoryview(data)[i * MIB : (i + 1) * MIB]) == MIB
    # replies lag behind the sends, by at most PIPELINE WRITEs
    assert 6 * MIB - PIPELINE * MIB <= w.offset < 6 * MIB
    await w.flush()
    assert w.offset == 6 * MIB
    assert w.digest() == d
    await w.commit(len(data), d)
    assert store.blobs[NS][d].data == data

    # a failure of an early chunk surfaces from a later call, and the writer is closed
    store.fail_writes_after = MIB
    w = RemoteWriter(channel, "pipe-fail", MD, pipeline=PIPELINE)
    await w.open(0, "")

    async def write_all() -> None:
        for i in range(4):
            await w.write(memoryview(data)[i * MIB : (i + 1) * MIB])
        await w.flush()

    with pytest.raises(errdefs.ResourceExhausted):
        await write_all()
    assert w.closed
    with pytest.raises(errdefs.FailedPrecondition):
        await w.write(b"more")
    assert len(store.ingests[NS]["pipe-fail"].data) == MIB

    # lock step (the default): offset and digest are the server's after each write
    w = RemoteWriter(channel, "lockstep", MD)
    await w.open(0, "")
    await w.write(memoryview(data)[:MIB])
    assert (w.offset, w.digest()) == (MIB, sha256_of(data[:MIB]))
    await w.close()

    # a short write is DataLoss (the server says so), found when its reply is taken
    store.fail_writes_after = None
    store.short_write = True
    w = RemoteWriter(channel, "pipe-short", MD, pipeline=PIPELINE)
    await w.open(0, "")
    await w.write(b"abcdef")
    with pytest.raises(errdefs.DataLoss, match="wrote 5 of 6 bytes"):
        await w.status()
    assert w.closed


async def test_remote_writer_status_after_open_needs_no_round_trip(
    channel: Channel, store: FakeStore
) -> None:
    from ctrd.remote import RemoteWriter

    w = RemoteWriter(channel, "st", MD)
    await w.open(10, "")
    sends = 0
    real_send = w._send

    async def counting_send(*args: Any, **kw: Any) -> None:
        nonlocal sends
        sends += 1
        await real_send(*args, **kw)

    w._send = counting_send  # type: ignore[method-assign]
    st = await w.status()
    assert (st.ref, st.offset, st.total, sends) == ("st", 0, 10, 0)  # the opening STAT's answer
    await w.write(b"abc")
    st = await w.status()
    assert (st.offset, sends) == (3, 2)  # WRITE, then a real STAT
    await w.close()
    with pytest.raises(errdefs.FailedPrecondition):
        await w.status()
