"""``containerd.services.content.v1.Content`` over the namespaced content store.

A port of containerd 1.6's ``services/content/contentserver``: validate the
request, convert proto <-> domain, delegate to the :class:`~ctrd.content.Store`
(which reads the caller's namespace from the context variable itself), and
raise :mod:`ctrd.errdefs` errors, which the gRPC interceptor translates.

Behaviour kept from containerd 1.6 because clients see it on the wire:

* ``List`` sends at most 100 ``Info`` per message and nothing for zero blobs;
* ``Read`` response offsets are relative to the requested offset (the first
  chunk always says 0);
* ``Write`` echoes the request action, reuses one response message across the
  stream (``started_at``/``updated_at``/``total`` from a STAT stay), checks the
  expected digest on every message that carries one, ends right after COMMIT,
  and sends the last response once more when it finishes without error (so a
  client sees the COMMIT reply twice).

A ``Write`` that finds its ref held by another ``Write`` call whose client has
ended its side of that call (a half-close, as containerd's own Go client does
before reopening the ref at once, or a cancel) waits up to
:data:`~ctrd.services._write.RELEASE_WAIT` for that call to release it; a ref held by a live writer
fails at once with ``Unavailable`` (containerd's local store instead retries
any holder for up to about a second).

Deliberate deviations: ``List`` fills ``updated_at`` (1.6 sent the zero time),
and an empty Write stream is answered with InvalidArgument (1.6: Unknown ``EOF``).

The streaming handlers run under :func:`contextlib.aclosing` (see
:meth:`ContentService.__mapping__`), so a client that cancels a ``Read`` or
``Write`` stream closes the reader or writer in the handler's own task.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from ctrd import errdefs, golang, limits, namespaces
from ctrd._aio import shield_eager
from ctrd.api.containerd.events import ContentDelete
from ctrd.api.containerd.services.content import v1 as api
from ctrd.api.google import protobuf as pb
from ctrd.content import digest as _digest
from ctrd.content._store import CommitChecker, InfoRecord, RecordWalker, Store
from ctrd.events import Publisher
from ctrd.services._write import RefHolders, WriteCall, close_quietly, validate_labels
from ctrd.wire import Call, codecs
from ctrd.wire.convert import info_from_proto, info_to_proto, status_to_proto
from ctrd.wire.server import Method, rebind

__all__ = ["LIST_BATCH", "READ_CHUNK", "TOPIC_CREATE", "TOPIC_DELETE", "ContentService"]

log = logging.getLogger("ctrd.services.content")

LIST_BATCH: Final = 100
"""Maximum number of ``Info`` per ``ListContentResponse`` (containerd's ``100``)."""

READ_CHUNK: Final = 1 << 20
"""Maximum data per ``ReadContentResponse`` (containerd's 1 MiB copy buffer)."""

TOPIC_DELETE: Final = "/content/delete"
"""Event topic published after a successful Delete."""

TOPIC_CREATE: Final = "/content/create"
"""Event topic of ``ContentCreate`` after a commit (published through the store's ``on_commit`` hook)."""

_SERVICE: Final = "/containerd.services.content.v1.Content/"

_STAT: Final = api.WriteAction.STAT
_WRITE: Final = api.WriteAction.WRITE
_COMMIT: Final = api.WriteAction.COMMIT


def _validate_quoted(dgst: str) -> None:
    """Info/Update digest check: ``"<d>" failed validation: <go-digest reason>``."""
    try:
        _digest.validate(dgst)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"{golang.quote(dgst)} failed validation: {exc.context}") from exc


def _update_paths(info: api.Info, paths: list[str]) -> Mapping[str, str]:
    """Check the update mask; return the labels the update applies (for validation)."""
    if not paths:
        return info.labels
    applied: dict[str, str] = {}
    replace_all = False
    for path in paths:
        if path == "labels":
            replace_all = True
        elif path.startswith("labels.") and len(path) > len("labels."):
            key = path[len("labels.") :]
            applied[key] = info.labels.get(key, "")
        else:
            raise errdefs.InvalidArgument(
                f"cannot update {golang.quote(path)} field on content info {golang.quote(info.digest)}"
            )
    if replace_all:
        applied.update(info.labels)
    return applied


