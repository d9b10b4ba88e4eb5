"""Opening an ingest in a namespace: the ingest row, the sharing decision, and undoing a failed open.

:func:`open_writer` is :meth:`~ctrd.metadata.content.NamespacedContentStore.writer`
under the ref's lock (:class:`KeyedLocks`, which also serialises aborts). With
an expected digest already in the caller's namespace, the open is
``AlreadyExists``; with one in the backend that the sharing policy lets the
caller have (``shared``, or a blob held by a shareable namespace), the writer is
shared: no backend ingest, and a commit without data admits the blob. Otherwise
a backend writer is opened without the expected digest, so the caller uploads
every byte.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import logging
from typing import TYPE_CHECKING, Final

from ctrd import errdefs
from ctrd.content import Writer, utcnow
from ctrd.metadata import _lease_refs
from ctrd.metadata._writer import NamespacedWriter, in_callers_words
from ctrd.metadata.db import Tx, to_us
from ctrd.metadata.policy import SharingPolicy

if TYPE_CHECKING:
    from ctrd.metadata.content import NamespacedContentStore

__all__ = ["KeyedLocks", "open_writer"]

log = logging.getLogger("ctrd.metadata")

_INGEST_EXPIRY = _dt.timedelta(hours=24)


_DELETE_UNUSED_NAMESPACE: Final = (
    "DELETE FROM namespaces WHERE name = ? "
    "AND NOT EXISTS (SELECT 1 FROM namespace_labels WHERE namespace = ?) "
    "AND NOT EXISTS (SELECT 1 FROM blobs WHERE namespace = ?) "
    "AND NOT EXISTS (SELECT 1 FROM ingests WHERE namespace = ?) "
    "AND NOT EXISTS (SELECT 1 FROM leases WHERE namespace = ?)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class _UndoOpen:
    """What :func:`_undo_open` needs to put back."""

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
    """The outcome of :func:`_open_tx`."""

    exists: bool = False
    bref: str = ""
    #: the blob's size for a shared writer (no backend ingest), else -1
    shared_size: int = -1
    #: set when a backend writer is to be opened (its ref is then held in the gate)
    undo: _UndoOpen | None = None


class KeyedLocks:
    """One :class:`asyncio.Lock` per key, dropped when nobody holds or waits for it."""

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    def hold(self, key: tuple[str, str]) -> _Held:
        """``async with locks.hold(key)``: hold *key*'s lock for the body."""
        return _Held(self._locks, key)


class _Held:
    """The context manager of :meth:`KeyedLocks.hold` (a class: it is on every write's path)."""

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


async def open_writer(
    store: NamespacedContentStore, ns: str, ref: str, total: int, expected: str, lease: str | None
) -> Writer:
    """:meth:`NamespacedContentStore.writer <ctrd.metadata.content.NamespacedContentStore.writer>`
    under the ref's lock.

    The ingest row is committed first and the backend ingest created after,
    outside the database lock: creating it takes a thread hop and fsyncs (and a
    resumed ingest is re-hashed), which would otherwise hold up every other
    metadata write. Until the backend writer exists, the gate holds its backend
    ref (the collector must not take the row for a dangling one), and the ref's
    lock keeps other opens and aborts of the ref waiting, as the database lock
    did; if creating it fails, :func:`_undo_open` puts the rows back as they were.
    """
    now = utcnow()
    opened: _Opened | None = None
    try:
        async with store._db.update(inline=True) as tx:
            opened = await _open_tx(store, tx, ns, ref, total, expected, lease, now)
    except BaseException:
        if opened is not None and opened.undo is not None:
            store.gate.release_ref(opened.bref)  # the COMMIT failed after the hold
        raise
    if opened.exists:
        raise errdefs.AlreadyExists(f"content {expected}")
    bw: Writer | None = None
    if opened.undo is not None:
        try:
            # the digest is deliberately not passed: the caller must prove possession
            bw = await store._backend.writer(opened.bref, total=total)
        except BaseException as exc:
            if isinstance(exc, errdefs.ResourceExhausted):
                store._out_of_space()
            await asyncio.shield(_undo_open(store, opened.undo))
            if isinstance(exc, errdefs.Error):
                raise in_callers_words(exc, opened.bref, ref) from None
            raise
        finally:
            store.gate.release_ref(opened.bref)
    return NamespacedWriter(
        store,
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
    store: NamespacedContentStore,
    tx: Tx,
    ns: str,
    ref: str,
    total: int,
    expected: str,
    lease: str | None,
    now: _dt.datetime,
) -> _Opened:
    """The transaction of :func:`open_writer`; holds the backend ref in the gate as its last step."""
    await _lease_refs.check_lease(tx, ns, lease)
    if expected:
        hit = await tx.one("SELECT 1 FROM blobs WHERE namespace = ? AND digest = ?", (ns, expected))
        if hit is not None:
            await _lease_refs.add_resource(tx, ns, lease, "content", expected)
            return _Opened(exists=True)
    shared_size = -1
    if expected and (store.policy is SharingPolicy.SHARED or await _in_shareable_namespace(tx, expected)):
        try:
            binfo = await store._backend.info(expected)
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
    lease_added = await _lease_refs.add_resource(tx, ns, lease, "ingests", ref)
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
    store.gate.hold_ref(bref)
    return _Opened(bref=bref, undo=undo)


async def _undo_open(store: NamespacedContentStore, undo: _UndoOpen) -> None:
    """Put back what :func:`open_writer` committed before its backend writer failed.

    The ingest row is removed (or its previous values restored), and so are the
    lease attachment and an implicitly created namespace that are still unused:
    what the single transaction's rollback used to leave. The ingest sequence
    number stays consumed.
    """
    ns, ref, bref = undo.ns, undo.ref, undo.bref
    try:
        async with store._db.update(inline=True) as tx:
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
                await _lease_refs.remove_resource(tx, ns, undo.lease, "ingests", ref)
            if undo.ns_created:
                await tx.run(_DELETE_UNUSED_NAMESPACE, (ns,) * 5)
    except errdefs.Error as exc:
        log.warning("could not undo the ingest record of %s in %s: %s", ref, ns, exc)
    except Exception:
        log.warning("could not undo the ingest record of %s in %s", ref, ns, exc_info=True)


async def _in_shareable_namespace(tx: Tx, dgst: str) -> bool:
    """Whether a namespace labelled ``containerd.io/namespace.shareable=true`` holds *dgst*."""
    row = await tx.one(
        "SELECT 1 FROM blobs b JOIN namespace_labels l ON l.namespace = b.namespace "
        "WHERE b.digest = ? AND l.key = 'containerd.io/namespace.shareable' AND l.value = 'true' LIMIT 1",
        (dgst,),
    )
    return row is not None
