"""The gRPC listener: grpclib server over every ``io.containerd.grpc.v1`` plugin.

grpclib gaps closed here (see docs/architecture.md):

* each call is served by :meth:`GrpcListener._serve` (grpclib's request handler,
  same checks and answers) which sets the namespace/lease context variables from
  the request metadata and hands the handler a :class:`CallStream`;
* ``max_recv_message_size`` is enforced from the 5-byte length prefix, before
  a message body is buffered (grpclib would buffer up to 4 GiB);
* domain errors are translated in one place; unexpected exceptions become
  UNKNOWN with their message, never a traceback on the wire;
* unknown methods are answered with ``content-type`` so grpc-go reports
  UNIMPLEMENTED;
* graceful drain: new calls get UNAVAILABLE while in-flight calls finish;
* with an :class:`~ctrd.server.authz.Authorizer` (``[authorization]``), each call is
  checked before its handler runs; a denial (there or in a service) is
  PERMISSION_DENIED, logged once and counted;
* with a :class:`~ctrd.server.metrics.GrpcMetrics`, its ``RecvRequest`` listener
  wraps the translated handler, so it counts every call with the status sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Final

import grpclib.server as _gs
from grpclib.const import Status
from grpclib.encoding.base import GRPC_CONTENT_TYPE
from grpclib.events import RecvRequest, listen
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.metadata import Deadline, decode_metadata
from grpclib.protocol import AckedData as _AckedData
from grpclib.protocol import H2Protocol
from grpclib.utils import DeadlineWrapper, Wrapper
from h2.exceptions import StreamClosedError as H2StreamClosedError

from ctrd import authz, errdefs, errgrpc, limits, namespaces
from ctrd._h2 import DIRECT_BODY_MIN, CtrdConnection, LargeFrameProtocol
from ctrd._protowire import GRPC_PREFIX, check_message
from ctrd.server import _budget

if TYPE_CHECKING:
    from ctrd.server.authz import Authorizer
    from ctrd.server.metrics import GrpcMetrics

__all__ = ["ON_RECV", "ON_SEND", "CallStream", "GrpcListener", "ServerStream", "prepare_unix_socket"]

log = logging.getLogger("ctrd.grpc")

ServerStream = _gs.Stream

_METHOD_NOT_FOUND: Final = "Method not found"


async def _abort_with_content_type(
    h2_stream: Any, h2_status: int, grpc_status: Status | None = None, grpc_message: str | None = None
) -> None:
    # grpc-go needs content-type on a Trailers-Only reply, else it reports
    # "missing content-type field" instead of the status we send.
    headers = [(":status", str(h2_status)), ("content-type", "application/grpc")]
    if grpc_status is not None:
        headers.append(("grpc-status", str(grpc_status.value)))
    if grpc_message is not None:
        headers.append(("grpc-message", grpc_message))
    await h2_stream.send_headers(headers, end_stream=True)
    if h2_stream.closable:
        h2_stream.reset_nowait()


def _patch_frame_repr() -> None:
    # h2 logs ``repr(frame)`` for every received frame even with its no-op logger,
    # and hyperframe's repr hex-encodes the whole DATA payload (16 KiB per frame):
    # 13-23 % of the loop's CPU during an ingest. The repr is only used for logging.
    try:
        import hyperframe.frame as _hf
    except ImportError:  # pragma: no cover - grpclib depends on h2/hyperframe
        return

    def _short_repr(self: object) -> str:
        return type(self).__name__

    _hf.Frame.__repr__ = _short_repr  # type: ignore[method-assign]


_patch_frame_repr()


ON_RECV: Final = "ctrd_on_recv"
"""Attribute of a server stream holding a callable run once per received message
(set by :class:`~ctrd.server.metrics.GrpcMetrics` to count messages)."""

ON_SEND: Final = "ctrd_on_send"
"""Attribute of a server stream holding a callable run once per sent message (see :data:`ON_RECV`)."""

_OK_TRAILERS: Final = (("grpc-status", "0"),)
_MAX_LIVE_CALLS: Final = 256
"""Calls of one connection whose handlers may run at once before its socket is read no further
(twice HTTP/2's limit of 100 open streams, which reset streams escape)."""
_MAX_UNSENT: Final = 32 << 20
"""Bytes a connection's transport may hold unsent before the connection is closed."""
_REPLY_FRAMING: Final = 64
"""Bytes a reply adds to its data (gRPC prefix, protobuf keys and lengths, an offset), at most."""
_SMALLEST_REPLY: Final = 16 << 10
"""The least data :meth:`CallStream.reply_room` waits for the windows to take (or all that is left)."""
_SEND_EVENTS: Final = ("send_initial_metadata", "send_message", "send_trailing_metadata")


async def _read_view(buffer: Any, size: int) -> bytes | memoryview:
    """*size* bytes from a grpclib stream buffer, as a view when one received frame holds them.

    grpclib's ``Buffer.read`` joins what it returns into new bytes even when a
    single frame holds all of it; a large message (a 1 MiB ``WRITE``) would be
    copied once more for nothing. This is the same read (the same flow-control
    acknowledgements), without the join in that case.
    """
    if not buffer._eof or not buffer._unacked.empty():
        while buffer._acked_size < size:
            data, data_size, ack_size = await buffer._unacked.get()
            if not ack_size:
                break
            buffer._acked.append(_AckedData(memoryview(data), data_size))
            buffer._acked_size += data_size
            buffer._ack_callback(ack_size)
    acked = buffer._acked
    if buffer._acked_size >= size and acked and acked[0].data_size >= size:
        first = acked[0]
        if first.data_size == size:
            acked.popleft()
        else:
            acked[0] = _AckedData(first.data[size:], first.data_size - size)
        buffer._acked_size -= size
        return first.data[:size]  # type: ignore[no-any-return]
    return await buffer.read(size)  # type: ignore[no-any-return]


class CallStream(_gs.Stream):  # type: ignore[type-arg]
    """grpclib's server stream as ctrd's handlers get it.

    * :meth:`recv_message` enforces :attr:`recv_limit` from the 5-byte length
      prefix, before the body is buffered (grpclib would buffer up to 4 GiB);
    * :data:`ON_RECV`/:data:`ON_SEND` hooks count messages without grpclib's
      per-message events;
    * messages, and OK trailers after a response, go out through
      :meth:`ctrd._h2.CtrdConnection.send_reply` when nobody listens to grpclib's
      send events and grpclib would not have to wait (connection writable,
      flow-control windows open): the first message with the headers in one write;
    * :meth:`send_last` sends a call's final message with the OK trailers (and
      the headers if not sent yet) in one write;
    * :meth:`request_ended` tells whether the client has ended its side of the call.
    """

    recv_limit: int = 4 << 20

    @functools.cached_property
    def _strict(self) -> bool:
        """Whether received messages are checked before decoding (:func:`check_message`):
        those of generated classes; the hand-written decoders check as they go."""
        return hasattr(self._recv_type, "_betterproto")

    _recv_held = 0  # bytes of the received-message budgets this call holds
    _send_held: list[int] | None = None  # reply budget taken, per reply not sent yet

    async def recv_message(self) -> Any:
        if self._recv_held:
            self._release_recv()  # the previous message has been handled: it is asked for the next
        meta = await self._stream.recv_data(5)
        if not meta:
            return None
        compressed, length = GRPC_PREFIX.unpack(meta)
        if compressed:
            raise GRPCError(Status.UNIMPLEMENTED, "compressed messages are not supported")
        if length > self.recv_limit:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"grpc: received message larger than max ({length} vs. {self.recv_limit})",
            )
        if length >= DIRECT_BODY_MIN:
            rooms = self._rooms()
            if rooms is not None:
                if not _budget.try_take(length, rooms.recv, rooms.server.recv):
                    # waiting could deadlock: the messages holding the room may need the
                    # connection window this one's unread data fills
                    full = rooms.recv if not rooms.recv.fits(length) else rooms.server.recv
                    holder = "connection" if full is rooms.recv else "server"
                    raise GRPCError(
                        Status.RESOURCE_EXHAUSTED,
                        f"message of {length} bytes refused: the {holder} holds {full.held} bytes "
                        f"of received messages (limit {full.limit})",
                    )
                self._recv_held = length
        if length >= DIRECT_BODY_MIN and getattr(self._recv_type, "DECODES_VIEWS", False):
            data: bytes | memoryview = await _read_view(self._stream.buffer, length)
        else:
            data = await self._stream.recv_data(length)
        if len(data) != length:
            raise GRPCError(Status.INTERNAL, "incomplete message")
        try:
            if self._strict:
                check_message(data, self._recv_type)
            msg = self._codec.decode(data, self._recv_type)  # type: ignore[arg-type]  # views: DECODES_VIEWS
        except Exception as exc:  # malformed protobuf: the caller's error, not ours
            reason = limits.echo(str(exc) or type(exc).__name__)
            log.info("malformed %s request: %s", self._method_name, reason)
            raise GRPCError(Status.INVALID_ARGUMENT, f"grpc: error unmarshalling request: {reason}") from None
        (msg,) = await self._dispatch.recv_message(msg)
        on_recv = getattr(self, ON_RECV, None)
        if on_recv is not None:
            on_recv()
        self._messages_received += 1
        conn = self._stream.connection
        conn.messages_received += 1
        conn.last_message_received = time.monotonic()
        return msg

    def _rooms(self) -> _ConnectionRooms | None:
        rooms: _ConnectionRooms | None = getattr(self._stream._h2_connection, "rooms", None)
        return rooms

    def _release_recv(self) -> None:
        held, self._recv_held = self._recv_held, 0
        rooms = self._rooms()
        if rooms is not None:
            rooms.recv.release(held)
            rooms.server.recv.release(held)

    def _release_send(self, count: int | None = None) -> None:
        held = self._send_held
        if not held:
            return
        rooms = self._rooms()
        taken = held[:count] if count is not None else list(held)
        del held[: len(taken)]
        if rooms is not None:
            size = sum(taken)
            rooms.send.release(size)
            rooms.server.send.release(size)

    async def reply_room(self, limit: int) -> int:
        """Wait until a reply carrying up to *limit* bytes of data could leave now; how many it may carry.

        A handler that builds large replies (a ``Read`` reading chunks from the
        disk) calls this before building each one and puts at most the returned
        number of bytes (at least 1) in it. It returns when the connection is
        writable, the call's flow-control windows take such a reply, and the
        connection's reply budget (:mod:`ctrd.server._budget`) has room for it; the
        room taken is given back when the next message is sent or the call ends.
        So a client that reads nothing, or not this call, makes the handler wait
        instead of the daemon holding its replies, and a reply never waits for a
        window while holding budget other calls need.
        """
        rooms = self._rooms()
        if rooms is None:
            return limit
        h2s = self._stream
        conn = h2s.connection
        h2c = h2s._h2_connection
        while True:
            try:
                window = h2c.local_flow_control_window(h2s.id or 0) - _REPLY_FRAMING
            except (KeyError, H2StreamClosedError):
                return limit  # the call is over: sending fails as it would have
            size = min(limit, window)
            if size < min(limit, _SMALLEST_REPLY):
                h2s.window_updated.clear()
                await h2s.window_updated.wait()
            elif not conn.write_ready.is_set():
                await rooms.send.until_woken()
            elif not rooms.send.fits(size) or not (rooms.send.held == 0 or rooms.server.send.fits(size)):
                await (rooms.send if not rooms.send.fits(size) else rooms.server.send).until_woken()
            else:
                rooms.send.held += size
                rooms.server.send.held += size
                if self._send_held is None:
                    self._send_held = []
                self._send_held.append(size)
                return size

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool | None:
        try:
            return await super().__aexit__(exc_type, exc_val, exc_tb)
        finally:
            if self._recv_held:
                self._release_recv()
            self._release_send()

    def request_ended(self) -> bool:
        """Whether the client will send nothing more on this call.

        True once the request's END_STREAM has been received (a half-close),
        or once the call was cancelled (reset by the client, deadline, lost
        connection). A connection's frames are processed in order, so a
        half-close sent before a later call's HEADERS is seen here before that
        call's handler starts. Handlers use it to tell a call that is finishing
        from a live one.
        """
        h2s = self._stream
        if h2s.buffer._eof:
            return True
        wrapper = h2s.wrapper
        return wrapper is not None and bool(wrapper.cancelled)

    async def send_message(self, message: Any) -> None:
        """grpclib's ``send_message``; one direct write (with the headers the first time) if it can."""
        if self._send_direct(message, last=False):
            if self._send_held:
                self._release_send(1)
            return
        await super().send_message(message)
        if self._send_held:
            self._release_send(1)
        on_send = getattr(self, ON_SEND, None)
        if on_send is not None:
            on_send()

    async def send_last(self, message: Any, repeat: int = 1) -> None:
        """Send *message* (*repeat* times) as the call's last message(s) and end the call with status OK.

        When the request is complete, no listener watches sends and the
        flow-control windows take the whole message, the headers (unless sent
        already), the message(s) and the OK trailers leave in one write, framed by
        :meth:`ctrd._h2.CtrdConnection.send_reply`; otherwise this is
        :meth:`send_message` (*repeat* times) and the trailers follow when the
        handler returns. The handler must not send or fail after this.
        """
        if not self._send_direct(message, last=True, repeat=repeat):
            for _ in range(repeat):
                await self.send_message(message)
        elif self._send_held:
            self._release_send(1)

    async def send_trailing_metadata(
        self,
        *,
        status: Status = Status.OK,
        status_message: str | None = None,
        status_details: Any = None,
        metadata: Any = None,
    ) -> None:
        """grpclib's ``send_trailing_metadata``; plain OK trailers after a response go directly.

        A status message longer than :data:`ctrd.limits.MAX_STATUS_MESSAGE` is cut:
        hpack's Huffman coding of a header value costs time quadratic in its length,
        on the event loop.
        """
        if status_message is not None and len(status_message) > limits.MAX_STATUS_MESSAGE:
            status_message = status_message[: limits.MAX_STATUS_MESSAGE - 1] + "…"
        if (
            status is Status.OK
            and status_message is None
            and status_details is None
            and not metadata
            and self._trailers_direct()
        ):
            return
        await super().send_trailing_metadata(
            status=status, status_message=status_message, status_details=status_details, metadata=metadata
        )

    def _direct(self) -> tuple[CtrdConnection, int] | None:
        """The call's h2 connection and stream id if a direct send may go now, else ``None``.

        A direct send skips grpclib's send events, so it is only taken when nobody
        listens to them, and only when grpclib would not wait: the connection is
        writable and the stream still known to h2.
        """
        handlers = self._dispatch.__dict__
        if any(name not in handlers for name in _SEND_EVENTS):
            return None  # somebody listens to grpclib's send events: take grpclib's path
        h2s = self._stream
        h2c = h2s._h2_connection
        sid = h2s.id
        if (
            sid is None
            or not h2s.connection.write_ready.is_set()
            or h2s._transport.is_closing()
            or sid not in h2c.streams
            or not isinstance(h2c, CtrdConnection)
        ):
            return None
        return h2c, sid

    def _send_direct(self, message: Any, last: bool, repeat: int = 1) -> bool:
        if self._send_trailing_metadata_done or self._cancel_done:
            return False
        if self._send_message_done and not self._cardinality.server_streaming:
            return False  # grpclib's error
        direct = self._direct()
        if direct is None:
            return False
        h2c, sid = direct
        payload = self._codec.encode(message, self._send_type)
        framed = GRPC_PREFIX.pack(0, len(payload)) + payload
        if repeat != 1:
            if repeat < 1 or not self._cardinality.server_streaming:
                return False  # grpclib's path (and its errors)
            framed *= repeat
        size = len(framed)
        headers = None
        if not self._send_initial_metadata_done:
            headers = ((":status", "200"), ("content-type", self._content_type))
        if not h2c.send_reply(sid, headers, framed, _OK_TRAILERS if last else None):
            return False
        self._send_initial_metadata_done = self._send_message_done = True
        if last:
            self._send_trailing_metadata_done = True
        h2s = self._stream
        conn = h2s.connection
        h2s.data_sent += size
        conn.data_sent += size
        conn.data_send_process()
        self._messages_sent += repeat
        conn.messages_sent += repeat
        conn.last_message_sent = time.monotonic()
        on_send = getattr(self, ON_SEND, None)
        if on_send is not None:
            for _ in range(repeat):
                on_send()
        return True

    def _trailers_direct(self) -> bool:
        if self._send_trailing_metadata_done or self._cancel_done or not self._send_initial_metadata_done:
            return False  # a trailers-only reply (or grpclib's error) takes grpclib's path
        if not self._send_message_done and not self._cardinality.server_streaming:
            return False  # grpclib's error
        direct = self._direct()
        if direct is None or not direct[0].send_reply(direct[1], None, b"", _OK_TRAILERS):
            return False
        self._send_trailing_metadata_done = True
        return True


