"""The progress of pulls and pushes (``BlobProgress`` events), and what an image's content
amounts to (``size``, ``platforms``, ``check``), against ctrd and containerd 1.6."""

from __future__ import annotations

import collections
from typing import Any

import pytest

from ctrd import errdefs
from ctrd.client import BlobProgress, Client, Platform, host_platform
from ctrd.testing.registry import Registry

from .conftest import Backend, TestImages, pull


def native(images: TestImages) -> Any:
    return images.arm64 if host_platform().architecture == "arm64" else images.amd64


def by_digest(events: list[BlobProgress]) -> dict[str, list[BlobProgress]]:
    out: dict[str, list[BlobProgress]] = collections.defaultdict(list)
    for e in events:
        out[e.descriptor.digest].append(e)
    return out


async def test_pull_and_push_progress(
    client: Client, backend: Backend, registry: Registry, images: TestImages
) -> None:
    ref = f"{registry.host}/test/app:v1"
    mine = native(images)
    events: list[BlobProgress] = []
    async with client.lease():
        await pull(client, backend, ref, progress=events.append)
        steps = by_digest(events)
        assert set(steps) == {images.index.digest, mine.manifest.digest, *mine.blobs}
        for dgst, seq in steps.items():
            assert seq[0].status == "waiting"
            assert seq[-1].status == "done", dgst
            assert seq[-1].offset == seq[-1].descriptor.size
            assert all(e.status in ("waiting", "downloading") for e in seq[:-1])
            offsets = [e.offset for e in seq if e.status == "downloading"]
            assert offsets == sorted(offsets)
        big = max(mine.layers, key=lambda x: len(x.data))
        assert len([e for e in steps[big.digest] if e.status == "downloading"]) >= 4  # per MiB
        assert steps[big.digest][-1].ref == f"layer-{big.digest}"
        assert steps[images.index.digest][-1].ref == f"index-{images.index.digest}"

        # again: everything is there
        events.clear()
        await pull(client, backend, ref, progress=events.append)
        assert {e.status for e in events if e.final} == {"exists"}

        # another namespace: admitted from the daemon's store (the backends share content)
        other = client.with_namespace(client.namespace + "-o")
        events.clear()
        async with other.lease():
            await pull(other, backend, ref, progress=events.append)
        finals = {e.descriptor.digest: e.status for e in events if e.final}
        assert set(finals.values()) == {"shared"}

        # push to another repository of the registry: blobs mounted, manifests uploaded
        await pull(client, backend, ref, all_platforms=True)
        everything = {*images.amd64.blobs, *images.arm64.blobs}
        manifests = {images.amd64.manifest.digest, images.arm64.manifest.digest}
        events.clear()
        await client.images.push(f"{registry.host}/copy/{client.namespace}:v1", ref, progress=events.append)
        finals = {e.descriptor.digest: e.status for e in events if e.final}
        assert {finals[d] for d in everything} == {"mounted"}
        assert {finals[d] for d in manifests | {images.index.digest}} == {"done"}
        events.clear()
        await client.images.push(f"{registry.host}/copy/{client.namespace}:v1", ref, progress=events.append)
        finals = {e.descriptor.digest: e.status for e in events if e.final}
        assert {finals[d] for d in everything | manifests} == {"exists"}
        assert finals[images.index.digest] == "done"  # the tag is put again


async def test_size_platforms_check(
    images_client: Client, images_backend: Backend, registry: Registry, images: TestImages
) -> None:
    c = images_client
    ref = f"{registry.host}/test/app:v1"
    mine = native(images)
    async with c.lease():
        img = await c.images.pull(ref)
        want = (
            images.index.size + mine.manifest.size + mine.config.size + sum(len(x.data) for x in mine.layers)
        )
        assert await c.images.size(ref) == want
        assert await c.images.size(img) == want
        assert await c.images.platforms(ref) == [Platform("linux", "amd64"), Platform("linux", "arm64", "v8")]
        check = await c.images.check(ref)
        n = len(mine.blobs)
        assert check.status == f"complete ({n}/{n})"
        assert check.complete
        assert check.required_size == check.present_size == want - images.index.size - mine.manifest.size

        # the other platform's manifest is not there: size fails, check says unavailable
        other = "linux/arm64" if mine is images.amd64 else "linux/amd64"
        with pytest.raises(errdefs.NotFound):
            await c.images.size(ref, other)
        assert (await c.images.check(ref, other)).status == "unavailable (0/?)"

        await c.content.delete(mine.layers[1].digest)
        check = await c.images.check(ref)
        assert check.status == f"incomplete ({n - 1}/{n})"
        assert [d.digest for d in check.missing] == [mine.layers[1].digest]

        single = await c.images.pull(f"{registry.host}/test/single:v1")
        assert await c.images.platforms(single) == [Platform("linux", "amd64")]
        with pytest.raises(errdefs.NotFound):
            await c.images.check("no/such:image")
