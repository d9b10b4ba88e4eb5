"""Garbage collection seen from outside: a real daemon (all built-in plugins) over gRPC.

Collections are forced the way a client would: ``Leases.Delete`` with ``sync=true``
returns only after the collection it triggered has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _imagedata import make_image
from grpclib.client import Channel

from ctrd import errdefs, namespaces
from ctrd.api.containerd import types as api_types
from ctrd.api.containerd.services.images import v1 as images_api
from ctrd.api.containerd.services.leases import v1 as leases_api
from ctrd.client import RemoteContentStore
from ctrd.content import read_blob, sha256_of, write_blob
from ctrd.gc import GCScheduler
from ctrd.server.config import Config, GrpcConfig
from ctrd.server.daemon import Daemon

ROOT = "containerd.io/gc.root"
REF = "containerd.io/gc.ref.content"


class Client:
    def __init__(self, daemon: Daemon, channel: Channel, root: Path) -> None:
        self.daemon = daemon
        self.channel = channel
        self.root = root
        self.store = RemoteContentStore(channel)
        self.leases = leases_api.LeasesStub(channel)
        self._n = 0

    def scheduler(self) -> GCScheduler:
        p = self.daemon.plugins.get("io.containerd.gc.v1.scheduler")
        assert p is not None, p and p.error
        assert isinstance(p.instance, GCScheduler), p and p.error
        return p.instance

    def files(self) -> set[str]:
        d = self.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
        return {f"sha256:{p.name}" for p in d.glob("*")} if d.exists() else set()

    async def create_lease(self, ns: str, lease_id: str = "") -> str:
        resp = await self.leases.create(
            leases_api.CreateRequest(id=lease_id), metadata={namespaces.GRPC_HEADER: ns}
        )
        return resp.lease.id

    async def delete_lease(self, ns: str, lease_id: str, *, sync: bool = True) -> None:
        await self.leases.delete(
            leases_api.DeleteRequest(id=lease_id, sync=sync), metadata={namespaces.GRPC_HEADER: ns}
        )

    async def collect(self) -> None:
        """Force a full collection (delete a throwaway lease with sync=true)."""
        self._n += 1
        lid = await self.create_lease("gc-trigger", f"trigger-{self._n}")
        await self.delete_lease("gc-trigger", lid)

    async def wait_gone(self, dgst: str, timeout: float = 5.0) -> float:
        t0 = time.monotonic()
        while dgst in self.files():
            assert time.monotonic() - t0 < timeout, f"{dgst} still on disk after {timeout}s"
            await asyncio.sleep(0.01)
        return time.monotonic() - t0


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    with tempfile.TemporaryDirectory(prefix="ctrd-", dir="/tmp") as d:
        sock = f"{d}/s.sock"
        cfg = Config(root=f"{d}/root", state=f"{d}/state", grpc=GrpcConfig(address=sock))
        daemon = Daemon(cfg)
        await daemon.start()
        channel = Channel(path=sock)
        try:
            yield Client(daemon, channel, Path(d) / "root")
        finally:
            channel.close()
            await daemon.stop(drain_timeout=2.0)


@contextlib.contextmanager
def ns(name: str, lease: str | None = None) -> Iterator[None]:
    with namespaces.with_namespace(name), namespaces.with_lease(lease):
        yield


def blob(tag: str) -> tuple[bytes, str]:
    data = f"grpc blob {tag}\n".encode() * 11
    return data, sha256_of(data)


async def test_unreferenced_blob_goes_within_bounded_time_after_delete(client: Client) -> None:
    (data, d), (kdata, keep) = blob("deleted"), blob("kept")
    with ns("n1"):
        await write_blob(client.store, "r", data, labels={ROOT: "1"})
        await write_blob(client.store, "k", kdata, labels={ROOT: "1"})
        await asyncio.sleep(0.3)  # past the start-up collection: both are rooted
        assert {d, keep} <= client.files()
        await client.store.delete(d)
    # deletion_threshold = 0: the delete alone schedules a collection, no later than the pause
    # limit allows (interval = average collection time / pause_threshold - average)
    sched = client.scheduler()
    bound = sched.interval + 1.0
    elapsed = await client.wait_gone(d, timeout=bound + 5.0)
    print(f"file removed {elapsed * 1000:.0f} ms after the delete (pause interval {sched.interval:.3f}s)")
    assert elapsed < bound
    assert keep in client.files()


async def test_root_and_reference_chain_survive(client: Client) -> None:
    (ldata, leaf), (mdata, mid), (rdata, root), (odata, loose) = (
        blob("leaf"),
        blob("mid"),
        blob("root"),
        blob("loose"),
    )
    # written bottom-up under a lease, as a client must (children are garbage until the root exists)
    lid = await client.create_lease("chain")
    with ns("chain", lease=lid):
        await write_blob(client.store, "leaf", ldata)
        await write_blob(client.store, "mid", mdata, labels={f"{REF}/leaf": leaf})
        await write_blob(client.store, "root", rdata, labels={ROOT: "x", f"{REF}.m": mid})
        await write_blob(client.store, "loose", odata)
    await client.delete_lease("chain", lid, sync=True)
    with ns("chain"):
        assert sorted([i.digest async for i in client.store.walk()]) == sorted([leaf, mid, root])
        assert await read_blob(client.store, leaf) == ldata
    assert loose not in client.files()


async def test_leased_content_survives_then_goes_with_the_lease(client: Client) -> None:
    data, d = blob("leased")
    lid = await client.create_lease("L")
    with ns("L", lease=lid):
        await write_blob(client.store, "r", data)
    await client.collect()
    with ns("L"):
        assert (await client.store.info(d)).size == len(data)
    await client.delete_lease("L", lid, sync=True)
    # sync: the collection has finished when Delete returns
    assert d not in client.files()
    with ns("L"), pytest.raises(errdefs.NotFound):
        await client.store.info(d)


async def test_shared_blob_file_lives_until_both_namespaces_drop_it(client: Client) -> None:
    data, d = blob("two namespaces")
    for name in ("s1", "s2"):
        with ns(name):
            await write_blob(client.store, "r", data, expected=d, labels={ROOT: name})
    with ns("s1"):
        await client.store.delete(d)
    await client.collect()
    assert d in client.files()
    with ns("s2"):
        assert await read_blob(client.store, d) == data
        await client.store.delete(d)
    await client.wait_gone(d)


async def test_lease_header_on_shared_admission_protects_the_blob(client: Client) -> None:
    data, d = blob("admitted")
    with ns("owner"):
        await write_blob(client.store, "r", data, labels={ROOT: "1"})
    lid = await client.create_lease("taker")
    with ns("taker", lease=lid):
        w = await client.store.writer("admit", expected=d, total=len(data))
        assert (await w.status()).offset == len(data)  # shared: no bytes to send
        await w.commit(len(data), d)
    with ns("owner"):
        await client.store.delete(d)
    await client.collect()
    with ns("taker"):
        assert await read_blob(client.store, d) == data
    await client.delete_lease("taker", lid)
    assert d not in client.files()


async def test_image_keeps_its_blobs_and_a_sync_delete_frees_them(client: Client) -> None:
    """The fetch order: blobs under a lease, the manifest labelled with its references, the image
    record, the lease gone; then ``Images.Delete`` with ``sync`` returns once they are collected."""
    img, other = make_image("grpc", n_layers=2), make_image("grpc-other", n_layers=1)
    images = images_api.ImagesStub(client.channel, metadata={namespaces.GRPC_HEADER: "img"})
    lid = await client.create_lease("img")
    with ns("img", lease=lid):
        for fetched in (img, other):
            for dgst, data in fetched.blobs.items():
                labels = fetched.manifest_labels() if dgst == fetched.manifest_digest else None
                await write_blob(client.store, f"ref-{dgst}", data, expected=dgst, labels=labels)
    for name, fetched in (("x:1", img), ("x:2", img), ("y", other)):
        t = fetched.target
        await images.create(
            images_api.CreateImageRequest(
                image=images_api.Image(
                    name=name,
                    target=api_types.Descriptor(media_type=t.media_type, digest=t.digest, size=t.size),
                )
            )
        )
    await client.delete_lease("img", lid, sync=True)
    assert img.all_digests | other.all_digests <= client.files()
    await images.delete(images_api.DeleteImageRequest(name="x:1", sync=True))
    assert img.all_digests <= client.files()  # x:2 still names the manifest
    await images.delete(images_api.DeleteImageRequest(name="x:2", sync=True))
    assert not img.all_digests & client.files()  # collected before Delete returned
    assert other.all_digests <= client.files()
