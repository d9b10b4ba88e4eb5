"""``[proxy_plugins.<name>]`` -> registrations: checks at start-up, introspection, sharing, closing."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ctrd import errdefs, namespaces
from ctrd.client import RemoteContentStore
from ctrd.content import sha256_of, write_blob
from ctrd.proxy.content import ProxyContentStore
from ctrd.proxy.snapshots import RemoteSnapshotter
from ctrd.server.config import ConfigError, from_mapping
from ctrd.server.daemon import Daemon
from ctrd.server.proxy_plugins import proxy_registrations

from .test_content_proxy import remote_ctrd


def cfg(tmp: str, **extra: Any) -> Any:
    data: dict[str, Any] = {
        "root": f"{tmp}/root",
        "state": f"{tmp}/state",
        "grpc": {"address": f"{tmp}/s.sock"},
    }
    data.update(extra)
    return from_mapping(data)


def test_types_and_uris(tmp_path: Path) -> None:
    c = cfg(
        str(tmp_path),
        proxy_plugins={
            "remote": {"type": "content", "address": "/r.sock"},
            "full": {"type": "io.containerd.content.v1", "address": "unix:///r.sock"},
            "native": {"type": "snapshot", "address": "127.0.0.1:1"},
            "snap2": {"type": "io.containerd.snapshotter.v1", "address": "/r.sock"},
        },
        plugins={"io.containerd.metadata.v1.sqlite": {"content_plugin": "io.containerd.content.v1.remote"}},
    )
    regs = proxy_registrations(c)
    assert sorted(r.uri for r in regs) == [
        "io.containerd.content.v1.full",
        "io.containerd.content.v1.remote",
        "io.containerd.snapshotter.v1.native",
        "io.containerd.snapshotter.v1.snap2",
    ]
    assert all(r.requires == () and r.config is None for r in regs)


@pytest.mark.parametrize(
    ("entry", "name", "message"),
    [
        ({"type": "diff", "address": "/r.sock"}, "p", 'unknown proxy plugin type "diff"'),
        ({"type": "Content", "address": "/r.sock"}, "p", 'supported: "content"'),
        ({"type": "content", "address": ""}, "p", "address: must not be empty"),
        ({"type": "content", "address": "rel.sock"}, "p", "neither an absolute unix socket path"),
        ({"type": "content", "address": "/r.sock", "namespace": "bad ns"}, "p", "namespace: not a valid"),
        ({"type": "content", "address": "/r.sock", "platform": "linux//x"}, "p", "platform"),
        ({"type": "content", "address": "/r.sock"}, "a.b", "cannot be a plugin id"),
        ({"type": "content", "address": "/r.sock"}, "content", "already an installed plugin"),
    ],
)
def test_bad_entries_fail_startup(tmp_path: Path, entry: dict[str, Any], name: str, message: str) -> None:
    c = cfg(str(tmp_path), proxy_plugins={name: entry}, disabled_plugins=["io.containerd.content.v1.content"])
    with pytest.raises(ConfigError) as ei:
        proxy_registrations(c)
    assert message in str(ei.value)
    assert f"[proxy_plugins.{name}]" in str(ei.value)


async def test_unknown_type_fails_daemon_start(tmp_path: Path) -> None:
    d = Daemon(cfg(str(tmp_path), proxy_plugins={"x": {"type": "sandbox", "address": "/r.sock"}}))
    with pytest.raises(ConfigError, match=r'\[proxy_plugins.x\] type: unknown proxy plugin type "sandbox"'):
        await d.start()
    assert not Path(f"{tmp_path}/s.sock").exists()


def test_several_content_plugins_need_a_choice(tmp_path: Path) -> None:
    pp = {"remote": {"type": "content", "address": "/r.sock"}}
    with pytest.raises(ConfigError) as ei:
        proxy_registrations(cfg(str(tmp_path), proxy_plugins=pp))
    msg = str(ei.value)
    assert "io.containerd.content.v1.content, io.containerd.content.v1.remote" in msg
    assert "content_plugin" in msg
    # choosing one, or disabling the others, or not running the metadata plugin: fine
    for extra in (
        {
            "plugins": {
                "io.containerd.metadata.v1.sqlite": {"content_plugin": "io.containerd.content.v1.remote"}
            }
        },
        {"disabled_plugins": ["io.containerd.content.v1.content"]},
        {"disabled_plugins": ["io.containerd.metadata.v1.sqlite"]},
    ):
        assert len(proxy_registrations(cfg(str(tmp_path), proxy_plugins=pp, **extra))) == 1
    # snapshot proxies alone never need it
    sp = {"native": {"type": "snapshot", "address": "/r.sock"}}
    assert len(proxy_registrations(cfg(str(tmp_path), proxy_plugins=sp))) == 1


@contextlib.asynccontextmanager
async def daemon_with(tmp: str, **extra: Any) -> AsyncIterator[Daemon]:
    d = Daemon(cfg(tmp, **extra))
    await d.start()
    try:
        yield d
    finally:
        await d.stop(drain_timeout=1.0)


async def test_content_proxy_as_metadata_backend_with_exports(tmp_path: Path) -> None:
    async with remote_ctrd() as rsock:
        pp = {
            "remote": {
                "type": "content",
                "address": rsock,
                "namespace": "from-ctrd",
                "exports": {"owner": "ops", "address": "ignored"},
                "capabilities": ["remote"],
                "platform": "linux/amd64",
            },
            "native": {"type": "snapshot", "address": rsock},
        }
        with tempfile.TemporaryDirectory(prefix="ctrd-", dir="/tmp") as tmp:
            async with daemon_with(
                tmp, proxy_plugins=pp, disabled_plugins=["io.containerd.content.v1.content"]
            ) as d:
                p = d.plugins.get("io.containerd.content.v1.remote")
                assert p is not None
                assert p.ok
                assert p.exports == {"owner": "ops", "address": rsock, "namespace": "from-ctrd"}
                assert p.capabilities == ["remote"]
                assert p.platforms == ["linux/amd64"]
                assert isinstance(p.instance, ProxyContentStore)
                s = d.plugins.get("io.containerd.snapshotter.v1.native")
                assert s is not None
                assert s.ok
                assert isinstance(s.instance, RemoteSnapshotter)
                assert s.instance.snapshotter == "native"
                # one connection for both plugins (same address)
                assert p.instance._conn is s.instance._conn
                conn = p.instance._conn
                md = d.plugins.get("io.containerd.metadata.v1.sqlite")
                assert md is not None
                assert md.ok
                assert md.instance.content.backend is p.instance
                data = b"through ctrd to the remote"
                with namespaces.with_namespace("users"):
                    await write_blob(md.instance.content, "r", data, expected=sha256_of(data))
                # the blob is in the remote's namespace "from-ctrd"
                from grpclib.client import Channel

                ch = Channel(path=rsock)
                try:
                    with namespaces.with_namespace("from-ctrd"):
                        info = await RemoteContentStore(ch).info(sha256_of(data))
                    assert info.labels.get("containerd.io/gc.root")
                finally:
                    ch.close()
            # closed with the daemon
            assert conn.closed


async def test_unreachable_proxy_starts_and_answers_unavailable(tmp_path: Path) -> None:
    gone = f"{tmp_path}/gone.sock"
    pp = {"remote": {"type": "content", "address": gone}}
    with tempfile.TemporaryDirectory(prefix="ctrd-", dir="/tmp") as tmp:
        async with daemon_with(
            tmp, proxy_plugins=pp, disabled_plugins=["io.containerd.content.v1.content"]
        ) as d:
            p = d.plugins.get("io.containerd.content.v1.remote")
            assert p is not None
            assert p.ok
            from grpclib.client import Channel

            ch = Channel(path=f"{tmp}/s.sock")
            try:
                client = RemoteContentStore(ch, namespace="default", timeout=10)
                with pytest.raises(errdefs.Unavailable) as ei:
                    await client.writer("ref")
                assert f"unix://{gone}" in str(ei.value)
                assert "io.containerd.content.v1.remote" in str(ei.value)
                # the metadata store answers what it knows without the backend
                assert [i async for i in client.walk()] == []
            finally:
                ch.close()


@pytest.mark.parametrize("uri", ["io.containerd.content.v1.remote", "io.containerd.snapshotter.v1.remote"])
async def test_disabled_proxy_is_not_loaded(tmp_path: Path, uri: str) -> None:
    kind = "content" if "content" in uri else "snapshot"
    pp = {"remote": {"type": kind, "address": "/nowhere.sock"}}
    with tempfile.TemporaryDirectory(prefix="ctrd-", dir="/tmp") as tmp:
        async with daemon_with(tmp, proxy_plugins=pp, disabled_plugins=[uri]) as d:
            assert d.plugins.get(uri) is None


def test_ctrd_command_refuses_unknown_proxy_type(daemon: Any) -> None:
    d = daemon('[proxy_plugins.sb]\n  type = "sandbox"\n  address = "/run/sb.sock"\n', wait=False)
    assert d.proc.wait(30) == 1
    log = d.log()
    assert '[proxy_plugins.sb] type: unknown proxy plugin type "sandbox"' in log, log
    assert "Traceback" not in log
