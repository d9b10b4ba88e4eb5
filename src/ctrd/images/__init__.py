"""Images: named pointers to content (a manifest or an index), as containerd keeps them.

The domain types shared by the image store (:mod:`ctrd.metadata`), the Images
service and the SDK's registry client: :class:`Descriptor` (what a blob is:
media type, digest, size, annotations), :class:`Image` (a name, its target
descriptor, labels, times) and :class:`ImageStore` (the namespaced store's role).
Media types of OCI and Docker images are named in :mod:`ctrd.images.mediatypes`.

The rules every image store follows (containerd 1.6's ``metadata/images.go``):
:func:`validate` (what a record must be), :func:`without_empty` (empty label and
annotation values are never stored), :func:`apply_update` (an update's field paths)
and :func:`adaptor` (what a filter sees of a record).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

__all__ = [
    "UPDATE_PATHS",
    "Descriptor",
    "Image",
    "ImageStore",
    "adaptor",
    "apply_update",
    "validate",
    "without_empty",
]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Descriptor:
    """A blob as a manifest names it (containerd's ``types.Descriptor``, OCI's descriptor)."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Image:
    """An image record: *name* (unique in its namespace) pointing at *target*."""

    name: str
    target: Descriptor
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    created_at: _dt.datetime = _EPOCH
    updated_at: _dt.datetime = _EPOCH


@runtime_checkable
class ImageStore(Protocol):
    """The images of the caller's namespace (:func:`ctrd.namespaces.required`), containerd's
    ``images.Store``.

    Errors are :mod:`ctrd.errdefs`: NotFound, AlreadyExists, InvalidArgument.
    """

    async def get(self, name: str) -> Image:
        """The image named *name*."""
        ...

    def list(self, *filters: str) -> AsyncIterator[Image]:
        """The images matching any of *filters* (containerd's filter syntax over ``name``,
        ``target.mediatype``, ``target.digest``, ``labels``), sorted by name."""
        ...

    async def create(self, image: Image) -> Image:
        """Record *image* (created and updated now). :raises errdefs.AlreadyExists:"""
        ...

    async def update(self, image: Image, fieldpaths: Sequence[str] = ()) -> Image:
        """Change the image named ``image.name``: the fields in *fieldpaths* (``labels``,
        ``labels.<key>``, ``annotations``, ``annotations.<key>``, ``target``), or all of it
        but its creation time when empty."""
        ...

    async def delete(self, name: str, *, sync: bool = False) -> None:
        """Forget the image; with *sync*, return once the collection it triggers is done."""
        ...


from ctrd.images._rules import UPDATE_PATHS, adaptor, apply_update, validate, without_empty  # noqa: E402
