"""``client.content``: the content store as SDK users see it.

A thin, typed layer over :class:`~ctrd.client.RemoteContentStore` (which stays
the :class:`ctrd.content.Store` implementation, usable with
:mod:`ctrd.content.helpers`): keyword arguments, label updates by key,
writers as async context managers, and :meth:`ContentClient.ingest`, the
resumable, progress-reporting upload.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime
import hashlib
import random
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, TypeAlias

from grpclib.exceptions import GRPCError

from ctrd import errdefs
from ctrd.client._sources import Source, _Reader, open_source
from ctrd.content import Info, Status
from ctrd.remote import PIPELINE, RemoteContentStore, RemoteWriter, Scope
from ctrd.wire.convert import EPOCH

__all__ = ["ContentClient", "ContentWriter", "Progress"]

Progress: TypeAlias = Callable[[int, "int | None"], object]
"""``progress(offset, total)``: bytes the server holds so far, and the expected total
(``None`` when unknown). Called once before the first byte is sent (``offset`` is
then the resume offset) and after every chunk."""

_BACKOFF_START: Final = 0.016
_BACKOFF_MAX: Final = 2.048


class ContentWriter:
    """An open ingest (one ``Write`` stream), from :meth:`ContentClient.writer`.

    The server keeps what was written when the writer is closed without a
    commit, or when the connection drops: opening the same ref again resumes at
    :attr:`offset`.
    """

    def __init__(self, writer: RemoteWriter) -> None:
        self._w = writer

    @property
    def ref(self) -> str:
        """The ingest's ref."""
        return self._w.ref

    @property
    def offset(self) -> int:
        """Bytes the server holds: where the next :meth:`write` lands (the resume point
        right after opening)."""
        return self._w.offset

    @property
    def total(self) -> int | None:
        """The expected size the server knows for this ingest, if any."""
        return self._w.total or None

    @property
    def digest(self) -> str:
        """The digest of the bytes written so far, as the server computed it."""
        return self._w.digest()

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append *data* (sent in messages of at most 1 MiB); returns the bytes written.

        :raises errdefs.FailedPrecondition: the writer is closed.
        """
        return await self._w.write(data)  # lock step: offset and digest are the server's after it

    async def status(self) -> Status:
        """The ingest's status (a round trip)."""
        return await self._w.status()

    async def truncate(self, size: int = 0) -> None:
        """Discard the written data (only ``size=0`` is supported, as in containerd).

        :raises errdefs.InvalidArgument: a size other than 0.
        """
        await self._w.truncate(size)

    async def commit(
        self, size: int | None = None, expected: str | None = None, labels: Mapping[str, str] | None = None
    ) -> str:
        """Verify and commit the blob; returns its digest. The writer is closed afterwards.

        :param size: the expected size (default: the bytes written).
        :param expected: the expected digest (default: not checked).
        :param labels: labels of the new blob.
        :raises errdefs.FailedPrecondition: size or digest mismatch (the ingest stays active).
        :raises errdefs.AlreadyExists: the blob exists already in the namespace.
        """
        await self._w.commit(self.offset if size is None else size, expected or "", labels)
        return self._w.digest()

    async def close(self) -> None:
        """Release the stream without committing; the data stays for a resume."""
        await self._w.close()

    async def abandon(self) -> None:
        """Reset the stream at once, as a crashed client would (the data stays for a resume)."""
        await self._w._abandon()


class _WriterContext:
    """``async with content.writer(...) as w``; also ``w = await content.writer(...)``."""

    def __init__(self, opener: Callable[[], Coroutine[Any, Any, ContentWriter]]) -> None:
        self._opener = opener
        self._writer: ContentWriter | None = None

    def __await__(self) -> Generator[Any, None, ContentWriter]:
        return self._opener().__await__()

    async def __aenter__(self) -> ContentWriter:
        self._writer = await self._opener()
        return self._writer

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        w, self._writer = self._writer, None
        if w is None:
            return
        if exc is None:
            await w.close()
        else:
            await w.abandon()


