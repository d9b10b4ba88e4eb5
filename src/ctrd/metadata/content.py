"""The namespaced content store and the content sharing policy.

Wraps a backend :class:`~ctrd.content.Store` (blobs stored once, by digest) and
records per namespace which blobs and ingests are visible. Every call requires
a namespace (:func:`ctrd.namespaces.required`) and sees only that namespace.

Sharing policy (``Writer`` with an expected digest that is not yet in the
caller's namespace but is in the backend):

* ``shared``: no backend writer is opened; the writer reports offset = total =
  size and digest = expected, and a commit without data admits the blob.
* ``isolated``: a backend writer is opened *without* the expected digest, so
  the caller must upload every byte; the commit verifies size and digest before
  the existing blob is admitted (no second copy on disk). Blobs held by a
  namespace labelled ``containerd.io/namespace.shareable=true`` are admitted as
  under ``shared``.

Knowing a digest never reveals anything under ``isolated``: Info, Read, Update,
Delete, Status, Abort and List consult only the caller's own rows.

A full disk: a backend write, open or commit failing with ``ResourceExhausted``
tells the database's :class:`~ctrd.metadata._reserve.SpaceReserve`, which gives
its space back for deletions; until space returns, opening an ingest and writing
to one fail with ``ResourceExhausted`` at once (commits, deletions and reads go on).

Here: the store's read, list, update and delete path and its ingest queries.
Opening a writer (the sharing decision) is :mod:`ctrd.metadata._ingests`, the
writer and the commit path :mod:`ctrd.metadata._writer`, and the SQL that
narrows a List :mod:`ctrd.metadata._prefilter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Final

from ctrd import _aio, _faults, errdefs, filters, limits, namespaces
from ctrd.content import Info, InfoRecord, ReaderAt, Status, Store, Writer, utcnow
from ctrd.content import digest as _digest
from ctrd.metadata import _lease_refs
from ctrd.metadata._gate import BlobGate
from ctrd.metadata._ingests import KeyedLocks, open_writer
from ctrd.metadata._prefilter import sql_prefilter
from ctrd.metadata._types import CommitGuard, CommitObserver, DeletionObserver
from ctrd.metadata._writer import validate_labels, with_ref
from ctrd.metadata.db import DB, from_us, labels_from_json, labels_to_json, to_us
from ctrd.metadata.policy import SharingPolicy

__all__ = ["ContentStats", "NamespacedContentStore", "SharingStats"]

log = logging.getLogger("ctrd.metadata")

_WALK_BATCH = 1000
_INFO_CACHE_MAX = 65536

# InfoRecord(...) without the named tuple's Python-level __new__ (the List loop's hottest call)
_new_record: Final = functools.partial(tuple.__new__, InfoRecord)


class SharingStats:
    """Counters about the sharing policy (read by the metrics plugin)."""

    def __init__(self) -> None:
        self.admissions = 0
        self.saved_bytes = 0
        self.isolated_reuploads = 0


class ContentStats:
    """Byte and operation counters of the namespaced store (read by the metrics endpoint)."""

    def __init__(self) -> None:
        self.ingested_bytes = 0
        self.read_bytes = 0
        self.commits = 0
        self.aborts = 0


class _CountingReader:
    """A backend reader that adds the bytes it returns to :attr:`ContentStats.read_bytes`."""

    def __init__(self, reader: ReaderAt, stats: ContentStats) -> None:
        self._reader = reader
        self._stats = stats

    @property
    def size(self) -> int:
        return self._reader.size

    async def read_at(self, offset: int, n: int) -> bytes:
        data = await self._reader.read_at(offset, n)
        self._stats.read_bytes += len(data)
        return data

    async def close(self) -> None:
        await self._reader.close()


def _row_info(row: Sequence[object]) -> Info:
    d, size, created, updated, labels = row
    return Info(
        digest=str(d),
        size=int(size),  # type: ignore[call-overload]
        created_at=from_us(int(created)),  # type: ignore[call-overload]
        updated_at=from_us(int(updated)),  # type: ignore[call-overload]
        labels=labels_from_json(str(labels)),
    )


class NamespacedContentStore:
    """Implements :class:`ctrd.content.Store` over the metadata database."""

    def __init__(
        self,
        db: DB,
        backend: Store,
        policy: SharingPolicy = SharingPolicy.SHARED,
        *,
        on_delete: DeletionObserver | None = None,
        on_commit: CommitObserver | None = None,
    ) -> None:
        self._db = db
        self._info_cache: dict[tuple[str, str], tuple[int, Info]] = {}
        #: the blob epoch of every entry of ``_info_cache``
        self._info_epoch = 0
        #: serialises opening and aborting one (namespace, ref)
        self._ref_locks = KeyedLocks()
        self._backend = backend
        self.policy = policy
        self.stats = SharingStats()
        self.content_stats = ContentStats()
        self._on_delete: list[DeletionObserver] = [] if on_delete is None else [on_delete]
        self._on_commit: list[CommitObserver] = [] if on_commit is None else [on_commit]
        self._guards: list[CommitGuard] = []
        #: shared with the garbage collector (see :mod:`ctrd.metadata._gate`)
        self.gate = BlobGate()

    # -- hooks (:class:`ctrd.metadata.ContentHooks`) -----------------------------------------

    def observe_deletions(self, callback: DeletionObserver) -> None:
        """Call *callback* after each successful :meth:`delete` (the GC scheduler counts them)."""
        self._on_delete.append(callback)

    def observe_commits(self, callback: CommitObserver) -> None:
        """Await *callback* with ``(namespace, digest, size)`` after a commit admitted a new blob
        into a namespace (not on ``AlreadyExists``); the content gRPC plugin publishes
        ``/content/create`` this way. Its errors are logged."""
        self._on_commit.append(callback)

    def guard_commits(self, guard: CommitGuard) -> None:
        """Enter *guard* around every commit (see :data:`ctrd.metadata.CommitGuard`); an error
        on entering refuses the commit and keeps the ingest. Guards nest in registration order."""
        self._guards.append(guard)

    @property
    def backend(self) -> Store:
        """The store holding the bytes."""
        return self._backend

    def _gate(self, what: str) -> None:
        """Refuse new data while the disk is full (see :mod:`ctrd.metadata._reserve`)."""
        reserve = self._db.reserve
        if reserve is not None and reserve.low:
            reserve.gate(what)

    def _out_of_space(self) -> None:
        """A backend write failed with ``ResourceExhausted``: maybe the disk is full."""
        reserve = self._db.reserve
        if reserve is not None:
            reserve.full()

    # -- provider / info -----------------------------------------------------------------

    async def info(self, dgst: str) -> Info:
        ns = namespaces.required()
        key = (ns, dgst)
        epoch = self._db.blob_epoch
        hit = self._info_cache.get(key)
        if hit is not None and hit[0] == epoch:
            return hit[1]
        _digest.validate(dgst)
        row = await self._db.view_one(
            "SELECT digest, size, created_at, updated_at, labels FROM blobs "
            "WHERE namespace = ? AND digest = ?",
            (ns, dgst),
        )
        if row is None:
            raise errdefs.NotFound(f"content digest {dgst}")
        info = _row_info(row)
        # Cached per (namespace, digest): a hit never crosses namespaces, and any
        # commit that deleted or updated blob rows (delete, label update, GC) moves
        # the epoch and so invalidates every entry filled before it. Those entries can
        # never hit again: they are dropped at the first fill after the move (kept,
        # they piled up to the size bound, ~1 KiB each, under a steady mix of writes).
        if self._info_epoch != epoch or len(self._info_cache) >= _INFO_CACHE_MAX:
            self._info_cache.clear()
            self._info_epoch = epoch
        self._info_cache[key] = (epoch, info)
        return info

    async def committed(self, dgst: str) -> bool:
        """Whether :meth:`info` would find *dgst* in the caller's namespace, without raising."""
        ns = namespaces.required()
        hit = self._info_cache.get((ns, dgst))
        if hit is not None and hit[0] == self._db.blob_epoch:
            return True
        try:
            _digest.validate(dgst)
        except errdefs.InvalidArgument:
            return False
        row = await self._db.view_one("SELECT 1 FROM blobs WHERE namespace = ? AND digest = ?", (ns, dgst))
        return row is not None

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        ns = namespaces.required()
        dgst = info.digest
        _digest.validate(dgst)
        async with self._db.update(inline=True) as tx:
            row = await tx.one(
                "SELECT digest, size, created_at, updated_at, labels FROM blobs "
                "WHERE namespace = ? AND digest = ?",
                (ns, dgst),
            )
            if row is None:
                raise errdefs.NotFound(f"content digest {dgst}")
            cur = _row_info(row)
            new = dict(cur.labels)
            if not fieldpaths:
                new = dict(info.labels)
            else:
                for path in fieldpaths:
                    if path == "labels":
                        new = dict(info.labels)
                    elif path.startswith("labels."):
                        key = path[len("labels.") :]
                        val = info.labels.get(key, "")
                        if val:
                            new[key] = val
                        else:
                            new.pop(key, None)
                    else:
                        raise errdefs.InvalidArgument(
                            f'cannot update "{path}" field on content info "{dgst}"'
                        )
            new = {k: v for k, v in new.items() if v}
            validate_labels(new)
            now = utcnow()
            await tx.run(
                "UPDATE blobs SET labels = ?, updated_at = ? WHERE namespace = ? AND digest = ?",
                (labels_to_json(new), to_us(now), ns, dgst),
            )
        return Info(digest=dgst, size=cur.size, created_at=cur.created_at, updated_at=now, labels=new)

    async def walk(self, *filter_strings: str) -> AsyncIterator[Info]:
        async for batch in self.walk_records(*filter_strings):
            for rec in batch:
                yield Info(
                    digest=rec.digest,
                    size=rec.size,
                    created_at=from_us(rec.created_us),
                    updated_at=from_us(rec.updated_us),
                    labels=rec.labels,
                )

    async def walk_records(self, *filter_strings: str) -> AsyncIterator[list[InfoRecord]]:
        """Batches of the namespace's matching blobs, sorted by digest (what ``List`` streams).

        Simple selectors are pushed into SQL as a necessary condition
        (:func:`~ctrd.metadata._prefilter.sql_prefilter`); every row SQL returns is still matched exactly
        by :mod:`ctrd.filters`.
        """
        ns = namespaces.required()
        flt = filters.parse_all(*filter_strings)
        exact = not flt.matches_all
        where, params = sql_prefilter(flt) if exact else ("", ())
        sql = (
            "SELECT digest, size, created_at, updated_at, labels FROM blobs "
            f"WHERE namespace = ? AND digest > ?{where} ORDER BY digest LIMIT ?"
        )
        match = flt.match
        adaptor = filters.adaptor_from_mapping
        # regexps cost up to milliseconds a row (ctrd.filters bounds it): let other calls in
        slices = _aio.TimeSlice() if flt.has_regexp else None
        # blobs listed together mostly carry the same few label sets: parse each once
        parsed: dict[str, dict[str, str]] = {}
        last = ""
        while True:
            if where:
                # a pushed-down filter may scan far for a page of matches: off the loop
                rows = await self._db.view_all(sql, (ns, last, *params, _WALK_BATCH))
            else:
                # a page of the primary key: about a millisecond, cheaper than a thread hop
                rows = self._db.view_batch(sql, (ns, last, *params, _WALK_BATCH))
                await asyncio.sleep(0)  # let other calls in between pages
            out: list[InfoRecord] = []
            add = out.append
            for d, size, created, updated, labels_json in rows:
                known = parsed.get(labels_json)
                if known is None:
                    if len(parsed) >= 1024:
                        parsed.clear()
                    known = parsed[labels_json] = labels_from_json(labels_json)
                labels = dict(known)  # each record owns its labels
                if slices is not None:
                    await slices.tick()
                if exact and not match(adaptor({"digest": d}, labels)):
                    continue
                add(_new_record((d, size, created, updated, labels)))
            if out:
                yield out
            if len(rows) < _WALK_BATCH:
                return
            last = str(rows[-1][0])

    async def delete(self, dgst: str) -> None:
        """Remove the blob from the namespace; the backend file is left to the garbage collector.

        As in containerd, the file goes at the next collection once no namespace
        holds the digest and no shared writer expects it (:mod:`ctrd.metadata.gc`);
        the deletion observers (:meth:`observe_deletions`) tell the scheduler a collection is due.
        """
        ns = namespaces.required()
        _digest.validate(dgst)
        lease = namespaces.current_lease()
        async with self._db.update(inline=True) as tx:
            n = await tx.run("DELETE FROM blobs WHERE namespace = ? AND digest = ?", (ns, dgst))
            if n == 0:
                raise errdefs.NotFound(f"content digest {dgst}")
            await _lease_refs.remove_resource(tx, ns, lease, "content", dgst)
            _faults.point("metadata.delete.in_tx")
        _faults.point("metadata.delete.after_tx")
        for observe in self._on_delete:
            try:
                observe()
            except Exception:
                log.warning("deletion hook failed for %s in %s", dgst, ns, exc_info=True)

    async def reader_at(self, dgst: str) -> ReaderAt:
        await self.info(dgst)
        return _CountingReader(await self._backend.reader_at(dgst), self.content_stats)

    # -- ingests -------------------------------------------------------------------------

    async def _ingest_row(self, ns: str, ref: str) -> tuple[str, str, int, int] | None:
        row = await self._db.view_one(
            "SELECT backend_ref, expected, expected_size, created_at FROM ingests "
            "WHERE namespace = ? AND ref = ?",
            (ns, ref),
        )
        if row is None:
            return None
        return str(row[0]), str(row[1]), int(row[2]), int(row[3])

    async def status(self, ref: str) -> Status:
        ns = namespaces.required()
        row = await self._ingest_row(ns, ref)
        if row is None or row[1]:
            # shared writers have no backend ingest (containerd: NotFound)
            raise errdefs.NotFound(f"reference {limits.echo(ref)}")
        try:
            st = await self._backend.status(row[0])
        except errdefs.NotFound as exc:
            raise errdefs.NotFound(f"reference {limits.echo(ref)}") from exc
        return with_ref(st, ref)

    async def list_statuses(self, *filter_strings: str) -> list[Status]:
        ns = namespaces.required()
        flt = filters.parse_all(*filter_strings)
        rows = await self._db.view_all(
            "SELECT ref, backend_ref FROM ingests WHERE namespace = ? AND expected = '' ORDER BY ref", (ns,)
        )
        out = []
        slices = _aio.TimeSlice() if flt.has_regexp else None
        for ref, bref in rows:
            if slices is not None:
                await slices.tick()
            if not flt.match(filters.adaptor_from_mapping({"ref": str(ref)}, {})):
                continue
            try:
                st = await self._backend.status(str(bref))
            except errdefs.NotFound:
                continue
            out.append(with_ref(st, str(ref)))
        return out

    async def abort(self, ref: str) -> None:
        ns = namespaces.required()
        lease = namespaces.current_lease()
        async with self._ref_locks.hold((ns, ref)), self._db.update(inline=True) as tx:
            row = await tx.one(
                "SELECT backend_ref, expected FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref)
            )
            if row is None:
                raise errdefs.NotFound(f"reference {limits.echo(ref)}")
            await tx.run("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref))
            await _lease_refs.remove_resource(tx, ns, lease, "ingests", ref)
            if not row[1]:
                with contextlib.suppress(errdefs.NotFound):
                    await self._backend.abort(str(row[0]))
        self.content_stats.aborts += 1

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> Writer:
        limits.check_ref(ref)
        ns = namespaces.required()
        if expected:
            _digest.validate(expected)
        lease = namespaces.current_lease()
        self._gate(f"open ref {ref}")
        async with self._ref_locks.hold((ns, ref)):
            return await open_writer(self, ns, ref, total, expected, lease)
