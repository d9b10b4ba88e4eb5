"""Mark-and-sweep garbage collection over the metadata database and the backend store.

What is live (containerd's ``metadata/gc.go``), per namespace:

* **roots**: blobs labelled ``containerd.io/gc.root`` (any value); the
  ``content`` and ``ingests`` resources of every unexpired lease (label
  ``containerd.io/gc.expire``, RFC 3339: expired once the time is past; a
  missing or unparsable value never expires, as in containerd); ingests whose
  ``expires_at`` is in the future (a leased ingest has none and lives only
  through its lease); every image (images never expire, and no lease holds one):
  its target's digest, and the digests its ``containerd.io/gc.ref.content*``
  labels name (read as on blobs, below);
* **references**: a live blob's labels ``containerd.io/gc.ref.content``,
  ``containerd.io/gc.ref.content.<name>`` and ``containerd.io/gc.ref.content/<name>``
  name digests that are live *in the same namespace* (transitively; cycles are
  fine); a live ingest's expected digest (a shared writer) is live too.
  ``containerd.io/gc.ref.snapshot.<snapshotter>`` labels are left for when ctrd
  has snapshots: they keep nothing alive yet.

Sweep: unmarked blob rows, unmarked ingests and expired leases (with their
resources) are deleted in one write transaction. Then the backend is made to
agree with the database:

* a blob file is deleted when no namespace has a row for its digest and no
  ingest expects it;
* a backend ingest is aborted when no ingest row names its backend ref;
* reconciliation after a crash or outside damage: blob rows (and shared
  ingests) whose file is missing are removed with a warning, and so are
  non-shared ingest rows whose backend data is gone. So after any crash the
  next collection leaves no record pointing at a missing file, and no file or
  ingest directory without a record.

**Concurrency design** (the collector runs in the background while requests go on):

1. *Mark* with one SQL statement (recursive CTEs) on a private read-only
   connection: it holds no lock and does not queue behind (or delay) request reads.
2. *Sweep* in a write transaction (``db.update()``, which serialises all writers).
   The mark is reused only if ``db.mutations`` -- bumped inside the write lock
   by every committed transaction -- is unchanged since just before the mark;
   otherwise some write may have made an unmarked object live again, and the
   mark is recomputed inside the transaction (correct, briefly blocks writers).
3. *Backend clean-up*: listing files and ingests (threads) and reading what
   the database references happen without any lock, to find candidates; each
   candidate is then re-checked and acted on **while holding the database write
   lock**, in batches of :attr:`GarbageCollector.batch`, the filesystem work
   running in worker threads so the event loop keeps serving. No write can
   therefore admit a digest (shared admission, a commit's row insert, a shared
   writer's open, all of which check the backend inside their transaction)
   between the re-check and the unlink. The one backend step that happens
   outside any transaction -- a commit moving its data into ``blobs/`` before
   inserting the row -- is covered by :class:`ctrd.metadata._gate.BlobGate`:
   the collector skips digests (and ingest refs) being committed, and a commit
   waits for a deletion of its digest in progress to end, then writes its own
   file. Requests are never blocked for longer than one batch.

Crash safety: every step leaves a state the next collection repairs. A crash
after the sweep transaction and before (or between) file deletions leaves
unreferenced files, deleted by the next run; SQLite rolls an interrupted
transaction back. ``CTRD_FAULT_POINT`` (:mod:`ctrd._faults`) can stop the
process at ``gc.sweep.in_tx``, ``gc.sweep.after_db`` and ``gc.sweep.between_files``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, Protocol

import aiosqlite

from ctrd import _faults, errdefs
from ctrd.content import IngestManager, Manager, utcnow
from ctrd.gc.duration import format_duration
from ctrd.metadata._gate import BlobGate
from ctrd.metadata.db import DB, Tx, to_us

__all__ = ["Backend", "GCStats", "GarbageCollector", "parse_expire"]

log = logging.getLogger("ctrd.gc")

LABEL_ROOT: Final = "containerd.io/gc.root"
LABEL_REF_CONTENT: Final = "containerd.io/gc.ref.content"
LABEL_EXPIRE: Final = "containerd.io/gc.expire"

_Query = Callable[[str, Sequence[Any]], Awaitable[list[Any]]]

_N = len(LABEL_REF_CONTENT) + 1
_MARK_SQL: Final = f"""
WITH RECURSIVE
  expired(namespace, id) AS (
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)
  ),
  live_leases(namespace, id) AS (
    SELECT namespace, id FROM leases EXCEPT SELECT namespace, id FROM expired
  ),
  held(namespace, type, id) AS (
    SELECT r.namespace, r.type, r.id FROM lease_resources r
    JOIN live_leases l ON l.namespace = r.namespace AND l.id = r.lease
    WHERE r.type IN ('content', 'ingests')
  ),
  live_ingests(namespace, ref) AS (
    SELECT namespace, ref FROM ingests WHERE expires_at IS NOT NULL AND expires_at > ?
    UNION
    SELECT namespace, id FROM held WHERE type = 'ingests'
  ),
  roots(namespace, digest) AS (
    SELECT namespace, digest FROM blobs WHERE json_type(labels, '$."{LABEL_ROOT}"') IS NOT NULL
    UNION
    SELECT namespace, id FROM held WHERE type = 'content'
    UNION
    SELECT namespace, digest FROM images
    UNION
    SELECT i.namespace, j.value FROM images i, json_each(i.labels) j
    WHERE j.key = '{LABEL_REF_CONTENT}'
       OR substr(j.key, 1, {_N}) IN ('{LABEL_REF_CONTENT}.', '{LABEL_REF_CONTENT}/')
    UNION
    SELECT i.namespace, i.expected FROM ingests i
    JOIN live_ingests li ON li.namespace = i.namespace AND li.ref = i.ref
    WHERE i.expected != ''
  ),
  marked(namespace, digest) AS (
    SELECT namespace, digest FROM roots
    UNION
    SELECT b.namespace, j.value
    FROM marked m JOIN blobs b ON b.namespace = m.namespace AND b.digest = m.digest, json_each(b.labels) j
    WHERE j.key = '{LABEL_REF_CONTENT}'
       OR substr(j.key, 1, {_N}) IN ('{LABEL_REF_CONTENT}.', '{LABEL_REF_CONTENT}/')
  )
