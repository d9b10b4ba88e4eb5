"""The pull pipeline: resolve the reference, fetch the tree into the content store, record
the image (and, in a later version, unpack it).

::

    resolve ──► fetch manifest/index ──► children (filtered by platform) ──► fetch blobs
       │            (verified, labelled)        │                              (verified,
       │                                        └─► nested manifests …          labelled)
       └──────────────────────────────────────────────────────────────► image record

Everything is written under one lease. Each blob goes through an ingest opened with its
digest and size, so a blob the namespace has is not fetched again, a blob another
namespace has is admitted without a byte (the daemon's ``shared`` policy), and an
interrupted download resumes at the ingest's offset with an HTTP ``Range``. Manifests
are checked (size bound, digest, JSON, media type) before a byte is written; blobs are
checked by the daemon's commit (size and digest), and a blob that fails is aborted, not
committed. The image record is written last, so it never names missing content.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, TypeVar

import aiohttp

from ctrd import errdefs
from ctrd import labels as labels_mod
from ctrd.client._registry._hosts import Capability, RegistryHost, RegistryOptions, resolve_hosts
from ctrd.client._registry._http import RegistrySession, backoff, retryable, transport_error
from ctrd.client._registry._manifests import (
    DISTRIBUTION_SOURCE,
    MAX_MANIFEST_SIZE,
    Child,
    children,
    gc_labels,
    is_index,
    is_manifest,
    merge_sources,
    ref_key,
    sniff_media_type,
    validate_digest,
)
from ctrd.client._registry._platforms import ALL, Matcher, PlatformLike, exactly, host_platform, only
from ctrd.client._registry._reference import Reference, parse_reference
from ctrd.images import Descriptor, Image, mediatypes
from ctrd.remote import PIPELINE, RemoteWriter

if TYPE_CHECKING:
    from ctrd.client._client import Client

__all__ = ["ACCEPT_MANIFESTS", "MAX_NESTING", "pull_image", "verify_digest"]

log = logging.getLogger("ctrd.client.registry")

ACCEPT_MANIFESTS: Final = ", ".join(
    [
        mediatypes.DOCKER_MANIFEST,
        mediatypes.DOCKER_MANIFEST_LIST,
        mediatypes.OCI_MANIFEST,
        mediatypes.OCI_INDEX,
        "*/*",
    ]
)
"""The ``Accept`` header of manifest requests (containerd's list)."""

MAX_NESTING: Final = 16
"""The deepest chain of indexes and manifests followed."""

_CHUNK: Final = 1 << 20
_LOCK_TIMEOUT: Final = 300.0
_GENERIC_TYPES: Final = frozenset({"", "application/json", "text/plain", "application/octet-stream"})
_SCHEMA1: Final = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
_T = TypeVar("_T")


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


def _first_error(exc: BaseException) -> BaseException:
    """The first leaf of an exception group that is an :class:`errdefs.Error` (else the first)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_first_error(e) for e in exc.exceptions]
        return next((e for e in leaves if isinstance(e, errdefs.Error)), leaves[0])
    return exc


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
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


@dataclasses.dataclass(frozen=True, slots=True)
class _Resolved:
    desc: Descriptor
    body: bytes | None


class Puller:
    """One pull: what it needs, and the steps."""

    def __init__(
        self,
        client: Client,
        session: RegistrySession,
        ref: Reference,
        hosts: list[RegistryHost],
        matcher: Matcher,
        limit: int,
        options: RegistryOptions,
    ) -> None:
        self.client = client
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

    # -- resolve -----------------------------------------------------------------------------

    def _hosts(self, cap: Capability) -> list[RegistryHost]:
        hosts = [h for h in self.hosts if h.capabilities & cap]
        if not hosts:
            raise errdefs.NotFound(
                f"{self.ref}: no registry host with the {str(cap.name).lower()} capability"
            )
        return hosts

    async def resolve(self) -> Descriptor:
        """The descriptor *ref* names (``HEAD`` of its manifest; ``GET`` when the registry
        gives no digest or size, or an unclear media type).

        :raises errdefs.NotFound: no host has it.
        """
        ref = self.ref
        if ref.digest:
            paths = [("manifests", ref.digest), ("blobs", ref.digest)]
            hosts = self._hosts(Capability.PULL)
        else:
            paths = [("manifests", ref.tag)]
            hosts = self._hosts(Capability.RESOLVE)
        first: errdefs.Error | None = None
        missing: errdefs.NotFound | None = None
        for kind, obj in paths:
            for host in hosts:
                try:
                    got = await self._resolve_at(host, kind, obj)
                except errdefs.NotFound as exc:
                    missing = missing or exc
                    continue
                except errdefs.Error as exc:
                    first = first or exc
                    log.info("resolving %s at %s: %s; trying the next host", ref, host.host, exc)
                    continue
                if got.body is not None:
                    self._bodies[got.desc.digest] = got.body
                return got.desc
        raise first or missing or errdefs.NotFound(f"{ref}: not found")

    async def _resolve_at(self, host: RegistryHost, kind: str, obj: str) -> _Resolved:
        url = self.session.url(host, self.ref.path, kind, obj)
        what = f"resolve {self.ref} at {host.host}"
        headers = {"Accept": ACCEPT_MANIFESTS}
        dgst, size, media_type = self.ref.digest, -1, ""
        async with self.session.request(
            host, "HEAD", url, what, scopes=self.scopes, headers=headers, ok=(200, 405)
        ) as resp:
            if resp.status == 200:
                media_type = resp.content_type if "Content-Type" in resp.headers else ""
                size = resp.content_length if resp.content_length is not None else -1
                header = resp.headers.get("Docker-Content-Digest", "")
                if not dgst and header and size >= 0:
                    dgst = header
        if size > MAX_MANIFEST_SIZE:
            raise errdefs.ResourceExhausted(
                f"{what}: rejecting a {size} byte manifest (the limit is {MAX_MANIFEST_SIZE} bytes)"
            )
        body = None
        if not dgst or size < 0 or not (is_index(media_type) or is_manifest(media_type)):
            async with self.session.request(
                host, "GET", url, what, scopes=self.scopes, headers=headers
            ) as resp:
                media_type = resp.content_type if "Content-Type" in resp.headers else ""
                body = await _read_bounded(resp, MAX_MANIFEST_SIZE, what)
            size = len(body)
            if not dgst:
                dgst = "sha256:" + hashlib.sha256(body).hexdigest()
            if media_type in _GENERIC_TYPES:
                media_type = sniff_media_type(body) or media_type
        validate_digest(dgst, what)
        if media_type in _SCHEMA1:
            raise errdefs.Unimplemented(f"{what}: Docker schema 1 manifests are not supported")
        if not (is_index(media_type) or is_manifest(media_type)):
            raise errdefs.InvalidArgument(
                f"{what}: unsupported media type {media_type or '(none)'!r}: not an image manifest or index"
            )
        return _Resolved(Descriptor(media_type=media_type, digest=dgst, size=size), body)

    # -- fetch -------------------------------------------------------------------------------

    async def handle(self, desc: Descriptor, ancestors: frozenset[str] = frozenset()) -> None:
        """Fetch *desc* and, for a manifest or index, what it references (filtered by platform)."""
        what = f"{desc.media_type} {desc.digest}"
        if desc.digest in ancestors:
            raise errdefs.InvalidArgument(f"{what}: references itself (a cycle in the image's manifests)")
        if len(ancestors) >= MAX_NESTING:
            raise errdefs.InvalidArgument(f"{what}: manifests nested deeper than {MAX_NESTING} levels")
        if is_index(desc.media_type) or is_manifest(desc.media_type):
            kids = await self._once(desc, self.fetch_manifest)
            assert isinstance(kids, list)
            chosen = self._select(desc, kids)
            below = ancestors | {desc.digest}
            try:
                async with asyncio.TaskGroup() as tg:
                    for child in chosen:
                        tg.create_task(self.handle(child.descriptor, below))
            except BaseExceptionGroup as eg:
                raise _first_error(eg) from None
        else:
            await self._once(desc, self.fetch_blob)

    async def _once(self, desc: Descriptor, step: Callable[[Descriptor], Awaitable[_T]]) -> object:
        """Run *step* for *desc* once per pull, however many parents name it."""
        fut = self._done.get(desc.digest)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._done[desc.digest] = fut
            try:
                fut.set_result(await step(desc))
            except asyncio.CancelledError:
                fut.cancel()
                raise
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()  # retrieved: the caller raises it
                raise
            return fut.result()
        return await asyncio.shield(fut)

    def _select(self, desc: Descriptor, kids: list[Child]) -> list[Child]:
        if not is_index(desc.media_type):
            return kids
        keep = [c for c in kids if c.platform is None or self.matcher.match(c.platform)]
        if self.limit:

            def cmp(a: Child, b: Child) -> int:
                if a.platform is None:
                    return 0 if b.platform is None else 1
                if b.platform is None:
                    return -1
                return (
                    -1
                    if self.matcher.less(a.platform, b.platform)
                    else (1 if self.matcher.less(b.platform, a.platform) else 0)
                )

            keep.sort(key=functools.cmp_to_key(cmp))
            keep = keep[: self.limit]
        if not keep and self.matcher is not ALL and kids:
            raise errdefs.NotFound(
                f"{self.ref}: no manifest for the platform ({self.matcher!r}) in {desc.digest}"
            )
        return keep

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

    async def _local(self, desc: Descriptor) -> list[Child]:
        data = await self.content.read_all(desc.digest)
        kids = children(desc, data)
        await self._label_existing(desc.digest, gc_labels(kids))
        return kids

    async def fetch_manifest(self, desc: Descriptor) -> list[Child]:
        """Store the manifest or index *desc* (checked before a byte is written, labelled with
        its children); returns its children."""
        what = f"{desc.media_type} {desc.digest}"
        if desc.size > MAX_MANIFEST_SIZE:
            raise errdefs.ResourceExhausted(
                f"{what}: rejecting a {desc.size} byte manifest (the limit is {MAX_MANIFEST_SIZE} bytes)"
            )
        async with self._slots:
            try:
                w = await self._open(desc)
            except errdefs.AlreadyExists:
                return await self._local(desc)
            try:
                if self._complete(w, desc):
                    with contextlib.suppress(errdefs.AlreadyExists):
                        await w.commit(desc.size, desc.digest)
                    return await self._local(desc)
                data = self._bodies.pop(desc.digest, None)
                if data is None:
                    data = await self._get_manifest(desc)
                verify_digest(data, desc, what)
                kids = children(desc, data)
                new_labels = {**gc_labels(kids), self.source_key: self.ref.path}
                if w.offset:
                    await w.truncate(0)
                await w.write(data)
                try:
                    await w.commit(desc.size, desc.digest, new_labels)
                except errdefs.AlreadyExists:
                    await self._label_existing(desc.digest, gc_labels(kids))
                return kids
            except errdefs.Error:
                await self._discard(w)  # a manifest is small: nothing worth keeping for a resume
                raise
            finally:
                await w.close()

    async def _discard(self, w: RemoteWriter) -> None:
        """Close *w* and drop its ingest (what it holds is wrong, or nothing)."""
        await w.close()  # releases the ref, so that it can be aborted
        with contextlib.suppress(errdefs.NotFound):
            await self.content.abort(w.ref)

    async def _get_manifest(self, desc: Descriptor) -> bytes:
        what = f"fetch {desc.media_type} {desc.digest} of {self.ref.name}"
        first: errdefs.Error | None = None
        for host in self._hosts(Capability.PULL):
            url = self.session.url(host, self.ref.path, "manifests", desc.digest)
            headers = {"Accept": f"{desc.media_type}, */*"}
            for attempt in range(self.options.retries + 1):
                try:
                    async with self.session.request(
                        host, "GET", url, what, scopes=self.scopes, headers=headers
                    ) as resp:
                        return await _read_bounded(resp, MAX_MANIFEST_SIZE, what)
                except errdefs.Error as exc:
                    first = first or exc
                    break
                except Exception as exc:
                    if retryable(exc) and attempt < self.options.retries:
                        await backoff(attempt + 1)
                        continue
                    first = first or transport_error(exc, what)
                    break
        raise first or errdefs.NotFound(f"{what}: not found")

    async def fetch_blob(self, desc: Descriptor) -> None:
        """Store the blob *desc* (a config, a layer, anything but a manifest), verified by the
        commit, with its ``distribution.source`` label."""
        what = f"{desc.media_type} {desc.digest}"
        async with self._slots:
            for fresh in (False, True):
                try:
                    w = await self._open(desc)
                except errdefs.AlreadyExists:
                    await self._label_existing(desc.digest, {})
                    return
                resumed = False
                try:
                    if not self._complete(w, desc):
                        if w.offset > desc.size or (fresh and w.offset):
                            await w.truncate(0)
                        resumed = w.offset > 0
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


def _plan(
    platforms: Iterable[PlatformLike] | None, all_platforms: bool, limit_default: bool
) -> tuple[Matcher, int]:
    if all_platforms:
        return ALL, 0
    wanted = list(platforms) if platforms is not None else []
    if not wanted:
        return only(host_platform()), 1
    if len(wanted) == 1 and limit_default:
        return only(wanted[0]), 1
    return exactly(wanted), 0


async def pull_image(
    client: Client,
    ref: str,
    *,
    platforms: Iterable[PlatformLike] | None,
    all_platforms: bool,
    limit_default: bool,
    unpack: bool,
    labels: Mapping[str, str] | None,
    options: RegistryOptions | None,
    record: bool = True,
) -> Image:
    """Resolve *ref*, fetch its tree, record the image (see :meth:`ImagesClient.pull`).

    *record* false skips the record (the image returned is then not stored): for a
    daemon without an Images service, whose caller holds the content under a lease.
    """
    if unpack:
        raise errdefs.Unimplemented(
            "pull: unpacking layers into a snapshotter is not implemented yet; "
            "pull with unpack=False (the image's content is fetched and recorded)"
        )
    reference = parse_reference(ref)
    matcher, limit = _plan(platforms, all_platforms, limit_default)
    opts = options or RegistryOptions()
    if labels:
        labels_mod.validate_all(labels)
    hosts = resolve_hosts(reference.domain, opts)
    async with contextlib.AsyncExitStack() as stack:
        if client.lease_id is None:
            await stack.enter_async_context(client.lease())
        session = await stack.enter_async_context(RegistrySession(opts, reference.domain))
        puller = Puller(client, session, reference, hosts, matcher, limit, opts)
        root = await puller.resolve()
        await puller.handle(root)
        # the unpack stage goes here (snapshots: next version), before the record
        image = Image(name=str(reference), target=root, labels=dict(labels or {}))
        return await client.images.put(image) if record else image
