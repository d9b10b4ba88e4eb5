"""Connections to the daemons behind proxy plugins: one cached gRPC channel per address.

Every ``[proxy_plugins.<name>]`` with the same ``address`` shares one
:class:`Connection` (an HTTP/2 connection multiplexes all their calls), taken
from a :class:`ConnectionCache` that the daemon's proxy registrations own. A
connection is

* **dialled lazily**: creating it does no I/O; the first call connects, so a
  daemon whose proxy target is down still starts;
* **bounded in time**: a dial takes at most :attr:`Connection.dial_timeout`,
  every call made through :meth:`Connection.call` at most its own timeout, so a
  hung remote never hangs a caller;
* **backed off**: after a failed dial, calls fail at once for a delay that
  doubles from :data:`BACKOFF_BASE` up to :data:`BACKOFF_MAX` (containerd's
  proxies use grpc-go's 3 s maximum), then the next call dials again; a success
  resets the delay. A dropped connection is re-dialled by the next call;
* **closed on shutdown**: each plugin :meth:`~ConnectionCache.release`\\ s what it
  acquired when the daemon closes it, the last release closes the channel.

Failures to reach the remote surface as :class:`ctrd.errdefs.Unavailable` whose
message names the proxy and the address, e.g. ``proxy plugin
io.containerd.content.v1.remote: connect to unix:///run/x.sock: [Errno 2] No such
file or directory: unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Final, NamedTuple

from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError

from ctrd import errdefs
from ctrd.server.config import split_host_port

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_MAX",
    "CALL_TIMEOUT",
    "DIAL_TIMEOUT",
    "Connection",
    "ConnectionCache",
    "Target",
    "parse_address",
]

log = logging.getLogger("ctrd.proxy")

DIAL_TIMEOUT: Final = 5.0
"""Seconds a connection attempt may take."""

CALL_TIMEOUT: Final = 60.0
"""Default seconds one remote call (or one step of a Write stream) may take."""

BACKOFF_BASE: Final = 0.1
"""First delay (seconds) after a failed dial before the next attempt."""

BACKOFF_MAX: Final = 3.0
"""Largest delay between dial attempts (containerd's proxy dialer: 3 s)."""

#: transport-level failures (as opposed to an error status from the remote)
_TRANSPORT = (OSError, StreamTerminatedError, TimeoutError, EOFError)


class Target(NamedTuple):
    """Where a proxy address points: a unix socket *path*, or TCP *host* and *port*."""

    path: str = ""
    host: str = ""
    port: int = 0


def parse_address(address: str) -> Target:
    """Parse a proxy address.

    Accepted: an absolute socket path, ``unix://<absolute path>``, ``host:port``
    or ``tcp://host:port`` (``[v6]:port`` for IPv6).

    :raises ValueError: anything else (the message says what is expected).
    """
    addr = address.strip()
    if addr.startswith("unix://"):
        path = addr[len("unix://") :]
        if not os.path.isabs(path):
            raise ValueError(f"{address!r}: a unix:// address needs an absolute path")
        return Target(path=path)
    if os.path.isabs(addr):
        return Target(path=addr)
    try:
        host, port = split_host_port(addr.removeprefix("tcp://"))
    except ValueError as exc:
        raise ValueError(
            f"{address!r} is neither an absolute unix socket path nor a TCP host:port ({exc})"
        ) from None
    if not host:
        raise ValueError(f"{address!r}: a TCP address needs a host")
    return Target(host=host, port=port)


class Connection:
    """One lazily dialled gRPC channel to *address*, shared by the proxies using it."""

    def __init__(
        self,
        address: str,
        *,
        dial_timeout: float = DIAL_TIMEOUT,
        backoff_base: float = BACKOFF_BASE,
        backoff_max: float = BACKOFF_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self._target = parse_address(address)
        self.dial_timeout = dial_timeout
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._clock = clock
        self._channel: Channel | None = None
        self._delay = 0.0
        self._retry_at = 0.0
        self._last_error = ""
        self._closed = False
        self._dial_lock = asyncio.Lock()
        #: dial attempts made (tests read it to check the back-off)
        self.dials = 0

    @property
    def display(self) -> str:
        """The address as shown in messages (``unix://`` for sockets, as grpc-go does)."""
        t = self._target
        return f"unix://{t.path}" if t.path else self.address

    @property
    def channel(self) -> Channel:
        """The grpclib channel (created on first use; creating it does not dial)."""
        if self._closed:
            raise errdefs.Unavailable(f"connection to {self.display} is closed")
        if self._channel is None:
            t = self._target
            self._channel = Channel(path=t.path) if t.path else Channel(t.host, t.port)
        return self._channel

    @property
    def connected(self) -> bool:
        """Whether an HTTP/2 connection is up now."""
        ch = self._channel
        return ch is not None and bool(ch._connected)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _failed(self, why: str) -> None:
        self._delay = min(max(self._delay * 2, self._backoff_base), self._backoff_max)
        self._retry_at = self._clock() + self._delay
        self._last_error = why

    async def connect(self) -> Channel:
        """Return the channel with a live connection, dialling if needed.

        :raises errdefs.Unavailable: closed, still backing off after a failure,
            or the dial failed or timed out.
        """
        ch = self.channel
        if ch._connected:
            return ch
        # one dial at a time: callers arriving meanwhile share its outcome (and one back-off step)
        async with self._dial_lock:
            if ch._connected:
                return ch
            now = self._clock()
            if now < self._retry_at:
                raise errdefs.Unavailable(
                    f"connect to {self.display}: {self._last_error} "
                    f"(next attempt in {self._retry_at - now:.1f}s)"
                )
            self.dials += 1
            try:
                await asyncio.wait_for(ch.__connect__(), self.dial_timeout)
            except TimeoutError:
                why = f"timed out after {self.dial_timeout:g}s"
            except (OSError, EOFError) as exc:
                why = str(exc) or type(exc).__name__
            else:
                if self._delay:
                    log.info("proxy connection to %s re-established", self.display)
                self._delay = 0.0
                self._retry_at = 0.0
                return ch
            first = not self._delay
            self._failed(why)
            # warn once per outage; the retries in between are debug noise
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "proxy connection to %s failed: %s (next attempt in %.1fs)",
                self.display,
                why,
                self._delay,
            )
            raise errdefs.Unavailable(f"connect to {self.display}: {why}")

    @contextlib.asynccontextmanager
    async def call(self, what: str, limit: float | None = None) -> AsyncIterator[Channel]:
        """Run one remote operation: connect first, bound it by *limit* seconds, name the address on failure.

        A failed dial, a transport failure, a local time-out and an UNAVAILABLE
        status from the remote become :class:`errdefs.Unavailable`
        ``<what> (<address>): <why>``. Any other error status sent by the remote
        passes through unchanged (class and message are the remote's).
        """
        try:
            ch = await self.connect()
        except errdefs.Unavailable as exc:
            raise errdefs.Unavailable(f"{what}: {exc.context}") from exc
        try:
            if limit is None:
                yield ch
            else:
                async with asyncio.timeout(limit):
                    yield ch
        except errdefs.Error as exc:
            cause = exc.__cause__
            if isinstance(exc, errdefs.DeadlineExceeded) and isinstance(cause, TimeoutError):
                raise errdefs.Unavailable(f"{what} ({self.display}): timed out") from exc
            if isinstance(exc, errdefs.Unavailable) or isinstance(cause, _TRANSPORT):
                raise errdefs.Unavailable(f"{what} ({self.display}): {exc.context}") from exc
            raise
        except TimeoutError as exc:
            raise errdefs.Unavailable(f"{what} ({self.display}): timed out after {limit:g}s") from exc
        except _TRANSPORT as exc:
            raise errdefs.Unavailable(f"{what} ({self.display}): {exc or type(exc).__name__}") from exc

    def close(self) -> None:
        """Close the channel; calls after this fail with Unavailable."""
        self._closed = True
        if self._channel is not None:
            ch, self._channel = self._channel, None
            ch.close()


class ConnectionCache:
    """Connections by address, reference-counted; the last release closes one."""

    def __init__(
        self,
        *,
        dial_timeout: float = DIAL_TIMEOUT,
        backoff_base: float = BACKOFF_BASE,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self._dial_timeout = dial_timeout
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._conns: dict[str, Connection] = {}
        self._refs: dict[str, int] = {}

    def acquire(self, address: str) -> Connection:
        """The connection for *address* (created on first acquire, not dialled)."""
        key = address.strip()
        conn = self._conns.get(key)
        if conn is None or conn.closed:
            conn = Connection(
                key,
                dial_timeout=self._dial_timeout,
                backoff_base=self._backoff_base,
                backoff_max=self._backoff_max,
            )
            self._conns[key] = conn
            self._refs[key] = 0
        self._refs[key] += 1
        return conn

    def release(self, conn: Connection) -> None:
        """Drop one reference; close the connection when none is left."""
        key = conn.address
        if self._conns.get(key) is not conn:
            conn.close()
            return
        self._refs[key] -= 1
        if self._refs[key] <= 0:
            del self._conns[key]
            del self._refs[key]
            conn.close()

    def __len__(self) -> int:
        return len(self._conns)

    def close(self) -> None:
        """Close every connection (idempotent)."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        self._refs.clear()
