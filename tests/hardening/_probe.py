"""Tools of the hostile-client suite: a victim measuring latency, raw HTTP/2 frames, the daemon's RSS."""

from __future__ import annotations

import asyncio
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from _daemon import version_of

__all__ = ["PREFACE", "Victim", "frame", "raw_connection"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, WINDOW_UPDATE = 0x0, 0x1, 0x4, 0x8


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """One HTTP/2 frame; *length* overrides the announced length (a header promising more than sent)."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + payload


def raw_connection(path: str) -> socket.socket:
    """A unix-socket connection past the handshake: the client preface and an empty SETTINGS
    frame sent, the server's first SETTINGS frame read and acknowledged."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    got = b""
    while len(got) < 9 or len(got) < 9 + int.from_bytes(got[:3], "big"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection during the handshake")
        got += chunk
    assert got[3] == SETTINGS, got[:9]
    sock.sendall(frame(SETTINGS, 1, 0))  # ACK
    return sock


class Victim:
    """Another client of the daemon: calls ``Version`` on its own connection, in its own thread,
    every *interval* seconds, recording each call's latency (a call that fails counts as the
    time it took, and is counted in :attr:`errors`)."""

    def __init__(self, sock: str, interval: float = 0.05) -> None:
        self._sock = sock
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.latencies: list[float] = []
        self.errors = 0

    def _run(self) -> None:
        async def loop() -> None:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    await version_of(self._sock, timeout=30.0)
                except Exception:
                    self.errors += 1
                self.latencies.append(time.monotonic() - t0)
                await asyncio.sleep(self._interval)

        asyncio.run(loop())

    @property
    def worst(self) -> float:
        """The longest latency seen, in seconds."""
        return max(self.latencies, default=0.0)

    def __enter__(self) -> Victim:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(60)


def grpc_request(path: str, body: bytes, namespace: str = "hardening") -> tuple[list[tuple[str, str]], bytes]:
    """The headers and the length-prefixed body of a unary-request gRPC call to *path*."""
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("containerd-namespace", namespace),
    ]
    return headers, struct.pack(">BI", 0, len(body)) + body


def silent_readers(path: str, method: str, body: bytes, streams: int) -> socket.socket:
    """A connection opening *streams* calls of *method* with the largest windows HTTP/2 allows,
    then reading nothing: the server may send as much as it likes, the socket takes none of it."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.settings import SettingCodes

    max_window = (1 << 31) - 1
    conn = H2Connection(H2Configuration(client_side=True, header_encoding="ascii"))
    conn.initiate_connection()
    conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: max_window})
    conn.increment_flow_control_window(max_window - 65535)
    headers, framed = grpc_request(method, body)
    for _ in range(streams):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers)
        conn.send_data(sid, framed, end_stream=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(path)
    sock.sendall(conn.data_to_send())
    return sock


def pushing_writers(path: str, streams: int, size: int, seconds: float = 20.0) -> tuple[int, dict[int, str]]:
    """One connection opening *streams* Write calls, each sending one WRITE message of *size*
    bytes as fast as flow control lets it, until every byte is sent or the server has taken
    nothing for 2 seconds. Returns (bytes sent, stream id -> the grpc-status each call ended
    with, for those that ended)."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection

    conn = H2Connection(H2Configuration(client_side=True, header_encoding="ascii"))
    conn.initiate_connection()
    headers, _ = grpc_request("/containerd.services.content.v1.Content/Write", b"")
    zeros = bytes(1 << 20)
    remaining: dict[int, int] = {}
    heads: dict[int, bytes] = {}
    for i in range(streams):
        ref_body = b"\x08\x01\x12\x04" + b"r%03d" % i  # action WRITE, ref "r<i>"
        data_len = size - len(ref_body) - 1 - 4
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers)
        heads[sid] = struct.pack(">BI", 0, size) + ref_body + b"\x32" + _varint4(data_len)
        remaining[sid] = data_len
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.settimeout(30)
    sent = 0
    statuses: dict[int, str] = {}
    idle_since = time.monotonic()
    deadline = idle_since + seconds
    while time.monotonic() < deadline and time.monotonic() - idle_since < 2.0:
        progressed = False
        for sid in list(remaining):
            n = -1 if sid in statuses else _push(conn, sid, heads, remaining, zeros)
            if n < 0:
                remaining.pop(sid)
            elif n > 0:
                sent += n
                progressed = True
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
        _read_statuses(conn, sock, statuses)
        if progressed:
            idle_since = time.monotonic()
        if not remaining:
            break
    sock.close()
    return sent, statuses


def _push(conn: Any, sid: int, heads: dict[int, bytes], remaining: dict[int, int], zeros: bytes) -> int:
    """Queue what flow control lets stream *sid* send (its message head first); the data bytes
    queued, or -1 when the stream is gone."""
    try:
        window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
    except Exception:
        return -1
    head = heads.get(sid, b"")
    if head:
        if window < len(head):
            return 0
        conn.send_data(sid, head)
        del heads[sid]
        window -= len(head)
    n = min(window, remaining[sid], len(zeros))
    if n <= 0:
        return 0
    conn.send_data(sid, zeros[:n])
    remaining[sid] -= n
    return n


def _read_statuses(conn: Any, sock: socket.socket, statuses: dict[int, str]) -> None:
    """Take what the server sent (waiting up to 50 ms); record each call's grpc-status."""
    from h2.events import ResponseReceived, StreamEnded, TrailersReceived

    readable, _, _ = select.select([sock], [], [], 0.05)
    incoming = sock.recv(1 << 20) if readable else b""
    if not incoming:
        return
    for event in conn.receive_data(incoming):
        if isinstance(event, (TrailersReceived, ResponseReceived)):
            status = dict(event.headers).get("grpc-status")
            if status is not None:  # trailers, or a trailers-only reply
                statuses[event.stream_id] = status
        elif isinstance(event, StreamEnded) and event.stream_id not in statuses:
            statuses[event.stream_id] = "ended"
    out = conn.data_to_send()
    if out:
        sock.sendall(out)


def _varint4(n: int) -> bytes:
    """*n* as a 4-byte varint (padded, so a message's layout does not depend on its size)."""
    return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21 & 0x7F))


PING, RST_STREAM, CONTINUATION = 0x6, 0x3, 0x9


def flood(path: str, make: Callable[[int], bytes], seconds: float, read: bool = False) -> tuple[int, bool]:
    """Send the frames ``make(i)`` for i = 0, 1, ... on one connection for *seconds* (or until
    the server closes it), reading nothing unless *read*. Returns (how many were sent,
    whether the server closed the connection)."""
    sock = raw_connection(path)
    sock.setblocking(False)
    sent = 0
    closed = False
    end = time.monotonic() + seconds
    pending = b""
    try:
        while time.monotonic() < end:
            if not pending:
                pending = b"".join(make(sent + k) for k in range(64))
                sent += 64
            try:
                n = sock.send(pending)
                pending = pending[n:]
            except BlockingIOError:
                select.select([sock], [sock], [], 0.01)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if read:
                try:
                    if sock.recv(1 << 16) == b"":
                        closed = True
                        break
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    closed = True
                    break
    finally:
        sock.close()
    return sent, closed
