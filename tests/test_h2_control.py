"""``ctrd.wire._h2.CtrdConnection``'s own DATA, WINDOW_UPDATE and PING frames against plain h2, read for read.

``CtrdConnection.receive_data`` takes complete WINDOW_UPDATE and PING frames
(``_control``) and unpadded DATA frames (``_data``) itself and gives the runs of
other frames between them to h2. Here a plain
h2 peer (a client in front of two servers, or a server in front of two clients
built as the ctrd SDK builds its own) writes a byte stream; a ``CtrdConnection``
and a plain :class:`~h2.connection.H2Connection` built alike read it, split the
same way (whole, frame by frame, byte by byte, every 9 bytes, right after every
frame header, random splits), each read given as ``bytes``, ``bytearray`` or
``memoryview``. After every read both must

* return the same events (normalised), or raise the same exception (type,
  message and error code);
* queue the same bytes, in the same order (``data_to_send()``);
* be in the same state: the connection's and its streams' states and
  flow-control windows, settings (pending values included), each stream's
  ``closed_by`` and those of the streams h2 forgot, the header block and the
  preamble in progress, and the bytes of an incomplete frame (in h2's buffer,
  or a large DATA body in Ctrd's own).

A ``bytearray`` or ``memoryview`` read is overwritten once both have read it
(and before their events are compared), so nothing may keep a reference to it.
Which frames ``_control`` was offered and whether it took them is recorded: the
plain valid WINDOW_UPDATE and PING frames must be taken there (except in a read
holding a SETTINGS frame, which may change h2's frame-size limit for the read and
goes to h2 whole); what h2 answers with an error is left to h2, or answered as h2
does (the same GOAWAY, the rest of the read kept buffered).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from ctrd.wire._h2 import DIRECT_BODY_MIN, MAX_FRAME_SIZE, CtrdConnection

from ._h2config import grpclib_h2_config
from .test_h2_direct import (
    PREAMBLE,
    REQUEST,
    RESPONSE,
    TRAILERS,
    conn_state,
    cut_points,
    frame,
    frame_header,
    frames_of,
    goaway,
    norm,
    payload,
    rst,
    server_config,
)

KiB = 1 << 10
MiB = 1 << 20
BIG = DIRECT_BODY_MIN  # the smallest DATA frame whose body Ctrd gathers itself
DEFAULT_WINDOW = 65535  # HTTP/2's initial windows
DEFAULT_FRAME = 16 * KiB  # HTTP/2's initial SETTINGS_MAX_FRAME_SIZE
WINDOW = 4 * MiB  # grpclib's default windows
MAX_WINDOW = (1 << 31) - 1
HIGH_BIT = 1 << 31  # the reserved bit of a stream id and of a window increment
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
OPAQUE = bytes(range(1, 9))
SETTINGS_ACK = frame(SETTINGS, ACK, 0, b"")


class Counted(CtrdConnection):
    """A ``CtrdConnection`` recording what ``_control`` answered, frame by frame: ``(type, taken)``.

    ``taken`` is ``None`` when ``_control`` raised.
    """

    def __init__(self, config: H2Configuration) -> None:
        super().__init__(config)
        self.offered: list[tuple[int, bool | None]] = []

    def _control(self, data: Any, pos: int, kind: int, events: list[Any]) -> bool:
        try:
            taken = super()._control(data, pos, kind, events)
        except BaseException:
            self.offered.append((kind, None))
            raise
        self.offered.append((kind, taken))
        return taken


def offers(spec: str) -> list[tuple[int, bool | None]]:
    """``"W+ P-"``: a WINDOW_UPDATE taken, then a PING left to h2."""
    kinds = {"W": WINDOW_UPDATE, "P": PING}
    return [(kinds[s[0]], {"+": True, "-": False, "!": None}[s[1]]) for s in spec.split()]


# -- raw frames ----------------------------------------------------------------------------------


def wu(stream_id: int, increment: int, flags: int = 0) -> bytes:
    return frame(WINDOW_UPDATE, flags, stream_id, increment.to_bytes(4, "big"))


def ping(opaque: bytes = OPAQUE, flags: int = 0, stream_id: int = 0) -> bytes:
    return frame(PING, flags, stream_id, opaque)


def ping_ack(opaque: bytes = OPAQUE) -> bytes:
    """The ACK a connection answers a PING with."""
    return frame(PING, ACK, 0, opaque)


def controls(stream: bytes) -> int:
    """How many WINDOW_UPDATE and PING frames of the right length *stream* holds."""
    return sum(
        (f.type == WINDOW_UPDATE and f.length == 4) or (f.type == PING and f.length == 8)
        for f in frames_of(stream)
    )


# -- state -----------------------------------------------------------------------------------------


def full_state(conn: H2Connection) -> tuple[Any, ...]:
    """:func:`conn_state`, and what else a read may change (except the bytes of an incomplete frame)."""
    buf = conn.incoming_buffer
    return (
        conn_state(conn),
        tuple((sid, s.closed_by, s.state_machine.headers_sent) for sid, s in sorted(conn.streams.items())),
        tuple(sorted(conn._closed_streams.items())),
        tuple((k, tuple(v)) for k, v in sorted(conn.local_settings._settings.items())),
        tuple((k, tuple(v)) for k, v in sorted(conn.remote_settings._settings.items())),
        buf._preamble_len,
        tuple((type(f).__name__, f.stream_id) for f in buf._headers_buffer),
    )


def pending(conn: H2Connection) -> bytes:
    """The bytes of the incomplete frame *conn* holds (Ctrd: maybe a large DATA body in its own buffer)."""
    if isinstance(conn, CtrdConnection) and conn._frame is not None:
        assert not conn.incoming_buffer._data
        flags = END_STREAM if "END_STREAM" in conn._frame.flags else 0
        head = frame_header(len(conn._body), DATA, flags, conn._frame.stream_id)
        return head + bytes(conn._body[: conn._filled])
    return bytes(conn.incoming_buffer._data)


# -- reading -------------------------------------------------------------------------------------

READ_TYPES = ("bytes", "bytearray", "memoryview")


@dataclasses.dataclass
class Fed:
    """What reading a byte stream showed (the same on both sides)."""

    results: list[Any] = dataclasses.field(default_factory=list)  # per read, normalised
    names: list[str] = dataclasses.field(default_factory=list)  # the events' types, read after read
    sent: bytearray = dataclasses.field(default_factory=bytearray)  # what both queued, read after read
    error: Any = None  # ("raised", type, message, error code) of the read that raised
    data_types: list[type] = dataclasses.field(default_factory=list)  # Ctrd's DataReceived.data types


def read(conn: H2Connection, chunk: Any) -> tuple[list[Any] | None, Any]:
    """One read as grpclib's ``data_received`` does it (data acknowledged at once): events, or the error."""
    try:
        events = conn.receive_data(chunk)
    except ProtocolError as exc:
        return None, ("raised", type(exc).__name__, str(exc), norm(exc.error_code))
    for event in events:
        if isinstance(event, DataReceived) and event.flow_controlled_length:
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    return events, None


