"""The gRPC server: grpclib's, with ctrd's call handling, over every ``io.containerd.grpc.v1`` plugin.

What ctrd adds to grpclib's server (see docs/architecture.md):

* each call is served by :meth:`GrpcListener._serve` (grpclib's request handler,
  same checks and answers) which sets the namespace/lease context variables from
  the request metadata and hands the handler a :class:`~ctrd.wire._stream.CallStream`
  (what handlers see of it is :class:`ctrd.wire.Call`);
* ``max_recv_message_size`` is enforced from the 5-byte length prefix, before
  a message body is buffered (grpclib would buffer up to 4 GiB);
* domain errors are translated in one place (:func:`ctrd.wire.status.status_for`);
  unexpected exceptions become UNKNOWN with their message, never a traceback on
  the wire;
* unknown methods are answered with ``content-type`` so grpc-go reports
  UNIMPLEMENTED;
* graceful drain: new calls get UNAVAILABLE while in-flight calls finish;
* with an authorizer (``[authorization]``), each call is checked before its
  handler runs, with the client of its connection (:func:`ctrd.wire.peer.peer_of`);
  a denial (there or in a service) is PERMISSION_DENIED, logged once and counted;
* with a :class:`~ctrd.wire.CallObserver` (the metrics), every call is reported
  with the status sent, and its messages counted;
* memory budgets per connection and for the server (:mod:`ctrd.wire._budget`),
  and bounds on what a flood of frames can make a connection hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, NamedTuple, Protocol

import grpclib.const as _const
import grpclib.server as _gs
from grpclib.const import Cardinality, Status
from grpclib.encoding.base import GRPC_CONTENT_TYPE
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.metadata import Deadline, decode_metadata
from grpclib.protocol import H2Protocol
from grpclib.utils import DeadlineWrapper, Wrapper

from ctrd import authz, errdefs, namespaces
from ctrd.authz import Peer
from ctrd.wire import _mode
from ctrd.wire._h2 import LargeFrameProtocol, events_processor
from ctrd.wire._observe import CallObserver, CallRecord
from ctrd.wire._stream import CallStream, ConnectionRooms, ServerRooms
from ctrd.wire.peer import peer_of
from ctrd.wire.status import CODE_NAMES, status_for

__all__ = ["KINDS", "Authorize", "GrpcListener", "Method", "prepare_unix_socket", "rebind"]

log = logging.getLogger("ctrd.grpc")

KINDS: Final[dict[Cardinality, str]] = {
    Cardinality.UNARY_UNARY: "unary",
    Cardinality.STREAM_UNARY: "client_stream",
    Cardinality.UNARY_STREAM: "server_stream",
    Cardinality.STREAM_STREAM: "bidi_stream",
}
"""The kind of a call by its cardinality, in go-grpc-prometheus's words."""


Method = _const.Handler
"""One entry of a servable's ``__mapping__()``: the handler of a method, its cardinality and types."""


def rebind(
    method: Method,
    func: Callable[[Any], Awaitable[None]],
    *,
    request_type: Any = None,
    reply_type: Any = None,
) -> Method:
    """*method* served by *func* (which takes the :class:`ctrd.wire.Call`), with other types if given.

    A service replaces a generated handler with its own this way (a hand-written
    codec's types: :mod:`ctrd.wire.codecs`).
    """
    return _const.Handler(
        func,
        method.cardinality,
        request_type if request_type is not None else method.request_type,
        reply_type if reply_type is not None else method.reply_type,
    )


