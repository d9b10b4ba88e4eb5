"""Addresses, the shared connection, request headers and error translation.

Everything the service clients (content, namespaces, leases, events,
introspection) have in common lives here, so that each of them is only
"convert, call, convert back".
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import enum
import os
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any, Final, TypeVar

from grpclib.client import Channel
from grpclib.const import Cardinality

from ctrd import errdefs, namespaces
from ctrd.wire.client import open_channel
from ctrd.wire.status import translate_to_native

__all__ = [
    "ADDRESS_ENV",
    "Address",
    "ChannelScope",
    "ClientScope",
    "Connection",
    "Scope",
    "default_address",
    "lease_key",
    "parse_address",
    "pop_lease",
    "push_lease",
]

ADDRESS_ENV: Final = "CONTAINERD_ADDRESS"
"""The environment variable :class:`~ctrd.client.Client` reads when no address is given."""

_T = TypeVar("_T")

#: "<address>\0<namespace>" -> lease id of the innermost ``client.lease()`` block
_ACTIVE_LEASES: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "ctrd_client_leases", default=None
)


def default_address() -> str:
    """``$CONTAINERD_ADDRESS``, else ctrd's default socket.

    ctrd serves on ``/run/ctrd/ctrd.sock`` as root and on
    ``$XDG_RUNTIME_DIR/ctrd/ctrd.sock`` otherwise (the daemon's own defaults).
    """
    env = os.environ.get(ADDRESS_ENV)
    if env:
        return env
    if os.geteuid() == 0:
        return "/run/ctrd/ctrd.sock"
    run = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), f"ctrd-{os.geteuid()}"
    )
    return os.path.join(run, "ctrd", "ctrd.sock")


@dataclasses.dataclass(frozen=True, slots=True)
class Address:
    """A parsed daemon address: a unix socket *path*, or *host* and *port*."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(address: str) -> Address:
    """Parse ``/path/to.sock``, ``unix:///path/to.sock``, ``host:port``, ``tcp://host:port``
    or ``[::1]:port``.

    :raises errdefs.InvalidArgument: an empty address, an unknown scheme or a bad port.
    """
    addr = address.strip()
    if not addr:
        raise errdefs.InvalidArgument("empty address")
    if addr.startswith("unix://"):
        path = addr[len("unix://") :]
        if not path:
            raise errdefs.InvalidArgument(f"address {address!r}: empty socket path")
        return Address(path=path)
    scheme = ""
    if "://" in addr:
        scheme, _, addr = addr.partition("://")
        if scheme not in ("tcp", "http", "grpc"):
            raise errdefs.InvalidArgument(f"address {address!r}: unsupported scheme {scheme!r}")
    if not scheme and (addr.startswith((".", "/", "~")) or ":" not in addr):
        return Address(path=os.path.expanduser(addr))
    if addr.startswith("["):
        host, sep, rest = addr[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise errdefs.InvalidArgument(f"address {address!r}: expected [host]:port")
        port_s = rest[1:]
    else:
        host, _, port_s = addr.rpartition(":")
    try:
        port = int(port_s)
    except ValueError:
        raise errdefs.InvalidArgument(f"address {address!r}: bad port {port_s!r}") from None
    if not 0 < port < 65536:
        raise errdefs.InvalidArgument(f"address {address!r}: port out of range")
    return Address(host=host or "127.0.0.1", port=port)


class _State(enum.Enum):
    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


class Connection:
    """One grpclib :class:`Channel` shared by a client and all its views.

    The channel is created on first use, inside the running event loop.
    """

    def __init__(self, address: Address, timeout: float | None) -> None:
        self.address = address
        self.timeout = timeout
        self._channel: Channel | None = None
        self._state = _State.UNOPENED

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._state is _State.CLOSED

    def channel(self) -> Channel:
        """The channel (created now if needed).

        :raises errdefs.FailedPrecondition: the client was closed.
        """
        if self._state is _State.CLOSED:
            raise errdefs.FailedPrecondition("client is closed")
        if self._channel is None:
            if self.address.path is not None:
                self._channel = open_channel(path=self.address.path)
            else:
                self._channel = open_channel(host=self.address.host, port=self.address.port)
            self._state = _State.OPENED
        return self._channel

    def close(self) -> None:
        """Close the channel; later calls raise :class:`errdefs.FailedPrecondition`."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._state = _State.CLOSED

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
                raise errdefs.Unavailable(f"cannot connect to {self.address}: {reason}") from cause
            raise


class Scope:
    """What a call needs besides its request: channel, headers, timeout, error translation.

    :class:`ClientScope` serves :class:`~ctrd.client.Client` views; :class:`ChannelScope`
    serves a bare grpclib :class:`Channel` (the low-level
    :class:`~ctrd.client.RemoteContentStore` constructor).
    """

    timeout: float | None
    """Deadline of unary calls and idle limit of streams, in seconds."""

    def channel(self) -> Channel:
        """The channel to call on."""
        raise NotImplementedError

    def metadata(self) -> dict[str, str]:
        """Request headers for a call made now."""
        raise NotImplementedError

    def translate(self) -> contextlib.AbstractContextManager[None]:
        """Context manager turning transport errors into :mod:`ctrd.errdefs` errors."""
        return translate_to_native()

    async def unary(self, path: str, request: Any, reply_type: type[_T]) -> _T:
        """One unary call with the scope's headers and deadline; errors translated."""
        channel = self.channel()
        with self.translate():
            async with channel.request(
                path,
                Cardinality.UNARY_UNARY,
                type(request),
                reply_type,
                timeout=self.timeout,
                metadata=self.metadata(),
            ) as stream:
                await stream.send_message(request, end=True)
                reply = await stream.recv_message()
                if reply is None:  # pragma: no cover - grpclib raises the status first
                    raise errdefs.Unknown(f"{path}: no reply")
                return reply

    async def server_stream(self, path: str, request: Any, reply_type: type[_T]) -> AsyncGenerator[_T, None]:
        """A server-streaming call. The timeout bounds the wait for *each* message
        (an idle limit), not the whole stream; errors translated.

        Close the iterator (``contextlib.aclosing``) when stopping early: that
        cancels the stream at once.
        """
        channel = self.channel()
        with self.translate():
            async with channel.request(
                path, Cardinality.UNARY_STREAM, type(request), reply_type, metadata=self.metadata()
            ) as stream:
                await stream.send_message(request, end=True)
                while True:
                    async with asyncio.timeout(self.timeout):
                        msg = await stream.recv_message()
                    if msg is None:
                        break
                    yield msg


class ClientScope(Scope):
    """A :class:`~ctrd.client.Client` view: fixed namespace, optional fixed lease, and the
    lease of the innermost ``client.lease()`` block for this daemon and namespace (from
    any client of the same address)."""

    def __init__(self, conn: Connection, namespace: str, lease: str | None = None) -> None:
        self.conn = conn
        self.namespace = namespace
        self.lease = lease
        self.timeout = conn.timeout

    def channel(self) -> Channel:
        return self.conn.channel()

    def current_lease(self) -> str | None:
        """The lease attached to calls made now."""
        return self.lease or (_ACTIVE_LEASES.get() or {}).get(lease_key(self.conn.address, self.namespace))

    def metadata(self) -> dict[str, str]:
        """``containerd-namespace`` and, when a lease is active, ``containerd-lease``."""
        md = {namespaces.GRPC_HEADER: self.namespace}
        lease = self.current_lease()
        if lease:
            md[namespaces.LEASE_HEADER] = lease
        return md

    def translate(self) -> contextlib.AbstractContextManager[None]:
        return self.conn.translate()


class ChannelScope(Scope):
    """A bare channel. Namespace and lease come from the current context
    (:func:`ctrd.namespaces.with_namespace`, :func:`ctrd.namespaces.with_lease`), else
    from the defaults given here."""

    def __init__(
        self,
        channel: Channel,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._channel = channel
        self.namespace = namespace
        self.timeout = timeout
        self.extra = dict(metadata or {})

    def channel(self) -> Channel:
        return self._channel

    def metadata(self) -> dict[str, str]:
        md = dict(self.extra)
        ns = namespaces.current() or self.namespace
        if ns:
            md[namespaces.GRPC_HEADER] = ns
        lease = namespaces.current_lease()
        if lease:
            md[namespaces.LEASE_HEADER] = lease
        return md


def lease_key(address: Address, namespace: str) -> str:
    """The key of a lease block: leases are per daemon and namespace."""
    return f"{address}\0{namespace}"


def push_lease(key: str, lease: str) -> contextvars.Token[Mapping[str, str] | None]:
    """Attach *lease* to calls to *key* (:func:`lease_key`) for the current context;
    see :func:`pop_lease`."""
    active = dict(_ACTIVE_LEASES.get() or {})
    active[key] = lease
    return _ACTIVE_LEASES.set(active)


def pop_lease(token: contextvars.Token[Mapping[str, str] | None]) -> None:
    """Undo :func:`push_lease`."""
    _ACTIVE_LEASES.reset(token)
