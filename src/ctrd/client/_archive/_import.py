"""``client.images.import_``: image archives into the content store, as ``ctr images import
--no-unpack`` reads them.

Two formats, told apart once the whole archive has been read (their files come in any
order):

* an **OCI image layout** (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``), as
  ``ctr images export``, ``ctrd``'s :meth:`~ctrd.client.ImagesClient.export`, skopeo,
  BuildKit or ``docker save`` (25 and later) write it; preferred when present;
* a **``docker save`` archive** (``manifest.json`` listing each image's ``Config`` and
  ``Layers`` paths and ``RepoTags``; layers as ``<id>/layer.tar``, configs as
  ``<id>.json``, repeated layers as symbolic links): a Docker schema 2 manifest is built
  for each image, as containerd's importer builds it (the same bytes, so the same digest).

The archive is read as one stream, never extracted: every regular file but the JSON
documents goes through an ingest (``blobs/<alg>/<hex>`` opened with that digest and its
size, so the commit verifies them, a blob the namespace has is skipped and, under the
``shared`` policy, one another namespace has is admitted without its bytes). Links are
names of other entries; entries named with ``..`` or absolutely are refused; devices, FIFOs
and other types are skipped. Afterwards the images' trees are walked (an index's manifests
filtered by platform), every manifest and index is labelled with its children
(``containerd.io/gc.ref.content.*``), and every blob they reach must be present. The
records are written last; everything is held by one lease until then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from ctrd import errdefs
from ctrd.client._archive._names import (
    image_name,
    name_annotations,
    normalize_docker,
    translator,
)
from ctrd.client._archive._tar import (
    ArchiveSource,
    Entry,
    Kind,
    TarReader,
    open_source,
    resolve_link,
    safe_name,
)
from ctrd.client._registry._manifests import (
    MAX_MANIFEST_SIZE,
    MAX_NESTING,
    Child,
    children,
    gc_labels,
    is_index,
    is_manifest,
)
from ctrd.client._registry._platforms import (
    ALL,
    Matcher,
    PlatformLike,
    exactly,
    host_platform,
    normalize,
    only,
)
from ctrd.client._types import Platform
from ctrd.images import Descriptor, Image, mediatypes
from ctrd.limits import echo
from ctrd.remote import PIPELINE

if TYPE_CHECKING:
    from ctrd.client._client import Client

__all__ = ["MAX_ARCHIVE_ENTRIES", "import_images"]

log = logging.getLogger("ctrd.client.archive")

MAX_ARCHIVE_ENTRIES: Final = 100_000
"""The most entries an imported archive may have."""

UNCOMPRESSED_LABEL: Final = "containerd.io/uncompressed"

_BLOB_PATH: Final = re.compile(r"blobs/(sha256/[0-9a-f]{64}|sha384/[0-9a-f]{96}|sha512/[0-9a-f]{128})")
_JSON_FILES: Final = frozenset({"oci-layout", "index.json", "manifest.json", "repositories"})
_LOCK_TIMEOUT: Final = 60.0
_MAX_LINK_HOPS: Final = 16
_COMPRESSED_MAGIC: Final = (b"\x1f\x8b\x08", b"\x28\xb5\x2f\xfd")


@dataclasses.dataclass(frozen=True, slots=True)
class _Blob:
    digest: str
    size: int


def _ref(name: str) -> str:
    """The ingest ref of an archive entry (containerd's ``tar-<name>``; long names hashed)."""
    if len(name.encode()) <= 200:
        return f"tar-{name}"
    return "tar-" + hashlib.sha256(name.encode()).hexdigest()


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"archive: {what} is not valid JSON ({exc})") from None


