"""Direct appends: the page-aligned middle of a large ingest write goes around the page cache.

A buffered ``pwrite`` copies every byte into page-cache pages the kernel has to
allocate for the new file, and ``fsync`` at commit then writes them all out. With
``O_DIRECT`` the device reads the bytes from our own buffer instead: one copy
fewer in the kernel, no page-cache pages for the blob, and the disk write happens
while the chunk is hashed rather than all at commit. The price: a blob is not in
the page cache after its ingest, so its first reader reads it from the disk.

``O_DIRECT`` wants the file offset, the length and the buffer's address aligned
to the device's logical block size. :data:`ALIGN` (4096) covers 512- and
4096-byte devices and is the page size, so a staging buffer from ``mmap`` is
aligned. The writer writes the unaligned head and tail of a chunk through its
ordinary fd, and gives :class:`DirectAppender` the aligned middle in pieces of
at most :data:`STAGE_SIZE`. Each piece is copied into a staging buffer and
written on a thread of its own while the calling thread hashes the same bytes,
so hashing and the disk write overlap; the call returns only when both are done,
so the writer's offset and hash never run ahead of the file.

Buffered and direct writes of one file are coherent in Linux (a direct write
flushes and drops cached pages of its range first), and a writer never writes a
range twice. A filesystem that refuses ``O_DIRECT`` (``EINVAL`` on ``open`` or on
a write, before anything of the piece was written) turns the appender off; the
writer then writes that piece and all later ones the ordinary way.
"""

from __future__ import annotations

import concurrent.futures
import errno
import hashlib
import mmap
import os
import threading
from typing import Final

__all__ = ["ALIGN", "DIRECT_MIN", "O_DIRECT", "STAGE_SIZE", "DirectAppender", "supported_in"]

ALIGN: Final = 4096
"""Offset, length and buffer alignment of every direct write."""

STAGE_SIZE: Final = 1 << 20
"""Largest piece written per direct ``pwrite`` (one staging buffer)."""

DIRECT_MIN: Final = 256 * 1024
"""Writes shorter than this stay buffered (and on the event loop up to ``INLINE_MAX``)."""

O_DIRECT: Final = getattr(os, "O_DIRECT", 0)
"""0 where the platform has no ``O_DIRECT``: direct appends are then never used."""

_IDLE_STAGES: Final = 4
_THREADS: Final = 4


class _Stages:
    """Staging buffers reused across writes (at most :data:`_IDLE_STAGES` kept idle)."""

    def __init__(self) -> None:
        self._idle: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return mmap.mmap(-1, STAGE_SIZE)

    def give(self, stage: mmap.mmap) -> None:
        with self._lock:
            if len(self._idle) < _IDLE_STAGES:
                self._idle.append(stage)
                return
        stage.close()


_stages = _Stages()
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _writer_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(_THREADS, thread_name_prefix="ctrd-direct")
        return _executor


def _put(fd: int, stage: mmap.mmap, piece: memoryview, offset: int) -> int:
    n = piece.nbytes
    with memoryview(stage) as sv:
        sv[:n] = piece
        return os.pwrite(fd, sv[:n], offset)


class DirectAppender:
    """``O_DIRECT`` writes of aligned pieces of one ingest's ``data`` file.

    Blocking; used from the writer's worker thread. :attr:`refused` becomes true
    when the filesystem refuses direct I/O; the caller then writes buffered.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self.refused = O_DIRECT == 0

    def write(self, piece: memoryview, offset: int, hasher: hashlib._Hash) -> tuple[int, hashlib._Hash]:
        """Write *piece* at *offset* (both aligned, ``len(piece) <= STAGE_SIZE``) and hash it.

        Returns the bytes written and the hash over them appended to *hasher*
        (*hasher* itself is left as it was). ``(0, hasher)`` with :attr:`refused`
        set: nothing was written, write it buffered. Other :class:`OSError` s
        propagate with nothing written.
        """
        fd = self._fd
        if fd is None:
            if self.refused:
                return 0, hasher
            try:
                fd = self._fd = os.open(self._path, os.O_WRONLY | os.O_CLOEXEC | O_DIRECT)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.refused = True
                return 0, hasher
        stage = _stages.take()
        try:
            done = _writer_pool().submit(_put, fd, stage, piece, offset)
        except BaseException:
            _stages.give(stage)
            raise
        try:
            hashed = hasher.copy()
            hashed.update(piece)
        finally:
            concurrent.futures.wait((done,))  # the stage is free only once the write is over
            _stages.give(stage)
        try:
            n = done.result()
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.refused = True
            self.close()
            return 0, hasher
        if n == piece.nbytes:
            return n, hashed
        partial = hasher.copy()
        partial.update(piece[:n])
        return n, partial

    def close(self) -> None:
        """Close the direct fd (idempotent); the ordinary fd keeps the file."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def supported_in(directory: str | os.PathLike[str]) -> bool:
    """Whether an aligned ``O_DIRECT`` write works in *directory* (a temp file, removed)."""
    if O_DIRECT == 0:
        return False
    path = os.path.join(directory, f".ctrd-direct-probe-{os.getpid()}-{threading.get_ident()}")
    stage = _stages.take()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | O_DIRECT, 0o600)
        try:
            with memoryview(stage) as sv:
                return os.pwrite(fd, sv[:ALIGN], 0) == ALIGN
        finally:
            os.close(fd)
            os.unlink(path)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    finally:
        _stages.give(stage)
