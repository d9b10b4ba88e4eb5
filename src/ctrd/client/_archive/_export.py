"""``client.images.export``: images as an OCI image layout tar, as ``ctr images export`` writes it.

The archive holds ``oci-layout``, ``index.json`` (one entry per image name, the image's
target with the ``io.containerd.image.name`` and ``org.opencontainers.image.ref.name``
annotations), ``blobs/<alg>/<hex>`` for every blob the images reference (from an index,
the manifests of the platform asked for, or all of them), and Docker's ``manifest.json``
(``Config``, ``RepoTags``, ``Layers``; one platform's manifest per image) so that
``docker load`` reads it too. Entries are sorted by name, as containerd writes them.

Everything is planned first (manifests read, every blob's presence and size checked), so a
missing blob fails the export before a byte is written. Blobs are then streamed from the
content store into the tar, chunk by chunk, their digests verified on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any, Final

from ctrd import errdefs
from ctrd.client._archive._names import IMAGE_NAME, familiar, name_annotations
from ctrd.client._archive._tar import BLOCK, END, header
from ctrd.client._registry._manifests import (
    MAX_MANIFEST_SIZE,
    MAX_NESTING,
    Child,
    children,
    is_index,
    is_manifest,
)
from ctrd.client._registry._platforms import Matcher, PlatformLike, exactly, host_platform
from ctrd.images import Descriptor

if TYPE_CHECKING:
    from ctrd.client._client import Client

__all__ = ["ExportTarget", "export_images"]

ExportTarget = str | os.PathLike[str] | IO[bytes]
"""Where an export goes: a file path (written to a temporary file renamed at the end) or a
binary file object (written from its position)."""

OCI_LAYOUT: Final = b'{"imageLayoutVersion":"1.0.0"}'


@dataclasses.dataclass(slots=True)
class _DockerEntry:
    manifest: Descriptor
    names: list[str] = dataclasses.field(default_factory=list)


class _Plan:
    """What goes into the archive: blobs by path, index entries, Docker manifest entries."""

    def __init__(self, client: Client, matcher: Matcher, all_platforms: bool) -> None:
        self.client = client
        self.matcher = matcher
        self.all_platforms = all_platforms
        self.blobs: dict[str, Descriptor] = {}
        self.manifests: dict[str, bytes] = {}  # digest -> document, for manifest.json
        self.index: list[Descriptor] = []
        self.docker: dict[str, _DockerEntry] = {}
        self._resolved: dict[str, str] = {}  # index digest -> the manifest manifest.json takes

    async def _read(self, desc: Descriptor) -> bytes:
        what = f"{desc.media_type} {desc.digest}"
        if desc.size > MAX_MANIFEST_SIZE:
            raise errdefs.ResourceExhausted(f"export: {what} is over {MAX_MANIFEST_SIZE} bytes")
        data = self.manifests.get(desc.digest)
        if data is None:
            data = await self._content_of(desc)
            self.manifests[desc.digest] = data
        return data

    async def _content_of(self, desc: Descriptor) -> bytes:
        try:
            data = await self.client.content.read_all(desc.digest)
        except errdefs.NotFound:
            raise errdefs.NotFound(
                f"export: {desc.media_type} {desc.digest} is not in the content store"
            ) from None
        algorithm, _, encoded = desc.digest.partition(":")
        if len(data) != desc.size or hashlib.new(algorithm, data).hexdigest() != encoded:
            raise errdefs.DataLoss(f"export: the stored {desc.digest} does not match its descriptor")
        return data

    async def _add_blob(self, desc: Descriptor) -> None:
        algorithm, _, encoded = desc.digest.partition(":")
        path = f"blobs/{algorithm}/{encoded}"
        if path in self.blobs:
            return
        if not (is_index(desc.media_type) or is_manifest(desc.media_type)):
            try:
                info = await self.client.content.info(desc.digest)
            except errdefs.NotFound:
                raise errdefs.NotFound(
                    f"export: {desc.media_type} {desc.digest} is not in the content store "
                    "(export the platforms that were pulled, or pull all of them)"
                ) from None
            if info.size != desc.size:
                raise errdefs.DataLoss(
                    f"export: {desc.digest} is {info.size} bytes in the store, "
                    f"its descriptor says {desc.size}"
                )
        self.blobs[path] = desc

    async def walk(self, desc: Descriptor, depth: int = 0) -> None:
        """Add *desc* and everything below it (every child, unfiltered: containerd's walk)."""
        if depth > MAX_NESTING:
            raise errdefs.InvalidArgument(f"export: manifests nested deeper than {MAX_NESTING} levels")
        await self._add_blob(desc)
        if is_index(desc.media_type) or is_manifest(desc.media_type):
            for child in children(desc, await self._read(desc)):
                await self.walk(child.descriptor, depth + 1)

    async def add_image(self, target: Descriptor) -> None:
        """One image name (its target carries the name annotations)."""
        self.index.append(target)
        name = target.annotations.get(IMAGE_NAME, "")
        if is_manifest(target.media_type):
            if target.digest not in self.docker:
                await self.walk(target)
                self.docker[target.digest] = _DockerEntry(target)
            if name:
                self.docker[target.digest].names.append(name)
            return
        if not is_index(target.media_type):
            raise errdefs.InvalidArgument(
                f"export: only manifests and indexes may be exported, not {target.media_type} {target.digest}"
            )
        chosen = self._resolved.get(target.digest)
        if chosen is None:
            chosen = await self._add_index(target)
            self._resolved[target.digest] = chosen
        if name:
            self.docker[chosen].names.append(name)

    async def _add_index(self, target: Descriptor) -> str:
        await self._add_blob(target)
        kids = children(target, await self._read(target))
        matching: list[Child] = []
        for child in kids:
            if child.platform is None or self.matcher.match(child.platform):
                matching.append(child)
            elif not self.all_platforms:
                continue
            await self.walk(child.descriptor, 1)
        if not matching:
            raise errdefs.NotFound(
                f"export: no manifest for the platform ({self.matcher!r}) in {target.digest}"
            )

        def cmp(a: Child, b: Child) -> int:
            if a.platform is None:
                return 0 if b.platform is None else 1
            if b.platform is None:
                return -1
            if self.matcher.less(a.platform, b.platform):
                return -1
            return 1 if self.matcher.less(b.platform, a.platform) else 0

        best = sorted(matching, key=functools.cmp_to_key(cmp))[0].descriptor
        self.docker.setdefault(best.digest, _DockerEntry(best))
        return best.digest

    async def docker_manifest(self) -> bytes:
        """Docker's ``manifest.json``."""
        out: list[dict[str, Any]] = []
        for entry in self.docker.values():
            if not is_manifest(entry.manifest.media_type):
                raise errdefs.InvalidArgument(
                    f"export: {entry.manifest.digest} is a {entry.manifest.media_type}: Docker's "
                    "manifest.json needs an image manifest (a nested index)"
                )
            kids = children(entry.manifest, await self._read(entry.manifest))
            config = next(c.descriptor for c in kids if c.role == "config")
            layers = [c.descriptor for c in kids if c.role == "layer"]
            out.append(
                {
                    "Config": _blob_path(config.digest),
                    "RepoTags": [familiar(n) for n in entry.names] or None,
                    "Layers": [_blob_path(d.digest) for d in layers] or None,
                }
            )
        return json.dumps(out, separators=(",", ":")).encode()


def _blob_path(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


def _descriptor_json(d: Descriptor) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
    if d.annotations:
        out["annotations"] = dict(sorted(d.annotations.items()))
    return out


class _Sink:
    """Sequential writes to a binary file, from a worker thread."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.written = 0

    async def write(self, data: bytes | bytearray) -> None:
        await asyncio.to_thread(self.f.write, data)
        self.written += len(data)


async def _write_blob(client: Client, sink: _Sink, desc: Descriptor) -> None:
    algorithm, _, encoded = desc.digest.partition(":")
    hasher = hashlib.new(algorithm)
    got = 0
    async with contextlib.aclosing(client.content.read(desc.digest)) as chunks:
        async for chunk in chunks:
            got += len(chunk)
            if got > desc.size:
                break
            hasher.update(chunk)
            await sink.write(chunk)
    if got != desc.size or hasher.hexdigest() != encoded:
        raise errdefs.DataLoss(
            f"export: reading {desc.digest} from the content store gave other bytes "
            f"({got} bytes, {algorithm}:{hasher.hexdigest()})"
        )


async def _write_archive(client: Client, plan: _Plan, sink: _Sink) -> None:
    records: dict[str, bytes | Descriptor | None] = {}
    records["oci-layout"] = OCI_LAYOUT
    index = {"schemaVersion": 2, "manifests": [_descriptor_json(d) for d in plan.index]}
    records["index.json"] = json.dumps(index, separators=(",", ":")).encode()
    if plan.docker:
        records["manifest.json"] = await plan.docker_manifest()
    if plan.blobs:
        records["blobs/"] = None
        for path in plan.blobs:
            records[path.rsplit("/", 1)[0] + "/"] = None
    records.update(plan.blobs)
    for name in sorted(records):
        value = records[name]
        if value is None:
            await sink.write(header(name, 0, directory=True))
        elif isinstance(value, bytes):
            mode = 0o444 if name == "oci-layout" else 0o644
            await sink.write(header(name, len(value), mode=mode) + value + b"\0" * (-len(value) % BLOCK))
        else:
            await sink.write(header(name, value.size))
            await _write_blob(client, sink, value)
            await sink.write(b"\0" * (-value.size % BLOCK))
    await sink.write(END)


async def export_images(
    client: Client,
    target: ExportTarget,
    names: Iterable[str],
    *,
    platforms: Iterable[PlatformLike] | None,
    all_platforms: bool,
) -> int:
    """Write the images *names* to *target* (see :meth:`ImagesClient.export`); returns the
    archive's size in bytes."""
    names = list(names)
    if not names:
        raise errdefs.InvalidArgument("export: no image named")
    wanted = list(platforms) if platforms is not None else []
    matcher = exactly(wanted) if wanted else exactly([host_platform()])
    plan = _Plan(client, matcher, all_platforms)
    for name in names:
        image = await client.images.get(name)
        tgt = image.target
        await plan.add_image(dataclasses.replace(tgt, annotations=name_annotations(name, tgt.annotations)))
    await plan.docker_manifest()  # fails now (names that are not references) rather than half-way

    if isinstance(target, str | os.PathLike):
        path = os.fspath(target)
        head, tail = os.path.split(path)
        tmp = os.path.join(head, f".{tail}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        try:
            with os.fdopen(fd, "wb") as f:
                sink = _Sink(f)
                await _write_archive(client, plan, sink)
                await asyncio.to_thread(f.flush)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return sink.written
    sink = _Sink(target)
    await _write_archive(client, plan, sink)
    await asyncio.to_thread(target.flush)
    return sink.written
