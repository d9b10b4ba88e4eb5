"""ctrd on containerd: ctrd's content plugin disabled, a content proxy to a private containerd.

Debian's ``ctr`` drives ctrd; the bytes live in containerd's content store (its
``blobs/sha256`` directory), in the remote namespace ``ctrd``, labelled
``containerd.io/gc.root`` so containerd's collector keeps them until ctrd
deletes them. Also: containerd's own content conformance suite through the
proxy, and resuming an interrupted ingest through ctrd.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel

from ctrd import errdefs, namespaces
from ctrd.client import RemoteContentStore
from ctrd.content import Store, sha256_of
from ctrd.proxy.content import ProxyContentStore
from ctrd.remote import Connection
from ctrd.testing import Containerd, running_containerd
from ctrd.testing.content_suite import ContentStoreSuite

pytestmark = pytest.mark.interop

CTR = "/usr/bin/ctr"

# ``ctr content ingest`` holds no lease: keep ctrd's start-up collection out of the way
NO_STARTUP_GC = '[plugins."io.containerd.gc.v1.scheduler"]\n  startup_delay = "1h"\n  pause_threshold = 0.5\n'


def proxy_config(address: str, namespace: str = "ctrd") -> str:
    return (
        'disabled_plugins = ["io.containerd.content.v1.content"]\n'
        + NO_STARTUP_GC
        + f'[proxy_plugins.containerd]\n  type = "content"\n  address = "{address}"\n'
        + f'  namespace = "{namespace}"\n'
    )


def ctr(
    sock: str, *args: str, ns: str = "default", data: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [CTR, "--address", sock, "--namespace", ns, *args],
        input=data if data is not None else b"",
        capture_output=True,
        timeout=60,
        check=False,
    )


def ok(p: subprocess.CompletedProcess[bytes]) -> str:
    assert p.returncode == 0, f"ctr failed ({p.returncode}): {p.stderr.decode(errors='replace')}"
    return p.stdout.decode(errors="replace")


@pytest.fixture
def containerd() -> Iterator[Containerd]:
    with running_containerd(wait_for_startup_gc=True) as c:
        yield c


def test_ctr_against_ctrd_stores_in_containerd(daemon: Callable[..., Any], containerd: Containerd) -> None:
    d = daemon(proxy_config(containerd.socket))
    plugins = ok(ctr(d.socket, "plugins", "ls"))
    assert any(
        line.split()[:2] == ["io.containerd.content.v1", "containerd"] and line.split()[-1] == "ok"
        for line in plugins.splitlines()
    ), plugins
    assert "io.containerd.content.v1        content" not in plugins
    detail = ok(ctr(d.socket, "plugins", "ls", "-d", "id==containerd"))
    assert containerd.socket in detail
    assert "namespace" in detail

    data = os.urandom(3 * 1024 * 1024 + 17)
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    ok(ctr(d.socket, "content", "ingest", "ref1", ns="work", data=data))
    ls = ok(ctr(d.socket, "content", "ls", ns="work"))
    assert dgst in ls
    assert "3.146MB" in ls
    assert ok(ctr(d.socket, "content", "ls", "-q", ns="other")).split() == []
    got = ctr(d.socket, "content", "get", dgst, ns="work")
    assert got.returncode == 0
    assert got.stdout == data

    # the bytes are in containerd's store, in its namespace "ctrd", rooted for its GC
    assert containerd.blobs() == [dgst]
    assert not (Path(d.root) / "io.containerd.content.v1.content").exists()
    remote_ls = ok(ctr(containerd.socket, "content", "ls", ns="ctrd"))
    assert dgst in remote_ls
    assert "containerd.io/gc.root=" in remote_ls
    assert ok(ctr(containerd.socket, "content", "ls", "-q", ns="work")).split() == []

    # a second ctrd namespace holding the same digest: still one blob in containerd
    ok(ctr(d.socket, "content", "ingest", "ref2", ns="second", data=data))
    assert containerd.blobs() == [dgst]

    # delete from both: ctrd's collector deletes it from containerd, containerd's removes the file
    ok(ctr(d.socket, "content", "rm", dgst, ns="work"))
    assert containerd.blobs() == [dgst]
    ok(ctr(d.socket, "content", "rm", dgst, ns="second"))
    d.wait_for(lambda: containerd.blobs() == [], timeout=20, what="blob removed from containerd")
    assert ok(ctr(containerd.socket, "content", "ls", "-q", ns="ctrd")).split() == []
    assert ok(ctr(d.socket, "content", "ls", "-q", ns="work")).split() == []


async def test_unavailable_with_address_when_containerd_is_down(
    daemon: Callable[..., Any], containerd: Containerd
) -> None:
    d = daemon(proxy_config(containerd.socket))
    ok(ctr(d.socket, "content", "ingest", "r", data=b"before"))
    containerd.stop()
    # ctr reads: one prompt error naming the address
    p = ctr(d.socket, "content", "get", sha256_of(b"before"))
    err = p.stderr.decode()
    assert p.returncode != 0, err
    assert "Unavailable" in err, err
    assert f"unix://{containerd.socket}" in err, err
    # writes: ctr's writer would retry UNAVAILABLE (containerd's "ref locked") until its context
    # ends, so ask with a client that does not retry: each attempt is answered at once
    ch = Channel(path=d.socket)
    try:
        store = RemoteContentStore(ch, namespace="default", timeout=30)
        for _ in range(3):
            with pytest.raises(errdefs.Unavailable) as ei:
                await store.writer("r2")
            assert f"unix://{containerd.socket}" in str(ei.value)
            assert "io.containerd.content.v1.containerd" in str(ei.value)
    finally:
        ch.close()
    # ctrd itself keeps serving what its metadata knows
    assert ok(ctr(d.socket, "content", "ls", "-q")).split() == [sha256_of(b"before")]


async def test_interrupted_ingest_resumes_through_ctrd(
    daemon: Callable[..., Any], containerd: Containerd
) -> None:
    d = daemon(proxy_config(containerd.socket))
    data = os.urandom(2 * 1024 * 1024)
    ch = Channel(path=d.socket)
    try:
        store = RemoteContentStore(ch, namespace="work", timeout=30)
        w = await store.writer("resumable", total=len(data))
        await w.write(data[:700_000])
        await w.close()
        # the partial ingest lives in containerd under ctrd's backend ref
        active = ok(ctr(containerd.socket, "content", "active", ns="ctrd"))
        assert "work/" in active
        assert "resumable" in active
        w = await store.writer("resumable", total=len(data))
        assert (await w.status()).offset == 700_000
        await w.write(data[700_000:])
        await w.commit(len(data), sha256_of(data))
        assert (await store.info(sha256_of(data))).size == len(data)
        with pytest.raises(errdefs.NotFound):
            await store.status("resumable")
    finally:
        ch.close()
    assert sha256_of(data) in containerd.blobs()


# -- containerd's content test suite through the proxy, against containerd ---------------------

_seq = itertools.count()


@pytest.fixture(scope="module")
def quiet_containerd() -> Iterator[Containerd]:
    # the suite checks labels exactly, so it runs without the gc.root label and without GC
    with running_containerd(gc={"deletion_threshold": 1_000_000_000, "startup_delay": "1h"}) as c:
        yield c


class TestProxySuiteOnContainerd(ContentStoreSuite):
    @pytest.fixture
    async def store(self, quiet_containerd: Containerd) -> AsyncIterator[Store]:
        conn = Connection(quiet_containerd.socket)
        try:
            yield ProxyContentStore(conn, f"suite{next(_seq)}", name="proxy", root_label="")
        finally:
            conn.close()


def test_namespace_header_is_the_proxys(containerd: Containerd) -> None:
    """Checked without ctrd's server: whatever the caller's context, calls act in the proxy namespace."""
    import asyncio

    async def run() -> None:
        conn = Connection(containerd.socket)
        proxy = ProxyContentStore(conn, "ctrd-test")
        with namespaces.with_namespace("elsewhere"), namespaces.with_lease("nope"):
            w = await proxy.writer("r")
            await w.write(b"abc")
            await w.commit(3, sha256_of(b"abc"))
        conn.close()

    asyncio.run(run())
    assert ok(ctr(containerd.socket, "content", "ls", "-q", ns="ctrd-test")).split() == [sha256_of(b"abc")]