class _Tracker:
    """Counts in-flight calls; refuses new ones while draining."""

    def __init__(self) -> None:
        self.inflight: set[asyncio.Task[Any]] = set()
        self.draining = False
        self.idle = asyncio.Event()
        self.idle.set()
        #: set to stop waiting for in-flight calls (:meth:`GrpcListener.cut_drain`)
        self.cut = asyncio.Event()

    def add(self, task: asyncio.Task[Any]) -> None:
        """Track *task* (grpclib's per-request task) until it is done.

        Done means the whole request, trailers included, not just the handler: a
        reply still waiting for the transport must not be cut off by the close.
        """
        if task not in self.inflight:
            self.inflight.add(task)
            self.idle.clear()
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.inflight.discard(task)
        if not self.inflight:
            self.idle.set()


class _TaskWrapper(Wrapper):
    """grpclib's :class:`~grpclib.utils.Wrapper` for a call whose task is known.

    grpclib's looks the current task up when entered and again when left (in
    Python, on 3.11); the call's task is known from the start here.
    """

    def __init__(self, task: asyncio.Task[Any]) -> None:
        super().__init__()
        self._task = task

    def __enter__(self) -> None:
        if self._error is not None:
            raise self._error
        self._tasks.add(self._task)

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self._tasks.discard(self._task)
        if self._error is not None:
            self.cancel_failed = exc_type is not asyncio.CancelledError
            raise self._error


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


