"""``ctrd.wire._h2.CtrdConnection``'s direct DATA paths against plain h2, byte for byte and event for event.

Receive: a plain client :class:`~h2.connection.H2Connection` writes a byte stream
(DATA frames of many sizes around :data:`DIRECT_BODY_MIN`, padded or not, on
several streams, with HEADERS, PING, WINDOW_UPDATE, SETTINGS and RST_STREAM frames
in between); it is fed, split at many boundaries, to a :class:`CtrdConnection`
server and a plain ``H2Connection`` server built alike (grpclib's server
configuration, ctrd's frame size and grpclib's windows). After every read both
must answer the same events (or raise the same error), have the same bytes to send
once the data is acknowledged as grpclib does, and end in the same state. Which
large frames Ctrd gathers in a buffer of its own follows from the split: after
every read, ``_frame``/``_filled`` must be what the split predicts, and a
``DataReceived`` event's data is a ``bytearray`` exactly for those frames.
Malformed or misplaced DATA frames (stream 0, overlong, unknown or closed stream,
inside a header block, over the flow-control window) raise the same error and
queue the same GOAWAY/RST_STREAM bytes.

Send: a server ``CtrdConnection`` whose ``transport`` records ``write``/``writelines``
and a plain server go through the same calls; everything the Ctrd side wrote
(the transport's writes in order, ``data_to_send()`` written at every flush as
grpclib's ``Connection.flush`` does) must be the plain side's ``data_to_send()``,
a client fed either must see the same events, both servers must keep the same
flow-control windows, and a large unpadded frame's payload must reach
``writelines`` as the very object given to ``send_data``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived, Event
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from ctrd.wire._h2 import DIRECT_BODY_MIN, MAX_FRAME_SIZE, CtrdConnection

from ._h2config import grpclib_h2_config

KiB = 1 << 10
MiB = 1 << 20
BIG = DIRECT_BODY_MIN  # the smallest DATA frame taking the direct paths
DEFAULT_FRAME = 16 * KiB  # HTTP/2's initial SETTINGS_MAX_FRAME_SIZE
DEFAULT_WINDOW = 65535  # HTTP/2's initial windows
WINDOW = 4 * MiB  # grpclib's default stream and connection windows
PREAMBLE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, CONTINUATION = 0x0, 0x1, 0x9
END_STREAM, END_HEADERS, PADDED = 0x1, 0x4, 0x8

REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/containerd.services.content.v1.Content/Write"),
    (":authority", "ctrd"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]
RESPONSE = [(":status", "200"), ("content-type", "application/grpc")]
TRAILERS = [("grpc-status", "0")]


def server_config() -> H2Configuration:
    """The h2 configuration of grpclib's server (``grpclib.server.Server``)."""
    return grpclib_h2_config(client_side=False)


def payload(n: int, seed: int) -> bytes:
    """*n* pseudo-random bytes (a misplaced or reordered byte shows)."""
    return random.Random(seed).randbytes(n)


