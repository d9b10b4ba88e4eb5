"""Tar archives for the import tests: ``docker save`` archives (v1.2: ``<id>/layer.tar``,
``<config hex>.json``, ``manifest.json``, ``repositories``, links for repeated layers), OCI
layouts written by hand, and hostile entries."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence

from ctrd.images import mediatypes

__all__ = ["DockerImage", "Member", "docker_save", "make_tar", "oci_layout"]


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class Member:
    """One tar entry: a file (*data*), a directory, a link (*link*), or another *type*."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    link: str = ""
    pax: dict[str, str] | None = None


def make_tar(members: Sequence[Member], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = m.type
            info.linkname = m.link
            info.mtime = 1_600_000_000
            info.mode = 0o755 if m.type == tarfile.DIRTYPE else 0o644
            if m.pax:
                info.pax_headers = dict(m.pax)
            if m.type == tarfile.REGTYPE:
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


@dataclasses.dataclass
class DockerImage:
    """An image as ``docker save`` writes it: *layers* are uncompressed (or gzip'd) tars."""

    tags: list[str]
    layers: list[bytes]
    os: str = "linux"
    architecture: str = "amd64"

    @property
    def config(self) -> bytes:
        doc = {
            "architecture": self.architecture,
            "os": self.os,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + _hex(x) for x in self.layers]},
            "config": {"Cmd": ["/bin/sh"]},
        }
        return json.dumps(doc, sort_keys=True).encode()

    @property
    def config_digest(self) -> str:
        return "sha256:" + _hex(self.config)

    def manifest(self) -> bytes:
        """The Docker schema 2 manifest containerd's importer builds for this image."""
        layer_types = [
            mediatypes.DOCKER_LAYER_GZIP if x[:3] == b"\x1f\x8b\x08" else mediatypes.DOCKER_LAYER
            for x in self.layers
        ]
        doc = {
            "schemaVersion": 2,
            "mediaType": mediatypes.DOCKER_MANIFEST,
            "config": {
                "mediaType": mediatypes.DOCKER_CONFIG,
                "digest": self.config_digest,
                "size": len(self.config),
            },
            "layers": [
                {"mediaType": mt, "digest": "sha256:" + _hex(x), "size": len(x)}
                for mt, x in zip(layer_types, self.layers, strict=True)
            ],
        }
        return json.dumps(doc, separators=(",", ":")).encode()


def docker_save(images: Sequence[DockerImage], *, links: bool = True) -> bytes:
    """A v1.2 ``docker save`` archive of *images*; a layer seen before is a symbolic link
    to its first copy (as Docker writes repeated layers) when *links*."""
    members: list[Member] = []
    manifest = []
    repositories: dict[str, dict[str, str]] = {}
    first: dict[str, str] = {}
    for n, img in enumerate(images):
        paths = []
        for i, layer in enumerate(img.layers):
            layer_id = hashlib.sha256(f"{n}/{i}".encode() + layer).hexdigest()
            path = f"{layer_id}/layer.tar"
            members.append(Member(f"{layer_id}", type=tarfile.DIRTYPE))
            members.append(Member(f"{layer_id}/VERSION", b"1.0"))
            members.append(Member(f"{layer_id}/json", json.dumps({"id": layer_id}).encode()))
            key = _hex(layer)
            if links and key in first:
                members.append(Member(path, type=tarfile.SYMTYPE, link=f"../{first[key]}"))
            else:
                first.setdefault(key, path)
                members.append(Member(path, layer))
            paths.append(path)
        config_name = img.config_digest[7:] + ".json"
        members.append(Member(config_name, img.config))
        manifest.append({"Config": config_name, "RepoTags": img.tags or None, "Layers": paths})
        for tag in img.tags:
            repo, _, t = tag.rpartition(":")
            repositories.setdefault(repo, {})[t] = paths[-1].split("/")[0] if paths else ""
    members.append(Member("manifest.json", json.dumps(manifest).encode()))
    members.append(Member("repositories", json.dumps(repositories).encode()))
    return make_tar(members)


def oci_layout(
    blobs: Sequence[bytes], index_entries: Sequence[dict[str, object]], *, extra: Sequence[Member] = ()
) -> bytes:
    """An OCI layout tar: ``oci-layout``, ``index.json`` with *index_entries*, the blobs."""
    members = [Member("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')]
    members.append(
        Member("index.json", json.dumps({"schemaVersion": 2, "manifests": list(index_entries)}).encode())
    )
    members += [Member(f"blobs/sha256/{_hex(b)}", b) for b in blobs]
    members += list(extra)
    return make_tar(members)
