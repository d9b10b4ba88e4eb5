"""Leases in the metadata database (containerd's ``metadata/leases.go`` and ``leases`` service).

A lease is a named, labelled set of references, per namespace, that protects what
it references from garbage collection until the lease is deleted (or expires:
label ``containerd.io/gc.expire``, RFC 3339, interpreted by the collector). What a
call writes while a ``containerd-lease`` header names a lease is attached to it
by the content store (:mod:`ctrd.metadata._lease_refs`); :class:`SqliteLeaseStore`
manages the leases themselves and their resources explicitly.

Resources (``lease_resources`` rows) are typed references, never objects:

* ``content``: the id must be a digest (``invalid content resource id ...``);
* ``ingests``: an ingest ref;
* ``snapshots/<snapshotter>``: a snapshot key (accepted for later; ctrd has no snapshotter);
* any other type: UNIMPLEMENTED ``resource type <t> not supported yet``.

**Isolation.** ``AddResource`` records a reference in the caller's namespace and
nothing else, as containerd does: it does not check that the namespace holds the
blob, and it never admits a blob into the namespace, under either sharing policy.
A lease reference to a digest the namespace does not hold gives no access (Info,
Read, ... consult only the namespace's own blobs) and does not keep another
namespace's blob file alive: the collector marks ``(namespace, digest)`` blob rows
from lease references, and a backend file lives only while some namespace holds a
blob row for it. Should the namespace later obtain the blob the normal way (upload,
or admission under ``shared``), the lease protects it from then on.

GC hooks: deleting a lease (or a lease resource) may make objects unreachable.
The deletion observers (:meth:`SqliteLeaseStore.observe_deletions`; the GC
scheduler registers one through the metadata plugin) are called after such a
change, so a collection gets scheduled. The store cannot collect by itself:
``delete(id, sync=True)`` waits for a collection only through
:class:`CollectingLeaseManager`, which the leases-service plugin puts around the
store when a GC scheduler is loaded (as containerd's leases service does); the
bare store's synchronous delete just deletes.

Every call requires a namespace (:func:`ctrd.namespaces.required`).
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import datetime as _dt
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Protocol, runtime_checkable

from ctrd import _aio, errdefs, filters, identifiers, limits, namespaces
from ctrd import labels as _labels
from ctrd.content import digest as _digest
from ctrd.content import utcnow
from ctrd.metadata._types import DeletionObserver
from ctrd.metadata.db import DB, Tx, from_us, labels_from_json, labels_to_json, to_us

__all__ = [
    "RESOURCE_CONTENT",
    "RESOURCE_INGESTS",
    "RESOURCE_SNAPSHOTS",
    "CollectingLeaseManager",
    "Lease",
    "LeaseManager",
    "Resource",
    "SqliteLeaseStore",
    "generate_id",
]

log = logging.getLogger("ctrd.metadata")

RESOURCE_CONTENT: Final = "content"
RESOURCE_INGESTS: Final = "ingests"
RESOURCE_SNAPSHOTS: Final = "snapshots"

_GENERATE_ATTEMPTS: Final = 5


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """A lease: id, creation time (aware UTC) and labels."""

    id: str
    created_at: _dt.datetime
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    """A reference held by a lease: ``type`` is ``content``, ``ingests`` or ``snapshots/<name>``."""

    id: str
    type: str


@runtime_checkable
class LeaseManager(Protocol):
    """Leases of the caller's namespace and their resources."""

    async def create(self, lease_id: str = "", labels: Mapping[str, str] | None = None) -> Lease:
        """Create a lease (an empty *lease_id* is generated). :raises errdefs.AlreadyExists:"""
        ...

    async def delete(self, lease_id: str, *, sync: bool = False) -> None:
        """Delete a lease; *sync* returns after the collection it triggers. :raises errdefs.NotFound:"""
        ...

    async def list(self, *filter_strings: str) -> list[Lease]:
        """Leases matching any filter (fields ``id``, ``labels.<key>``), sorted by id."""
        ...

    async def add_resource(self, lease_id: str, resource: Resource) -> None:
        """Reference *resource* from lease *lease_id*. :raises errdefs.NotFound:"""
        ...

    async def delete_resource(self, lease_id: str, resource: Resource) -> None:
        """Drop the reference (absent: no-op). :raises errdefs.NotFound: unknown lease."""
        ...

    async def list_resources(self, lease_id: str) -> builtins.list[Resource]:
        """Content, then ingests, then snapshots, each sorted. :raises errdefs.NotFound:"""
        ...


