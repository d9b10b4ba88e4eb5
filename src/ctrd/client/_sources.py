"""What :meth:`ContentClient.ingest <ctrd.client.ContentClient.ingest>` reads from.

A source is opened into a :class:`_Reader`: it knows its size when it can, and
positions itself at the server's resume offset, by seeking when the source
is seekable and by reading and discarding bytes otherwise (a stream). While
skipping it can hash the skipped bytes, so a resume can check that the data
the server holds is the source's prefix.
Reads from files run in a worker thread, one chunk at a time, so memory stays
flat whatever the size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator
from typing import IO, Final, Protocol, TypeAlias

from ctrd import errdefs

__all__ = ["CHUNK_SIZE", "Source", "open_source"]

CHUNK_SIZE: Final = 1 << 20
"""Bytes per WRITE message (1 MiB, as ``ctr``)."""

Source: TypeAlias = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes] | AsyncIterable[bytes]
"""Bytes, a file path, a binary file object, or an async iterable of byte chunks."""


class Hasher(Protocol):
    """What :mod:`hashlib` objects provide."""

    def update(self, data: bytes | memoryview, /) -> None: ...


class _Reader:
    """A positioned, chunked view of a source."""

    size: int | None = None
    """Bytes from the start position to the end, when known."""
    rewindable: bool = False
    """Whether :meth:`rewind` works (bytes, seekable files)."""

    async def skip(self, offset: int, ref: str, hasher: Hasher | None = None) -> None:
        """Advance *offset* bytes past the start; with *hasher*, feed those bytes to it.

        :raises errdefs.FailedPrecondition: the source ends before *offset*.
        """
        raise NotImplementedError

    async def rewind(self) -> None:
        """Back to the start position (only when :attr:`rewindable`)."""
        raise NotImplementedError

    def chunks(self) -> AsyncIterator[bytes]:
        """The rest of the source in chunks of at most :data:`CHUNK_SIZE`."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what :func:`open_source` opened."""
        return None


def _short(ref: str, offset: int, seen: int) -> errdefs.FailedPrecondition:
    return errdefs.FailedPrecondition(
        f"unable to resume write to {ref}: source ended after {seen} bytes, before the resume offset {offset}"
    )


class _BytesReader(_Reader):
    rewindable = True

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self.size = len(self._view)
        self._pos = 0

    async def skip(self, offset: int, ref: str, hasher: Hasher | None = None) -> None:
        if offset > len(self._view):
            raise _short(ref, offset, len(self._view))
        if hasher is not None and offset:
            await asyncio.to_thread(hasher.update, self._view[:offset])  # hashlib drops the GIL
        self._pos = offset

    async def rewind(self) -> None:
        self._pos = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        for start in range(self._pos, len(self._view), CHUNK_SIZE):
            yield bytes(self._view[start : start + CHUNK_SIZE])


class _FileReader(_Reader):
    def __init__(self, f: IO[bytes], *, owned: bool) -> None:
        self._f = f
        self._owned = owned
        self._base = 0
        with contextlib.suppress(AttributeError, ValueError, OSError):
            self.rewindable = f.seekable()
        if self.rewindable:
            self._base = f.tell()
            self.size = self._f.seek(0, os.SEEK_END) - self._base
            self._f.seek(self._base)

    def _consume(self, n: int, hasher: Hasher | None) -> int:
        """Read (and hash) up to *n* bytes; returns how many there were (worker thread)."""
        left = n
        while left > 0:
            part = self._f.read(min(left, CHUNK_SIZE))
            if not part:
                break
            if hasher is not None:
                hasher.update(part)
            left -= len(part)
        return n - left

    async def skip(self, offset: int, ref: str, hasher: Hasher | None = None) -> None:
        if offset == 0:
            return
        if self.rewindable and hasher is None:
            if self.size is not None and offset > self.size:
                raise _short(ref, offset, self.size)
            await asyncio.to_thread(self._f.seek, self._base + offset)
            return
        got = await asyncio.to_thread(self._consume, offset, hasher)
        if got < offset:
            raise _short(ref, offset, got)

    async def rewind(self) -> None:
        await asyncio.to_thread(self._f.seek, self._base)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            part = await asyncio.to_thread(self._f.read, CHUNK_SIZE)
            if not part:
                return
            yield part

    async def close(self) -> None:
        if self._owned:
            self._f.close()


class _StreamReader(_Reader):
    def __init__(self, source: AsyncIterable[bytes], size: int | None) -> None:
        self._it = aiter(source)
        self.size = size
        self._head = b""

    async def skip(self, offset: int, ref: str, hasher: Hasher | None = None) -> None:
        left = offset
        while left > 0:
            try:
                part = await anext(self._it)
            except StopAsyncIteration:
                raise _short(ref, offset, offset - left) from None
            view = memoryview(part).cast("B")
            if len(view) > left:
                self._head = bytes(view[left:])
                view = view[:left]
            if hasher is not None:
                hasher.update(view)
            left -= len(view)

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._head:
            head, self._head = self._head, b""
            for start in range(0, len(head), CHUNK_SIZE):
                yield head[start : start + CHUNK_SIZE]
        async for part in self._it:
            if len(part) <= CHUNK_SIZE:
                yield bytes(part)
                continue
            view = memoryview(part).cast("B")
            for start in range(0, len(view), CHUNK_SIZE):
                yield bytes(view[start : start + CHUNK_SIZE])


def open_source(source: Source, size: int | None = None) -> _Reader:
    """Wrap *source*; *size* is the caller's declared size (used for streams).

    :raises TypeError: not a supported source.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _BytesReader(source)
    if isinstance(source, str | os.PathLike):
        return _FileReader(open(source, "rb"), owned=True)
    if hasattr(source, "read"):
        return _FileReader(source, owned=False)  # type: ignore[arg-type]
    if hasattr(source, "__aiter__"):
        return _StreamReader(source, size)
    raise TypeError(f"unsupported ingest source: {type(source).__name__}")
