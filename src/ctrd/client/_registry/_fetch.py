"""The blob side of a pull: ingests opened by digest, downloads resumed with ``Range``.

:class:`Fetcher` holds what a pull needs (the client, the registry session, the reference,
its hosts) and fetches blobs: each through an ingest opened with its digest and size (a
blob the namespace has is labelled, not fetched; one another namespace has is admitted
without a byte under the ``shared`` policy), written from the ingest's offset, committed
with its ``distribution.source`` label (the commit verifies size and digest), and aborted
when its bytes are wrong. :class:`~ctrd.client._registry._pull.Puller` adds manifests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Final

import aiohttp

from ctrd import errdefs
from ctrd import labels as labels_mod
from ctrd.client._registry._hosts import Capability, RegistryHost, RegistryOptions
from ctrd.client._registry._http import RegistrySession, backoff, retryable, transport_error
from ctrd.client._registry._manifests import (
    DISTRIBUTION_SOURCE,
    is_index,
    is_manifest,
    merge_sources,
    ref_key,
)
from ctrd.client._registry._platforms import Matcher
from ctrd.client._registry._reference import Reference
from ctrd.client._types import BlobProgress, BlobStatus, ProgressCallback
from ctrd.images import Descriptor
from ctrd.remote import PIPELINE, RemoteWriter

if TYPE_CHECKING:
    from ctrd.client._client import Client

__all__ = ["Fetcher", "first_error", "read_bounded", "verify_digest"]

log = logging.getLogger("ctrd.client.registry")

_CHUNK: Final = 1 << 20
_LOCK_TIMEOUT: Final = 300.0


def verify_digest(data: bytes, desc: Descriptor, what: str) -> None:
    """Check that *data* is *desc*'s bytes (size and digest).

    :raises errdefs.DataLoss: it is not.
    """
    if len(data) != desc.size:
        raise errdefs.DataLoss(
            f"{what}: the registry sent {len(data)} bytes, the descriptor says {desc.size}"
        )
    algorithm, _, encoded = desc.digest.partition(":")
    if algorithm not in ("sha256", "sha384", "sha512"):
        raise errdefs.InvalidArgument(f"{what}: unsupported digest algorithm {algorithm!r}")
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != encoded:
        raise errdefs.DataLoss(f"{what}: digest mismatch: the registry sent {algorithm}:{actual}")


def first_error(exc: BaseException) -> BaseException:
    """The first leaf of an exception group that is an :class:`errdefs.Error` (else the first)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [first_error(e) for e in exc.exceptions]
        return next((e for e in leaves if isinstance(e, errdefs.Error)), leaves[0])
    return exc


