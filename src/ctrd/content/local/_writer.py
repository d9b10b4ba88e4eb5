"""The local store's writer: containerd's ``content/local/writer.go``.

:class:`LocalWriter` appends to ``ingest/<sha256hex(ref)>/data`` while hashing,
and commits by verifying size and digest and renaming ``data`` to
``blobs/sha256/<hex>``. It holds the ref's lock from creation until
:meth:`LocalWriter.commit` or :meth:`LocalWriter.close`. Its blocking steps run
through :func:`~ctrd.content.local._fs.run_blocking`, so the writer's in-memory
state (offset, hash, fd, lock) never disagrees with the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import hashlib
import os
import time
from collections.abc import Mapping

from ctrd import _faults, errdefs
from ctrd.content import digest as _digest
from ctrd.content._store import Status, utcnow
from ctrd.content.local._direct import ALIGN, DIRECT_MIN, STAGE_SIZE, DirectAppender
from ctrd.content.local._fs import (
    BLOB_MODE,
    DIR_MODE,
    INLINE_MAX,
    format_timestamp,
    fsync_dir,
    map_os_error,
    remove_ingest_dir,
    run_blocking,
    write_file_atomic,
)
from ctrd.content.local._locks import RefLocks

__all__ = ["LocalWriter"]


class LocalWriter:
    """An open ingest of the local store. Implements :class:`ctrd.content.Writer`.

    Created by :meth:`ctrd.content.local.LocalStore.writer`, which has taken the
    ref's lock; the writer releases it on :meth:`commit` (always, success or
    not) and :meth:`close`. After either, the writer is closed: :meth:`write`,
    :meth:`truncate` and :meth:`commit` raise :class:`errdefs.FailedPrecondition`;
    :meth:`digest` and :meth:`status` keep answering from memory.

    Operations on one writer are serialised by an :class:`asyncio.Lock`.
    """

    def __init__(
        self,
        *,
        locks: RefLocks,
        ref: str,
        ingest_dir: str | os.PathLike[str],
        blobs_dir: str | os.PathLike[str],
        fd: int,
        offset: int,
        total: int,
        hasher: hashlib._Hash,
        started_at: _dt.datetime,
        updated_at: _dt.datetime,
        direct: bool = False,
    ) -> None:
        self._locks = locks
        self._ref = ref
        self._ingest_dir = os.fspath(ingest_dir)
        self._blobs_dir = os.fspath(blobs_dir)
        self._fd: int | None = fd
        self._offset = offset
        self._total = total
        self._hasher = hasher
        self._digest: tuple[int, str] | None = None  # (offset, digest()) cached until the next write
        self._started_at = started_at
        self._updated_at = updated_at
        self._mutex = asyncio.Lock()
        self._direct = DirectAppender(f"{self._ingest_dir}/data") if direct else None

    @property
    def ref(self) -> str:
        """The ingest's ref."""
        return self._ref

    @property
    def closed(self) -> bool:
        """Whether the writer was committed or closed."""
        return self._fd is None

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else "open"
        return f"<LocalWriter ref={self._ref!r} offset={self._offset} {state}>"

    def digest(self) -> str:
        """``sha256:<hex>`` of the bytes written so far."""
        offset, cached = self._offset, self._digest
        if cached is not None and cached[0] == offset:
            return cached[1]
        d = f"{_digest.CANONICAL}:{self._hasher.hexdigest()}"
        self._digest = (offset, d)
        return d

    async def status(self) -> Status:
        """The ingest's status from memory (``expected`` is always empty)."""
        async with self._mutex:
            return Status(
                ref=self._ref,
                offset=self._offset,
                total=self._total,
                started_at=self._started_at,
                updated_at=self._updated_at,
            )

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append *data* and hash it; returns ``len(data)`` in bytes.

        Chunks over :data:`INLINE_MAX` are written and hashed in a worker thread
        (both release the GIL), smaller ones inline. *data* is not copied, except
        into a staging buffer by a direct append (:mod:`ctrd.content.local._direct`;
        chunks of :data:`~ctrd.content.local._direct.DIRECT_MIN` and more when
        the store writes directly).

        :raises errdefs.FailedPrecondition: the writer is closed.
        :raises errdefs.ResourceExhausted: the disk is full (the bytes written
            before the error are kept and counted).
        """
        view = memoryview(data)
        if view.ndim != 1 or view.format not in ("B", "b", "c"):
            view = view.cast("B")
        async with self._mutex:
            self._check_open("write")
            if not view:
                return 0
            if view.nbytes > INLINE_MAX:
                await run_blocking(self._append, view)
            else:
                self._append(view)
        return view.nbytes

    def _append(self, view: memoryview) -> None:
        fd = self._fd
        if fd is None:  # pragma: no cover - checked by the caller under the mutex
            raise errdefs.FailedPrecondition("cannot write on closed writer")
        try:
            if self._direct is not None and view.nbytes >= DIRECT_MIN:
                view = self._append_direct(fd, self._direct, view)
            while view:
                n = os.pwrite(fd, view, self._offset)
                self._hasher.update(view[:n])
                self._offset += n
                view = view[n:]
        except OSError as exc:
            raise map_os_error(exc, f"write to ref {self._ref}") from None
        finally:
            self._updated_at = utcnow()

    def _append_direct(self, fd: int, direct: DirectAppender, view: memoryview) -> memoryview:
        """Write the head up to an aligned offset buffered, then aligned pieces directly.

        Returns what is left for the buffered path: the unaligned tail, or all
        of the rest once the filesystem refused direct I/O or wrote short.
        """
        head = -self._offset % ALIGN
        while head:
            n = os.pwrite(fd, view[:head], self._offset)
            self._hasher.update(view[:n])
            self._offset += n
            view = view[n:]
            head -= n
        while view.nbytes >= ALIGN:
            k = min(view.nbytes, STAGE_SIZE) & -ALIGN
            n, self._hasher = direct.write(view[:k], self._offset, self._hasher)
            self._offset += n
            view = view[n:]
            if n < k:
                if direct.refused:
                    self._direct = None
                break
        return view

    async def truncate(self, size: int) -> None:
        """Discard everything written: only ``size == 0`` is supported.

        :raises errdefs.InvalidArgument: ``truncate: unsupported size`` for ``size != 0``.
        :raises errdefs.FailedPrecondition: the writer is closed.
        """
        if size != 0:
            raise errdefs.InvalidArgument("truncate: unsupported size")
        async with self._mutex:
            fd = self._check_open("truncate")
            try:
                await run_blocking(os.ftruncate, fd, 0)
            except OSError as exc:
                raise map_os_error(exc, f"truncate ref {self._ref}") from None
            self._offset = 0
            self._hasher = hashlib.sha256()
            self._digest = None
            self._updated_at = utcnow()

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> None:
        """Verify the ingest and move it to ``blobs/sha256/<hex>``; always closes the writer.

        Steps (containerd's order): fsync and close ``data``; check *size* (when
        > 0) and *expected* (when non-empty); if the blob exists already, remove
        the ingest; else rename ``data`` into place, fsync the blobs directory,
        set the blob's mtime to now, make it read-only for its owner
        (:data:`BLOB_MODE`; containerd keeps ``mode & ~0o333``) and remove the
        ingest directory. *labels* are ignored: the local store keeps
        no labels. The ref's lock is released in every case.

        :raises errdefs.FailedPrecondition: ``cannot commit on closed writer``;
            ``unexpected commit size <actual>, expected <size>``;
            ``unexpected commit digest <actual>, expected <expected>``. After a size
            or digest mismatch the ingest data is kept, so the ref can be resumed.
        :raises errdefs.AlreadyExists: ``content <digest>`` (the ingest is removed).
        """
        del labels
        async with self._mutex:
            if self._fd is None:
                raise errdefs.FailedPrecondition("cannot commit on closed writer")
            try:
                await run_blocking(self._commit_sync, size, expected)
            finally:
                self._fd = None
                self._locks.unlock(self._ref)

    def _commit_sync(self, size: int, expected: str) -> None:
        fd = self._fd
        assert fd is not None
        self._fd = None
        try:
            try:
                self._close_direct()
                os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise map_os_error(exc, f"commit ref {self._ref}") from None
        actual = st.st_size
        if size > 0 and size != actual:
            raise errdefs.FailedPrecondition(f"unexpected commit size {actual}, expected {size}")
        dgst = self.digest()
        if expected and expected != dgst:
            raise errdefs.FailedPrecondition(f"unexpected commit digest {dgst}, expected {expected}")
        algorithm, encoded = _digest.parse(dgst)
        target_dir = f"{self._blobs_dir}/{algorithm}"
        target = f"{target_dir}/{encoded}"
        _faults.point("content.commit.before_rename")
        try:
            if not os.path.isdir(target_dir):
                for d in (self._blobs_dir, target_dir):  # makedirs would make blobs/ 0777 - umask
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(d, DIR_MODE)
            if os.path.exists(target):
                remove_ingest_dir(self._ingest_dir)
                raise errdefs.AlreadyExists(f"content {dgst}")
            os.rename(f"{self._ingest_dir}/data", target)
            fsync_dir(target_dir)
            _faults.point("content.commit.after_rename")
            now = time.time_ns()
            os.utime(target, ns=(now, now))
            # private whatever mode the data file had (an ingest resumed from containerd's 0644)
            os.chmod(target, BLOB_MODE)
        except OSError as exc:
            raise map_os_error(exc, f"commit ref {self._ref}") from None
        remove_ingest_dir(self._ingest_dir)

    async def close(self) -> None:
        """Release the lock and keep the data for resumption. Idempotent.

        fsyncs and closes ``data`` and records the in-memory ``updated_at`` in
        ``updatedat``. Filesystem errors are swallowed (the ingest may have been
        aborted meanwhile); the lock is always released.
        """
        async with self._mutex:
            fd = self._fd
            if fd is None:
                return
            self._fd = None
            try:
                await run_blocking(self._close_sync, fd)
            finally:
                self._locks.unlock(self._ref)

    def _close_direct(self) -> None:
        direct, self._direct = self._direct, None
        if direct is not None:
            direct.close()

    def _close_sync(self, fd: int) -> None:
        try:
            self._close_direct()
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            write_file_atomic(f"{self._ingest_dir}/updatedat", format_timestamp(self._updated_at).encode())

    def _check_open(self, what: str) -> int:
        fd = self._fd
        if fd is None:
            raise errdefs.FailedPrecondition(f"cannot {what} on closed writer")
        return fd