async def _records(store: Store, filter_strings: Sequence[str]) -> AsyncGenerator[list[InfoRecord], None]:
    """Batches of :class:`InfoRecord` from *store*: its own bulk walk when it has one."""
    if isinstance(store, RecordWalker):
        async with contextlib.aclosing(store.walk_records(*filter_strings)) as batches:  # type: ignore[type-var]
            async for batch in batches:
                yield batch
        return
    pending: list[InfoRecord] = []
    async with contextlib.aclosing(store.walk(*filter_strings)) as infos:  # type: ignore[type-var]
        async for info in infos:
            pending.append(
                InfoRecord(
                    info.digest,
                    info.size,
                    codecs.micros(info.created_at),
                    codecs.micros(info.updated_at),
                    dict(info.labels),
                )
            )
            if len(pending) >= LIST_BATCH:
                yield pending
                pending = []
    if pending:
        yield pending


async def _serve_stream(
    handler: Callable[[Any], AsyncGenerator[Any, None]],
    bidi: bool,
    stream: Any,
    encode: Callable[[Any], Any] | None = None,
) -> None:
    """Drive a streaming handler, closing its generator in this task whatever happens.

    With *encode*, each response is passed through it before sending (a hand-written codec).
    """
    if bidi:
        request: Any = stream
    else:
        request = await stream.recv_message()
        if request is None:
            raise errdefs.InvalidArgument("missing request message")
    send = stream.send_message
    async with contextlib.aclosing(handler(request)) as responses:
        async for response in responses:
            if type(response) is _Last:
                # the call's last replies: with the OK trailers in one write when it can
                reply = response.message
                await stream.send_last(reply if encode is None else encode(reply), response.repeat)
                continue
            await send(response if encode is None else encode(response))


class _Last:
    """Yielded by a streaming handler: *message*, *repeat* times, ends the call (status OK).

    The handler must yield nothing after it, and nothing it still does may fail the call.
    """

    __slots__ = ("message", "repeat")

    def __init__(self, message: Any, repeat: int = 1) -> None:
        self.message = message
        self.repeat = repeat


