"""The namespaced writer and the commit path of :class:`~ctrd.metadata.content.NamespacedContentStore`.

A :class:`NamespacedWriter` is bound to one namespace and ref. A shared writer
(see the sharing policy in :mod:`ctrd.metadata.content`) has no backend writer:
it reports the blob's size and digest, and its first write or truncate copies
the blob's first bytes into a real backend ingest. A commit enters the store's
commit guards, commits the backend writer (a blob already on disk is the
isolated policy's re-upload), then records the blob in the caller's namespace
in one transaction while the store's gate keeps the garbage collector off the
new file, and finally awaits the commit observers.

The writer and the commit path use their store's database, backend, hooks and
counters: they are the store's, kept in a module of their own.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ctrd import _faults, errdefs, limits
from ctrd import labels as _labels
from ctrd.content import Status, Writer, utcnow
from ctrd.content import digest as _digest
from ctrd.metadata import _lease_refs
from ctrd.metadata.db import labels_to_json, to_us

if TYPE_CHECKING:
    from ctrd.metadata.content import NamespacedContentStore

__all__ = ["NamespacedWriter", "in_callers_words", "validate_labels", "with_ref"]

log = logging.getLogger("ctrd.metadata")


def validate_labels(labels: Mapping[str, str] | None) -> None:
    """Check *labels* as containerd checks an Info's (messages name ``info.Labels``)."""
    if labels:
        try:
            _labels.validate_all(labels)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"info.Labels: {exc.context}") from exc


def with_ref(st: Status, ref: str) -> Status:
    """The backend's status *st* under the caller's *ref*."""
    return Status(
        ref=ref,
        offset=st.offset,
        total=st.total,
        started_at=st.started_at,
        updated_at=st.updated_at,
        expected=st.expected,
    )


def in_callers_words(exc: errdefs.Error, bref: str, ref: str) -> errdefs.Error:
    """*exc* from the backend, naming the caller's *ref* instead of the backend's *bref*.

    Backend refs (``<namespace-id>/<sequence>/<ref>``) are the store's internals.
    """
    if bref and bref in exc.context:
        return type(exc)(exc.context.replace(bref, limits.echo(ref)))
    return exc


async def _commit(
    store: NamespacedContentStore,
    w: NamespacedWriter,
    size: int,
    expected: str,
    labels: Mapping[str, str] | None,
) -> None:
    """Commit *w* into its namespace: :meth:`NamespacedWriter.commit`."""
    async with contextlib.AsyncExitStack() as guarded:
        if store._guards:
            dgst = expected or w.digest()
            n = size or (await w.status()).offset
            for guard in store._guards:
                await guarded.enter_async_context(guard(w.ns, dgst, n))
        # From the backend commit to the end of the transaction the new file is referenced
        # by no row: the gate keeps the garbage collector off it meanwhile.
        async with store.gate.committing(w.digest(), w.bref):
            await _commit_gated(store, w, size, expected, labels)


async def _commit_gated(
    store: NamespacedContentStore,
    w: NamespacedWriter,
    size: int,
    expected: str,
    labels: Mapping[str, str] | None,
) -> None:
    """:func:`_commit` inside the guards and the gate."""
    validate_labels(labels)
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
        actual, size, reupload = await _commit_backend(store, w, w.backend_writer, size, expected)
    ns, lease = w.ns, w.lease
    now_us = to_us(utcnow())
    clean = {k: v for k, v in (labels or {}).items() if v}
    dup = False
    _faults.point("metadata.commit.before_tx")
    async with store._db.update(inline=True) as tx:
        if w.backend_writer is None:
            # the shared blob may have been collected since the writer opened
            try:
                await store._backend.info(actual)
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
        await _lease_refs.remove_resource(tx, ns, lease, "ingests", w.ref)
        await _lease_refs.add_resource(tx, ns, lease, "content", actual)
        _faults.point("metadata.commit.in_tx")
    if dup:
        raise errdefs.AlreadyExists(f"content {actual}")
    store.content_stats.commits += 1
    for observe in store._on_commit:
        try:
            await observe(ns, actual, size)
        except Exception:
            log.warning("commit hook failed for %s in %s", actual, ns, exc_info=True)
    if w.backend_writer is None:
        store.stats.admissions += 1
        store.stats.saved_bytes += size
    elif reupload:
        store.stats.isolated_reuploads += 1


async def _commit_backend(
    store: NamespacedContentStore, w: NamespacedWriter, bw: Writer, size: int, expected: str
) -> tuple[str, int, bool]:
    """Commit *w*'s backend writer: ``(digest, size, whether the blob was on disk already)``."""
    st = await bw.status()
    if size not in (0, st.offset):
        await bw.close()
        raise errdefs.FailedPrecondition(f'"{w.ref}" failed size validation: {st.offset} != {size}')
    reupload = False
    try:
        await bw.commit(st.offset, expected)
    except errdefs.AlreadyExists:
        reupload = True
    except errdefs.ResourceExhausted as exc:
        store._out_of_space()
        raise w._own_words(exc) from None
    except errdefs.Error as exc:
        raise w._own_words(exc) from None
    return bw.digest(), st.offset, reupload


class NamespacedWriter:
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
        return with_ref(await self.backend_writer.status(), self.ref)

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
        return in_callers_words(exc, self.bref, self.ref)

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
        await _commit(self._store, self, size, expected, labels)

    async def close(self) -> None:
        if self.backend_writer is not None:
            await self.backend_writer.close()
