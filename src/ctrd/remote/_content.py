"""A content :class:`~ctrd.content.Store` over containerd's Content gRPC service.

Works against ctrd and against real containerd (the Go client's
``content/proxy`` equivalent). Built on a bare grpclib channel, the namespace
of each call is the one in the current context
(:func:`ctrd.namespaces.with_namespace`), else the store's default; the lease
likewise. Built by :class:`~ctrd.client.Client`, namespace and lease are the
client view's. Its writer, the ``Write`` stream, is :mod:`ctrd.remote._writer`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Final

from grpclib.client import Channel

from ctrd import errdefs
from ctrd.api.containerd.services.content import v1 as api
from ctrd.api.google import protobuf as pb
from ctrd.api.google.protobuf import FieldMask
from ctrd.content import Info, ReaderAt, Status, Writer
from ctrd.remote._scope import ChannelScope, Scope
from ctrd.remote._writer import RemoteWriter
from ctrd.wire.convert import info_from_proto, info_to_proto, status_from_proto

__all__ = ["RemoteContentStore", "RemoteReaderAt"]

_SERVICE: Final = "/containerd.services.content.v1.Content/"


class RemoteContentStore:
    """Implements :class:`ctrd.content.Store` over the Content service.

    :param channel: a grpclib channel (unix socket or TCP).
    :param namespace: the namespace when the context sets none.
    :param timeout: deadline of unary calls and idle limit (per message) of
        streams, in seconds; ``None``: no limit.
    :param metadata: extra request headers.
    :param pipeline: WRITEs each writer keeps in flight (see :class:`RemoteWriter`);
        1, the default, is lock step, where a writer's ``offset`` and ``digest()``
        are the server's after every ``write`` (what :class:`ctrd.content.Writer`
        promises, and what a metadata store on top relies on).

    Every error is a :mod:`ctrd.errdefs` error.
    """

    def __init__(
        self,
        channel: Channel | None = None,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        scope: Scope | None = None,
        pipeline: int = 1,
    ) -> None:
        if scope is None:
            if channel is None:
                raise TypeError("RemoteContentStore needs a channel or a scope")
            scope = ChannelScope(channel, namespace=namespace, timeout=timeout, metadata=metadata)
        if pipeline < 1:
            raise errdefs.InvalidArgument(f"pipeline must be at least 1, got {pipeline}")
        self._scope = scope
        self._pipeline = pipeline

    @property
    def _channel(self) -> Channel:
        return self._scope.channel()

    @property
    def timeout(self) -> float | None:
        """Deadline of unary calls and idle limit of streams, in seconds."""
        return self._scope.timeout

    def metadata(self) -> dict[str, str]:
        """Request headers for the current context."""
        return self._scope.metadata()

    async def info(self, dgst: str) -> Info:
        """:raises errdefs.NotFound: no such blob in the namespace."""
        resp = await self._scope.unary(_SERVICE + "Info", api.InfoRequest(digest=dgst), api.InfoResponse)
        return info_from_proto(resp.info)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Update labels (``labels`` or ``labels.<key>`` paths; none: replace all)."""
        req = api.UpdateRequest(
            info=info_to_proto(info),
            update_mask=FieldMask(paths=list(fieldpaths)) if fieldpaths else None,
        )
        resp = await self._scope.unary(_SERVICE + "Update", req, api.UpdateResponse)
        return info_from_proto(resp.info)

    async def walk(self, *filters: str) -> AsyncGenerator[Info, None]:
        """Blobs matching any filter, sorted by digest."""
        req = api.ListContentRequest(filters=list(filters))
        async with contextlib.aclosing(
            self._scope.server_stream(_SERVICE + "List", req, api.ListContentResponse)
        ) as stream:
            async for resp in stream:
                for i in resp.info:
                    yield info_from_proto(i)

    async def delete(self, dgst: str) -> None:
        """:raises errdefs.NotFound: no such blob in the namespace."""
        await self._scope.unary(_SERVICE + "Delete", api.DeleteContentRequest(digest=dgst), pb.Empty)

    async def reader_at(self, dgst: str) -> ReaderAt:
        """Random access through ``Read`` calls. :raises errdefs.NotFound:"""
        info = await self.info(dgst)
        return RemoteReaderAt(self, dgst, info.size)

    async def read(self, dgst: str, offset: int = 0, size: int = 0) -> AsyncGenerator[bytes, None]:
        """Stream ``[offset, offset+size)`` (``size <= 0``: to the end) in server-sized chunks."""
        req = api.ReadContentRequest(digest=dgst, offset=offset, size=size)
        async with contextlib.aclosing(
            self._scope.server_stream(_SERVICE + "Read", req, api.ReadContentResponse)
        ) as stream:
            async for resp in stream:
                if resp.data:
                    yield resp.data

    async def status(self, ref: str) -> Status:
        """:raises errdefs.NotFound: no such ingest."""
        resp = await self._scope.unary(_SERVICE + "Status", api.StatusRequest(ref=ref), api.StatusResponse)
        return status_from_proto(resp.status)

    async def list_statuses(self, *filters: str) -> list[Status]:
        """Ingests matching any filter (field ``ref``)."""
        resp = await self._scope.unary(
            _SERVICE + "ListStatuses",
            api.ListStatusesRequest(filters=list(filters)),
            api.ListStatusesResponse,
        )
        return [status_from_proto(s) for s in resp.statuses]

    async def abort(self, ref: str) -> None:
        """:raises errdefs.NotFound: no such ingest."""
        await self._scope.unary(_SERVICE + "Abort", api.AbortRequest(ref=ref), pb.Empty)

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> Writer:
        """Open (or resume) the ingest *ref*; see :class:`RemoteWriter`."""
        return await self.open_writer(ref, total, expected)

    async def open_writer(
        self, ref: str, total: int = 0, expected: str = "", *, pipeline: int | None = None
    ) -> RemoteWriter:
        """:meth:`writer` with the concrete type; *pipeline* overrides the store's.

        :raises errdefs.InvalidArgument: empty ref.
        :raises errdefs.Unavailable: the ref is locked by another writer.
        :raises errdefs.AlreadyExists: *expected* is committed already.
        """
        if not ref:
            raise errdefs.InvalidArgument("ref must not be empty")
        w = RemoteWriter(
            self._scope.channel(),
            ref,
            self.metadata(),
            timeout=self.timeout,
            scope=self._scope,
            pipeline=self._pipeline if pipeline is None else pipeline,
        )
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
        """Size of the blob in bytes."""
        return self._size

    async def read_at(self, offset: int, n: int) -> bytes:
        """Up to *n* bytes at *offset* (one ``Read`` call)."""
        if offset >= self._size or n <= 0:
            return b""
        n = min(n, self._size - offset)
        parts = [c async for c in self._store.read(self._dgst, offset, n)]
        return b"".join(parts)

    async def close(self) -> None:
        """Nothing to release."""
        return None
