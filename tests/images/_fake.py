"""A registry that lies, on aiohttp: for the tests of what the client refuses.

Manifests and blobs are served from dicts; each entry can lie about its digest, size or
media type, and the server can answer with a fixed status, fail the first requests,
stall, or cut a body short. :attr:`FakeRegistry.log` records (method, path, Range).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from typing import Any

from aiohttp import web

from ctrd.images import Descriptor, mediatypes


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class Entry:
    body: bytes
    content_type: str = "application/octet-stream"
    digest_header: str | None = None  # None: the body's digest
    content_length: int | None = None  # None: the body's length
    cut_after: int | None = None  # send this many bytes, then drop the connection
    cut_times: int = 0  # how many requests are cut (then served whole); -1: all
    ranges: bool = True  # honour Range


class FakeRegistry:
    def __init__(self) -> None:
        self.manifests: dict[str, Entry] = {}
        self.blobs: dict[str, Entry] = {}
        self.log: list[tuple[str, str, str]] = []
        self.status: int | None = None  # answer every /v2/<name>/ request with this
        self.fail_first = 0  # answer the first n /v2/<name>/ requests with 503
        self.stall = 0.0  # seconds to sleep before answering /v2/<name>/ requests
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- content ----------------------------------------------------------------------------------

    def add_blob(self, data: bytes, **kw: Any) -> Descriptor:
        self.blobs[sha(data)] = Entry(data, **kw)
        return Descriptor(mediatypes.OCI_LAYER, sha(data), len(data))

    def add_manifest(self, ref: str, doc: dict[str, Any] | bytes, media_type: str, **kw: Any) -> Descriptor:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        entry = Entry(body, content_type=media_type, **kw)
        self.manifests[ref] = entry
        self.manifests[sha(body)] = entry
        return Descriptor(media_type, sha(body), len(body))

    def image(self, tag: str, layers: list[bytes], *, layer_type: str = mediatypes.OCI_LAYER) -> Descriptor:
        """A simple OCI image (a config and *layers*) under *tag*."""
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        self.add_blob(config)
        for layer in layers:
            self.add_blob(layer)
        doc = {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": layer_type, "digest": sha(x), "size": len(x)} for x in layers],
        }
        return self.add_manifest(tag, doc, mediatypes.OCI_MANIFEST)

    # -- serving ----------------------------------------------------------------------------------

    async def _serve(self, request: web.Request, entry: Entry | None) -> web.StreamResponse:
        if entry is None:
            return web.json_response(
                {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]}, status=404
            )
        body = entry.body
        start = 0
        status = 200
        headers = {
            "Content-Type": entry.content_type,
            "Docker-Content-Digest": entry.digest_header or sha(body),
        }
        rng = request.headers.get("Range", "")
        if rng and entry.ranges:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        part = body[start:]
        length = entry.content_length if entry.content_length is not None else len(part)
        headers["Content-Length"] = str(length)
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        if entry.cut_after is not None and entry.cut_times != 0:
            entry.cut_times -= 1
            await resp.write(part[: entry.cut_after])
            assert request.transport is not None
            request.transport.abort()
            return resp
        await resp.write(part[:length] if entry.content_length is not None else part)
        await resp.write_eof()
        return resp

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.log.append((request.method, path, request.headers.get("Range", "")))
        if path in ("/v2", "/v2/"):
            return web.json_response({})
        if self.stall:
            await asyncio.sleep(self.stall)
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.json_response({"errors": [{"code": "UNAVAILABLE", "message": "busy"}]}, status=503)
        if self.status is not None:
            code = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN"}.get(self.status, "UNKNOWN")
            return web.json_response(
                {"errors": [{"code": code, "message": f"status {self.status}"}]}, status=self.status
            )
        _, _, rest = path.partition("/v2/")
        if "/manifests/" in rest:
            ref = rest.rsplit("/manifests/", 1)[1]
            return await self._serve(request, self.manifests.get(ref))
        if "/blobs/" in rest:
            dgst = rest.rsplit("/blobs/", 1)[1]
            return await self._serve(request, self.blobs.get(dgst))
        return web.json_response({}, status=404)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def count(self, method: str, contains: str) -> int:
        return sum(1 for m, p, _ in self.log if m == method and contains in p)
