"""Content store interfaces: what every content store implementation provides.

containerd's roles, each a small protocol: :class:`Provider` (read),
:class:`InfoProvider` and :class:`Manager` (committed blobs), :class:`IngestManager`
(ingests in progress) and :class:`Ingester` (writers); :class:`Store` is their
composition. Three implementations satisfy :class:`Store`: the local blob store
(:mod:`ctrd.content.local`, no namespaces, no labels), the namespaced metadata
store (:mod:`ctrd.metadata`), and the remote store speaking containerd's
Content gRPC service (:mod:`ctrd.client`). One conformance suite
(``tests/content/suite.py``) runs against all of them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = [
    "CommitChecker",
    "Info",
    "InfoProvider",
    "InfoRecord",
    "IngestManager",
    "Ingester",
    "Manager",
    "Provider",
    "ReaderAt",
    "RecordWalker",
    "Status",
    "Store",
    "Writer",
    "utcnow",
]


def utcnow() -> _dt.datetime:
    """Timezone-aware current UTC time."""
    return _dt.datetime.now(_dt.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Info:
    """A committed blob as seen in one namespace."""

    digest: str
    size: int
    created_at: _dt.datetime
    updated_at: _dt.datetime
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


class InfoRecord(NamedTuple):
    """An :class:`Info` in stored form, for bulk listing without per-blob objects.

    Times are microseconds since the Unix epoch (UTC).
    """

    digest: str
    size: int
    created_us: int
    updated_us: int
    labels: dict[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    """An ingest in progress."""

    ref: str
    offset: int
    total: int
    started_at: _dt.datetime
    updated_at: _dt.datetime
    expected: str = ""


@runtime_checkable
class ReaderAt(Protocol):
    """Random access to a committed blob."""

    @property
    def size(self) -> int:
        """Size of the blob in bytes."""
        ...

    async def read_at(self, offset: int, n: int) -> bytes:
        """Read up to *n* bytes at *offset*; fewer only at the end of the blob."""
        ...

    async def close(self) -> None:
        """Release the underlying resources."""
        ...


@runtime_checkable
class Writer(Protocol):
    """An open ingest. Holds the ref's lock until closed or committed."""

    async def write(self, data: bytes | memoryview) -> int:
        """Append *data*; returns the number of bytes written."""
        ...

    def digest(self) -> str:
        """Digest of the bytes written so far (the expected digest for a shared writer)."""
        ...

    async def status(self) -> Status:
        """Current status of the ingest."""
        ...

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> None:
        """Verify and commit.

        :raises errdefs.FailedPrecondition: size or digest mismatch (the ingest is kept).
        :raises errdefs.AlreadyExists: the blob exists already.
        """
        ...

    async def truncate(self, size: int) -> None:
        """Truncate the ingest (only ``0`` is supported by the local store)."""
        ...

    async def close(self) -> None:
        """Release the lock and keep the data for resumption."""
        ...


@runtime_checkable
class Provider(Protocol):
    """Reads committed blobs (containerd's ``content.Provider``)."""

    async def reader_at(self, dgst: str) -> ReaderAt:
        """Open the blob for reading. :raises errdefs.NotFound:"""
        ...


@runtime_checkable
class InfoProvider(Protocol):
    """Tells about committed blobs (containerd's ``content.InfoProvider``)."""

    async def info(self, dgst: str) -> Info:
        """Return the blob's info. :raises errdefs.NotFound:"""
        ...


@runtime_checkable
class Manager(InfoProvider, Protocol):
    """Manages committed blobs: info, labels, listing, deletion (containerd's ``content.Manager``)."""

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Update mutable fields (labels). :raises errdefs.NotFound, errdefs.InvalidArgument:"""
        ...

    def walk(self, *filters: str) -> AsyncIterator[Info]:
        """Iterate blobs matching any filter, sorted by digest."""
        ...

    async def delete(self, dgst: str) -> None:
        """Remove the blob. :raises errdefs.NotFound:"""
        ...


@runtime_checkable
class IngestManager(Protocol):
    """Manages ingests in progress (containerd's ``content.IngestManager``)."""

    async def status(self, ref: str) -> Status:
        """Status of an ingest. :raises errdefs.NotFound:"""
        ...

    async def list_statuses(self, *filters: str) -> list[Status]:
        """All ingests matching any filter (field ``ref``)."""
        ...

    async def abort(self, ref: str) -> None:
        """Remove an ingest. :raises errdefs.NotFound:"""
        ...


@runtime_checkable
class Ingester(Protocol):
    """Opens writers (containerd's ``content.Ingester``)."""

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> Writer:
        """Open (or resume) the ingest *ref*.

        :raises errdefs.InvalidArgument: empty ref.
        :raises errdefs.Unavailable: the ref is locked by another writer.
        :raises errdefs.AlreadyExists: *expected* is committed already.
        """
        ...


@runtime_checkable
class Store(Manager, Provider, IngestManager, Ingester, Protocol):
    """Full content store: the four roles in one (containerd's ``content.Store``).

    Code that needs less takes the narrowest role: :class:`Provider` to read,
    :class:`Ingester` to write, :class:`Manager` / :class:`InfoProvider` for
    committed blobs' metadata, :class:`IngestManager` for ingests.
    """


@runtime_checkable
class RecordWalker(Protocol):
    """A store that can list blobs in batches of :class:`InfoRecord` (what ``List`` streams)."""

    def walk_records(self, *filters: str) -> AsyncIterator[list[InfoRecord]]:
        """Batches of the blobs matching any filter, sorted by digest; no batch is empty."""
        ...


@runtime_checkable
class CommitChecker(Protocol):
    """A store that tells whether a blob is committed without building its :class:`Info`."""

    async def committed(self, dgst: str) -> bool:
        """Whether :meth:`Store.info` would find *dgst* (any error, such as a malformed digest: no)."""
        ...
