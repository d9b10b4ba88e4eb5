"""The content conformance suite through the gRPC Content service.

A real daemon (all built-in plugins, real unix socket) runs in the test's event
loop; the suite drives it through :class:`ctrd.client.RemoteContentStore`, as
containerd runs its suite through its Go client ("ContentClient").
"""

from __future__ import annotations

import contextlib
import datetime
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from grpclib.client import Channel

from ctrd import namespaces
from ctrd.api.containerd.services.leases import v1 as lease_api
from ctrd.api.containerd.services.namespaces import v1 as ns_api
from ctrd.client import RemoteContentStore
from ctrd.content import Store
from ctrd.server.config import Config, GrpcConfig
from ctrd.server.daemon import Daemon
from ctrd.testing.content_suite import (
    ContentStoreSuite,
    CrossNSIsolatedSuite,
    CrossNSSharedSuite,
    SharedNSIsolatedSuite,
)


@contextlib.asynccontextmanager
async def running_daemon(policy: str) -> AsyncIterator[str]:
    """Start an in-process daemon with *policy*; yields its socket path."""
    with tempfile.TemporaryDirectory(prefix="ctrd-", dir="/tmp") as d:
        sock = f"{d}/s.sock"
        cfg = Config(
            root=f"{d}/root",
            state=f"{d}/state",
            grpc=GrpcConfig(address=sock),
            plugins={"io.containerd.metadata.v1.sqlite": {"content_sharing_policy": policy}},
        )
        daemon = Daemon(cfg)
        await daemon.start()
        try:
            yield sock
        finally:
            await daemon.stop(drain_timeout=2.0)


_LEASE = "suite"


class _RemoteHarness:
    policy = "shared"

    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        async with running_daemon(self.policy) as sock:
            channel = Channel(path=sock)
            self.channel = channel
            # Like containerd's ContentClient harness: every namespace writes under a
            # lease (24 h expiry), so the garbage collector keeps what the suite writes.
            leases = lease_api.LeasesStub(channel)
            expire = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=24)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            for k in (1, 2):
                await leases.create(
                    lease_api.CreateRequest(id=_LEASE, labels={"containerd.io/gc.expire": expire}),
                    metadata={namespaces.GRPC_HEADER: f"ContentClient-n{k}"},
                )
            try:
                yield RemoteContentStore(channel)
            finally:
                channel.close()

    @contextlib.contextmanager
    def namespace(self, k: int) -> Iterator[None]:
        with namespaces.with_namespace(f"ContentClient-n{k}"), namespaces.with_lease(_LEASE):
            yield

    async def make_shareable(self, k: int) -> None:
        stub = ns_api.NamespacesStub(self.channel)
        await stub.update(
            ns_api.UpdateNamespaceRequest(
                namespace=ns_api.Namespace(
                    name=f"ContentClient-n{k}", labels={"containerd.io/namespace.shareable": "true"}
                ),
                update_mask=None,
            ),
            metadata={namespaces.GRPC_HEADER: f"ContentClient-n{k}"},
        )


class TestRemoteShared(_RemoteHarness, ContentStoreSuite):
    policy = "shared"


class TestRemoteIsolated(_RemoteHarness, ContentStoreSuite):
    policy = "isolated"


class TestRemoteCrossNSShared(_RemoteHarness, CrossNSSharedSuite):
    policy = "shared"


class TestRemoteCrossNSIsolated(_RemoteHarness, CrossNSIsolatedSuite):
    policy = "isolated"


class TestRemoteSharedNSIsolated(_RemoteHarness, SharedNSIsolatedSuite):
    policy = "isolated"


async def test_daemon_tmp_is_clean() -> None:
    async with running_daemon("shared") as sock:
        assert Path(sock).exists()
    assert not Path(sock).exists()
