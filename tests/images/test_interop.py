"""The SDK's pull against containerd's own: ``ctr content fetch`` and ``client.images.fetch``
of the same image write the same content with the same labels and the same record."""

from __future__ import annotations

import asyncio

import pytest

from ctrd.client import Client
from ctrd.testing import running_containerd
from ctrd.testing.registry import Registry

from .conftest import TestImages

pytestmark = pytest.mark.interop


async def test_fetch_matches_ctr(registry: Registry, images: TestImages) -> None:
    ref = f"{registry.host}/test/app:v1"
    with running_containerd() as ctd:
        proc = await asyncio.create_subprocess_exec(
            *["/usr/bin/ctr", "--address", ctd.address, "-n", "by-ctr", "content", "fetch"],
            *["--plain-http", "--all-platforms", ref],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        async with Client(ctd.address, namespace="by-ctr", timeout=30) as by_ctr:
            theirs = {i.digest: dict(i.labels) async for i in by_ctr.content.list()}
            their_image = await by_ctr.images.get(ref)
            sdk = by_ctr.with_namespace("by-sdk")
            ours_image = await sdk.images.fetch(ref)
            ours = {i.digest: dict(i.labels) async for i in sdk.content.list()}
    assert ours == theirs
    assert ours_image.name == their_image.name
    assert ours_image.target == their_image.target