def generate_id() -> str:
    """containerd's ``generateLeaseID``: ``<nanosecond of the second>-<base64url(3 random bytes)>``."""
    nanos = time.time_ns() % 1_000_000_000
    return f"{nanos}-{base64.urlsafe_b64encode(secrets.token_bytes(3)).decode()}"


def _not_found(id_: str) -> errdefs.NotFound:
    return errdefs.NotFound(f"lease {identifiers.go_quote(id_)}")


def parse_resource(resource: Resource) -> tuple[str, str]:
    """Validate *resource*; return ``(type, id)`` as stored (containerd's ``parseLeaseResource``).

    :raises errdefs.InvalidArgument: malformed type or id.
    :raises errdefs.Unimplemented: an unknown type.
    """
    typ, ref = resource.type, resource.id
    limits.check_length("resource type", typ)
    limits.check_length("resource id", ref)
    keys = typ.split("/")
    kind = keys[0]
    if kind in (RESOURCE_CONTENT, RESOURCE_INGESTS):
        if len(keys) != 1:
            raise errdefs.InvalidArgument(f"invalid resource type {limits.echo(typ)}")
        if kind == RESOURCE_CONTENT:
            try:
                _digest.validate(ref)
            except errdefs.InvalidArgument as exc:
                raise errdefs.InvalidArgument(
                    f"invalid content resource id {limits.echo(ref)}: {exc.context}"
                ) from exc
    elif kind == RESOURCE_SNAPSHOTS:
        if len(keys) != 2 or not keys[1]:
            raise errdefs.InvalidArgument(f"invalid snapshot resource type {limits.echo(typ)}")
    else:
        raise errdefs.Unimplemented(f"resource type {limits.echo(typ)} not supported yet")
    if not ref:
        raise errdefs.InvalidArgument(f"resource id must not be empty for type {limits.echo(typ)}")
    return typ, ref


def _validate_labels(labels: Mapping[str, str]) -> None:
    try:
        _labels.validate_all(labels)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"lease.Labels: {exc.context}") from exc


def _adaptor(lease: Lease) -> filters.Adaptor:
    """containerd's ``adaptLease``: ``id`` and ``labels.<key>``."""
    fields = {"id": lease.id} if lease.id else {}
    return filters.adaptor_from_mapping(fields, lease.labels)


