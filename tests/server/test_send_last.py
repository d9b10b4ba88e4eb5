"""``CallStream.send_last``: a Read's last chunk leaves with its headers and the OK trailers in one write.

In-process daemons (:func:`tests.server.test_metrics.running`: real unix socket,
real metrics endpoint, the test's event loop) serve Content.Read to grpclib
clients. ``CallStream._send_direct(..., last=True)`` (the one-write path) is spied on, and the
server's transport writes are counted, to tell which path a reply took; the
client checks the bytes, the offsets and the status of every reply either way,
and the ``grpc_server_msg_sent_total`` series counts every message. A Write's COMMIT
ends the same way: its reply, containerd's deferred repeat of it and the trailers in
one write (grpclib's path when a send listener exists), the replies unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Cardinality, Status
from grpclib.events import SendMessage, listen
from grpclib.exceptions import GRPCError
from h2.events import DataReceived

from ctrd import namespaces
from ctrd.api.containerd.services.content import v1 as content_api
from ctrd.content.digest import EMPTY_SHA256
from ctrd.content.helpers import write_blob
from ctrd.services.content import READ_CHUNK
from ctrd.wire._h2 import LargeFrameChannel
from ctrd.wire._hpack import _MemoDecoder, _MemoEncoder
from ctrd.wire.server import CallStream

from .test_metrics import MISSING, ROOT, Running, delta, digest, grpc, handled, running

pytestmark = pytest.mark.fast_h2  # hand-framed replies are ctrd's HTTP/2 path

READ = "/containerd.services.content.v1.Content/Read"
KiB = 1024
DEFAULT_FRAME = 16 * KiB  # a plain grpclib client's (and h2's) SETTINGS_MAX_FRAME_SIZE


def blob(n: int, seed: int = 0) -> bytes:
    """*n* bytes that differ at every offset modulo 251 (a misplaced frame shows)."""
    return bytes((i * 7 + seed) % 251 for i in range(n))


@dataclasses.dataclass
class Spy:
    """What ``CallStream._send_direct`` answered for last messages, and the transport writes from then on."""

    results: list[bool] = dataclasses.field(default_factory=list)
    writes: Counter[int] = dataclasses.field(default_factory=Counter)  # by id(transport)
    starts: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (id(transport), writes so far)
    connections: list[Any] = dataclasses.field(default_factory=list)  # server h2 connections
    streams: list[CallStream] = dataclasses.field(default_factory=list)

    def writes_since_send_last(self) -> list[int]:
        """Per ``send_last``: the writes on its connection until the next one there (calls run one by one)."""
        out = []
        for i, (t, n) in enumerate(self.starts):
            following = [m for u, m in self.starts[i + 1 :] if u == t]
            out.append((following[0] if following else self.writes[t]) - n)
        return out


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[Spy]:
    """The spy; the test also fails when the server logged an error (a handler or h2 failure)."""
    spy = Spy()
    send_direct = CallStream._send_direct

    def spying_send_direct(self: CallStream, message: Any, last: bool, repeat: int = 1) -> bool:
        if not last or not self._method_name.endswith("/Read"):  # (put's Write ends with one too)
            return send_direct(self, message, last, repeat)
        transport = self._stream._transport
        spy.starts.append((id(transport), spy.writes[id(transport)]))
        spy.connections.append(self._stream._h2_connection)
        spy.streams.append(self)
        ok = send_direct(self, message, last, repeat)
        spy.results.append(ok)
        return ok

    monkeypatch.setattr(CallStream, "_send_direct", spying_send_direct)
    # every socket transport of the loop (the client's too, counted apart by identity)
    transport_class = asyncio.selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
    write = transport_class.write

    def counting_write(self: Any, data: Any) -> None:
        spy.writes[id(self)] += 1
        write(self, data)

    monkeypatch.setattr(transport_class, "write", counting_write)
    with caplog.at_level(logging.ERROR):
        yield spy
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def put(r: Running, data: bytes) -> str:
    dgst = digest(data)
    async with r.store("default") as st:
        await write_blob(st, f"ref-{dgst[-12:]}", data, total=len(data), expected=dgst, labels=ROOT)
    return dgst


async def read(
    ch: Channel, dgst: str, offset: int = 0, size: int = 0
) -> list[content_api.ReadContentResponse]:
    """One Read call: its replies; a non-OK status raises :class:`GRPCError`."""
    async with ch.request(
        READ,
        Cardinality.UNARY_STREAM,
        content_api.ReadContentRequest,
        content_api.ReadContentResponse,
        metadata={namespaces.GRPC_HEADER: "default"},
    ) as stream:
        await stream.send_message(
            content_api.ReadContentRequest(digest=dgst, offset=offset, size=size), end=True
        )
        replies = []
        while (reply := await stream.recv_message()) is not None:
            replies.append(reply)
        await stream.recv_trailing_metadata()
    return replies


def split(n: int, step: int = DEFAULT_FRAME) -> list[int]:
    """The DATA frame sizes of *n* bytes sent in frames of at most *step*."""
    return [min(step, n - pos) for pos in range(0, n, step)]


def chunks(replies: list[content_api.ReadContentResponse]) -> list[tuple[int, int]]:
    return [(r.offset, len(r.data)) for r in replies]


@contextlib.asynccontextmanager
async def channel(cls: type[Channel] = Channel, **kw: Any) -> AsyncIterator[Channel]:
    ch = cls(**kw)
    try:
        yield ch
    finally:
        ch.close()


def sent(d: dict[Any, float]) -> float:
    return d.get(grpc("grpc_server_msg_sent_total", "Read", "server_stream"), 0.0)


# -- the fast path: headers, message and trailers in one write ----------------------------------


async def test_one_chunk_read_is_one_write(spy: Spy) -> None:
    data = blob(3000)
    async with running() as r:
        dgst = await put(r, data)
        before = await r.scrape()
        async with channel(path=r.sock) as ch:
            replies = await read(ch, dgst)
            assert chunks(replies) == [(0, 3000)]
            assert replies[0].data == data
            # a range inside the blob: still one message, offsets relative to the request
            replies = await read(ch, dgst, offset=1000, size=500)
            assert chunks(replies) == [(0, 500)]
            assert replies[0].data == data[1000:1500]
            # to the end from an offset
            replies = await read(ch, dgst, offset=2999)
            assert chunks(replies) == [(0, 1)]
            assert replies[0].data == data[2999:]
        d = delta(before, await r.scrape())
    assert spy.results == [True, True, True]
    # headers, DATA and trailers in one transport write, nothing after them on that call
    assert spy.writes_since_send_last() == [1, 1, 1]
    # grpclib knows the call is over: no second (failing, swallowed) attempt at trailers on exit
    assert all(s._send_trailing_metadata_done and s._send_message_done for s in spy.streams)
    assert [s._messages_sent for s in spy.streams] == [1, 1, 1]
    assert sent(d) == 3.0
    assert d[handled("Read", "OK", "server_stream")] == 3.0
    assert d[grpc("grpc_server_msg_received_total", "Read", "server_stream")] == 3.0


async def test_multi_chunk_read(spy: Spy) -> None:
    size = 2 * READ_CHUNK + 12345
    data = blob(size, seed=3)
    async with running() as r:
        dgst = await put(r, data)
        before = await r.scrape()
        async with channel(cls=LargeFrameChannel, path=r.sock) as ch:
            replies = await read(ch, dgst)
            assert chunks(replies) == [(0, READ_CHUNK), (READ_CHUNK, READ_CHUNK), (2 * READ_CHUNK, 12345)]
            assert b"".join(m.data for m in replies) == data
            for m in replies:
                assert m.data == data[m.offset : m.offset + len(m.data)]
            # a range over two chunks, offsets relative to the request
            replies = await read(ch, dgst, offset=777, size=READ_CHUNK + 10)
            assert chunks(replies) == [(0, READ_CHUNK), (READ_CHUNK, 10)]
            assert b"".join(m.data for m in replies) == data[777 : 777 + READ_CHUNK + 10]
        d = delta(before, await r.scrape())
    # a 1 MiB message fills the transport's buffer (grpclib's write_ready clears); the next
    # chunk is only read once the transport is writable again (the call's reply room), so the
    # last one still leaves with the trailers in one write
    assert spy.results == [True, True]
    assert sent(d) == 5.0
    assert d[handled("Read", "OK", "server_stream")] == 2.0


async def test_empty_reads_send_no_message(spy: Spy) -> None:
    data = blob(100)
    async with running() as r:
        dgst = await put(r, data)
        empty = await put(r, b"")
        assert empty == EMPTY_SHA256
        before = await r.scrape()
        async with channel(path=r.sock) as ch:
            assert await read(ch, empty) == []
            assert await read(ch, dgst, offset=100) == []  # a zero-length range at the end
            assert await read(ch, dgst, offset=100, size=5) == []
        d = delta(before, await r.scrape())
    assert spy.results == []  # send_last is not reached without a chunk
    assert sent(d) == 0.0
    assert d[handled("Read", "OK", "server_stream")] == 3.0


@pytest.mark.parametrize(
    ("target", "offset", "status"),
    [
        (MISSING, 0, Status.NOT_FOUND),
        ("sha256:nothex", 0, Status.INVALID_ARGUMENT),
        ("", 0, Status.INVALID_ARGUMENT),
        ("present", 101, Status.OUT_OF_RANGE),
    ],
)
async def test_read_errors_keep_their_status(spy: Spy, target: str, offset: int, status: Status) -> None:
    async with running() as r:
        dgst = await put(r, blob(100))
        before = await r.scrape()
        async with channel(path=r.sock) as ch:
            with pytest.raises(GRPCError) as ei:
                await read(ch, dgst if target == "present" else target, offset=offset)
            assert ei.value.status is status, ei.value
            # the connection still serves
            assert (await read(ch, dgst))[0].data == blob(100)
        d = delta(before, await r.scrape())
    assert spy.results == [True]
    assert d[grpc("grpc_server_started_total", "Read", "server_stream")] == 2.0
    assert sent(d) == 1.0


# -- grpclib's path -------------------------------------------------------------------------------


async def test_send_message_listener_takes_grpclibs_path(spy: Spy) -> None:
    """A grpclib ``SendMessage`` listener sees the last message too; the client sees no difference."""
    data = blob(5000, seed=1)
    async with running() as r:
        dgst = await put(r, data)
        async with channel(path=r.sock) as ch:
            direct = await read(ch, dgst)
            direct_range = await read(ch, dgst, offset=10, size=20)
        assert spy.results == [True, True]

        seen: list[Any] = []

        async def on_send(event: SendMessage) -> None:
            seen.append(event.message)

        for srv in r.daemon._grpc._servers:
            listen(srv, SendMessage, on_send)
        before = await r.scrape()
        async with channel(path=r.sock) as ch:
            observed = await read(ch, dgst)
            observed_range = await read(ch, dgst, offset=10, size=20)
        d = delta(before, await r.scrape())
    assert spy.results == [True, True, False, False]
    assert len(seen) == 2  # the listener saw both last messages
    assert [bytes(m) for m in seen] == [
        bytes(content_api.ReadContentResponse(offset=0, data=data)),
        bytes(content_api.ReadContentResponse(offset=0, data=data[10:30])),
    ]
    assert observed == direct
    assert observed_range == direct_range
    assert observed[0].data == data
    assert observed_range[0].data == data[10:30]
    assert all(n >= 3 for n in spy.writes_since_send_last()[2:])  # headers, data and trailers apart
    assert sent(d) == 2.0
    assert d[handled("Read", "OK", "server_stream")] == 2.0


async def test_message_over_the_clients_frame_size(spy: Spy) -> None:
    """One 100 KiB message to a client with 16 KiB frames: split into frames, one write with the trailers."""
    size = 100 * KiB
    data = blob(size, seed=2)
    async with running() as r:
        dgst = await put(r, data)
        async with channel(path=r.sock) as ch:
            protocol = await ch.__connect__()
            h2c = protocol.connection._connection
            assert h2c.max_inbound_frame_size == DEFAULT_FRAME
            frames: list[int] = []
            receive = h2c.receive_data

            def receive_data(data: bytes) -> Any:
                events = receive(data)
                frames.extend(len(e.data) for e in events if isinstance(e, DataReceived))
                return events

            h2c.receive_data = receive_data  # type: ignore[method-assign,assignment]
            replies = await read(ch, dgst)
            assert chunks(replies) == [(0, size)]
            assert replies[0].data == data
            again = await read(ch, dgst, offset=1, size=size - 2)
            assert chunks(again) == [(0, size - 2)]
            assert again[0].data == data[1:-1]
    assert spy.results == [True, True]
    assert spy.writes_since_send_last() == [1, 1]
    # grpc prefix (5) + protobuf tag and length (1 + 3) + data, in frames of at most 16 KiB
    assert frames == split(5 + 4 + size) + split(5 + 4 + size - 2)


@pytest.mark.parametrize("size", [100 * KiB, 2 * READ_CHUNK + 70 * KiB])
async def test_small_client_window_sizes_the_replies(spy: Spy, size: int) -> None:
    """A client window (stream and connection) of 64 KiB - 1, smaller than a chunk: each reply
    carries what the window takes, so none waits for a window update while holding a chunk."""
    data = blob(size, seed=4)
    window = 65535
    config = Configuration(http2_stream_window_size=window, http2_connection_window_size=window)
    async with running() as r:
        dgst = await put(r, data)
        before = await r.scrape()
        async with channel(path=r.sock, config=config) as ch:
            replies = await read(ch, dgst)
            small = await read(ch, dgst, offset=5, size=30 * KiB)
        d = delta(before, await r.scrape())
    assert b"".join(m.data for m in replies) == data
    pos = 0
    for offset, length in chunks(replies):
        assert offset == pos
        assert 0 < length <= window - 64
        pos += length
    assert len(replies) >= -(-size // (window - 64))
    assert chunks(small) == [(0, 30 * KiB)]
    assert small[0].data == data[5 : 5 + 30 * KiB]
    # the last reply of each call leaves with the trailers in one write
    assert spy.results == [True, True]
    assert spy.writes_since_send_last() == [1, 1]
    assert sent(d) == len(replies) + 1
    assert d[handled("Read", "OK", "server_stream")] == 2.0


# -- the hpack memos on ctrd's connections --------------------------------------------------------


async def test_connections_remember_repeated_header_blocks(spy: Spy) -> None:
    """Server and SDK channel connections get memoizing coders; repeated calls reuse blocks."""
    data = blob(64)
    async with running() as r:
        dgst = await put(r, data)
        async with channel(cls=LargeFrameChannel, path=r.sock) as ch:
            for _ in range(4):
                assert (await read(ch, dgst))[0].data == data
            client = ch._protocol.connection._connection  # type: ignore[union-attr]
    assert type(client.encoder) is _MemoEncoder
    assert type(client.decoder) is _MemoDecoder
    assert client.encoder._memo  # the request headers (no grpc-timeout: the same list each time)
    assert client.decoder._memo  # the reply's headers
    server = spy.connections[-1]
    assert all(c is server for c in spy.connections)
    assert type(server.encoder) is _MemoEncoder
    assert type(server.decoder) is _MemoDecoder
    assert server.decoder._memo
    assert server.encoder._memo
    assert spy.results == [True] * 4


# -- Write: the commit's reply, containerd's repeat of it and the trailers in one write ------------

WRITE = "/containerd.services.content.v1.Content/Write"


async def write_stream(
    ch: Channel, ref: str, data: bytes, before_commit: Callable[[], None] = lambda: None
) -> list[content_api.WriteContentResponse]:
    """STAT (opening), WRITE, then COMMIT (at the offset reached) with END_STREAM, as the SDK does.

    Every reply, in order.
    """
    dgst = digest(data)
    async with ch.request(
        WRITE,
        Cardinality.STREAM_STREAM,
        content_api.WriteContentRequest,
        content_api.WriteContentResponse,
        metadata={namespaces.GRPC_HEADER: "default"},
    ) as stream:
        req = content_api.WriteContentRequest
        await stream.send_message(
            req(action=content_api.WriteAction.STAT, ref=ref, total=len(data), expected=dgst)
        )
        replies = [await stream.recv_message()]
        await stream.send_message(req(action=content_api.WriteAction.WRITE, ref=ref, offset=0, data=data))
        replies.append(await stream.recv_message())
        before_commit()
        await stream.send_message(
            req(
                action=content_api.WriteAction.COMMIT,
                ref=ref,
                offset=len(data),
                total=len(data),
                expected=dgst,
                labels=ROOT,
            ),
            end=True,
        )
        while (reply := await stream.recv_message()) is not None:
            replies.append(reply)
        await stream.recv_trailing_metadata()  # (grpclib raises for a non-OK status)
    return [r for r in replies if r is not None]


def write_sent(d: dict[Any, float]) -> float:
    return d.get(grpc("grpc_server_msg_sent_total", "Write", "bidi_stream"), 0.0)


async def test_commit_replies_and_trailers_in_one_write(spy: Spy) -> None:
    """After COMMIT: its reply, the same again (containerd's deferred send) and OK trailers, in one write."""
    data = blob(3000, seed=5)
    server_writes: list[int] = []
    async with running() as r:
        before = await r.scrape()
        async with channel(path=r.sock) as ch:
            protocol = await ch.__connect__()
            client = id(protocol.connection._transport)

            def count() -> None:
                server_writes.append(sum(n for t, n in spy.writes.items() if t != client))

            replies = await write_stream(ch, "one-write", data, before_commit=count)
            count()
        d = delta(before, await r.scrape())
    assert spy.starts == []  # no Read
    assert server_writes[1] - server_writes[0] == 1  # both replies and the trailers in one write
    dgst = digest(data)
    W = content_api.WriteAction
    assert [m.action for m in replies] == [W.STAT, W.WRITE, W.COMMIT, W.COMMIT]
    assert replies[2] == replies[3]
    assert replies[2].offset == len(data)
    assert replies[2].digest == dgst
    assert write_sent(d) == 4.0
    assert d[handled("Write", "OK", "bidi_stream")] == 1.0


async def test_commit_replies_through_grpclib_with_a_listener() -> None:
    """With a ``SendMessage`` listener the commit's replies take grpclib's path: the same replies."""
    data = blob(2000, seed=6)
    async with running() as r:
        async with channel(path=r.sock) as ch:
            direct = await write_stream(ch, "direct", data)
        seen: list[Any] = []

        async def on_send(event: SendMessage) -> None:
            seen.append(bytes(event.message))

        for srv in r.daemon._grpc._servers:
            listen(srv, SendMessage, on_send)
        before = await r.scrape()
        async with channel(path=r.sock) as ch:
            observed = await write_stream(ch, "observed", blob(2000, seed=7))
        d = delta(before, await r.scrape())
    assert [m.action for m in observed] == [m.action for m in direct]
    assert observed[2] == observed[3]
    assert observed[2].digest == digest(blob(2000, seed=7))
    assert len(seen) == 4
    assert seen[2] == seen[3]
    assert write_sent(d) == 4.0
