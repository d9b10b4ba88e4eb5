"""The ``ctrd.testing`` pytest plugin, used as an SDK user would (registered by entry point)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ctrd.client import Client
from ctrd.testing import DaemonProcess


def test_registered_by_entry_point(request: pytest.FixtureRequest) -> None:
    plugin = request.config.pluginmanager.get_plugin("ctrd")
    assert plugin is not None
    assert plugin.__name__ == "ctrd.testing.plugin"


async def test_ctrd_client_fixture(ctrd_client: Client, ctrd_daemon: str) -> None:
    assert ctrd_client.address == ctrd_daemon
    assert ctrd_client.namespace.startswith("test-")
    info = await ctrd_client.content.ingest("r", b"fixture", labels={"containerd.io/gc.root": "x"})
    assert await ctrd_client.content.read_all(info.digest) == b"fixture"


async def test_factory_with_config(ctrd_daemon_factory: Callable[..., DaemonProcess]) -> None:
    d = ctrd_daemon_factory(
        '[plugins."io.containerd.metadata.v1.sqlite"]\n  content_sharing_policy = "isolated"\n'
    )
    async with Client(d.address) as c:
        [meta] = await c.plugins(["type==io.containerd.metadata.v1"])
        assert meta.exports.get("policy") == "isolated"
    assert d.root.is_dir()
    assert "serving" in d.log()


@pytest.mark.interop
async def test_containerd_fixture(containerd_daemon: str) -> None:
    async with Client(containerd_daemon) as c:
        assert (await c.version()).version.startswith("1.6")
