"""Registries that lie or fail: every case is a precise errdefs error, nothing wrong is
committed, no image record names missing content; retries only where they help."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ctrd import errdefs
from ctrd.client import Client, RegistryOptions
from ctrd.client._registry._manifests import MAX_MANIFEST_SIZE, ref_key
from ctrd.images import Descriptor, mediatypes

from ._fake import FakeRegistry, sha
from .conftest import Backend, pull

FAST = RegistryOptions(retries=2, read_timeout=5)


@pytest.fixture
async def fake() -> AsyncIterator[FakeRegistry]:
    reg = FakeRegistry()
    await reg.start()
    try:
        yield reg
    finally:
        await reg.stop()


async def nothing_left(client: Client, backend: Backend, *, but: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """No blob but *but*, no ingest, no image record."""
    assert {i.digest async for i in client.content.list()} <= but
    assert await client.content.list_statuses() == []
    assert await client.images.list() == []


async def test_layer_with_wrong_digest(client: Client, backend: Backend, fake: FakeRegistry) -> None:
    good, bad = b"the real layer" * 100, b"the fake layer" * 100
    desc = fake.image("v1", [good])
    fake.blobs[sha(good)].body = bad  # same size, other bytes
    async with client.lease():
        with pytest.raises(errdefs.DataLoss, match=sha(good)):
            await pull(client, backend, f"{fake.host}/x/y:v1", registry=FAST)
        have = {i.digest async for i in client.content.list()}
        assert sha(good) not in have
        assert sha(bad) not in have
        await nothing_left(client, backend, but=have)
        assert desc.digest in have or not have  # manifests are verified before they are written


@pytest.mark.parametrize("delta", [+7, -7])
async def test_layer_with_wrong_size(
    client: Client, backend: Backend, fake: FakeRegistry, delta: int
) -> None:
    layer = os.urandom(3000)
    fake.image("v1", [layer])
    entry = fake.blobs[sha(layer)]
    entry.body = layer + b"x" * 7 if delta > 0 else layer[:-7]
    async with client.lease():
        with pytest.raises(errdefs.DataLoss, match="more than" if delta > 0 else "truncated"):
            await pull(client, backend, f"{fake.host}/x/y:v1", registry=FAST)
        have = {i.digest async for i in client.content.list()}
        assert sha(layer) not in have
        await nothing_left(client, backend, but=have)


async def test_manifest_lies(client: Client, backend: Backend, fake: FakeRegistry) -> None:
    fake.image("v1", [b"layer"])
    async with client.lease():
        # a digest header that the bytes do not have
        fake.manifests["v1"].digest_header = "sha256:" + "0" * 64
        fake.manifests["sha256:" + "0" * 64] = fake.manifests["v1"]
        with pytest.raises(errdefs.DataLoss, match="digest mismatch"):
            await pull(client, backend, f"{fake.host}/x/y:v1", registry=FAST)
        # not a manifest at all
        fake.add_manifest("html", b"<html>hello</html>", "text/html")
        with pytest.raises(errdefs.InvalidArgument, match="unsupported media type 'text/html'"):
            await pull(client, backend, f"{fake.host}/x/y:html", registry=FAST)
        # announced as an index, is a manifest
        doc = json.loads(fake.manifests["v1"].body)
        fake.add_manifest("mixed", doc, mediatypes.OCI_INDEX)
        with pytest.raises(errdefs.InvalidArgument, match="media type mismatch"):
            await pull(client, backend, f"{fake.host}/x/y:mixed", registry=FAST)
        # schema 1
        fake.add_manifest(
            "old", {"schemaVersion": 1}, "application/vnd.docker.distribution.manifest.v1+prettyjws"
        )
        with pytest.raises(errdefs.Unimplemented, match="schema 1"):
            await pull(client, backend, f"{fake.host}/x/y:old", registry=FAST)
        # broken JSON in a manifest of the right type
        fake.add_manifest("broken", b"{not json", mediatypes.OCI_MANIFEST)
        with pytest.raises(errdefs.InvalidArgument, match="not valid JSON"):
            await pull(client, backend, f"{fake.host}/x/y:broken", registry=FAST)
        await nothing_left(client, backend)


async def test_oversize_manifest(client: Client, backend: Backend, fake: FakeRegistry) -> None:
    big = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_INDEX,
        "manifests": [],
        "pad": "x" * MAX_MANIFEST_SIZE,
    }
    fake.add_manifest("big", big, mediatypes.OCI_INDEX)
    exact = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []}
    body = json.dumps(exact).encode()
    exact["pad"] = "x" * (MAX_MANIFEST_SIZE - len(body) - len(', "pad": ""'))
    at_limit = fake.add_manifest("limit", exact, mediatypes.OCI_INDEX)
    assert at_limit.size == MAX_MANIFEST_SIZE
    async with client.lease():
        with pytest.raises(errdefs.ResourceExhausted, match=f"limit is {MAX_MANIFEST_SIZE} bytes"):
            await pull(client, backend, f"{fake.host}/x/y:big", registry=FAST)
        # no Content-Length on the HEAD: the GET is cut at the limit
        fake.manifests["big"].digest_header = ""
        await nothing_left(client, backend)
        img = await pull(client, backend, f"{fake.host}/x/y:limit", registry=FAST, all_platforms=True)
        assert img.target.size == MAX_MANIFEST_SIZE
    # a child manifest over the limit is refused before it is fetched
    child = Descriptor(mediatypes.OCI_MANIFEST, "sha256:" + "1" * 64, MAX_MANIFEST_SIZE + 1)
    index = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_INDEX,
        "manifests": [{"mediaType": child.media_type, "digest": child.digest, "size": child.size}],
    }
    fake.add_manifest("bigchild", index, mediatypes.OCI_INDEX)
    other = client.with_namespace(client.namespace + "-child")
    async with other.lease():
        with pytest.raises(errdefs.ResourceExhausted):
            await pull(other, backend, f"{fake.host}/x/y:bigchild", registry=FAST, all_platforms=True)
    assert fake.count("GET", child.digest) == 0


async def test_index_referencing_itself(client: Client, backend: Backend, fake: FakeRegistry) -> None:
    """An index naming its own digest cannot hash to it: the registry must claim a digest
    the bytes do not have, and the digest check refuses it before anything is written."""
    claimed = "sha256:" + "a" * 64
    doc = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_INDEX,
        "manifests": [{"mediaType": mediatypes.OCI_INDEX, "digest": claimed, "size": 200}],
    }
    fake.add_manifest("self", doc, mediatypes.OCI_INDEX, digest_header=claimed)
    fake.manifests[claimed] = fake.manifests["self"]
    async with client.lease():
        with pytest.raises(errdefs.DataLoss, match="digest mismatch"):
            await pull(client, backend, f"{fake.host}/x/y:self", registry=FAST, all_platforms=True)
        await nothing_left(client, backend)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, errdefs.PermissionDenied),
        (403, errdefs.PermissionDenied),
        (404, errdefs.NotFound),
        (500, errdefs.Unavailable),
        (400, errdefs.InvalidArgument),
    ],
)
async def test_error_statuses(
    client: Client, backend: Backend, fake: FakeRegistry, status: int, error: type[errdefs.Error]
) -> None:
    fake.image("v1", [b"layer"])
    fake.status = status
    async with client.lease():
        with pytest.raises(error, match=str(status)):
            await pull(client, backend, f"{fake.host}/x/y:v1", registry=FAST)
        await nothing_left(client, backend)
    heads = fake.count("HEAD", "/manifests/v1")
    assert heads == (FAST.retries + 1 if status == 500 else 1)  # only a 5xx is retried


async def test_retries_help_with_5xx_and_resets(client: Client, backend: Backend, fake: FakeRegistry) -> None:
    layer = os.urandom(3 << 20)
    fake.image("v1", [layer])
    fake.fail_first = 2  # 503, 503, then fine
    entry = fake.blobs[sha(layer)]
    entry.cut_after, entry.cut_times = 1 << 20, 1  # the first download is cut after 1 MiB
    async with client.lease():
        img = await pull(client, backend, f"{fake.host}/x/y:v1", registry=FAST)
        assert await client.content.read_all(sha(layer)) == layer
        assert img.target.media_type == mediatypes.OCI_MANIFEST
    ranges = [r for m, p, r in fake.log if m == "GET" and sha(layer) in p]
    assert ranges[0] == ""
    assert ranges[1].startswith("bytes=")
    assert int(ranges[1][6:].rstrip("-")) >= 1 << 20  # resumed, not restarted


async def test_interrupted_download_resumes_on_the_next_pull(
    client: Client, backend: Backend, fake: FakeRegistry
) -> None:
    layer = os.urandom(4 << 20)
    fake.image("v1", [layer])
    entry = fake.blobs[sha(layer)]
    entry.cut_after, entry.cut_times = 2 << 20, -1  # every download is cut after 2 MiB
    ref = f"{fake.host}/x/y:v1"
    async with client.lease():
        with pytest.raises(errdefs.Unavailable, match="pulling again resumes"):
            await pull(client, backend, ref, registry=RegistryOptions(retries=0))
        desc = Descriptor(mediatypes.OCI_LAYER, sha(layer), len(layer))
        st = await client.content.status(ref_key(desc))
        assert st.offset >= 1 << 20
        held = st.offset
        entry.cut_times = 0  # the registry recovers
        await pull(client, backend, ref, registry=RegistryOptions(retries=0))
        assert await client.content.read_all(sha(layer)) == layer
        assert await client.content.list_statuses() == []
    gets = [r for m, p, r in fake.log if m == "GET" and sha(layer) in p]
    assert gets[-1] == f"bytes={held}-"


async def test_a_resumed_ingest_with_bad_bytes_is_downloaded_again(
    client: Client, backend: Backend, fake: FakeRegistry
) -> None:
    layer = os.urandom(1 << 20)
    fake.image("v1", [layer])
    desc = Descriptor(mediatypes.OCI_LAYER, sha(layer), len(layer))
    async with client.lease():
        async with client.content.writer(ref_key(desc), total=len(layer), expected=sha(layer)) as w:
            await w.write(b"garbage!" * 1000)  # an earlier writer left wrong bytes
        await pull(client, backend, f"{fake.host}/x/y:v1", registry=FAST)
        assert await client.content.read_all(sha(layer)) == layer


async def test_a_stalled_registry_times_out(client: Client, backend: Backend, fake: FakeRegistry) -> None:
    fake.image("v1", [b"layer"])
    fake.stall = 3.0
    async with client.lease():
        with pytest.raises(errdefs.DeadlineExceeded, match="timed out"):
            await pull(
                client, backend, f"{fake.host}/x/y:v1", registry=RegistryOptions(retries=0, read_timeout=0.3)
            )
        await nothing_left(client, backend)


async def test_downloads_run_concurrently_within_the_limit(
    client: Client, backend: Backend, fake: FakeRegistry
) -> None:
    layers = [os.urandom(1000 + i) for i in range(6)]
    fake.image("v1", layers)
    active = 0
    peak = 0
    serve = fake._serve

    async def counting(request: Any, entry: Any) -> Any:
        nonlocal active, peak
        if "/blobs/" not in request.path or request.method != "GET":
            return await serve(request, entry)
        active += 1
        peak = max(peak, active)
        try:
            await asyncio.sleep(0.2)
            return await serve(request, entry)
        finally:
            active -= 1

    fake._serve = counting  # type: ignore[method-assign]
    async with client.lease():
        await pull(
            client, backend, f"{fake.host}/x/y:v1", registry=RegistryOptions(max_concurrent_downloads=2)
        )
        assert {sha(x) for x in layers} <= {i.digest async for i in client.content.list()}
    assert peak == 2
