"""``CtrdConnection.send_reply`` against plain h2, byte for byte and state for state.

Pairs of servers past the handshake with a client (a :class:`CtrdConnection` whose
transport records ``write``/``writelines``, and a plain
:class:`~h2.connection.H2Connection`) hold streams whose requests are complete
(HEADERS with END_STREAM, or HEADERS then DATA with END_STREAM: the streams are
HALF_CLOSED_REMOTE) and streams whose requests are still open (OPEN; the client may end
them later with a DATA frame carrying END_STREAM). The Ctrd server answers with
``send_reply(sid, headers, body, trailers)``; the plain server with
``send_headers(sid, headers)``, ``send_data`` for every chunk of the body of at most
``max_outbound_frame_size`` bytes, and ``send_headers(sid, trailers, end_stream=True)``.

*headers* and *trailers* may each be ``None`` (the partial forms), and the plain server
then leaves out that ``send_headers``. So a response goes out in several calls: headers
(with or without a first message) while the request is still open or once it is
complete, more messages with ``headers=None``, and the trailers alone (``headers=None``,
an empty body) or with a last message once the request is complete; or headers alone
and the data later. h2's own calls on the same streams mix with them. A call with
nothing to send (no headers, an empty body, no trailers) returns ``True`` and writes
nothing (unless h2 had bytes queued: those go out as before any reply).

Compared after every call:

* the bytes: everything the Ctrd transport got, in order (with what h2 had queued
  before the reply written first), is the plain server's ``data_to_send()``;
* the state: ``conn_state``, every attribute of every stream (its state machine's
  state, ``stream_closed_by``, ``headers_sent``, ``trailers_sent`` ..., windows, frame
  sizes), the closed streams h2 remembers, both hpack tables (entries, size,
  pending size changes); without trailers the stream keeps its state (OPEN or
  HALF_CLOSED_REMOTE) with its response headers sent, with them it is closed by us;
* what a client fed either side sees: the same (normalised) events; for each call its
  own on the stream -- ResponseReceived (with the headers) if headers went, a
  DataReceived per DATA frame of the expected lengths, TrailersReceived (with the
  trailers) and StreamEnded if trailers went -- and the body as the data received;
* header blocks over a frame: HEADERS then CONTINUATION frames, as h2 splits them;
* the transport calls: one ``writelines`` (or one ``write`` through asyncio's joining
  ``writelines``) per call with something to send, none otherwise, the body's bytes
  passed as the body object itself or as views of it, and left as they were.

When ``send_reply`` declines (no transport, unknown stream, connection not open; headers
left out before the response's headers were sent, or given after; anything after the
trailers or after h2 ended the stream; trailers while the request is still open; a body
over a flow-control window, at the start or in the middle of a response) it must return
``False`` having written nothing and changed nothing (state, queued bytes, hpack
encoder, its memo), and h2's own path must still work on that connection.

Random sequences mix replies (full and partial, some to be declined) with h2's own calls,
pings, window updates, settings, new requests and requests ending.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable
from typing import Any

import hpack
import pytest
from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived
from h2.settings import SettingCodes
from h2.stream import StreamState
from hpack import HeaderTuple, NeverIndexedHeaderTuple

from ctrd.wire._h2 import MAX_FRAME_SIZE, CtrdConnection
from ctrd.wire._hpack import _MemoEncoder

from .test_h2_direct import (
    CONTINUATION,
    DATA,
    DEFAULT_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    REQUEST,
    RESPONSE,
    TRAILERS,
    AsyncioTransport,
    Side,
    Wire,
    conn_state,
    frames_of,
    payload,
    server_side,
)

KiB = 1 << 10
MiB = 1 << 20
WINDOW = 8 * MiB
LIMIT = 16384  # HTTP/2's smallest SETTINGS_MAX_FRAME_SIZE; header lists are sized around it

# the requests of every pair: (stream, kind) -- "ended": HEADERS with END_STREAM;
# "data": HEADERS, then DATA with END_STREAM; "open": HEADERS only (the request goes on)
REQUESTS: list[tuple[int, str]] = [
    (1, "ended"),
    (3, "data"),
    (5, "ended"),
    (7, "data"),
    (9, "ended"),
    (11, "data"),
    (13, "open"),
    (15, "open"),
]

Headers = Any  # header lists: str or bytes names and values


# -- the pairs -----------------------------------------------------------------------------------


def to_server(side: Side) -> None:
    """The server reads what the client sent and acknowledges its data as grpclib does."""
    client, server = side.client, side.server
    events = server.receive_data(client.data_to_send())
    for event in events:
        if isinstance(event, DataReceived) and event.flow_controlled_length:
            server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    side.events.append(("server", tuple(type(e).__name__ for e in events)))


def request(side: Side, sid: int, kind: str) -> None:
    """The client sends a request on *sid*; the server reads it."""
    client = side.client
    client.send_headers(sid, REQUEST, end_stream=kind == "ended")
    if kind == "data":
        client.send_data(sid, payload(100 + sid, sid), end_stream=True)
    to_server(side)


def end_request(side: Side, sid: int, size: int = 0) -> None:
    """The client ends its request on *sid* (a last DATA frame of *size* bytes with END_STREAM)."""
    side.client.send_data(sid, payload(size, sid + 1), end_stream=True)
    to_server(side)


def reply_side(
    ctrd: bool,
    *,
    frame_size: int | None,
    window: int,
    conn_window: int,
    header_table_size: int | None,
    transport: bool,
    asyncio_style: bool,
    requests: Iterable[tuple[int, str]],
) -> Side:
    """A server past the handshake with its client, the *requests* read (see :func:`reply_pair`)."""
    client = H2Connection(config=H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    if conn_window > DEFAULT_WINDOW:
        client.increment_flow_control_window(conn_window - DEFAULT_WINDOW)
    settings: dict[SettingCodes | int, int] = {SettingCodes.INITIAL_WINDOW_SIZE: window}
    if frame_size is not None:
        settings[SettingCodes.MAX_FRAME_SIZE] = frame_size
    if header_table_size is not None:
        settings[SettingCodes.HEADER_TABLE_SIZE] = header_table_size
    client.update_settings(settings)
    side = server_side(client, ctrd, transport, asyncio_style)
    server = side.server
    for sid, kind in requests:
        request(side, sid, kind)
    side.flush()
    side.deliver()
    assert server.max_outbound_frame_size == (frame_size or DEFAULT_FRAME)
    return side


def reply_pair(
    *,
    frame_size: int | None = MAX_FRAME_SIZE,
    window: int = WINDOW,
    conn_window: int = WINDOW,
    header_table_size: int | None = None,
    transport: bool = True,
    asyncio_style: bool = False,
    requests: Iterable[tuple[int, str]] = REQUESTS,
) -> tuple[Side, Side]:
    """A Ctrd side and a plain side, built alike.

    The client advertises *frame_size* (``None``: HTTP/2's default 16 KiB), stream windows
    of *window*, a connection window of *conn_window* and, if given, *header_table_size*.
    """
    requests = list(requests)
    kw: dict[str, Any] = dict(
        frame_size=frame_size,
        window=window,
        conn_window=conn_window,
        header_table_size=header_table_size,
        requests=requests,
    )
    ctrd = reply_side(True, transport=transport, asyncio_style=asyncio_style, **kw)
    plain = reply_side(False, transport=False, asyncio_style=False, **kw)
    check(ctrd, plain, "handshake")
    for sid, kind in requests:
        state = ctrd.server.streams[sid].state_machine.state
        assert state is (StreamState.OPEN if kind == "open" else StreamState.HALF_CLOSED_REMOTE)
    return ctrd, plain


# -- what is compared ----------------------------------------------------------------------------


def stream_vars(conn: H2Connection) -> dict[int, Any]:
    """Every attribute of every stream h2 keeps (the state machine's and window manager's too)."""
    out: dict[int, Any] = {}
    for sid, stream in conn.streams.items():
        attrs: dict[str, Any] = {}
        for name, value in vars(stream).items():
            if name == "config":
                continue
            if name in ("state_machine", "_inbound_window_manager"):
                value = tuple(sorted(vars(value).items()))
            attrs[name] = value
        out[sid] = tuple(sorted(attrs.items()))
    return out


def machine(conn: H2Connection, sid: int) -> tuple[Any, ...]:
    m = conn.streams[sid].state_machine
    return m.state, m.stream_closed_by, m.headers_sent, m.trailers_sent


def encoder_state(conn: H2Connection) -> tuple[Any, ...]:
    encoder = conn.encoder
    table = encoder.header_table
    return (
        tuple(table.dynamic_entries),
        table._current_size,
        table.maxsize,
        table.resized,
        tuple(encoder.table_size_changes),
    )


def decoder_state(conn: H2Connection) -> tuple[Any, ...]:
    table = conn.decoder.header_table
    return tuple(table.dynamic_entries), table._current_size, table.maxsize, table.resized


def check(ctrd: Side, plain: Side, where: str) -> None:
    """Both sides alike: bytes written then queued, connection and streams, hpack tables, the client."""
    c, p = ctrd.server, plain.server
    assert bytes(ctrd.out + c._data_to_send) == bytes(plain.out + p._data_to_send), where
    assert conn_state(c) == conn_state(p), where
    assert stream_vars(c) == stream_vars(p), where
    for sid in p.streams:
        assert machine(c, sid) == machine(p, sid), where
    assert dict(c._closed_streams) == dict(p._closed_streams), where
    assert encoder_state(c) == encoder_state(p), where
    assert decoder_state(c) == decoder_state(p), where
    assert ctrd.events == plain.events, where
    assert ctrd.received == plain.received, where
    assert conn_state(ctrd.client) == conn_state(plain.client), where


def snapshot(side: Side) -> tuple[Any, ...]:
    """Everything ``send_reply`` must leave alone when it declines (Ctrd side)."""
    server = side.server
    assert isinstance(server, CtrdConnection)
    encoder = server.encoder
    assert isinstance(encoder, _MemoEncoder)
    return (
        bytes(side.out),
        bytes(server._data_to_send),
        len(side.transport.calls) if side.transport is not None else None,
        conn_state(server),
        stream_vars(server),
        dict(server._closed_streams),
        encoder_state(server),
        encoder.header_table.version,  # type: ignore[attr-defined]
        dict(encoder._memo),
    )


# -- replies -------------------------------------------------------------------------------------


def reply_plain(server: H2Connection, sid: int, headers: Headers, body: Any, trailers: Headers) -> None:
    """What ``send_reply`` stands for, through h2 (*headers*, *trailers*: ``None`` for none)."""
    if headers is not None:
        server.send_headers(sid, headers)
    step = server.max_outbound_frame_size
    for pos in range(0, len(body), step):
        server.send_data(sid, body[pos : pos + step])
    if trailers is not None:
        server.send_headers(sid, trailers, end_stream=True)


def plain_reply_on(
    side: Side, sid: int, body: Any, headers: Headers = RESPONSE, trailers: Headers = TRAILERS
) -> None:
    reply_plain(side.server, sid, headers, body, trailers)


def layout(stream: bytes) -> list[tuple[int, int, int, int]]:
    """The frames of a byte stream: type, flags, length, stream."""
    return [(f.type, f.flags, f.length, f.stream_id) for f in frames_of(stream)]


def chunk_sizes(size: int, step: int) -> list[int]:
    return [min(step, size - pos) for pos in range(0, size, step)]


def client_events(side: Side) -> list[tuple[str, dict[str, Any]]]:
    """The client's events of the last delivery (``Side.deliver`` records the client's, then the server's)."""
    return [(name, dict(attrs)) for name, attrs in side.events[-2]]


def as_bytes(headers: Headers) -> tuple[tuple[bytes, bytes], ...]:
    """A header list as the client (``header_encoding=None``) reports it."""
    return tuple(
        (n.encode() if isinstance(n, str) else bytes(n), v.encode() if isinstance(v, str) else bytes(v))
        for n, v in headers
    )


def reply_frames(headers: Headers, sizes: list[int], trailers: Headers) -> list[tuple[int, int, int]]:
    """The frames of a reply (type, flags, length; a header block's length left out as 0)."""
    out = [(HEADERS, END_HEADERS, 0)] if headers is not None else []
    out += [(DATA, 0, n) for n in sizes]
    if trailers is not None:
        out.append((HEADERS, END_HEADERS | END_STREAM, 0))
    return out


def reply_events(headers: Headers, sizes: list[int], trailers: Headers) -> list[str]:
    """What a client sees of a reply on its stream."""
    names = ["ResponseReceived"] if headers is not None else []
    names += ["DataReceived"] * len(sizes)
    if trailers is not None:
        names += ["TrailersReceived", "StreamEnded"]
    return names


def reply(
    ctrd: Side,
    plain: Side,
    sid: int,
    headers: Headers = RESPONSE,
    body: Any = b"",
    trailers: Headers = TRAILERS,
    where: str = "",
    deliver: bool = True,
) -> None:
    """``send_reply`` on the Ctrd side, h2's calls on the plain side; everything compared.

    *headers* and *trailers* may be ``None`` (the partial forms): then h2's side leaves out
    the ``send_headers`` call for them.
    """
    server = ctrd.server
    assert isinstance(server, CtrdConnection)
    transport = ctrd.transport
    assert transport is not None
    form = "".join(c for c, x in (("H", headers), ("T", trailers)) if x is not None)
    where = where or f"reply on {sid} ({form or '-'}, {len(body)} bytes)"
    original = bytes(body)
    calls, start, fed = len(transport.calls), len(ctrd.out), ctrd.fed
    queued = bytes(server._data_to_send)
    step = server.max_outbound_frame_size
    assert step == plain.server.max_outbound_frame_size
    before = machine(server, sid)
    assert before == machine(plain.server, sid), where
    received = ctrd.received.get(sid, b"")
    sizes = chunk_sizes(len(body), step)
    nothing = headers is None and not sizes and trailers is None

    assert server.send_reply(sid, headers, body, trailers) is True, where
    reply_plain(plain.server, sid, headers, body, trailers)
    plain.flush()

    # what the Ctrd side wrote before is a prefix of what the plain side wrote or queued (check)
    written, expected = bytes(ctrd.out[start:]), bytes(plain.out[start:])
    assert layout(written) == layout(expected), f"{where}: frames (type, flags, length)"
    assert written == expected, f"{where}: bytes"
    assert ctrd.out == plain.out, where
    assert server._data_to_send == b"", where
    assert bytes(body) == original, f"{where}: the body changed"
    assert expected[: len(queued)] == queued, where

    # the calls: one per reply, none when there is nothing to send (not even h2's queued bytes)
    new = transport.calls[calls:]
    if nothing and not queued:
        assert new == [], f"{where}: nothing to send, yet {[name for name, _ in new]}"
        assert written == b"", f"{where}: nothing to send, yet {[name for name, _ in new]}"
    else:
        assert len(new) == 1, f"{where}: {[name for name, _ in new]}"
        name, args = new[0]
        if isinstance(transport, AsyncioTransport):
            assert name == "write"
            assert len(args) == 1
            assert bytes(args[0]) == expected
        else:
            assert name == "writelines"
            parts = list(args)
            assert b"".join(bytes(p) for p in parts) == expected
            if queued:
                assert bytes(parts[0]) == queued, f"{where}: h2's queued bytes first"
            # the body goes as itself (one frame) or as views of itself (several): never copied
            body_parts = [p for p in parts if p is body or (isinstance(p, memoryview) and p.obj is body)]
            assert [len(p) for p in body_parts] == sizes, where
            assert b"".join(bytes(p) for p in body_parts) == original
            if len(sizes) == 1:
                assert body_parts[0] is body
            # queued bytes, (frame headers + body piece) per DATA frame or the lone header frames,
            # the trailers
            lone = headers is not None and not sizes
            assert len(parts) == bool(queued) + 2 * len(sizes) + lone + (trailers is not None), where

    # the frames: HEADERS, DATA at most max_outbound_frame_size each, trailers with END_STREAM;
    # a header block over a frame continues in CONTINUATION frames of at most that size
    frames = []
    for f in frames_of(expected[len(queued) :]):
        if f.type != CONTINUATION:
            frames.append(f)
            continue
        head = frames[-1]
        assert head.type == HEADERS, where
        assert f.in_header_block, where
        assert f.stream_id == sid, where
        assert head.length == step, where
        assert not head.flags & END_HEADERS, where
        assert f.length <= step, where
        assert not f.flags & ~END_HEADERS, where
        frames[-1] = Wire(head.offset, head.length, HEADERS, head.flags | f.flags, sid, False)
    assert all(f.stream_id == sid for f in frames), where
    got = [(f.type, f.flags, 0 if f.type == HEADERS else f.length) for f in frames]
    assert got == reply_frames(headers, sizes, trailers), where
    if frames:
        assert frames_of(expected[len(queued) :])[-1].end == len(expected) - len(queued), where

    # the stream: trailers close it (closed by us); otherwise its state stays, its headers sent
    state = machine(server, sid)
    if trailers is not None:
        assert state == (StreamState.CLOSED, machine(plain.server, sid)[1], True, True), where
    else:
        assert state[:3] == (before[0], before[1], True), where
        assert not state[3], where
        assert state[0] in (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE), where
    check(ctrd, plain, where)
    if not deliver:
        return

    # the client: its events on the stream end with this reply's (after any frames of the stream
    # it had not read yet: an earlier undelivered reply's, or h2's queued ones)
    pending = [f for f in frames_of(bytes(ctrd.out[fed:start]) + queued) if f.stream_id == sid]
    for side in (ctrd, plain):
        side.deliver()
    check(ctrd, plain, f"{where}: delivered")
    kinds = ("ResponseReceived", "DataReceived", "TrailersReceived", "StreamEnded")
    events = [(n, e) for n, e in client_events(ctrd) if e.get("stream_id") == sid and n in kinds]
    want = reply_events(headers, sizes, trailers)
    if not pending:
        assert [n for n, _ in events] == want, where
    mine = events[len(events) - len(want) :] if want else []
    assert [n for n, _ in mine] == want, where
    assert [e["flow_controlled_length"] for n, e in mine if n == "DataReceived"] == sizes, where
    if headers is not None:
        assert mine[0][1]["headers"] == as_bytes(headers), where
    if trailers is not None:
        assert mine[-2][1]["headers"] == as_bytes(trailers), where
    now = ctrd.received.get(sid, b"")
    assert now == plain.received.get(sid, b""), where
    assert now.endswith(original), where
    assert now.startswith(received), where
    if not pending:
        assert now == received + original, where


def declined(ctrd: Side, plain: Side, sid: int, headers: Headers, body: Any, trailers: Headers) -> None:
    """``send_reply`` returns False and changes nothing; the pair is still alike."""
    server = ctrd.server
    assert isinstance(server, CtrdConnection)
    before = snapshot(ctrd)
    original = bytes(body)
    assert server.send_reply(sid, headers, body, trailers) is False
    assert snapshot(ctrd) == before
    assert bytes(body) == original
    check(ctrd, plain, f"declined on {sid}")


# -- one reply, body sizes and frame sizes --------------------------------------------------------

FRAME_SIZES = {"default-16k": None, "large": MAX_FRAME_SIZE}


def body_size(name: str, frame: int) -> int:
    return {
        "0": 0,
        "5": 5,
        "1000": 1000,
        "frame": frame,
        "frame+1": frame + 1,
        "100k": 100 * KiB,
        "3frames+7": 3 * frame + 7,
    }[name]


@pytest.mark.parametrize("style", ["writelines", "asyncio"])
@pytest.mark.parametrize("size", ["0", "5", "1000", "frame", "frame+1", "100k", "3frames+7"])
@pytest.mark.parametrize("frames", list(FRAME_SIZES))
def test_reply_matches_h2(frames: str, size: str, style: str) -> None:
    """One reply on a complete request (HEADERS with END_STREAM, and HEADERS + DATA)."""
    ctrd, plain = reply_pair(
        frame_size=FRAME_SIZES[frames],
        window=64 * MiB,  # room for four replies of the largest body, acknowledged or not
        conn_window=64 * MiB,
        asyncio_style=style == "asyncio",
    )
    frame = ctrd.server.max_outbound_frame_size
    n = body_size(size, frame)
    for i, sid in enumerate((1, 3)):  # the request ended with its HEADERS, then with a DATA frame
        body = payload(n, sid)
        assert type(body) is bytes
        reply(ctrd, plain, sid, body=body, where=f"{frames}/{size}/{style} on {sid}")
        assert ctrd.server.streams[sid].state_machine.stream_closed_by is not None
        assert len(ctrd.received[sid] if n else b"") == n, i
    # the rest of the connection is unaffected: h2 replies on the other streams as before
    for sid in (5, 7):
        body = payload(n, sid)
        both(ctrd, plain, functools.partial(plain_reply_on, sid=sid, body=body))
        both(ctrd, plain, flush)
    assert ctrd.received == plain.received


def test_reply_at_the_window() -> None:
    """A body exactly the size of the smaller window (the stream's, then the connection's)."""
    ctrd, plain = reply_pair(frame_size=None, window=1000, conn_window=WINDOW)
    reply(ctrd, plain, 1, body=payload(1000, 1))
    assert ctrd.server.streams[1].outbound_flow_control_window == 0
    ctrd, plain = reply_pair(frame_size=None, window=WINDOW, conn_window=DEFAULT_WINDOW)
    reply(ctrd, plain, 1, body=payload(DEFAULT_WINDOW, 1), deliver=False)
    assert ctrd.server.outbound_flow_control_window == 0
    declined(ctrd, plain, 3, RESPONSE, b"x", TRAILERS)  # the connection's window is spent
    reply(ctrd, plain, 5, body=b"")  # ... but an empty body still goes
    both(ctrd, plain, flush)  # the client acknowledges: the window is back
    reply(ctrd, plain, 3, body=payload(DEFAULT_WINDOW // 2, 3))


# -- what h2 queued before the reply --------------------------------------------------------------


def queue_before(kind: str) -> Callable[[Side], None]:
    def run(side: Side) -> None:
        server = side.server
        if kind == "ping":
            server.ping(b"\x01\x02\x03\x04\x05\x06\x07\x08")
        elif kind == "conn-window":
            server.increment_flow_control_window(1000)
        elif kind == "stream-window":
            server.increment_flow_control_window(500, stream_id=1)
        elif kind == "settings":
            server.update_settings({SettingCodes.HEADER_TABLE_SIZE: 2048})
        elif kind == "other-stream":  # h2 sends on a stream whose request is still open
            server.send_headers(13, RESPONSE)
            server.send_data(13, payload(300, 13))
        elif kind == "all":
            for k in ("ping", "conn-window", "stream-window", "settings", "other-stream"):
                queue_before(k)(side)
        else:
            raise AssertionError(kind)

    return run


@pytest.mark.parametrize("style", ["writelines", "asyncio"])
@pytest.mark.parametrize("size", [0, 1000, 3 * DEFAULT_FRAME + 7])
@pytest.mark.parametrize("kind", ["ping", "conn-window", "stream-window", "settings", "other-stream", "all"])
def test_reply_after_queued_frames(kind: str, size: int, style: str) -> None:
    """What h2 had queued (and not yet written) goes first, in the same write."""
    ctrd, plain = reply_pair(frame_size=None, asyncio_style=style == "asyncio")
    both(ctrd, plain, queue_before(kind))
    assert ctrd.server._data_to_send
    reply(ctrd, plain, 1, body=payload(size, 1), where=f"after {kind}")
    both(ctrd, plain, queue_before("ping"))
    reply(ctrd, plain, 3, body=payload(size, 3), where=f"after {kind}, then a ping")


def test_reply_after_large_direct_send() -> None:
    """After a large DATA frame went through ``_prepare_for_sending``'s own direct write."""
    ctrd, plain = reply_pair()
    both(ctrd, plain, lambda s: s.server.send_headers(13, RESPONSE))
    both(ctrd, plain, lambda s: s.server.send_data(13, payload(200 * KiB, 13)))
    assert ctrd.transport is not None
    assert ctrd.transport.calls[-1][0] == "writelines"
    reply(ctrd, plain, 1, body=payload(300 * KiB, 1))
    both(ctrd, plain, lambda s: s.server.send_data(13, payload(70 * KiB, 14), end_stream=True))
    both(ctrd, plain, flush)


def test_reply_after_informational_response() -> None:
    """A 1xx response sent through h2 first does not count as the response's headers."""
    ctrd, plain = reply_pair(frame_size=None)
    both(ctrd, plain, lambda s: s.server.send_headers(1, [(":status", "100")]))
    assert not ctrd.server.streams[1].state_machine.headers_sent
    reply(ctrd, plain, 1, body=payload(20000, 1))


# -- several replies: the hpack encoder's memo and table -------------------------------------------


@pytest.fixture
def misses(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The header lists Ctrd's memoizing encoder coded with hpack's own ``encode`` (memo misses)."""
    calls: list[Any] = []
    encode = hpack.Encoder.encode

    def counting(self: hpack.Encoder, headers: Any, huffman: bool = True) -> bytes:
        if isinstance(self, _MemoEncoder):
            calls.append(headers)
        return encode(self, headers, huffman)

    monkeypatch.setattr(hpack.Encoder, "encode", counting)
    return calls


GRPC_PROTO = [(":status", "200"), ("content-type", "application/grpc+proto")]
MESSAGE_TRAILERS = [("grpc-status", "0"), ("grpc-message", "x")]


@pytest.mark.parametrize("style", ["writelines", "asyncio"])
def test_replies_in_a_row_match_h2(misses: list[Any], style: str) -> None:
    """Replies on streams one after another: memo hits, and the dynamic table changing between them."""
    requests = [(sid, "ended" if sid % 4 == 1 else "data") for sid in range(1, 40, 2)]
    ctrd, plain = reply_pair(frame_size=None, asyncio_style=style == "asyncio", requests=requests)
    table = ctrd.server.encoder.header_table
    lengths = []

    def step(sid: int, headers: Headers = RESPONSE, trailers: Headers = TRAILERS, size: int = 100) -> None:
        reply(ctrd, plain, sid, headers, payload(size, sid), trailers)
        lengths.append(len(table.dynamic_entries))

    step(1)  # content-type and grpc-status go into the dynamic table
    step(3)
    step(5)  # the same lists, the same table: both blocks from the memo
    assert len(misses) == 4
    assert lengths[:3] == [2, 2, 2]
    step(7, GRPC_PROTO)  # another content-type value: a new entry
    assert lengths[-1] == 3
    step(9, GRPC_PROTO)
    step(11, RESPONSE, MESSAGE_TRAILERS)  # grpc-message is not in hpack's static table
    assert lengths[-1] == 4
    assert (b"grpc-message", b"x") in table.dynamic_entries
    step(13, RESPONSE, MESSAGE_TRAILERS)
    step(15, RESPONSE, [("grpc-status", "0"), ("grpc-message", "y")])  # a new value for that name
    assert lengths[-1] == 5
    step(17)
    step(19)
    step(21, size=0)
    step(23, size=3 * DEFAULT_FRAME + 7)
    blocks = 2 * len(lengths)
    hits = blocks - len(misses)
    assert hits >= 6, (blocks, len(misses))
    # ... and h2 goes on alike with the tables both sides built
    for sid in (25, 27):
        both(ctrd, plain, functools.partial(plain_reply_on, sid=sid, body=b"abc", trailers=MESSAGE_TRAILERS))
    both(ctrd, plain, flush)
    reply(ctrd, plain, 29, RESPONSE, b"abc", MESSAGE_TRAILERS)


def test_replies_with_a_small_header_table() -> None:
    """A client advertising a small header table: size updates at the start of blocks, evictions."""
    requests = [(sid, "ended") for sid in range(1, 20, 2)]
    ctrd, plain = reply_pair(frame_size=None, header_table_size=100, requests=requests)
    assert ctrd.server.encoder.table_size_changes or ctrd.server.encoder.header_table.resized
    reply(ctrd, plain, 1)
    reply(ctrd, plain, 3, GRPC_PROTO, b"x" * 10, MESSAGE_TRAILERS)
    reply(ctrd, plain, 5, body=b"y")
    # the client shrinks the table again (to nothing), then lets it grow
    for size, sid in ((0, 7), (4096, 11)):
        for side in (ctrd, plain):
            side.client.update_settings({SettingCodes.HEADER_TABLE_SIZE: size})
            side.server.receive_data(side.client.data_to_send())
        check(ctrd, plain, f"table size {size}")
        reply(ctrd, plain, sid, GRPC_PROTO, b"z", MESSAGE_TRAILERS)
        reply(ctrd, plain, sid + 2)
    assert ctrd.server.encoder.header_table.maxsize == 4096


def header_list_size(headers: Headers) -> int:
    """``sum(len(name) + len(value) + 10)``: a literal header block's size without huffman."""
    return sum(len(n) + len(v) + 10 for n, v in headers)


def filled(headers: Headers, name: str, chars: str, total: int = LIMIT) -> Headers:
    """*headers* and a field *name* whose value (*chars* repeated) makes the list's size *total*."""
    n = total - header_list_size(headers) - len(name) - 10
    value = (chars * (n // len(chars) + 1))[:n]
    filled = [*headers, (name, value)]
    assert header_list_size(filled) == total
    return filled


HEADER_VALUES: dict[str, tuple[Headers, Headers]] = {
    "bytes": (
        [(b":status", b"200"), (b"content-type", b"application/grpc")],
        [(b"grpc-status", b"0")],
    ),
    "bytes-values": (
        [(":status", b"200"), ("content-type", b"application/grpc")],
        [("grpc-status", b"0"), ("grpc-message", b"x")],
    ),
    "bytes-tuple": (
        ((b":status", b"200"), (b"content-type", b"application/grpc+json")),
        ((b"grpc-status", b"3"), (b"grpc-message", b"bad%20request")),
    ),
    # hpack's header tuples: a never-indexed field stays out of the dynamic table
    "header-tuples": (
        [
            HeaderTuple(":status", "200"),
            ("content-type", "application/grpc"),
            NeverIndexedHeaderTuple("x-k", "s"),
        ],
        [HeaderTuple("grpc-status", "0"), NeverIndexedHeaderTuple("grpc-message", "secret")],
    ),
    # values whose huffman code is longer than the value (fewer than 2 KiB each)
    "huffman-longer": (
        [(":status", "200"), ("content-type", "application/grpc"), ("x-raw", "\\<>{}^`|~" * 40)],
        [("grpc-status", "2"), ("grpc-message", "~" * 1000)],
    ),
    "huffman-shorter": (
        [(":status", "200"), ("content-type", "application/grpc"), ("x-text", "eeeeaaaattttoooo" * 100)],
        [("grpc-status", "0"), ("grpc-message", "aeiou0123" * 200)],
    ),
    "at-limit": (  # sum(len(name) + len(value) + 10) == 16384 (huffman shortens the values)
        filled([(":status", "200"), ("content-type", "application/grpc")], "x-big", "a"),
        filled([("grpc-status", "0")], "x-big", "b"),
    ),
    "at-limit-8bit-codes": (  # ... of characters whose huffman codes are 8 bits: the block is 16 KiB
        filled([(":status", "200")], "x-big", "&"),
        filled([("grpc-status", "0")], "x-big", "*,;XZ"),
    ),
}


@pytest.mark.parametrize("frames", list(FRAME_SIZES))
@pytest.mark.parametrize("name", list(HEADER_VALUES))
def test_reply_header_values_match_h2(name: str, frames: str) -> None:
    """str and bytes names and values, huffman-longer and -shorter values, lists at the size limit."""
    headers, trailers = HEADER_VALUES[name]
    assert header_list_size(headers) <= LIMIT
    assert header_list_size(trailers) <= LIMIT
    ctrd, plain = reply_pair(frame_size=FRAME_SIZES[frames])
    reply(ctrd, plain, 1, headers, payload(1000, 1), trailers)
    reply(ctrd, plain, 3, headers, payload(40000, 3), trailers)  # again: from the memo, if the table held
    reply(ctrd, plain, 5, RESPONSE, b"", TRAILERS)


@pytest.mark.parametrize("body_type", ["bytes", "bytearray"])
def test_reply_body_object(body_type: str) -> None:
    """The body object reaches writelines as itself and is not changed."""
    ctrd, plain = reply_pair(frame_size=None)
    for sid, n in ((1, 1000), (3, 3 * DEFAULT_FRAME + 7)):
        data = payload(n, sid)
        body = data if body_type == "bytes" else bytearray(data)
        reply(ctrd, plain, sid, body=body)
        assert body == data


# -- huffman codes longer than the values: a header block over the client's frame size --------------

# A header list whose size (sum of len(name) + len(value) + 10) is within 16384 but whose
# block is still larger than 16 KiB: hpack huffman-codes every literal, and a
# character's code can be up to 30 bits ('\\' is 19 bits, '<' 15, non-ASCII bytes 20 to 26,
# and a non-ASCII character is several bytes). h2 splits such a block into HEADERS +
# CONTINUATION at the peer's SETTINGS_MAX_FRAME_SIZE.
EXPANDING: dict[str, Headers] = {
    "backslash": [(":status", "200"), ("content-type", "application/grpc"), ("x-v", "\\" * 8000)],
    "less-than": [(":status", "200"), ("content-type", "application/grpc"), ("x-v", "<" * 12000)],
    "non-ascii": [(":status", "200"), ("content-type", "application/grpc"), ("x-v", "\u00e9" * 6000)],
}


@pytest.mark.parametrize("frames", list(FRAME_SIZES))
@pytest.mark.parametrize("name", list(EXPANDING))
def test_reply_header_block_over_frame_size(name: str, frames: str) -> None:
    """A header list within 16384 by its size but coded into a block over 16 KiB.

    With a client advertising large frames, h2 sends the block in one HEADERS frame, as
    send_reply does. With a client at the default 16 KiB, h2 sends HEADERS (16384 bytes,
    no END_HEADERS) + CONTINUATION; so must send_reply.
    """
    headers = EXPANDING[name]
    assert header_list_size(headers) <= LIMIT
    assert len(hpack.Encoder().encode(headers)) > DEFAULT_FRAME  # but the block is over 16 KiB
    ctrd, plain = reply_pair(frame_size=FRAME_SIZES[frames])
    reply(ctrd, plain, 1, headers, payload(1000, 1), TRAILERS)
    reply(ctrd, plain, 3, RESPONSE, payload(10, 3), [("grpc-status", "0"), *headers[2:]])


# Header lists over a frame: h2 continues the block in CONTINUATION frames, and so does send_reply.
LARGE: dict[str, tuple[Headers, Headers]] = {
    "headers-over-16k": (filled(RESPONSE, "x-big", "a", LIMIT + 1), TRAILERS),
    "trailers-over-16k": (RESPONSE, filled(TRAILERS, "grpc-message", "b", LIMIT + 1)),
    "many-headers": ([*RESPONSE, *[(f"x-{i:04}", "v") for i in range(LIMIT // 17)]], TRAILERS),
    "three-frames": (
        [*RESPONSE, ("x-a", "\\" * 9000), ("x-b", "q" * 30000)],
        [("grpc-status", "0"), ("x-c", "<" * 25000)],
    ),
}


@pytest.mark.parametrize("frames", list(FRAME_SIZES))
@pytest.mark.parametrize("name", list(LARGE))
def test_reply_large_header_lists_match_h2(name: str, frames: str) -> None:
    """Header and trailer blocks over 16 KiB: HEADERS + CONTINUATION frames as h2 sends them."""
    headers, trailers = LARGE[name]
    assert max(header_list_size(headers), header_list_size(trailers)) > LIMIT
    ctrd, plain = reply_pair(frame_size=FRAME_SIZES[frames])
    reply(ctrd, plain, 1, headers, payload(1000, 1), trailers)
    reply(ctrd, plain, 3, headers, payload(3 * DEFAULT_FRAME + 1, 3), trailers)
    reply(ctrd, plain, 5)


# -- the partial forms: headers, bodies and trailers in separate calls -------------------------------

STYLES = ["writelines", "asyncio"]


def _partial_pair(frames: str, style: str) -> tuple[Side, Side, int]:
    """A reply pair with windows that never limit, and the server's outbound frame size."""
    ctrd, plain = reply_pair(
        frame_size=FRAME_SIZES[frames],
        window=64 * MiB,
        conn_window=64 * MiB,
        asyncio_style=style == "asyncio",
    )
    return ctrd, plain, ctrd.server.max_outbound_frame_size


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("frames", list(FRAME_SIZES))
def test_partial_replies_on_complete_requests(frames: str, style: str) -> None:
    """Requests complete (HALF_CLOSED_REMOTE): a response in several calls, several messages each.

    Headers + body, then bodies alone, then the trailers alone or with a last body; headers
    alone then the data later; two streams' replies interleaved.
    """
    ctrd, plain, frame = _partial_pair(frames, style)
    # 1: headers + a message, more messages, nothing, trailers alone
    reply(ctrd, plain, 1, RESPONSE, payload(1000, 1), None)
    assert machine(ctrd.server, 1)[0] is StreamState.HALF_CLOSED_REMOTE
    reply(ctrd, plain, 1, None, payload(frame + 1, 2), None)
    reply(ctrd, plain, 1, None, b"", None)  # nothing to send
    reply(ctrd, plain, 1, None, payload(5, 3), None)
    reply(ctrd, plain, 1, None, b"", TRAILERS)
    assert ctrd.received[1] == payload(1000, 1) + payload(frame + 1, 2) + payload(5, 3)
    # 3: headers alone, then the data, then a last message with the trailers
    reply(ctrd, plain, 3, RESPONSE, b"", None)
    reply(ctrd, plain, 3, None, payload(3 * frame + 7, 4), None)
    reply(ctrd, plain, 3, None, payload(10, 5), MESSAGE_TRAILERS)
    # 5 and 7 interleaved, some not read by the client at once
    reply(ctrd, plain, 5, RESPONSE, payload(100, 6), None, deliver=False)
    reply(ctrd, plain, 7, GRPC_PROTO, payload(frame, 7), None)
    reply(ctrd, plain, 5, None, payload(200, 8), None)
    reply(ctrd, plain, 7, None, payload(300, 9), None, deliver=False)
    reply(ctrd, plain, 5, None, b"", [("grpc-status", "5"), ("grpc-message", "not found")])
    reply(ctrd, plain, 7, None, payload(1, 10), TRAILERS)
    assert ctrd.received[5] == payload(100, 6) + payload(200, 8)
    assert ctrd.received[7] == payload(frame, 7) + payload(300, 9) + payload(1, 10)
    for sid in (1, 3, 5, 7):
        assert machine(ctrd.server, sid)[0] is StreamState.CLOSED
        declined(ctrd, plain, sid, None, b"late", None)  # nothing after the trailers
    # the full form on the next stream, as before
    reply(ctrd, plain, 9, body=payload(2000, 11))


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("frames", list(FRAME_SIZES))
def test_partial_replies_on_open_requests(frames: str, style: str) -> None:
    """Requests still open: headers and messages while OPEN; the request ends; then the trailers."""
    ctrd, plain, frame = _partial_pair(frames, style)
    # 13: headers + a message while the request goes on
    reply(ctrd, plain, 13, RESPONSE, payload(1000, 13), None)
    assert machine(ctrd.server, 13)[0] is StreamState.OPEN
    reply(ctrd, plain, 13, None, payload(frame + 1, 14), None)
    reply(ctrd, plain, 13, None, b"", None)  # nothing to send
    declined(ctrd, plain, 13, None, b"", TRAILERS)  # the request is not complete
    declined(ctrd, plain, 13, None, b"x", TRAILERS)
    both(ctrd, plain, lambda s: end_request(s, 13, 50))  # the client ends its request
    assert machine(ctrd.server, 13)[0] is StreamState.HALF_CLOSED_REMOTE
    reply(ctrd, plain, 13, None, payload(20, 15), None)
    reply(ctrd, plain, 13, None, b"", TRAILERS)
    assert ctrd.received[13] == payload(1000, 13) + payload(frame + 1, 14) + payload(20, 15)
    assert ctrd.server.streams[13].state_machine.stream_closed_by is not None
    # 15: headers alone while open, the request ends (no data), then a message with the trailers
    reply(ctrd, plain, 15, RESPONSE, b"", None)
    both(ctrd, plain, lambda s: end_request(s, 15))
    reply(ctrd, plain, 15, None, payload(3 * frame + 7, 16), MESSAGE_TRAILERS)
    for sid in (13, 15):
        assert machine(ctrd.server, sid)[0] is StreamState.CLOSED
    # a request opened now (h2 forgets the closed streams): messages both ways
    both(ctrd, plain, lambda s: request(s, 17, "open"))
    reply(ctrd, plain, 17, GRPC_PROTO, payload(5, 17), None)
    both(ctrd, plain, lambda s: end_request(s, 17, 3000))
    reply(ctrd, plain, 17, None, payload(5, 18), TRAILERS)
    assert machine(ctrd.server, 17)[0] is StreamState.CLOSED


@pytest.mark.parametrize("style", STYLES)
def test_partial_replies_mixed_with_h2(style: str) -> None:
    """``send_reply``'s partial forms and h2's own calls on the same streams, either first."""
    ctrd, plain = reply_pair(frame_size=None, asyncio_style=style == "asyncio")
    # h2 sends the headers and a message; send_reply the next message, h2 the trailers
    both(ctrd, plain, lambda s: s.server.send_headers(1, RESPONSE))
    both(ctrd, plain, lambda s: s.server.send_data(1, payload(300, 1)))
    reply(ctrd, plain, 1, None, payload(40000, 2), None)
    both(ctrd, plain, lambda s: s.server.send_data(1, payload(7, 3)))
    reply(ctrd, plain, 1, None, payload(9, 4), TRAILERS)
    # send_reply the headers, h2 a message, send_reply the trailers; h2's frames queued go first
    reply(ctrd, plain, 3, RESPONSE, payload(10, 5), None)
    both(ctrd, plain, lambda s: s.server.send_data(3, payload(20, 6)))
    assert ctrd.server._data_to_send
    reply(ctrd, plain, 3, None, b"", TRAILERS)
    # on an open request: h2's headers, send_reply's messages, the request ends, h2's trailers
    both(ctrd, plain, lambda s: s.server.send_headers(13, RESPONSE))
    reply(ctrd, plain, 13, None, payload(100, 13), None)
    both(ctrd, plain, queue_before("ping"))
    reply(ctrd, plain, 13, None, payload(DEFAULT_FRAME + 1, 14), None)
    both(ctrd, plain, lambda s: end_request(s, 13, 10))
    both(ctrd, plain, lambda s: s.server.send_headers(13, TRAILERS, end_stream=True))
    both(ctrd, plain, flush)
    # send_reply's headers on an open request, h2's trailers while it is open (HALF_CLOSED_LOCAL)
    reply(ctrd, plain, 15, RESPONSE, payload(10, 15), None)
    both(ctrd, plain, lambda s: s.server.send_headers(15, TRAILERS, end_stream=True))
    assert machine(ctrd.server, 15)[0] is StreamState.HALF_CLOSED_LOCAL
    declined(ctrd, plain, 15, None, b"", None)
    both(ctrd, plain, lambda s: end_request(s, 15))
    both(ctrd, plain, flush)
    assert ctrd.received == plain.received


def test_partial_reply_nothing_to_send() -> None:
    """Headers sent, no body, no trailers: True, and nothing written or changed."""
    for style in STYLES:
        ctrd, plain = reply_pair(frame_size=None, asyncio_style=style == "asyncio")
        reply(ctrd, plain, 1, RESPONSE, b"abc", None)
        reply(ctrd, plain, 13, RESPONSE, b"", None)
        server = ctrd.server
        assert isinstance(server, CtrdConnection)
        for sid in (1, 13):
            before = snapshot(ctrd)
            for body in (b"", bytearray(), memoryview(b"")):
                assert server.send_reply(sid, None, body, None) is True
                assert snapshot(ctrd) == before, (style, sid, type(body))
            check(ctrd, plain, f"nothing on {sid}")
        # and the streams go on
        reply(ctrd, plain, 1, None, b"def", TRAILERS)
        both(ctrd, plain, lambda s: end_request(s, 13))
        reply(ctrd, plain, 13, None, b"", TRAILERS)


@pytest.mark.parametrize("style", STYLES)
def test_partial_reply_nothing_to_send_after_queued_frames(style: str) -> None:
    """Nothing to send, but h2 had frames queued: they go out in the one write (as before a reply).

    The bytes and state are h2's either way (h2 only queues; grpclib flushes); this pins
    that ``send_reply`` writes what h2 queued whenever it returns True.
    """
    ctrd, plain = reply_pair(frame_size=None, asyncio_style=style == "asyncio")
    reply(ctrd, plain, 1, RESPONSE, b"abc", None)
    both(ctrd, plain, queue_before("all"))
    assert ctrd.server._data_to_send
    reply(ctrd, plain, 1, None, b"", None)  # (reply() checks the single write of the queued bytes)
    assert ctrd.transport is not None
    assert ctrd.server._data_to_send == b""
    reply(ctrd, plain, 1, None, b"", TRAILERS)


def test_partial_replies_at_the_windows() -> None:
    """Messages filling the stream's window and then the connection's exactly; trailers at window 0."""
    ctrd, plain = reply_pair(frame_size=None, window=1000, conn_window=WINDOW)
    reply(ctrd, plain, 1, RESPONSE, payload(600, 1), None, deliver=False)
    declined(ctrd, plain, 1, None, payload(401, 2), None)
    reply(ctrd, plain, 1, None, payload(400, 3), None, deliver=False)
    assert ctrd.server.streams[1].outbound_flow_control_window == 0
    declined(ctrd, plain, 1, None, b"x", None)
    declined(ctrd, plain, 1, None, b"x", TRAILERS)
    reply(ctrd, plain, 1, None, b"", None)  # nothing: still True
    reply(ctrd, plain, 1, None, b"", TRAILERS)  # the trailers take no window
    ctrd, plain = reply_pair(frame_size=None, window=WINDOW, conn_window=DEFAULT_WINDOW)
    reply(ctrd, plain, 13, RESPONSE, payload(DEFAULT_WINDOW - 10, 13), None, deliver=False)
    declined(ctrd, plain, 13, None, payload(11, 14), None)  # over the connection's window
    declined(ctrd, plain, 1, RESPONSE, payload(11, 14), None)  # ... on another stream too
    reply(ctrd, plain, 1, RESPONSE, b"", None, deliver=False)  # headers alone go
    reply(ctrd, plain, 13, None, payload(10, 15), None, deliver=False)
    assert ctrd.server.outbound_flow_control_window == 0
    both(ctrd, plain, flush)  # the client acknowledges: the window is back
    reply(ctrd, plain, 1, None, payload(DEFAULT_WINDOW // 2, 16), TRAILERS)
    both(ctrd, plain, lambda s: end_request(s, 13))
    reply(ctrd, plain, 13, None, payload(100, 17), TRAILERS)


@pytest.mark.parametrize("frames", list(FRAME_SIZES))
@pytest.mark.parametrize("name", list(LARGE) + list(EXPANDING))
def test_partial_replies_large_header_lists(name: str, frames: str) -> None:
    """Header blocks over a frame sent alone: HEADERS + CONTINUATION frames, as h2 sends them."""
    headers, trailers = LARGE[name] if name in LARGE else (EXPANDING[name], TRAILERS)
    ctrd, plain = reply_pair(frame_size=FRAME_SIZES[frames])
    reply(ctrd, plain, 1, headers, b"", None)
    reply(ctrd, plain, 1, None, payload(1000, 1), None)
    reply(ctrd, plain, 1, None, b"", trailers)
    reply(ctrd, plain, 13, headers, payload(3 * DEFAULT_FRAME + 1, 13), None)
    both(ctrd, plain, lambda s: end_request(s, 13))
    reply(ctrd, plain, 13, None, payload(10, 14), trailers)
    reply(ctrd, plain, 3, headers, payload(10, 3), None)
    reply(ctrd, plain, 3, None, b"", trailers)


def test_partial_replies_memo_and_table(misses: list[Any]) -> None:
    """Header lists coded once per form and table: the memo serves headers and trailers sent alone."""
    requests = [(sid, "ended" if sid % 4 == 1 else "open") for sid in range(1, 30, 2)]
    ctrd, plain = reply_pair(frame_size=None, requests=requests)
    for sid in range(1, 30, 2):
        headers = GRPC_PROTO if sid % 8 == 1 else RESPONSE
        reply(ctrd, plain, sid, headers, payload(50, sid), None)
    for sid in range(1, 30, 2):
        if sid % 4 != 1:
            both(ctrd, plain, lambda s: end_request(s, sid))  # noqa: B023 (called at once)
        reply(ctrd, plain, sid, None, b"", MESSAGE_TRAILERS if sid % 3 else TRAILERS)
    assert len(misses) < 15  # 30 header blocks


def client_settings(changes: dict[SettingCodes | int, int]) -> Callable[[Side], None]:
    """The client changes its settings; the server reads them, the client its ACK."""

    def run(s: Side) -> None:
        s.client.update_settings(changes)
        events = s.server.receive_data(s.client.data_to_send())
        s.events.append(("server", tuple(type(e).__name__ for e in events)))
        # the server's ACK reaches the client at once: h2's client takes a new frame size
        # limit only at the start of a read, so no frame sized to the new settings may
        # follow the ACK in the read that brings it
        flush(s)

    return run


def test_partial_replies_across_settings_changes() -> None:
    """The client's frame size and header table size change between the calls of one response."""
    ctrd, plain = reply_pair(frame_size=None)
    big = filled(RESPONSE, "x-big", "\\", LIMIT + 2000)
    assert len(hpack.Encoder().encode(big)) > 2 * DEFAULT_FRAME  # HEADERS + CONTINUATIONs at 16 KiB
    reply(ctrd, plain, 13, big, payload(3 * DEFAULT_FRAME, 13), None)
    both(ctrd, plain, client_settings({SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE}))
    reply(ctrd, plain, 13, None, payload(3 * DEFAULT_FRAME, 14), None)  # one frame now
    both(ctrd, plain, client_settings({SettingCodes.HEADER_TABLE_SIZE: 0}))
    both(ctrd, plain, lambda s: end_request(s, 13))
    reply(ctrd, plain, 13, None, b"", [("grpc-status", "0"), ("x-t", "\\" * 12000)])
    both(
        ctrd,
        plain,
        client_settings({SettingCodes.MAX_FRAME_SIZE: 20000, SettingCodes.HEADER_TABLE_SIZE: 200}),
    )
    reply(ctrd, plain, 1, big, b"", None)
    both(ctrd, plain, client_settings({SettingCodes.MAX_FRAME_SIZE: DEFAULT_FRAME}))
    reply(ctrd, plain, 1, None, payload(50000, 1), MESSAGE_TRAILERS)


def test_partial_informational_headers_decline() -> None:
    """Headers that are a 1xx (informational) response: ``send_reply`` declines, h2 sends them.

    h2 sends an informational response without marking the response's headers sent (its
    state machine's SEND_INFORMATIONAL_HEADERS), so the final response headers follow;
    ``send_reply`` leaves that to h2, and takes the final response after it.
    """
    ctrd, plain = reply_pair(frame_size=None)
    server = ctrd.server
    assert isinstance(server, CtrdConnection)
    for informational in ([(":status", "100")], [(b":status", b"103"), (b"link", b"</a>")]):
        declined(ctrd, plain, 1, informational, b"", None)
        for side in (ctrd, plain):
            side.server.send_headers(1, informational)
            side.flush()
        assert bytes(ctrd.out) == bytes(plain.out)
        assert machine(server, 1) == machine(plain.server, 1)
        check(ctrd, plain, "1xx through h2")
    reply(ctrd, plain, 1, RESPONSE, b"abc", TRAILERS)


# -- declining -----------------------------------------------------------------------------------


def prepare(kind: str) -> tuple[tuple[Side, Side], int, Headers, Any, Headers]:
    """A pair where ``send_reply`` must decline: the pair, and the call's arguments.

    The kinds before :data:`PARTIAL_DECLINE` decline the full form; those in it decline the
    partial forms (headers or trailers left out) and send their first parts through
    ``send_reply`` itself, compared with h2 as any reply.
    """
    body: Any = payload(1000, 0)
    headers, trailers, sid = RESPONSE, TRAILERS, 1
    if kind == "no-transport":
        pair = reply_pair(transport=False)
    elif kind == "conn-window":
        pair = reply_pair(frame_size=None, conn_window=DEFAULT_WINDOW)
        body = payload(DEFAULT_WINDOW + 1, 0)
    elif kind == "stream-window":
        pair = reply_pair(frame_size=None, window=1000)
        body = payload(1001, 0)
    elif kind == "conn-window-mid":
        pair = reply_pair(frame_size=None, conn_window=DEFAULT_WINDOW)
    elif kind in ("stream-window-mid", "stream-window-mid-open"):
        pair = reply_pair(frame_size=None, window=1000)
    else:
        pair = reply_pair(frame_size=None)
    ctrd, plain = pair

    def run(fn: Callable[[Side], Any]) -> None:
        both(ctrd, plain, fn)

    if kind == "unknown-stream":
        sid = 99
    elif kind == "server-stream-id":
        sid = 2
    elif kind == "closed-connection":
        run(lambda s: s.server.close_connection())
        assert ctrd.server.state_machine.state is ConnectionState.CLOSED
    elif kind == "client-goaway":
        for side in (ctrd, plain):
            side.client.close_connection()
        run(lambda s: s.server.receive_data(s.client.data_to_send()))
        assert ctrd.server.state_machine.state is ConnectionState.CLOSED
    elif kind == "request-open":
        sid = 13
    elif kind == "headers-sent":
        run(lambda s: s.server.send_headers(1, RESPONSE))
    elif kind == "data-sent":
        run(lambda s: s.server.send_headers(1, RESPONSE))
        run(lambda s: s.server.send_data(1, b"abc"))
    elif kind == "replied":
        reply(ctrd, plain, 1, body=b"first")
    elif kind == "reset-by-server":
        run(lambda s: s.server.reset_stream(1, ErrorCodes.CANCEL))
    elif kind == "reset-by-client":
        for side in (ctrd, plain):
            side.client.reset_stream(1, ErrorCodes.CANCEL)
        run(lambda s: s.server.receive_data(s.client.data_to_send()))
    # -- the partial forms
    elif kind.startswith("no-headers"):  # no response headers sent yet, and none given
        headers = None
        body, trailers = {
            "no-headers": (body, trailers),
            "no-headers-body": (body, None),
            "no-headers-trailers": (b"", trailers),
            "no-headers-nothing": (b"", None),
        }.get(kind, (body, None))
        if kind == "no-headers-open":
            sid = 13
    elif kind == "informational-only":  # a 1xx is not the response's headers
        run(lambda s: s.server.send_headers(1, [(":status", "100")]))
        assert not ctrd.server.streams[1].state_machine.headers_sent
        headers, trailers = None, None
    elif kind == "headers-again":
        reply(ctrd, plain, 1, RESPONSE, b"first", None)
        trailers = None
    elif kind == "headers-again-trailers":
        reply(ctrd, plain, 1, RESPONSE, b"first", None)
        body = b""
    elif kind == "headers-again-open":
        reply(ctrd, plain, 13, RESPONSE, b"first", None)
        sid, trailers = 13, None
    elif kind == "headers-again-h2":  # response headers sent by h2 on the open request
        run(lambda s: s.server.send_headers(13, RESPONSE))
        sid, body, trailers = 13, b"", None
    elif kind.startswith("after-trailers"):
        reply(ctrd, plain, 1, body=b"first")
        headers = None
        body, trailers = {
            "after-trailers-body": (body, None),
            "after-trailers-trailers": (b"", trailers),
            "after-trailers-nothing": (b"", None),
        }[kind]
    elif kind == "after-partial-trailers":  # a reply in three calls, then more
        reply(ctrd, plain, 1, RESPONSE, b"first", None)
        reply(ctrd, plain, 1, None, b"second", None)
        reply(ctrd, plain, 1, None, b"", TRAILERS)
        headers, trailers = None, None
    elif kind == "h2-trailers-open":  # h2 ended the response before the request: HALF_CLOSED_LOCAL
        run(lambda s: s.server.send_headers(13, RESPONSE))
        run(lambda s: s.server.send_headers(13, TRAILERS, end_stream=True))
        assert ctrd.server.streams[13].state_machine.state is StreamState.HALF_CLOSED_LOCAL
        sid, headers, body, trailers = 13, None, b"", None
    elif kind in ("h2-ended-by-data", "h2-ended-by-data-open"):  # END_STREAM on DATA: no trailers sent
        sid = 13 if kind.endswith("open") else 1
        run(lambda s: s.server.send_headers(sid, RESPONSE))
        run(lambda s: s.server.send_data(sid, b"last", end_stream=True))
        assert not ctrd.server.streams[sid].state_machine.trailers_sent
        headers = None
        trailers = None if kind.endswith("open") else trailers
    elif kind in ("trailers-open", "body-trailers-open"):  # the request is not complete
        reply(ctrd, plain, 13, RESPONSE, b"first", None)
        sid, headers = 13, None
        body = b"" if kind == "trailers-open" else body
    elif kind == "headers-trailers-open":
        sid, body = 13, b""
    elif kind == "conn-window-mid":  # the connection's window spent but for 100 bytes, unread
        reply(ctrd, plain, 1, RESPONSE, payload(DEFAULT_WINDOW - 100, 1), None, deliver=False)
        headers, body = None, payload(101, 0)
    elif kind == "stream-window-mid":  # the stream's window spent but for 400 bytes, unread
        reply(ctrd, plain, 1, RESPONSE, payload(600, 1), None, deliver=False)
        headers, body = None, payload(401, 0)
    elif kind == "stream-window-mid-open":
        reply(ctrd, plain, 13, RESPONSE, payload(600, 13), None, deliver=False)
        sid, headers, body, trailers = 13, None, payload(401, 0), None
    elif kind in ("closed-connection-partial", "closed-connection-nothing"):
        reply(ctrd, plain, 1, RESPONSE, b"first", None)
        run(lambda s: s.server.close_connection())
        assert ctrd.server.state_machine.state is ConnectionState.CLOSED
        headers, trailers = None, None
        body = b"" if kind.endswith("nothing") else body
    elif kind == "reset-after-headers":
        reply(ctrd, plain, 13, RESPONSE, b"first", None)
        for side in (ctrd, plain):
            side.client.reset_stream(13, ErrorCodes.CANCEL)
        run(lambda s: s.server.receive_data(s.client.data_to_send()))
        sid, headers, trailers = 13, None, None
    elif kind == "unknown-stream-partial":
        sid, headers, body, trailers = 99, None, b"", None
    else:
        assert kind in DECLINE, kind
        assert kind not in PARTIAL_DECLINE, kind
    # something queued in h2: it must stay queued
    if ctrd.server.state_machine.state is not ConnectionState.CLOSED:
        run(lambda s: s.server.ping(b"\x00" * 8))
    return pair, sid, headers, body, trailers


PARTIAL_DECLINE = [
    "no-headers",
    "no-headers-body",
    "no-headers-trailers",
    "no-headers-nothing",
    "no-headers-open",
    "informational-only",
    "headers-again",
    "headers-again-trailers",
    "headers-again-open",
    "headers-again-h2",
    "after-trailers-body",
    "after-trailers-trailers",
    "after-trailers-nothing",
    "after-partial-trailers",
    "h2-trailers-open",
    "h2-ended-by-data",
    "h2-ended-by-data-open",
    "trailers-open",
    "body-trailers-open",
    "headers-trailers-open",
    "conn-window-mid",
    "stream-window-mid",
    "stream-window-mid-open",
    "closed-connection-partial",
    "closed-connection-nothing",
    "reset-after-headers",
    "unknown-stream-partial",
]

DECLINE = [
    "no-transport",
    "unknown-stream",
    "server-stream-id",
    "closed-connection",
    "client-goaway",
    "request-open",
    "headers-sent",
    "data-sent",
    "replied",
    "reset-by-server",
    "reset-by-client",
    "conn-window",
    "stream-window",
    *PARTIAL_DECLINE,
]


@pytest.mark.parametrize(
    ("kind", "style"),
    [(k, s) for k in DECLINE for s in ("writelines", "asyncio") if (k, s) != ("no-transport", "asyncio")],
)
def test_reply_declines(kind: str, style: str) -> None:
    """``send_reply`` returns False: nothing written, nothing changed, nothing queued taken."""
    (ctrd, plain), sid, headers, body, trailers = prepare(kind)
    if style == "asyncio" and ctrd.transport is not None:
        # the same connection, through a transport whose writelines is asyncio's
        recorder = AsyncioTransport()
        recorder.out = ctrd.out
        assert isinstance(ctrd.server, CtrdConnection)
        ctrd.server.use_transport(recorder)
        ctrd.transport = recorder
    if kind == "no-transport":
        assert isinstance(ctrd.server, CtrdConnection)
        assert ctrd.transport is None
        assert ctrd.server.transport is None
    calls = len(ctrd.transport.calls) if ctrd.transport else 0
    declined(ctrd, plain, sid, headers, body, trailers)
    assert (len(ctrd.transport.calls) if ctrd.transport else 0) == calls
    if ctrd.server.state_machine.state is not ConnectionState.CLOSED:
        # the connection goes on alike
        both(ctrd, plain, flush)
        both(ctrd, plain, lambda s: reply_plain(s.server, 5, RESPONSE, b"after", TRAILERS))
        both(ctrd, plain, flush)
        if ctrd.transport is not None:
            reply(ctrd, plain, 9, body=b"after")


@pytest.mark.parametrize("kind", ["conn-window", "stream-window", "conn-window-mid", "stream-window-mid"])
def test_h2_path_after_declining_for_the_window(kind: str) -> None:
    """After a False for a small window, h2's own path on the same connection sends the reply.

    (In the "-mid" kinds the response's headers and a first body went out through
    ``send_reply``; the body declined is the next message.)
    """
    (ctrd, plain), sid, headers, body, trailers = prepare(kind)
    declined(ctrd, plain, sid, headers, body, trailers)
    if headers is not None:
        both(ctrd, plain, lambda s: s.server.send_headers(sid, headers))
    pos, rounds = 0, 0
    while pos < len(body):
        n = min(plain.server.max_outbound_frame_size, len(body) - pos)
        n = min(n, plain.server.local_flow_control_window(sid))
        if not n:  # the window is spent: the client reads and acknowledges
            rounds += 1
            assert rounds < 20
            both(ctrd, plain, flush)
            continue
        chunk = body[pos : pos + n]
        both(ctrd, plain, lambda s: s.server.send_data(sid, chunk))  # noqa: B023 (called at once)
        pos += n
    assert rounds
    both(ctrd, plain, lambda s: s.server.send_headers(sid, trailers, end_stream=True))
    both(ctrd, plain, flush)
    assert ctrd.received[sid] == plain.received[sid]
    assert ctrd.received[sid].endswith(body)
    if headers is not None:
        assert ctrd.received[sid] == body
    assert machine(ctrd.server, sid)[:2] == machine(plain.server, sid)[:2]
    assert ctrd.server.streams[sid].state_machine.state is StreamState.CLOSED
    # and send_reply works again on the next stream once the windows allow it
    reply(ctrd, plain, 3, body=payload(500, 3))


# -- random sequences ----------------------------------------------------------------------------


def both(ctrd: Side, plain: Side, fn: Callable[[Side], Any], where: str = "") -> None:
    """The same call on both sides, then everything compared."""
    fn(ctrd)
    fn(plain)
    check(ctrd, plain, where or repr(fn))


def flush(side: Side) -> None:
    side.flush()
    side.deliver()


REPLY_HEADERS: list[tuple[Headers, Headers]] = [
    (RESPONSE, TRAILERS),
    (RESPONSE, TRAILERS),
    (GRPC_PROTO, TRAILERS),
    (RESPONSE, MESSAGE_TRAILERS),
    HEADER_VALUES["bytes"],
    HEADER_VALUES["bytes-values"],
    (RESPONSE, [("grpc-status", "5"), ("grpc-message", "not found")]),
]


def accepts(server: H2Connection, sid: int, headers: Headers, body: Any, trailers: Headers) -> bool:
    """Whether ``send_reply`` must take the call, by its rules, from the (plain) server's state."""
    stream = server.streams.get(sid)
    if stream is None or server.state_machine.state is not ConnectionState.SERVER_OPEN:
        return False
    m = stream.state_machine
    if m.trailers_sent or (headers is not None) is bool(m.headers_sent):
        return False
    if not (m.state is StreamState.HALF_CLOSED_REMOTE or (m.state is StreamState.OPEN and trailers is None)):
        return False
    return len(body) <= server.local_flow_control_window(sid)


def partial_step(rng: random.Random, ctrd: Side, plain: Side, state: dict[str, int]) -> str:
    """``send_reply`` in a partial (or the full) form on a stream where it fits -- or, now and then,
    one where it does not: the wrong form, a stream done or unknown, trailers on an open request,
    a body over a window."""
    server = plain.server
    startable = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)
    live = [
        sid
        for sid, s in server.streams.items()
        if s.state_machine.state in startable and not s.state_machine.trailers_sent
    ]
    if live and rng.random() < 0.85:
        sid = rng.choice(live)
    else:
        sid = rng.choice([*server.streams, state["next"] + 100])
    stream = server.streams.get(sid)
    m = stream.state_machine if stream is not None else None
    headers: Headers = None if m is not None and m.headers_sent else rng.choice(REPLY_HEADERS)[0]
    if rng.random() < 0.06:  # the wrong form
        headers = rng.choice(REPLY_HEADERS)[0] if headers is None else None
    complete = m is not None and m.state is StreamState.HALF_CLOSED_REMOTE
    trailers: Headers = None
    if rng.random() < (0.35 if complete else 0.04):
        trailers = rng.choice(REPLY_HEADERS)[1]
    size = rng.choice((0, 0, 0, 5, 1000, DEFAULT_FRAME, DEFAULT_FRAME + 1, 40000, 70000))
    body = payload(size, state["seed"])
    state["seed"] += 1
    form = "".join(c for c, x in (("H", headers), ("B", size), ("T", trailers)) if x) or "-"
    if accepts(server, sid, headers, body, trailers):
        reply(ctrd, plain, sid, headers, body, trailers, deliver=rng.random() < 0.3)
        return f"partial {sid} {form} {size}"
    declined(ctrd, plain, sid, headers, body, trailers)
    return f"declined {sid} {form} {size}"


def random_step(
    rng: random.Random, ctrd: Side, plain: Side, state: dict[str, int], partial: bool = False
) -> str:
    """One random call on both sides (chosen from the plain side's state, which both share).

    With *partial*, ``send_reply``'s partial forms too (:func:`partial_step`), clients ending
    open requests, and h2's own sends also on the streams ``send_reply`` started.
    """
    server = plain.server
    live = {sid: s.state_machine for sid, s in server.streams.items() if not s.closed}
    complete = [
        sid for sid, m in live.items() if m.state is StreamState.HALF_CLOSED_REMOTE and not m.headers_sent
    ]
    open_ = [sid for sid, m in live.items() if m.state is StreamState.OPEN]
    if partial:
        open_ += [
            sid
            for sid, m in live.items()
            if m.state is StreamState.HALF_CLOSED_REMOTE and m.headers_sent and not m.trailers_sent
        ]
        r = rng.random()
        if r < 0.3:
            return partial_step(rng, ctrd, plain, state)
        # the client ends its request (the server's side OPEN, or HALF_CLOSED_LOCAL: h2 ended it)
        requests = [
            sid for sid, m in live.items() if m.state in (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)
        ]
        if r < 0.38 and requests:
            sid = rng.choice(requests)
            size = rng.choice((0, 10, 1000))
            both(ctrd, plain, lambda s: end_request(s, sid, size))
            return f"end request {sid} {size}"
    r = rng.random()
    if r < 0.35 and complete:
        sid = rng.choice(complete)
        headers, trailers = rng.choice(REPLY_HEADERS)
        size = rng.choice((0, 5, 1000, DEFAULT_FRAME, DEFAULT_FRAME + 1, 40000, 70000, 100 * KiB))
        body = payload(size, state["seed"])
        state["seed"] += 1
        if size <= server.local_flow_control_window(sid):
            reply(ctrd, plain, sid, headers, body, trailers, deliver=rng.random() < 0.3)
            return f"reply {sid} {size}"
        declined(ctrd, plain, sid, headers, body, trailers)
        return f"declined {sid} {size}"
    if r < 0.45:
        sid = state["next"]
        state["next"] += 2
        kind = rng.choice(("ended", "data", "data", "open"))
        both(ctrd, plain, lambda s: request(s, sid, kind))
        return f"request {sid} {kind}"
    if r < 0.6 and open_:
        sid = rng.choice(open_)
        if not live[sid].headers_sent:
            both(ctrd, plain, lambda s: s.server.send_headers(sid, RESPONSE))
            return f"headers {sid}"
        if rng.random() < 0.2:
            both(ctrd, plain, lambda s: s.server.send_headers(sid, TRAILERS, end_stream=True))
            return f"trailers {sid}"
        n = min(rng.choice((1, 500, 20000, 70000)), server.max_outbound_frame_size)
        n = min(n, server.local_flow_control_window(sid))
        data = payload(n, state["seed"])
        state["seed"] += 1
        both(ctrd, plain, lambda s: s.server.send_data(sid, data))
        return f"data {sid} {n}"
    if r < 0.68:
        both(ctrd, plain, lambda s: s.server.ping(b"\x07" * 8))
        return "ping"
    if r < 0.76:
        sid = rng.choice([0, *live])
        n = rng.randrange(1, 5000)
        both(ctrd, plain, lambda s: s.server.increment_flow_control_window(n, stream_id=sid or None))
        return f"window {sid} {n}"
    if r < 0.8:
        # (not the server's HEADER_TABLE_SIZE: that is the client's encoder, tried on its own below)
        local: dict[SettingCodes | int, int] = {
            SettingCodes.MAX_CONCURRENT_STREAMS: rng.choice((100, 150)),
            SettingCodes.MAX_HEADER_LIST_SIZE: rng.choice((1 << 16, 1 << 20)),
        }
        both(ctrd, plain, lambda s: s.server.update_settings(local))
        return f"settings {local}"
    if r < 0.85:
        changes: dict[SettingCodes | int, int] = {
            SettingCodes.MAX_FRAME_SIZE: rng.choice((DEFAULT_FRAME, 20000, MAX_FRAME_SIZE)),
        }
        encoder = server.encoder
        if not (encoder.table_size_changes or encoder.header_table.resized):
            # A new table size only once the last one went out in a block, and never the current
            # one: plain h2 breaks otherwise (hpack's HeaderTable.maxsize setter clears ``resized``
            # when given the current size, dropping a pending size update; and hpack's encoder
            # sends every pending size in turn, which the client's decoder checks against the
            # last size it allows).
            changes[SettingCodes.HEADER_TABLE_SIZE] = rng.choice(
                [n for n in (0, 200, 4096) if n != encoder.header_table.maxsize]
            )

        both(ctrd, plain, client_settings(changes))
        return f"client settings {changes}"
    both(ctrd, plain, flush)
    return "flush"


@pytest.mark.parametrize("partial", [False, True], ids=["full", "partial"])
@pytest.mark.parametrize("seed", range(6))
def test_random_sequences_match_h2(seed: int, partial: bool) -> None:
    """send_reply mixed with pings, window updates, settings, new requests and h2 sends on open streams.

    With *partial*: its partial forms too (headers alone, bodies alone, trailers alone, ...) on
    streams open or complete, requests ending, and calls it must decline.
    """
    rng = random.Random(seed)
    ctrd, plain = reply_pair(
        frame_size=rng.choice((None, MAX_FRAME_SIZE)), window=96 * KiB, conn_window=256 * KiB
    )
    state = {"next": 17, "seed": 1000}
    done = []
    for i in range(150):
        done.append(random_step(rng, ctrd, plain, state, partial))
        check(ctrd, plain, f"step {i}: {done[-1]}")
    both(ctrd, plain, flush)
    assert ctrd.received == plain.received
    replies = [d for d in done if d.startswith("reply")]
    assert ctrd.transport is not None
    assert sum(1 for name, _ in ctrd.transport.calls if name == "writelines") >= len(replies)
    if not partial:
        assert len(replies) >= 10, done
        return
    partials = [d.split() for d in done if d.startswith("partial")]
    forms = {form for _, _, form, _ in partials}
    assert len(partials) >= 15, done
    # headers alone, headers + body, bodies alone, trailers alone or with a body, nothing at all
    assert {"H", "HB", "B", "-"} <= forms, (forms, done)
    assert forms & {"T", "BT"}, (forms, done)
    assert any(d.startswith("declined") for d in done), done
    assert any(d.startswith("end request") for d in done), done
