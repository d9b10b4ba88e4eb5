"""The :class:`Client`: one connection to ctrd or containerd, typed service clients on it."""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final

from ctrd import errdefs, namespaces
from ctrd.api.containerd.services.introspection import v1 as intro_api
from ctrd.api.containerd.services.version import v1 as version_api
from ctrd.api.google import protobuf as pb
from ctrd.client._content_client import ContentClient
from ctrd.client._events import EventsClient
from ctrd.client._images import ImagesClient
from ctrd.client._services import LeasesClient, NamespacesClient, plugin_from_proto
from ctrd.client._transport import ClientScope, default_address, lease_key, pop_lease, push_lease
from ctrd.client._types import Lease, Plugin, ServerInfo, Version
from ctrd.remote import Connection, parse_address

if TYPE_CHECKING:
    from grpclib.client import Channel

__all__ = ["DEFAULT_LEASE_EXPIRE", "Client"]

DEFAULT_LEASE_EXPIRE: Final = _dt.timedelta(hours=24)
"""Expiry of leases made by :meth:`Client.lease` (containerd's Go client uses the same)."""


class Client:
    """An async client of containerd's gRPC API, for ctrd and for containerd.

    ::

        async with Client("/run/ctrd/ctrd.sock", namespace="demo") as client:
            info = await client.content.ingest("my-ref", b"hello")
            print(info.digest, info.size)

    :param address: a unix socket path, ``unix:///path``, ``host:port`` or
        ``tcp://host:port``; ``None``: ``$CONTAINERD_ADDRESS``, else ctrd's
        default socket.
    :param namespace: the namespace of every call; ``None``:
        ``$CONTAINERD_NAMESPACE``, else ``default``.
    :param timeout: seconds; the deadline of each unary call and the longest
        wait for each message of a stream (reads, listings, writes). Event
        subscriptions wait without limit. ``None``: no limit.

    Nothing connects until the first call. :meth:`with_namespace` and
    :meth:`with_lease` return views that share the connection; closing the
    client (``await client.close()`` or leaving ``async with``) closes it for
    all views. Every error is a :mod:`ctrd.errdefs` error:
    :class:`~ctrd.errdefs.Unavailable` when the daemon cannot be reached,
    :class:`~ctrd.errdefs.DeadlineExceeded` past the timeout, and the
    daemon's own classes (``NotFound``, ``AlreadyExists``, ...).

    :raises errdefs.InvalidArgument: a malformed address.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
        channel: Channel | None = None,
    ) -> None:
        if channel is not None:
            # a channel the caller made and keeps (an in-memory one in tests:
            # GrpcListener.in_memory()); it is not closed with the client
            raw = address or "in-memory"
            conn = Connection.over(channel, raw, timeout=timeout)
            self._init(conn, raw, namespace or namespaces.default_from_env(), None, owner=False)
            return
        raw = address if address else default_address()
        conn = Connection(parse_address(raw), timeout=timeout)
        self._init(conn, raw, namespace or namespaces.default_from_env(), None, owner=True)

    def _init(self, conn: Connection, raw: str, namespace: str, lease: str | None, *, owner: bool) -> None:
        self._conn = conn
        self._raw_address = raw
        self._owner = owner
        self._scope = ClientScope(conn, namespace, lease)
        self._content: ContentClient | None = None
        self._namespaces: NamespacesClient | None = None
        self._leases: LeasesClient | None = None
        self._events: EventsClient | None = None
        self._images: ImagesClient | None = None

    def _view(self, namespace: str, lease: str | None) -> Client:
        view = Client.__new__(Client)
        view._init(self._conn, self._raw_address, namespace, lease, owner=False)
        return view

    # -- identity -----------------------------------------------------------

    @property
    def address(self) -> str:
        """The address as given (or as defaulted)."""
        return self._raw_address

    @property
    def namespace(self) -> str:
        """The namespace every call of this view is made in."""
        return self._scope.namespace

    @property
    def timeout(self) -> float | None:
        """See the class docstring."""
        return self._conn.timeout

    @property
    def lease_id(self) -> str | None:
        """The lease attached to calls made now (a view's own, or the innermost
        :meth:`lease` block of this namespace), if any."""
        return self._scope.current_lease()

    def with_namespace(self, namespace: str) -> Client:
        """A view of this client in *namespace*, sharing its connection."""
        return self._view(namespace, self._scope.lease)

    def with_lease(self, lease_id: str | None) -> Client:
        """A view whose calls all carry *lease_id* (``None``: none of its own)."""
        return self._view(self._scope.namespace, lease_id)

    # -- services -----------------------------------------------------------

    @property
    def content(self) -> ContentClient:
        """Blobs and ingests of this namespace."""
        if self._content is None:
            self._content = ContentClient(self._scope)
        return self._content

    @property
    def namespaces(self) -> NamespacesClient:
        """Namespaces (create, list, label, delete)."""
        if self._namespaces is None:
            self._namespaces = NamespacesClient(self._scope)
        return self._namespaces

    @property
    def leases(self) -> LeasesClient:
        """Leases of this namespace."""
        if self._leases is None:
            self._leases = LeasesClient(self._scope)
        return self._leases

    @property
    def events(self) -> EventsClient:
        """Publish and subscribe."""
        if self._events is None:
            self._events = EventsClient(self._scope)
        return self._events

    @property
    def images(self) -> ImagesClient:
        """Images of this namespace: records, and pulling and pushing them (registries)."""
        if self._images is None:
            self._images = ImagesClient(self._scope, self)
        return self._images

    async def version(self) -> Version:
        """The daemon's version and revision."""
        resp = await self._scope.unary(
            "/containerd.services.version.v1.Version/Version", pb.Empty(), version_api.VersionResponse
        )
        return Version(version=resp.version, revision=resp.revision)

    async def plugins(self, filters: Sequence[str] = ()) -> list[Plugin]:
        """The daemon's plugins, optionally filtered (fields ``type``, ``id``; e.g.
        ``type==io.containerd.grpc.v1``).

        :raises errdefs.InvalidArgument: a malformed filter.
        """
        if isinstance(filters, str):
            filters = [filters]
        resp = await self._scope.unary(
            "/containerd.services.introspection.v1.Introspection/Plugins",
            intro_api.PluginsRequest(filters=list(filters)),
            intro_api.PluginsResponse,
        )
        return [plugin_from_proto(p) for p in resp.plugins]

    async def server_info(self) -> ServerInfo:
        """The daemon's UUID (stable across restarts) and, when reported, its pid."""
        resp = await self._scope.unary(
            "/containerd.services.introspection.v1.Introspection/Server", pb.Empty(), intro_api.ServerResponse
        )
        return ServerInfo(uuid=resp.uuid, pid=resp.pid, pidns=resp.pidns)

    @contextlib.asynccontextmanager
    async def lease(
        self,
        *,
        id: str = "",  # noqa: A002
        expire: _dt.timedelta | _dt.datetime | None = DEFAULT_LEASE_EXPIRE,
        labels: Mapping[str, str] | None = None,
        delete: bool = True,
        sync_delete: bool = False,
    ) -> AsyncIterator[Lease]:
        """Create a lease and attach it to every call of this namespace made inside the block::

            async with client.lease(expire=timedelta(hours=1)) as lease:
                await client.content.ingest("ref", data)   # held by the lease

        Calls in this namespace from any client of the same address (views,
        other :class:`Client` objects, tasks started inside the block) carry the
        ``containerd-lease`` header; other namespaces and daemons are unaffected. The lease is deleted on
        exit unless *delete* is false (with *sync_delete*, after the collection
        it triggers); its ``containerd.io/gc.expire`` label bounds its life if
        the process dies first.
        """
        lease = await self.leases.create(id, labels=labels, expire=expire)
        token = push_lease(lease_key(self._conn.address, self.namespace), lease.id)
        try:
            yield lease
        finally:
            pop_lease(token)
            if delete:
                with contextlib.suppress(errdefs.NotFound):
                    await self.leases.delete(lease.id, sync=sync_delete)

    # -- lifecycle ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the connection was closed."""
        return self._conn.closed

    async def close(self) -> None:
        """Close the connection (for every view). Idempotent.

        A view (from :meth:`with_namespace`/:meth:`with_lease`) does not own the
        connection: closing a view does nothing.
        """
        if self._owner:
            self._conn.close()

    async def __aenter__(self) -> Client:
        if self._conn.closed:
            raise errdefs.FailedPrecondition("client is closed")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Client({self._raw_address!r}, namespace={self.namespace!r})"
