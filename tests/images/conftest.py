"""Fixtures for the registry client's tests: a private registry, test images, daemons.

* ``registry`` — a module-scoped ``docker-registry`` (:mod:`ctrd.testing.registry`) holding
  :class:`TestImages` (``images``): an OCI index of two platforms, a Docker manifest list,
  a single OCI manifest, with gzip'd and uncompressed layers and a whiteout entry.
* ``backend`` — ctrd and a private containerd 1.6 (module-scoped, like tests/client).
* ``client`` — an SDK client in a fresh namespace of the backend.
* ``images_backend``/``images_client`` — the same, for the tests about image records.
* :func:`pull` — ``client.images.pull``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

import pytest

from ctrd.client import Client, Image, RegistryOptions
from ctrd.images import Descriptor
from ctrd.testing import DaemonProcess, start_containerd, start_ctrd
from ctrd.testing.images import ImageBuilder, Layer, PushedImage, gzip_layer, raw_layer, tar_layer
from ctrd.testing.registry import Registry, registry_available, start_registry

_names = itertools.count(1)


@dataclasses.dataclass
class Backend:
    kind: str
    address: str
    proc: DaemonProcess

    @property
    def is_containerd(self) -> bool:
        return self.kind == "containerd"


def policy_config(policy: str) -> str:
    """ctrd's config for a content sharing policy."""
    return f'[plugins."io.containerd.metadata.v1.sqlite"]\n  content_sharing_policy = "{policy}"\n'


def start_backend(kind: str, policy: str = "shared") -> Backend:
    proc: DaemonProcess = (
        start_ctrd(policy_config(policy)) if kind == "ctrd" else start_containerd(policy=policy)
    )
    return Backend(kind, proc.address, proc)


@pytest.fixture(scope="module", params=["ctrd", pytest.param("containerd", marks=pytest.mark.interop)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    b = start_backend(request.param)
    try:
        yield b
    finally:
        b.proc.stop()


@pytest.fixture(scope="module", params=[pytest.param("containerd", marks=pytest.mark.interop), "ctrd"])
def images_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A backend, for the tests about image records (both serve containerd's Images service)."""
    b = start_backend(request.param)
    try:
        yield b
    finally:
        b.proc.stop()


@pytest.fixture
async def client(request: pytest.FixtureRequest, backend: Backend) -> AsyncIterator[Client]:
    async with Client(backend.address, namespace=f"img-{next(_names)}", timeout=30) as c:
        yield c
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        request.node.add_report_section("call", f"{backend.kind} log", backend.proc.log()[-20000:])


@pytest.fixture
async def images_client(request: pytest.FixtureRequest, images_backend: Backend) -> AsyncIterator[Client]:
    async with Client(images_backend.address, namespace=f"img-{next(_names)}", timeout=30) as c:
        yield c
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        request.node.add_report_section(
            "call", f"{images_backend.kind} log", images_backend.proc.log()[-20000:]
        )


async def pull(client: Client, backend: Backend, ref: str, **kw: Any) -> Image:
    """``client.images.pull(ref, **kw)`` (*backend* names the daemon in failures)."""
    del backend
    return await client.images.pull(ref, **kw)


# -- the registry and its images -----------------------------------------------------------------


@dataclasses.dataclass
class TestImages:
    """What the module's registry holds."""

    amd64: PushedImage
    arm64: PushedImage
    index: Descriptor  # test/app:v1, OCI index of amd64 + arm64
    docker_amd64: PushedImage
    docker_arm64: PushedImage
    docker_list: Descriptor  # test/docker:v1, Docker manifest list
    single: PushedImage  # test/single:v1, one OCI manifest
    whiteout_tar: bytes

    __test__ = False


def build_images(builder: ImageBuilder) -> TestImages:
    whiteout_tar = tar_layer({"etc/hello": b"hello\n"}, whiteouts=["foo", "var/old"], dirs=["etc"])
    base = gzip_layer(whiteout_tar)
    big = raw_layer(tar_layer({"data/big": os.urandom(6 << 20)}))
    arm_only = gzip_layer(tar_layer({"arm": b"arm64\n"}))
    amd64 = builder.push_image("test/app", None, [base, big], platform=("linux", "amd64", ""))
    arm64 = builder.push_image("test/app", None, [base, arm_only], platform=("linux", "arm64", "v8"))
    index = builder.push_index("test/app", "v1", [amd64, arm64])
    d_base = gzip_layer(whiteout_tar, oci=False)
    d_raw = raw_layer(tar_layer({"docker": b"raw\n"}), oci=False)
    docker_amd64 = builder.push_image("test/docker", None, [d_base, d_raw], oci=False)
    docker_arm64 = builder.push_image(
        "test/docker", None, [d_base], oci=False, platform=("linux", "arm64", "v8")
    )
    docker_list = builder.push_index("test/docker", "v1", [docker_amd64, docker_arm64], oci=False)
    single = builder.push_image("test/single", "v1", [gzip_layer(tar_layer({"one": b"1\n"}))])
    return TestImages(amd64, arm64, index, docker_amd64, docker_arm64, docker_list, single, whiteout_tar)


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    if not registry_available():
        pytest.fail("docker-registry is missing: apt-get install docker-registry", pytrace=False)
    reg = start_registry()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def images(registry: Registry) -> TestImages:
    return build_images(ImageBuilder(registry.url))


def labels_of(infos: Iterable[Any]) -> Mapping[str, Mapping[str, str]]:
    return {i.digest: dict(i.labels) for i in infos}


__all__ = [
    "Backend",
    "Layer",
    "RegistryOptions",
    "TestImages",
    "build_images",
    "labels_of",
    "policy_config",
    "pull",
    "start_backend",
]
