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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Final, Protocol

import grpclib.const as _const
import grpclib.server as _gs
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.protocol import H2Protocol
from grpclib.testing import _InMemoryTransport
from grpclib.testing import _Server as _NoServer
from grpclib.utils import DeadlineWrapper, Wrapper

from ctrd import authz, errdefs, namespaces
from ctrd.authz import Peer
from ctrd.wire import _mode
from ctrd.wire._connection import ConnectionHandler, ServerProtocol
from ctrd.wire._observe import CallObserver, CallRecord
from ctrd.wire._request import Request, TaskWrapper, Tracker, accepted, cancel_code
from ctrd.wire._stream import CallStream, ServerRooms
from ctrd.wire.client import open_channel
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


class _Server(_gs.Server):
    """grpclib's server over ctrd's protocol and call handling."""

    def __init__(self, servables: list[Any], listener: GrpcListener) -> None:
        super().__init__(servables)
        self._listener = listener

    def _protocol_factory(self) -> H2Protocol:
        # grpclib's factory, with ctrd's handler and protocol classes.
        self.__gc_step__()
        listener = self._listener
        handler = ConnectionHandler(
            listener._serve,
            listener._tracker.add,
            listener._rooms,
            listener._identify,
            self._handlers,
            self._mapping,
            self._codec,
            self._status_details_codec,
            self.__dispatch__,
        )
        self._handlers.add(handler)
        return ServerProtocol(handler, listener._fast, self._config, self._h2_config)


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
        self._tracker = Tracker()
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
        self, handler: ConnectionHandler, h2_stream: Any, headers: Any, release_stream: Callable[[], Any]
    ) -> None:
        """One call: grpclib's ``request_handler`` with ctrd's stream class and interception.

        The same checks and answers as grpclib's (:func:`~ctrd.wire._request.accepted`), the same
        deadline and cancellation handling (:meth:`_run`); then the namespace and
        lease of the call are set, the call observed and domain errors translated
        (:meth:`_call`).
        """
        try:
            request = await accepted(handler, h2_stream, headers)
            if request is not None:
                await self._run(handler, h2_stream, request)
        except ProtocolError:
            log.exception("Application error")
        except Exception:
            log.exception("Server error")
        finally:
            release_stream()

    async def _run(self, handler: ConnectionHandler, h2_stream: Any, request: Request) -> None:
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
                wrapper = h2_stream.wrapper = Wrapper() if task is None else TaskWrapper(task)
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
        self, record: CallRecord, method: Any, name: str, stream: CallStream, handler: ConnectionHandler
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
            code = cancel_code(stream)
            raise
        except StreamTerminatedError:
            code = "OK" if stream._send_trailing_metadata_done else "Canceled"
            raise
        finally:
            record.finished(code)

    async def _call(
        self, func: Callable[[Any], Awaitable[None]], name: str, stream: Any, handler: ConnectionHandler
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

    @contextlib.asynccontextmanager
    async def in_memory(self) -> AsyncIterator[Channel]:
        """A client channel connected to this listener's server in memory, with no socket.

        The calls go through the same call handling as over a socket (headers,
        statuses, budgets, authorization and observer); tests of servicers and SDK
        code use it (``ctrd.client.Client(channel=...)``).
        """
        srv = self._new_server()
        srv._server = _NoServer()
        srv._server_closed_fut = srv._loop.create_future()
        server_protocol = srv._protocol_factory()
        channel = open_channel()
        channel._protocol = channel._protocol_factory()
        channel._protocol.connection_made(_InMemoryTransport(server_protocol))
        server_protocol.connection_made(_InMemoryTransport(channel._protocol))
        try:
            yield channel
        finally:
            channel.close()
            srv.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 2.0)

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
