"""Free functions over the content store roles.

Ports of containerd's ``content/helpers.go``: :func:`open_writer`
(``content.OpenWriter``), :func:`write_blob` (``content.WriteBlob``),
:func:`copy` (``content.Copy``) and :func:`read_blob` (``content.ReadBlob``).
Each takes the narrowest role it needs (:class:`~ctrd.content.Ingester` to
write, :class:`~ctrd.content.Provider` to read), so they work with any store
implementation (local, metadata, remote) and with anything that plays the role.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterable, Mapping
from typing import Final, TypeAlias

from ctrd import errdefs
from ctrd.content._store import Ingester, Provider, ReaderAt, Writer

__all__ = ["CHUNK_SIZE", "Chunk", "Source", "copy", "open_writer", "read_blob", "write_blob"]

CHUNK_SIZE: Final = 1 << 20
"""Size of the chunks :func:`copy` writes and :func:`read_blob` reads (1 MiB)."""

_BACKOFF_START_MS: Final = 16
_BACKOFF_MAX_MS: Final = 2048

Chunk: TypeAlias = bytes | bytearray | memoryview
Source: TypeAlias = Chunk | ReaderAt | AsyncIterable[Chunk]
"""What :func:`copy` reads from.

* a bytes-like object: random access, resumed by slicing (containerd's ``io.ReadSeeker`` case);
* a :class:`ReaderAt`: random access, read in :data:`CHUNK_SIZE` pieces
  (containerd's ``io.ReaderAt`` / ``SectionReader`` case; memory stays flat);
* an async iterable of chunks: a plain stream, resumed by discarding the first
  ``offset`` bytes (containerd's plain ``io.Reader`` case).
"""


async def open_writer(
    store: Ingester,
    ref: str,
    total: int = 0,
    expected: str = "",
    *,
    # bounds the retries only, and the store's last Unavailable is raised (not a TimeoutError)
    timeout: float | None = 10.0,  # noqa: ASYNC109
) -> Writer:
    """Open a writer, retrying while the ref is locked by another writer.

    Like containerd's ``content.OpenWriter``: on :class:`errdefs.Unavailable` it
    sleeps a random ``[0, backoff)`` milliseconds, with backoff doubling from
    16 ms up to 2048 ms, until *timeout* seconds have passed (``None``: forever).

    :raises errdefs.Unavailable: the ref stayed locked for *timeout* seconds
        (the store's last error is re-raised).
    :raises errdefs.Error: any other error of ``store.writer`` (e.g.
        :class:`errdefs.AlreadyExists`, :class:`errdefs.InvalidArgument`), unchanged.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    backoff = _BACKOFF_START_MS
    while True:
        try:
            return await store.writer(ref, total, expected)
        except errdefs.Unavailable:
            delay = random.randrange(backoff) / 1000.0
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise
                delay = min(delay, remaining)
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, _BACKOFF_MAX_MS)


async def write_blob(
    store: Ingester,
    ref: str,
    data: bytes | bytearray | memoryview,
    *,
    total: int = 0,
    expected: str = "",
    labels: Mapping[str, str] | None = None,
) -> None:
    """Write *data* under *ref* and commit it (containerd ``content.WriteBlob``).

    Opens the writer through :func:`open_writer`, resumes an existing ingest
    (see :func:`copy`), commits with ``size=total`` and *expected*, and closes
    the writer. :class:`errdefs.AlreadyExists`, from opening or from committing,
    counts as success: the content is present.

    :raises errdefs.FailedPrecondition: size or digest mismatch at commit.
    :raises errdefs.Unavailable: the ref stayed locked (see :func:`open_writer`).
    """
    try:
        writer = await open_writer(store, ref, total, expected)
    except errdefs.AlreadyExists:
        return
    try:
        await copy(writer, data, total, expected, labels)
    finally:
        await writer.close()


async def copy(
    writer: Writer,
    source: Source,
    size: int,
    expected: str,
    labels: Mapping[str, str] | None = None,
) -> None:
    """Copy *source* into *writer* and commit (containerd ``content.Copy``).

    Resume-aware: it starts at ``writer.status().offset`` and skips that many
    bytes of *source*. When the ingest already holds more bytes than the source
    has (known for bytes-like and :class:`ReaderAt` sources, or from *size* for
    streams), the ingest is truncated to 0 and the whole source is written.
    Writes go in :data:`CHUNK_SIZE` pieces without copying bytes-like sources.
    Commits with ``commit(size, expected, labels)``; an
    :class:`errdefs.AlreadyExists` from commit is treated as success. The
    writer is not closed (commit closes it on the stores in this package).

    :raises errdefs.FailedPrecondition: size or digest mismatch at commit, or a
        stream that ends before the resume offset.
    """
    status = await writer.status()
    offset = status.offset
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        if offset > len(view):
            await writer.truncate(0)
            offset = 0
        for start in range(offset, len(view), CHUNK_SIZE):
            await writer.write(view[start : start + CHUNK_SIZE])
    elif isinstance(source, ReaderAt):
        end = source.size
        if offset > end:
            await writer.truncate(0)
            offset = 0
        pos = offset
        while pos < end:
            chunk = await source.read_at(pos, min(CHUNK_SIZE, end - pos))
            if not chunk:
                break
            await writer.write(chunk)
            pos += len(chunk)
    else:
        if size > 0 and offset > size:
            await writer.truncate(0)
            offset = 0
        await _copy_stream(writer, source, offset, status.ref)
    with contextlib.suppress(errdefs.AlreadyExists):
        await writer.commit(size, expected, labels)


async def _copy_stream(
    writer: Writer,
    source: AsyncIterable[Chunk],
    skip: int,
    ref: str,
) -> None:
    """Write *source* to *writer*, discarding its first *skip* bytes."""
    seen = 0
    async for chunk in source:
        view = memoryview(chunk).cast("B")
        if skip > 0:
            if len(view) <= skip:
                skip -= len(view)
                seen += len(view)
                continue
            view = view[skip:]
            seen += skip
            skip = 0
        for start in range(0, len(view), CHUNK_SIZE):
            await writer.write(view[start : start + CHUNK_SIZE])
    if skip > 0:
        raise errdefs.FailedPrecondition(
            f"unable to resume write to {ref}: source ended after {seen} bytes, before offset {seen + skip}"
        )


async def read_blob(store: Provider, dgst: str) -> bytes:
    """Read the whole blob *dgst* into memory (containerd ``content.ReadBlob``).

    Only for blobs known to be small: the result holds the entire blob.

    :raises errdefs.InvalidArgument: malformed digest.
    :raises errdefs.NotFound: no such blob.
    :raises errdefs.DataLoss: the blob is shorter than its reported size.
    """
    reader = await store.reader_at(dgst)
    try:
        size = reader.size
        first = await reader.read_at(0, size)
        if len(first) >= size:
            return first
        buf = bytearray(first)
        while len(buf) < size:
            chunk = await reader.read_at(len(buf), min(CHUNK_SIZE, size - len(buf)))
            if not chunk:
                raise errdefs.DataLoss(f"content {dgst}: read {len(buf)} of {size} bytes")
            buf += chunk
        return bytes(buf)
    finally:
        await reader.close()
