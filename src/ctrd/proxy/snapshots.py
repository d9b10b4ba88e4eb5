"""The snapshot proxy: a snapshotter served by another daemon's Snapshots service.

``[proxy_plugins.<name>] type = "snapshot"`` registers
``io.containerd.snapshotter.v1.<name>`` with a :class:`RemoteSnapshotter` as
its instance, a client of ``containerd.services.snapshots.v1.Snapshots`` that
names the remote snapshotter ``<name>`` in every request (so a proxy called
``native`` pointed at containerd uses containerd's native snapshotter) and acts
in the proxy's remote ``namespace`` (default ``ctrd``).

ctrd has no snapshot service yet; the types here (:class:`SnapshotInfo`,
:class:`Usage`, :class:`Mount`, :class:`Kind`) are the snapshotter interface
that service will use, following containerd's ``snapshots.Snapshotter``:
``stat``, ``update``, ``usage``, ``mounts``, ``prepare``, ``view``, ``commit``,
``remove``, ``walk``, ``cleanup``. Every call is bounded in time and reports an
unreachable remote as UNAVAILABLE naming the address (see
:mod:`ctrd.proxy.connection`).

What ``prepare``, ``view`` and ``commit`` create is labelled
``containerd.io/gc.root`` (unless the caller set it), as the content proxy
labels its commits: containerd's garbage collector removes unreferenced
snapshots, and ctrd holds no lease in the remote daemon. ctrd removes them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from ctrd import namespaces
from ctrd.api.containerd.services.snapshots import v1 as api
from ctrd.api.containerd.types import Mount as _PbMount
from ctrd.api.google.protobuf import FieldMask
from ctrd.labels import GC_ROOT
from ctrd.proxy.connection import CALL_TIMEOUT
from ctrd.proxy.content import gc_root_value
from ctrd.remote import Connection
from ctrd.wire.convert import to_utc
from ctrd.wire.status import translate_to_native

__all__ = ["Kind", "Mount", "RemoteSnapshotter", "SnapshotInfo", "Usage"]


class Kind(enum.IntEnum):
    """Snapshot kind (``containerd.services.snapshots.v1.Kind``)."""

    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3


@dataclasses.dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot as the snapshotter describes it."""

    name: str
    parent: str = ""
    kind: Kind = Kind.UNKNOWN
    created_at: _dt.datetime | None = None
    updated_at: _dt.datetime | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """Disk usage of a snapshot: bytes and inodes."""

    size: int = 0
    inodes: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Mount:
    """One mount of a snapshot (``containerd.types.Mount``)."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()


def _mounts(ms: Sequence[_PbMount]) -> list[Mount]:
    return [Mount(type=m.type, source=m.source, target=m.target, options=tuple(m.options)) for m in ms]


def _rooted(labels: Mapping[str, str] | None) -> dict[str, str]:
    out = dict(labels or {})
    out.setdefault(GC_ROOT, gc_root_value())
    return out


def _info_from_proto(m: api.Info | None) -> SnapshotInfo:
    if m is None:
        return SnapshotInfo(name="")
    return SnapshotInfo(
        name=m.name,
        parent=m.parent,
        kind=Kind(int(m.kind)),
        created_at=to_utc(m.created_at) if m.created_at is not None else None,
        updated_at=to_utc(m.updated_at) if m.updated_at is not None else None,
        labels=dict(m.labels),
    )


def _info_to_proto(info: SnapshotInfo) -> api.Info:
    return api.Info(
        name=info.name,
        parent=info.parent,
        kind=api.Kind(int(info.kind)),
        created_at=to_utc(info.created_at) if info.created_at is not None else None,
        updated_at=to_utc(info.updated_at) if info.updated_at is not None else None,
        labels=dict(info.labels),
    )


class RemoteSnapshotter:
    """A snapshotter over a remote Snapshots service.

    :param conn: the shared connection to the remote daemon.
    :param snapshotter: the remote snapshotter's name (the proxy plugin's name).
    :param namespace: the remote namespace every call acts in.
    :param name: how errors name this snapshotter (the plugin URI).
    :param timeout: seconds one call may take.
    :param on_close: called once by :meth:`aclose`.
    """

    def __init__(
        self,
        conn: Connection,
        snapshotter: str,
        namespace: str,
        *,
        name: str = "snapshot proxy",
        timeout: float = CALL_TIMEOUT,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._conn = conn
        self.snapshotter = snapshotter
        self.namespace = namespace
        self.name = name
        self.timeout = timeout
        self._on_close = on_close

    @property
    def address(self) -> str:
        """The remote address."""
        return self._conn.address

    def _md(self) -> dict[str, str]:
        return {namespaces.GRPC_HEADER: self.namespace}

    def _stub(self) -> api.SnapshotsStub:
        return api.SnapshotsStub(self._conn.channel)

    async def stat(self, key: str) -> SnapshotInfo:
        """Info of snapshot *key*. :raises errdefs.NotFound:"""
        async with self._conn.call(self.name, self.timeout):
            with translate_to_native():
                resp = await self._stub().stat(
                    api.StatSnapshotRequest(snapshotter=self.snapshotter, key=key),
                    metadata=self._md(),
                    timeout=self.timeout,
                )
        return _info_from_proto(resp.info)

    async def update(self, info: SnapshotInfo, *fieldpaths: str) -> SnapshotInfo:
        """Update labels (``labels``, ``labels.<key>``; none = all). :raises errdefs.NotFound:"""
        req = api.UpdateSnapshotRequest(
            snapshotter=self.snapshotter,
            info=_info_to_proto(info),
            update_mask=FieldMask(paths=list(fieldpaths)) if fieldpaths else None,
        )
        async with self._conn.call(self.name, self.timeout):
            with translate_to_native():
                resp = await self._stub().update(req, metadata=self._md(), timeout=self.timeout)
        return _info_from_proto(resp.info)

    async def usage(self, key: str) -> Usage:
        """Bytes and inodes used by snapshot *key*."""
        async with self._conn.call(self.name, self.timeout):
            with translate_to_native():
                resp = await self._stub().usage(
                    api.UsageRequest(snapshotter=self.snapshotter, key=key),
                    metadata=self._md(),
                    timeout=self.timeout,
                )
        return Usage(size=resp.size, inodes=resp.inodes)

    async def mounts(self, key: str) -> list[Mount]:
        """Mounts of the active or view snapshot *key*."""
        async with self._conn.call(self.name, self.timeout):
            with translate_to_native():
                resp = await self._stub().mounts(
                    api.MountsRequest(snapshotter=self.snapshotter, key=key),
                    metadata=self._md(),
                    timeout=self.timeout,
                )
        return _mounts(resp.mounts)

    async def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """Create the active snapshot *key* on *parent* (a committed name, or none)."""
        req = api.PrepareSnapshotRequest(
            snapshotter=self.snapshotter, key=key, parent=parent, labels=_rooted(labels)
        )
        async with self._conn.call(self.name, self.timeout):
            with translate_to_native():
                resp = await self._stub().prepare(req, metadata=self._md(), timeout=self.timeout)
        return _mounts(resp.mounts)

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        """Create the read-only view *key* of *parent*."""
        req = api.ViewSnapshotRequest(
            snapshotter=self.snapshotter, key=key, parent=parent, labels=_rooted(labels)
        )
        async with self._conn.call(self.name, self.timeout):
            with translate_to_native():
                resp = await self._stub().view(req, metadata=self._md(), timeout=self.timeout)
        return _mounts(resp.mounts)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Commit the active snapshot *key* as *name*."""
        req = api.CommitSnapshotRequest(
            snapshotter=self.snapshotter, name=name, key=key, labels=_rooted(labels)
        )
        async with self._conn.call(self.name, self.timeout):
            with translate_to_native():
                await self._stub().commit(req, metadata=self._md(), timeout=self.timeout)

    async def remove(self, key: str) -> None:
        """Remove snapshot *key* (it must have no children)."""
        async with self._conn.call(self.name, self.timeout):
            with translate_to_native():
                await self._stub().remove(
                    api.RemoveSnapshotRequest(snapshotter=self.snapshotter, key=key),
                    metadata=self._md(),
                    timeout=self.timeout,
                )

    async def walk(self, *filters: str) -> AsyncIterator[SnapshotInfo]:
        """Every snapshot matching any filter (``List``; the stream's deadline bounds it)."""
        async with self._conn.call(self.name):
            with translate_to_native():
                async for resp in self._stub().list(
                    api.ListSnapshotsRequest(snapshotter=self.snapshotter, filters=list(filters)),
                    metadata=self._md(),
                    timeout=self.timeout,
                ):
                    for i in resp.info:
                        yield _info_from_proto(i)

    async def cleanup(self) -> None:
        """Ask the snapshotter to release unused resources (UNIMPLEMENTED on containerd 1.6)."""
        async with self._conn.call(self.name, self.timeout):
            with translate_to_native():
                await self._stub().cleanup(
                    api.CleanupRequest(snapshotter=self.snapshotter),
                    metadata=self._md(),
                    timeout=self.timeout,
                )

    async def aclose(self) -> None:
        """Release the connection (the daemon calls this at shutdown)."""
        cb, self._on_close = self._on_close, None
        if cb is not None:
            cb()
