"""``client.namespaces`` and ``client.leases``, plus the introspection conversions."""

from __future__ import annotations

import builtins
import datetime as _dt
from collections.abc import Mapping, Sequence

from ctrd.api.containerd.services.introspection import v1 as intro_api
from ctrd.api.containerd.services.leases import v1 as leases_api
from ctrd.api.containerd.services.namespaces import v1 as ns_api
from ctrd.api.google import protobuf as pb
from ctrd.api.google.protobuf import FieldMask
from ctrd.client._types import GC_EXPIRE_LABEL, Lease, Namespace, Platform, Plugin, PluginError, Resource
from ctrd.remote import Scope
from ctrd.wire.convert import to_utc

__all__ = ["LeasesClient", "NamespacesClient", "expire_label", "plugin_from_proto"]

_NS: str = "/containerd.services.namespaces.v1.Namespaces/"
_LEASES: str = "/containerd.services.leases.v1.Leases/"


def plugin_from_proto(p: intro_api.Plugin) -> Plugin:
    """The SDK :class:`Plugin` for an introspection message."""
    err = None
    if p.init_err is not None and (p.init_err.code or p.init_err.message):
        err = PluginError(code=p.init_err.code, message=p.init_err.message)
    return Plugin(
        type=p.type,
        id=p.id,
        requires=tuple(p.requires),
        platforms=tuple(Platform(x.os, x.architecture, x.variant) for x in p.platforms),
        exports=dict(p.exports),
        capabilities=tuple(p.capabilities),
        error=err,
    )