class _Reader:
    """One pass over the archive: blobs ingested, JSON documents kept."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.blobs: dict[str, _Blob] = {}
        self.links: dict[str, str] = {}
        self.layout: bytes | None = None
        self.index: bytes | None = None
        self.docker: bytes | None = None

    async def read(self, source: ArchiveSource) -> None:
        stream = open_source(source)
        try:
            reader = TarReader(stream)
            while (entry := await reader.next()) is not None:
                if reader.entries > MAX_ARCHIVE_ENTRIES:
                    raise errdefs.ResourceExhausted(f"archive: more than {MAX_ARCHIVE_ENTRIES} entries")
                await self._entry(reader, entry)
        finally:
            await stream.close()

    async def _entry(self, reader: TarReader, entry: Entry) -> None:
        name = safe_name(entry.name)
        if entry.kind is Kind.DIR:
            return
        if entry.kind in (Kind.SYMLINK, Kind.HARDLINK):
            self.links[name] = resolve_link(entry, name)
            return
        if entry.kind is Kind.OTHER:
            log.debug("archive: skipping %s (tar type %r)", echo(name), entry.typeflag)
            return
        if not name:
            raise errdefs.InvalidArgument(f"archive: a file entry named {echo(repr(entry.name))}")
        if name in _JSON_FILES:
            if name == "repositories":
                return  # Docker's legacy names: manifest.json's RepoTags say the same
            data = await reader.read_all(MAX_MANIFEST_SIZE, name)
            if name == "oci-layout":
                self.layout = data
            elif name == "index.json":
                self.index = data
            else:
                self.docker = data
            return
        self.blobs[name] = await self._ingest(reader, name, entry.size)

    async def _ingest(self, reader: TarReader, name: str, size: int) -> _Blob:
        m = _BLOB_PATH.fullmatch(name)
        expected = m.group(1).replace("/", ":", 1) if m else ""
        content = self.client.content
        try:
            w = await content._open(_ref(name), size, expected, _LOCK_TIMEOUT, pipeline=PIPELINE)
        except errdefs.AlreadyExists:
            return _Blob(expected, size)  # in the namespace already: the data is skipped
        try:
            if not (expected and size > 0 and w.offset == size and w.digest() == expected):
                if w.offset:
                    await w.truncate(0)  # a stale ingest of this name: start over
                async for chunk in reader.data():
                    await w.write(chunk)
            try:
                await w.commit(size, expected)
            except errdefs.AlreadyExists:
                pass
            except errdefs.FailedPrecondition as exc:
                raise errdefs.DataLoss(
                    f"archive: {echo(name)} is not the blob its name says "
                    f"({exc}; its content is {w.digest()})"
                ) from None
            return _Blob(w.digest() or expected, size)
        except errdefs.Error:
            await w.close()  # an archive is read once: nothing worth keeping for a resume
            with contextlib.suppress(errdefs.NotFound):
                await content.abort(w.ref)
            raise
        finally:
            await w.close()

    def lookup(self, path: str, what: str) -> _Blob:
        """The blob stored for *path* (links followed)."""
        seen = 0
        clean = safe_name(path)
        while clean not in self.blobs:
            target = self.links.get(clean)
            seen += 1
            if target is None or seen > _MAX_LINK_HOPS:
                raise errdefs.InvalidArgument(f"archive: {what} {echo(repr(path))} is not in the archive")
            clean = target
        return self.blobs[clean]


def _detect(head: bytes) -> str:
    """containerd's choice of a Docker layer type from a layer's first bytes."""
    if head.startswith(_COMPRESSED_MAGIC) or (
        len(head) >= 4 and int.from_bytes(head[:4], "little") & 0xFFFFFFF0 == 0x184D2A50
    ):
        return mediatypes.DOCKER_LAYER_GZIP
    return mediatypes.DOCKER_LAYER


class _Importer:
    def __init__(self, client: Client, archive: _Reader, matcher: Matcher, base_name: str | None) -> None:
        self.client = client
        self.content = client.content
        self.archive = archive
        self.matcher = matcher
        self.translate = translator(base_name)
        self._docs: dict[str, bytes] = {}
        self._walked: set[str] = set()

    # -- the images the archive names ----------------------------------------------------------

    def entries(self) -> list[Child]:
        """``index.json``'s entries (an OCI layout), else those built from ``manifest.json``
        (see :meth:`docker_entries`, which must have run)."""
        if self.archive.layout is not None:
            layout = _json(self.archive.layout, "oci-layout")
            version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
            if version != "1.0.0":
                raise errdefs.InvalidArgument(
                    f"archive: unsupported OCI layout version {echo(repr(version))} (1.0.0 is)"
                )
            if self.archive.index is None:
                raise errdefs.InvalidArgument("archive: an OCI layout without index.json")
            data = self.archive.index
            dgst = "sha256:" + hashlib.sha256(data).hexdigest()
            return children(Descriptor(mediatypes.OCI_INDEX, dgst, len(data)), data)
        raise errdefs.InvalidArgument(
            "archive: unrecognized image format (neither oci-layout nor manifest.json)"
        )

    async def docker_entries(self) -> list[Child]:
        """One entry per ``RepoTags`` name (or one unnamed) for each image of ``manifest.json``,
        its Docker schema 2 manifest built and stored."""
        assert self.archive.docker is not None
        doc = _json(self.archive.docker, "manifest.json")
        if not isinstance(doc, list):
            raise errdefs.InvalidArgument("archive: manifest.json is not a list")
        out: list[Child] = []
        for i, item in enumerate(doc):
            where = f"manifest.json[{i}]"
            if not isinstance(item, dict):
                raise errdefs.InvalidArgument(f"archive: {where} is not an object")
            config_path, tags, layer_paths = item.get("Config"), item.get("RepoTags"), item.get("Layers")
            if not isinstance(config_path, str):
                raise errdefs.InvalidArgument(f"archive: {where} has no Config path")
            tags = tags or []
            layer_paths = layer_paths or []
            if not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
                raise errdefs.InvalidArgument(f"archive: {where}: RepoTags must be a list of strings")
            if not (isinstance(layer_paths, list) and all(isinstance(p, str) for p in layer_paths)):
                raise errdefs.InvalidArgument(f"archive: {where}: Layers must be a list of strings")
            config = self.archive.lookup(config_path, "image config")
            layers = await self._layers([self.archive.lookup(p, "layer") for p in layer_paths])
            manifest = {
                "schemaVersion": 2,
                "mediaType": mediatypes.DOCKER_MANIFEST,
                "config": {
                    "mediaType": mediatypes.DOCKER_CONFIG,
                    "digest": config.digest,
                    "size": config.size,
                },
                "layers": [{"mediaType": mt, "digest": b.digest, "size": b.size} for mt, b in layers],
            }
            data = json.dumps(manifest, separators=(",", ":")).encode()
            desc = Descriptor(
                mediatypes.DOCKER_MANIFEST, "sha256:" + hashlib.sha256(data).hexdigest(), len(data)
            )
            await self.content.ingest(f"manifest-{desc.digest}", data, expected=desc.digest)
            self._docs[desc.digest] = data
            platform = await self._platform(config)
            if not tags:
                out.append(Child(desc, platform, "manifest"))
            for tag in tags:
                named = dataclasses.replace(desc, annotations=name_annotations(normalize_docker(tag)))
                out.append(Child(named, platform, "manifest"))
        return out

    async def _layers(self, blobs: list[_Blob]) -> list[tuple[str, _Blob]]:
        """Each layer's media type; a compressed blob of the namespace labelled
        ``containerd.io/uncompressed=<layer>`` stands in for an uncompressed layer (containerd's rule)."""
        subst: dict[str, _Blob] = {}
        if blobs:
            filters = [f'labels."{UNCOMPRESSED_LABEL}"=={b.digest}' for b in blobs]
            async for info in self.content.list(*filters):
                subst[info.labels[UNCOMPRESSED_LABEL]] = _Blob(info.digest, info.size)
        out = []
        for blob in blobs:
            chosen = subst.get(blob.digest, blob)
            head = b""
            if chosen.size:
                async for chunk in self.content.read(chosen.digest, 0, min(10, chosen.size)):
                    head += chunk
            out.append((_detect(head), chosen))
        return out

    async def _platform(self, config: _Blob) -> Platform:
        """The platform an image config names (``os``, ``architecture``, normalised, as
        containerd's ``images.Platforms`` reads it)."""
        doc: Any = {}
        if config.size <= MAX_MANIFEST_SIZE:
            data = await self.content.read_all(config.digest)
            try:
                doc = json.loads(data)
            except ValueError:
                doc = {}
        if not isinstance(doc, dict):
            doc = {}
        os_name, arch = doc.get("os", ""), doc.get("architecture", "")
        return normalize(
            Platform(os_name if isinstance(os_name, str) else "", arch if isinstance(arch, str) else "")
        )

    # -- the walk -----------------------------------------------------------------------------

    async def _document(self, desc: Descriptor, image: str) -> bytes:
        data = self._docs.get(desc.digest)
        if data is not None:
            return data
        what = f"{desc.media_type} {desc.digest}"
        if desc.size > MAX_MANIFEST_SIZE:
            raise errdefs.ResourceExhausted(f"archive: {what} is over {MAX_MANIFEST_SIZE} bytes")
        try:
            data = await self.content.read_all(desc.digest)
        except errdefs.NotFound:
            raise self._missing(desc, image) from None
        algorithm, _, encoded = desc.digest.partition(":")
        if len(data) != desc.size or hashlib.new(algorithm, data).hexdigest() != encoded:
            raise errdefs.DataLoss(f"archive: {what} does not match its descriptor")
        self._docs[desc.digest] = data
        return data

    @staticmethod
    def _missing(desc: Descriptor, image: str) -> errdefs.NotFound:
        return errdefs.NotFound(
            f"archive: image {image} needs {desc.media_type} {desc.digest}, which is neither in the "
            "archive nor in the namespace (import the platforms it was exported with)"
        )

    async def walk(self, desc: Descriptor, image: str, depth: int = 0) -> None:
        """Check that *desc* and what it references (an index's manifests filtered by platform)
        are present, and label every manifest and index with its children."""
        if desc.digest in self._walked:
            return
        if depth > MAX_NESTING:
            raise errdefs.InvalidArgument(f"archive: manifests nested deeper than {MAX_NESTING} levels")
        self._walked.add(desc.digest)
        if not (is_index(desc.media_type) or is_manifest(desc.media_type)):
            try:
                info = await self.content.info(desc.digest)
            except errdefs.NotFound:
                raise self._missing(desc, image) from None
            if info.size != desc.size:
                raise errdefs.DataLoss(
                    f"archive: {desc.digest} is {info.size} bytes, its descriptor says {desc.size}"
                )
            return
        kids = children(desc, await self._document(desc, image))
        if is_index(desc.media_type):
            kids = [k for k in kids if k.platform is None or self.matcher.match(k.platform)]
        want = gc_labels(kids)
        if want:
            info = await self.content.info(desc.digest)
            changed = {k: v for k, v in want.items() if info.labels.get(k) != v}
            if changed:
                await self.content.update(desc.digest, changed)
        for kid in kids:
            await self.walk(kid.descriptor, image, depth + 1)

    async def record(self, name: str, target: Descriptor) -> Image:
        """Point *name* at *target* (its labels kept), or create it (containerd's order)."""
        image = Image(name=name, target=target)
        while True:
            try:
                return await self.client.images.update(image, ["target"])
            except errdefs.NotFound:
                pass
            try:
                return await self.client.images.create(image)
            except errdefs.AlreadyExists:
                continue  # created in between: update it


def _matcher(platforms: Iterable[PlatformLike] | None, all_platforms: bool) -> Matcher:
    if all_platforms:
        return ALL
    wanted = list(platforms) if platforms is not None else []
    return exactly(wanted) if wanted else only(host_platform())


async def import_images(
    client: Client,
    source: ArchiveSource,
    *,
    platforms: Iterable[PlatformLike] | None,
    all_platforms: bool,
    base_name: str | None,
) -> list[Image]:
    """Read the archive *source* into the namespace (see :meth:`ImagesClient.import_`)."""
    matcher = _matcher(platforms, all_platforms)
    async with contextlib.AsyncExitStack() as stack:
        if client.lease_id is None:
            await stack.enter_async_context(client.lease())
        archive = _Reader(client)
        await archive.read(source)
        importer = _Importer(client, archive, matcher, base_name)
        if archive.layout is None and archive.docker is not None:
            entries = await importer.docker_entries()
        else:
            entries = importer.entries()
        named: dict[str, Descriptor] = {}
        for entry in entries:
            name = image_name(entry.descriptor.annotations, importer.translate)
            if name:
                named.pop(name, None)
                named[name] = entry.descriptor
        for name, target in named.items():
            await importer.walk(target, name)
        return [await importer.record(name, target) for name, target in named.items()]
