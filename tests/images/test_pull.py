"""Pulling from a real registry (docker-registry 2.8) into ctrd and into containerd 1.6.

Every test runs against both daemons (``backend``); the image record is checked where the
daemon has an Images service (containerd; ctrd after the merge, see conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import pytest

from ctrd import errdefs
from ctrd.client import Client, host_platform
from ctrd.images import mediatypes
from ctrd.testing.registry import Registry

from .conftest import Backend, TestImages, labels_of, pull, start_backend

SRC = "containerd.io/distribution.source.127.0.0.1"
GC = "containerd.io/gc.ref.content."


def native(images: TestImages):
    """The platform manifest a default pull takes on this machine."""
    return images.arm64 if host_platform().architecture == "arm64" else images.amd64


async def test_pull_one_platform(
    client: Client, backend: Backend, registry: Registry, images: TestImages
) -> None:
    ref = f"{registry.host}/test/app:v1"
    since = registry.sync()
    async with client.lease():
        img = await pull(client, backend, ref)
        assert img.name == ref
        assert img.target.digest == images.index.digest
        assert img.target.media_type == mediatypes.OCI_INDEX
        mine = native(images)
        infos = labels_of([i async for i in client.content.list()])
        want = {images.index.digest, mine.manifest.digest, *mine.blobs}
        assert set(infos) == want
        # labels containerd writes: every manifest of the index (m.<i>), config and layers (l.<i>)
        assert infos[images.index.digest][GC + "m.0"] == images.amd64.manifest.digest
        assert infos[images.index.digest][GC + "m.1"] == images.arm64.manifest.digest
        assert infos[mine.manifest.digest][GC + "config"] == mine.config.digest
        for i, layer in enumerate(mine.layers):
            assert infos[mine.manifest.digest][f"{GC}l.{i}"] == layer.digest
        assert all(labels[SRC] == "test/app" for labels in infos.values())
        # the layer's bytes are the registry's (whiteout entry included)
        base = await client.content.read_all(mine.layers[0].digest)
        assert base == mine.layers[0].data
    got = registry.sync()
    blob_gets = registry.blob_gets(since=since)
    assert len(blob_gets) == len(mine.blobs)  # each blob once, nothing of the other platform
    assert got > since
    assert (await client.images.get(ref)).target.digest == images.index.digest


async def test_pull_all_platforms_and_named_platforms(
    client: Client, backend: Backend, registry: Registry, images: TestImages
) -> None:
    async with client.lease():
        await pull(client, backend, f"{registry.host}/test/app:v1", all_platforms=True)
        have = {i.digest async for i in client.content.list()}
        assert {images.amd64.manifest.digest, images.arm64.manifest.digest} <= have
        assert set(images.amd64.blobs) | set(images.arm64.blobs) <= have

    other = client.with_namespace(client.namespace + "-arm")
    async with other.lease():
        await pull(other, backend, f"{registry.host}/test/app:v1", platforms=["linux/arm64"])
        have = {i.digest async for i in other.content.list()}
        assert images.arm64.manifest.digest in have
        assert images.amd64.manifest.digest not in have
        with pytest.raises(errdefs.NotFound, match="no manifest for the platform"):
            await pull(other, backend, f"{registry.host}/test/app:v1", platforms=["linux/s390x"])
        with pytest.raises(errdefs.InvalidArgument, match="platform"):
            await pull(other, backend, f"{registry.host}/test/app:v1", platforms=["linux//x"])


async def test_pull_docker_media_types_and_single_manifest(
    client: Client, backend: Backend, registry: Registry, images: TestImages
) -> None:
    async with client.lease():
        img = await pull(client, backend, f"{registry.host}/test/docker:v1", platforms=["linux/amd64"])
        assert img.target.media_type == mediatypes.DOCKER_MANIFEST_LIST
        infos = labels_of([i async for i in client.content.list()])
        m = images.docker_amd64
        assert infos[m.manifest.digest][GC + "config"] == m.config.digest
        assert infos[m.manifest.digest][GC + "l.1"] == m.layers[1].digest
        assert await client.content.read_all(m.layers[1].digest) == m.layers[1].data  # uncompressed

        single = await pull(client, backend, f"{registry.host}/test/single:v1")
        assert single.target.media_type == mediatypes.OCI_MANIFEST
        assert single.target.digest == images.single.manifest.digest
        # by digest: the same manifest, recorded under the digest reference
        by_digest = f"{registry.host}/test/single@{images.single.manifest.digest}"
        again = await pull(client, backend, by_digest)
        assert again.name == by_digest
        assert again.target.digest == images.single.manifest.digest


async def test_pull_again_downloads_nothing(
    client: Client, backend: Backend, registry: Registry, images: TestImages
) -> None:
    ref = f"{registry.host}/test/app:v1"
    async with client.lease():
        await pull(client, backend, ref)
        since = registry.sync()
        await pull(client, backend, ref)
        registry.sync()
        assert registry.blob_gets(since=since) == []
        # the manifests are in the namespace: read locally, not fetched again
        assert [e for e in registry.requests("GET", "/manifests/", since=since) if e.status == 200] == []


async def test_pull_errors(client: Client, backend: Backend, registry: Registry) -> None:
    async with client.lease():
        with pytest.raises(errdefs.NotFound):
            await pull(client, backend, f"{registry.host}/test/app:nosuchtag")
        with pytest.raises(errdefs.NotFound):
            await pull(client, backend, f"{registry.host}/no/such:v1")
        with pytest.raises(errdefs.InvalidArgument, match="lowercase"):
            await pull(client, backend, f"{registry.host}/Test/App:v1")
        with pytest.raises(errdefs.Unimplemented, match="unpack"):
            await client.images.pull(f"{registry.host}/test/app:v1", unpack=True)
        with pytest.raises(errdefs.Unavailable):
            await pull(client, backend, "127.0.0.1:1/test/app:v1")
        assert [i async for i in client.content.list()] == []
        assert await client.images.list() == []


@pytest.mark.parametrize("policy", ["shared", "isolated"])
@pytest.mark.parametrize("kind", ["ctrd", pytest.param("containerd", marks=pytest.mark.interop)])
async def test_sharing_policy(kind: str, policy: str, registry: Registry, images: TestImages) -> None:
    """Under ``shared``, a second namespace pulling the same image downloads no blob at all
    (every writer opened with the expected digest is admitted at once); under
    ``isolated`` it downloads every blob again."""
    backend = start_backend(kind, policy)
    ref = f"{registry.host}/test/app:v1"
    mine = native(images)
    try:
        async with Client(backend.address, namespace="a", timeout=30) as a:
            b = a.with_namespace("b")
            async with a.lease():
                await pull(a, backend, ref)
                since = registry.sync()
                async with b.lease():
                    img = await pull(b, backend, ref)
                    registry.sync()
                    infos = labels_of([i async for i in b.content.list()])
                    assert set(infos) == {images.index.digest, mine.manifest.digest, *mine.blobs}
                    assert infos[mine.manifest.digest][GC + "config"] == mine.config.digest
                    assert infos[mine.layers[1].digest][SRC] == "test/app"
                    assert await b.content.read_all(mine.layers[0].digest) == mine.layers[0].data
            gets = registry.blob_gets(since=since)
            manifest_gets = [
                e for e in registry.requests("GET", "/manifests/", since=since) if e.status == 200
            ]
            if policy == "shared":
                assert gets == []
                assert manifest_gets == []
            else:
                assert sorted(e.path.rsplit("/", 1)[1] for e in gets) == sorted(mine.blobs)
                assert len(manifest_gets) == 2  # the index and the platform's manifest
            assert img.target.digest == images.index.digest
    finally:
        backend.proc.stop()


async def test_pull_holds_its_own_lease_until_recorded(
    client: Client, backend: Backend, registry: Registry, images: TestImages
) -> None:
    """Without a caller's lease, the pull makes one and deletes it once the image record
    holds the content (containerd's collector then keeps it through the labels)."""
    ref = f"{registry.host}/test/app:v1"
    await client.images.pull(ref)
    assert await client.leases.list() == []
    mine = native(images)
    # a deletion triggers containerd's collector: the image's tree survives it
    await client.content.ingest("junk", b"junk")
    with contextlib.suppress(errdefs.NotFound):
        await client.content.delete(hashlib_digest(b"junk"))
    await asyncio.sleep(0.3)
    have = {i.digest async for i in client.content.list()}
    assert {images.index.digest, mine.manifest.digest, *mine.blobs} <= have
    await client.images.delete(ref, sync=True)
    assert {i.digest async for i in client.content.list()} & set(mine.blobs) == set()


def hashlib_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
