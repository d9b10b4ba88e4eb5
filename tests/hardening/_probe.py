"""Tools of the hostile-client suite: a victim measuring latency, raw HTTP/2 frames, the daemon's RSS."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from types import TracebackType

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