class Authorize(Protocol):
    """What the server asks about each call (``ctrd.server.authz.Authorizer``)."""

    def authorize(self, method: str, peer: Peer, namespace: str | None) -> None:
        """Check a call of *method* by *peer* in *namespace*. :raises authz.Denied:"""

    def denied(self, method: str, exc: authz.Denied) -> None:
        """Log a denied call."""


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
    _protocol: Any = None
    _live = 0  # handler tasks of this connection not finished yet
    _reading_paused = False
    _peer: Peer | None = None

    def __init__(self, listener: GrpcListener, registry: set[Any], *args: Any) -> None:
        super().__init__(*args)
        self._listener = listener
        self._registry = registry
        self.rooms = ConnectionRooms(listener._rooms)

    def attach(self, protocol: _ServerProtocol) -> None:
        """The connection's protocol (its transport and its reading, paused while too many of its
        calls are still running)."""
        self._protocol = protocol
        self._transport = protocol._transport

    def peer(self) -> Peer:
        """The client of this connection, identified once (an unidentifiable one is ``unknown``)."""
        peer = self._peer
        if peer is None:
            try:
                peer = self._listener._identify(self._transport)
            except Exception as exc:  # never a reason to fail open
                log.warning("cannot identify a client (%s); it matches no principal", exc)
                peer = Peer("unknown")
            self._peer = peer
        return peer

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


class _ServerProtocol(LargeFrameProtocol):
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

    def __init__(self, handler: _Handler, fast: bool, *args: Any) -> None:
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
        if isinstance(handler, _Handler):
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
        if isinstance(handler, _Handler) and not handler._live:
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


class _Server(_gs.Server):
    """grpclib's server over ctrd's protocol and call handling."""

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
        return _ServerProtocol(handler, self._listener._fast, self._config, self._h2_config)


class _Request(NamedTuple):
    """A call that passed grpclib's checks of its headers."""

    method_name: str
    method: Any  # grpclib's const.Handler
    deadline: Deadline | None
    metadata: Any
    user_agent: str | None


async def _accepted(handler: _Handler, h2_stream: Any, headers: Any) -> _Request | None:
    """grpclib's checks of a request's headers, with its answers; ``None`` when answered."""
    headers_map = dict(headers)
    if headers_map[":method"] != "POST":
        await _abort_with_content_type(h2_stream, 405)
        return None
    content_type = headers_map.get("content-type")
    if content_type is None:
        await _abort_with_content_type(h2_stream, 415, Status.UNKNOWN, "Missing content-type header")
        return None
    base_type, _, sub_type = content_type.partition("+")
    if base_type != GRPC_CONTENT_TYPE or (sub_type or "proto") != handler.codec.__content_subtype__:
        await _abort_with_content_type(h2_stream, 415, Status.UNKNOWN, "Unacceptable content-type header")
        return None
    if headers_map.get("te") != "trailers":
        await _abort_with_content_type(
            h2_stream, 400, Status.UNKNOWN, 'Required "te: trailers" header is missing'
        )
        return None
    method_name = headers_map[":path"]
    method = handler.mapping.get(method_name)
    if method is None:
        await _abort_with_content_type(h2_stream, 200, Status.UNIMPLEMENTED, _METHOD_NOT_FOUND)
        return None
    deadline = None
    if "grpc-timeout" in headers_map:
        try:
            deadline = Deadline.from_headers(headers)
        except ValueError:
            await _abort_with_content_type(h2_stream, 200, Status.UNKNOWN, "Invalid grpc-timeout header")
            return None
    return _Request(method_name, method, deadline, decode_metadata(headers), headers_map.get("user-agent"))


def _cancel_code(stream: CallStream) -> str:
    """Why a call's handler was cancelled: its deadline, else the client (reset or connection lost).

    OK if the call had already ended with OK trailers: a handler's last reply can
    leave with them (``send_last``) while it still tidies up (closing a committed
    writer); a client that has its answer may close the connection then, which
    cancels the tidying, not the call the client saw succeed.
    """
    if stream._send_trailing_metadata_done:
        return "OK"
    wrapper = getattr(stream._stream, "wrapper", None)
    if isinstance(getattr(wrapper, "_error", None), TimeoutError):
        return "DeadlineExceeded"
    return "Canceled"