SELECT 'blob', b.namespace, b.digest, b.size, '' FROM blobs b
WHERE NOT EXISTS (SELECT 1 FROM marked m WHERE m.namespace = b.namespace AND m.digest = b.digest)
UNION ALL
SELECT 'ingest', i.namespace, i.ref, i.backend_ref, i.expected FROM ingests i
WHERE NOT EXISTS (SELECT 1 FROM live_ingests li WHERE li.namespace = i.namespace AND li.ref = i.ref)
"""

_LEASE_EXPIRY_SQL: Final = (
    f"SELECT namespace, id, json_extract(labels, '$.\"{LABEL_EXPIRE}\"') FROM leases "
    f"WHERE json_type(labels, '$.\"{LABEL_EXPIRE}\"') IS NOT NULL"
)
_REFERENCED_SQL: Final = "SELECT digest FROM blobs UNION SELECT expected FROM ingests WHERE expected != ''"
_IS_REFERENCED_SQL: Final = (
    "SELECT EXISTS(SELECT 1 FROM blobs WHERE digest = ?) OR EXISTS(SELECT 1 FROM ingests WHERE expected = ?)"
)

_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})"
)


def parse_expire(text: str) -> _dt.datetime | None:
    """Parse a ``containerd.io/gc.expire`` value as Go's ``time.Parse(time.RFC3339, v)``.

    Returns an aware UTC datetime, or ``None`` when it does not parse (the lease
    then never expires, as in containerd).
    """
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    y, mo, d, h, mi, s, frac, zone = m.groups()
    try:
        t = _dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=_dt.UTC)
    except ValueError:
        return None
    if frac:
        t += _dt.timedelta(microseconds=int(frac[:6].ljust(6, "0")))
    if zone != "Z":
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            return None
        offset = _dt.timedelta(hours=hours, minutes=minutes)
        t = t - offset if zone[0] == "+" else t + offset
    return t


@dataclasses.dataclass
class GCStats:
    """What one collection did."""

    #: unmarked blob rows removed (summed over namespaces)
    blobs: int = 0
    #: backend blob files deleted, and their bytes
    files: int = 0
    bytes: int = 0
    #: ingest rows removed (expired, no longer leased, or without backend data)
    ingests: int = 0
    #: backend ingests aborted (no ingest row names them)
    backend_ingests: int = 0
    #: expired leases removed
    leases: int = 0
    #: blob rows and shared ingests removed because their backend file was missing
    missing: int = 0
    #: wall time of the whole collection, and the part spent holding the write lock (seconds)
    duration: float = 0.0
    lock_duration: float = 0.0

    def removed_anything(self) -> bool:
        """Whether the collection changed anything."""
        return bool(
            self.blobs or self.files or self.ingests or self.backend_ingests or self.leases or self.missing
        )

    def summary(self) -> str:
        """``d=<duration> blobs=... files=... bytes=... ...`` (Go duration notation)."""
        return (
            f"d={format_duration(round(self.duration * 1e9))} "
            f"locked={format_duration(round(self.lock_duration * 1e9))} "
            f"blobs={self.blobs} files={self.files} bytes={self.bytes} ingests={self.ingests} "
            f"backend_ingests={self.backend_ingests} leases={self.leases} missing={self.missing}"
        )


class Backend(Manager, IngestManager, Protocol):
    """What the collector needs of the backend store: its blobs and its ingests.

    A backend that also has ``walk_status_refs()`` (every ingest ref on disk, complete
    or not) gets its orphaned and dangling ingests reconciled too.
    """


@dataclasses.dataclass
class _Mark:
    expired_leases: list[tuple[str, str]]
    dead_blobs: list[tuple[str, str, int]]
    dead_ingests: list[tuple[str, str]]


class GarbageCollector:
    """Collects garbage in the metadata database *db* and the backend store *backend*.

    :param gate: the content store's :class:`BlobGate` (``NamespacedContentStore.gate``).
    :param clock: the current time (tests inject one to expire ingests and leases).
    """

    #: candidates handled per write transaction in the backend clean-up
    batch = 64

    def __init__(
        self,
        db: DB,
        backend: Backend,
        gate: BlobGate,
        *,
        clock: Callable[[], _dt.datetime] = utcnow,
    ) -> None:
        self._db = db
        self._backend = backend
        self._gate = gate
        self._clock = clock
        self._lock = asyncio.Lock()

    async def collect(self) -> GCStats:
        """Run one full collection (concurrent calls run one after the other)."""
        async with self._lock:
            t0 = time.monotonic()
            stats = GCStats()
            conn = await aiosqlite.connect(f"file:{self._db.path}?mode=ro", uri=True, isolation_level=None)
            try:
                await conn.execute("PRAGMA busy_timeout=5000")

                async def query(sql: str, params: Sequence[Any]) -> list[Any]:
                    return list(await conn.execute_fetchall(sql, tuple(params)))

                await self._sweep_db(query, stats)
                await self._clean_backend(query, stats)
            finally:
                await conn.close()
            reserve = self._db.reserve
            if reserve is not None and reserve.low:
                reserve.recover()  # what was freed may be enough to accept new data again
            stats.duration = time.monotonic() - t0
        if stats.removed_anything():
            log.info("garbage collected %s", stats.summary())
        else:
            log.debug("garbage collected %s", stats.summary())
        return stats

    # -- mark and sweep in the database -------------------------------------------------------

    async def _mark(self, query: _Query, now: _dt.datetime) -> _Mark:
        expired: list[tuple[str, str]] = []
        for ns, lid, value in await query(_LEASE_EXPIRY_SQL, ()):
            t = parse_expire(str(value))
            if t is None:
                log.debug("ignoring invalid expiration value %r on lease %s/%s", value, ns, lid)
            elif now > t:
                expired.append((str(ns), str(lid)))
        blobs: list[tuple[str, str, int]] = []
        ingests: list[tuple[str, str]] = []
        for kind, ns, key, extra, _expected in await query(_MARK_SQL, (json.dumps(expired), to_us(now))):
            if kind == "blob":
                blobs.append((str(ns), str(key), int(extra)))
            else:
                ingests.append((str(ns), str(key)))
        return _Mark(expired, blobs, ingests)

    async def _sweep_db(self, query: _Query, stats: GCStats) -> None:
        now = self._clock()
        before = self._db.mutations
        mark = await self._mark(query, now)
        if not (mark.expired_leases or mark.dead_blobs or mark.dead_ingests):
            return
        async with self._db.update() as tx:
            t_lock = time.monotonic()
            if self._db.mutations != before:
                # something committed since the mark began: mark again, under the lock
                mark = await self._mark(tx.all, now)
            await tx.many(
                "DELETE FROM lease_resources WHERE namespace = ? AND lease = ?", mark.expired_leases
            )
            await tx.many("DELETE FROM leases WHERE namespace = ? AND id = ?", mark.expired_leases)
            await tx.many(
                "DELETE FROM blobs WHERE namespace = ? AND digest = ?", [b[:2] for b in mark.dead_blobs]
            )
            await tx.many("DELETE FROM ingests WHERE namespace = ? AND ref = ?", mark.dead_ingests)
            _faults.point("gc.sweep.in_tx")
            stats.lock_duration += time.monotonic() - t_lock
        stats.leases += len(mark.expired_leases)
        stats.blobs += len(mark.dead_blobs)
        stats.ingests += len(mark.dead_ingests)
        for ns, dgst, _size in mark.dead_blobs:
            log.debug("gc: removed blob %s from namespace %s", dgst, ns)
        for ns, lid in mark.expired_leases:
            log.debug("gc: removed expired lease %s from namespace %s", lid, ns)
        if mark.dead_blobs or mark.dead_ingests or mark.expired_leases:
            _faults.point("gc.sweep.after_db")

    # -- the backend ------------------------------------------------------------------------------

    async def _clean_backend(self, query: _Query, stats: GCStats) -> None:
        backend = self._backend
        files: dict[str, int] = {}
        async for info in backend.walk():
            files[info.digest] = info.size
        walk_refs = getattr(backend, "walk_status_refs", None)
        disk_refs: set[str] | None = set(await walk_refs()) if walk_refs is not None else None
        complete = {s.ref for s in await backend.list_statuses()} if disk_refs is not None else set()
        referenced = {str(r[0]) for r in await query(_REFERENCED_SQL, ())}
        rows = await query("SELECT namespace, ref, backend_ref, expected FROM ingests", ())

        work: list[Callable[[Tx], Awaitable[None]]] = []
        for dgst in sorted(referenced - files.keys()):
            work.append(self._reconcile_missing(dgst, stats))
        orphans: set[str] = set()
        if disk_refs is not None:
            brefs = {str(r[2]) for r in rows}
            orphans = disk_refs - brefs
            for ns, ref, bref, expected in rows:
                if not expected and str(bref) not in complete:
                    work.append(self._reconcile_dangling(str(ns), str(ref), str(bref), stats))
                    orphans.add(str(bref))
        deleted: list[int] = [0]
        for dgst in sorted(files.keys() - referenced):
            work.append(self._delete_file(dgst, files[dgst], stats, deleted))
        for bref in sorted(orphans):
            work.append(self._abort_orphan(bref, stats))
        for chunk in _chunks(work, self.batch):
            async with self._db.update() as tx:
                t_lock = time.monotonic()
                for item in chunk:
                    await item(tx)
                stats.lock_duration += time.monotonic() - t_lock
            await asyncio.sleep(0)

    def _reconcile_missing(self, dgst: str, stats: GCStats) -> Callable[[Tx], Awaitable[None]]:
        async def run(tx: Tx) -> None:
            if self._gate.is_committing(dgst):
                return
            row = await tx.one(_IS_REFERENCED_SQL, (dgst, dgst))
            if not row[0]:
                return
            try:
                await self._backend.info(dgst)
                return
            except errdefs.NotFound:
                pass
            n_blobs = await tx.run("DELETE FROM blobs WHERE digest = ?", (dgst,))
            n_ingests = await tx.run("DELETE FROM ingests WHERE expected = ?", (dgst,))
            stats.missing += n_blobs + n_ingests
            log.warning(
                "gc: blob %s is missing from the content store; removed %d record(s) and %d shared ingest(s)",
                dgst,
                n_blobs,
                n_ingests,
            )

        return run

    def _reconcile_dangling(
        self, ns: str, ref: str, bref: str, stats: GCStats
    ) -> Callable[[Tx], Awaitable[None]]:
        async def run(tx: Tx) -> None:
            if self._gate.ref_committing(bref):
                return
            row = await tx.one(
                "SELECT expected FROM ingests WHERE namespace = ? AND ref = ? AND backend_ref = ?",
                (ns, ref, bref),
            )
            if row is None or row[0]:
                return
            try:
                await self._backend.status(bref)
                return
            except errdefs.NotFound:
                pass
            await tx.run("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref))
            stats.ingests += 1
            log.warning("gc: ingest %s in namespace %s has no data in the content store; removed", ref, ns)

        return run

    def _delete_file(
        self, dgst: str, size: int, stats: GCStats, deleted: list[int]
    ) -> Callable[[Tx], Awaitable[None]]:
        async def run(tx: Tx) -> None:
            row = await tx.one(_IS_REFERENCED_SQL, (dgst, dgst))
            if row[0] or not self._gate.begin_delete(dgst):
                return
            try:
                if deleted[0]:
                    _faults.point("gc.sweep.between_files")
                await self._backend.delete(dgst)
            except errdefs.NotFound:
                return
            finally:
                self._gate.end_delete(dgst)
            deleted[0] += 1
            stats.files += 1
            stats.bytes += size
            log.debug("gc: deleted blob file %s (%d bytes)", dgst, size)

        return run

    def _abort_orphan(self, bref: str, stats: GCStats) -> Callable[[Tx], Awaitable[None]]:
        async def run(tx: Tx) -> None:
            if await tx.one("SELECT 1 FROM ingests WHERE backend_ref = ?", (bref,)) is not None:
                return
            try:
                await self._backend.abort(bref)
            except errdefs.NotFound:
                return
            stats.backend_ingests += 1
            log.debug("gc: aborted backend ingest %s", bref)

        return run


def _chunks(items: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
