"""``ctrd.testing``'s daemon launcher: configs, start failures, restarts, stops, cleanup."""

from __future__ import annotations

import signal
import tomllib
from pathlib import Path

import pytest

from ctrd.client import Client
from ctrd.testing import (
    Containerd,
    Ctrd,
    DaemonError,
    DaemonProcess,
    containerd_config,
    ctrd_config,
    running_containerd,
    start_ctrd,
)

GC = 'plugins."io.containerd.gc.v1.scheduler"'


def test_containerd_config_is_confined_and_takes_options(tmp_path: Path) -> None:
    cfg = tomllib.loads(
        containerd_config(
            tmp_path,
            policy="isolated",
            gc={"startup_delay": "1h", "deletion_threshold": 7},
            disabled=["io.containerd.content.v1.content"],
            extra='[proxy_plugins]\n  [proxy_plugins.x]\n    type = "content"\n    address = "/x.sock"\n',
            log_level="debug",
        )
    )
    assert (cfg["root"], cfg["state"], cfg["temp"]) == tuple(
        str(tmp_path / n) for n in ("root", "state", "tmp")
    )
    assert cfg["grpc"]["address"] == str(tmp_path / "containerd.sock")
    assert cfg["debug"] == {"address": "", "level": "debug"}
    assert cfg["metrics"]["address"] == ""
    assert "io.containerd.grpc.v1.cri" in cfg["disabled_plugins"]
    assert "io.containerd.content.v1.content" in cfg["disabled_plugins"]
    gc = cfg["plugins"]["io.containerd.gc.v1.scheduler"]
    assert gc == {
        "pause_threshold": 0.02,
        "deletion_threshold": 7,
        "mutation_threshold": 0,
        "schedule_delay": "0s",
        "startup_delay": "1h",
    }
    assert cfg["plugins"]["io.containerd.metadata.v1.bolt"]["content_sharing_policy"] == "isolated"
    assert cfg["proxy_plugins"]["x"]["address"] == "/x.sock"


def test_ctrd_config_keeps_root_and_state_in_the_directory(tmp_path: Path) -> None:
    cfg = tomllib.loads(ctrd_config(tmp_path, "[debug]\n  level = 'debug'\n"))
    assert cfg == {
        "root": str(tmp_path / "root"),
        "state": str(tmp_path / "state"),
        "debug": {"level": "debug"},
    }


def test_a_daemon_that_exits_is_an_error_with_its_log_and_leaves_nothing() -> None:
    d = Ctrd(config=f'[{GC}]\n  pause_threshold = "soon"\n')
    with pytest.raises(DaemonError, match=r"(?s)ctrd exited with 1 before serving:.*pause_threshold"):
        d.start()
    assert not d.alive()
    assert not d.directory.exists()


def test_unstarted_daemon_stops_quietly_and_says_so(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, ["true"], "")
    assert not d.alive()
    assert d.stop() is None
    assert d.log() == ""
    assert d.log_tail() == "(no log)"
    with pytest.raises(RuntimeError, match="was not started"):
        _ = d.pid
    assert tmp_path.exists()  # a directory given is kept


async def test_restart_in_the_same_directory_keeps_config_and_data(tmp_path: Path) -> None:
    first = Ctrd(
        tmp_path, '[plugins."io.containerd.metadata.v1.sqlite"]\n  content_sharing_policy = "isolated"\n'
    )
    first.start()
    try:
        async with Client(first.address, namespace="kit") as c:
            info = await c.content.ingest("r", b"kept", labels={"containerd.io/gc.root": "x"})
        assert first.blobs() == [info.digest]
        assert first.blob_path(info.digest).read_bytes() == b"kept"
    finally:
        assert first.stop(signal.SIGTERM) == 0
    again = Ctrd(tmp_path, log_path=tmp_path / "again.log").start()
    try:
        async with Client(again.address, namespace="kit") as c:
            assert await c.content.read_all(info.digest) == b"kept"
            [meta] = await c.plugins(["type==io.containerd.metadata.v1"])
            assert meta.exports.get("policy") == "isolated"  # the first config file, kept
        assert again.wait_for_log("serving").group(0) == "serving"
    finally:
        again.stop()
    assert tmp_path.exists()
    assert first.stop() == 0


def test_start_ctrd_owns_and_removes_its_directory() -> None:
    d = start_ctrd()
    assert d.directory.is_dir()
    assert d.alive()
    assert "serving" in d.log()
    assert d.stop() == 0
    assert not d.directory.exists()


@pytest.mark.interop
async def test_containerd_waits_for_its_start_up_collection() -> None:
    with running_containerd(wait_for_startup_gc=True, policy="isolated") as c:
        assert isinstance(c, Containerd)
        assert "garbage collected" in c.log()
        assert "policy=isolated" in c.log()
        async with Client(c.address) as client:
            assert (await client.version()).version.startswith("1.6")
    assert not c.alive()
    assert not c.directory.exists()