class ContentClient:
    """Content of one namespace: ``client.content``.

    Every method raises :mod:`ctrd.errdefs` errors only (``NotFound``,
    ``AlreadyExists``, ``FailedPrecondition``, ``Unavailable`` when the daemon
    cannot be reached, ``DeadlineExceeded`` past the client's timeout, ...).
    """

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._store = RemoteContentStore(scope=scope)

    @property
    def store(self) -> RemoteContentStore:
        """This view as a :class:`ctrd.content.Store` (for :mod:`ctrd.content.helpers`)."""
        return self._store

    async def info(self, digest: str) -> Info:
        """The blob's size, timestamps and labels.

        :raises errdefs.NotFound: no such blob in the namespace.
        :raises errdefs.InvalidArgument: a malformed digest.
        """
        return await self._store.info(digest)

    async def update(
        self,
        digest: str,
        labels: Mapping[str, str | None] | None = None,
        *,
        fieldpaths: Sequence[str] | None = None,
    ) -> Info:
        """Change labels; returns the updated info.

        By default only the keys in *labels* change: a value sets the label, an
        empty string or ``None`` removes it (paths ``labels.<key>``, as
        ``ctr content label``). ``fieldpaths=["labels"]`` replaces all labels by
        *labels*; explicit paths are sent as given.

        :raises errdefs.NotFound: no such blob.
        :raises errdefs.InvalidArgument: an unsupported path or an invalid label.
        """
        labels = dict(labels or {})
        paths = list(fieldpaths) if fieldpaths is not None else [f"labels.{k}" for k in labels]
        if not paths:
            return await self.info(digest)
        clean = {k: v for k, v in labels.items() if v}
        info = Info(digest=digest, size=0, created_at=EPOCH, updated_at=EPOCH, labels=clean)
        return await self._store.update(info, paths)

    async def list(self, *filters: str) -> AsyncGenerator[Info, None]:
        """Blobs matching any of *filters* (e.g. ``labels."a"==b``; none: all), by digest."""
        async with contextlib.aclosing(self._store.walk(*filters)) as it:
            async for info in it:
                yield info

    async def delete(self, digest: str) -> None:
        """Remove the blob from the namespace.

        :raises errdefs.NotFound: no such blob.
        """
        await self._store.delete(digest)

    async def read(
        self, digest: str, offset: int = 0, size: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The blob's bytes ``[offset, offset+size)`` (``size=None``: to the end) as one
        stream of chunks (at most 1 MiB each).

        :raises errdefs.NotFound: no such blob.
        :raises errdefs.OutOfRange: *offset* past the end.
        """
        async with contextlib.aclosing(self._store.read(digest, offset, size or 0)) as it:
            async for chunk in it:
                yield chunk

    async def read_all(self, digest: str) -> bytes:
        """The whole blob in memory (for small blobs).

        :raises errdefs.NotFound: no such blob.
        """
        parts = [chunk async for chunk in self.read(digest)]
        return b"".join(parts)

    async def status(self, ref: str) -> Status:
        """The status of the active ingest *ref*.

        :raises errdefs.NotFound: no such ingest.
        """
        return await self._store.status(ref)

    async def list_statuses(self, *filters: str) -> builtins.list[Status]:
        """Active ingests matching any of *filters* (field ``ref``, e.g. ``ref~=^img-``)."""
        return await self._store.list_statuses(*filters)

    async def abort(self, ref: str) -> None:
        """Remove the active ingest *ref* and its data.

        :raises errdefs.NotFound: no such ingest.
        """
        await self._store.abort(ref)

    def writer(
        self,
        ref: str,
        total: int | None = None,
        expected: str | None = None,
        *,
        lock_timeout: float | None = 10.0,
    ) -> _WriterContext:
        """Open (or resume) the ingest *ref*.

        Use as ``async with content.writer(ref) as w:`` (closes the writer on exit;
        an exception resets the stream) or ``w = await content.writer(ref)``.
        ``w.offset`` tells where a resumed ingest continues. While another
        writer holds *ref*, opening retries with backoff for *lock_timeout*
        seconds (``None``: forever, ``0``: no retry), as containerd's
        ``content.OpenWriter``.

        :raises errdefs.AlreadyExists: *expected* is committed in the namespace already.
        :raises errdefs.Unavailable: *ref* stayed locked.
        :raises errdefs.InvalidArgument: an empty ref.
        """

        async def opener() -> ContentWriter:
            return ContentWriter(await self._open(ref, total or 0, expected or "", lock_timeout))

        return _WriterContext(opener)

    async def _open(
        self, ref: str, total: int, expected: str, lock_timeout: float | None, *, pipeline: int = 1
    ) -> RemoteWriter:
        loop = asyncio.get_running_loop()
        deadline = None if lock_timeout is None else loop.time() + lock_timeout
        backoff = _BACKOFF_START
        while True:
            try:
                return await self._store.open_writer(ref, total, expected, pipeline=pipeline)
            except errdefs.Unavailable as exc:
                if not isinstance(exc.__cause__, GRPCError):
                    raise  # the daemon is unreachable, not the ref locked
                delay = random.uniform(0, backoff)
                if deadline is not None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise
                    delay = min(delay, remaining)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    async def ingest(
        self,
        ref: str,
        source: Source,
        expected: str | None = None,
        labels: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        *,
        size: int | None = None,
        lock_timeout: float | None = 10.0,
    ) -> Info:
        """Upload *source* as a blob and return its :class:`Info`.

        *source* is bytes, a file path, a binary file object (read from its
        current position) or an async iterable of byte chunks. The upload goes
        through the ingest *ref*: if an earlier attempt with the same ref was
        interrupted, it resumes at the server's offset (seeking a seekable
        source, skipping bytes of a stream) instead of starting over, after
        checking that the bytes the server holds are the source's start (a
        stale ingest with other data is truncated, or, for a stream, reported).
        A shared blob the server already has is committed without sending data.
        Up to :data:`~ctrd.remote.PIPELINE` 1 MiB WRITEs are in flight
        (the server answers them in order; progress follows the replies).

        :param expected: the blob's digest, if known: the commit verifies it, and
            a blob already committed under it counts as success.
        :param labels: labels of the blob. When the blob exists already they are
            applied to it (``labels.<key>`` updates), so the result always has them.
        :param progress: ``progress(offset, total)``, see :data:`Progress`.
        :param size: the blob's size, if known: checked at commit (needed for the
            size check, and for sharing, with a stream source). Default: the
            source's size when it has one.
        :param lock_timeout: see :meth:`writer`.
        :raises errdefs.FailedPrecondition: digest or size mismatch (the ingest
            stays active: abort it or retry), or a stream that is shorter than, or
            differs from, what the ingest already holds.
        :raises errdefs.Unavailable: the ref stayed locked by another writer.

        A server that starts shutting down during the upload lets the Write stream
        finish but refuses new calls: when the commit succeeded and only the lookup
        of the new blob's :class:`Info` is refused, the Info returned is made from
        the commit (its times are this client's clock), not an error.
        """
        reader = open_source(source, size)
        try:
            total = size if size is not None else (reader.size or 0)
            try:
                w = await self._open(ref, total, expected or "", lock_timeout, pipeline=PIPELINE)
            except errdefs.AlreadyExists:
                if not expected:
                    raise
                return await self._existing(expected, labels, total, progress)
            try:
                shared = bool(expected) and total > 0 and w.offset == total and w.digest() == expected
                offset = 0 if shared else await self._position(w, reader, total)
                if progress is not None:
                    progress(total if shared else offset, total or None)
                if not shared:
                    reported = offset
                    async for chunk in reader.chunks():
                        await w.write(chunk)  # replies lag up to PIPELINE chunks behind
                        if progress is not None and w.offset != reported:
                            reported = w.offset
                            progress(reported, total or None)
                    await w.flush()
                    if progress is not None and w.offset != reported:
                        progress(w.offset, total or None)
                try:
                    await w.commit(total or w.offset, expected or "", labels)
                    dgst = w.digest()
                    committed = w.offset
                except errdefs.AlreadyExists:
                    dgst = expected or w.digest()
                    return await self._existing(dgst, labels, total, None)
            finally:
                await w.close()
        finally:
            await reader.close()
        try:
            return await self.info(dgst)
        except errdefs.Unavailable:
            # Committed, but the server takes no new call any more (it is shutting down, its
            # drain refuses the lookup): the blob is stored, so this is no failure. Its Info
            # is what the commit established; the times are this client's.
            now = datetime.datetime.now(datetime.UTC)
            kept = {k: v for k, v in (labels or {}).items() if v}
            return Info(digest=dgst, size=committed, created_at=now, updated_at=now, labels=kept)

    @staticmethod
    async def _position(w: RemoteWriter, reader: _Reader, total: int) -> int:
        """Move *reader* to the ingest's offset, checking that the data the server holds is
        the source's prefix (by its digest); start over when it is not (or is too long)."""
        offset = w.offset
        if offset == 0:
            return 0
        if total and offset > total:
            await w.truncate(0)
            return 0
        held = w.digest()
        hasher = hashlib.sha256() if held.startswith("sha256:") else None
        await reader.skip(offset, w.ref, hasher)
        if hasher is None or "sha256:" + hasher.hexdigest() == held:
            return offset
        if not reader.rewindable:
            raise errdefs.FailedPrecondition(
                f"ingest {w.ref} holds {offset} bytes that are not the start of this stream: "
                "abort the ingest or use another ref"
            )
        await w.truncate(0)
        await reader.rewind()
        return 0

    async def _existing(
        self, digest: str, labels: Mapping[str, str] | None, total: int, progress: Progress | None
    ) -> Info:
        info = await self.info(digest)
        if labels and any(info.labels.get(k) != v for k, v in labels.items()):
            info = await self.update(digest, dict(labels))
        if progress is not None:
            progress(info.size, total or info.size)
        return info
