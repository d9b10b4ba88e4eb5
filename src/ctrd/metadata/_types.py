"""Interfaces the metadata store offers besides the content Store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

__all__ = ["NamespaceStore"]


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
        :raises errdefs.FailedPrecondition: it still holds blobs.
        """
        ...