def scribble(chunk: Any) -> None:
    """Overwrites a read's buffer, as a transport reusing it would."""
    if isinstance(chunk, (bytearray, memoryview)):
        chunk[:] = b"\xaa" * len(chunk)


@dataclasses.dataclass
class Pair:
    """A Ctrd connection and a plain one built alike, and the plain peer writing to both."""

    peer: H2Connection
    ctrd: Counted
    plain: H2Connection

    def both(self, call: Callable[[H2Connection], Any], deliver: bool = True) -> bytes:
        """The same call on both: they must queue the same bytes (the peer reads them) and agree after."""
        for conn in (self.ctrd, self.plain):
            call(conn)
        out = self.ctrd.data_to_send()
        assert out == self.plain.data_to_send()
        assert full_state(self.ctrd) == full_state(self.plain)
        if deliver and out:
            self.peer.receive_data(out)
        return out

    def feed(
        self, stream: bytes, points: Sequence[int] = (), as_type: str = "bytes", after_error: bool = False
    ) -> Fed:
        """Both read *stream* in reads ending at *points*, compared after every read.

        *as_type*: one of :data:`READ_TYPES`, or ``"mixed"`` (them in turn). Stops at the
        first read that raises, unless *after_error*.
        """
        copies = (bytearray(stream), bytearray(stream))  # what the memoryview reads view
        fed, start = Fed(), 0
        for i, end in enumerate([*points, len(stream)]):
            kind = READ_TYPES[i % 3] if as_type == "mixed" else as_type
            where = f"read {i} (bytes {start}..{end} as {kind})"
            if kind == "bytes":
                chunks: tuple[Any, Any] = (stream[start:end], stream[start:end])
            elif kind == "bytearray":
                chunks = (bytearray(stream[start:end]), bytearray(stream[start:end]))
            else:
                chunks = (memoryview(copies[0])[start:end], memoryview(copies[1])[start:end])
            c_events, c_error = read(self.ctrd, chunks[0])
            p_events, p_error = read(self.plain, chunks[1])
            for chunk in chunks:
                scribble(chunk)
            c_result = c_error or ("events", norm(c_events))
            p_result = p_error or ("events", norm(p_events))
            assert c_result == p_result, where
            c_out, p_out = self.ctrd.data_to_send(), self.plain.data_to_send()
            assert c_out == p_out, f"{where}: bytes to send"
            assert full_state(self.ctrd) == full_state(self.plain), f"{where}: state"
            # after an error both keep the rest of the read buffered
            assert pending(self.ctrd) == pending(self.plain), f"{where}: buffered bytes"
            fed.results.append(c_result)
            fed.sent += c_out
            if c_events is not None:
                fed.names += [type(e).__name__ for e in c_events]
                fed.data_types += [type(e.data) for e in c_events if isinstance(e, DataReceived)]
            else:
                fed.error = c_error
                if not after_error:
                    break
            start = end
        return fed


def start_server(conn: H2Connection) -> None:
    """As ``LargeFrameProtocol.connection_made``: ctrd's frame size, grpclib's windows."""
    conn.initiate_connection()
    conn.increment_flow_control_window(WINDOW - DEFAULT_WINDOW)
    conn.update_settings(
        {SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE, SettingCodes.INITIAL_WINDOW_SIZE: WINDOW}
    )


def fresh_server_pair() -> Pair:
    """Two servers (Ctrd, plain) that sent their settings, and a client that read them; nothing read yet."""
    peer = H2Connection(config=H2Configuration(client_side=True))
    peer.initiate_connection()
    pair = Pair(peer, Counted(server_config()), H2Connection(config=server_config()))
    pair.both(start_server)
    return pair


def server_pair(streams: Sequence[int] = (1,), end_stream: bool = False) -> Pair:
    """Two servers past the handshake, the client's requests on *streams* read."""
    pair = fresh_server_pair()
    for sid in streams:
        pair.peer.send_headers(sid, REQUEST, end_stream=end_stream)
    fed = pair.feed(pair.peer.data_to_send())
    assert fed.error is None
    pair.peer.receive_data(bytes(fed.sent))
    pair.ctrd.offered.clear()
    return pair


def client_pair(streams: Sequence[int] = (1, 3), end_stream: bool = False) -> Pair:
    """Two SDK-style clients (Ctrd, plain) past the handshake with a plain server, requests on *streams*."""
    peer = H2Connection(config=server_config())
    peer.initiate_connection()
    config = grpclib_h2_config(client_side=True)
    pair = Pair(peer, Counted(config), H2Connection(config=config))

    def start(conn: H2Connection) -> None:
        start_server(conn)  # the same settings as the server's
        for sid in streams:
            conn.send_headers(sid, REQUEST, end_stream=end_stream)

    pair.both(start)
    fed = pair.feed(peer.data_to_send())  # the server's SETTINGS and its ACKs of the clients'
    assert fed.error is None
    peer.receive_data(bytes(fed.sent))
    assert peer.max_outbound_frame_size == MAX_FRAME_SIZE
    pair.ctrd.offered.clear()
    return pair


class Writer:
    """A byte stream from the peer's own calls and raw frames, in order."""

    def __init__(self, peer: H2Connection) -> None:
        self.peer = peer
        self.out = bytearray()

    def raw(self, data: bytes) -> None:
        self.out += self.peer.data_to_send()
        self.out += data

    def done(self) -> bytes:
        self.out += self.peer.data_to_send()
        return bytes(self.out)


def points_of(kind: str, stream: bytes) -> list[int]:
    """:func:`cut_points`, and ``"frames"``: every frame (and the preamble) a read of its own."""
    if kind == "frames":
        return sorted({f.offset for f in frames_of(stream)} - {0})
    return cut_points(kind, stream)


def expect_raise(
    call: Callable[[H2Connection], Any], error: type[BaseException]
) -> Callable[[H2Connection], None]:
    def run(conn: H2Connection) -> None:
        with pytest.raises(error):
            call(conn)

    return run


# -- single cases ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """A byte stream read after some setup, and what both connections must do with it."""

    build: Callable[[], tuple[Pair, bytes]]
    error: str | None  # the exception both raise, if any
    answer: bytes = b""  # what both queue, exactly (or, with an error, at least)
    taken: str = ""  # what _control answered, frame by frame, when every frame is read whole (offers)
    events: tuple[str, ...] = ()  # the events' types, without an error


def on_server(
    stream: bytes, streams: Sequence[int] = (1,), end_stream: bool = False
) -> Callable[[], tuple[Pair, bytes]]:
    return lambda: (server_pair(streams, end_stream), stream)


