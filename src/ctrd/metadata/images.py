"""Image records in the metadata database (containerd's ``metadata/images.go``).

An image is a name in a namespace pointing at a root blob (its *target*: a manifest
or an index), with labels. One ``images`` row per record (:mod:`ctrd.metadata._schema`);
the rules (validation, update paths, filter fields) are :mod:`ctrd.images`'.

Semantics kept from containerd 1.6:

* ``create`` sets both times to now; a taken name is ALREADY_EXISTS ``image "<name>"``;
  the namespace is created implicitly;
* ``update`` finds the record by name (NOT_FOUND ``image "<name>"``), applies the field
  paths (``labels``, ``labels.<key>``, ``annotations``, ``annotations.<key>``,
  ``target``; no path: the whole record), validates the result, keeps the creation
  time and sets the update time;
* labels and annotations with an empty value are never stored (and not returned);
* ``list`` takes containerd's filters (:func:`ctrd.images.adaptor`) and answers by
  name, in byte order;
* ``delete`` forgets the record and tells the deletion observers (the GC scheduler),
  as a blob deletion does: what only the image kept alive goes at the next
  collection (:mod:`ctrd.metadata.gc`: an image is a root for its target and for the
  digests its ``containerd.io/gc.ref.content*`` labels name). ``sync`` waits for that
  collection only through :class:`CollectingImageStore` (the images-service plugin
  wraps the store in one when a GC scheduler is loaded); the bare store just deletes.

The target's digest need not be held by the namespace (containerd does not check
either): such an image keeps nothing alive until the namespace obtains the blob.

Every call requires a namespace (:func:`ctrd.namespaces.required`).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final

from ctrd import _aio, errdefs, filters, golang, namespaces
from ctrd.content import utcnow
from ctrd.images import Descriptor, Image, ImageStore, adaptor, apply_update, validate, without_empty
from ctrd.metadata._types import DeletionObserver
from ctrd.metadata.db import DB, Tx, from_us, labels_from_json, labels_to_json, to_us

__all__ = ["CollectingImageStore", "SqliteImageStore"]

log = logging.getLogger("ctrd.metadata")

_LIST_BATCH: Final = 256
"""Rows read (and turned into records) per page of a listing, a few milliseconds at most; the
event loop serves other calls between pages."""

_COLUMNS: Final = "name, media_type, digest, size, annotations, labels, created_at, updated_at"


def _not_found(name: str) -> errdefs.NotFound:
    return errdefs.NotFound(f"image {golang.quote(name)}")


def _from_row(row: Sequence[Any]) -> Image:
    name, media_type, dgst, size, annotations, labels, created, updated = row
    return Image(
        name=str(name),
        target=Descriptor(
            media_type=str(media_type),
            digest=str(dgst),
            size=int(size),
            annotations=labels_from_json(str(annotations)),
        ),
        labels=labels_from_json(str(labels)),
        created_at=from_us(int(created)),
        updated_at=from_us(int(updated)),
    )


async def _write(tx: Tx, ns: str, image: Image, *, insert: bool) -> int:
    t = image.target
    values = (
        t.media_type,
        t.digest,
        t.size,
        labels_to_json(t.annotations),
        labels_to_json(image.labels),
        to_us(image.created_at),
        to_us(image.updated_at),
    )
    if insert:
        return await tx.run(
            f"INSERT OR IGNORE INTO images(namespace, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ns, image.name, *values),
        )
    return await tx.run(
        "UPDATE images SET media_type = ?, digest = ?, size = ?, annotations = ?, labels = ?, "
        "created_at = ?, updated_at = ? WHERE namespace = ? AND name = ?",
        (*values, ns, image.name),
    )


class SqliteImageStore:
    """Implements :class:`ctrd.images.ImageStore` over the metadata database.

    :param on_delete: called after an image is deleted (schedules a collection); more
        observers register through :meth:`observe_deletions`.
    """

    def __init__(self, db: DB, *, on_delete: DeletionObserver | None = None) -> None:
        self._db = db
        self._on_delete: builtins.list[DeletionObserver] = [] if on_delete is None else [on_delete]

    def observe_deletions(self, callback: DeletionObserver) -> None:
        """Call *callback* after each image deletion."""
        self._on_delete.append(callback)

    async def get(self, name: str) -> Image:
        """The record named *name*. :raises errdefs.NotFound: ``image "<name>"``."""
        ns = namespaces.required()
        row = await self._db.view_one(
            f"SELECT {_COLUMNS} FROM images WHERE namespace = ? AND name = ?", (ns, name)
        )
        if row is None:
            raise _not_found(name)
        return _from_row(row)

    async def list(self, *filter_strings: str) -> AsyncIterator[Image]:
        """The records matching any of the filters, by name.

        :raises errdefs.InvalidArgument: a filter does not parse (on the first iteration).
        """
        ns = namespaces.required()
        flt = filters.parse_all(*filter_strings)
        exact = not flt.matches_all
        slices = _aio.TimeSlice() if flt.has_regexp else None
        sql = f"SELECT {_COLUMNS} FROM images WHERE namespace = ? AND name > ? ORDER BY name LIMIT ?"
        last = ""  # names are never empty: name > "" leaves none out
        while True:
            # a page of the primary key: no thread hop; other calls get in between pages
            rows = self._db.view_batch(sql, (ns, last, _LIST_BATCH))
            for row in rows:
                image = _from_row(row)
                if slices is not None:
                    await slices.tick()
                if not exact or flt.match(adaptor(image)):
                    yield image
            if len(rows) < _LIST_BATCH:
                return
            last = str(rows[-1][0])
            await asyncio.sleep(0)

    async def create(self, image: Image) -> Image:
        """Record *image*, created and updated now.

        :raises errdefs.InvalidArgument: see :func:`ctrd.images.validate`.
        :raises errdefs.AlreadyExists: ``image "<name>"``.
        """
        ns = namespaces.required()
        validate(image)
        now = from_us(to_us(utcnow()))
        new = without_empty(Image(image.name, image.target, image.labels, created_at=now, updated_at=now))
        async with self._db.update() as tx:
            await tx.ensure_namespace(ns, to_us(now))
            if not await _write(tx, ns, new, insert=True):
                raise errdefs.AlreadyExists(f"image {golang.quote(image.name)}")
        return new

    async def update(self, image: Image, fieldpaths: Sequence[str] = ()) -> Image:
        """Change the record named ``image.name`` (see the module's documentation).

        :raises errdefs.InvalidArgument: no name, an unknown field path, an invalid result.
        :raises errdefs.NotFound: ``image "<name>"``.
        """
        ns = namespaces.required()
        if not image.name:
            raise errdefs.InvalidArgument("image name is required for update")
        async with self._db.update() as tx:
            row = await tx.one(
                f"SELECT {_COLUMNS} FROM images WHERE namespace = ? AND name = ?", (ns, image.name)
            )
            if row is None:
                raise _not_found(image.name)
            current = _from_row(row)
            updated = apply_update(current, image, fieldpaths)
            validate(updated)
            now = from_us(to_us(utcnow()))
            updated = without_empty(
                Image(updated.name, updated.target, updated.labels, current.created_at, now)
            )
            await _write(tx, ns, updated, insert=False)
        return updated

    async def delete(self, name: str, *, sync: bool = False) -> None:
        """Forget the record, then tell the deletion observers.

        *sync* is accepted for :class:`~ctrd.images.ImageStore` and changes nothing here:
        this store cannot collect (see :class:`CollectingImageStore`).
        :raises errdefs.NotFound: ``image "<name>"``.
        """
        ns = namespaces.required()
        async with self._db.update() as tx:
            n = await tx.run("DELETE FROM images WHERE namespace = ? AND name = ?", (ns, name))
            if not n:
                raise _not_found(name)
        for observe in self._on_delete:
            try:
                observe()
            except Exception:
                log.warning("image deletion hook failed", exc_info=True)


class CollectingImageStore:
    """An :class:`~ctrd.images.ImageStore` whose ``delete(name, sync=True)`` returns after a
    garbage collection (containerd's images service with ``sync``).

    :param images: the store every call goes to.
    :param collect: awaited after a synchronous delete; returns once a collection that
        started after the call has finished (``GCScheduler.schedule_and_wait``). Its
        errors propagate; the image is deleted anyway.
    """

    def __init__(self, images: ImageStore, collect: Callable[[], Awaitable[object]]) -> None:
        self._images = images
        self._collect = collect

    async def get(self, name: str) -> Image:
        return await self._images.get(name)

    def list(self, *filter_strings: str) -> AsyncIterator[Image]:
        return self._images.list(*filter_strings)

    async def create(self, image: Image) -> Image:
        return await self._images.create(image)

    async def update(self, image: Image, fieldpaths: Sequence[str] = ()) -> Image:
        return await self._images.update(image, fieldpaths)

    async def delete(self, name: str, *, sync: bool = False) -> None:
        await self._images.delete(name, sync=sync)
        if sync:
            await self._collect()
