"""What a manifest or an index names, read strictly, and the labels containerd writes for it.

Registries are not trusted: every document is bounded (:data:`MAX_MANIFEST_SIZE`), must be
a JSON object of the media type its descriptor announced, and every descriptor in it must
have a valid digest, a size and a media type. :func:`children` returns what a document
references; :func:`gc_labels` the ``containerd.io/gc.ref.content.*`` labels that keep those
children alive while the document is.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ctrd import errdefs
from ctrd.client._types import Platform
from ctrd.images import Descriptor, mediatypes
from ctrd.limits import echo

__all__ = [
    "CONFIG_TYPES",
    "DISTRIBUTION_SOURCE",
    "INDEX_TYPES",
    "LAYER_TYPES",
    "MANIFEST_TYPES",
    "MAX_MANIFEST_SIZE",
    "MAX_NESTING",
    "Child",
    "children",
    "gc_labels",
    "is_index",
    "is_manifest",
    "merge_sources",
    "ref_key",
    "sniff_media_type",
    "validate_digest",
]

MAX_MANIFEST_SIZE: Final = 4 * 1048 * 1048
"""The largest manifest or index taken from a registry, in bytes (containerd's ``MaxManifestSize``)."""

MAX_NESTING: Final = 16
"""The deepest chain of indexes and manifests followed."""

DISTRIBUTION_SOURCE: Final = "containerd.io/distribution.source."
"""Prefix of the label naming where a blob was fetched from: ``<prefix><host>=<repo>[,<repo>…]``."""

INDEX_TYPES: Final = frozenset({mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST_LIST})
MANIFEST_TYPES: Final = frozenset({mediatypes.OCI_MANIFEST, mediatypes.DOCKER_MANIFEST})
CONFIG_TYPES: Final = frozenset({mediatypes.OCI_CONFIG, mediatypes.DOCKER_CONFIG})
LAYER_TYPES: Final = frozenset(
    {
        mediatypes.OCI_LAYER,
        mediatypes.OCI_LAYER_GZIP,
        mediatypes.OCI_LAYER_ZSTD,
        mediatypes.DOCKER_LAYER,
        mediatypes.DOCKER_LAYER_GZIP,
        mediatypes.DOCKER_LAYER_FOREIGN,
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)

_GC_PREFIX: Final = "containerd.io/gc.ref.content."
_DIGEST_RE: Final = re.compile(r"(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})")
_MAX_SIZE: Final = (1 << 63) - 1


def is_index(media_type: str) -> bool:
    """An OCI index or a Docker manifest list."""
    return media_type in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    """An OCI or Docker schema 2 image manifest."""
    return media_type in MANIFEST_TYPES


def validate_digest(dgst: object, where: str) -> str:
    """*dgst* if it is a ``sha256:``/``sha384:``/``sha512:`` digest in lower-case hex.

    :raises errdefs.InvalidArgument: anything else.
    """
    if not isinstance(dgst, str) or not _DIGEST_RE.fullmatch(dgst):
        raise errdefs.InvalidArgument(f"{where}: invalid digest {echo(str(dgst))!r}")
    return dgst


@dataclasses.dataclass(frozen=True, slots=True)
class Child:
    """A descriptor found in a manifest or an index, with its platform when an index gives one."""

    descriptor: Descriptor
    platform: Platform | None = None
    role: str = "blob"
    """``manifest`` (an index's entry), ``config``, ``layer`` or ``blob`` (anything else)."""


def _descriptor(raw: object, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise errdefs.InvalidArgument(f"{where}: a descriptor must be an object")
    media_type = raw.get("mediaType")
    size = raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise errdefs.InvalidArgument(f"{where}: descriptor without a media type")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _MAX_SIZE:
        raise errdefs.InvalidArgument(f"{where}: descriptor with invalid size {echo(str(size))!r}")
    dgst = validate_digest(raw.get("digest"), where)
    annotations = raw.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise errdefs.InvalidArgument(f"{where}: descriptor annotations must map strings to strings")
    return Descriptor(media_type=media_type, digest=dgst, size=size, annotations=annotations)


def _platform(raw: object, where: str) -> Platform | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise errdefs.InvalidArgument(f"{where}: platform must be an object")
    os_name, arch, variant = raw.get("os", ""), raw.get("architecture", ""), raw.get("variant", "")
    if not all(isinstance(x, str) for x in (os_name, arch, variant)):
        raise errdefs.InvalidArgument(f"{where}: platform fields must be strings")
    return Platform(os_name, arch, variant)


def sniff_media_type(data: bytes) -> str:
    """The media type a manifest or index document declares, or infers from its fields
    (``""``: neither; an OCI document may omit ``mediaType``)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if "manifests" in doc:
        return mediatypes.OCI_INDEX
    if "config" in doc and "layers" in doc:
        return mediatypes.OCI_MANIFEST
    return ""


def children(desc: Descriptor, data: bytes) -> list[Child]:
    """What the manifest or index *data* (announced as *desc*) references, in document order.

    :raises errdefs.InvalidArgument: not JSON, not an object, a ``mediaType`` that is not
        *desc*'s, a manifest with ``manifests`` or an index with ``config``/``layers``, or a
        malformed descriptor.
    :raises errdefs.Unimplemented: a media type that is neither (Docker schema 1 among them).
    """
    where = f"{desc.media_type} {desc.digest}"
    if not (is_index(desc.media_type) or is_manifest(desc.media_type)):
        raise errdefs.Unimplemented(f"{where}: unsupported manifest media type")
    try:
        doc: Any = json.loads(data)
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise errdefs.InvalidArgument(f"{where}: not a JSON object")
    declared = doc.get("mediaType")
    if declared not in (None, "", desc.media_type):
        raise errdefs.InvalidArgument(
            f"{where}: media type mismatch: the document says {echo(str(declared))!r}"
        )
    out: list[Child] = []
    if is_index(desc.media_type):
        if "config" in doc or "layers" in doc:
            raise errdefs.InvalidArgument(f"{where}: an index with config or layers")
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise errdefs.InvalidArgument(f"{where}: an index without a manifests list")
        for i, raw in enumerate(entries):
            at = f"{where} manifests[{i}]"
            d = _descriptor(raw, at)
            plat = _platform(raw.get("platform"), at)
            out.append(Child(d, plat, "manifest"))
        return out
    if "manifests" in doc:
        raise errdefs.InvalidArgument(f"{where}: a manifest with a manifests list")
    config = doc.get("config")
    layers = doc.get("layers")
    if config is None or not isinstance(layers, list):
        raise errdefs.InvalidArgument(f"{where}: a manifest needs a config and a layers list")
    out.append(Child(_descriptor(config, f"{where} config"), None, "config"))
    for i, raw in enumerate(layers):
        out.append(Child(_descriptor(raw, f"{where} layers[{i}]"), None, "layer"))
    return out


def _label_stem(child: Child) -> str:
    mt = child.descriptor.media_type
    if child.role == "config" or mt in CONFIG_TYPES:
        return _GC_PREFIX + "config"
    if is_manifest(mt):
        return _GC_PREFIX + "m."
    if child.role == "layer" or mt in LAYER_TYPES:
        return _GC_PREFIX + "l."
    return _GC_PREFIX


def gc_labels(kids: Sequence[Child]) -> dict[str, str]:
    """The ``containerd.io/gc.ref.content.*`` labels for a document with *kids*:
    ``config`` for its config, ``l.<i>`` per layer, ``m.<i>`` per manifest of an index,
    numbered per stem in document order (a second config would be ``config1``, as
    containerd numbers repeated keys)."""
    counts: dict[str, int] = {}
    labels: dict[str, str] = {}
    for child in kids:
        stem = _label_stem(child)
        n = counts.get(stem, 0)
        counts[stem] = n + 1
        key = f"{stem}{n}" if n > 0 or stem.endswith(".") else stem
        labels[key] = child.descriptor.digest
    return labels


def merge_sources(existing: str, repo: str) -> str:
    """A ``distribution.source`` label value with *repo* added: sorted, without duplicates."""
    repos = {r for r in existing.split(",") if r}
    repos.add(repo)
    return ",".join(sorted(repos))


def ref_key(desc: Descriptor) -> str:
    """The ingest ref of a blob being fetched, as containerd names it (``layer-sha256:…``),
    so an interrupted download of either client resumes where it stopped."""
    mt = desc.media_type
    if is_index(mt):
        kind = "index"
    elif is_manifest(mt):
        kind = "manifest"
    elif mt in LAYER_TYPES or "layer" in mt:
        kind = "layer"
    elif mt in CONFIG_TYPES:
        kind = "config"
    else:
        kind = "unknown"
    return f"{kind}-{desc.digest}"


def source_labels(labels: Mapping[str, str], hostname: str) -> list[str]:
    """The repositories of *hostname* a blob's ``distribution.source`` label names."""
    value = labels.get(DISTRIBUTION_SOURCE + hostname, "")
    return [r for r in value.split(",") if r]
