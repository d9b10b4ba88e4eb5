"""The content proxy store against an in-process ctrd serving the Content service.

The conformance suite runs through :class:`ProxyContentStore` (each test in a
fresh remote namespace); then what makes it a proxy: one fixed remote namespace
whatever the caller's context, no lease forwarded, ``gc.root`` on commit,
resumable writers, and release of the shared connection on close.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpclib.client import Channel

from ctrd import errdefs, namespaces
from ctrd.client import RemoteContentStore
from ctrd.content import Store, sha256_of, write_blob
from ctrd.labels import GC_ROOT
from ctrd.proxy.connection import ConnectionCache
from ctrd.proxy.content import ProxyContentStore, gc_root_value
from ctrd.remote import Connection
from ctrd.server.config import Config, GrpcConfig
from ctrd.server.daemon import Daemon
from ctrd.testing.content_suite import ContentStoreSuite

_seq = itertools.count()


#: the suite checks labels exactly, so it runs without the gc.root label: keep the remote's
#: collector from running instead
NO_GC = {
    "io.containerd.gc.v1.scheduler": {
        "startup_delay": "1h",
        "mutation_threshold": 0,
        "deletion_threshold": 1_000_000_000,
    }
}


@contextlib.asynccontextmanager
async def remote_ctrd(plugins: dict[str, Any] | None = None) -> AsyncIterator[str]:
    """An in-process ctrd (all built-in plugins); yields its socket."""
    with tempfile.TemporaryDirectory(prefix="ctrd-", dir="/tmp") as d:
        sock = f"{d}/s.sock"
        daemon = Daemon(
            Config(root=f"{d}/root", state=f"{d}/state", grpc=GrpcConfig(address=sock), plugins=plugins or {})
        )
        await daemon.start()
        try:
            yield sock
        finally:
            await daemon.stop(drain_timeout=1.0)


class TestProxyOverCtrd(ContentStoreSuite):
    """containerd's content test suite through the proxy (a backend store: no namespaces here)."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        async with remote_ctrd(NO_GC) as sock:
            conn = Connection(sock)
            try:
                yield ProxyContentStore(conn, f"suite{next(_seq)}", name="proxy plugin test", root_label="")
            finally:
                conn.close()


@pytest.fixture
async def remote() -> AsyncIterator[tuple[str, RemoteContentStore, Channel]]:
    async with remote_ctrd() as sock:
        ch = Channel(path=sock)
        try:
            yield sock, RemoteContentStore(ch), ch
        finally:
            ch.close()


async def test_fixed_namespace_no_lease_gc_root(remote: tuple[str, RemoteContentStore, Channel]) -> None:
    sock, direct, _ = remote
    conn = Connection(sock)
    proxy = ProxyContentStore(conn, "ctrd", name="p")
    data = b"proxied" * 100
    d = sha256_of(data)
    # the caller's namespace and lease (here one the remote does not know) are not sent
    with namespaces.with_namespace("callers-ns"), namespaces.with_lease("no-such-lease"):
        await write_blob(proxy, "default/1/ref", data, expected=d, labels={"a": "b"})
        info = await proxy.info(d)
        assert namespaces.current() == "callers-ns"
        got = [i.digest async for i in proxy.walk()]
        assert namespaces.current() == "callers-ns"
    assert got == [d]
    assert info.labels["a"] == "b"
    assert info.labels[GC_ROOT].endswith("Z")
    with namespaces.with_namespace("ctrd"):
        assert (await direct.info(d)).size == len(data)
    with namespaces.with_namespace("callers-ns"), pytest.raises(errdefs.NotFound):
        await direct.info(d)
    conn.close()


async def test_walk_yields_in_callers_context(remote: tuple[str, RemoteContentStore, Channel]) -> None:
    sock, _, _ = remote
    conn = Connection(sock)
    proxy = ProxyContentStore(conn, "ctrd")
    for i in range(3):
        data = f"blob {i}".encode()
        await write_blob(proxy, f"r{i}", data, expected=sha256_of(data))
    seen = []
    with namespaces.with_namespace("mine"):
        async for _info in proxy.walk():
            seen.append(namespaces.current())
    assert seen == ["mine"] * 3
    conn.close()


async def test_gc_root_kept_when_given(remote: tuple[str, RemoteContentStore, Channel]) -> None:
    sock, _, _ = remote
    conn = Connection(sock)
    proxy = ProxyContentStore(conn, "ctrd")
    data = b"x"
    await write_blob(proxy, "r", data, expected=sha256_of(data), labels={GC_ROOT: "mine"})
    assert (await proxy.info(sha256_of(data))).labels[GC_ROOT] == "mine"
    assert gc_root_value().endswith("Z")
    assert "T" in gc_root_value()
    conn.close()


async def test_writer_resumes_at_remote_offset(remote: tuple[str, RemoteContentStore, Channel]) -> None:
    sock, _, _ = remote
    conn = Connection(sock)
    proxy = ProxyContentStore(conn, "ctrd")
    data = bytes(range(256)) * 4096
    w = await proxy.writer("resume-me", total=len(data))
    await w.write(data[:300_000])
    await w.close()
    w = await proxy.writer("resume-me", total=len(data))
    st = await w.status()
    assert st.offset == 300_000
    assert st.total == len(data)
    await w.write(data[300_000:])
    assert w.digest() == sha256_of(data)  # the metadata store's commit gate keys on this
    await w.commit(len(data), sha256_of(data))
    ra = await proxy.reader_at(sha256_of(data))
    assert ra.size == len(data)
    assert await ra.read_at(1000, 10) == data[1000:1010]
    await ra.close()
    conn.close()


async def test_aclose_releases_the_shared_connection(remote: tuple[str, RemoteContentStore, Channel]) -> None:
    sock, _, _ = remote
    cache = ConnectionCache()
    c1, c2 = cache.acquire(sock), cache.acquire(sock)
    p1 = ProxyContentStore(c1, "a", on_close=lambda: cache.release(c1))
    p2 = ProxyContentStore(c2, "b", on_close=lambda: cache.release(c2))
    assert await p1.list_statuses() == []
    assert await p2.list_statuses() == []
    await p1.aclose()
    await p1.aclose()  # idempotent
    assert not c1.closed
    assert await p2.list_statuses() == []
    await p2.aclose()
    assert c1.closed
    with pytest.raises(errdefs.Unavailable):
        await p2.list_statuses()
