"""A content :class:`~ctrd.content.Store` over containerd's Content gRPC service.

Works against ctrd and against real containerd. The namespace of each call is
the one in the current context (:func:`ctrd.namespaces.with_namespace`), else
the store's default; the lease, likewise.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.const import Status as _GStatus
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ctrd import errdefs, errgrpc, namespaces
from ctrd.api.containerd.services.content import v1 as api
from ctrd.api.google.protobuf import FieldMask
from ctrd.content import Info, ReaderAt, Status, Writer
from ctrd.protobuf import info_from_proto, info_to_proto, status_from_proto, to_utc

__all__ = ["RemoteContentStore", "RemoteReaderAt", "RemoteWriter"]

_WRITE_PATH = "/containerd.services.content.v1.Content/Write"
_CHUNK = 1 << 20


class RemoteContentStore:
    """Implements :class:`ctrd.content.Store` over a grpclib :class:`Channel`."""

    def __init__(
        self,
        channel: Channel,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._channel = channel
        self._stub = api.ContentStub(channel)
        self._namespace = namespace
        self._timeout = timeout
        self._extra = dict(metadata or {})

    def metadata(self) -> dict[str, str]:
        """Request headers for the current context."""
        md = dict(self._extra)
        ns = namespaces.current() or self._namespace
        if ns:
            md[namespaces.GRPC_HEADER] = ns
        lease = namespaces.current_lease()
        if lease:
            md[namespaces.LEASE_HEADER] = lease
        return md

    async def info(self, dgst: str) -> Info:
        with errgrpc.translate_to_native():
            resp = await self._stub.info(
                api.InfoRequest(digest=dgst), metadata=self.metadata(), timeout=self._timeout
            )
        return info_from_proto(resp.info)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        req = api.UpdateRequest(
            info=info_to_proto(info),
            update_mask=FieldMask(paths=list(fieldpaths)) if fieldpaths else None,
        )
        with errgrpc.translate_to_native():
            resp = await self._stub.update(req, metadata=self.metadata(), timeout=self._timeout)
        return info_from_proto(resp.info)

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        with errgrpc.translate_to_native():
            async for resp in self._stub.list(
                api.ListContentRequest(filters=list(filters)), metadata=self.metadata(), timeout=self._timeout
            ):
                for i in resp.info:
                    yield info_from_proto(i)

    async def delete(self, dgst: str) -> None:
        with errgrpc.translate_to_native():
            await self._stub.delete(
                api.DeleteContentRequest(digest=dgst), metadata=self.metadata(), timeout=self._timeout
            )

    async def reader_at(self, dgst: str) -> ReaderAt:
        info = await self.info(dgst)
        return RemoteReaderAt(self, dgst, info.size)

    async def read(self, dgst: str, offset: int = 0, size: int = 0) -> AsyncIterator[bytes]:
        """Stream ``[offset, offset+size)`` (``size <= 0``: to the end) in server-sized chunks."""
        with errgrpc.translate_to_native():
            async for resp in self._stub.read(
                api.ReadContentRequest(digest=dgst, offset=offset, size=size),
                metadata=self.metadata(),
                timeout=self._timeout,
            ):
                if resp.data:
                    yield resp.data

    async def status(self, ref: str) -> Status:
        with errgrpc.translate_to_native():
            resp = await self._stub.status(
                api.StatusRequest(ref=ref), metadata=self.metadata(), timeout=self._timeout
            )
        return status_from_proto(resp.status)

    async def list_statuses(self, *filters: str) -> list[Status]:
        with errgrpc.translate_to_native():
            resp = await self._stub.list_statuses(
                api.ListStatusesRequest(filters=list(filters)),
                metadata=self.metadata(),
                timeout=self._timeout,
            )
        return [status_from_proto(s) for s in resp.statuses]

    async def abort(self, ref: str) -> None:
        with errgrpc.translate_to_native():
            await self._stub.abort(api.AbortRequest(ref=ref), metadata=self.metadata(), timeout=self._timeout)

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> Writer:
        if not ref:
            raise errdefs.InvalidArgument("ref must not be empty")
        w = RemoteWriter(self._channel, ref, self.metadata())
        await w.open(total, expected)
        return w


class RemoteReaderAt:
    """ReaderAt over ``Read`` calls."""

    def __init__(self, store: RemoteContentStore, dgst: str, size: int) -> None:
        self._store = store
        self._dgst = dgst
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    async def read_at(self, offset: int, n: int) -> bytes:
        if offset >= self._size or n <= 0:
            return b""
        n = min(n, self._size - offset)
        parts = [c async for c in self._store.read(self._dgst, offset, n)]
        return b"".join(parts)

    async def close(self) -> None:
        return None


class RemoteWriter:
    """A ``Write`` stream driven in lock-step, as containerd's Go client does."""

    def __init__(self, channel: Channel, ref: str, metadata: Mapping[str, str]) -> None:
        self._channel = channel
        self._ref = ref
        self._metadata = dict(metadata)
        self._cm: Any = None
        self._stream: Any = None
        self._offset = 0
        self._digest = ""
        self._total = 0
        self._started: Any = None
        self._updated: Any = None
        self._closed = False

    async def open(self, total: int, expected: str) -> None:
        """Start the stream with ``STAT{ref, total, expected}``."""
        self._cm = self._channel.request(
            _WRITE_PATH,
            Cardinality.STREAM_STREAM,
            api.WriteContentRequest,
            api.WriteContentResponse,
            metadata=self._metadata,
        )
        with errgrpc.translate_to_native():
            self._stream = await self._cm.__aenter__()
        resp = await self._round(
            api.WriteContentRequest(
                action=api.WriteAction.STAT, ref=self._ref, total=total, expected=expected
            )
        )
        self._apply(resp)

    async def _recv(self) -> api.WriteContentResponse:
        resp = await self._stream.recv_message()
        if resp is None:
            # the server ended the stream: surface its status
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
        self._closed = True
        if self._cm is not None:
            cm, self._cm = self._cm, None
            with contextlib.suppress(Exception):
                await cm.__aexit__(None, None, None)

    def _trailer_error(self) -> GRPCError | None:
        # The server may send its status trailers and then reset the stream
        # (it does so while our side is still open); grpclib then reports the
        # reset, so recover the status from the trailers if they arrived.
        h2 = getattr(self._stream, "_stream", None)
        if h2 is None:
            return None
        if h2.trailers_received.is_set() and h2.trailers is not None:
            hdrs = dict(h2.trailers)
        elif h2.headers_received.is_set() and h2.headers is not None:
            hdrs = dict(h2.headers)  # a Trailers-Only reply
        else:
            return None
        if "grpc-status" not in hdrs:
            return None
        status, message, _ = self._stream._process_grpc_status(hdrs)
        if status is _GStatus.OK:
            return None
        return GRPCError(status, message)

    async def _round(self, req: api.WriteContentRequest) -> api.WriteContentResponse:
        if self._closed:
            raise errdefs.FailedPrecondition("writer is closed")
        try:
            with errgrpc.translate_to_native():
                try:
                    await self._stream.send_message(req)
                    return await self._recv()
                except StreamTerminatedError:
                    err = self._trailer_error()
                    if err is not None:
                        raise err from None
                    raise
        except BaseException:
            await self._abandon()
            raise

    def digest(self) -> str:
        return self._digest

    async def status(self) -> Status:
        resp = await self._round(api.WriteContentRequest(action=api.WriteAction.STAT))
        self._apply(resp)
        return Status(
            ref=self._ref,
            offset=resp.offset,
            total=resp.total or self._total,
            started_at=to_utc(self._started),
            updated_at=to_utc(self._updated),
        )

    async def write(self, data: bytes | memoryview) -> int:
        total = 0
        view = memoryview(data)
        while len(view) or total == 0:
            chunk = view[:_CHUNK]
            view = view[_CHUNK:]
            before = self._offset
            resp = await self._round(
                api.WriteContentRequest(action=api.WriteAction.WRITE, offset=before, data=bytes(chunk))
            )
            self._apply(resp)
            n = resp.offset - before
            if n != len(chunk):
                raise errdefs.DataLoss(f"short write: wrote {n} of {len(chunk)} bytes")
            total += n
            if not len(view):
                break
        return total

    async def truncate(self, size: int) -> None:
        if size != 0:
            raise errdefs.InvalidArgument("truncate: unsupported size")
        # A WRITE at offset 0 without data makes the server truncate now, so a
        # following STAT already reports offset 0 (containerd's Go client defers it).
        resp = await self._round(api.WriteContentRequest(action=api.WriteAction.WRITE, offset=0))
        self._apply(resp)

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> None:
        resp = await self._round(
            api.WriteContentRequest(
                action=api.WriteAction.COMMIT,
                total=size,
                offset=self._offset,
                expected=expected,
                labels=dict(labels or {}),
            )
        )
        self._apply(resp)
        await self.close()
        if size and resp.offset != size:
            raise errdefs.FailedPrecondition(f"unexpected size {resp.offset}, expected {size}")
        if expected and resp.digest != expected:
            raise errdefs.FailedPrecondition(f"unexpected digest {resp.digest}, expected {expected}")

    async def close(self) -> None:
        if self._closed or self._stream is None:
            await self._abandon()
            return
        self._closed = True
        try:
            with errgrpc.translate_to_native():
                await self._stream.end()
                while await self._stream.recv_message() is not None:
                    pass
        except errdefs.Error:
            pass
        finally:
            cm, self._cm = self._cm, None
            if cm is not None:
                with contextlib.suppress(Exception):
                    await cm.__aexit__(None, None, None)
