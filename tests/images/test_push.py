"""Pushing to a registry, and the image records (tag, list, get, delete)."""

from __future__ import annotations

import json

import pytest

from ctrd import errdefs
from ctrd.client import Client, Image
from ctrd.client._registry._push import mount_candidate
from ctrd.images import Descriptor, mediatypes
from ctrd.testing.images import digest_of
from ctrd.testing.registry import Registry

from .conftest import Backend, TestImages, pull


async def push(client: Client, backend: Backend, ref: str, image: Image) -> Descriptor:
    """``client.images.push(ref, image.name)`` (*backend* names the daemon in failures)."""
    del backend
    return await client.images.push(ref, image.name)


ACCEPTED = {
    mediatypes.OCI_INDEX,
    mediatypes.OCI_MANIFEST,
    mediatypes.DOCKER_MANIFEST,
    mediatypes.DOCKER_MANIFEST_LIST,
}


def manifest_of(registry: Registry, repo: str, ref: str) -> tuple[str, bytes]:
    import urllib.request

    req = urllib.request.Request(
        f"{registry.url}/v2/{repo}/manifests/{ref}",
        headers={"Accept": ", ".join(sorted(ACCEPTED))},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers["Docker-Content-Digest"], resp.read()


async def test_push_to_another_repo(
    client: Client, backend: Backend, registry: Registry, images: TestImages
) -> None:
    async with client.lease():
        img = await pull(client, backend, f"{registry.host}/test/app:v1", all_platforms=True)
        since = registry.sync()
        repo = f"copy-{backend.kind}/app"
        desc = await push(client, backend, f"{registry.host}/{repo}:v2", img)
        assert desc.digest == images.index.digest
        registry.sync()
        # every blob came from test/app (its distribution.source label): mounted, not uploaded
        mounts = registry.requests("POST", f"/{repo}/blobs/uploads/", since=since)
        assert mounts, registry.requests(since=since)
        assert all(
            "mount=" in e.uri and "from=test/app" in e.uri.replace("%2F", "/") and e.status == 201
            for e in mounts
        )
        assert registry.requests("PUT", "/blobs/", since=since) == []
        assert registry.requests("PATCH", since=since) == []
        puts = [e.path for e in registry.requests("PUT", "/manifests/", since=since)]
        # the platform manifests by digest, then the index under the tag, last
        assert puts[-1] == f"/v2/{repo}/manifests/v2"
        assert sorted(puts[:-1]) == sorted(
            f"/v2/{repo}/manifests/{d}" for d in (images.amd64.manifest.digest, images.arm64.manifest.digest)
        )
        got_digest, body = manifest_of(registry, repo, "v2")
        assert got_digest == images.index.digest
        assert json.loads(body)["manifests"][0]["digest"] == images.amd64.manifest.digest

        # again: everything is there, only HEADs and the tag
        since = registry.sync()
        await push(client, backend, f"{registry.host}/{repo}:v3", img)
        registry.sync()
        assert registry.requests("POST", since=since) == []
        assert [e.path for e in registry.requests("PUT", since=since)] == [f"/v2/{repo}/manifests/v3"]


async def test_push_uploads_what_has_no_source(client: Client, backend: Backend, registry: Registry) -> None:
    """Content made locally (no distribution.source label) is uploaded: POST then PUT."""
    layer = b"local layer bytes" * 1000
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    async with client.lease():
        await client.content.ingest("l", layer)
        await client.content.ingest("c", config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mediatypes.OCI_MANIFEST,
                "config": {
                    "mediaType": mediatypes.OCI_CONFIG,
                    "digest": digest_of(config),
                    "size": len(config),
                },
                "layers": [
                    {"mediaType": mediatypes.OCI_LAYER, "digest": digest_of(layer), "size": len(layer)}
                ],
            }
        ).encode()
        await client.content.ingest("m", manifest)
        target = Descriptor(mediatypes.OCI_MANIFEST, digest_of(manifest), len(manifest))
        image = Image(name="local/thing:v1", target=target)
        image = await client.images.create(image)
        repo = f"local-{backend.kind}/thing"
        since = registry.sync()
        await push(client, backend, f"{registry.host}/{repo}:v1", image)
        registry.sync()
        uploads = registry.requests("POST", f"/{repo}/blobs/uploads/", since=since)
        assert [e.status for e in uploads] == [202, 202]
        assert all("mount=" not in e.uri for e in uploads)
        assert (
            len([e for e in registry.requests("PUT", "/blobs/uploads/", since=since) if e.status == 201]) == 2
        )
        assert manifest_of(registry, repo, "v1")[0] == target.digest


