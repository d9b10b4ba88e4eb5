"""The ``Write`` stream of the Content service: one call's state, and the calls holding refs.

:class:`WriteCall` is one stream's state as containerd 1.6's content server
keeps it: the store's writer, the one reply message reused across the stream,
the total and expected digest, and (with ``early_write_ack``) the chunk being
written while the client sends the next. :class:`RefHolders` knows which call
holds each ref, so a call reopening a ref that a finishing call still holds
waits for it (:meth:`RefHolders.open`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from ctrd import errdefs, labels
from ctrd.api.containerd.services.content import v1 as api
from ctrd.content._store import ReaderAt, Store, Writer
from ctrd.wire.convert import to_utc

__all__ = ["RELEASE_WAIT", "RefHolders", "WriteCall", "close_quietly", "validate_labels"]

log = logging.getLogger("ctrd.services.content")

RELEASE_WAIT: Final = 5.0
"""Longest wait, in seconds, for a ref held by a ``Write`` call whose client has ended its side."""

_STAT: Final = api.WriteAction.STAT
_WRITE: Final = api.WriteAction.WRITE
_COMMIT: Final = api.WriteAction.COMMIT

_Key = tuple[str | None, str]


async def close_quietly(obj: ReaderAt | Writer, what: str) -> None:
    """Close *obj*; a failure is logged, never raised (containerd ignores Close errors)."""
    try:
        await obj.close()
    except Exception:
        log.warning("failed to close %s", what, exc_info=True)


def validate_labels(prefix: str, items: Mapping[str, str]) -> None:
    """Validate label sizes; the error context is prefixed like containerd's."""
    try:
        labels.validate_all(items)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"{prefix}: {exc.context}") from exc


class _Holder:
    """A ``Write`` call holding its ref: whether its client is done sending, and its waiters.

    *ended* is the call's ``request_ended`` (:meth:`ctrd.wire.Call.request_ended`);
    *released* is created by the first call waiting for the ref and resolved once
    the holder let it go; *gone* is set then.
    """

    __slots__ = ("ended", "gone", "released")

    def __init__(self, ended: Callable[[], bool]) -> None:
        self.ended = ended
        self.gone = False
        self.released: asyncio.Future[None] | None = None