class NamespacesClient:
    """Namespaces: ``client.namespaces``. Errors are :mod:`ctrd.errdefs` errors."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    async def create(self, name: str, labels: Mapping[str, str] | None = None) -> Namespace:
        """Create *name* with *labels*.

        :raises errdefs.AlreadyExists: the namespace exists.
        :raises errdefs.InvalidArgument: an invalid name or label.
        """
        req = ns_api.CreateNamespaceRequest(namespace=ns_api.Namespace(name=name, labels=dict(labels or {})))
        resp = await self._scope.unary(_NS + "Create", req, ns_api.CreateNamespaceResponse)
        got = resp.namespace
        return Namespace(name=got.name or name, labels=dict(got.labels)) if got else Namespace(name)

    async def get(self, name: str) -> Namespace:
        """The namespace and its labels (containerd answers for unknown names too, with no labels)."""
        resp = await self._scope.unary(
            _NS + "Get", ns_api.GetNamespaceRequest(name=name), ns_api.GetNamespaceResponse
        )
        got = resp.namespace
        return Namespace(name=got.name or name, labels=dict(got.labels)) if got else Namespace(name)

    async def list(self) -> list[Namespace]:
        """All namespaces, with their labels."""
        resp = await self._scope.unary(
            _NS + "List", ns_api.ListNamespacesRequest(), ns_api.ListNamespacesResponse
        )
        return [Namespace(name=n.name, labels=dict(n.labels)) for n in resp.namespaces]

    async def update(
        self,
        name: str,
        labels: Mapping[str, str | None],
        *,
        fieldpaths: Sequence[str] | None = None,
    ) -> Namespace:
        """Change labels of *name*; returns the namespace as it is afterwards.

        By default only the given keys change (``labels.<key>`` paths, as
        ``ctr namespaces label``): a value sets, ``""``/``None`` removes.
        Explicit *fieldpaths* are sent as given.

        :raises errdefs.InvalidArgument: an unsupported path or invalid label.
        """
        paths = list(fieldpaths) if fieldpaths is not None else [f"labels.{k}" for k in labels]
        clean = {k: v for k, v in labels.items() if v}
        req = ns_api.UpdateNamespaceRequest(
            namespace=ns_api.Namespace(name=name, labels=clean), update_mask=FieldMask(paths=paths)
        )
        await self._scope.unary(_NS + "Update", req, ns_api.UpdateNamespaceResponse)
        # containerd's reply carries no namespace: read it back
        return await self.get(name)

    async def delete(self, name: str) -> None:
        """Delete *name*.

        :raises errdefs.NotFound: no such namespace.
        :raises errdefs.FailedPrecondition: the namespace still holds content.
        """
        await self._scope.unary(_NS + "Delete", ns_api.DeleteNamespaceRequest(name=name), pb.Empty)


def expire_label(expire: _dt.timedelta | _dt.datetime, now: _dt.datetime | None = None) -> str:
    """The ``containerd.io/gc.expire`` value (RFC 3339, UTC) for a duration or a time."""
    if isinstance(expire, _dt.timedelta):
        at = (now or _dt.datetime.now(_dt.UTC)) + expire
    else:
        at = expire if expire.tzinfo else expire.replace(tzinfo=_dt.UTC)
    return at.astimezone(_dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lease(msg: leases_api.Lease | None) -> Lease:
    if msg is None:
        return Lease(id="", created_at=to_utc(None))
    return Lease(id=msg.id, created_at=to_utc(msg.created_at), labels=dict(msg.labels))


class LeasesClient:
    """Leases of one namespace: ``client.leases``. Errors are :mod:`ctrd.errdefs` errors.

    A lease keeps what it references (content, ingests, ...) from the garbage
    collector. Calls made inside ``async with client.lease()`` attach new
    content to that lease automatically.
    """

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    async def create(
        self,
        id: str = "",  # noqa: A002 (the wire field's name)
        *,
        labels: Mapping[str, str] | None = None,
        expire: _dt.timedelta | _dt.datetime | None = None,
    ) -> Lease:
        """Create a lease (*id* empty: the server picks one).

        :param expire: sets ``containerd.io/gc.expire`` (a duration from now, or a time).
        :raises errdefs.AlreadyExists: the id is taken.
        """
        all_labels = dict(labels or {})
        if expire is not None:
            all_labels[GC_EXPIRE_LABEL] = expire_label(expire)
        resp = await self._scope.unary(
            _LEASES + "Create", leases_api.CreateRequest(id=id, labels=all_labels), leases_api.CreateResponse
        )
        return _lease(resp.lease)

    async def delete(self, id: str, *, sync: bool = False) -> None:  # noqa: A002
        """Delete the lease; with *sync*, return after the collection it triggers.

        :raises errdefs.NotFound: no such lease.
        """
        await self._scope.unary(_LEASES + "Delete", leases_api.DeleteRequest(id=id, sync=sync), pb.Empty)

    async def list(self, *filters: str) -> list[Lease]:
        """Leases matching any of *filters* (fields ``id``, ``labels.<key>``; none: all)."""
        resp = await self._scope.unary(
            _LEASES + "List", leases_api.ListRequest(filters=list(filters)), leases_api.ListResponse
        )
        return [_lease(x) for x in resp.leases]

    async def add_resource(self, id: str, resource: Resource) -> None:  # noqa: A002
        """Make the lease reference *resource*.

        :raises errdefs.NotFound: no such lease.
        """
        req = leases_api.AddResourceRequest(
            id=id, resource=leases_api.Resource(id=resource.id, type=resource.type)
        )
        await self._scope.unary(_LEASES + "AddResource", req, pb.Empty)

    async def delete_resource(self, id: str, resource: Resource) -> None:  # noqa: A002
        """Drop the lease's reference to *resource* (absent: no error).

        :raises errdefs.NotFound: no such lease.
        """
        req = leases_api.DeleteResourceRequest(
            id=id, resource=leases_api.Resource(id=resource.id, type=resource.type)
        )
        await self._scope.unary(_LEASES + "DeleteResource", req, pb.Empty)

    async def list_resources(self, id: str) -> builtins.list[Resource]:  # noqa: A002
        """What the lease references.

        :raises errdefs.NotFound: no such lease.
        """
        resp = await self._scope.unary(
            _LEASES + "ListResources",
            leases_api.ListResourcesRequest(id=id),
            leases_api.ListResourcesResponse,
        )
        return [Resource(id=r.id, type=r.type) for r in resp.resources]