def on_client(stream: bytes, streams: Sequence[int] = (1, 3)) -> Callable[[], tuple[Pair, bytes]]:
    return lambda: (client_pair(streams), stream)


def respond(conn: H2Connection, sid: int = 1, end: bool = True) -> None:
    conn.send_headers(sid, RESPONSE)
    conn.send_data(sid, b"reply")
    conn.send_headers(sid, TRAILERS, end_stream=end)


def forget(conn: H2Connection) -> None:
    """Reading ``open_inbound_streams`` makes h2 delete its closed streams."""
    assert conn.open_inbound_streams >= 0


def closed_by_end(forgotten: bool) -> Callable[[], tuple[Pair, bytes]]:
    def build() -> tuple[Pair, bytes]:
        pair = server_pair(end_stream=True)
        pair.both(respond)
        if forgotten:
            pair.both(forget)
        assert (1 in pair.ctrd.streams) is not forgotten
        return pair, wu(1, 1000) + ping()

    return build


def reset_by_server(forgotten: bool) -> Callable[[], tuple[Pair, bytes]]:
    def build() -> tuple[Pair, bytes]:
        pair = server_pair()
        pair.both(lambda c: c.reset_stream(1, ErrorCodes.CANCEL))
        if forgotten:
            pair.both(forget)
        assert (1 in pair.ctrd.streams) is not forgotten
        return pair, wu(1, 1000) + ping()

    return build


def half_closed_local() -> tuple[Pair, bytes]:
    pair = server_pair()
    pair.both(lambda c: c.send_headers(1, RESPONSE, end_stream=True))
    return pair, wu(1, 1000) + wu(0, 5)


def reserved_local() -> tuple[Pair, bytes]:
    pair = server_pair()
    pair.both(lambda c: c.push_stream(1, 2, REQUEST))
    return pair, wu(2, 1000) + ping()


def idle_in_streams() -> tuple[Pair, bytes]:
    """A stream h2 created but never opened: an informational response with END_STREAM is refused."""
    pair = server_pair()
    pair.both(expect_raise(lambda c: c.send_headers(2, [(":status", "100")], end_stream=True), ProtocolError))
    assert pair.ctrd.streams[2].state_machine.state.name == "IDLE"
    return pair, wu(2, 1000) + ping()


def header_block(pair: Pair, sid: int, headers: Any = REQUEST) -> tuple[bytes, bytes]:
    """A HEADERS frame of the peer's opening a header block on *sid*, and the CONTINUATION ending it."""
    pair.peer.send_headers(sid, headers)
    whole = pair.peer.data_to_send()
    assert whole[3] == HEADERS
    assert whole[4] & END_HEADERS
    block = whole[9:]
    first, rest = block[:3], block[3:]
    return frame(HEADERS, whole[4] & ~END_HEADERS, sid, first), frame(CONTINUATION, END_HEADERS, sid, rest)


def in_header_block(control: bytes, client: bool = False) -> Callable[[], tuple[Pair, bytes]]:
    def build() -> tuple[Pair, bytes]:
        pair = client_pair() if client else server_pair()
        opening, closing = header_block(pair, 1 if client else 3, RESPONSE if client else REQUEST)
        return pair, opening + control + closing

    return build


def after_continuation() -> tuple[Pair, bytes]:
    pair = server_pair()
    opening, closing = header_block(pair, 3)
    return pair, opening + closing + ping() + wu(3, 10)


def after_peer_goaway(control: bytes) -> Callable[[], tuple[Pair, bytes]]:
    return lambda: (server_pair(), goaway(0, ErrorCodes.NO_ERROR) + control)


def after_local_close(control: bytes, client: bool = False) -> Callable[[], tuple[Pair, bytes]]:
    def build() -> tuple[Pair, bytes]:
        pair = client_pair() if client else server_pair()
        pair.both(lambda c: c.close_connection())
        return pair, control

    return build


def with_settings() -> tuple[Pair, bytes]:
    pair = server_pair()
    w = Writer(pair.peer)
    pair.peer.update_settings({SettingCodes.HEADER_TABLE_SIZE: 8192})
    w.raw(ping(b"first..."))
    pair.peer.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 50})
    w.raw(ping(b"second.."))
    return pair, w.done()


def client_ping_ack() -> tuple[Pair, bytes]:
    pair = client_pair()
    pair.both(lambda c: c.ping(OPAQUE))
    return pair, pair.peer.data_to_send()  # the server's own ACK


def client_closed(forgotten: bool) -> Callable[[], tuple[Pair, bytes]]:
    def build() -> tuple[Pair, bytes]:
        pair = client_pair()
        pair.both(lambda c: c.end_stream(1))
        respond(pair.peer)
        assert pair.feed(pair.peer.data_to_send()).error is None
        if forgotten:
            pair.both(lambda c: c.open_outbound_streams)
        assert (1 in pair.ctrd.streams) is not forgotten
        pair.ctrd.offered.clear()
        return pair, wu(1, 10) + ping()

    return build


def client_reset() -> tuple[Pair, bytes]:
    pair = client_pair()
    pair.both(lambda c: c.reset_stream(1))
    return pair, wu(1, 10) + ping()


def client_reserved_remote() -> tuple[Pair, bytes]:
    pair = client_pair()
    pair.peer.push_stream(1, 2, REQUEST)
    return pair, pair.peer.data_to_send() + wu(2, 10) + wu(0, 10)


def client_idle_in_streams() -> tuple[Pair, bytes]:
    """A stream h2 created but never opened: a malformed header list is refused after that."""
    pair = client_pair()
    malformed: Any = [(":method",)]  # a name without a value
    pair.both(expect_raise(lambda c: c.send_headers(5, malformed), IndexError))
    assert pair.ctrd.streams[5].state_machine.state.name == "IDLE"
    return pair, wu(5, 1000) + ping()


def client_idle_ping() -> tuple[Pair, bytes]:
    pair = client_pair(streams=())
    assert pair.ctrd.state_machine.state is ConnectionState.IDLE
    return pair, ping() + wu(0, 10)


def server_idle_ping() -> tuple[Pair, bytes]:
    pair = server_pair(streams=())
    assert pair.ctrd.state_machine.state is ConnectionState.IDLE
    return pair, ping() + wu(0, 10)


PROTOCOL = goaway(1, ErrorCodes.PROTOCOL_ERROR)
FRAME_SIZE = goaway(1, ErrorCodes.FRAME_SIZE_ERROR)
WU, PI = ("WindowUpdated",), ("PingReceived",)