async def _lease_exists(tx: Tx, ns: str, id_: str) -> bool:
    return await tx.one("SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (ns, id_)) is not None


class SqliteLeaseStore:
    """Implements :class:`LeaseManager` over the metadata database.

    :param on_delete: called after a lease or lease resource is removed (schedules GC);
        more observers register through :meth:`observe_deletions`.
    """

    def __init__(self, db: DB, *, on_delete: DeletionObserver | None = None) -> None:
        self._db = db
        self._on_delete: builtins.list[DeletionObserver] = [] if on_delete is None else [on_delete]

    def observe_deletions(self, callback: DeletionObserver) -> None:
        """Call *callback* after each removal of a lease or of a lease resource."""
        self._on_delete.append(callback)

    async def create(self, lease_id: str = "", labels: Mapping[str, str] | None = None) -> Lease:
        """Create a lease; the namespace is created implicitly.

        :raises errdefs.AlreadyExists: ``lease "<id>"``.
        :raises errdefs.InvalidArgument: oversize labels.
        """
        ns = namespaces.required()
        limits.check_length("lease id", lease_id)
        clean = {k: v for k, v in (labels or {}).items() if v}
        _validate_labels(clean)
        candidates = [lease_id] if lease_id else [generate_id() for _ in range(_GENERATE_ATTEMPTS)]
        for lid in candidates:
            now = utcnow()
            now_us = to_us(now)
            async with self._db.update() as tx:
                await tx.ensure_namespace(ns, now_us)
                n = await tx.run(
                    "INSERT OR IGNORE INTO leases(namespace, id, created_at, labels) VALUES (?, ?, ?, ?)",
                    (ns, lid, now_us, labels_to_json(clean)),
                )
            if n:
                return Lease(id=lid, created_at=from_us(now_us), labels=clean)
        raise errdefs.AlreadyExists(f"lease {identifiers.go_quote(candidates[-1])}")

    async def delete(self, lease_id: str, *, sync: bool = False) -> None:
        """Delete a lease and its references, then tell the deletion observers.

        *sync* is accepted for :class:`LeaseManager` and changes nothing here: this store
        cannot collect (see :class:`CollectingLeaseManager`).
        :raises errdefs.NotFound: ``lease "<id>"``.
        """
        ns = namespaces.required()
        async with self._db.update() as tx:
            if not await _lease_exists(tx, ns, lease_id):
                raise _not_found(lease_id)
            await tx.run("DELETE FROM lease_resources WHERE namespace = ? AND lease = ?", (ns, lease_id))
            await tx.run("DELETE FROM leases WHERE namespace = ? AND id = ?", (ns, lease_id))
        self._notify()

    def _notify(self) -> None:
        for observe in self._on_delete:
            try:
                observe()
            except Exception:
                log.warning("lease deletion hook failed", exc_info=True)

    async def list(self, *filter_strings: str) -> list[Lease]:
        """Leases matching any of the filters (fields ``id``, ``labels.<key>``), sorted by id.

        :raises errdefs.InvalidArgument: a filter does not parse.
        """
        ns = namespaces.required()
        flt = filters.parse_all(*filter_strings)
        rows = await self._db.view_all(
            "SELECT id, created_at, labels FROM leases WHERE namespace = ? ORDER BY id", (ns,)
        )
        out = []
        slices = _aio.TimeSlice() if flt.has_regexp else None
        for lid, created, labels in rows:
            lease = Lease(id=str(lid), created_at=from_us(int(created)), labels=labels_from_json(str(labels)))
            if slices is not None:
                await slices.tick()
            if flt.match(_adaptor(lease)):
                out.append(lease)
        return out

    async def add_resource(self, lease_id: str, resource: Resource) -> None:
        """Record a reference from lease *lease_id* (the object need not exist; nothing is admitted).

        :raises errdefs.NotFound: unknown lease.
        :raises errdefs.InvalidArgument, errdefs.Unimplemented: see :func:`parse_resource`.
        """
        ns = namespaces.required()
        async with self._db.update() as tx:
            if not await _lease_exists(tx, ns, lease_id):
                raise _not_found(lease_id)
            typ, ref = parse_resource(resource)
            await tx.run(
                "INSERT OR IGNORE INTO lease_resources(namespace, lease, type, id) VALUES (?, ?, ?, ?)",
                (ns, lease_id, typ, ref),
            )

    async def delete_resource(self, lease_id: str, resource: Resource) -> None:
        """Drop a reference (absent: no-op); triggers a collection when one was dropped.

        :raises errdefs.NotFound: unknown lease.
        """
        ns = namespaces.required()
        async with self._db.update() as tx:
            if not await _lease_exists(tx, ns, lease_id):
                raise _not_found(lease_id)
            typ, ref = parse_resource(resource)
            n = await tx.run(
                "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?",
                (ns, lease_id, typ, ref),
            )
        if n:
            self._notify()

    async def list_resources(self, lease_id: str) -> builtins.list[Resource]:
        """The lease's references: content, then ingests, then snapshots; each sorted.

        :raises errdefs.NotFound: unknown lease.
        """
        ns = namespaces.required()
        row = await self._db.view_one("SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (ns, lease_id))
        if row is None:
            raise _not_found(lease_id)
        rows = await self._db.view_all(
            "SELECT type, id FROM lease_resources WHERE namespace = ? AND lease = ? "
            "ORDER BY CASE type WHEN 'content' THEN 0 WHEN 'ingests' THEN 1 ELSE 2 END, type, id",
            (ns, lease_id),
        )
        return [Resource(id=str(rid), type=str(typ)) for typ, rid in rows]


class CollectingLeaseManager:
    """A :class:`LeaseManager` whose ``delete(id, sync=True)`` returns after a garbage collection.

    :param leases: the lease store every call goes to.
    :param collect: awaited after a synchronous delete; returns once a collection that
        started after the call has finished (``GCScheduler.schedule_and_wait``). Its
        errors propagate; the lease is deleted anyway.
    """

    def __init__(self, leases: LeaseManager, collect: Callable[[], Awaitable[object]]) -> None:
        self._leases = leases
        self._collect = collect

    async def create(self, lease_id: str = "", labels: Mapping[str, str] | None = None) -> Lease:
        return await self._leases.create(lease_id, labels)

    async def delete(self, lease_id: str, *, sync: bool = False) -> None:
        await self._leases.delete(lease_id, sync=sync)
        if sync:
            await self._collect()

    async def list(self, *filter_strings: str) -> builtins.list[Lease]:
        return await self._leases.list(*filter_strings)

    async def add_resource(self, lease_id: str, resource: Resource) -> None:
        await self._leases.add_resource(lease_id, resource)

    async def delete_resource(self, lease_id: str, resource: Resource) -> None:
        await self._leases.delete_resource(lease_id, resource)

    async def list_resources(self, lease_id: str) -> builtins.list[Resource]:
        return await self._leases.list_resources(lease_id)
