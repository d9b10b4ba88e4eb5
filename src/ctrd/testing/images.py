"""Test images, built in memory and pushed to a registry with plain HTTP (no SDK involved).

::

    builder = ImageBuilder(registry.url)
    layer = tar_layer({"etc/hello": b"hi\\n"}, whiteouts=["foo"])      # a .wh.foo entry
    img = builder.push_image("test/app", "v1", [gzip_layer(layer)], oci=True)
    idx = builder.push_index("test/app", "multi", [img, other])       # platforms from the images

Layers are tar archives (optionally gzip'd, with a fixed mtime so the bytes are
reproducible); configs carry the layers' diff IDs; manifests and indexes are OCI or
Docker schema 2. Uploads are ``POST`` + monolithic ``PUT``, as a client would.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import io
import json
import ssl
import tarfile
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

from ctrd.images import Descriptor, mediatypes

__all__ = ["ImageBuilder", "Layer", "PushedImage", "digest_of", "gzip_layer", "raw_layer", "tar_layer"]

_MTIME: Final = 1_600_000_000


def digest_of(data: bytes) -> str:
    """``sha256:<hex>`` of *data*."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Layer:
    """A layer's bytes as pushed, its media type, and the digest of its uncompressed tar."""

    data: bytes
    media_type: str
    diff_id: str

    @property
    def digest(self) -> str:
        return digest_of(self.data)


def tar_layer(
    files: Mapping[str, bytes], *, whiteouts: Sequence[str] = (), dirs: Sequence[str] = ()
) -> bytes:
    """A tar of *files* (path -> content), *dirs*, and a whiteout entry ``.wh.<name>`` per
    *whiteouts* name (an empty file, as OCI layers mark deletions)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _MTIME
            tar.addfile(info)
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, _MTIME
            tar.addfile(info, io.BytesIO(content))
        for name in whiteouts:
            head, _, tail = name.rpartition("/")
            info = tarfile.TarInfo(f"{head}/.wh.{tail}" if head else f".wh.{tail}")
            info.size, info.mode, info.mtime = 0, 0o644, _MTIME
            tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def gzip_layer(tar: bytes, *, oci: bool = True) -> Layer:
    """*tar* gzip'd (reproducibly) as an OCI or Docker layer."""
    data = gzip.compress(tar, compresslevel=6, mtime=0)
    return Layer(data, mediatypes.OCI_LAYER_GZIP if oci else mediatypes.DOCKER_LAYER_GZIP, digest_of(tar))


def raw_layer(tar: bytes, *, oci: bool = True) -> Layer:
    """*tar* uncompressed as an OCI or Docker layer."""
    return Layer(tar, mediatypes.OCI_LAYER if oci else mediatypes.DOCKER_LAYER, digest_of(tar))


@dataclasses.dataclass(frozen=True, slots=True)
class PushedImage:
    """What :meth:`ImageBuilder.push_image` pushed."""

    repo: str
    tag: str
    manifest: Descriptor
    manifest_bytes: bytes
    config: Descriptor
    config_bytes: bytes
    layers: tuple[Layer, ...]
    platform: tuple[str, str, str]

    @property
    def blobs(self) -> list[str]:
        """Digests of the config and the layers."""
        return [self.config.digest, *(layer.digest for layer in self.layers)]


