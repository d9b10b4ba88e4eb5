"""``containerd.services.leases.v1.Leases`` over a :class:`~ctrd.metadata.LeaseManager`.

A port of containerd's ``services/leases/service.go`` (with ``local.go``): convert
and delegate; the lease store reads the caller's namespace itself, so every call
without a ``containerd-namespace`` header is FAILED_PRECONDITION ``namespace is
required``. Behaviour kept from containerd:

* ``Create`` with an empty id gets a server-generated one
  (``<nanosecond of the second>-<base64url(3 random bytes)>``, what ``ctr leases
  create`` prints); a duplicate is ALREADY_EXISTS ``lease "<id>"``;
* ``Delete`` of an unknown lease is NOT_FOUND ``lease "<id>"``; ``sync`` returns only
  after the garbage collection the deletion triggers has finished;
* ``List`` filters on ``id`` and ``labels.<key>`` (OR-ed filter strings), sorted by id;
* resources: ``content`` (digest), ``ingests``, ``snapshots/<snapshotter>``; any other
  type is UNIMPLEMENTED ``resource type <t> not supported yet``.

Timestamps are aware UTC. Lease operations publish no events (as containerd 1.6).
"""

from __future__ import annotations

from ctrd.api.containerd.services.leases import v1 as api
from ctrd.api.google import protobuf as pb
from ctrd.metadata.leases import Lease, LeaseManager, Resource
from ctrd.wire.convert import to_utc

__all__ = ["LeasesService"]


def _lease_to_proto(lease: Lease) -> api.Lease:
    return api.Lease(id=lease.id, created_at=to_utc(lease.created_at), labels=dict(lease.labels))


def _resource(r: api.Resource | None) -> Resource:
    if r is None:
        return Resource(id="", type="")
    return Resource(id=r.id, type=r.type)


class LeasesService(api.LeasesBase):
    """The Leases gRPC service.

    :param store: the lease manager (the metadata store's :class:`~ctrd.metadata.SqliteLeaseStore`).
    """

    def __init__(self, store: LeaseManager) -> None:
        self._store = store

    async def create(self, message: api.CreateRequest) -> api.CreateResponse:
        """Create a lease (empty id: generated); ``containerd.io/gc.expire`` is honoured by GC."""
        lease = await self._store.create(message.id, dict(message.labels))
        return api.CreateResponse(lease=_lease_to_proto(lease))

    async def delete(self, message: api.DeleteRequest) -> pb.Empty:
        """Delete a lease; with ``sync``, return after the triggered collection finished."""
        await self._store.delete(message.id, sync=message.sync)
        return pb.Empty()

    async def list(self, message: api.ListRequest) -> api.ListResponse:
        """Leases of the caller's namespace matching any filter."""
        leases = await self._store.list(*message.filters)
        return api.ListResponse(leases=[_lease_to_proto(lease) for lease in leases])

    async def add_resource(self, message: api.AddResourceRequest) -> pb.Empty:
        """Reference a resource from a lease (records a reference; admits nothing)."""
        await self._store.add_resource(message.id, _resource(message.resource))
        return pb.Empty()

    async def delete_resource(self, message: api.DeleteResourceRequest) -> pb.Empty:
        """Drop a reference (absent: OK)."""
        await self._store.delete_resource(message.id, _resource(message.resource))
        return pb.Empty()

    async def list_resources(self, message: api.ListResourcesRequest) -> api.ListResourcesResponse:
        """The lease's resources: content, ingests, snapshots."""
        resources = await self._store.list_resources(message.id)
        return api.ListResourcesResponse(resources=[api.Resource(id=r.id, type=r.type) for r in resources])