class RefHolders:
    """The ``Write`` calls holding a ref, by (namespace, ref), when their call can tell whether
    the client has ended its side."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._holders: dict[_Key, _Holder] = {}

    async def open(self, key: _Key, total: int, expected: str) -> Writer:
        """The store's writer for *key*'s ref, waiting for a finishing holder to let it go.

        The holder is the call registered for *key* now or, failing that, the one
        registered when the first attempt started (the store may await after finding
        the ref locked, and the holder may be gone since). Only a holder whose client
        has ended its side of the call (it half-closed, or the call was cancelled) is
        waited for, and for at most :data:`RELEASE_WAIT` seconds in all; otherwise
        the store's error (``ref ... locked``) is raised at once.
        """
        prior = self._holders.get(key)
        try:
            return await self._store.writer(key[1], total=total, expected=expected)
        except errdefs.Unavailable as exc:
            error = exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELEASE_WAIT
        while True:
            holder = self._holders.get(key, prior)
            if holder is None or loop.time() >= deadline:
                raise error
            if not holder.gone:
                if not holder.ended():
                    raise error
                released = holder.released
                if released is None:
                    released = holder.released = loop.create_future()
                await asyncio.wait((released,), timeout=deadline - loop.time())
                if not released.done():
                    raise error
            prior = self._holders.get(key)
            try:
                return await self._store.writer(key[1], total=total, expected=expected)
            except errdefs.Unavailable as exc:
                error = exc

    def hold(self, key: _Key, ended: Callable[[], bool] | None) -> _Holder | None:
        """Register the call now holding *key* (``None`` when it cannot tell *ended*)."""
        if ended is None:
            return None
        holder = self._holders[key] = _Holder(ended)
        return holder

    def let_go(self, key: _Key, holder: _Holder) -> None:
        """*holder* no longer holds *key*: wake the calls waiting for it."""
        holder.gone = True
        if self._holders.get(key) is holder:
            del self._holders[key]
        released = holder.released
        if released is not None and not released.done():
            released.set_result(None)


class WriteCall:
    """One ``Write`` stream's state between its messages (containerd 1.6's algorithm).

    Each request goes through :meth:`begin` (the chunk in flight settled, the
    action echoed, the offset and expected digest checked), then :meth:`stat`,
    :meth:`write` or :meth:`commit`; :attr:`msg` is the one reply reused across the
    stream. :meth:`close` settles and closes the writer and lets the ref go.
    """

    def __init__(
        self,
        service: Any,
        writer: Writer,
        key: _Key,
        total: int,
        expected: str,
        holders: RefHolders,
        holder: _Holder | None,
    ) -> None:
        self._service = service
        self.wr: Writer | None = writer
        self.key = key
        self.ref = key[1]
        self.total = total
        self.expected = expected
        self.msg = api.WriteContentResponse()
        self._holders = holders
        self._holder = holder
        self._pending: asyncio.Future[int] | None = None
        self._pending_len = 0

    async def settle(self) -> None:
        """Wait for the acknowledged chunk; its failure is this stream's."""
        pending = self._pending
        if pending is not None:
            self._pending = None
            n = await pending
            if n != self._pending_len:
                raise errdefs.DataLoss(f"wrote {n} of {self._pending_len} bytes")

    async def begin(self, req: Any) -> Any:
        """Start handling *req*: returns the writer's status.

        :raises errdefs.AlreadyExists: *req* names an expected digest the namespace has
            committed (the ingest is aborted first).
        """
        wr = self.wr
        assert wr is not None
        await self.settle()
        self.msg.action = req.action
        ws = await wr.status()
        self.msg.offset = ws.offset
        if req.expected:
            self.expected = req.expected
            if await self._service._committed(self.expected):
                self.wr = None
                await close_quietly(wr, f"writer for {self.ref}")
                try:
                    await self._service._store.abort(self.ref)
                except errdefs.Error:
                    log.warning("failed to abort write %s", self.ref, exc_info=True)
                raise errdefs.AlreadyExists(f"blob with expected digest {self.expected} exists")
        if req.total > 0:
            self.total = req.total
        return ws

    def stat(self, ws: Any) -> None:
        """A STAT's reply: the digest so far, the times, the total."""
        assert self.wr is not None
        msg = self.msg
        msg.digest = self.wr.digest()
        msg.started_at = to_utc(ws.started_at)
        msg.updated_at = to_utc(ws.updated_at)
        msg.total = self.total

    async def write(self, req: Any, ws: Any, early: bool) -> bool:
        """A WRITE's or COMMIT's data at the request's offset; whether it was acknowledged early.

        With *early* (a WRITE carrying data), the chunk is handed to the writer and
        the reply (offset advanced, no digest) may go before it is written; the next
        request settles it. Otherwise it is written now, and nothing keeps the
        message's bytes once done (the server's receive budget counts them as
        given back when the next message is asked for).
        """
        wr = self.wr
        assert wr is not None
        msg = self.msg
        offset = req.offset
        if offset > 0 and offset != ws.offset:
            raise errdefs.OutOfRange(f"write @{offset} must occur at current offset {ws.offset}")
        if offset == 0 and ws.offset > 0:
            await _truncate(wr)
            msg.offset = 0
        data = req.data
        if data and early and req.action == _WRITE:
            self._pending = asyncio.ensure_future(wr.write(data))
            self._pending_len = len(data)
            msg.offset += self._pending_len
            msg.digest = ""
            return True
        if data:
            n = await wr.write(data)
            if n != len(data):
                raise errdefs.DataLoss(f"wrote {n} of {len(data)} bytes")
            msg.offset += n
            req.data = b""
        return False

    async def commit(self, req: Any) -> None:
        """Commit with the request's labels."""
        assert self.wr is not None
        commit_labels: Mapping[str, str] | None = req.labels or None
        if commit_labels is not None:
            validate_labels("info.Labels", commit_labels)
        await self.wr.commit(self.total, self.expected, commit_labels)

    async def close(self) -> None:
        """Settle the chunk in flight (a failure only logged), close the writer, let the ref go."""
        pending = self._pending
        if pending is not None:
            await asyncio.shield(_settle(pending, self.ref))
        if self.wr is not None or self._holder is not None:
            await asyncio.shield(self._let_go())

    async def _let_go(self) -> None:
        try:
            if self.wr is not None:
                await close_quietly(self.wr, f"writer for {self.ref}")
        finally:
            if self._holder is not None:
                self._holders.let_go(self.key, self._holder)


async def _settle(pending: asyncio.Future[int], ref: str) -> None:
    """Wait for an acknowledged chunk after a failed or cancelled stream; a failure is only logged."""
    try:
        await pending
    except Exception:
        log.warning("acknowledged write to %s failed after the stream ended", ref, exc_info=True)


async def _truncate(wr: Writer) -> None:
    """Truncate to 0; failures surface as Unknown ``truncate failed: ...`` like containerd."""
    try:
        await wr.truncate(0)
    except errdefs.Error as exc:
        raise errdefs.Unknown(f"truncate failed: {exc}") from exc
    except OSError as exc:
        raise errdefs.Unknown(f"truncate failed: {exc.strerror or type(exc).__name__}") from exc
