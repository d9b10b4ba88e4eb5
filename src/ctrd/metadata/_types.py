"""Interfaces the metadata store offers besides the content Store.

Besides the namespace store, the hooks other components register with the
metadata stores (the stores declare the registration methods; nobody sets their
attributes), and the two faces of the metadata plugin's instance that other
plugins require by type: :class:`MetadataStores` (the service plugins) and
:class:`GarbageCollection` (the garbage collection scheduler).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from ctrd.content import Store
    from ctrd.images import ImageStore
    from ctrd.metadata.gc import GCStats
    from ctrd.metadata.leases import LeaseManager

__all__ = [
    "Collector",
    "CommitGuard",
    "CommitObserver",
    "ContentHooks",
    "DeletionObserver",
    "GarbageCollection",
    "MetadataStores",
    "NamespaceStore",
]

CommitObserver: TypeAlias = Callable[[str, str, int], Awaitable[None]]
"""Awaited with ``(namespace, digest, size)`` after a commit admitted a blob into a namespace
(not for ``AlreadyExists``); an error it raises is logged, the commit stands."""

CommitGuard: TypeAlias = Callable[[str, str, int], AbstractAsyncContextManager[object]]
"""Entered with ``(namespace, digest, size)`` around a commit, before anything is committed: the
commit happens inside the context; an error raised on entering refuses the commit (the ingest is
kept). *digest* is the expected digest (or that of the bytes written), *size* the ingest's size."""

DeletionObserver: TypeAlias = Callable[[], None]
"""Called after a deletion that may have left garbage (a blob, a lease, a lease resource or an image);
an error it raises is logged."""


@runtime_checkable
class NamespaceStore(Protocol):
    """Namespaces and their labels."""

    async def create(self, name: str, labels: Mapping[str, str]) -> None:
        """Create *name*. :raises errdefs.AlreadyExists, errdefs.InvalidArgument:"""
        ...

    async def labels(self, name: str) -> dict[str, str]:
        """Labels of *name* (empty for an unknown name, as containerd)."""
        ...

    async def update_labels(self, name: str, labels: Mapping[str, str], *, replace: bool) -> dict[str, str]:
        """Set labels (an empty value deletes); with *replace*, drop all others first.

        Creates the namespace implicitly. Returns the resulting labels.
        :raises errdefs.InvalidArgument:
        """
        ...

    async def list(self) -> list[str]:
        """All namespace names, sorted."""
        ...

    async def delete(self, name: str) -> None:
        """Delete an empty namespace.

        :raises errdefs.NotFound: unknown name.
        :raises errdefs.FailedPrecondition: it still holds images or blobs.
        """
        ...


@runtime_checkable
class ContentHooks(Protocol):
    """Registration of commit and deletion hooks on a namespaced content store."""

    def observe_commits(self, callback: CommitObserver) -> None:
        """Await *callback* after every commit that admits a blob into a namespace."""
        ...

    def guard_commits(self, guard: CommitGuard) -> None:
        """Enter *guard* around every commit (guards nest in registration order)."""
        ...

    def observe_deletions(self, callback: DeletionObserver) -> None:
        """Call *callback* after every blob deletion."""
        ...


class Collector(Protocol):
    """Runs one full garbage collection."""

    async def collect(self) -> GCStats:
        """Collect; concurrent calls run one after the other."""
        ...


@runtime_checkable
class GarbageCollection(Protocol):
    """A metadata store whose garbage a scheduler collects: what ``io.containerd.gc.v1`` plugins require.

    The store builds its own :attr:`collector`; a scheduler decides when to run it,
    from :meth:`mutations` and from the deletions it observes.
    """

    @property
    def collector(self) -> Collector:
        """The store's garbage collector."""
        ...

    def mutations(self) -> int:
        """Write transactions committed so far (a counter that only grows)."""
        ...

    def observe_deletions(self, callback: DeletionObserver) -> None:
        """Call *callback* after every deletion that may have left garbage (blobs, leases, images)."""
        ...


@runtime_checkable
class MetadataStores(Protocol):
    """The stores of a metadata plugin: what the ``io.containerd.service.v1`` plugins serve."""

    @property
    def content(self) -> Store:
        """The namespaced content store (acts in :func:`ctrd.namespaces.required`)."""
        ...

    @property
    def namespaces(self) -> NamespaceStore:
        """The namespace store."""
        ...

    @property
    def leases(self) -> LeaseManager:
        """The lease store."""
        ...

    @property
    def images(self) -> ImageStore:
        """The image store (acts in :func:`ctrd.namespaces.required`)."""
        ...
