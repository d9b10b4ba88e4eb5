"""A small OCI image as bytes, for tests of image records, their GC and ``ctr images``.

:func:`make_image` builds a config, ``n`` layers and a manifest naming them, and the
``containerd.io/gc.ref.content.*`` labels a fetch puts on the manifest
(``config``, ``l.<i>``). Importable from tests as ``_imagedata`` (``tests/`` is on
``sys.path``, see ``conftest.py``).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json

from ctrd.images import Descriptor, mediatypes

__all__ = ["ImageData", "make_image"]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True)
class ImageData:
    """The blobs of one image, by digest, and its manifest's descriptor."""

    manifest: bytes
    config: bytes
    layers: tuple[bytes, ...]

    @property
    def manifest_digest(self) -> str:
        return _digest(self.manifest)

    @property
    def config_digest(self) -> str:
        return _digest(self.config)

    @property
    def layer_digests(self) -> tuple[str, ...]:
        return tuple(_digest(layer) for layer in self.layers)

    @property
    def target(self) -> Descriptor:
        """The manifest's descriptor (what an image record points at)."""
        return Descriptor(mediatypes.OCI_MANIFEST, self.manifest_digest, len(self.manifest))

    @property
    def blobs(self) -> dict[str, bytes]:
        """Every blob by digest: manifest, config, layers."""
        out = {self.manifest_digest: self.manifest, self.config_digest: self.config}
        out.update(zip(self.layer_digests, self.layers, strict=True))
        return out

    @property
    def all_digests(self) -> set[str]:
        return set(self.blobs)

    @property
    def size(self) -> int:
        """Manifest, config and layers together (what ``ctr images ls`` shows as SIZE)."""
        return sum(len(b) for b in self.blobs.values())

    def manifest_labels(self) -> dict[str, str]:
        """The GC references a fetch labels the manifest with."""
        labels = {"containerd.io/gc.ref.content.config": self.config_digest}
        for i, d in enumerate(self.layer_digests):
            labels[f"containerd.io/gc.ref.content.l.{i}"] = d
        return labels


def make_image(tag: str, n_layers: int = 2, *, os_: str = "linux", arch: str = "amd64") -> ImageData:
    """A deterministic image whose blobs differ with *tag*."""
    layers = tuple(
        gzip.compress(f"layer {i} of {tag}\n".encode() * (50 + i), mtime=0) for i in range(n_layers)
    )
    diff_ids = [_digest(gzip.decompress(layer)) for layer in layers]
    config = json.dumps(
        {
            "architecture": arch,
            "os": os_,
            "config": {"Cmd": ["/bin/true"], "Labels": {"tag": tag}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [
                {"mediaType": mediatypes.OCI_LAYER_GZIP, "digest": _digest(layer), "size": len(layer)}
                for layer in layers
            ],
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    return ImageData(manifest=manifest, config=config, layers=layers)