CASES: dict[str, Case] = {
    # WINDOW_UPDATE on stream 0
    "conn-window": Case(on_server(wu(0, 1000) + wu(0, 1)), None, b"", "W+ W+", WU * 2),
    "conn-window-to-max": Case(on_server(wu(0, MAX_WINDOW - DEFAULT_WINDOW)), None, b"", "W+", WU),
    "conn-window-over-max": Case(
        on_server(wu(0, MAX_WINDOW - DEFAULT_WINDOW) + wu(0, 1) + ping()),
        "FlowControlError",
        goaway(1, ErrorCodes.FLOW_CONTROL_ERROR),
        "W+ W-",
    ),
    "conn-window-overflow": Case(
        on_server(wu(0, MAX_WINDOW) + ping()),
        "FlowControlError",
        goaway(1, ErrorCodes.FLOW_CONTROL_ERROR),
        "W-",
    ),
    "conn-increment-0": Case(on_server(wu(0, 0) + ping()), "ProtocolError", PROTOCOL, "W-"),
    "conn-increment-high-bit": Case(
        on_server(wu(0, HIGH_BIT | 1000) + ping()), "ProtocolError", PROTOCOL, "W-"
    ),
    "conn-increment-high-bit-only": Case(
        on_server(wu(0, HIGH_BIT) + ping()), "ProtocolError", PROTOCOL, "W-"
    ),
    "stream-id-high-bit": Case(
        on_server(wu(HIGH_BIT | 1, 1000) + wu(HIGH_BIT, 7) + ping(stream_id=HIGH_BIT)),
        None,
        ping_ack(),
        "W+ W+ P+",
        WU * 2 + PI,
    ),
    "window-update-flags": Case(on_server(wu(0, 10, 0xFF) + wu(1, 10, 0xFE)), None, b"", "W+ W+", WU * 2),
    # WINDOW_UPDATE on a stream
    "open-stream": Case(on_server(wu(1, 1000)), None, b"", "W+", WU),
    "stream-to-max": Case(on_server(wu(1, MAX_WINDOW - DEFAULT_WINDOW)), None, b"", "W+", WU),
    "stream-increment-0": Case(on_server(wu(1, 0) + ping()), "ProtocolError", PROTOCOL, "W-"),
    "stream-increment-high-bit": Case(
        on_server(wu(1, HIGH_BIT | 1000) + ping()), "ProtocolError", PROTOCOL, "W-"
    ),
    "stream-overflow": Case(
        on_server(wu(1, MAX_WINDOW) + ping() + wu(1, 5) + frame(DATA, 0, 1, b"x")),
        None,
        rst(1, ErrorCodes.FLOW_CONTROL_ERROR) + ping_ack() + rst(1, ErrorCodes.STREAM_CLOSED),
        "W+ P+ W+",
        ("StreamReset", "PingReceived"),
    ),
    "half-closed-remote": Case(on_server(wu(1, 1000), end_stream=True), None, b"", "W+", WU),
    "half-closed-local": Case(half_closed_local, None, b"", "W+ W+", WU * 2),
    "closed-by-end": Case(closed_by_end(False), None, ping_ack(), "W+ P+", PI),
    "closed-by-end-forgotten": Case(closed_by_end(True), None, ping_ack(), "W+ P+", PI),
    "reset-by-server": Case(reset_by_server(False), None, ping_ack(), "W+ P+", PI),
    "reset-by-server-forgotten": Case(reset_by_server(True), None, ping_ack(), "W+ P+", PI),
    "reset-by-peer": Case(
        on_server(rst(1, ErrorCodes.CANCEL) + wu(1, 1000) + ping()),
        None,
        ping_ack(),
        "W+ P+",
        ("StreamReset", *PI),
    ),
    "implicitly-closed": Case(on_server(wu(3, 1000) + ping(), streams=(1, 5)), None, ping_ack(), "W+ P+", PI),
    "reserved-local": Case(reserved_local, None, ping_ack(), "W+ P+", WU + PI),
    "idle-inbound": Case(on_server(wu(3, 1000) + ping()), "NoSuchStreamError", PROTOCOL, "W-"),
    "idle-outbound": Case(on_server(wu(2, 1000) + ping()), "NoSuchStreamError", PROTOCOL, "W-"),
    "idle-in-streams": Case(idle_in_streams, "ProtocolError", PROTOCOL, "W!"),
    # PING
    "ping": Case(on_server(ping()), None, ping_ack(), "P+", PI),
    "ping-ack": Case(on_server(ping(flags=ACK)), None, b"", "P+", ("PingAckReceived",)),
    "ping-flags": Case(
        on_server(ping(flags=0xFE) + ping(b"ABCDEFGH", flags=0xFF)),
        None,
        ping_ack(),
        "P+ P+",
        ("PingReceived", "PingAckReceived"),
    ),
    "ping-on-stream": Case(
        on_server(ping() + ping(stream_id=1)), "ProtocolError", ping_ack() + PROTOCOL, "P+ P-"
    ),
    "ping-ack-on-stream": Case(on_server(ping(flags=ACK, stream_id=3)), "ProtocolError", PROTOCOL, "P-"),
    "server-idle": Case(server_idle_ping, None, ping_ack(), "P- W-", PI + WU),
    "with-settings": Case(
        with_settings,
        None,
        SETTINGS_ACK + ping_ack(b"first...") + SETTINGS_ACK + ping_ack(b"second.."),
        "P+ P+",
        ("RemoteSettingsChanged", "PingReceived", "RemoteSettingsChanged", "PingReceived"),
    ),
    # lengths h2 refuses (never offered to _control)
    **{
        f"window-update-length-{n}": Case(
            on_server(ping() + frame(WINDOW_UPDATE, 0, 0, bytes(max(n - 1, 0)) + b"\1"[:n])),
            "FrameDataMissingError",
            ping_ack() + FRAME_SIZE,
            "P+",
        )
        for n in (0, 3, 5, 8)
    },
    **{
        f"ping-length-{n}": Case(
            on_server(ping() + frame(PING, 0, 0, bytes(n))),
            "FrameDataMissingError",
            ping_ack() + FRAME_SIZE,
            "P+",
        )
        for n in (0, 7, 9, 16)
    },
    # inside a header block, after one
    "ping-in-header-block": Case(in_header_block(ping()), "ProtocolError", PROTOCOL, "P-"),
    "window-update-in-header-block": Case(in_header_block(wu(1, 10)), "ProtocolError", PROTOCOL, "W-"),
    "conn-window-update-in-header-block": Case(in_header_block(wu(0, 10)), "ProtocolError", PROTOCOL, "W-"),
    "after-continuation": Case(after_continuation, None, ping_ack(), "P+ W+", ("RequestReceived", *PI, *WU)),
    # on a closed connection
    "ping-after-peer-goaway": Case(after_peer_goaway(ping()), "ProtocolError", PROTOCOL, "P-"),
    "window-update-after-peer-goaway": Case(after_peer_goaway(wu(0, 10)), "ProtocolError", PROTOCOL, "W-"),
    "ping-after-local-close": Case(after_local_close(ping()), "ProtocolError", PROTOCOL, "P-"),
    "window-update-after-local-close": Case(after_local_close(wu(1, 10)), "ProtocolError", PROTOCOL, "W-"),
    # the client side (the ctrd SDK)
    "client-ping": Case(on_client(ping()), None, ping_ack(), "P+", PI),
    "client-ping-ack": Case(client_ping_ack, None, b"", "P+", ("PingAckReceived",)),
    "client-conn-window": Case(on_client(wu(0, 1000)), None, b"", "W+", WU),
    "client-stream-window": Case(on_client(wu(1, 1000) + wu(3, 5)), None, b"", "W+ W+", WU * 2),
    "client-stream-overflow": Case(
        on_client(wu(3, MAX_WINDOW) + ping()),
        None,
        rst(3, ErrorCodes.FLOW_CONTROL_ERROR) + ping_ack(),
        "W+ P+",
        ("StreamReset", *PI),
    ),
    "client-conn-overflow": Case(
        on_client(wu(0, MAX_WINDOW)), "FlowControlError", goaway(0, ErrorCodes.FLOW_CONTROL_ERROR), "W-"
    ),
    "client-increment-high-bit": Case(
        on_client(wu(1, HIGH_BIT | 10)), "ProtocolError", goaway(0, ErrorCodes.PROTOCOL_ERROR), "W-"
    ),
    "client-closed": Case(client_closed(False), None, ping_ack(), "W+ P+", PI),
    "client-closed-forgotten": Case(client_closed(True), None, ping_ack(), "W+ P+", PI),
    "client-reset": Case(client_reset, None, ping_ack(), "W+ P+", PI),
    "client-reserved-remote": Case(
        client_reserved_remote, None, b"", "W+ W+", ("PushedStreamReceived", *WU, *WU)
    ),
    "client-idle-outbound": Case(
        on_client(wu(5, 10) + ping()), "NoSuchStreamError", goaway(0, ErrorCodes.PROTOCOL_ERROR), "W-"
    ),
    "client-idle-inbound": Case(
        on_client(wu(2, 10) + ping()), "NoSuchStreamError", goaway(0, ErrorCodes.PROTOCOL_ERROR), "W-"
    ),
    "client-idle-in-streams": Case(
        client_idle_in_streams, "ProtocolError", goaway(0, ErrorCodes.PROTOCOL_ERROR), "W!"
    ),
    "client-idle": Case(client_idle_ping, None, ping_ack(), "P- W-", PI + WU),
    "client-ping-in-header-block": Case(
        in_header_block(ping(), client=True), "ProtocolError", goaway(0, ErrorCodes.PROTOCOL_ERROR), "P-"
    ),
    "client-ping-after-local-close": Case(
        after_local_close(ping(), client=True), "ProtocolError", goaway(0, ErrorCodes.PROTOCOL_ERROR), "P-"
    ),
}

