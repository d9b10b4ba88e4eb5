"""The ``Write`` stream of the Content service as a :class:`ctrd.content.Writer`.

:class:`RemoteWriter` speaks containerd's conversation: ``STAT`` on open,
``WRITE`` per chunk of at most 1 MiB, ``COMMIT`` last, one reply per request in
order. It can keep several ``WRITE`` requests in flight (:data:`PIPELINE` for bulk
uploads) and recovers the server's status from the trailers when the stream is
reset. :meth:`RemoteContentStore.open_writer <ctrd.remote.RemoteContentStore.open_writer>`
builds it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ctrd import errdefs
from ctrd.api.containerd.services.content import v1 as api
from ctrd.content import Status
from ctrd.remote._scope import ChannelScope, Scope
from ctrd.wire.client import send_encoded, status_after_reset
from ctrd.wire.codecs import EncodedRequest, encode_write_request
from ctrd.wire.convert import to_utc

__all__ = ["PIPELINE", "RemoteWriter"]

_WRITE_PATH: Final = "/containerd.services.content.v1.Content/Write"
_CHUNK: Final = 1 << 20


PIPELINE: Final = 4
"""WRITEs in flight for bulk uploads (``Client.content.ingest``; ``pipeline=`` elsewhere)."""


class RemoteWriter:
    """A ``Write`` stream: one reply per request, in order, as containerd's server sends them.

    ``STAT`` on open, ``WRITE`` per chunk of at most 1 MiB (up to *pipeline*
    of them in flight, see :meth:`write`; 1 is containerd's lock step),
    ``COMMIT`` last.
    ``COMMIT`` half-closes the stream (containerd 1.6 resets a stream that is
    still open from the client side once it has answered a commit). *timeout* bounds each round trip.
    """

    def __init__(
        self,
        channel: Channel,
        ref: str,
        metadata: Mapping[str, str],
        *,
        timeout: float | None = None,
        scope: Scope | None = None,
        pipeline: int = 1,
    ) -> None:
        self._channel = channel
        self._pipeline = max(pipeline, 1)
        self._ref = ref
        self._metadata = dict(metadata)
        self._timeout = timeout
        self._scope = scope
        self._cm: Any = None
        self._stream: Any = None
        self._offset = 0
        self._digest = ""
        self._total = 0
        self._pending: collections.deque[int] = collections.deque()  # sizes of WRITEs in flight
        self._opened: Status | None = None  # the opening STAT's answer, until the next request
        self._started: Any = None
        self._updated: Any = None
        self._closed = False

    @property
    def ref(self) -> str:
        """The ingest's ref."""
        return self._ref

    @property
    def offset(self) -> int:
        """Bytes the server holds for this ingest (after the last reply)."""
        return self._offset

    @property
    def total(self) -> int:
        """The expected total size, as the server knows it (``0``: unknown)."""
        return self._total

    @property
    def closed(self) -> bool:
        """Whether the stream is finished (committed, closed or failed)."""
        return self._closed

    def _translate(self) -> contextlib.AbstractContextManager[None]:
        if self._scope is not None:
            return self._scope.translate()
        return ChannelScope(self._channel).translate()

    async def open(self, total: int, expected: str) -> None:
        """Start the stream with ``STAT{ref, total, expected}``; the reply's offset is
        where a resumed ingest continues."""
        self._cm = self._channel.request(
            _WRITE_PATH,
            Cardinality.STREAM_STREAM,
            EncodedRequest,
            api.WriteContentResponse,
            metadata=self._metadata,
        )
        try:
            with self._translate():
                self._stream = await self._cm.__aenter__()
        except BaseException:
            self._closed = True
            self._cm = None
            raise
        resp = await self._round(
            api.WriteContentRequest(
                action=api.WriteAction.STAT, ref=self._ref, total=total, expected=expected
            )
        )
        self._apply(resp)
        self._opened = self._status_of(resp)

    async def _recv(self) -> api.WriteContentResponse:
        resp = await self._stream.recv_message()
        if resp is None:
            # the server ended the stream: surface its status (read from the trailers directly
            # while our side is still open: grpclib's recv_trailing_metadata refuses then)
            err = self._trailer_error()
            if err is not None:
                raise err
            await self._stream.recv_trailing_metadata()
            raise errdefs.Unknown("write stream ended unexpectedly")
        assert isinstance(resp, api.WriteContentResponse)
        return resp

    def _apply(self, resp: api.WriteContentResponse) -> None:
        self._offset = resp.offset
        self._digest = resp.digest
        if resp.total:
            self._total = resp.total
        if resp.started_at is not None:
            self._started = resp.started_at
        if resp.updated_at is not None:
            self._updated = resp.updated_at

    async def _abandon(self) -> None:
        """Reset the stream (the server keeps the data for a later resume)."""
        self._closed = True
        self._pending.clear()
        if self._cm is not None:
            cm, self._cm = self._cm, None
            exc = asyncio.CancelledError()
            with contextlib.suppress(BaseException):
                await cm.__aexit__(type(exc), exc, None)

    def _trailer_error(self) -> GRPCError | None:
        return status_after_reset(self._stream)

    async def _round(
        self, req: api.WriteContentRequest | EncodedRequest, *, end: bool = False
    ) -> api.WriteContentResponse:
        """One request and its reply, after the replies of WRITEs still in flight."""
        await self.flush()
        await self._send(req, end=end)
        return await self._receive()

    async def _send(self, req: api.WriteContentRequest | EncodedRequest, *, end: bool = False) -> None:
        if self._closed:
            raise errdefs.FailedPrecondition("writer is closed")
        self._opened = None
        msg = req if isinstance(req, EncodedRequest) else EncodedRequest(bytes(req))
        async with self._guarded():
            await send_encoded(self._stream, msg, end)

    async def _receive(self) -> api.WriteContentResponse:
        async with self._guarded():
            resp = await self._recv()
        return resp

    @contextlib.asynccontextmanager
    async def _guarded(self) -> AsyncIterator[None]:
        """One send or receive: timeout, errors translated (the server's status recovered from
        its trailers after a reset), and the stream abandoned on any failure."""
        try:
            with self._translate():
                try:
                    async with asyncio.timeout(self._timeout):
                        yield
                except StreamTerminatedError:
                    err = self._trailer_error()
                    if err is not None:
                        raise err from None
                    raise
        except BaseException:
            await self._abandon()
            raise

    async def _collect(self) -> None:
        """Take the reply of the oldest WRITE in flight; it must account for all its bytes."""
        sent = self._pending[0]
        before = self._offset
        resp = await self._receive()
        self._pending.popleft()
        self._apply(resp)
        n = resp.offset - before
        if n != sent:
            await self._abandon()
            raise errdefs.DataLoss(f"short write: wrote {n} of {sent} bytes")

    def digest(self) -> str:
        """Digest of the bytes written so far as the server computed it (as of the last
        reply taken: :meth:`flush` first for the WRITEs still in flight)."""
        return self._digest

    async def flush(self) -> None:
        """Wait for the replies of every WRITE in flight (see :meth:`write`).

        :raises errdefs.DataLoss: the server took fewer bytes than sent.
        """
        while self._pending:
            await self._collect()

    async def status(self) -> Status:
        """A ``STAT`` round trip; right after opening, the opening ``STAT``'s answer.

        The writer holds the ingest's lock, so nothing changes it between the
        opening reply and a ``status()`` that follows with no request between
        them (what ``content.copy`` does to find its resume point).
        """
        if self._opened is not None and not self._closed:
            return self._opened
        resp = await self._round(api.WriteContentRequest(action=api.WriteAction.STAT))
        self._apply(resp)
        return self._status_of(resp)

    def _status_of(self, resp: api.WriteContentResponse) -> Status:
        return Status(
            ref=self._ref,
            offset=resp.offset,
            total=resp.total or self._total,
            started_at=to_utc(self._started),
            updated_at=to_utc(self._updated),
        )

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append *data* in WRITEs of at most 1 MiB; returns the bytes sent.

        With ``pipeline=1`` (the default) each WRITE's reply is taken before
        this returns. With more, up to that many WRITEs are in flight: this
        returns once its chunks are sent, and their replies are taken by later
        calls. A failed
        or short write therefore raises from a later ``write``, or from
        :meth:`flush`, :meth:`status`, :meth:`commit` or :meth:`truncate`, which
        first wait for every reply; :attr:`offset` and :meth:`digest` reflect the
        replies taken so far. containerd's server answers each message in order, so this is
        the same conversation as lock step, without waiting a round trip per MiB.

        :raises errdefs.DataLoss: the server took fewer bytes than sent.
        """
        total = 0
        first = True
        view = memoryview(data).cast("B")
        while len(view) or first:
            first = False
            chunk = view[:_CHUNK]
            view = view[_CHUNK:]
            offset = self._offset + sum(self._pending)
            await self._send(encode_write_request(offset, chunk))
            self._pending.append(len(chunk))
            total += len(chunk)
            if len(self._pending) >= self._pipeline:
                await self._collect()
            if not len(view):
                break
        return total

    async def truncate(self, size: int) -> None:
        """Discard the ingest's data (only ``0`` is supported, as in containerd)."""
        if size != 0:
            raise errdefs.InvalidArgument("truncate: unsupported size")
        # A WRITE at offset 0 without data makes the server truncate now, so a
        # following STAT already reports offset 0 (containerd's Go client defers it).
        resp = await self._round(api.WriteContentRequest(action=api.WriteAction.WRITE, offset=0))
        self._apply(resp)

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> None:
        """Commit and finish the stream (whatever the outcome).

        :raises errdefs.FailedPrecondition: size or digest mismatch (the ingest is kept).
        :raises errdefs.AlreadyExists: the blob exists already.
        """
        await self.flush()  # the COMMIT names the offset the server holds
        req = api.WriteContentRequest(
            action=api.WriteAction.COMMIT,
            total=size,
            offset=self._offset,
            expected=expected,
            labels=dict(labels or {}),
        )
        # END_STREAM with COMMIT: the server then ends with trailers, no reset
        resp = await self._round(req, end=True)
        self._apply(resp)
        await self._finish()
        if size and resp.offset != size:
            raise errdefs.FailedPrecondition(f"unexpected size {resp.offset}, expected {size}")
        if expected and resp.digest != expected:
            raise errdefs.FailedPrecondition(f"unexpected digest {resp.digest}, expected {expected}")

    async def _finish(self) -> None:
        """After the final reply: drain repeated replies (containerd 1.6 sends the commit
        reply twice) and the trailers, then release the stream."""
        self._closed = True
        try:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    while await self._stream.recv_message() is not None:
                        pass
                    await self._stream.recv_trailing_metadata()
        finally:
            cm, self._cm = self._cm, None
            if cm is not None:
                with contextlib.suppress(Exception):
                    await cm.__aexit__(None, None, None)

    async def close(self) -> None:
        """Half-close and release the stream; the server keeps the ingest for a resume."""
        if self._closed or self._stream is None:
            await self._abandon()
            return
        self._closed = True
        try:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await self._stream.end()
                    while await self._stream.recv_message() is not None:
                        pass
        finally:
            cm, self._cm = self._cm, None
            if cm is not None:
                with contextlib.suppress(Exception):
                    await cm.__aexit__(None, None, None)
