"""``proxy_backend_address``: ctrd's content store for another daemon's content proxy, in one namespace."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpclib.client import Channel

from ctrd import errdefs, namespaces
from ctrd.api.containerd.services.content import v1 as api
from ctrd.client import RemoteContentStore
from ctrd.content import sha256_of, write_blob
from ctrd.labels import GC_ROOT
from ctrd.server.config import ConfigError, from_mapping
from ctrd.server.daemon import Daemon


@contextlib.asynccontextmanager
async def daemon(**content_grpc: Any) -> AsyncIterator[tuple[Daemon, str, str]]:
    with tempfile.TemporaryDirectory(prefix="ctrd-", dir="/tmp") as d:
        section = {"proxy_backend_address": f"{d}/backend.sock", **content_grpc}
        cfg = from_mapping(
            {
                "root": f"{d}/root",
                "state": f"{d}/state",
                "grpc": {"address": f"{d}/s.sock"},
                "plugins": {"io.containerd.grpc.v1.content": section},
            }
        )
        dm = Daemon(cfg)
        await dm.start()
        try:
            yield dm, f"{d}/s.sock", section["proxy_backend_address"]
        finally:
            await dm.stop(drain_timeout=1.0)


async def test_every_call_acts_in_the_backend_namespace() -> None:
    async with daemon() as (dm, sock, backend):
        p = dm.plugins.get("io.containerd.grpc.v1.content")
        assert p is not None
        assert p.ok
        assert p.exports == {"proxy_backend_address": backend, "proxy_backend_namespace": "proxy-backend"}
        bch, mch = Channel(path=backend), Channel(path=sock)
        try:
            be = RemoteContentStore(bch)
            main = RemoteContentStore(mch)
            blobs = []
            # no header (containerd 1.6's proxy), some other namespace, a lease nobody knows
            for i, (ns, lease) in enumerate([(None, None), ("default", None), ("x", "no-such-lease")]):
                data = f"blob {i}".encode()
                with namespaces.with_namespace(ns), namespaces.with_lease(lease):
                    await write_blob(be, f"ref{i}", data, expected=sha256_of(data))
                blobs.append(sha256_of(data))
            with namespaces.with_namespace("whatever"):
                listed = sorted([i.digest async for i in be.walk()])
                assert (await be.info(blobs[0])).labels[GC_ROOT]
            assert listed == sorted(blobs)
            # seen through the main socket: all in "proxy-backend", nothing in "default"
            with namespaces.with_namespace("proxy-backend"):
                assert sorted([i.digest async for i in main.walk()]) == sorted(blobs)
            with namespaces.with_namespace("default"):
                assert [i async for i in main.walk()] == []
                # the main socket still requires and honours the header
                with pytest.raises(errdefs.NotFound):
                    await main.info(blobs[0])
            # a raw call without any header (as containerd sends its GC's Delete)
            stub = api.ContentStub(bch)
            await stub.delete(api.DeleteContentRequest(digest=blobs[0]))
            with namespaces.with_namespace("proxy-backend"), pytest.raises(errdefs.NotFound):
                await main.info(blobs[0])
            with pytest.raises(errdefs.FailedPrecondition, match="namespace is required"):
                await RemoteContentStore(mch).info(blobs[1])
        finally:
            bch.close()
            mch.close()
    assert not os.path.exists(backend)  # closed with the daemon


async def test_custom_namespace() -> None:
    async with daemon(proxy_backend_namespace="host-a") as (_dm, sock, backend):
        bch, mch = Channel(path=backend), Channel(path=sock)
        try:
            data = b"custom"
            await write_blob(RemoteContentStore(bch), "r", data, expected=sha256_of(data))
            with namespaces.with_namespace("host-a"):
                assert (await RemoteContentStore(mch).info(sha256_of(data))).size == len(data)
        finally:
            bch.close()
            mch.close()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"proxy_backend_address": "relative.sock"}, "proxy_backend_address: must be an absolute"),
        (
            {"proxy_backend_address": "/x.sock", "proxy_backend_namespace": "no/slash"},
            "not a valid namespace",
        ),
        ({"proxy_backend_adress": "/x.sock"}, "proxy_backend_adress: unknown key"),
    ],
)
async def test_bad_config_stops_startup(section: dict[str, Any], message: str) -> None:
    with tempfile.TemporaryDirectory(prefix="ctrd-", dir="/tmp") as d:
        cfg = from_mapping(
            {
                "root": f"{d}/root",
                "state": f"{d}/state",
                "grpc": {"address": f"{d}/s.sock"},
                "plugins": {"io.containerd.grpc.v1.content": section},
            }
        )
        with pytest.raises(ConfigError, match=message):
            await Daemon(cfg).start()


async def test_backend_on_the_main_socket_is_refused() -> None:
    with tempfile.TemporaryDirectory(prefix="ctrd-", dir="/tmp") as d:
        cfg = from_mapping(
            {
                "root": f"{d}/root",
                "state": f"{d}/state",
                "grpc": {"address": f"{d}/s.sock"},
                "plugins": {"io.containerd.grpc.v1.content": {"proxy_backend_address": f"{d}/s.sock"}},
            }
        )
        dm = Daemon(cfg)
        await dm.start()
        try:
            p = dm.plugins.get("io.containerd.grpc.v1.content")
            assert p is not None
            assert not p.ok
            assert "must differ" in str(p.error)
        finally:
            await dm.stop(drain_timeout=1.0)
