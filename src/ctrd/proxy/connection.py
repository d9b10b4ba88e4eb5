"""The proxy plugins' connections: one shared :class:`~ctrd.remote.Connection` per address.

Every ``[proxy_plugins.<name>]`` with the same ``address`` shares one connection
(an HTTP/2 connection multiplexes all their calls), taken from a
:class:`ConnectionCache` that the daemon's proxy registrations own; each plugin
:meth:`~ConnectionCache.release`\\ s what it acquired when the daemon closes it, the
last release closes the channel. Failures name the proxy and the address, e.g.
``proxy plugin io.containerd.content.v1.remote: connect to unix:///run/x.sock:
[Errno 2] No such file or directory: unavailable``.
"""

from __future__ import annotations

from typing import Final

from ctrd.remote import BACKOFF_BASE, BACKOFF_MAX, DIAL_TIMEOUT, Connection

__all__ = ["CALL_TIMEOUT", "ConnectionCache"]

CALL_TIMEOUT: Final = 60.0
"""Default seconds one remote call (or one step of a Write stream) may take."""


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
