"""One connection to a gRPC daemon: a lazily dialled, backed-off channel (the SDK's and the proxies').

A connection is

* **dialled lazily**: creating it does no I/O; the first call connects, so a
  daemon whose proxy target is down still starts;
* **bounded in time**: a dial takes at most :attr:`Connection.dial_timeout`,
  every call made through :meth:`Connection.call` at most its own limit, so a
  hung remote never hangs a caller;
* **backed off**: after a failed dial, :meth:`Connection.connect` fails at once
  for a delay that doubles from :data:`BACKOFF_BASE` up to :data:`BACKOFF_MAX`
  (grpc-go's 3 s maximum, as containerd's proxies), then dials again; a success
  resets the delay. A dropped connection is re-dialled by the next call.

Failures to reach the remote surface as :class:`ctrd.errdefs.Unavailable` whose
message names the address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final

from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError

from ctrd import errdefs
from ctrd.remote._address import Address, parse_address
from ctrd.wire.client import dial, is_connected, open_channel
from ctrd.wire.status import translate_to_native

__all__ = ["BACKOFF_BASE", "BACKOFF_MAX", "DIAL_TIMEOUT", "Connection"]

log = logging.getLogger("ctrd.remote")

DIAL_TIMEOUT: Final = 5.0
"""Seconds a connection attempt may take."""

BACKOFF_BASE: Final = 0.1
"""First delay (seconds) after a failed dial before the next attempt."""

BACKOFF_MAX: Final = 3.0
"""Largest delay between dial attempts (containerd's proxy dialer: 3 s)."""

#: transport-level failures (as opposed to an error status from the remote)
_TRANSPORT = (OSError, StreamTerminatedError, TimeoutError, EOFError)


class Connection:
    """One lazily dialled gRPC channel to *address*, shared by the proxies using it."""

    def __init__(
        self,
        address: str | Address,
        *,
        timeout: float | None = None,
        dial_timeout: float = DIAL_TIMEOUT,
        backoff_base: float = BACKOFF_BASE,
        backoff_max: float = BACKOFF_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = address if isinstance(address, Address) else parse_address(address, strict=True)
        self.address = str(address)
        #: deadline of unary calls and idle limit of streams (the SDK's scopes read it)
        self.timeout = timeout
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

    @classmethod
    def over(cls, channel: Channel, label: str, *, timeout: float | None = None) -> Connection:
        """A connection using *channel*, made elsewhere (and closed there); *label* names it in messages."""
        conn = cls(Address(path=label), timeout=timeout)
        conn._channel = channel
        return conn

    @property
    def display(self) -> str:
        """The address as shown in messages (``unix://`` for sockets, as grpc-go does)."""
        return self.target.display

    @property
    def channel(self) -> Channel:
        """The grpclib channel (created on first use; creating it does not dial)."""
        if self._closed:
            raise errdefs.Unavailable(f"connection to {self.display} is closed")
        if self._channel is None:
            t = self.target
            if t.path is not None:
                self._channel = open_channel(path=t.path)
            else:
                self._channel = open_channel(host=t.host, port=t.port)
        return self._channel

    @property
    def connected(self) -> bool:
        """Whether an HTTP/2 connection is up now."""
        ch = self._channel
        return ch is not None and is_connected(ch)

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
        if is_connected(ch):
            return ch
        # one dial at a time: callers arriving meanwhile share its outcome (and one back-off step)
        async with self._dial_lock:
            if is_connected(ch):
                return ch
            now = self._clock()
            if now < self._retry_at:
                raise errdefs.Unavailable(
                    f"connect to {self.display}: {self._last_error} "
                    f"(next attempt in {self._retry_at - now:.1f}s)"
                )
            self.dials += 1
            try:
                await dial(ch, self.dial_timeout)
            except TimeoutError:
                why = f"timed out after {self.dial_timeout:g}s"
            except (OSError, EOFError) as exc:
                why = str(exc) or type(exc).__name__
            else:
                if self._delay:
                    log.info("connection to %s re-established", self.display)
                self._delay = 0.0
                self._retry_at = 0.0
                return ch
            first = not self._delay
            self._failed(why)
            # warn once per outage; the retries in between are debug noise
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "connection to %s failed: %s (next attempt in %.1fs)",
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

    @contextlib.contextmanager
    def translate(self) -> Iterator[None]:
        """Turn transport errors into :mod:`ctrd.errdefs` errors naming the address."""
        try:
            with translate_to_native():
                yield
        except errdefs.Unavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
                reason = cause.strerror or str(cause)
                raise errdefs.Unavailable(f"cannot connect to {self.target}: {reason}") from cause
            raise

    def close(self) -> None:
        """Close the channel; calls after this fail with Unavailable."""
        self._closed = True
        if self._channel is not None:
            ch, self._channel = self._channel, None
            ch.close()