async def read_bounded(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise errdefs.ResourceExhausted(
            f"{what}: rejecting a {resp.content_length} byte manifest (the limit is {limit} bytes)"
        )
    buf = bytearray()
    async for chunk in resp.content.iter_any():
        buf += chunk
        if len(buf) > limit:
            raise errdefs.ResourceExhausted(f"{what}: rejecting a manifest over {limit} bytes")
    return bytes(buf)


class _Broken(Exception):
    """A download stopped half-way by the transport (a retry resumes it)."""

    def __init__(self, cause: BaseException, received: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.received = received


class Fetcher:
    """A pull's context, and its blob steps."""

    def __init__(
        self,
        client: Client,
        session: RegistrySession,
        ref: Reference,
        hosts: list[RegistryHost],
        matcher: Matcher,
        limit: int,
        options: RegistryOptions,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.client = client
        self.progress = progress
        self.content = client.content
        self.session = session
        self.ref = ref
        self.hosts = hosts
        self.matcher = matcher
        self.limit = limit
        self.options = options
        self.scopes = [f"repository:{ref.path}:pull"]
        self.source_key = DISTRIBUTION_SOURCE + ref.hostname
        self._slots = asyncio.Semaphore(options.max_concurrent_downloads)
        self._bodies: dict[str, bytes] = {}
        self._done: dict[str, asyncio.Future[object]] = {}

    def report(self, desc: Descriptor, status: BlobStatus, offset: int = 0, resumed_at: int = 0) -> None:
        """Tell the progress callback, if any, where *desc* stands."""
        if self.progress is not None:
            if status in ("exists", "shared", "done"):
                offset = desc.size
            self.progress(BlobProgress(ref_key(desc), desc, status, offset, resumed_at))

    def _hosts(self, cap: Capability) -> list[RegistryHost]:
        hosts = [h for h in self.hosts if h.capabilities & cap]
        if not hosts:
            raise errdefs.NotFound(
                f"{self.ref}: no registry host with the {str(cap.name).lower()} capability"
            )
        return hosts

    async def _open(self, desc: Descriptor) -> RemoteWriter:
        return await self.content._open(
            ref_key(desc), desc.size, desc.digest, _LOCK_TIMEOUT, pipeline=PIPELINE
        )

    @staticmethod
    def _complete(w: RemoteWriter, desc: Descriptor) -> bool:
        """Whether the ingest holds the whole blob already (admitted from another namespace
        under the ``shared`` policy, or a finished earlier download)."""
        return desc.size > 0 and w.offset == desc.size and w.digest() == desc.digest

    async def _label_existing(self, digest: str, extra: Mapping[str, str]) -> None:
        """Add *extra* and this repository's ``distribution.source`` to a blob the namespace has."""
        info = await self.content.info(digest)
        want = dict(extra)
        value = merge_sources(info.labels.get(self.source_key, ""), self.ref.path)
        try:
            labels_mod.validate(self.source_key, value)
            want[self.source_key] = value
        except errdefs.InvalidArgument:
            log.warning("%s: not recording %s=%s: the label is too long", digest, self.source_key, value)
        changed = {k: v for k, v in want.items() if info.labels.get(k) != v}
        if changed:
            await self.content.update(digest, changed)

    async def _discard(self, w: RemoteWriter) -> None:
        """Close *w* and drop its ingest (what it holds is wrong, or nothing)."""
        await w.close()  # releases the ref, so that it can be aborted
        with contextlib.suppress(errdefs.NotFound):
            await self.content.abort(w.ref)

    async def fetch_blob(self, desc: Descriptor) -> None:
        """Store the blob *desc* (a config, a layer, anything but a manifest), verified by the
        commit, with its ``distribution.source`` label."""
        what = f"{desc.media_type} {desc.digest}"
        self.report(desc, "waiting")
        async with self._slots:
            for fresh in (False, True):
                try:
                    w = await self._open(desc)
                except errdefs.AlreadyExists:
                    await self._label_existing(desc.digest, {})
                    self.report(desc, "exists")
                    return
                resumed = False
                try:
                    shared = self._complete(w, desc)
                    if not shared:
                        if w.offset > desc.size or (fresh and w.offset):
                            await w.truncate(0)
                        resumed = w.offset > 0
                        self.report(desc, "downloading", w.offset, w.offset)
                        await self._download(desc, w, what)
                    try:
                        await w.commit(desc.size, desc.digest, {self.source_key: self.ref.path})
                    except errdefs.AlreadyExists:
                        await self._label_existing(desc.digest, {})
                    except errdefs.FailedPrecondition as exc:
                        actual = w.digest()
                        with contextlib.suppress(errdefs.NotFound):
                            await self.content.abort(w.ref)
                        if resumed and not fresh:
                            log.info(
                                "%s: the resumed ingest did not verify (%s); downloading it again", what, exc
                            )
                            continue
                        raise errdefs.DataLoss(
                            f"{what}: the registry's bytes do not match the descriptor ({exc}; got {actual})"
                        ) from None
                    self.report(desc, "shared" if shared else "done")
                    return
                except errdefs.Error as exc:
                    if isinstance(exc, errdefs.DataLoss) or w.offset == 0:
                        await self._discard(w)  # wrong bytes, or none: nothing to resume
                    raise
                finally:
                    await w.close()

    async def _download(self, desc: Descriptor, w: RemoteWriter, what: str) -> None:
        """Write the blob's bytes from the ingest's offset on, resuming with ``Range`` after a
        transport failure."""
        attempt = 0
        while True:
            try:
                await self._stream(desc, w, what)
                return
            except _Broken as broken:
                attempt += 1
                await w.flush()
                if attempt > self.options.retries:
                    err = transport_error(broken.cause, what)
                    raise type(err)(
                        f"{err.context} after {w.offset} of {desc.size} bytes "
                        f"(kept in ingest {w.ref}: pulling again resumes there)"
                    ) from None
                log.info("%s: %s at byte %d; resuming (retry %d)", what, broken, w.offset, attempt)
                await backoff(attempt)

    @contextlib.asynccontextmanager
    async def _open_blob(
        self, desc: Descriptor, offset: int
    ) -> AsyncIterator[tuple[aiohttp.ClientResponse, int]]:
        """A response with the blob's bytes from *offset* (and how many leading bytes to skip
        when the registry ignored the ``Range``), from the first host that has it."""
        kind = "manifests" if is_index(desc.media_type) or is_manifest(desc.media_type) else "blobs"
        what = f"fetch {desc.media_type} {desc.digest} of {self.ref.name}"
        headers = {"Accept": f"{desc.media_type}, */*"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        first: errdefs.Error | None = None
        async with contextlib.AsyncExitStack() as stack:
            resp: aiohttp.ClientResponse | None = None
            for host in self._hosts(Capability.PULL):
                url = self.session.url(host, self.ref.path, kind, desc.digest)
                request = self.session.request(
                    host, "GET", url, what, scopes=self.scopes, headers=headers, ok=(200, 206)
                )
                try:
                    resp = await stack.enter_async_context(request)
                    break
                except errdefs.Error as exc:
                    first = first or exc
            if resp is None:
                if first is None or isinstance(first, errdefs.NotFound):
                    hosts = ", ".join(h.host for h in self.hosts)
                    raise errdefs.NotFound(f"{what}: not found at {hosts}")
                raise first
            skip = 0
            if offset and resp.status == 206:
                got = resp.headers.get("Content-Range", "")
                if not got.startswith(f"bytes {offset}-"):
                    raise errdefs.DataLoss(f"{what}: asked for bytes {offset}-, got the range {got!r}")
            elif offset:
                skip = offset
            yield resp, skip

    async def _stream(self, desc: Descriptor, w: RemoteWriter, what: str) -> None:
        offset = w.offset
        received = offset
        start = offset
        async with self._open_blob(desc, offset) as (resp, skip):
            buf = bytearray()
            try:
                async for chunk in resp.content.iter_any():
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    if received + len(buf) + len(chunk) > desc.size:
                        raise errdefs.DataLoss(
                            f"{what}: the registry sent more than the {desc.size} bytes named"
                        )
                    buf += chunk
                    if len(buf) >= _CHUNK:
                        await w.write(buf)
                        received += len(buf)
                        buf = bytearray()
                        self.report(desc, "downloading", received, start)
            except errdefs.Error:
                raise
            except Exception as exc:
                if not retryable(exc):
                    raise transport_error(exc, what) from None
                if buf:
                    await w.write(buf)
                raise _Broken(exc, received + len(buf)) from None
            if buf:
                await w.write(buf)
                received += len(buf)
        if received < desc.size:
            raise errdefs.DataLoss(f"{what}: the registry sent {received} of {desc.size} bytes (truncated)")