class GrpcListener:
    """Serves the given servables on a unix socket and optionally TCP(+TLS).

    :param max_recv: the largest request message (``[grpc] max_recv_message_size``).
    :param max_send: the largest reply message.
    :param observer: told about every call (the metrics).
    :param authorizer: checks every call (``[authorization]``).
    :param identify: who the client of a transport is (:func:`~ctrd.wire.peer.peer_of`).
    """

    def __init__(
        self,
        servables: Iterable[Any],
        *,
        max_recv: int,
        max_send: int,
        observer: CallObserver | None = None,
        authorizer: Authorize | None = None,
        identify: Callable[[Any], Peer] = peer_of,
    ) -> None:
        self._fast = _mode.prepare()
        self._servables = list(servables)
        self._max_recv = max_recv
        self._max_send = max_send
        self._stream_class = type("CallStream", (CallStream,), {"recv_limit": max_recv, "fast": self._fast})
        self._tracker = _Tracker()
        self._rooms = ServerRooms()
        self._servers: list[_gs.Server] = []
        self._unix_paths: list[str] = []
        self._observer = observer
        self._authz = authorizer
        self._identify = identify
        if observer is not None:
            for servable in self._servables:
                for path, method in servable.__mapping__().items():
                    observer.method(path, KINDS[method.cardinality])

    @property
    def inflight(self) -> int:
        """Calls being served now."""
        return len(self._tracker.inflight)

    def _new_server(self) -> _gs.Server:
        return _Server(self._servables, self)

    async def _serve(
        self, handler: _Handler, h2_stream: Any, headers: Any, release_stream: Callable[[], Any]
    ) -> None:
        """One call: grpclib's ``request_handler`` with ctrd's stream class and interception.

        The same checks and answers as grpclib's (:func:`_accepted`), the same
        deadline and cancellation handling (:meth:`_run`); then the namespace and
        lease of the call are set, the call observed and domain errors translated
        (:meth:`_call`).
        """
        try:
            request = await _accepted(handler, h2_stream, headers)
            if request is not None:
                await self._run(handler, h2_stream, request)
        except ProtocolError:
            log.exception("Application error")
        except Exception:
            log.exception("Server error")
        finally:
            release_stream()

    async def _run(self, handler: _Handler, h2_stream: Any, request: _Request) -> None:
        method, deadline, metadata = request.method, request.deadline, request.metadata
        async with self._stream_class(
            h2_stream,
            request.method_name,
            method.cardinality,
            method.request_type,
            method.reply_type,
            codec=handler.codec,
            status_details_codec=handler.status_details_codec,
            dispatch=handler.dispatch,
            deadline=deadline,
            user_agent=request.user_agent,
        ) as stream:
            stream.rooms = handler.rooms
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
                    record = self._observer.started(request.method_name) if self._observer else None
                    if record is None:
                        await self._call(method.func, request.method_name, stream, handler)
                    else:
                        await self._observed(record, method, request.method_name, stream, handler)
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

    async def _observed(
        self, record: CallRecord, method: Any, name: str, stream: CallStream, handler: _Handler
    ) -> None:
        """:meth:`_call`, reporting the status sent (and, through the stream, the messages) to *record*."""
        stream.record = record
        code = "Unknown"
        try:
            await self._call(method.func, name, stream, handler)
            if method.cardinality.server_streaming or stream._send_message_done:
                code = "OK"
            # else grpclib answers UNKNOWN: a unary reply without a message
        except GRPCError as exc:
            code = CODE_NAMES.get(exc.status, "Unknown")
            raise
        except asyncio.CancelledError:
            code = _cancel_code(stream)
            raise
        except StreamTerminatedError:
            code = "OK" if stream._send_trailing_metadata_done else "Canceled"
            raise
        finally:
            record.finished(code)

    async def _call(
        self, func: Callable[[Any], Awaitable[None]], name: str, stream: Any, handler: _Handler
    ) -> None:
        """Run a handler: refused while draining, or when not authorized; domain errors
        become gRPC statuses."""
        if self._tracker.draining:
            raise GRPCError(Status.UNAVAILABLE, "server is shutting down")
        try:
            if self._authz is not None:
                self._authz.authorize(name, handler.peer(), namespaces.current())
            await func(stream)
        except authz.Denied as exc:
            if self._authz is not None:
                self._authz.denied(name, exc)
            if self._observer is not None:
                self._observer.denied(name)
            raise status_for(exc) from exc
        except errdefs.Error as exc:
            raise status_for(exc) from exc
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

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let in-flight calls finish within *grace* seconds, then close.

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
                await asyncio.wait(waits, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
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
