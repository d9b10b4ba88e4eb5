"""Memory budgets for what the gRPC server holds on behalf of its clients.

Two kinds of bytes are held for a client and would grow with what it does, not
with what the daemon does:

* **received messages**: a message body is gathered whole before it is decoded
  (up to ``max_recv_message_size``, 16 MiB), and a connection may run 100 calls;
* **replies not yet taken by the socket**: a ``Read`` reads a chunk from the disk,
  encodes it and hands it to the transport; a client that never reads leaves it
  there, and each of its streams holds the next chunk too.

Each connection has a :class:`Room` per kind, and so does the whole server;
the server's is only checked while the connection holds something of that
kind, so every connection can always make progress with one message or reply
at a time and one client exhausting the server's room stalls no other client.

* A message of at least 64 KiB takes room from the moment its length prefix is
  read until the handler asks for the next message (or the call ends). When there
  is none, the call fails with ``RESOURCE_EXHAUSTED`` at once: waiting could
  deadlock, because the unread data of a waiting call fills the connection's
  flow-control window that the calls holding the room need to finish.
* A large reply takes room before its data is read (``CallStream.reply_room``)
  and gives it back once it is handed to the transport. The call waits, before
  reading anything, until the transport is writable, the call's flow-control
  window takes the reply (so the reply never waits for a window while holding
  room) and there is room: a client that does not read only slows itself.

What a connection holds is then at most its room (or one item, whichever is
larger) and the server holds at most its room plus one item per connection.
The limits are in docs/limits.md.
"""

from __future__ import annotations

import asyncio
from typing import Final

__all__ = [
    "CONNECTION_RECV",
    "CONNECTION_SEND",
    "SERVER_RECV",
    "SERVER_SEND",
    "Room",
    "try_take",
]

CONNECTION_RECV: Final = 64 << 20
"""Bytes of received messages one connection may hold (four messages of the 16 MiB maximum)."""

CONNECTION_SEND: Final = 8 << 20
"""Bytes of replies one connection may hold before its socket takes them (eight 1 MiB Read chunks)."""

SERVER_RECV: Final = 1 << 30
"""Bytes of received messages all connections together may hold (beyond one message each)."""

SERVER_SEND: Final = 256 << 20
"""Bytes of unsent replies all connections together may hold (beyond one chunk each)."""


class Room:
    """A byte budget: :attr:`held` bytes out of :attr:`limit`; waiters are woken on every release."""

    __slots__ = ("_waiters", "held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._waiters: list[asyncio.Future[None]] = []

    def fits(self, size: int) -> bool:
        """Whether *size* more bytes fit (anything fits in an empty room)."""
        return self.held == 0 or self.held + size <= self.limit

    def release(self, size: int) -> None:
        """Give back *size* bytes and wake the waiters."""
        self.held -= size
        self.wake()

    def wake(self) -> None:
        """Wake every waiter (they check again)."""
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def until_woken(self) -> None:
        """Wait for the next :meth:`wake` (a release, or whatever else its owner wakes it for)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut


def try_take(size: int, connection: Room, server: Room) -> bool:
    """Take *size* bytes from *connection* and *server* if both have room; whether it did.

    The server's room is not checked while the connection holds nothing of this kind.
    """
    if connection.fits(size) and (connection.held == 0 or server.fits(size)):
        connection.held += size
        server.held += size
        return True
    return False
