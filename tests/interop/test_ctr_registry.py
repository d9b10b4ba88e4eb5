"""Debian's ``ctr`` 1.6.20 against ctrd with a registry (docker-registry 2.8), under both
content sharing policies: what ``tests/interop/test_ctr_images.py`` (records made without a
registry) and ``tests/images/test_interop.py`` (``ctr content fetch`` on containerd) leave out.

* ``ctr content fetch --plain-http`` of one platform and of ``--all-platforms`` into ctrd
  writes the content, labels and record that the same command writes into containerd;
* ``ctr images ls`` rows are containerd's; ``ctr images check`` says ``complete (N/N)``;
* ``ctr images tag``, ``ctr images rm --sync`` (the blobs are collected at once);
* ``shared``: fetching an image another namespace holds downloads no blob (the registry's
  access log); ``isolated``: it downloads every blob of the platform again;
* ``ctr images export`` from ctrd, then ``ctr images import --no-unpack`` into ctrd and into
  containerd; the SDK's export read by ``ctr images import --no-unpack`` on both;
* ``ctr images push --plain-http`` from ctrd: the registry serves the same index.

These tests FAIL (never skip) when ``/usr/bin/ctr``, containerd or docker-registry is missing.
"""

from __future__ import annotations

import asyncio
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ctrd.client import Client, host_platform
from ctrd.testing import Containerd, running_containerd
from ctrd.testing.images import ImageBuilder, PushedImage, gzip_layer, raw_layer, tar_layer
from ctrd.testing.registry import Registry, registry_available, start_registry

pytestmark = pytest.mark.interop

GC = "containerd.io/gc.ref.content."


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    if not registry_available():
        pytest.fail("docker-registry is missing: apt-get install docker-registry", pytrace=False)
    reg = start_registry()
    try:
        yield reg
    finally:
        reg.stop()


class Images:
    def __init__(self, amd64: PushedImage, arm64: PushedImage, index_digest: str) -> None:
        self.amd64, self.arm64, self.index = amd64, arm64, index_digest

    @property
    def native(self) -> PushedImage:
        return self.arm64 if host_platform().architecture == "arm64" else self.amd64

    @property
    def other(self) -> PushedImage:
        return self.amd64 if self.native is self.arm64 else self.arm64


@pytest.fixture(scope="module")
def images(registry: Registry) -> Images:
    b = ImageBuilder(registry.url)
    base = gzip_layer(tar_layer({"etc/os-release": b"ID=interop\n"}))
    big = raw_layer(tar_layer({"data/blob": bytes(range(256)) * 8192}))
    arm = gzip_layer(tar_layer({"arm": b"arm64\n"}))
    amd64 = b.push_image("interop/app", None, [base, big], platform=("linux", "amd64", ""))
    arm64 = b.push_image("interop/app", None, [base, arm], platform=("linux", "arm64", "v8"))
    index = b.push_index("interop/app", "v1", [amd64, arm64])
    return Images(amd64, arm64, index.digest)


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    with running_containerd(wait_for_startup_gc=True) as c:
        yield c


def ctr(sock: str, ns: str, *args: str) -> str:
    p = _ctr(sock, ns, *args)
    assert p.returncode == 0, f"ctr {' '.join(args)} ({p.returncode}): {p.stderr}"
    return p.stdout


