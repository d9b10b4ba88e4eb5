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
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, TypeVar

from ctrd import errdefs
from ctrd import labels as labels_mod
from ctrd.client._registry._fetch import Fetcher, first_error, read_bounded, verify_digest
from ctrd.client._registry._hosts import Capability, RegistryHost, RegistryOptions, resolve_hosts
from ctrd.client._registry._http import RegistrySession, backoff, retryable, transport_error
from ctrd.client._registry._manifests import (
    MAX_MANIFEST_SIZE,
    MAX_NESTING,
    Child,
    children,
    gc_labels,
    is_index,
    is_manifest,
    sniff_media_type,
    validate_digest,
)
from ctrd.client._registry._platforms import ALL, Matcher, PlatformLike, exactly, host_platform, only
from ctrd.client._registry._reference import parse_reference
from ctrd.client._types import ProgressCallback
from ctrd.images import Descriptor, Image, mediatypes

if TYPE_CHECKING:
    from ctrd.client._client import Client

__all__ = ["ACCEPT_MANIFESTS", "MAX_NESTING", "Puller", "pull_image"]

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

_GENERIC_TYPES: Final = frozenset({"", "application/json", "text/plain", "application/octet-stream"})
_SCHEMA1: Final = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True, slots=True)
class _Resolved:
    desc: Descriptor
    body: bytes | None


class Puller(Fetcher):
    """One pull: resolving the reference and walking its manifests (blobs: :class:`Fetcher`)."""

    # -- resolve -----------------------------------------------------------------------------

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
                body = await read_bounded(resp, MAX_MANIFEST_SIZE, what)
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
                raise first_error(eg) from None
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
        self.report(desc, "waiting")
        async with self._slots:
            try:
                w = await self._open(desc)
            except errdefs.AlreadyExists:
                kids = await self._local(desc)
                self.report(desc, "exists")
                return kids
            try:
                if self._complete(w, desc):
                    with contextlib.suppress(errdefs.AlreadyExists):
                        await w.commit(desc.size, desc.digest)
                    kids = await self._local(desc)
                    self.report(desc, "shared")
                    return kids
                self.report(desc, "downloading")
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
                self.report(desc, "done")
                return kids
            except errdefs.Error:
                await self._discard(w)  # a manifest is small: nothing worth keeping for a resume
                raise
            finally:
                await w.close()

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
                        return await read_bounded(resp, MAX_MANIFEST_SIZE, what)
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
    progress: ProgressCallback | None = None,
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
        puller = Puller(client, session, reference, hosts, matcher, limit, opts, progress)
        root = await puller.resolve()
        await puller.handle(root)
        # the unpack stage goes here (snapshots: next version), before the record
        image = Image(name=str(reference), target=root, labels=dict(labels or {}))
        return await client.images.put(image) if record else image