CASE_CUTS = [
    "whole",
    "frames",
    "bytes",
    "nines",
    "after-header",
    "header-bytes",
    "into-next-header",
    "random-1",
]


@pytest.mark.parametrize("kind", CASE_CUTS)
@pytest.mark.parametrize("name", list(CASES))
def test_control_frame_matches_h2(name: str, kind: str) -> None:
    """One case (WINDOW_UPDATE or PING in some state), read split as *kind*."""
    case = CASES[name]
    pair, stream = case.build()
    fed = pair.feed(stream, points_of(kind, stream), as_type="mixed")
    if case.error is None:
        assert fed.error is None
        assert fed.sent == case.answer
        assert tuple(fed.names) == case.events
    else:
        assert fed.error is not None, fed.error
        assert fed.error[1] == case.error, fed.error
        assert case.answer in fed.sent
    expected = offers(case.taken) if case.taken else []
    if kind == "whole" and has_settings(stream):
        expected = []  # a read holding a SETTINGS frame goes to h2 whole
    if kind in ("whole", "frames"):  # every read begins with a whole frame: each control frame is offered
        assert pair.ctrd.offered == expected
    else:  # a read beginning inside a frame goes to h2 whole; when offered, _control answers the same
        assert all(o in expected for o in pair.ctrd.offered), pair.ctrd.offered