class _Handler(_gs.Handler):
    """grpclib's per-connection handler, serving each call with :meth:`GrpcListener._serve`."""

    _transport: Any = None
    _live = 0  # handler tasks of this connection not finished yet
    _reading_paused = False

    def __init__(self, listener: GrpcListener, registry: set[Any], *args: Any) -> None:
        super().__init__(*args)
        self._listener = listener
        self._registry = registry

    def attach(self, transport: Any) -> None:
        """The connection's transport, paused while too many of its calls are still running."""
        self._transport = transport

    def accept(self, stream: Any, headers: Any, release_stream: Callable[[], Any]) -> None:
        self.__gc_step__()
        once = _Once(release_stream)
        task = self.loop.create_task(self._listener._serve(self, stream, headers, once))
        self._tasks[stream] = task
        self._listener._tracker.add(task)
        self._live += 1
        # A call reset before its task first ran is cancelled without running at all (its
        # ``finally`` neither): the stream must still be released, or grpclib keeps it forever.
        task.add_done_callback(once.on_done)
        task.add_done_callback(self._finished)
        if self._live >= _MAX_LIVE_CALLS and not self._reading_paused and self._transport is not None:
            # HTTP/2 caps open streams, not calls: a stream reset at once no longer counts,
            # while its handler still runs. A client opening and resetting streams in a loop
            # (CVE-2023-44487) is read no further until its calls have finished.
            self._reading_paused = True
            self._transport.pause_reading()

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._live -= 1
        if self._reading_paused and self._live < _MAX_LIVE_CALLS // 2:
            self._reading_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()
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