def norm(value: Any) -> Any:
    """Events (or what they hold) as plain comparable values; any bytes-like object becomes ``bytes``."""
    if isinstance(value, Event):
        return type(value).__name__, tuple(sorted((k, norm(v)) for k, v in vars(value).items()))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return tuple(norm(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((repr(k), norm(v)) for k, v in value.items()))
    if value is None or type(value) in (int, bool, str):
        return value
    return repr(value)


def conn_state(conn: H2Connection) -> tuple[Any, ...]:
    """What h2 keeps about the connection and its streams: states and flow-control windows."""
    streams = tuple(
        (
            sid,
            s.state_machine.state,
            s.outbound_flow_control_window,
            tuple(sorted(vars(s._inbound_window_manager).items())),
            s.max_outbound_frame_size,
        )
        for sid, s in sorted(conn.streams.items())
    )
    return (
        conn.state_machine.state,
        conn.outbound_flow_control_window,
        tuple(sorted(vars(conn._inbound_flow_control_window_manager).items())),
        conn.max_inbound_frame_size,
        conn.max_outbound_frame_size,
        conn.highest_inbound_stream_id,
        conn.highest_outbound_stream_id,
        streams,
    )


# -- the client's byte stream, frame by frame ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Wire:
    """One frame of a byte stream: where its 9-byte header starts, and its header fields."""

    offset: int
    length: int
    type: int
    flags: int
    stream_id: int
    in_header_block: bool  # a HEADERS frame without END_HEADERS precedes it, unfinished

    @property
    def end(self) -> int:
        return self.offset + 9 + self.length

    def direct(self, max_frame_size: int) -> bool:
        """Whether Ctrd gathers this frame's body itself when a read ends inside it."""
        return (
            self.type == DATA
            and not self.flags & PADDED
            and BIG <= self.length <= max_frame_size
            and self.stream_id != 0
            and not self.in_header_block
        )


def frames_of(stream: bytes) -> list[Wire]:
    pos = len(PREAMBLE) if stream.startswith(PREAMBLE) else 0
    frames, in_block = [], False
    while pos + 9 <= len(stream):
        length = int.from_bytes(stream[pos : pos + 3], "big")
        type_, flags = stream[pos + 3], stream[pos + 4]
        stream_id = int.from_bytes(stream[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        frames.append(Wire(pos, length, type_, flags, stream_id, in_block))
        if type_ == HEADERS:
            in_block = not flags & END_HEADERS
        elif type_ == CONTINUATION and flags & END_HEADERS:
            in_block = False
        pos += 9 + length
    return frames


def frame_header(length: int, type_: int, flags: int, stream_id: int) -> bytes:
    return length.to_bytes(3, "big") + bytes((type_, flags)) + stream_id.to_bytes(4, "big")


def frame(type_: int, flags: int, stream_id: int, body: bytes) -> bytes:
    """One raw frame."""
    return frame_header(len(body), type_, flags, stream_id) + body


# -- where the reads end ----------------------------------------------------------------------


def cut_points(kind: str, stream: bytes) -> list[int]:
    """Where the reads of *stream* end (the last read ends at its end), by *kind* of split."""
    n, frames = len(stream), frames_of(stream)
    starts = [f.offset for f in frames]
    if kind == "whole":
        points: Iterable[int] = ()
    elif kind == "bytes":
        points = range(1, n)
    elif kind == "nines":
        points = range(9, n, 9)
    elif kind == "after-header":  # a read ends right after each header: h2 sees 9 bytes, Ctrd leaves it
        points = [o + 9 for o in starts]
    elif kind == "after-header+1":  # ... and one byte of the body: Ctrd gathers every large body
        points = [o + 10 for o in starts]
    elif kind == "header-bytes":  # every header byte by byte, each body in one read
        points = [o + k for o in starts for k in range(11)]
    elif kind == "into-next-header":  # a body's start, then its end with part of the following header
        points = [p for i, f in enumerate(frames) for p in (f.offset + 10 + i % 5, f.end + 1 + i % 8)]
    elif kind == "one-short":  # a body but its last byte, then that byte with the following frames
        points = [f.end - 1 for f in frames] + [f.offset + 9 + f.length // 2 for f in frames]
    elif kind.startswith("every-"):  # fixed-size reads
        points = range(int(kind.removeprefix("every-")), n, int(kind.removeprefix("every-")))
    elif kind.startswith("random-"):  # random cuts, then random read sizes from a few that matter
        rng = random.Random(kind)
        points = set(rng.sample(range(1, n), min(n - 1, 40)))
        pos = 0
        while pos < n:
            pos += rng.choice((1, 2, 8, 9, 10, 11, 100, 4 * KiB, BIG - 1, BIG, BIG + 9, BIG + 10, 300 * KiB))
            points.add(pos)
    else:
        raise AssertionError(kind)
    return sorted({p for p in points if 0 < p < n})


CUTS = [
    "whole",
    "after-header",
    "after-header+1",
    "header-bytes",
    "into-next-header",
    "one-short",
    "every-4096",
    "every-16384",
    "every-65536",
    "every-65545",
    "every-262144",
    "random-1",
    "random-2",
    "random-3",
]


# -- the receiving servers ---------------------------------------------------------------------


def receive_servers(
    max_frame_size: int = MAX_FRAME_SIZE, window: int = WINDOW
) -> tuple[H2Connection, CtrdConnection, H2Connection]:
    """A client and two servers (Ctrd, plain); the client has read the servers' SETTINGS."""
    client = H2Connection(config=H2Configuration(client_side=True))
    client.initiate_connection()
    ctrd, plain = CtrdConnection(config=server_config()), H2Connection(config=server_config())
    for server in (ctrd, plain):
        server.initiate_connection()
        if window > DEFAULT_WINDOW:
            server.increment_flow_control_window(window - DEFAULT_WINDOW)
        server.update_settings(
            {SettingCodes.MAX_FRAME_SIZE: max_frame_size, SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
    settings = ctrd.data_to_send()
    assert settings == plain.data_to_send()
    client.receive_data(settings)
    return client, ctrd, plain


def receive_handshake(
    max_frame_size: int = MAX_FRAME_SIZE, window: int = WINDOW
) -> tuple[H2Connection, CtrdConnection, H2Connection]:
    """A client and two servers (Ctrd, plain) past the SETTINGS exchange, as ``LargeFrameProtocol``."""
    client, ctrd, plain = receive_servers(max_frame_size, window)
    fed = feed(ctrd, plain, client.data_to_send(), [])  # preamble, SETTINGS and the ACK of the servers'
    assert fed.error is None
    assert ctrd.max_inbound_frame_size == plain.max_inbound_frame_size == max_frame_size
    return client, ctrd, plain


@dataclasses.dataclass
class Fed:
    """What feeding a byte stream to both servers showed."""

    ctrd_data: list[DataReceived] = dataclasses.field(default_factory=list)
    plain_data: list[DataReceived] = dataclasses.field(default_factory=list)
    error: Any = None  # what both raised (then the feeding stopped)
    sent: bytearray = dataclasses.field(default_factory=bytearray)  # what both had to send, read by read
    gathering_reads: int = 0  # reads after which Ctrd was gathering a large body


def read(conn: H2Connection, chunk: bytes) -> tuple[list[Any] | None, Any, bytes]:
    """One read (as grpclib's ``data_received``): events, their normal form, then the bytes to send.

    Every ``DataReceived`` is acknowledged (``Connection.ack``) before the bytes are taken.
    """
    try:
        events = conn.receive_data(chunk)
    except ProtocolError as exc:
        return None, ("raised", type(exc).__name__, str(exc)), conn.data_to_send()
    for event in events:
        if isinstance(event, DataReceived) and event.flow_controlled_length:
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    return events, ("events", norm(events)), conn.data_to_send()


def feed(
    ctrd: CtrdConnection,
    plain: H2Connection,
    stream: bytes,
    points: list[int],
    max_frame_size: int = 0,
    *,
    receivable: bool = True,
) -> Fed:
    """Feeds *stream* to both servers in reads ending at *points*, comparing them after every read.

    *max_frame_size*: the largest frame the servers accept once they read the start of the
    stream's large frames (by default: what they accept now). *receivable*: whether the
    stream's large DATA frames are on streams open for receiving whose windows take them
    (else Ctrd must gather none of them).
    """
    max_frame_size = max_frame_size or ctrd.max_inbound_frame_size
    direct = [f for f in frames_of(stream) if receivable and f.direct(max_frame_size)]
    fed, start = Fed(), 0
    for i, end in enumerate([*points, len(stream)]):
        chunk, start = stream[start:end], end
        c_events, c_result, c_out = read(ctrd, chunk)
        p_events, p_result, p_out = read(plain, chunk)
        if c_events is None and p_events is not None and c_result[1] == "FrameTooLargeError":
            # Ctrd refuses an overlong frame once its header is here; h2 once all of it is:
            # the same error, answered with the same GOAWAY, no later than h2
            _, p_result, p_out = read(plain, stream[end:])
            assert p_result == c_result, f"read {i}: h2 does not refuse what Ctrd refused early"
            assert p_out == c_out, f"read {i}: h2 answers the overlong frame differently"
            fed.sent += c_out
            fed.error = c_result
            break
        assert c_result == p_result, f"read {i} (bytes {end - len(chunk)}..{end})"
        assert c_out == p_out, f"read {i} (bytes {end - len(chunk)}..{end}): bytes to send"
        fed.sent += c_out
        if c_events is None or p_events is None:
            fed.error = c_result
            break
        fed.ctrd_data += [e for e in c_events if isinstance(e, DataReceived)]
        fed.plain_data += [e for e in p_events if isinstance(e, DataReceived)]
        gathering = [f for f in direct if f.offset + 9 < end < f.end]
        if gathering:
            (f,) = gathering
            assert ctrd._frame is not None, f"read {i}: not gathering the body of {f}"
            assert ctrd._frame.stream_id == f.stream_id
            assert len(ctrd._body) == f.length
            assert ctrd._filled == end - f.offset - 9
            assert bytes(ctrd._body[: ctrd._filled]) == stream[f.offset + 9 : end]
            assert ctrd.incoming_buffer._data == b""
            fed.gathering_reads += 1
        else:
            assert ctrd._frame is None, f"read {i}: gathering a body no split predicts"
    assert conn_state(ctrd) == conn_state(plain)
    if fed.error is None:
        assert ctrd.incoming_buffer._data == plain.incoming_buffer._data
    return fed


def check_data_types(fed: Fed, stream: bytes, points: list[int], max_frame_size: int) -> None:
    """Ctrd's data is a ``bytearray`` exactly for the large frames a read ended inside; h2's is bytes."""
    data_frames = [f for f in frames_of(stream) if f.type == DATA]
    assert len(fed.ctrd_data) == len(fed.plain_data) == len(data_frames)
    expected = [
        bytearray if f.direct(max_frame_size) and any(f.offset + 9 < p < f.end for p in points) else bytes
        for f in data_frames
    ]
    assert [type(e.data) for e in fed.ctrd_data] == expected
    assert {type(e.data) for e in fed.plain_data} <= {bytes}


# -- receive: valid streams -------------------------------------------------------------------

Sent = dict[int, bytes]  # what the client sent on each stream


def send(client: H2Connection, sent: Sent, sid: int, size: int, seed: int, **kw: Any) -> None:
    data = payload(size, seed)
    client.send_data(sid, data, **kw)
    sent[sid] = sent.get(sid, b"") + data


def sizes(client: H2Connection) -> Sent:
    """One stream: DATA frames of sizes around DIRECT_BODY_MIN up to the largest, then END_STREAM."""
    sent: Sent = {}
    client.send_headers(1, REQUEST)
    for i, n in enumerate([0, 1, 1000, DEFAULT_FRAME, BIG - 1, BIG, BIG + 1, MiB, MAX_FRAME_SIZE, 5, BIG]):
        send(client, sent, 1, n, i)
    send(client, sent, 1, BIG + 1, 99, end_stream=True)
    return sent


def padded(client: H2Connection) -> Sent:
    """Padded DATA frames (h2's path whatever their size) between unpadded ones."""
    sent: Sent = {}
    client.send_headers(1, REQUEST)
    send(client, sent, 1, BIG, 1, pad_length=0)
    send(client, sent, 1, BIG + 1, 2, pad_length=1)
    send(client, sent, 1, BIG, 3)
    send(client, sent, 1, MiB, 4, pad_length=255)
    send(client, sent, 1, 100, 5, pad_length=7)
    send(client, sent, 1, BIG + 3, 6)
    send(client, sent, 1, MAX_FRAME_SIZE - 256, 7, pad_length=255, end_stream=True)
    return sent


def interleaved(client: H2Connection) -> Sent:
    """Several streams; large DATA frames followed by every other kind of frame."""
    sent: Sent = {}
    for sid in (1, 3, 5):
        client.send_headers(sid, REQUEST)
    send(client, sent, 1, BIG + 7, 1)
    send(client, sent, 3, 10, 2)
    send(client, sent, 5, MiB, 3)
    client.ping(b"12345678")  # DATA then PING
    send(client, sent, 3, BIG, 4)
    client.increment_flow_control_window(1000)  # DATA then WINDOW_UPDATE (connection)
    send(client, sent, 1, BIG + 1, 5)
    client.increment_flow_control_window(500, stream_id=1)  # DATA then WINDOW_UPDATE (stream)
    send(client, sent, 1, 2 * BIG, 6, end_stream=True)
    client.send_headers(7, REQUEST)  # DATA then HEADERS
    send(client, sent, 7, 300 * KiB, 7)
    send(client, sent, 5, BIG + 1, 8)  # DATA then DATA on another stream
    send(client, sent, 3, BIG + 2, 9)
    client.update_settings({SettingCodes.HEADER_TABLE_SIZE: 8192})  # DATA then SETTINGS
    send(client, sent, 7, BIG, 10)
    client.reset_stream(3)  # DATA then RST_STREAM
    send(client, sent, 5, BIG + 3, 11)
    client.send_headers(5, TRAILERS, end_stream=True)  # DATA then trailers
    send(client, sent, 7, BIG + 4, 12, end_stream=True)
    client.ping(b"abcdefgh")
    return sent


def threshold(client: H2Connection) -> Sent:
    """Small enough to be read byte by byte: frames just under, at and over DIRECT_BODY_MIN."""
    sent: Sent = {}
    client.send_headers(1, REQUEST)
    send(client, sent, 1, 7, 1)
    send(client, sent, 1, BIG, 2)
    client.ping(b"12345678")
    send(client, sent, 1, BIG - 1, 3)
    send(client, sent, 1, 9, 4, end_stream=True)
    return sent


def run_valid(scenario: Callable[[H2Connection], Sent], kind: str) -> Fed:
    client, ctrd, plain = receive_handshake()
    sent = scenario(client)
    stream = client.data_to_send()
    points = cut_points(kind, stream)
    fed = feed(ctrd, plain, stream, points)
    assert fed.error is None
    check_data_types(fed, stream, points, MAX_FRAME_SIZE)
    received: Sent = {}
    for event in fed.ctrd_data:
        received[event.stream_id] = received.get(event.stream_id, b"") + bytes(event.data)
    assert received == {sid: data for sid, data in sent.items() if data}
    return fed


@pytest.mark.parametrize("kind", CUTS)
@pytest.mark.parametrize("scenario", [sizes, padded, interleaved], ids=lambda s: s.__name__)
def test_receive_matches_h2(scenario: Callable[[H2Connection], Sent], kind: str) -> None:
    fed = run_valid(scenario, kind)
    if kind in ("after-header+1", "into-next-header", "one-short"):  # every large unpadded body is cut
        assert any(type(e.data) is bytearray for e in fed.ctrd_data)
        assert fed.gathering_reads
    if kind in ("whole", "after-header"):  # no read ends inside a body (after-header: 9 bytes only)
        assert not fed.gathering_reads


@pytest.mark.parametrize("kind", ["bytes", "nines", "whole", "header-bytes", "random-4"])
def test_receive_threshold_read_by_read(kind: str) -> None:
    fed = run_valid(threshold, kind)
    if kind in ("bytes", "nines"):
        # the 64 KiB frame only (64 KiB - 1 and the small ones are h2's)
        assert [type(e.data) for e in fed.ctrd_data] == [bytes, bytearray, bytes, bytes]
        assert fed.gathering_reads == (BIG - 1 if kind == "bytes" else (BIG - 1) // 9)


def test_receive_settings_ack_with_large_frame() -> None:
    """The ACK raising the frame size, then a large frame in the same read: h2's quirk, kept.

    h2 checks a frame's length against the limit in force when the read began, so a
    complete large frame read together with the ACK of a larger limit is refused; Ctrd,
    gathering only frames h2 left incomplete, must refuse and accept exactly the same.
    """
    outcomes = set()
    for kind in ["whole", "after-header", "after-header+1", "header-bytes", "every-65536", "random-5"]:
        client, ctrd, plain = receive_servers()
        client.send_headers(1, REQUEST)
        client.send_data(1, payload(BIG + 1, 1))
        client.send_data(1, payload(MiB, 2), end_stream=True)
        stream = client.data_to_send()  # preamble, SETTINGS, ACK, HEADERS, DATA, DATA
        fed = feed(ctrd, plain, stream, cut_points(kind, stream), MAX_FRAME_SIZE)
        outcomes.add(fed.error is None)
        if kind == "every-65536":  # the first read: the ACK and the start of the first DATA frame
            assert fed.error is None
            assert fed.gathering_reads
        if kind == "whole":
            assert fed.error == (
                "raised",
                "FrameTooLargeError",
                f"Received overlong frame: length {BIG + 1}, max {DEFAULT_FRAME}",
            )
    assert outcomes == {True, False}


# -- receive: DATA frames h2 refuses or answers with RST_STREAM --------------------------------

ERROR_CUTS = [
    "whole",
    "after-header",
    "after-header+1",
    "header-bytes",
    "one-short",
    "every-16384",
    "random-6",
]


def opened(client: H2Connection, end_stream: bool = False) -> bytes:
    """HEADERS opening stream 1 (client's bytes)."""
    client.send_headers(1, REQUEST, end_stream=end_stream)
    return client.data_to_send()


def ping() -> bytes:
    return frame(0x6, 0, 0, b"pingpong")


@dataclasses.dataclass
class Case:
    """A byte stream to send after the handshake, and what both servers must do with it."""

    build: Callable[[H2Connection, CtrdConnection, H2Connection], bytes]
    error: str | None  # the exception type both raise, if any
    answer: bytes  # a frame both must queue (GOAWAY, RST_STREAM)
    # whether Ctrd gathers the body of the DATA frame in question when a read ends inside: only
    # on a stream open for receiving whose windows take it (nothing allocated for a frame h2 refuses)
    direct: bool
    max_frame_size: int = MAX_FRAME_SIZE
    window: int = WINDOW


def goaway(last_stream_id: int, code: ErrorCodes) -> bytes:
    return frame(0x7, 0, 0, last_stream_id.to_bytes(4, "big") + int(code).to_bytes(4, "big"))


def rst(stream_id: int, code: ErrorCodes) -> bytes:
    return frame(0x3, 0, stream_id, int(code).to_bytes(4, "big"))


def on_stream_0(client: H2Connection, *_: Any) -> bytes:
    return opened(client) + frame(DATA, 0, 0, payload(BIG + 1, 1)) + ping()


def overlong(client: H2Connection, *_: Any) -> bytes:
    return opened(client) + frame(DATA, 0, 1, payload(MAX_FRAME_SIZE + 1, 1)) + ping()


def overlong_default(client: H2Connection, *_: Any) -> bytes:
    return opened(client) + frame(DATA, 0, 1, payload(BIG, 1)) + ping()


def on_idle_stream(client: H2Connection, *_: Any) -> bytes:
    return opened(client) + frame(DATA, 0, 3, payload(BIG + 1, 1)) + ping()


def in_header_block(client: H2Connection, *_: Any) -> bytes:
    head = opened(client)
    client.send_headers(3, REQUEST)
    headers = bytearray(client.data_to_send())
    assert headers[3] == HEADERS
    assert headers[4] & END_HEADERS
    headers[4] &= ~END_HEADERS  # the block goes on ... but a DATA frame comes
    return head + bytes(headers) + frame(DATA, 0, 1, payload(BIG + 1, 1)) + ping()


def over_window(client: H2Connection, *_: Any) -> bytes:
    return opened(client) + frame(DATA, 0, 1, payload(BIG, 1)) + ping()


def half_closed(client: H2Connection, *_: Any) -> bytes:
    # END_STREAM came with the HEADERS: the stream is half-closed (remote) on the servers
    return opened(client, end_stream=True) + frame(DATA, 0, 1, payload(BIG + 1, 1)) + ping()


def closed(client: H2Connection, ctrd: CtrdConnection, plain: H2Connection) -> bytes:
    head = opened(client, end_stream=True)
    assert feed(ctrd, plain, head, []).error is None
    for server in (ctrd, plain):
        server.send_headers(1, RESPONSE)
        server.send_data(1, b"reply")
        server.send_headers(1, TRAILERS, end_stream=True)
    assert ctrd.data_to_send() == plain.data_to_send()
    return frame(DATA, END_STREAM, 1, payload(BIG + 1, 1)) + ping() + frame(DATA, 0, 1, payload(BIG, 2))


def reset(client: H2Connection, ctrd: CtrdConnection, plain: H2Connection) -> bytes:
    head = opened(client)
    assert feed(ctrd, plain, head, []).error is None
    for server in (ctrd, plain):
        server.reset_stream(1, ErrorCodes.CANCEL)
    assert ctrd.data_to_send() == plain.data_to_send()
    return frame(DATA, 0, 1, payload(BIG + 1, 1)) + ping() + frame(DATA, END_STREAM, 1, payload(BIG, 2))


CASES = {
    "stream-0": Case(on_stream_0, "ProtocolError", goaway(1, ErrorCodes.PROTOCOL_ERROR), False),
    "overlong": Case(overlong, "FrameTooLargeError", goaway(1, ErrorCodes.FRAME_SIZE_ERROR), False),
    "overlong-default": Case(
        overlong_default, "FrameTooLargeError", goaway(1, ErrorCodes.FRAME_SIZE_ERROR), False, DEFAULT_FRAME
    ),
    "idle-stream": Case(on_idle_stream, "NoSuchStreamError", goaway(1, ErrorCodes.PROTOCOL_ERROR), False),
    "header-block": Case(in_header_block, "ProtocolError", goaway(1, ErrorCodes.PROTOCOL_ERROR), False),
    "over-window": Case(
        over_window,
        "FlowControlError",
        goaway(1, ErrorCodes.FLOW_CONTROL_ERROR),
        False,
        window=DEFAULT_WINDOW,
    ),
    "half-closed": Case(half_closed, None, rst(1, ErrorCodes.STREAM_CLOSED), False),
    "closed": Case(closed, None, rst(1, ErrorCodes.STREAM_CLOSED), False),
    "reset": Case(reset, None, rst(1, ErrorCodes.STREAM_CLOSED), False),
}


@pytest.mark.parametrize("kind", ERROR_CUTS)
@pytest.mark.parametrize("name", list(CASES))
def test_receive_errors_match_h2(name: str, kind: str) -> None:
    case = CASES[name]
    client, ctrd, plain = receive_handshake(case.max_frame_size, case.window)
    stream = case.build(client, ctrd, plain)
    fed = feed(ctrd, plain, stream, cut_points(kind, stream), receivable=case.direct)
    if case.error is None:
        assert fed.error is None
    else:
        assert fed.error is not None, fed.error
        assert fed.error[1] == case.error, fed.error
        assert ctrd._frame is None
    assert case.answer in fed.sent
    if kind in ("after-header+1", "one-short"):  # a read ends inside the body
        assert bool(fed.gathering_reads) == case.direct
    if kind in ("whole", "after-header"):
        assert not fed.gathering_reads


# -- send ----------------------------------------------------------------------------------------


class Transport:
    """Records what is written to it: the calls as made, and the bytes in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.out = bytearray()

    def write(self, data: Any) -> None:
        self.calls.append(("write", (data,)))
        self.out += data

    def writelines(self, chunks: Iterable[Any]) -> None:
        chunks = tuple(chunks)
        self.calls.append(("writelines", chunks))
        for chunk in chunks:
            self.out += chunk


class AsyncioTransport(asyncio.Transport):
    """A recorder whose ``writelines`` is asyncio's own (``b"".join`` then ``write``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.out = bytearray()

    def write(self, data: Any) -> None:
        self.calls.append(("write", (data,)))
        self.out += data


@dataclasses.dataclass
class Side:
    """A server, the client it talks to, and what the server wrote so far."""

    server: H2Connection
    client: H2Connection
    transport: Transport | AsyncioTransport | None
    out: bytearray = dataclasses.field(default_factory=bytearray)  # the server's bytes, in order
    fed: int = 0  # how many of them the client has read
    events: list[Any] = dataclasses.field(default_factory=list)  # the client's, normalised
    received: Sent = dataclasses.field(default_factory=dict)  # the client's data, by stream

    def flush(self) -> None:
        """grpclib's ``Connection.flush``: h2's queued bytes to the transport."""
        data = self.server.data_to_send()
        if self.transport is None:
            self.out += data
        elif data:
            self.transport.write(data)  # self.out is the transport's

    def deliver(self) -> None:
        """The client reads what the server wrote, acknowledges the data, and its answer goes back."""
        events = self.client.receive_data(bytes(self.out[self.fed :]))
        self.fed = len(self.out)
        self.events.append(norm(events))
        for event in events:
            if isinstance(event, DataReceived):
                self.received[event.stream_id] = self.received.get(event.stream_id, b"") + bytes(event.data)
                if event.flow_controlled_length:
                    self.client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self.events.append(norm(self.server.receive_data(self.client.data_to_send())))


def send_side(ctrd: bool, transport: bool = True, window: int = 8 * MiB, asyncio_style: bool = False) -> Side:
    """A server past the handshake with a client (ctrd's frame size, *window*), streams 1, 3, 5, 7 open."""
    client = H2Connection(config=H2Configuration(client_side=True, header_encoding="ascii"))
    client.initiate_connection()
    client.increment_flow_control_window(window - DEFAULT_WINDOW)
    client.update_settings(
        {SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE, SettingCodes.INITIAL_WINDOW_SIZE: window}
    )
    for sid in (1, 3, 5, 7):
        client.send_headers(sid, REQUEST)
    side = server_side(client, ctrd, transport, asyncio_style)
    assert side.server.max_outbound_frame_size == MAX_FRAME_SIZE
    return side


def server_side(client: H2Connection, ctrd: bool, transport: bool, asyncio_style: bool) -> Side:
    """A server (Ctrd with a recording transport when *ctrd* and *transport*, else plain) past the
    handshake with *client*, whose first bytes it reads."""
    server = (CtrdConnection if ctrd else H2Connection)(config=server_config())
    recorder = AsyncioTransport() if asyncio_style else Transport()
    side = Side(server, client, recorder if ctrd and transport else None)
    if side.transport is not None:
        assert isinstance(server, CtrdConnection)
        server.use_transport(side.transport)  # as LargeFrameProtocol.connection_made
        side.out = side.transport.out
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    side.flush()
    side.deliver()
    side.deliver()  # the client's ACK of the server's settings
    return side


Op = tuple[Any, ...]


def apply(side: Side, op: Op) -> Any:
    """One call on the server (``("data", stream, size, seed, kind, kw)``, ``("flush",)`` ...)."""
    server = side.server
    match op:
        case ("data", sid, size, seed, kind, kw):
            data = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}[kind](
                payload(size, seed)
            )
            server.send_data(sid, data, **kw)
            return data
        case ("headers", sid, headers, kw):
            server.send_headers(sid, headers, **kw)
        case ("end", sid):
            server.end_stream(sid)
        case ("ping",):
            server.ping(b"\x01\x02\x03\x04\x05\x06\x07\x08")
        case ("window", sid, n):
            server.increment_flow_control_window(n, stream_id=sid or None)
        case ("settings",):
            server.update_settings({SettingCodes.HEADER_TABLE_SIZE: 2048})
        case ("reset", sid):
            server.reset_stream(sid, ErrorCodes.CANCEL)
        case ("flush",):
            side.flush()
            side.deliver()
        case _:
            raise AssertionError(op)
    return None


def data(sid: int, size: int, seed: int, kind: str = "bytes", **kw: Any) -> Op:
    return ("data", sid, size, seed, kind, kw)


def headers(sid: int, hdrs: Any = RESPONSE, **kw: Any) -> Op:
    return ("headers", sid, hdrs, kw)


FLUSH: Op = ("flush",)

SEND_OPS: list[Op] = [
    headers(1),
    FLUSH,
    *[
        op
        for i, n in enumerate([0, 1, 1000, BIG - 1, BIG, BIG + 1, MiB, MAX_FRAME_SIZE])
        for op in (data(1, n, i), FLUSH)
    ],
    data(1, BIG, 10, "bytearray"),
    FLUSH,
    data(1, BIG + 5, 11, "memoryview"),
    FLUSH,
    # frames queued before a large one (one writelines: them, the header, the payload)
    headers(3),
    ("ping",),
    ("window", 0, 1000),
    ("window", 1, 500),
    data(3, MiB, 12),
    data(3, BIG, 13),  # ... and a large one right after it, with nothing queued
    data(1, 100, 14),
    FLUSH,
    headers(5),
    data(5, BIG + 1, 15, end_stream=True),
    FLUSH,
    data(3, BIG - 1, 16, pad_length=1),
    data(3, BIG + 3, 17, pad_length=1),
    data(3, 200 * KiB, 18, pad_length=255),
    data(3, 7, 19, pad_length=0),
    FLUSH,
    ("settings",),
    data(3, 2 * BIG, 20, "bytearray"),
    headers(3, TRAILERS, end_stream=True),
    data(1, MiB + 17, 21, end_stream=True),
    FLUSH,
    headers(7),
    data(7, BIG, 22),
    ("reset", 7),
    FLUSH,
]


def run_send(ops: list[Op], transport: bool = True, asyncio_style: bool = False) -> tuple[Side, Side]:
    """*ops* on a Ctrd server and on a plain one; everything compared after every call."""
    ctrd, plain = send_side(True, transport, asyncio_style=asyncio_style), send_side(False)
    assert ctrd.out == plain.out
    assert ctrd.events == plain.events
    sent: Sent = {}
    for i, op in enumerate(ops):
        calls = len(ctrd.transport.calls) if ctrd.transport else 0
        queued = bytes(ctrd.server._data_to_send)
        payload_c, payload_p = apply(ctrd, op), apply(plain, op)
        where = f"op {i}: {op[:4]}"
        # written so far, then queued in h2: the same bytes in the same order
        assert ctrd.out + ctrd.server._data_to_send == plain.out + plain.server._data_to_send, where
        if op == FLUSH:
            assert ctrd.out == plain.out, where
        assert ctrd.events == plain.events, where
        assert conn_state(ctrd.server) == conn_state(plain.server), where
        assert {sid: ctrd.server.local_flow_control_window(sid) for sid in ctrd.server.streams} == {
            sid: plain.server.local_flow_control_window(sid) for sid in plain.server.streams
        }, where
        if op[0] != "data":
            continue
        sent[op[1]] = sent.get(op[1], b"") + bytes(payload_p)
        size, kw = op[2], op[5]
        if ctrd.transport is None or size < BIG or "pad_length" in kw:
            assert len(ctrd.transport.calls if ctrd.transport else ()) == calls, f"{where}: written directly"
            continue
        flags = END_STREAM if kw.get("end_stream") else 0
        if asyncio_style:
            # asyncio's writelines would join (copy): two writes, the payload as a view of itself
            assert len(ctrd.transport.calls) == calls + 2, where
            (name1, (head,)), (name2, (body,)) = ctrd.transport.calls[-2:]
            assert name1 == name2 == "write"
            assert isinstance(body, memoryview)
            assert bytes(head) == queued + frame_header(size, DATA, flags, op[1])
            if not isinstance(payload_c, memoryview):
                assert body.obj is payload_c, f"{where}: the payload was copied"
            assert bytes(body) == bytes(payload_c)
            assert ctrd.server._data_to_send == b""
            continue
        # one writelines: what h2 had queued and the frame header, then the payload object itself
        assert len(ctrd.transport.calls) == calls + 1, where
        name, (head, body) = ctrd.transport.calls[-1]
        assert name == "writelines"
        assert bytes(head) == queued + frame_header(size, DATA, flags, op[1])
        if isinstance(payload_c, memoryview):
            assert bytes(body) == bytes(payload_c)  # h2's H2Stream.send_data copies a memoryview
        else:
            assert body is payload_c, f"{where}: the payload was copied"
        assert ctrd.server._data_to_send == b""
    for side in (ctrd, plain):
        side.flush()
        side.deliver()
    assert ctrd.out == plain.out
    assert ctrd.events == plain.events
    assert ctrd.received == plain.received == {sid: d for sid, d in sent.items() if d}
    return ctrd, plain


@pytest.mark.parametrize("transport", [True, False], ids=["transport", "no-transport"])
def test_send_matches_h2(transport: bool) -> None:
    ctrd, _ = run_send(SEND_OPS, transport)
    if transport:
        assert ctrd.transport is not None
        direct = [c for c in ctrd.transport.calls if c[0] == "writelines"]
        expected = [op for op in SEND_OPS if op[0] == "data" and op[2] >= BIG and "pad_length" not in op[5]]
        assert len(direct) == len(expected)


def test_send_matches_h2_through_asyncio_writelines() -> None:
    """A transport whose writelines is asyncio's (join + write) gets two writes instead."""
    ctrd, _ = run_send(SEND_OPS, asyncio_style=True)
    assert ctrd.transport is not None
    assert not any(c[0] == "writelines" for c in ctrd.transport.calls)


@pytest.mark.parametrize("seed", range(6))
def test_send_random_matches_h2(seed: int) -> None:
    """Random interleavings of large and small frames, flushes and other frames."""
    rng = random.Random(seed)
    ops: list[Op] = [headers(1), headers(3), headers(5)]
    for i in range(60):
        sid = rng.choice((1, 3, 5))
        r = rng.random()
        if r < 0.5:
            size = rng.choice((0, 1, 100, DEFAULT_FRAME, BIG - 1, BIG, BIG + 1, 3 * BIG, 512 * KiB))
            kw: dict[str, Any] = {"pad_length": rng.randrange(1, 256)} if rng.random() < 0.2 else {}
            ops.append(
                data(sid, size, 100 + i, rng.choice(("bytes", "bytes", "bytearray", "memoryview")), **kw)
            )
        elif r < 0.6:
            ops.append(("ping",))
        elif r < 0.7:
            ops.append(("window", rng.choice((0, sid)), rng.randrange(1, 10000)))
        else:
            ops.append(FLUSH)
    ops += [data(1, BIG, 1, end_stream=True), ("end", 3), headers(5, TRAILERS, end_stream=True), FLUSH]
    run_send(ops)


def test_send_zero_padding_matches_h2() -> None:
    """``pad_length=0``: a PADDED frame with no padding (h2: "the padding flag set on the frame").

    h2 sends the PADDED flag and a one-byte Pad Length field of 0, and counts
    ``len(data) + 1`` against the windows. ``_prepare_for_sending`` tests
    ``not frame.pad_length`` (0 is false) and writes the frame unpadded: one byte
    shorter, without the flag; the peer then consumes one byte less of its windows
    than this side counted.
    """
    ctrd, plain = send_side(True), send_side(False)
    body = payload(BIG, 1)
    written = []
    for side in (ctrd, plain):
        apply(side, headers(1))
        side.flush()
        start = len(side.out)
        side.server.send_data(1, body, pad_length=0)
        side.flush()
        written.append(bytes(side.out[start:]))
    assert written[1] == frame(DATA, PADDED, 1, b"\0" + body)  # h2: PADDED, a Pad Length of 0
    assert written[0][:10] == written[1][:10]  # the frame header and the Pad Length field
    assert written[0] == written[1]
    run_send([headers(1), FLUSH, data(1, BIG, 1, pad_length=0), FLUSH, data(1, MiB, 2, pad_length=0), FLUSH])