class ImageBuilder:
    """Pushes blobs, manifests and indexes to the registry at *base_url* (``http://host:port``).

    :param authorization: an ``Authorization`` header value sent with every request.
    :param cafile: a CA file for HTTPS.
    """

    def __init__(self, base_url: str, *, authorization: str | None = None, cafile: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.authorization = authorization
        self._ssl = ssl.create_default_context(cafile=cafile) if cafile else None

    def _request(
        self, method: str, url: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        parts = urlsplit(urljoin(self.base_url + "/", url))
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.netloc, timeout=30, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(parts.netloc, timeout=30)
        send = dict(headers or {})
        if self.authorization:
            send["Authorization"] = self.authorization
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(method, target, body=body, headers=send)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def push_blob(self, repo: str, data: bytes, media_type: str = "application/octet-stream") -> Descriptor:
        """Upload *data* to *repo* (``POST`` then ``PUT``) unless it is there already."""
        dgst = digest_of(data)
        status, _, _ = self._request("HEAD", f"/v2/{repo}/blobs/{dgst}")
        if status != 200:
            status, headers, body = self._request("POST", f"/v2/{repo}/blobs/uploads/")
            if status != 202:
                raise RuntimeError(f"POST upload to {repo}: {status} {body[:200]!r}")
            location = headers["location"]
            sep = "&" if "?" in location else "?"
            status, _, body = self._request(
                "PUT",
                f"{location}{sep}digest={dgst}",
                data,
                {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
            )
            if status != 201:
                raise RuntimeError(f"PUT blob {dgst} to {repo}: {status} {body[:200]!r}")
        return Descriptor(media_type=media_type, digest=dgst, size=len(data))

    def push_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> Descriptor:
        """``PUT /v2/<repo>/manifests/<ref>`` (a tag or the digest)."""
        status, _, body = self._request(
            "PUT", f"/v2/{repo}/manifests/{ref}", data, {"Content-Type": media_type}
        )
        if status != 201:
            raise RuntimeError(f"PUT manifest {ref} to {repo}: {status} {body[:300]!r}")
        return Descriptor(media_type=media_type, digest=digest_of(data), size=len(data))

    def push_image(
        self,
        repo: str,
        tag: str | None,
        layers: Sequence[Layer],
        *,
        oci: bool = True,
        platform: tuple[str, str, str] = ("linux", "amd64", ""),
        config_extra: Mapping[str, Any] | None = None,
    ) -> PushedImage:
        """Push *layers*, a config naming their diff IDs, and a manifest (under *tag*, or by
        digest when ``None``)."""
        os_name, arch, variant = platform
        config_doc: dict[str, Any] = {
            "architecture": arch,
            "os": os_name,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "config": {"Cmd": ["/bin/sh"]},
            **(config_extra or {}),
        }
        if variant:
            config_doc["variant"] = variant
        config_bytes = json.dumps(config_doc, sort_keys=True).encode()
        config_type = mediatypes.OCI_CONFIG if oci else mediatypes.DOCKER_CONFIG
        config = self.push_blob(repo, config_bytes, config_type)
        for layer in layers:
            self.push_blob(repo, layer.data, layer.media_type)
        manifest_type = mediatypes.OCI_MANIFEST if oci else mediatypes.DOCKER_MANIFEST
        doc = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": x.media_type, "digest": x.digest, "size": len(x.data)} for x in layers],
        }
        data = json.dumps(doc, indent=2).encode()
        manifest = self.push_manifest(repo, tag or digest_of(data), data, manifest_type)
        return PushedImage(repo, tag or "", manifest, data, config, config_bytes, tuple(layers), platform)

    def push_index(
        self, repo: str, tag: str, images: Sequence[PushedImage], *, oci: bool = True
    ) -> Descriptor:
        """Push an index (OCI) or manifest list (Docker) of *images* (already in *repo*) under *tag*."""
        index_type = mediatypes.OCI_INDEX if oci else mediatypes.DOCKER_MANIFEST_LIST
        entries = []
        for img in images:
            os_name, arch, variant = img.platform
            plat = {"architecture": arch, "os": os_name, **({"variant": variant} if variant else {})}
            entries.append(
                {
                    "mediaType": img.manifest.media_type,
                    "digest": img.manifest.digest,
                    "size": img.manifest.size,
                    "platform": plat,
                }
            )
        data = json.dumps(
            {"schemaVersion": 2, "mediaType": index_type, "manifests": entries}, indent=2
        ).encode()
        return self.push_manifest(repo, tag, data, index_type)