def spy_dispatch(conn: H2Connection, log: list[str]) -> None:
    """Record the type of every frame *conn*'s h2 frame handlers get."""
    table = conn._frame_dispatch_table

    def spied(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def receive(f: Any) -> Any:
            log.append(type(f).__name__)
            return handler(f)

        return receive

    for cls, handler in list(table.items()):
        table[cls] = spied(handler)


def test_fast_path_is_taken() -> None:
    """The plain valid frames are taken by ``_control`` (and DATA by ``_data``): h2's frame handlers never
    see them."""
    pair = server_pair()
    seen: dict[str, list[str]] = {"ctrd": [], "plain": []}
    spy_dispatch(pair.ctrd, seen["ctrd"])
    spy_dispatch(pair.plain, seen["plain"])
    stream = ping() + wu(0, 10) + wu(1, 10) + ping(flags=ACK) + frame(DATA, 0, 1, b"x") + ping()
    fed = pair.feed(stream)
    assert fed.error is None
    assert pair.ctrd.offered == offers("P+ W+ W+ P+ P+")
    assert seen["ctrd"] == []
    assert seen["plain"] == [
        "PingFrame",
        "WindowUpdateFrame",
        "WindowUpdateFrame",
        "PingFrame",
        "DataFrame",
        "PingFrame",
    ]
    assert fed.sent == ping_ack() + ping_ack()
    assert fed.names == [
        "PingReceived",
        "WindowUpdated",
        "WindowUpdated",
        "PingAckReceived",
        "DataReceived",
        "PingReceived",
    ]


def test_data_fast_path_and_padding() -> None:
    """Unpadded DATA on an open stream is taken by ``_data``; padded DATA goes to h2 (the error
    cases, such as a window overrun or an unknown stream, are compared with h2 above)."""
    pair = server_pair()
    seen: dict[str, list[str]] = {"ctrd": [], "plain": []}
    spy_dispatch(pair.ctrd, seen["ctrd"])
    spy_dispatch(pair.plain, seen["plain"])
    padded = frame(DATA, 0x8, 1, bytes([3]) + b"abc" + b"\0" * 3)
    stream = frame(DATA, 0, 1, b"x" * 100) + padded + frame(DATA, 0, 1, b"y" * 10) + frame(DATA, 1, 1, b"z")
    fed = pair.feed(stream)
    assert fed.error is None
    assert fed.names == ["DataReceived", "DataReceived", "DataReceived", "DataReceived", "StreamEnded"]
    assert seen["ctrd"] == ["DataFrame"]  # only the padded one
    assert seen["plain"] == ["DataFrame"] * 4


# -- output order ----------------------------------------------------------------------------------


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_ping_ack_queued_after_what_was_queued(client: bool) -> None:
    """A PING's ACK goes after what the connection had queued and what earlier frames of the read queued."""
    pair = client_pair() if client else server_pair()
    for conn in (pair.ctrd, pair.plain):  # queued, not taken yet
        conn.send_headers(5 if client else 1, REQUEST if client else RESPONSE)
        conn.ping(b"local...")
    queued = bytes(pair.plain._data_to_send)
    w = Writer(pair.peer)
    pair.peer.update_settings({SettingCodes.HEADER_TABLE_SIZE: 8192})
    w.raw(ping(b"one....."))
    w.raw(wu(0, 10))
    pair.peer.update_settings({SettingCodes.HEADER_TABLE_SIZE: 4096})
    w.raw(ping(b"two.....") + ping(b"three..."))
    stream = w.done()
    fed = pair.feed(stream)
    assert fed.error is None
    assert fed.sent == (
        queued
        + SETTINGS_ACK
        + ping_ack(b"one.....")
        + SETTINGS_ACK
        + ping_ack(b"two.....")
        + ping_ack(b"three...")
    )
    assert queued.endswith(frame(PING, 0, 0, b"local..."))
    assert pair.ctrd.offered == []  # the read holds SETTINGS frames: h2 takes it whole
    # the same without the SETTINGS frames: the ACKs taken here go after what was queued
    pair = client_pair() if client else server_pair()
    for conn in (pair.ctrd, pair.plain):
        conn.send_headers(5 if client else 1, REQUEST if client else RESPONSE)
        conn.ping(b"local...")
    queued = bytes(pair.plain._data_to_send)
    fed = pair.feed(ping(b"one.....") + wu(0, 10) + ping(b"two.....") + ping(b"three..."))
    assert fed.error is None
    assert fed.sent == queued + ping_ack(b"one.....") + ping_ack(b"two.....") + ping_ack(b"three...")
    assert pair.ctrd.offered == offers("P+ W+ P+ P+")


# -- the preamble ------------------------------------------------------------------------------------


def preamble_stream(pair: Pair, ping_first: bool) -> bytes:
    """The client's first bytes: preamble (a PING right after it), SETTINGS, ACKs, a request, more PINGs."""
    pair.peer.send_headers(1, REQUEST)
    start = pair.peer.data_to_send()
    assert start.startswith(PREAMBLE)
    head = PREAMBLE + ping(b"early...") if ping_first else PREAMBLE
    return head + start[len(PREAMBLE) :] + ping() + wu(0, 10) + wu(1, 10)


PREAMBLE_SPLITS: dict[str, Callable[[bytes], list[int]]] = {
    "whole": lambda s: [],
    "frames": lambda s: points_of("frames", s),
    "bytes": lambda s: points_of("bytes", s),
    "nines": lambda s: points_of("nines", s),
    "preamble-part": lambda s: [10],  # then the rest of the preamble and every frame
    "preamble-short": lambda s: [len(PREAMBLE) - 1],
    "preamble-alone": lambda s: [len(PREAMBLE)],
    "preamble-and-ping": lambda s: [len(PREAMBLE) + 17],
    "preamble-part-then-ping": lambda s: [10, len(PREAMBLE) + 17],
    "random": lambda s: points_of("random-7", s),
}


@pytest.mark.parametrize("ping_first", [True, False], ids=["ping-first", "settings-first"])
@pytest.mark.parametrize("split", list(PREAMBLE_SPLITS))
def test_control_frames_around_the_preamble(split: str, ping_first: bool) -> None:
    """Server side: control frames right after the client preamble, which may arrive in parts."""
    pair = fresh_server_pair()
    stream = preamble_stream(pair, ping_first)
    fed = pair.feed(stream, PREAMBLE_SPLITS[split](stream), as_type="mixed")
    assert fed.error is None
    names = ["PingReceived"] if ping_first else []
    names += ["RemoteSettingsChanged", "SettingsAcknowledged", "SettingsAcknowledged", "RequestReceived"]
    assert fed.names == [*names, "PingReceived", "WindowUpdated", "WindowUpdated"]
    assert fed.sent.count(ping_ack()) == 1
    if split == "whole":  # the preamble is h2's: so is the rest of its read
        assert pair.ctrd.offered == []
    if split == "frames":  # the server is IDLE until the request
        assert pair.ctrd.offered == offers("P- P+ W+ W+" if ping_first else "P+ W+ W+")
    if split == "preamble-and-ping" and ping_first:
        assert pair.ctrd.offered == []  # the rest, read whole, holds the client's SETTINGS: h2's


# -- interleavings ---------------------------------------------------------------------------------


def server_mixed(pair: Pair, big: Sequence[int]) -> bytes:
    """Requests on 1, 3, 5, 7: DATA (*big*: the large ones), WINDOW_UPDATE, PING, SETTINGS, RST_STREAM."""
    peer, w = pair.peer, Writer(pair.peer)
    peer.send_headers(3, REQUEST)
    peer.send_headers(5, REQUEST)
    peer.increment_flow_control_window(1000)
    peer.ping(b"ping0001")
    peer.send_data(1, payload(100, 1))
    peer.increment_flow_control_window(500, stream_id=1)
    peer.send_data(1, payload(big[0], 2))  # large, unpadded
    peer.ping(b"ping0002")
    peer.increment_flow_control_window(7)
    peer.send_data(3, payload(big[1], 3), pad_length=10)  # large, padded
    w.raw(wu(3, 1) + ping(b"ackack01", flags=ACK))
    peer.update_settings({SettingCodes.HEADER_TABLE_SIZE: 8192})
    peer.ping(b"ping0003")
    peer.send_data(5, payload(big[2], 4))
    w.raw(wu(5, 99) + wu(0, 99) + ping(b"ping0004"))
    peer.reset_stream(3)
    w.raw(wu(3, 5))  # the stream the client reset
    peer.send_data(1, payload(big[3], 5), end_stream=True)
    w.raw(wu(1, 10))  # half-closed (remote)
    peer.send_headers(7, REQUEST, end_stream=True)
    w.raw(ping(b"ping0005") + wu(7, 3))
    peer.send_data(5, payload(3, 6))
    peer.ping(b"ping0006")
    return w.done()


def client_mixed(pair: Pair, big: Sequence[int]) -> bytes:
    """A server's answers on 1, 3, 5: DATA (*big*: large ones), WINDOW_UPDATE, PING, SETTINGS, RST_STREAM."""
    peer, w = pair.peer, Writer(pair.peer)
    peer.send_headers(1, RESPONSE)
    peer.ping(b"ping0001")
    peer.send_data(1, payload(big[0], 1))
    peer.increment_flow_control_window(1000)
    w.raw(wu(1, 10) + wu(3, 10))
    peer.send_headers(3, RESPONSE)
    peer.send_data(3, payload(big[1], 2), pad_length=33)
    peer.update_settings({SettingCodes.HEADER_TABLE_SIZE: 8192})
    w.raw(ping(b"ping0002") + ping(b"ackack01", flags=ACK))
    peer.send_data(1, payload(big[2], 3))
    peer.reset_stream(5)
    w.raw(wu(5, 3) + wu(0, 3))  # the stream the server reset
    peer.send_headers(1, TRAILERS, end_stream=True)
    w.raw(wu(1, 10))  # half-closed (remote)
    peer.send_data(3, payload(big[3], 4))
    peer.ping(b"ping0003")
    return w.done()


LARGE = (BIG, BIG + 100, 300 * KiB, MiB)  # DATA frames around and above DIRECT_BODY_MIN
SMALL = (BIG, 50, 9, 1)  # one large frame: small enough to read byte by byte
MIXED_CUTS = [
    "whole",
    "frames",
    "after-header",
    "after-header+1",
    "header-bytes",
    "into-next-header",
    "one-short",
    "every-4096",
    "every-65545",
    "random-1",
    "random-2",
    "random-3",
    "random-4",
]


def run_mixed(client: bool, big: Sequence[int], kind: str, as_type: str) -> tuple[Pair, Fed, bytes]:
    pair = client_pair((1, 3, 5)) if client else server_pair()
    stream = (client_mixed if client else server_mixed)(pair, big)
    points = points_of(kind, stream)
    fed = pair.feed(stream, points, as_type)
    assert fed.error is None
    pings = sum(f.type == PING for f in frames_of(stream))
    assert fed.names.count("PingReceived") + fed.names.count("PingAckReceived") == pings
    check_all_taken(pair, stream, kind in ("whole", "frames"), kind == "whole")
    return pair, fed, stream


def has_settings(stream: bytes) -> bool:
    """Whether *stream* holds a SETTINGS frame (a read holding one goes to h2 whole)."""
    return any(f.type == SETTINGS for f in frames_of(stream))


def check_all_taken(pair: Pair, stream: bytes, every: bool, whole: bool = False) -> None:
    """_control took what it was offered; *every*: it was offered each control frame of *stream*, in order
    (none when *stream* was read *whole* and holds a SETTINGS frame)."""
    if every and whole and has_settings(stream):
        assert pair.ctrd.offered == []
    elif every:
        kinds = [f.type for f in frames_of(stream) if f.type in (PING, WINDOW_UPDATE)]
        assert pair.ctrd.offered == [(k, True) for k in kinds]
        assert len(kinds) == controls(stream)
    else:
        assert all(taken for _, taken in pair.ctrd.offered), pair.ctrd.offered


@pytest.mark.parametrize("as_type", [*READ_TYPES, "mixed"])
@pytest.mark.parametrize("kind", MIXED_CUTS)
@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_interleaved_matches_h2(client: bool, kind: str, as_type: str) -> None:
    """HEADERS, DATA (small and large, padded or not), WINDOW_UPDATE, PING, SETTINGS, RST_STREAM mixed."""
    _, fed, _ = run_mixed(client, LARGE, kind, as_type)
    if kind in ("after-header+1", "one-short", "into-next-header"):  # reads end inside large bodies
        assert bytearray in fed.data_types


@pytest.mark.parametrize("kind", ["bytes", "nines", "after-header", "whole", "frames"])
@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_interleaved_read_by_read(client: bool, kind: str) -> None:
    """A smaller stream (one large DATA frame), byte by byte and every 9 bytes."""
    pair, fed, _ = run_mixed(client, SMALL, kind, "mixed")
    if kind in ("bytes", "nines"):
        assert bytearray in fed.data_types  # the large body was gathered by Ctrd
        assert not pair.ctrd.offered  # a read beginning a frame never holds a whole control frame
    if kind == "whole":
        assert bytearray not in fed.data_types


def random_stream(pair: Pair, rng: random.Random) -> bytes:
    """A client's random frames: requests, DATA, WINDOW_UPDATE (open, half-closed, reset streams), PING..."""
    peer, w = pair.peer, Writer(pair.peer)
    open_: list[int] = [1]
    done: list[int] = []  # streams the client reset or ended
    next_sid, budget = 3, 3 * MiB
    for _ in range(120):
        r = rng.random()
        if r < 0.08 and next_sid < 60:
            peer.send_headers(next_sid, REQUEST)
            open_.append(next_sid)
            next_sid += 2
        elif r < 0.3 and open_:
            size = rng.choice((0, 1, 100, 4 * KiB, BIG - 1, BIG, BIG + 1, 200 * KiB))
            if size + 256 <= budget:
                budget -= size + 256
                pad = rng.randrange(0, 256) if rng.random() < 0.25 else None
                peer.send_data(rng.choice(open_), payload(size, rng.randrange(1 << 30)), pad_length=pad)
        elif r < 0.45:
            peer.ping(rng.randbytes(8))
        elif r < 0.5:
            w.raw(ping(rng.randbytes(8), flags=ACK))
        elif r < 0.65:
            sid = rng.choice([0, *open_])
            w.raw(wu(sid, rng.randrange(1, 1 << 16)))
        elif r < 0.7 and done:
            w.raw(wu(rng.choice(done), rng.randrange(1, 1 << 16)))  # a closed or half-closed stream
        elif r < 0.75:
            peer.update_settings({SettingCodes.HEADER_TABLE_SIZE: rng.choice((2048, 4096, 8192))})
        elif r < 0.8 and open_:
            sid = open_.pop(rng.randrange(len(open_)))
            peer.reset_stream(sid)
            done.append(sid)
        elif r < 0.85 and open_:
            sid = open_.pop(rng.randrange(len(open_)))
            peer.end_stream(sid)
            done.append(sid)
        elif r < 0.9:
            w.raw(wu(0, rng.randrange(1, 1 << 20)))
        elif open_:
            w.raw(wu(rng.choice(open_), rng.randrange(1, 1 << 20)))
    return w.done()


@pytest.mark.parametrize("seed", range(8))
def test_random_streams_match_h2(seed: int) -> None:
    """Random frame sequences at random split points, as every read type; then each whole."""
    pair = server_pair()
    stream = random_stream(pair, random.Random(seed))
    fed = pair.feed(stream, cut_points(f"random-{seed}", stream), as_type="mixed")
    assert fed.error is None
    check_all_taken(pair, stream, False)
    whole = server_pair()  # the same requests on stream 1: the same decoder state
    fed_whole = whole.feed(stream, as_type=READ_TYPES[seed % 3])
    assert fed_whole.error is None
    assert fed_whole.names == fed.names
    check_all_taken(whole, stream, True, True)


# -- a read completing a large DATA frame, control frames after it ------------------------------------


@pytest.mark.parametrize("as_type", READ_TYPES)
@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_control_frames_after_a_gathered_large_frame(client: bool, as_type: str) -> None:
    """The read completing a large body Ctrd gathers carries control frames (and the start of another)."""
    pair = client_pair() if client else server_pair()
    if client:
        pair.peer.send_headers(1, RESPONSE)
        assert pair.feed(pair.peer.data_to_send()).error is None
        pair.ctrd.offered.clear()
    first, second = payload(BIG + 5, 1), payload(2 * BIG, 2)
    stream = (
        frame(DATA, 0, 1, first)
        + ping()
        + wu(0, 10)
        + wu(1, 10)
        + ping(b"acked...", flags=ACK)
        + frame(DATA, 0, 1, b"tail")
        + ping(b"second..")
        + frame(DATA, END_STREAM, 1, second)
    )
    end_first = 9 + len(first)
    second_at = len(stream) - 9 - len(second)
    # a body's start, all but its last byte, then that byte, the control frames and 100 bytes of the next body
    points = [20, end_first - 1, second_at + 109]
    fed = pair.feed(stream[:20], as_type=as_type)
    assert pair.ctrd._frame is not None
    assert pair.ctrd._filled == 11
    fed = pair.feed(stream[20 : end_first - 1], as_type=as_type)
    assert pair.ctrd._filled == len(first) - 1
    assert not fed.names
    fed = pair.feed(stream[end_first - 1 : points[2]], as_type=as_type)
    assert fed.error is None
    assert fed.names == [
        "DataReceived",
        "PingReceived",
        "WindowUpdated",
        "WindowUpdated",
        "PingAckReceived",
        "DataReceived",
        "PingReceived",
    ]
    assert fed.data_types == [bytearray, bytes]
    assert pair.ctrd.offered == offers("P+ W+ W+ P+ P+")
    assert fed.sent.count(b"\0\0\x08\x06\x01") == 2  # the two ACKs
    assert pair.ctrd._frame is not None
    assert pair.ctrd._filled == 100
    fed = pair.feed(stream[points[2] :], as_type=as_type)
    assert fed.error is None
    assert fed.data_types == [bytearray]
    # and the same stream, split by the same points, in one go
    again = client_pair() if client else server_pair()
    if client:
        again.peer.send_headers(1, RESPONSE)
        assert again.feed(again.peer.data_to_send()).error is None
    assert again.feed(stream, points, as_type).error is None


def test_control_lookalikes_inside_bodies() -> None:
    """PING and WINDOW_UPDATE bytes inside DATA payloads are no frames."""
    fake = (ping() + wu(0, 1) + wu(1, MAX_WINDOW)) * 50
    stream = (
        frame(DATA, 0, 1, fake)
        + frame(DATA, 0, 1, fake * 100)  # a large one
        + frame(DATA, 0x8, 1, bytes([7]) + fake + bytes(7))  # padded
        + ping()
    )
    for kind in ["whole", "frames", "after-header", "after-header+1", "one-short", "random-9"]:
        pair = server_pair()
        fed = pair.feed(stream, points_of(kind, stream), as_type="mixed")
        assert fed.error is None
        assert fed.names == ["DataReceived"] * 3 + ["PingReceived"]
        assert pair.ctrd.offered == (offers("P+") if kind in ("whole", "frames") else pair.ctrd.offered[:1])
        assert all(taken for _, taken in pair.ctrd.offered)


# -- what h2 fixes per read, and after an error ---------------------------------------------------


@pytest.mark.parametrize("between", ["nothing", "ping", "window-update"])
def test_settings_ack_raising_frame_size_then_control_then_large_frame(between: str) -> None:
    """h2 checks a frame's length against the limit in force when the read began.

    The read: the ACK of the servers' settings raising their frame size to 2 MiB
    (h2 applies all its pending values at the first ACK), a request, [a control
    frame], then a complete DATA frame over 16 KiB. h2 refuses it
    (FrameTooLargeError); Ctrd must refuse it as well, with or without a control
    frame before it.
    """
    pair = fresh_server_pair()
    start = pair.peer.data_to_send()  # preamble, SETTINGS, ACK, ACK
    acks = [f for f in frames_of(start) if f.type == SETTINGS and f.flags & ACK]
    assert len(acks) == 2
    assert pair.feed(start[: acks[0].offset]).error is None  # the preamble and the client's SETTINGS
    assert pair.plain.max_inbound_frame_size == DEFAULT_FRAME
    pair.peer.send_headers(1, REQUEST)
    control = {"nothing": b"", "ping": ping(), "window-update": wu(0, 10)}[between]
    big = frame(DATA, 0, 1, payload(BIG + 1, 1))
    fed = pair.feed(start[acks[0].offset :] + pair.peer.data_to_send() + control + big)
    assert fed.error is not None, fed.error
    assert fed.error[1] == "FrameTooLargeError", fed.error


@pytest.mark.parametrize("between", ["nothing", "ping", "window-update"])
def test_settings_ack_lowering_frame_size_then_control_then_frame(between: str) -> None:
    """The other way: the ACK lowering the servers' frame size to 16 KiB, then a 20 KiB frame, one read.

    h2 accepts the frame (the limit when the read began was 2 MiB); Ctrd must too.
    """
    pair = server_pair()
    pair.both(lambda c: c.update_settings({SettingCodes.MAX_FRAME_SIZE: DEFAULT_FRAME}))
    ack = pair.peer.data_to_send()
    assert ack == SETTINGS_ACK
    control = {"nothing": b"", "ping": ping(), "window-update": wu(0, 10)}[between]
    fed = pair.feed(ack + control + frame(DATA, 0, 1, payload(20 * KiB, 1)))
    assert fed.error is None
    assert fed.names[-1] == "DataReceived"
    assert pair.plain.max_inbound_frame_size == DEFAULT_FRAME


@pytest.mark.parametrize(
    "bad",
    [wu(3, 10), wu(0, 0), frame(DATA, 0, 3, b"x")],
    ids=["window-update-idle-stream", "increment-0", "data-idle-stream"],
)
def test_frames_after_an_error_in_the_same_read(bad: bytes) -> None:
    """h2 keeps the frames after the one it refused in its buffer; the next read goes on with them.

    (grpclib closes the transport on a ProtocolError, so a server reads no more;
    this checks the contract for any sequence of reads.)
    """
    pair = server_pair()
    fed = pair.feed(bad + ping() + wu(0, 10), after_error=True)
    assert fed.error is not None
    fed = pair.feed(b"", after_error=True)  # an empty read: h2 reads what it kept
    assert pending(pair.ctrd) == pending(pair.plain)
