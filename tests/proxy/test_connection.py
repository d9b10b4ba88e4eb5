"""The proxy connection cache: lazy dial, bounded back-off, time-outs, UNAVAILABLE naming the address."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ctrd import errdefs
from ctrd.proxy.connection import ConnectionCache
from ctrd.proxy.content import ProxyContentStore
from ctrd.remote import Address, Connection, parse_address


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("/run/x.sock", Address(path="/run/x.sock")),
        ("unix:///run/x.sock", Address(path="/run/x.sock")),
        ("127.0.0.1:1234", Address(host="127.0.0.1", port=1234)),
        ("tcp://localhost:50051", Address(host="localhost", port=50051)),
        ("[::1]:7", Address(host="::1", port=7)),
    ],
)
def test_parse_address(address: str, target: Address) -> None:
    assert parse_address(address, strict=True) == target


@pytest.mark.parametrize(
    "address", ["relative.sock", "unix://rel.sock", "host", ":80", "host:http", "a:99999"]
)
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=re.escape(repr(address))):
        parse_address(address, strict=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_unreachable_is_unavailable_with_address_and_backs_off(tmp_path: Path) -> None:
    sock = str(tmp_path / "nobody.sock")
    clock = FakeClock()
    conn = Connection(sock, backoff_base=0.5, backoff_max=2.0, clock=clock)
    assert conn.dials == 0  # lazy: creating it dials nothing
    with pytest.raises(errdefs.Unavailable) as ei:
        async with conn.call("proxy plugin io.containerd.content.v1.p"):
            pass
    msg = str(ei.value)
    assert f"unix://{sock}" in msg, msg
    assert "proxy plugin io.containerd.content.v1.p" in msg, msg
    assert conn.dials == 1
    # within the back-off window: fails at once, without dialling
    with pytest.raises(errdefs.Unavailable, match=r"next attempt in 0\.5s"):
        await conn.connect()
    assert conn.dials == 1
    # the delay doubles, bounded by backoff_max
    delays = []
    for _ in range(5):
        clock.now = conn._retry_at
        with pytest.raises(errdefs.Unavailable):
            await conn.connect()
        delays.append(conn._delay)
    assert delays == [1.0, 2.0, 2.0, 2.0, 2.0]
    assert conn.dials == 6


async def _serve_ctrd(d: str) -> AsyncIterator[str]:
    from ctrd.server.config import Config, GrpcConfig
    from ctrd.server.daemon import Daemon

    sock = f"{d}/s.sock"
    daemon = Daemon(Config(root=f"{d}/root", state=f"{d}/state", grpc=GrpcConfig(address=sock)))
    await daemon.start()
    try:
        yield sock
    finally:
        await daemon.stop(drain_timeout=1.0)


async def test_recovers_after_the_remote_comes_back(tmp_path: Path) -> None:
    d = str(tmp_path)
    sock = f"{d}/s.sock"
    clock = FakeClock()
    conn = Connection(sock, backoff_base=0.2, clock=clock)
    store = ProxyContentStore(conn, "ns", name="p")
    with pytest.raises(errdefs.Unavailable, match="connect to unix://"):
        await store.list_statuses()
    gen = _serve_ctrd(d)
    await anext(gen)
    try:
        # still backing off: fails fast although the remote is up again
        with pytest.raises(errdefs.Unavailable, match="next attempt"):
            await store.list_statuses()
        clock.now += 1.0
        assert await store.list_statuses() == []
        assert conn.connected
    finally:
        with contextlib.suppress(StopAsyncIteration):
            await anext(gen)
    # the remote went away: the next call reports it, naming the address
    with pytest.raises(errdefs.Unavailable) as ei:
        await store.list_statuses()
    assert f"unix://{sock}" in str(ei.value)
    conn.close()


@contextlib.asynccontextmanager
async def silent_server(path: str) -> AsyncIterator[list[socket.socket]]:
    """A unix socket that accepts connections and never answers."""
    accepted: list[socket.socket] = []
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    srv.setblocking(False)
    loop = asyncio.get_running_loop()

    async def accept() -> None:
        while True:
            c, _ = await loop.sock_accept(srv)
            accepted.append(c)

    task = asyncio.create_task(accept())
    try:
        yield accepted
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for c in accepted:
            c.close()
        srv.close()
        os.unlink(path)


async def test_a_hung_remote_times_out_as_unavailable(tmp_path: Path) -> None:
    sock = str(tmp_path / "silent.sock")
    async with silent_server(sock):
        conn = Connection(sock)
        store = ProxyContentStore(conn, "ns", name="proxy plugin x", timeout=0.3)
        t0 = time.monotonic()
        for call in (store.info("sha256:" + "0" * 64), store.list_statuses(), store.writer("ref")):
            with pytest.raises(errdefs.Unavailable) as ei:
                await call
            assert "timed out" in str(ei.value)
            assert f"unix://{sock}" in str(ei.value)
        with pytest.raises(errdefs.Unavailable, match="timed out"):
            async for _ in store.walk():
                pass
        assert time.monotonic() - t0 < 5
        conn.close()


async def test_cache_shares_and_closes(tmp_path: Path) -> None:
    cache = ConnectionCache()
    a = cache.acquire("/x/a.sock")
    b = cache.acquire(" /x/a.sock ")
    c = cache.acquire("/x/c.sock")
    assert a is b
    assert a is not c
    assert len(cache) == 2
    cache.release(a)
    assert not a.closed
    cache.release(b)
    assert a.closed
    assert len(cache) == 1
    with pytest.raises(errdefs.Unavailable, match="closed"):
        await a.connect()
    # a new acquire after the close gets a fresh connection
    d = cache.acquire("/x/a.sock")
    assert d is not a
    assert not d.closed
    cache.close()
    assert c.closed
    assert d.closed
    assert len(cache) == 0


async def test_concurrent_callers_share_one_dial(tmp_path: Path) -> None:
    clock = FakeClock()
    conn = Connection(str(tmp_path / "none.sock"), backoff_base=0.5, clock=clock)
    results = await asyncio.gather(*(conn.connect() for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, errdefs.Unavailable) for r in results)
    assert conn.dials == 1
    assert conn._delay == 0.5
