"""Pushing an image: its blobs the repository lacks, then its manifests, then the tag.

For each blob, a ``HEAD`` asks whether the repository has it; if not, and the blob's
``containerd.io/distribution.source.<host>`` label names another repository of the same
registry, a cross-repository mount is asked for (``POST …/blobs/uploads/?mount=&from=``);
otherwise (or when the registry declines the mount) the blob is uploaded in one ``PUT``,
streamed from the content store. A manifest goes once everything it references is there;
the root goes last, under the tag.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ctrd import errdefs
from ctrd.client._registry._fetch import first_error, verify_digest
from ctrd.client._registry._hosts import Capability, RegistryHost, RegistryOptions, resolve_hosts
from ctrd.client._registry._http import RegistrySession
from ctrd.client._registry._manifests import (
    MAX_MANIFEST_SIZE,
    MAX_NESTING,
    children,
    is_index,
    is_manifest,
    ref_key,
    source_labels,
)
from ctrd.client._registry._reference import Reference, parse_reference
from ctrd.client._types import BlobProgress, BlobStatus, ProgressCallback
from ctrd.images import Descriptor

if TYPE_CHECKING:
    from ctrd.client._client import Client

__all__ = ["push_image"]


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def mount_candidate(target: str, sources: list[str]) -> str:
    """The repository to mount a blob from: of *sources* other than *target*, the one
    sharing the most leading path components with it (``""``: none)."""
    parts = target.split("/")
    best, best_n = "", -1
    for repo in sources:
        if repo == target:
            continue
        n = _common_prefix(parts, repo.split("/"))
        if n > best_n:
            best, best_n = repo, n
    return best


class Pusher:
    """One push: the target, its endpoint, the steps."""

    def __init__(
        self,
        client: Client,
        session: RegistrySession,
        ref: Reference,
        host: RegistryHost,
        options: RegistryOptions,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.client = client
        self.progress = progress
        self.content = client.content
        self.session = session
        self.ref = ref
        self.host = host
        self.scopes = [f"repository:{ref.path}:pull,push"]
        self._slots = asyncio.Semaphore(options.max_concurrent_downloads)
        self._done: dict[str, asyncio.Task[None]] = {}

    def report(self, desc: Descriptor, status: BlobStatus, offset: int = 0) -> None:
        """Tell the progress callback, if any, where *desc* stands."""
        if self.progress is not None:
            if status in ("exists", "mounted", "done"):
                offset = desc.size
            self.progress(BlobProgress(ref_key(desc), desc, status, offset))

    async def _local(self, desc: Descriptor) -> bytes:
        what = f"{desc.media_type} {desc.digest}"
        if desc.size > MAX_MANIFEST_SIZE:
            raise errdefs.ResourceExhausted(f"{what}: a manifest over {MAX_MANIFEST_SIZE} bytes")
        try:
            data = await self.content.read_all(desc.digest)
        except errdefs.NotFound:
            raise errdefs.NotFound(
                f"{what} is not in the content store: pull the image with all_platforms=True to push it"
            ) from None
        verify_digest(data, desc, what)
        return data

    def _once(self, desc: Descriptor) -> asyncio.Task[None]:
        """The upload of blob *desc*, started once per push however many manifests name it."""
        task = self._done.get(desc.digest)
        if task is None:
            task = asyncio.ensure_future(self.push_blob(desc))
            self._done[desc.digest] = task
        return task

    async def push_tree(
        self, desc: Descriptor, obj: str = "", ancestors: frozenset[str] = frozenset()
    ) -> None:
        """Push *desc* and what it references; a manifest after its children (under *obj*,
        a tag, when given, else by digest)."""
        what = f"{desc.media_type} {desc.digest}"
        if desc.digest in ancestors:
            raise errdefs.InvalidArgument(f"{what}: references itself")
        if len(ancestors) >= MAX_NESTING:
            raise errdefs.InvalidArgument(f"{what}: manifests nested deeper than {MAX_NESTING} levels")
        if not (is_index(desc.media_type) or is_manifest(desc.media_type)):
            await asyncio.shield(self._once(desc))
            return
        data = await self._local(desc)
        kids = children(desc, data)
        below = ancestors | {desc.digest}
        try:
            async with asyncio.TaskGroup() as tg:
                for child in kids:
                    tg.create_task(self.push_tree(child.descriptor, "", below))
        except BaseExceptionGroup as eg:
            raise first_error(eg) from None
        await self.push_manifest(desc, data, obj)

    async def _exists(self, kind: str, desc: Descriptor) -> bool:
        url = self.session.url(self.host, self.ref.path, kind, desc.digest)
        what = f"check {desc.digest} in {self.ref.name}"
        headers = {"Accept": f"{desc.media_type}, */*"} if kind == "manifests" else {}
        async with self.session.request(
            self.host, "HEAD", url, what, scopes=self.scopes, headers=headers, ok=(200, 404)
        ) as resp:
            return resp.status == 200

    async def push_blob(self, desc: Descriptor) -> None:
        """Upload the blob *desc* unless the repository has it, mounting it when its
        ``distribution.source`` label names a repository of this registry."""
        what = f"push {desc.media_type} {desc.digest} to {self.ref.name}"
        try:
            info = await self.content.info(desc.digest)
        except errdefs.NotFound:
            raise errdefs.NotFound(f"{what}: the blob is not in the content store") from None
        self.report(desc, "waiting")
        async with self._slots:
            if await self._exists("blobs", desc):
                self.report(desc, "exists")
                return
            source = mount_candidate(self.ref.path, source_labels(info.labels, self.ref.hostname))
            query = {"mount": desc.digest, "from": source} if source else None
            scopes = self.scopes + ([f"repository:{source}:pull"] if source else [])
            url = self.session.url(self.host, self.ref.path, "blobs", "uploads", "", query=query)
            async with self.session.request(
                self.host, "POST", url, what, scopes=scopes, ok=(201, 202)
            ) as resp:
                if resp.status == 201:
                    self.report(desc, "mounted")
                    return
                location = self.session.location(resp)
            sep = "&" if "?" in location else "?"
            put_url = f"{location}{sep}digest={desc.digest}"

            async def body() -> AsyncIterator[bytes]:
                sent = 0
                self.report(desc, "uploading")
                async with contextlib.aclosing(self.content.read(desc.digest)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                        sent += len(chunk)
                        self.report(desc, "uploading", sent)

            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)}
            async with self.session.request(
                self.host, "PUT", put_url, what, scopes=self.scopes, headers=headers, body=body, ok=(201, 204)
            ) as resp:
                got = resp.headers.get("Docker-Content-Digest", "")
                if got and got != desc.digest:
                    raise errdefs.DataLoss(f"{what}: the registry stored {got}")
            self.report(desc, "done")

    async def push_manifest(self, desc: Descriptor, data: bytes, obj: str) -> None:
        """``PUT`` the manifest under *obj* (a tag), or by digest when it is not there yet."""
        what = f"push {desc.media_type} {desc.digest} to {self.ref.name}"
        self.report(desc, "waiting")
        if not obj and await self._exists("manifests", desc):
            self.report(desc, "exists")
            return
        self.report(desc, "uploading")
        url = self.session.url(self.host, self.ref.path, "manifests", obj or desc.digest)
        async with self.session.request(
            self.host,
            "PUT",
            url,
            what,
            scopes=self.scopes,
            headers={"Content-Type": desc.media_type},
            body=lambda: data,
            ok=(200, 201, 204),
        ) as resp:
            got = resp.headers.get("Docker-Content-Digest", "")
            if got and got != desc.digest:
                raise errdefs.DataLoss(f"{what}: the registry stored {got}")
        self.report(desc, "done")


async def push_image(
    client: Client,
    ref: str,
    source: str | None,
    *,
    options: RegistryOptions | None,
    target: Descriptor | None = None,
    progress: ProgressCallback | None = None,
) -> Descriptor:
    """Push the image *source* (default: *ref* normalised) to *ref* (see :meth:`ImagesClient.push`).

    With *target*, that tree is pushed without looking up an image record (for a daemon
    without an Images service).
    """
    reference = parse_reference(ref)
    name = source if source is not None else str(reference)
    if target is None:
        target = (await client.images.get(name)).target
    if reference.digest and reference.digest != target.digest:
        raise errdefs.InvalidArgument(
            f"push {ref}: the image {name} is {target.digest}, not {reference.digest}"
        )
    if not (is_index(target.media_type) or is_manifest(target.media_type)):
        raise errdefs.InvalidArgument(
            f"push {ref}: the image's target is a {target.media_type}, not a manifest"
        )
    opts = options or RegistryOptions()
    hosts = [h for h in resolve_hosts(reference.domain, opts) if h.capabilities & Capability.PUSH]
    if not hosts:
        raise errdefs.NotFound(f"push {ref}: no registry host with the push capability")
    async with RegistrySession(opts, reference.domain) as session:
        pusher = Pusher(client, session, reference, hosts[0], opts, progress)
        try:
            await pusher.push_tree(target, reference.tag or target.digest)
        finally:
            for task in pusher._done.values():
                task.cancel()
            await asyncio.gather(*pusher._done.values(), return_exceptions=True)
    return target