def _ctr(sock: str, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/usr/bin/ctr", "--address", sock, "--namespace", ns, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


async def state(sock: str, ns: str) -> tuple[dict[str, dict[str, str]], list[tuple[str, str, str]]]:
    async with Client(sock, namespace=ns, timeout=30) as c:
        blobs = {i.digest: dict(i.labels) async for i in c.content.list()}
        records = sorted((i.name, i.target.media_type, i.target.digest) for i in await c.images.list())
    return blobs, records


def blob_files(root: Path) -> set[str]:
    d = root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    return {f"sha256:{p.name}" for p in d.glob("*")}


def export_and_import(sock: str, theirs_sock: str, ref: str, images: Images, tag: str, tmp: Path) -> None:
    """``ctr images export`` of ctrd's image and the SDK's export (the same bytes), each
    imported by ``ctr images import --no-unpack`` into ctrd and into containerd."""
    theirs_tar, ours_tar = tmp / "ctr.tar", tmp / "sdk.tar"
    ctr(sock, "a", "images", "export", str(theirs_tar), ref)

    async def sdk_export() -> None:
        async with Client(sock, namespace="a", timeout=30) as c:
            await c.images.export(ours_tar, ref)

    asyncio.run(sdk_export())
    assert ours_tar.read_bytes() == theirs_tar.read_bytes()
    mine = images.native
    for tar, ns in ((theirs_tar, "imp-ctr"), (ours_tar, "imp-sdk")):
        ctr(sock, ns, "images", "import", "--no-unpack", str(tar))
        ctr(theirs_sock, f"{ns}-{tag}", "images", "import", "--no-unpack", str(tar))
        mine_state = asyncio.run(state(sock, ns))
        their_state = asyncio.run(state(theirs_sock, f"{ns}-{tag}"))
        assert (
            mine_state[1]
            == their_state[1]
            == [(ref, "application/vnd.oci.image.index.v1+json", images.index)]
        )
        tree = {images.index, mine.manifest.digest, *mine.blobs}
        assert {k: mine_state[0][k] for k in tree} == {k: their_state[0][k] for k in tree}


@pytest.mark.parametrize("policy", ["shared", "isolated"])
def test_ctr_with_a_registry(
    policy: str,
    daemon: Callable[..., Any],
    containerd: Containerd,
    registry: Registry,
    images: Images,
    tmp_path: Path,
) -> None:
    d = daemon(f'[plugins."io.containerd.metadata.v1.sqlite"]\n  content_sharing_policy = "{policy}"\n')
    sock = d.socket
    ref = f"{registry.host}/interop/app:v1"
    mine, other = images.native, images.other
    platform = str(host_platform())
    tag = f"{policy}-{platform.replace('/', '-')}"

    # -- ctr content fetch, one platform: what containerd gets -------------------------------
    since = registry.sync()
    ctr(sock, "a", "content", "fetch", "--plain-http", "--platform", platform, ref)
    registry.sync()
    assert sorted(e.path.rsplit("/", 1)[1] for e in registry.blob_gets(since=since)) == sorted(mine.blobs)
    ours = asyncio.run(state(sock, "a"))
    ctr(containerd.socket, f"fetch-{tag}", "content", "fetch", "--plain-http", "--platform", platform, ref)
    theirs = asyncio.run(state(containerd.socket, f"fetch-{tag}"))
    assert ours == theirs
    blobs, records = ours
    assert set(blobs) == {images.index, mine.manifest.digest, *mine.blobs}
    assert blobs[mine.manifest.digest][GC + "config"] == mine.config.digest
    assert records == [(ref, "application/vnd.oci.image.index.v1+json", images.index)]

    # -- ls and check -------------------------------------------------------------------------
    assert rows(ctr(sock, "a", "images", "ls")) == rows(
        ctr(containerd.socket, f"fetch-{tag}", "images", "ls")
    )
    check = _ctr(sock, "a", "images", "check")
    n = len(mine.blobs)
    # the row; UNPACKED and the exit status need a snapshotter
    assert rows(check.stdout)[1][:5] == [
        ref,
        "application/vnd.oci.image.index.v1+json",
        images.index,
        "complete",
        f"({n}/{n})",
    ]

    # -- another namespace: shared downloads nothing, isolated everything again ---------------
    since = registry.sync()
    ctr(sock, "b", "content", "fetch", "--plain-http", "--platform", platform, ref)
    registry.sync()
    gets = sorted(e.path.rsplit("/", 1)[1] for e in registry.blob_gets(since=since))
    assert gets == ([] if policy == "shared" else sorted(mine.blobs))
    assert asyncio.run(state(sock, "b")) == ours

    # -- every platform -------------------------------------------------------------------------
    since = registry.sync()
    ctr(sock, "c", "content", "fetch", "--plain-http", "--all-platforms", ref)
    registry.sync()
    downloaded = {e.path.rsplit("/", 1)[1] for e in registry.blob_gets(since=since)}
    expected = set(other.blobs) - set(mine.blobs) if policy == "shared" else {*mine.blobs, *other.blobs}
    assert downloaded == expected
    blobs_c, _ = asyncio.run(state(sock, "c"))
    assert {other.manifest.digest, *other.blobs} <= set(blobs_c)
    ctr(containerd.socket, f"all-{tag}", "content", "fetch", "--plain-http", "--all-platforms", ref)
    assert asyncio.run(state(containerd.socket, f"all-{tag}")) == asyncio.run(state(sock, "c"))
    assert [r[3:5] for r in rows(_ctr(sock, "c", "images", "check").stdout)[1:]] == [
        ["complete", f"({n}/{n})"]
    ]

    # -- push from ctrd: the registry serves the same index under the new tag -----------------
    ctr(sock, "c", "images", "push", "--plain-http", f"{registry.host}/interop/copy-{policy}:v1", ref)
    req = urllib.request.Request(
        f"{registry.url}/v2/interop/copy-{policy}/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
        method="HEAD",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Docker-Content-Digest"] == images.index

    # -- export / import, both ways ------------------------------------------------------------
    export_and_import(sock, containerd.socket, ref, images, tag, tmp_path)

    # -- tag, rm --sync: the blobs are collected once no image holds them ------------------------
    assert ctr(sock, "a", "images", "tag", ref, "example.com/interop:2") == "example.com/interop:2\n"
    assert rows(ctr(sock, "a", "images", "ls", "-q")) == [[ref], ["example.com/interop:2"]]
    assert (
        ctr(sock, "a", "images", "rm", "--sync", ref, "example.com/interop:2")
        == f"{ref}\nexample.com/interop:2\n"
    )
    assert ctr(sock, "a", "content", "ls", "-q") == ""
    for ns in ("b", "c", "imp-ctr", "imp-sdk"):
        ctr(sock, ns, "images", "rm", "--sync", ref)
        assert ctr(sock, ns, "content", "ls", "-q") == ""
    assert blob_files(d.root) == set()
