"""One connection of the gRPC server: its handler (the calls it runs) and its protocol.

:class:`ConnectionHandler` is grpclib's per-connection handler: it starts a task
per call, releases a call's stream whatever becomes of the task, pauses reading
while too many of its calls still run (streams reset at once escape HTTP/2's
stream limit: CVE-2023-44487), identifies the client once, and leaves the
server's set of handlers as soon as the connection is gone.
:class:`ServerProtocol` is the connection's protocol: ctrd's h2 connection (or
h2's own, ``CTRD_H2=stock``), reads of small frames a slice at a time, the bound
on what it holds unsent, and a drained transport waking the calls waiting to reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

import grpclib.server as _gs
from grpclib.protocol import H2Protocol

from ctrd.authz import Peer
from ctrd.wire._h2 import LargeFrameProtocol, events_processor
from ctrd.wire._stream import ConnectionRooms, ServerRooms

__all__ = ["ConnectionHandler", "ServerProtocol"]

log = logging.getLogger("ctrd.grpc")

_MAX_LIVE_CALLS: Final = 256
"""Calls of one connection whose handlers may run at once before its socket is read no further
(twice HTTP/2's limit of 100 open streams, which reset streams escape)."""
_MAX_UNSENT: Final = 32 << 20
"""Bytes a connection's transport may hold unsent before the connection is closed."""
_SLICE: Final = 16 << 10
"""Bytes of a read of small frames handled at a time."""
_SMALL_FRAME: Final = 4 << 10
"""Frames shorter than this are small: control frames, headers, small messages."""
_TURN: Final = 0.002
"""Seconds of a loop turn one connection's small frames may take before the rest waits."""


class _Once:
    """grpclib's ``release_stream`` of one call, run at most once (by the call, else when its task ends)."""

    __slots__ = ("_release",)

    def __init__(self, release: Callable[[], Any]) -> None:
        self._release: Callable[[], Any] | None = release

    def __call__(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def on_done(self, task: asyncio.Task[Any]) -> None:
        self()


class ConnectionHandler(_gs.Handler):
    """grpclib's per-connection handler, serving each call with *serve* (a task per call).

    :param serve: runs one call (``serve(handler, stream, headers, release_stream)``).
    :param track: told about every call's task (the server's drain waits for them).
    :param rooms: the server's memory budgets; the connection gets its own beside them.
    :param identify: who the client of a transport is.
    :param registry: the server's set of handlers, which this one leaves once done.
    """

    _transport: Any = None
    _protocol: Any = None
    _live = 0  # handler tasks of this connection not finished yet
    _reading_paused = False
    _peer: Peer | None = None

    def __init__(
        self,
        serve: Callable[..., Coroutine[Any, Any, None]],
        track: Callable[[asyncio.Task[Any]], None],
        rooms: ServerRooms,
        identify: Callable[[Any], Peer],
        registry: set[Any],
        *args: Any,
    ) -> None:
        super().__init__(*args)
        self._serve = serve
        self._track = track
        self._identify = identify
        self._registry = registry
        self.rooms = ConnectionRooms(rooms)

    def attach(self, protocol: ServerProtocol) -> None:
        """The connection's protocol (its transport and its reading, paused while too many of its
        calls are still running)."""
        self._protocol = protocol
        self._transport = protocol._transport

    def peer(self) -> Peer:
        """The client of this connection, identified once (an unidentifiable one is ``unknown``)."""
        peer = self._peer
        if peer is None:
            try:
                peer = self._identify(self._transport)
            except Exception as exc:  # never a reason to fail open
                log.warning("cannot identify a client (%s); it matches no principal", exc)
                peer = Peer("unknown")
            self._peer = peer
        return peer

    def accept(self, stream: Any, headers: Any, release_stream: Callable[[], Any]) -> None:
        self.__gc_step__()
        once = _Once(release_stream)
        task = self.loop.create_task(self._serve(self, stream, headers, once))
        self._tasks[stream] = task
        self._track(task)
        self._live += 1
        # A call reset before its task first ran is cancelled without running at all (its
        # ``finally`` neither): the stream must still be released, or grpclib keeps it forever.
        task.add_done_callback(once.on_done)
        task.add_done_callback(self._finished)
        if self._live >= _MAX_LIVE_CALLS and not self._reading_paused and self._protocol is not None:
            # HTTP/2 caps open streams, not calls: a stream reset at once no longer counts,
            # while its handler still runs. A client opening and resetting streams in a loop
            # (CVE-2023-44487) is read no further until its calls have finished.
            self._reading_paused = True
            self._protocol.pause("calls")

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._live -= 1
        if self._reading_paused and self._live < _MAX_LIVE_CALLS // 2:
            self._reading_paused = False
            self._protocol.resume("calls")
        if not self._live and self.closing:
            self.forget()

    def forget(self) -> None:
        """Leave the server's set of handlers: the connection is gone and none of its calls runs.

        grpclib prunes that set only every tenth new connection, keeping each closed
        connection's streams and h2 state (megabytes after a burst of calls) until then.
        """
        self._tasks.clear()
        self._cancelled.clear()
        self._registry.discard(self)


class ServerProtocol(LargeFrameProtocol):
    """The server's protocol: ctrd's h2 connection (or h2's own, ``CTRD_H2=stock``), frame-flood
    bounds, and a drained transport waking the calls waiting to reply.

    A read of many small frames is handled a slice at a time: after
    :data:`_TURN` seconds of work, what is left waits for the loop's next turn
    (reading paused meanwhile), so a connection flooding the daemon with tiny
    frames takes its turn like every other connection instead of holding the loop
    for a whole read.
    """

    _transport: Any = None
    _rest: memoryview | None = None  # what is left of a read, for the loop's next turn

    def __init__(self, handler: ConnectionHandler, fast: bool, *args: Any) -> None:
        super().__init__(handler, *args)
        self._fast = fast
        self._rooms = handler.rooms
        self._paused: set[str] = set()

    def connection_made(self, transport: Any) -> None:
        if self._fast:
            super().connection_made(transport)
        else:
            H2Protocol.connection_made(self, transport)
            self.processor = events_processor(self.handler, self.connection)
        self._transport = transport
        handler = self.handler
        if isinstance(handler, ConnectionHandler):
            handler.attach(self)

    def pause(self, reason: str) -> None:
        """Read no further from the socket until every reason to pause is gone."""
        if not self._paused and not self._transport.is_closing():
            self._transport.pause_reading()
        self._paused.add(reason)

    def resume(self, reason: str) -> None:
        """*reason* to pause is gone."""
        self._paused.discard(reason)
        if not self._paused and not self._transport.is_closing():
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        if len(view) <= _SLICE or not _small_frames_ahead(self.connection._connection, view):
            super().data_received(data)
        else:
            self._slices(view)
        self._check_unsent()

    def _slices(self, view: memoryview) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + _TURN
        while len(view) > _SLICE:
            super().data_received(view[:_SLICE])  # type: ignore[arg-type]  # h2 takes any buffer
            view = view[_SLICE:]
            if loop.time() > end and not self._transport.is_closing():
                self._rest = view
                self.pause("slices")
                loop.call_soon(self._next_turn)
                return
        super().data_received(view)  # type: ignore[arg-type]

    def _next_turn(self) -> None:
        rest, self._rest = self._rest, None
        if rest is None or self._transport.is_closing():
            return
        self._slices(rest)
        if self._rest is None:
            self.resume("slices")
        self._check_unsent()

    def _check_unsent(self) -> None:
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size() > _MAX_UNSENT:
            # replies are budgeted far below this: what piles up is answers to a peer's
            # frames (PING, SETTINGS, resets) that it never reads
            log.warning(
                "closing a connection that reads nothing back: %d bytes unsent",
                transport.get_write_buffer_size(),
            )
            transport.abort()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._rooms.send.wake()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._rest = None
        super().connection_lost(exc)  # cancels the calls still running
        handler = self.handler
        if isinstance(handler, ConnectionHandler) and not handler._live:
            handler.forget()


def _small_frames_ahead(conn: Any, view: memoryview) -> bool:
    """Whether a read *view* continues with small frames (under :data:`_SMALL_FRAME`; not DATA
    frames of bulk data, which are taken whole): judged by the frame it starts, or by the
    frame h2 holds the start of."""
    if getattr(conn, "_frame", None) is not None:
        return False  # gathering a large DATA frame's body
    pending = getattr(conn.incoming_buffer, "_data", b"")
    head = pending if len(pending) else view
    if len(head) < 3:
        return True
    return ((head[0] << 16) | (head[1] << 8) | head[2]) < _SMALL_FRAME