async def test_push_missing_content(client: Client, backend: Backend, registry: Registry) -> None:
    """An index pulled for one platform cannot be pushed: its other manifests are missing."""
    async with client.lease():
        img = await pull(client, backend, f"{registry.host}/test/app:v1")
        with pytest.raises(errdefs.NotFound, match="all_platforms"):
            await push(client, backend, f"{registry.host}/partial/app:v1", img)


def test_mount_candidate() -> None:
    assert mount_candidate("a/b/c", ["x/y", "a/b/d", "a/z"]) == "a/b/d"
    assert mount_candidate("a/b", ["a/b"]) == ""
    assert mount_candidate("a/b", []) == ""


# -- records (need an Images service) ------------------------------------------------------------


async def test_tag_list_get_delete(images_client: Client, registry: Registry, images: TestImages) -> None:
    c = images_client
    ref = f"{registry.host}/test/single:v1"
    pulled = await c.images.pull(ref, labels={"origin": "test"})
    assert dict(pulled.labels) == {"origin": "test"}
    got = await c.images.get(ref)
    assert got.target == pulled.target
    assert got.created_at <= got.updated_at

    tagged = await c.images.tag(ref, "local/alias:1")
    assert tagged.target == pulled.target
    assert dict(tagged.labels) == {"origin": "test"}
    with pytest.raises(errdefs.AlreadyExists):
        await c.images.tag(ref, "local/alias:1")
    other = await c.images.pull(f"{registry.host}/test/app:v1")
    moved = await c.images.tag(other.name, "local/alias:1", force=True)
    assert moved.target.digest == images.index.digest

    names = [i.name for i in await c.images.list()]
    assert names == sorted([ref, "local/alias:1", other.name])
    assert [i.name for i in await c.images.list("name==local/alias:1")] == ["local/alias:1"]
    assert [i.name for i in await c.images.list(f"target.mediatype=={mediatypes.OCI_INDEX}")] == sorted(
        ["local/alias:1", other.name]
    )
    # pulling again updates the record (Create, then Update on ALREADY_EXISTS)
    again = await c.images.pull(ref, labels={"origin": "again"})
    assert dict(again.labels) == {"origin": "again"}
    assert again.created_at == got.created_at

    await c.images.delete("local/alias:1", sync=True)
    with pytest.raises(errdefs.NotFound):
        await c.images.get("local/alias:1")
    with pytest.raises(errdefs.NotFound):
        await c.images.delete("local/alias:1")
    with pytest.raises(errdefs.NotFound):
        await c.images.tag("no/such:image", "x:y")


async def test_push_by_record(images_client: Client, registry: Registry, images: TestImages) -> None:
    c = images_client
    await c.images.pull(f"{registry.host}/test/docker:v1", all_platforms=True)
    await c.images.tag(f"{registry.host}/test/docker:v1", f"{registry.host}/pushed/docker:latest")
    desc = await c.images.push(f"{registry.host}/pushed/docker")  # the record named as the ref, normalised
    assert desc.digest == images.docker_list.digest
    assert manifest_of(registry, "pushed/docker", "latest")[0] == images.docker_list.digest
    with pytest.raises(errdefs.NotFound):
        await c.images.push(f"{registry.host}/pushed/none:v1")