class _ServerRooms:
    """The server's memory budgets (:mod:`ctrd.server._budget`), shared by its connections."""

    __slots__ = ("recv", "send")

    def __init__(self) -> None:
        self.recv = _budget.Room(_budget.SERVER_RECV)
        self.send = _budget.Room(_budget.SERVER_SEND)


class _ConnectionRooms:
    """One connection's memory budgets, and the server's."""

    __slots__ = ("recv", "send", "server")

    def __init__(self, server: _ServerRooms) -> None:
        self.server = server
        self.recv = _budget.Room(_budget.CONNECTION_RECV)
        self.send = _budget.Room(_budget.CONNECTION_SEND)


class _ServerProtocol(LargeFrameProtocol):
    """ctrd's protocol with the connection's memory budgets; a drained transport wakes reply waiters."""

    def __init__(self, rooms: _ServerRooms, *args: Any) -> None:
        super().__init__(*args)
        self._rooms = _ConnectionRooms(rooms)

    _transport: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._transport = transport
        conn = self.connection._connection
        if isinstance(conn, CtrdConnection):
            conn.rooms = self._rooms
        if isinstance(self.handler, _Handler):
            self.handler.attach(transport)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
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
        super().connection_lost(exc)  # cancels the calls still running
        handler = self.handler
        if isinstance(handler, _Handler) and not handler._live:
            handler.forget()


