"""The example plugins in a real ctrd daemon (``ctrd.testing``'s ``ctrd_daemon_factory``).

Run from an environment where this package is installed (``pip install
.[test]``): the daemon is ``python -m ctrd`` with the same interpreter, so it
discovers the package's entry points.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from ctrd import errdefs
from ctrd.client import Client
from grpclib.client import Channel

from ctrd_plugin_example.api.ctrd_example import v1 as api

ROOT = {"containerd.io/gc.root": "example-tests"}  # keep blobs from ctrd's garbage collector

CONFIG = """
[plugins."io.containerd.grpc.v1.example"]
  greeting = "Moin"
  max_name_length = 10

[plugins."ctrd.example.quota.v1.content"]
  default_limit_bytes = 1000
  [plugins."ctrd.example.quota.v1.content".limits]
    small = 100
    big = 0
"""


@contextlib.asynccontextmanager
async def stub(address: str, namespace: str = "default") -> AsyncIterator[api.ExampleStub]:
    ch = Channel(path=address)
    try:
        yield api.ExampleStub(ch, metadata={"containerd-namespace": namespace})
    finally:
        ch.close()


async def test_plugins_are_listed_with_exports(ctrd_daemon_factory: Callable[..., Any]) -> None:
    d = ctrd_daemon_factory(CONFIG)
    async with Client(d.address) as client:
        plugins = {p.uri: p for p in await client.plugins()}
    svc = plugins["io.containerd.grpc.v1.example"]
    assert svc.status == "ok", svc.error
    assert svc.exports == {"service": "ctrd_example.v1.Example", "greeting": "Moin"}
    quota = plugins["ctrd.example.quota.v1.content"]
    assert quota.status == "ok", quota.error
    assert quota.requires == ("io.containerd.metadata.v1",)
    assert quota.exports == {"default_limit_bytes": "1000", "limits": "big=0,small=100"}
    assert quota.capabilities == ("enforce-on-commit",)


async def test_hello(ctrd_daemon_factory: Callable[..., Any]) -> None:
    d = ctrd_daemon_factory(CONFIG)
    async with stub(d.address) as s:
        assert (await s.hello(api.HelloRequest(name="ctrd"))).message == "Moin, ctrd!"
        assert (await s.hello(api.HelloRequest())).message == "Moin, world!"
        from grpclib.const import Status
        from grpclib.exceptions import GRPCError

        with pytest.raises(GRPCError) as ei:
            await s.hello(api.HelloRequest(name="x" * 11))
        assert ei.value.status is Status.INVALID_ARGUMENT
        assert "longer than max_name_length 10" in (ei.value.message or "")


async def test_quota_on_commit(ctrd_daemon_factory: Callable[..., Any]) -> None:
    d = ctrd_daemon_factory(CONFIG)
    a, b = os.urandom(60), os.urandom(60)
    async with Client(d.address, namespace="small", timeout=30) as client:
        ia = await client.content.ingest("a", a, labels=ROOT)
        with pytest.raises(errdefs.ResourceExhausted) as ei:
            await client.content.ingest("b", b, labels=ROOT)
        msg = str(ei.value)
        assert msg.startswith('quota exceeded in namespace "small": committing sha256:')
        assert "(60 bytes) would use 120 of 100 bytes (60 in use)" in msg
        # the rejected ingest is kept; what the namespace holds already costs nothing
        assert (await client.content.status("b")).offset == 60
        assert (await client.content.ingest("a2", a, labels=ROOT)).digest == ia.digest
        # make room, then the kept ingest commits
        await client.content.delete(ia.digest)
        assert (await client.content.ingest("b", b, labels=ROOT)).size == 60
        async with stub(d.address, "small") as s:
            q = await s.quota(api.QuotaRequest())
        assert (q.namespace, q.used_bytes, q.limit_bytes, q.blobs) == ("small", 60, 100, 1)

        # the default limit applies to other namespaces; 0 means none
        with pytest.raises(errdefs.ResourceExhausted, match="of 1000 bytes"):
            await client.with_namespace("other").content.ingest("big", os.urandom(1001), labels=ROOT)
        big = os.urandom(5000)
        await client.with_namespace("big").content.ingest("big", big, labels=ROOT)

        # admitting a blob held elsewhere (shared policy, no upload) still counts
        with pytest.raises(errdefs.ResourceExhausted, match='namespace "small"'):
            await client.content.ingest("shared", big, labels=ROOT)


async def test_quota_rpc_without_limits(ctrd_daemon_factory: Callable[..., Any]) -> None:
    d = ctrd_daemon_factory()
    async with Client(d.address, namespace="n", timeout=30) as client:
        await client.content.ingest("r", b"12345", labels=ROOT)
    async with stub(d.address, "n") as s:
        q = await s.quota(api.QuotaRequest())
    assert (q.used_bytes, q.limit_bytes, q.blobs) == (5, 0, 1)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('[plugins."ctrd.example.quota.v1.content"]\n  default_limit_bytes = -1\n', "default_limit_bytes"),
        ('[plugins."ctrd.example.quota.v1.content".limits]\n  "bad/ns" = 1\n', "is not a valid namespace"),
        ('[plugins."io.containerd.grpc.v1.example"]\n  greeting = ""\n', "greeting"),
        ('[plugins."io.containerd.grpc.v1.example"]\n  greting = "typo"\n', "greting: unknown key"),
    ],
)
def test_bad_config_value_stops_startup(
    ctrd_daemon_factory: Callable[..., Any], config: str, message: str
) -> None:
    with pytest.raises(RuntimeError) as ei:
        ctrd_daemon_factory(config)
    assert "exited with 1" in str(ei.value) and message in str(ei.value)
