"""Benchmark payloads.

:class:`LargeBlob` is one buffer of random bytes, kept both in memory (for the
SDK) and in a page-cached file (stdin of ``ctr content ingest``). Its last
:data:`NONCE` bytes are a per-use tag, so each run ingests a blob that no daemon
has seen before (a true first-time ingest even if a deleted blob lingered), and
the digest costs nothing: the sha256 state over the fixed prefix is computed once
and copied.

:class:`FileBlob` is a blob that lives only in a file (1 GiB for the shared
admission and the peak-RSS ingest), built by repeating another buffer, with a
random tail so every benchmark invocation has a new digest.
:func:`list_blob` gives the tiny, distinct blobs of the ``List`` scenarios.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["NONCE", "FileBlob", "LargeBlob", "digest_of", "list_blob", "small_blobs"]

NONCE = 32
_CHUNK = 1 << 20


def digest_of(data: bytes | bytearray | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class LargeBlob:
    """*size* random bytes in memory and in *path*; :meth:`stamp` makes them unique."""

    def __init__(self, path: Path, size: int) -> None:
        if size <= NONCE:
            raise ValueError(f"large blob must be larger than {NONCE} bytes")
        self.path = path
        self.size = size
        self.buf = bytearray(size)
        with path.open("wb") as f:
            for off in range(0, size, _CHUNK):
                chunk = os.urandom(min(_CHUNK, size - off))
                self.buf[off : off + len(chunk)] = chunk
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())  # no background writeback of the source during the runs
        self._prefix = hashlib.sha256(memoryview(self.buf)[: size - NONCE])
        self.tag = ""
        self.digest = ""

    def stamp(self, tag: str) -> str:
        """Set the trailing nonce to *tag* (in memory and in the file); return the new digest."""
        nonce = hashlib.sha256(tag.encode()).digest()[:NONCE]
        self.buf[self.size - NONCE :] = nonce
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, nonce, self.size - NONCE)
        finally:
            os.close(fd)
        h = self._prefix.copy()
        h.update(nonce)
        self.tag = tag
        self.digest = "sha256:" + h.hexdigest()
        return self.digest

    def view(self) -> memoryview:
        return memoryview(self.buf)


def small_blobs(count: int, size: int) -> list[tuple[bytes, str]]:
    """*count* distinct random blobs of *size* bytes with their digests."""
    raw = os.urandom(count * size)
    out = []
    for i in range(count):
        b = raw[i * size : (i + 1) * size]
        out.append((b, digest_of(b)))
    return out


class FileBlob:
    """*size* bytes in *path* only (not in memory): *pattern* repeated, then a random nonce."""

    def __init__(self, path: Path, size: int, pattern: memoryview) -> None:
        if size <= NONCE or not len(pattern):
            raise ValueError("file blob too small or empty pattern")
        self.path = path
        self.size = size
        h = hashlib.sha256()
        body = size - NONCE
        with path.open("wb") as f:
            off = 0
            while off < body:
                start = off % len(pattern)
                n = min(_CHUNK, body - off, len(pattern) - start)
                chunk = pattern[start : start + n]
                h.update(chunk)
                f.write(chunk)
                off += n
            nonce = os.urandom(NONCE)
            h.update(nonce)
            f.write(nonce)
            f.flush()
            os.fsync(f.fileno())
        self.digest = "sha256:" + h.hexdigest()


def list_blob(i: int) -> tuple[bytes, str]:
    """The *i*-th tiny blob of the List scenarios (the same in both daemons)."""
    data = f"ctrd bench list blob {i:09d}\n".encode()
    return data, digest_of(data)