class _Server(_gs.Server):
    """grpclib's server over ctrd's protocol (:mod:`ctrd._h2`) and call handling."""

    def __init__(self, servables: list[Any], listener: GrpcListener) -> None:
        super().__init__(servables)
        self._listener = listener

    def _protocol_factory(self) -> H2Protocol:
        # grpclib's factory, with ctrd's handler and protocol classes.
        self.__gc_step__()
        handler = _Handler(
            self._listener,
            self._handlers,
            self._mapping,
            self._codec,
            self._status_details_codec,
            self.__dispatch__,
        )
        self._handlers.add(handler)
        return _ServerProtocol(self._listener._rooms, handler, self._config, self._h2_config)


class GrpcListener:
    """Serves the given servables on a unix socket and optionally TCP(+TLS)."""

    def __init__(
        self,
        servables: Iterable[Any],
        *,
        max_recv: int,
        max_send: int,
        on_request: Callable[[RecvRequest], Coroutine[Any, Any, None]] | None = None,
        metrics: GrpcMetrics | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self._servables = list(servables)
        self._max_recv = max_recv
        self._max_send = max_send
        self._stream_class = type("CallStream", (CallStream,), {"recv_limit": max_recv})
        self._tracker = _Tracker()
        self._rooms = _ServerRooms()
        self._servers: list[_gs.Server] = []
        self._unix_paths: list[str] = []
        self._on_request = on_request
        self._metrics = metrics
        self._authz = authorizer
        if metrics is not None:
            metrics.register(self._servables)

    @property
    def inflight(self) -> int:
        """Calls being served now."""
        return len(self._tracker.inflight)

    def _new_server(self) -> _gs.Server:
        srv = _Server(self._servables, self)
        if self._on_request is not None:
            listen(srv, RecvRequest, self._on_request)
        if self._metrics is not None:
            self._metrics.attach(srv)
        return srv

    async def _serve(
        self, handler: _Handler, h2_stream: Any, headers: Any, release_stream: Callable[[], Any]
    ) -> None:
        """One call: grpclib's ``request_handler`` with ctrd's stream class and interception.

        The same checks and answers as grpclib's (method, content type, ``te``,
        unknown method, ``grpc-timeout``), the same deadline and cancellation
        handling; then the namespace and lease of the call are set and domain
        errors translated (:meth:`_call`). grpclib's ``RecvRequest`` event is only
        dispatched when something listens to it (metrics, ``on_request``).
        """
        try:
            headers_map = dict(headers)
            if headers_map[":method"] != "POST":
                await _abort_with_content_type(h2_stream, 405)
                return
            content_type = headers_map.get("content-type")
            if content_type is None:
                await _abort_with_content_type(h2_stream, 415, Status.UNKNOWN, "Missing content-type header")
                return
            base_type, _, sub_type = content_type.partition("+")
            if base_type != GRPC_CONTENT_TYPE or (sub_type or "proto") != handler.codec.__content_subtype__:
                await _abort_with_content_type(
                    h2_stream, 415, Status.UNKNOWN, "Unacceptable content-type header"
                )
                return
            if headers_map.get("te") != "trailers":
                await _abort_with_content_type(
                    h2_stream, 400, Status.UNKNOWN, 'Required "te: trailers" header is missing'
                )
                return
            method_name = headers_map[":path"]
            method = handler.mapping.get(method_name)
            if method is None:
                await _abort_with_content_type(h2_stream, 200, Status.UNIMPLEMENTED, _METHOD_NOT_FOUND)
                return
            deadline = None
            if "grpc-timeout" in headers_map:
                try:
                    deadline = Deadline.from_headers(headers)
                except ValueError:
                    await _abort_with_content_type(
                        h2_stream, 200, Status.UNKNOWN, "Invalid grpc-timeout header"
                    )
                    return
            metadata = decode_metadata(headers)
            user_agent = headers_map.get("user-agent")
            dispatch = handler.dispatch
            async with self._stream_class(
                h2_stream,
                method_name,
                method.cardinality,
                method.request_type,
                method.reply_type,
                codec=handler.codec,
                status_details_codec=handler.status_details_codec,
                dispatch=dispatch,
                deadline=deadline,
                user_agent=user_agent,
            ) as stream:
                wrapper: Wrapper
                deadline_wrapper: contextlib.AbstractContextManager[Any]
                if deadline is None:
                    task = handler._tasks.get(h2_stream)
                    wrapper = h2_stream.wrapper = Wrapper() if task is None else _TaskWrapper(task)
                    deadline_wrapper = contextlib.nullcontext()
                else:
                    wrapper = h2_stream.wrapper = DeadlineWrapper()
                    deadline_wrapper = wrapper.start(deadline)
                try:
                    with deadline_wrapper, wrapper:
                        stream.metadata = metadata
                        ns = metadata.get(namespaces.GRPC_HEADER)
                        lease = metadata.get(namespaces.LEASE_HEADER)
                        namespaces.set_for_request(
                            ns if isinstance(ns, str) else None, lease if isinstance(lease, str) else None
                        )
                        if "recv_request" in dispatch.__dict__:  # nobody listens to RecvRequest
                            await self._call(method.func, method_name, stream)
                        else:
                            inner = method.func

                            async def intercepted(stream: Any) -> None:
                                await self._call(inner, method_name, stream)

                            stream.metadata, method_func = await dispatch.recv_request(
                                metadata,
                                intercepted,
                                method_name=method_name,
                                deadline=deadline,
                                content_type=content_type,
                                user_agent=user_agent,
                                peer=stream.peer,
                            )
                            await method_func(stream)
                except GRPCError:
                    raise
                except TimeoutError:
                    if wrapper.cancel_failed:
                        log.exception("Failed to handle cancellation")
                        raise GRPCError(Status.DEADLINE_EXCEEDED) from None
                    if wrapper.cancelled:
                        log.info("Deadline exceeded")
                        raise GRPCError(Status.DEADLINE_EXCEEDED) from None
                    log.exception("Timeout occurred")
                    raise
                except StreamTerminatedError as err:
                    if wrapper.cancel_failed:
                        log.exception("Failed to handle cancellation")
                    else:
                        log.info("Request was cancelled: %s", err)
                    raise
                except Exception:
                    log.exception("Application error")
                    raise
        except ProtocolError:
            log.exception("Application error")
        except Exception:
            log.exception("Server error")
        finally:
            release_stream()

    async def _call(self, func: Callable[[Any], Awaitable[None]], name: str, stream: Any) -> None:
        """Run a handler: refused while draining, or when not authorized; domain errors
        become gRPC statuses."""
        if self._tracker.draining:
            raise GRPCError(Status.UNAVAILABLE, "server is shutting down")
        try:
            if self._authz is not None:
                self._authz.authorize(name, stream._stream.connection, namespaces.current())
            await func(stream)
        except authz.Denied as exc:
            if self._authz is not None:
                self._authz.denied(name, exc)
            if self._metrics is not None:
                self._metrics.count_denied(name)
            raise errgrpc.to_grpc(exc) from exc
        except errdefs.Error as exc:
            raise errgrpc.to_grpc(exc) from exc
        except (GRPCError, StreamTerminatedError, asyncio.CancelledError):
            raise
        except NotImplementedError as exc:
            raise GRPCError(Status.UNIMPLEMENTED, f"{name}: not implemented") from exc
        except Exception as exc:
            log.exception("unexpected error in %s", name)
            raise GRPCError(Status.UNKNOWN, f"{type(exc).__name__}: {exc}") from exc

    async def start_unix(self, path: str, *, uid: int = 0, gid: int = 0) -> None:
        """Listen on the unix socket *path* (mode 0660; chown when configured)."""
        sock = prepare_unix_socket(path, uid=uid, gid=gid)
        srv = self._new_server()
        await srv.start(sock=sock)
        self._servers.append(srv)
        self._unix_paths.append(path)

    async def start_tcp(self, address: str, *, tls: ssl.SSLContext | None = None) -> None:
        """Listen on TCP ``host:port``."""
        host, _, port = address.rpartition(":")
        srv = self._new_server()
        await srv.start(host.strip("[]") or None, int(port), ssl=tls)
        self._servers.append(srv)

    def cut_drain(self) -> None:
        """Make a :meth:`stop` in progress (or to come) stop waiting for in-flight calls."""
        self._tracker.cut.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight calls finish within *timeout*, then close.

        New calls get UNAVAILABLE meanwhile; calls already running (a Write stream's
        later messages and its COMMIT included) go on until they end. The wait
        ends early when :meth:`cut_drain` is called; closing then cancels the calls.
        """
        tracker = self._tracker
        tracker.draining = True
        for srv in self._servers:
            if srv._server is not None:
                srv._server.close()
        if tracker.inflight and not tracker.cut.is_set():
            log.info("waiting for %d in-flight call(s)", len(tracker.inflight))
            waits = {asyncio.ensure_future(tracker.idle.wait()), asyncio.ensure_future(tracker.cut.wait())}
            try:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        for srv in self._servers:
            srv.close()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 2.0)
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._servers.clear()
        self._unix_paths.clear()


def prepare_unix_socket(path: str, *, uid: int = 0, gid: int = 0, mode: int = 0o660) -> socket.socket:
    """Bind a listening unix socket at *path*.

    A stale socket file from a dead daemon is replaced; a live one is refused.
    """
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, mode=0o711, exist_ok=True)
    if os.path.lexists(path):
        import stat as _stat

        st = os.lstat(path)
        if not _stat.S_ISSOCK(st.st_mode):
            raise errdefs.FailedPrecondition(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise errdefs.FailedPrecondition(f"cannot probe existing socket {path}: {exc}") from exc
            log.info("removing stale socket %s", path)
            os.unlink(path)
        else:
            raise errdefs.AlreadyExists(f"{path} is in use by a running daemon")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, mode)
    if uid or gid:
        try:
            os.chown(path, uid, gid)
        except PermissionError:
            log.warning("cannot chown %s to %d:%d (not permitted); keeping owner", path, uid, gid)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def monotonic_ms() -> float:
    """Milliseconds on the monotonic clock (for timing logs)."""
    return time.monotonic() * 1000.0
