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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as _dt
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Final

from ctrd import _aio, _faults, errdefs, filters, limits, namespaces
from ctrd import labels as _labels
from ctrd.content import Info, InfoRecord, ReaderAt, Status, Store, Writer, utcnow
from ctrd.content import digest as _digest
from ctrd.metadata import _leases
from ctrd.metadata._gate import BlobGate
from ctrd.metadata.db import DB, Tx, from_us, labels_from_json, labels_to_json, to_us
from ctrd.metadata.policy import SharingPolicy

__all__ = ["ContentStats", "NamespacedContentStore", "SharingStats"]

log = logging.getLogger("ctrd.metadata")

_INGEST_EXPIRY = _dt.timedelta(hours=24)
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


def _sql_selector(sel: filters.Selector) -> tuple[str, tuple[str, ...]] | None:
    """A SQL condition every blob matching *sel* satisfies, or ``None`` for "any row"."""
    path = sel.fieldpath
    if path == ("digest",):
        if sel.op is filters.Operator.EQUAL:
            return "digest = ?", (sel.value,)
        if sel.op is filters.Operator.NOT_EQUAL:
            return "digest != ?", (sel.value,)
        return None
    if len(path) < 2 or path[0] != "labels":
        return None
    key = ".".join(path[1:])
    # SQLite's JSON paths compare keys as written in the stored JSON text; keep
    # to printable ASCII without quotes or escapes, where that text is the key.
    if not key or not key.isascii() or not key.isprintable() or '"' in key or "\\" in key:
        return None
    jpath = f'$."{key}"'
    if sel.op is None:
        return "json_type(labels, ?) IS NOT NULL", (jpath,)
    if sel.op is filters.Operator.EQUAL:
        return "json_extract(labels, ?) = ?", (jpath, sel.value)
    return None


def _sql_prefilter(flt: filters.Filter) -> tuple[str, tuple[str, ...]]:
    """`` AND (...)`` narrowing a blobs query to rows that may match *flt* (``""`` = no narrowing).

    Each alternative contributes the AND of its translatable selectors; if one
    alternative has none, any row may match and nothing is pushed down.
    """
    ors: list[str] = []
    params: list[str] = []
    for alternative in flt.alternatives:
        conds = [c for c in map(_sql_selector, alternative) if c is not None]
        if not conds:
            return "", ()
        ors.append(" AND ".join(c[0] for c in conds))
        for c in conds:
            params.extend(c[1])
    if not ors:
        return " AND 0", ()
    return " AND ((" + ") OR (".join(ors) + "))", tuple(params)


def _validate_labels(labels: Mapping[str, str] | None) -> None:
    if labels:
        try:
            _labels.validate_all(labels)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"info.Labels: {exc.context}") from exc


