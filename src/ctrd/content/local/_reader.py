"""Readers of committed blobs: one shared fd per blob, cached, read with ``os.pread``.

:class:`LocalReaderAt` reads a committed blob at any offset; :class:`BlobFds`
is the store's cache of open blob fds that readers share (see its docstring for
why a deleted blob stays readable by readers that have it open).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Final

from ctrd import errdefs
from ctrd.content.local._fs import INLINE_MAX, map_os_error, run_blocking

__all__ = ["FD_CACHE_MAX", "BlobFds", "LocalReaderAt", "OpenBlob"]

#: open blob fds kept for reuse while no reader holds them (see :class:`BlobFds`)
FD_CACHE_MAX: Final = 64


class OpenBlob:
    """One open read-only fd of a committed blob, shared by its readers."""

    __slots__ = ("digest", "evicted", "fd", "refs", "size")

    def __init__(self, digest: str, fd: int, size: int) -> None:
        self.digest = digest
        self.fd = fd
        self.size = size
        self.refs = 0
        #: out of the cache: closed as soon as the last reader releases it
        self.evicted = False


class BlobFds:
    """Open fds of committed blobs, reused across readers (LRU, at most *max_idle* kept).

    A committed blob never changes and readers use ``os.pread`` (no file
    position), so every reader of a digest can share one fd: a ``Read`` RPC per
    32 KiB (``ctr content get``) then costs no ``open``/``fstat``/``close``.
    An entry is evicted when its blob is deleted through the store, or when it
    is the least recently used beyond *max_idle*; an evicted fd is closed once
    its last reader releases it, so readers of a deleted blob keep reading the
    unlinked file, as with a private fd. All methods run on the event loop's thread.
    """

    def __init__(self, max_idle: int = FD_CACHE_MAX) -> None:
        self._max = max_idle
        self._open: OrderedDict[str, OpenBlob] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def get(self, dgst: str) -> OpenBlob | None:
        """The cached entry for *dgst* with one more reference, or ``None``."""
        entry = self._open.get(dgst)
        if entry is None:
            return None
        self._open.move_to_end(dgst)
        entry.refs += 1
        return entry

    def add(self, entry: OpenBlob) -> OpenBlob:
        """Cache the freshly opened *entry* and take one reference to it."""
        old = self._open.pop(entry.digest, None)
        if old is not None:
            self._evict(old)
        self._open[entry.digest] = entry
        entry.refs += 1
        while len(self._open) > self._max:
            _, lru = self._open.popitem(last=False)
            self._evict(lru)
        return entry

    def release(self, entry: OpenBlob) -> None:
        """Drop one reference; closes the fd of an evicted entry when none is left."""
        entry.refs -= 1
        if entry.evicted and entry.refs == 0:
            os.close(entry.fd)

    def discard(self, dgst: str) -> None:
        """Evict *dgst* (its blob is being or was deleted)."""
        entry = self._open.pop(dgst, None)
        if entry is not None:
            self._evict(entry)

    def close(self) -> None:
        """Evict everything (fds in use close when their readers release them)."""
        while self._open:
            _, entry = self._open.popitem()
            self._evict(entry)

    @staticmethod
    def _evict(entry: OpenBlob) -> None:
        entry.evicted = True
        if entry.refs == 0:
            os.close(entry.fd)


class LocalReaderAt:
    """Random access to one committed blob through a shared fd and ``os.pread``.

    Implements :class:`ctrd.content.ReaderAt`; also an async context manager.
    Reads of up to 64 KiB run inline, larger ones in a worker thread. The fd
    comes from the store's cache of open blobs; :meth:`close` gives it back once
    no read is in flight.
    """

    def __init__(self, blob: OpenBlob, fds: BlobFds) -> None:
        self._blob: OpenBlob | None = blob
        self._fds = fds
        self._fd: int | None = blob.fd
        self._size = blob.size
        self._digest = blob.digest
        self._inflight = 0
        self._closing = False

    @property
    def size(self) -> int:
        """Size of the blob in bytes."""
        return self._size

    @property
    def digest(self) -> str:
        """Digest of the blob."""
        return self._digest

    def __repr__(self) -> str:
        return f"<LocalReaderAt {self._digest} size={self._size}>"

    async def __aenter__(self) -> LocalReaderAt:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def read_at(self, offset: int, n: int) -> bytes:
        """Read up to *n* bytes at *offset*.

        Returns fewer bytes only at the end of the blob, and ``b""`` for
        ``offset >= size`` (Go's ``ReadAt`` gives ``io.EOF`` there).

        :raises errdefs.InvalidArgument: negative *offset* or *n*.
        :raises errdefs.FailedPrecondition: the reader is closed.
        """
        if offset < 0:
            raise errdefs.InvalidArgument(f"read of {self._digest}: negative offset {offset}")
        if n < 0:
            raise errdefs.InvalidArgument(f"read of {self._digest}: negative size {n}")
        fd = self._fd
        if fd is None or self._closing:
            raise errdefs.FailedPrecondition(f"read of {self._digest}: reader is closed")
        n = min(n, self._size - offset)
        if n <= 0:
            return b""
        self._inflight += 1
        try:
            if n <= INLINE_MAX:
                return self._pread(fd, offset, n)
            return await run_blocking(self._pread, fd, offset, n)
        finally:
            self._inflight -= 1
            if self._closing and self._inflight == 0:
                self._release()

    def _pread(self, fd: int, offset: int, n: int) -> bytes:
        try:
            data = os.pread(fd, n, offset)
            if len(data) == n or not data:
                return data
            parts = [data]
            got = len(data)
            while got < n:
                chunk = os.pread(fd, n - got, offset + got)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
            return b"".join(parts)
        except OSError as exc:
            raise map_os_error(exc, f"read of {self._digest}") from None

    async def close(self) -> None:
        """Close the fd (after in-flight reads finish). Idempotent."""
        if self._fd is None or self._closing:
            return
        self._closing = True
        if self._inflight == 0:
            self._release()

    def _release(self) -> None:
        blob, self._blob = self._blob, None
        self._fd = None
        if blob is not None:
            self._fds.release(blob)
