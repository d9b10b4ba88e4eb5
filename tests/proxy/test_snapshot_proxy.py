"""The snapshot proxy against real containerd's native snapshotter.

``[proxy_plugins.native] type = "snapshot"`` registers
``io.containerd.snapshotter.v1.native`` in ctrd; its instance calls containerd's
Snapshots service naming the snapshotter ``native``. ctrd has no snapshot
service yet, so the test drives the plugin instance of an in-process daemon.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import pytest
from _daemon import run_ctr

from ctrd import errdefs
from ctrd.labels import GC_ROOT
from ctrd.proxy.snapshots import Kind, RemoteSnapshotter
from ctrd.server.config import from_mapping
from ctrd.server.daemon import Daemon
from ctrd.testing import running_containerd

pytestmark = pytest.mark.interop


async def test_native_snapshotter_through_the_proxy() -> None:
    with (
        running_containerd(wait_for_startup_gc=True) as c,
        tempfile.TemporaryDirectory(prefix="ctrd-", dir="/tmp") as d,
    ):
        cfg = from_mapping(
            {
                "root": f"{d}/root",
                "state": f"{d}/state",
                "grpc": {"address": f"{d}/s.sock"},
                "proxy_plugins": {
                    "native": {"type": "snapshot", "address": c.socket, "platform": "linux/amd64"}
                },
            }
        )
        daemon = Daemon(cfg)
        await daemon.start()
        try:
            p = daemon.plugins.get("io.containerd.snapshotter.v1.native")
            assert p is not None, p and p.error
            assert p.ok, p and p.error
            assert p.exports["address"] == c.socket
            assert p.platforms == ["linux/amd64"]
            sn = p.instance
            assert isinstance(sn, RemoteSnapshotter)

            mounts = await sn.prepare("work", labels={"purpose": "test"})
            assert len(mounts) == 1
            assert mounts[0].type == "bind"
            assert "rw" in mounts[0].options
            native_root = c.root / "io.containerd.snapshotter.v1.native" / "snapshots"
            assert mounts[0].source.startswith(str(native_root))
            assert os.path.isdir(mounts[0].source)
            assert await sn.mounts("work") == mounts
            with open(os.path.join(mounts[0].source, "hello"), "wb") as f:
                f.write(b"x" * 10000)
            info = await sn.stat("work")
            assert info.kind is Kind.ACTIVE
            assert info.parent == ""
            assert info.labels["purpose"] == "test"
            assert info.labels[GC_ROOT]
            usage = await sn.usage("work")
            assert usage.size >= 10000
            assert usage.inodes >= 2

            await _commit_view_walk_update_remove(sn)
            # the remote namespace is the proxy's (default "ctrd"), not containerd's "default"
            ls = run_ctr(c.address, "snapshots", "--snapshotter", "native", "ls", namespace="ctrd")
            assert ls.returncode == 0
        finally:
            await daemon.stop(drain_timeout=1.0)
        assert sn._conn.closed


async def _commit_view_walk_update_remove(sn: RemoteSnapshotter) -> None:
    """The rest of the snapshot life cycle, from the active snapshot ``work``."""
    await sn.commit("layer1", "work", labels={"layer": "1"})
    committed = await sn.stat("layer1")
    assert committed.kind is Kind.COMMITTED
    assert committed.labels["layer"] == "1"
    with pytest.raises(errdefs.NotFound):
        await sn.stat("work")  # an active snapshot is gone once committed

    child = await sn.prepare("child", "layer1")
    assert (await sn.stat("child")).parent == "layer1"
    with open(os.path.join(child[0].source, "hello"), "rb") as f:  # native copies the parent
        assert len(f.read()) == 10000
    view = await sn.view("ro", "layer1")
    assert "ro" in view[0].options
    assert (await sn.stat("ro")).kind is Kind.VIEW

    names = {i.name: i.kind async for i in sn.walk()}
    assert names == {"layer1": Kind.COMMITTED, "child": Kind.ACTIVE, "ro": Kind.VIEW}
    assert [i.name async for i in sn.walk("kind==committed")] == ["layer1"]

    updated = await sn.update(dataclasses.replace(committed, labels={"extra": "yes"}), "labels.extra")
    assert updated.labels["extra"] == "yes"
    assert updated.labels["layer"] == "1"

    with pytest.raises(errdefs.FailedPrecondition):
        await sn.remove("layer1")  # has children
    for key in ("child", "ro", "layer1"):
        await sn.remove(key)
    assert [i async for i in sn.walk()] == []
    with pytest.raises(errdefs.NotFound, match="does not exist"):
        await sn.stat("layer1")
    with pytest.raises(errdefs.Unimplemented):  # containerd 1.6's snapshotters have no Cleanup
        await sn.cleanup()


async def test_unreachable_snapshotter_is_unavailable_naming_the_address() -> None:
    with tempfile.TemporaryDirectory(prefix="ctrd-", dir="/tmp") as d:
        gone = f"{d}/gone.sock"
        cfg = from_mapping(
            {
                "root": f"{d}/root",
                "state": f"{d}/state",
                "grpc": {"address": f"{d}/s.sock"},
                "proxy_plugins": {"native": {"type": "snapshot", "address": gone}},
            }
        )
        daemon = Daemon(cfg)
        await daemon.start()
        try:
            p = daemon.plugins.get("io.containerd.snapshotter.v1.native")
            assert p is not None
            assert p.ok
            with pytest.raises(errdefs.Unavailable, match=f"unix://{gone}"):
                await p.instance.stat("x")
        finally:
            await daemon.stop(drain_timeout=1.0)