_DELETE_UNUSED_NAMESPACE: Final = (
    "DELETE FROM namespaces WHERE name = ? "
    "AND NOT EXISTS (SELECT 1 FROM namespace_labels WHERE namespace = ?) "
    "AND NOT EXISTS (SELECT 1 FROM blobs WHERE namespace = ?) "
    "AND NOT EXISTS (SELECT 1 FROM ingests WHERE namespace = ?) "
    "AND NOT EXISTS (SELECT 1 FROM leases WHERE namespace = ?)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class _UndoOpen:
    """What :meth:`NamespacedContentStore._undo_open` needs to put back."""

    ns: str
    ref: str
    bref: str
    #: the ingest row's (expected, expected_size, expires_at) before, or None if it was new
    previous: tuple[str, int, int | None] | None
    #: the lease the ingest was attached to by this open, if any
    lease: str | None
    ns_created: bool


@dataclasses.dataclass(frozen=True, slots=True)
class _Opened:
    """The outcome of :meth:`NamespacedContentStore._open_tx`."""

    exists: bool = False
    bref: str = ""
    #: the blob's size for a shared writer (no backend ingest), else -1
    shared_size: int = -1
    #: set when a backend writer is to be opened (its ref is then held in the gate)
    undo: _UndoOpen | None = None


class _KeyedLocks:
    """One :class:`asyncio.Lock` per key, dropped when nobody holds or waits for it."""

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    def hold(self, key: tuple[str, str]) -> _Held:
        """``async with locks.hold(key)``: hold *key*'s lock for the body."""
        return _Held(self._locks, key)


class _Held:
    """The context manager of :meth:`_KeyedLocks.hold` (a class: it is on every write's path)."""

    __slots__ = ("_key", "_lock", "_locks")

    def __init__(self, locks: dict[tuple[str, str], tuple[asyncio.Lock, int]], key: tuple[str, str]) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        locks, key = self._locks, self._key
        lock, users = locks.get(key) or (asyncio.Lock(), 0)
        locks[key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._drop()
            raise
        self._lock = lock

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        self._drop()

    def _drop(self) -> None:
        lock, users = self._locks[self._key]
        if users <= 1:
            del self._locks[self._key]
        else:
            self._locks[self._key] = (lock, users - 1)


class NamespacedContentStore:
    """Implements :class:`ctrd.content.Store` over the metadata database."""

    def __init__(
        self,
        db: DB,
        backend: Store,
        policy: SharingPolicy = SharingPolicy.SHARED,
        *,
        on_delete: Callable[[], None] | None = None,
        on_commit: Callable[[str, str, int], Awaitable[None]] | None = None,
    ) -> None:
        self._db = db
        self._info_cache: dict[tuple[str, str], tuple[int, Info]] = {}
        #: the blob epoch of every entry of ``_info_cache``
        self._info_epoch = 0
        #: serialises opening and aborting one (namespace, ref)
        self._ref_locks = _KeyedLocks()
        self._backend = backend
        self.policy = policy
        self.stats = SharingStats()
        self.content_stats = ContentStats()
        #: called after each successful delete (settable: the GC scheduler plugs in here)
        self.on_delete = on_delete
        #: shared with the garbage collector (see :mod:`ctrd.metadata._gate`)
        self.gate = BlobGate()
        #: awaited with (namespace, digest, size) after a commit admitted a new blob into a
        #: namespace (not on AlreadyExists); the content gRPC plugin publishes /content/create
        self.on_commit = on_commit

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
            _validate_labels(new)
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
        (:func:`_sql_prefilter`); every row SQL returns is still matched exactly
        by :mod:`ctrd.filters`.
        """
        ns = namespaces.required()
        flt = filters.parse_all(*filter_strings)
        exact = not flt.matches_all
        where, params = _sql_prefilter(flt) if exact else ("", ())
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
        :attr:`on_delete` tells the scheduler a collection is due.
        """
        ns = namespaces.required()
        _digest.validate(dgst)
        lease = namespaces.current_lease()
        async with self._db.update(inline=True) as tx:
            n = await tx.run("DELETE FROM blobs WHERE namespace = ? AND digest = ?", (ns, dgst))
            if n == 0:
                raise errdefs.NotFound(f"content digest {dgst}")
            await _leases.remove_resource(tx, ns, lease, "content", dgst)
            _faults.point("metadata.delete.in_tx")
        _faults.point("metadata.delete.after_tx")
        if self.on_delete is not None:
            self.on_delete()

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
        return _with_ref(st, ref)

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
            out.append(_with_ref(st, str(ref)))
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
            await _leases.remove_resource(tx, ns, lease, "ingests", ref)
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
            return await self._open(ns, ref, total, expected, lease)

    async def _open(self, ns: str, ref: str, total: int, expected: str, lease: str | None) -> Writer:
        """:meth:`writer` under the ref's lock.

        The ingest row is committed first and the backend ingest created after,
        outside the database lock: creating it takes a thread hop and fsyncs (and a
        resumed ingest is re-hashed), which would otherwise hold up every other
        metadata write. Until the backend writer exists, the gate holds its backend
        ref (the collector must not take the row for a dangling one), and the ref's
        lock keeps other opens and aborts of the ref waiting, as the database lock
        did; if creating it fails, :meth:`_undo_open` puts the rows back as they were.
        """
        now = utcnow()
        opened: _Opened | None = None
        try:
            async with self._db.update(inline=True) as tx:
                opened = await self._open_tx(tx, ns, ref, total, expected, lease, now)
        except BaseException:
            if opened is not None and opened.undo is not None:
                self.gate.release_ref(opened.bref)  # the COMMIT failed after the hold
            raise
        if opened.exists:
            raise errdefs.AlreadyExists(f"content {expected}")
        bw: Writer | None = None
        if opened.undo is not None:
            try:
                # the digest is deliberately not passed: the caller must prove possession
                bw = await self._backend.writer(opened.bref, total=total)
            except BaseException as exc:
                if isinstance(exc, errdefs.ResourceExhausted):
                    self._out_of_space()
                await asyncio.shield(self._undo_open(opened.undo))
                raise
            finally:
                self.gate.release_ref(opened.bref)
        return _NamespacedWriter(
            self,
            ns=ns,
            ref=ref,
            bref=opened.bref,
            writer=bw,
            lease=lease,
            expected=expected if opened.shared_size >= 0 else "",
            size=max(opened.shared_size, 0),
            started=now,
        )

    async def _open_tx(
        self, tx: Tx, ns: str, ref: str, total: int, expected: str, lease: str | None, now: _dt.datetime
    ) -> _Opened:
        """The transaction of :meth:`_open`; holds the backend ref in the gate as its last step."""
        await _leases.check_lease(tx, ns, lease)
        if expected:
            hit = await tx.one("SELECT 1 FROM blobs WHERE namespace = ? AND digest = ?", (ns, expected))
            if hit is not None:
                await _leases.add_resource(tx, ns, lease, "content", expected)
                return _Opened(exists=True)
        shared_size = -1
        if expected and (
            self.policy is SharingPolicy.SHARED or await self._in_shareable_namespace(tx, expected)
        ):
            try:
                binfo = await self._backend.info(expected)
            except errdefs.NotFound:
                pass
            else:
                if total in (0, binfo.size):
                    shared_size = binfo.size
        ns_created = await tx.ensure_namespace(ns, to_us(now))
        row = await tx.one(
            "SELECT backend_ref, expected, expected_size, expires_at FROM ingests "
            "WHERE namespace = ? AND ref = ?",
            (ns, ref),
        )
        if row is not None:
            bref = str(row[0])
        else:
            seq = await tx.next_sequence("ingest")
            bref = f"{ns}/{seq}/{ref}"
        expires = None if lease else to_us(now + _INGEST_EXPIRY)
        shared = shared_size >= 0
        await tx.run(
            "INSERT INTO ingests(namespace, ref, backend_ref, expected, expected_size, created_at, "
            "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(namespace, ref) DO UPDATE SET "
            "expected = excluded.expected, expected_size = excluded.expected_size, "
            "expires_at = excluded.expires_at",
            (ns, ref, bref, expected if shared else "", max(shared_size, 0), to_us(now), expires),
        )
        lease_added = await _leases.add_resource(tx, ns, lease, "ingests", ref)
        if shared:
            return _Opened(bref=bref, shared_size=shared_size)
        undo = _UndoOpen(
            ns=ns,
            ref=ref,
            bref=bref,
            previous=None if row is None else (str(row[1]), int(row[2]), row[3]),
            lease=lease if lease_added else None,
            ns_created=ns_created,
        )
        self.gate.hold_ref(bref)
        return _Opened(bref=bref, undo=undo)

    async def _undo_open(self, undo: _UndoOpen) -> None:
        """Put back what :meth:`_open` committed before its backend writer failed.

        The ingest row is removed (or its previous values restored), and so are the
        lease attachment and an implicitly created namespace that are still unused:
        what the single transaction's rollback used to leave. The ingest sequence
        number stays consumed.
        """
        ns, ref, bref = undo.ns, undo.ref, undo.bref
        try:
            async with self._db.update(inline=True) as tx:
                if undo.previous is None:
                    await tx.run(
                        "DELETE FROM ingests WHERE namespace = ? AND ref = ? AND backend_ref = ?",
                        (ns, ref, bref),
                    )
                else:
                    await tx.run(
                        "UPDATE ingests SET expected = ?, expected_size = ?, expires_at = ? "
                        "WHERE namespace = ? AND ref = ? AND backend_ref = ?",
                        (*undo.previous, ns, ref, bref),
                    )
                if undo.lease is not None:
                    await _leases.remove_resource(tx, ns, undo.lease, "ingests", ref)
                if undo.ns_created:
                    await tx.run(_DELETE_UNUSED_NAMESPACE, (ns,) * 5)
        except errdefs.Error as exc:
            log.warning("could not undo the ingest record of %s in %s: %s", ref, ns, exc)
        except Exception:
            log.warning("could not undo the ingest record of %s in %s", ref, ns, exc_info=True)

    async def _in_shareable_namespace(self, tx: Tx, dgst: str) -> bool:
        row = await tx.one(
            "SELECT 1 FROM blobs b JOIN namespace_labels l ON l.namespace = b.namespace "
            "WHERE b.digest = ? AND l.key = 'containerd.io/namespace.shareable' AND l.value = 'true' LIMIT 1",
            (dgst,),
        )
        return row is not None

    async def _commit(
        self,
        w: _NamespacedWriter,
        size: int,
        expected: str,
        labels: Mapping[str, str] | None,
    ) -> None:
        # From the backend commit to the end of the transaction the new file is referenced
        # by no row: the gate keeps the garbage collector off it meanwhile.
        async with self.gate.committing(w.digest(), w.bref):
            await self._commit_gated(w, size, expected, labels)

    async def _commit_gated(
        self,
        w: _NamespacedWriter,
        size: int,
        expected: str,
        labels: Mapping[str, str] | None,
    ) -> None:
        _validate_labels(labels)
        if expected:
            _digest.validate(expected)
        reupload = False
        if w.backend_writer is None:
            if size not in (0, w.size):
                raise errdefs.FailedPrecondition(f'"{w.ref}" failed size validation: {w.size} != {size}')
            if expected and expected != w.expected:
                raise errdefs.FailedPrecondition(f'"{w.ref}" unexpected digest')
            actual, size = w.expected, w.size
        else:
            st = await w.backend_writer.status()
            if size not in (0, st.offset):
                await w.backend_writer.close()
                raise errdefs.FailedPrecondition(f'"{w.ref}" failed size validation: {st.offset} != {size}')
            size = st.offset
            try:
                await w.backend_writer.commit(size, expected)
            except errdefs.AlreadyExists:
                reupload = True
            except errdefs.ResourceExhausted as exc:
                self._out_of_space()
                raise w._own_words(exc) from None
            except errdefs.Error as exc:
                raise w._own_words(exc) from None
            actual = w.backend_writer.digest()
        ns, lease = w.ns, w.lease
        now_us = to_us(utcnow())
        clean = {k: v for k, v in (labels or {}).items() if v}
        dup = False
        _faults.point("metadata.commit.before_tx")
        async with self._db.update(inline=True) as tx:
            if w.backend_writer is None:
                # the shared blob may have been collected since the writer opened
                try:
                    await self._backend.info(actual)
                except errdefs.NotFound as exc:
                    raise errdefs.NotFound(f"content {actual} is no longer available") from exc
            await tx.ensure_namespace(ns, now_us)
            n = await tx.run(
                "INSERT OR IGNORE INTO blobs(namespace, digest, size, created_at, updated_at, labels) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (ns, actual, size, now_us, now_us, labels_to_json(clean)),
            )
            dup = n == 0
            await tx.run("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, w.ref))
            await _leases.remove_resource(tx, ns, lease, "ingests", w.ref)
            await _leases.add_resource(tx, ns, lease, "content", actual)
            _faults.point("metadata.commit.in_tx")
        if dup:
            raise errdefs.AlreadyExists(f"content {actual}")
        self.content_stats.commits += 1
        if self.on_commit is not None:
            try:
                await self.on_commit(ns, actual, size)
            except Exception:
                log.warning("commit hook failed for %s in %s", actual, ns, exc_info=True)
        if w.backend_writer is None:
            self.stats.admissions += 1
            self.stats.saved_bytes += size
        elif reupload:
            self.stats.isolated_reuploads += 1


def _with_ref(st: Status, ref: str) -> Status:
    return Status(
        ref=ref,
        offset=st.offset,
        total=st.total,
        started_at=st.started_at,
        updated_at=st.updated_at,
        expected=st.expected,
    )


class _NamespacedWriter:
    """Writer bound to one namespace; a shared writer has no backend writer."""

    def __init__(
        self,
        store: NamespacedContentStore,
        *,
        ns: str,
        ref: str,
        bref: str,
        writer: Writer | None,
        lease: str | None,
        expected: str,
        size: int,
        started: _dt.datetime,
    ) -> None:
        self._store = store
        self.ns = ns
        self.ref = ref
        self.bref = bref
        self.backend_writer = writer
        self.lease = lease
        self.expected = expected
        self.size = size
        self._started = started

    def digest(self) -> str:
        if self.backend_writer is None:
            return self.expected
        return self.backend_writer.digest()

    async def status(self) -> Status:
        if self.backend_writer is None:
            return Status(
                ref=self.ref,
                offset=self.size,
                total=self.size,
                started_at=self._started,
                updated_at=self._started,
                expected=self.expected,
            )
        return _with_ref(await self.backend_writer.status(), self.ref)

    async def _copy_up(self, n: int) -> Writer:
        """Turn a shared writer into a real ingest holding the first *n* bytes of the blob."""
        backend = self._store.backend
        bw = await backend.writer(self.bref, total=0)
        try:
            await bw.truncate(0)
            if n:
                ra = await backend.reader_at(self.expected)
                try:
                    off = 0
                    while off < n:
                        chunk = await ra.read_at(off, min(1 << 20, n - off))
                        if not chunk:
                            raise errdefs.DataLoss(f"short read copying {self.expected}")
                        await bw.write(chunk)
                        off += len(chunk)
                finally:
                    await ra.close()
        except BaseException:
            await bw.close()
            raise
        async with self._store._db.update(inline=True) as tx:
            await tx.run(
                "UPDATE ingests SET expected = '', expected_size = 0 WHERE namespace = ? AND ref = ?",
                (self.ns, self.ref),
            )
        self.backend_writer = bw
        self.expected = ""
        return bw

    def _own_words(self, exc: errdefs.Error) -> errdefs.Error:
        """*exc* from the backend, naming the caller's ref instead of the backend's.

        Backend refs (``<namespace-id>/<sequence>/<ref>``) are the store's internals.
        """
        if self.bref and self.bref in exc.context:
            return type(exc)(exc.context.replace(self.bref, limits.echo(self.ref)))
        return exc

    async def write(self, data: bytes | memoryview) -> int:
        store = self._store
        reserve = store._db.reserve
        if reserve is not None and reserve.low:
            reserve.gate(f"write to ref {self.ref}")
        bw = self.backend_writer
        try:
            if bw is None:
                if not len(data):
                    return 0
                bw = await self._copy_up(self.size)
            n = await bw.write(data)
        except errdefs.ResourceExhausted as exc:
            store._out_of_space()
            raise self._own_words(exc) from None
        except errdefs.Error as exc:
            raise self._own_words(exc) from None
        store.content_stats.ingested_bytes += n
        return n

    async def truncate(self, size: int) -> None:
        try:
            if self.backend_writer is None:
                if size != 0:
                    raise errdefs.InvalidArgument("truncate: unsupported size")
                await self._copy_up(0)
                return
            await self.backend_writer.truncate(size)
        except errdefs.Error as exc:
            raise self._own_words(exc) from None

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> None:
        await self._store._commit(self, size, expected, labels)

    async def close(self) -> None:
        if self.backend_writer is not None:
            await self.backend_writer.close()