class ContentService(api.ContentBase):
    """The Content gRPC service over a namespaced content :class:`~ctrd.content.Store`.

    :param store: the namespaced (metadata) content store; it reads the caller's
        namespace and lease from :mod:`ctrd.namespaces` itself.
    :param publisher: where ``/content/delete`` events go; ``None`` publishes nothing.
    """

    def __init__(
        self, store: Store, publisher: Publisher | None = None, *, early_write_ack: bool = False
    ) -> None:
        self._store = store
        self._checker = store if isinstance(store, CommitChecker) else None
        self._publisher = publisher
        self.early_write_ack = early_write_ack
        """Reply to a ``WRITE`` before its chunk is on disk (see :meth:`write`)."""
        #: the Write calls holding a ref (see :meth:`RefHolders.open`)
        self._holders = RefHolders(store)

    def __mapping__(self) -> dict[str, Method]:
        """The generated mapping, with List/Read/Write driven by :func:`_serve_stream`.

        The hot paths take hand-decoded requests (zero-copy WRITE data), and List,
        Read and Write replies are encoded by hand (:mod:`ctrd.wire.codecs`).
        """
        mapping: dict[str, Method] = dict(super().__mapping__())
        mapping[_SERVICE + "List"] = rebind(
            mapping[_SERVICE + "List"], self._list_direct, reply_type=codecs.RawReply
        )
        mapping[_SERVICE + "Write"] = rebind(
            mapping[_SERVICE + "Write"],
            functools.partial(_serve_stream, self._write, True, encode=codecs.encode_write_response),
            request_type=codecs.RawWriteRequest,
            reply_type=codecs.RawReply,
        )
        mapping[_SERVICE + "Read"] = rebind(
            mapping[_SERVICE + "Read"],
            self._read_direct,
            request_type=codecs.RawReadRequest,
            reply_type=codecs.RawReply,
        )
        return mapping

    async def _read_direct(self, stream: Call) -> None:
        """``Read`` without the generated layers: one hand-encoded reply per chunk.

        Each chunk is as large as the call's reply room allows (the server's
        ``reply_room``: the client's flow-control window, the connection's reply
        budget), at most :data:`READ_CHUNK`; the last leaves with the trailers in
        one write (``ctr``'s reads are one chunk).
        """
        message = await stream.recv_message()
        if message is None:
            raise errdefs.InvalidArgument("missing request message")
        send = stream.send_message
        room = stream.reply_room
        async with contextlib.aclosing(
            self._read_chunks(message.digest, message.offset, message.size, room)
        ) as chunks:
            async for rel, data, last in chunks:
                reply = codecs.encode_read_response(rel, data)
                if last:
                    await stream.send_last(reply)
                else:
                    await send(reply)

    async def _read_chunks(
        self,
        dgst: str,
        offset: int,
        size: int,
        room: Callable[[int], Awaitable[int]] | None = None,
    ) -> AsyncGenerator[tuple[int, bytes, bool], None]:
        """``(offset relative to the request, data, whether it is the last)`` chunks.

        A negative offset reads from 0; ``size <= 0`` (or past the end) reads to the
        end. A chunk holds at most :data:`READ_CHUNK` bytes, and with *room* (a
        call's ``reply_room``) at most what it allows, asked before the chunk is
        read: a client that does not read makes this wait instead of the daemon
        holding its chunks.
        """
        try:
            _digest.validate(dgst)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"{limits.echo(dgst)}: {exc.context}") from exc
        reader = await self._store.reader_at(dgst)
        try:
            blob_size = reader.size
            offset = max(offset, 0)
            if offset > blob_size:
                raise errdefs.OutOfRange(f"read past object length {blob_size} bytes")
            if size <= 0 or offset + size > blob_size:
                size = blob_size - offset
            end = offset + size
            pos = offset
            while pos < end:
                n = min(READ_CHUNK, end - pos)
                if room is not None:
                    n = await room(n)
                data = await reader.read_at(pos, n)
                if not data:
                    break  # the blob shrank under us: end the stream like io.Copy on EOF
                pos += len(data)
                yield pos - len(data) - offset, data, pos >= end
        finally:
            await shield_eager(close_quietly(reader, f"reader for {dgst}"))

    # -- blobs ---------------------------------------------------------------------------

    async def info(self, message: api.InfoRequest) -> api.InfoResponse:
        """Info of one blob in the caller's namespace."""
        _validate_quoted(message.digest)
        info = await self._store.info(message.digest)
        return api.InfoResponse(info=info_to_proto(info))

    async def update(self, message: api.UpdateRequest) -> api.UpdateResponse:
        """Replace or patch a blob's labels (mask ``labels``/``labels.<key>``; empty = all)."""
        req_info = message.info if message.info is not None else api.Info()
        _validate_quoted(req_info.digest)
        paths = list(message.update_mask.paths) if message.update_mask is not None else []
        validate_labels("info.Labels", _update_paths(req_info, paths))
        info = await self._store.update(info_from_proto(req_info), paths)
        return api.UpdateResponse(info=info_to_proto(info))

    async def list(self, message: api.ListContentRequest) -> AsyncGenerator[api.ListContentResponse, None]:
        """Stream the matching blobs, sorted by digest, :data:`LIST_BATCH` per message."""
        async with contextlib.aclosing(self._list_replies(message.filters)) as replies:
            async for reply in replies:
                yield api.ListContentResponse.parse(reply.payload)

    async def _list_direct(self, stream: Call) -> None:
        """``List`` without the generated layers: replies encoded by hand from stored records."""
        message = await stream.recv_message()
        if message is None:
            raise errdefs.InvalidArgument("missing request message")
        send = stream.send_message
        async with contextlib.aclosing(self._list_replies(message.filters)) as replies:
            async for reply in replies:
                await send(reply)

    async def _list_replies(self, filter_strings: Sequence[str]) -> AsyncGenerator[codecs.RawReply, None]:
        """Encoded ``ListContentResponse`` messages of at most :data:`LIST_BATCH` ``Info`` each."""
        encode = codecs.encode_list_records
        pending: list[InfoRecord] = []
        async with contextlib.aclosing(_records(self._store, filter_strings)) as records:
            async for recs in records:
                if pending:
                    recs = pending + recs
                full = len(recs) - len(recs) % LIST_BATCH
                for i in range(0, full, LIST_BATCH):
                    yield encode(recs[i : i + LIST_BATCH])
                pending = recs[full:]
        if pending:
            yield encode(pending)

    async def delete(self, message: api.DeleteContentRequest) -> pb.Empty:
        """Remove a blob from the caller's namespace and publish ``/content/delete``."""
        _digest.validate(message.digest)
        await self._store.delete(message.digest)
        if self._publisher is not None:
            await self._publisher.publish(
                namespaces.required(), TOPIC_DELETE, ContentDelete(digest=message.digest)
            )
        return pb.Empty()

    async def read(self, message: api.ReadContentRequest) -> AsyncGenerator[api.ReadContentResponse, None]:
        """Stream a byte range (the generated-API form of :meth:`_read_direct`)."""
        async with contextlib.aclosing(
            self._read_chunks(message.digest, message.offset, message.size)
        ) as chunks:
            async for rel, data, _last in chunks:
                yield api.ReadContentResponse(offset=rel, data=data)

    # -- ingests -------------------------------------------------------------------------

    async def status(self, message: api.StatusRequest) -> api.StatusResponse:
        """Status of one ingest (never reveals backend paths in errors)."""
        ref = message.ref
        prefix = f"could not get status for ref {golang.quote(ref)}"
        try:
            st = await self._store.status(ref)
        except errdefs.NotFound as exc:
            # The inner message may come from a backend that names files; use the
            # metadata store's wording instead of passing it on.
            raise errdefs.NotFound(f"{prefix}: reference {limits.echo(ref)}: not found") from exc
        except errdefs.Error as exc:
            raise type(exc)(f"{prefix}: {exc}") from exc
        except OSError as exc:
            raise errdefs.Unknown(f"{prefix}: {exc.strerror or type(exc).__name__}") from exc
        return api.StatusResponse(status=status_to_proto(st))

    async def list_statuses(self, message: api.ListStatusesRequest) -> api.ListStatusesResponse:
        """Statuses of the caller's ingests matching any filter (field ``ref``)."""
        statuses = await self._store.list_statuses(*message.filters)
        return api.ListStatusesResponse(statuses=[status_to_proto(st) for st in statuses])

    async def abort(self, message: api.AbortRequest) -> pb.Empty:
        """Drop an ingest and its data."""
        await self._store.abort(message.ref)
        return pb.Empty()

    async def write(
        self, messages: AsyncIterator[api.WriteContentRequest]
    ) -> AsyncGenerator[api.WriteContentResponse, None]:
        """The generated interface's ``Write``: :meth:`_write`'s replies, one message at a time."""
        async with contextlib.aclosing(self._write(messages)) as replies:
            async for reply in replies:
                if isinstance(reply, _Last):
                    for _ in range(reply.repeat):
                        yield reply.message
                else:
                    yield reply

    async def _write(
        self, messages: AsyncIterator[api.WriteContentRequest]
    ) -> AsyncGenerator[api.WriteContentResponse | _Last, None]:
        """The bidi ingest stream: containerd 1.6's algorithm, step for step (:class:`WriteCall`).

        With :attr:`early_write_ack`, a ``WRITE`` carrying data is answered as
        soon as the chunk is handed to the writer (offset advanced, no digest:
        it is not known yet); the chunk is written and hashed while the client
        sends the next one. Every following message first waits for it, so a
        failed write fails the next reply (and so the commit), and ``STAT`` and
        ``COMMIT`` replies carry the digest as usual. At most one chunk is in
        flight. A stream that ends after an acknowledged but failed write
        leaves the ingest at the offset really written (a resume sees it).
        """
        req = await anext(messages, None)
        if req is None or not req.ref:
            raise errdefs.InvalidArgument("first message must have a reference")
        key = (namespaces.current(), req.ref)
        writer = await self._holders.open(key, req.total, req.expected)
        # the ref is this call's now: registered (until let go) when its stream can tell
        # whether the client has ended its side, so a reopening call may wait for it
        holder = self._holders.hold(key, getattr(messages, "request_ended", None))
        call = WriteCall(self, writer, key, req.total, req.expected, self._holders, holder)
        msg = call.msg
        finished = False
        try:
            while True:
                ws = await call.begin(req)
                action = req.action
                if action == _STAT:
                    call.stat(ws)
                elif action in (_WRITE, _COMMIT):
                    if await call.write(req, ws, self.early_write_ack):
                        yield msg  # acknowledged early: the chunk is being written
                        next_req = await anext(messages, None)
                        if next_req is None:
                            break
                        req = next_req
                        continue
                    if action == _COMMIT:
                        await call.commit(req)
                    assert call.wr is not None
                    msg.digest = call.wr.digest()
                if action == _COMMIT:
                    # the commit's reply, containerd's deferred "pump" of the last response
                    # once more, and the OK trailers: nothing left can fail the call (nothing
                    # is pending, and closing the committed writer is quiet)
                    finished = True
                    yield _Last(msg, 2)
                    break
                yield msg
                req = await anext(messages, None)
                if req is None:
                    break
            await call.settle()  # the client may half-close right after an acknowledged chunk
        finally:
            await call.close()
        if not finished:
            # containerd's deferred "pump": the last response once more on success.
            yield msg

    async def _committed(self, dgst: str) -> bool:
        """Whether *dgst* is committed in the caller's namespace (any error: no)."""
        checker = self._checker
        if checker is not None:
            try:
                return await checker.committed(dgst)
            except errdefs.Error:
                return False
        try:
            await self._store.info(dgst)
        except errdefs.Error:
            return False
        return True
