"""Garbage collection follows images (containerd 1.6's ``metadata/gc.go``): an image is a root for
its target and for the digests its ``containerd.io/gc.ref.content*`` labels name; the manifest's
labels carry the rest (config, layers). Images never expire and leases hold none. Over a real SQLite
database and local store, under both sharing policies where the namespace boundary matters."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _imagedata import ImageData, make_image

from ctrd import errdefs, namespaces
from ctrd.content import write_blob
from ctrd.content.local import LocalStore
from ctrd.gc import GCScheduler
from ctrd.images import Descriptor, Image
from ctrd.metadata import (
    DB,
    CollectingImageStore,
    NamespacedContentStore,
    Resource,
    SharingPolicy,
    SqliteImageStore,
    SqliteLeaseStore,
)
from ctrd.metadata.gc import GarbageCollector, GCStats

REF = "containerd.io/gc.ref.content"


@contextlib.contextmanager
def ns(name: str) -> Iterator[None]:
    with namespaces.with_namespace(name):
        yield


class Env:
    def __init__(self, root: Path, db: DB, policy: SharingPolicy) -> None:
        self.root = root
        self.db = db
        self.backend = LocalStore(root / "content")
        self.store = NamespacedContentStore(db, self.backend, policy)
        self.images = SqliteImageStore(db)
        self.gc = GarbageCollector(db, self.backend, self.store.gate)

    async def collect(self) -> GCStats:
        return await self.gc.collect()

    def files(self) -> set[str]:
        d = self.root / "content" / "blobs" / "sha256"
        return {f"sha256:{p.name}" for p in d.glob("*")} if d.exists() else set()

    async def rows(self, namespace: str) -> set[str]:
        rows = await self.db.view_all("SELECT digest FROM blobs WHERE namespace = ?", (namespace,))
        return {str(r[0]) for r in rows}

    async def ingest(self, img: ImageData, *, labels: bool = True) -> None:
        """Write the image's blobs in the current namespace, the manifest labelled as a fetch does."""
        for dgst, data in img.blobs.items():
            lbls = img.manifest_labels() if labels and dgst == img.manifest_digest else None
            await write_blob(self.store, f"ref-{dgst}", data, expected=dgst, labels=lbls)


async def _env(tmp_path: Path, policy: SharingPolicy) -> AsyncIterator[Env]:
    db = DB(tmp_path / "meta.db")
    await db.open()
    try:
        yield Env(tmp_path, db, policy)
    finally:
        await db.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in _env(tmp_path, SharingPolicy.SHARED):
        yield e


@pytest.fixture(params=list(SharingPolicy), ids=lambda p: p.value)
async def any_policy(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    async for e in _env(tmp_path, request.param):
        yield e


def record(name: str, img: ImageData, **labels: str) -> Image:
    return Image(name, img.target, labels)


async def test_image_keeps_manifest_config_and_layers_until_deleted(any_policy: Env) -> None:
    env = any_policy
    img, loose = make_image("kept", n_layers=3), make_image("loose", n_layers=1)
    with ns("a"):
        await env.ingest(img)
        await env.ingest(loose)
        await env.images.create(record("example.com/kept:1", img))
    stats = await env.collect()
    assert await env.rows("a") == img.all_digests  # 1 manifest, 1 config, 3 layers
    assert env.files() == img.all_digests
    assert (stats.blobs, stats.files) == (len(loose.all_digests), len(loose.all_digests))
    assert not (await env.collect()).removed_anything()  # stable
    with ns("a"):
        await env.images.delete("example.com/kept:1")
    stats = await env.collect()
    assert (stats.blobs, stats.files, stats.bytes) == (5, 5, img.size)
    assert await env.rows("a") == set()
    assert env.files() == set()


async def test_without_the_manifest_labels_only_the_target_stays(env: Env) -> None:
    img = make_image("unlabelled")
    with ns("a"):
        await env.ingest(img, labels=False)
        await env.images.create(record("x", img))
    await env.collect()
    assert await env.rows("a") == {img.manifest_digest}


async def test_two_images_of_one_manifest(env: Env) -> None:
    img = make_image("twice")
    with ns("a"):
        await env.ingest(img)
        await env.images.create(record("x:1", img))
        await env.images.create(record("x:2", img))
        await env.images.delete("x:1")
    assert not (await env.collect()).removed_anything()
    assert env.files() == img.all_digests
    with ns("a"):
        await env.images.delete("x:2")
    assert (await env.collect()).files == len(img.all_digests)


async def test_image_labels_reference_content(env: Env) -> None:
    img = make_image("target")
    extra = {t: make_image(t, n_layers=0) for t in ("bare", "dot", "slash", "lookalike")}
    labels = {
        REF: extra["bare"].manifest_digest,
        f"{REF}.sig": extra["dot"].manifest_digest,
        f"{REF}/att": extra["slash"].manifest_digest,
        f"{REF}x": extra["lookalike"].manifest_digest,  # not a reference
    }
    with ns("a"):
        await env.ingest(img)
        for e in extra.values():
            await env.ingest(e)  # each manifest references its config, transitively kept
        await env.images.create(record("x", img, **labels))
    await env.collect()
    kept = img.all_digests | {d for t in ("bare", "dot", "slash") for d in extra[t].all_digests}
    assert await env.rows("a") == kept
    with ns("a"):
        await env.images.update(Image("x", img.target), ["labels"])  # drop the labels
    await env.collect()
    assert await env.rows("a") == img.all_digests


async def test_retargeting_frees_the_old_manifest(env: Env) -> None:
    old, new = make_image("old"), make_image("new")
    with ns("a"):
        await env.ingest(old)
        await env.ingest(new)
        await env.images.create(record("x", old))
        await env.images.create(record("y", new))
        await env.images.update(Image("x", new.target), ["target"])
    await env.collect()
    assert env.files() == new.all_digests


async def test_images_never_expire(env: Env) -> None:
    img = make_image("old")
    with ns("a"):
        await env.ingest(img)
        await env.images.create(record("x", img, **{"containerd.io/gc.expire": "2000-01-01T00:00:00Z"}))
    assert not (await env.collect()).removed_anything()
    assert env.files() == img.all_digests


async def test_an_image_keeps_nothing_in_another_namespace(any_policy: Env) -> None:
    env = any_policy
    img = make_image("theirs")
    with ns("a"):
        await env.ingest(img)
    with ns("b"):
        await env.images.create(record("x", img, **{f"{REF}.c": img.config_digest}))
    await env.collect()
    assert await env.rows("a") == set()
    assert env.files() == set()
    # once b holds the blobs itself, its image keeps them
    with ns("b"):
        await env.ingest(img)
    assert not (await env.collect()).removed_anything()
    assert await env.rows("b") == img.all_digests


async def test_snapshot_references_are_left_alone(env: Env) -> None:
    """``containerd.io/gc.ref.snapshot.<snapshotter>`` labels (what unpacking puts on a config) keep
    no content and break nothing while ctrd has no snapshots."""
    img = make_image("unpacked")
    with ns("a"):
        await env.ingest(img)
        await env.images.create(
            record("x", img, **{"containerd.io/gc.ref.snapshot.overlayfs": img.config_digest})
        )
    assert not (await env.collect()).removed_anything()
    with ns("a"):
        await env.images.delete("x")
    assert (await env.collect()).files == len(img.all_digests)


async def test_leases_hold_no_images(env: Env) -> None:
    leases = SqliteLeaseStore(env.db)
    with ns("a"):
        await leases.create("l")
        with pytest.raises(errdefs.Unimplemented, match="resource type images not supported yet"):
            await leases.add_resource("l", Resource(id="x", type="images"))


async def test_sync_delete_returns_after_the_collection(env: Env) -> None:
    img = make_image("sync")
    deletions: list[int] = []
    # nothing but an explicit request collects: no start-up run, no deletion or mutation trigger
    sched = GCScheduler(
        env.gc.collect,
        lambda: env.db.mutations,
        deletion_threshold=1_000_000,
        mutation_threshold=0,
        startup_delay=3600,
    )
    env.images.observe_deletions(lambda: deletions.append(1))
    env.images.observe_deletions(sched.notify_deletion)
    images = CollectingImageStore(env.images, sched.schedule_and_wait)
    sched.start()
    try:
        with ns("a"):
            await env.ingest(img)
            await images.create(record("x:1", img))
            await images.create(record("x:2", img))
            await images.delete("x:1")
            assert env.files() == img.all_digests
            await images.delete("x:2", sync=True)
            assert env.files() == set()  # collected before delete returned
        assert deletions == [1, 1]
        assert sched.runs == 1
    finally:
        await sched.aclose()


async def test_image_target_descriptor_is_what_counts(env: Env) -> None:
    """The record's digest is the root: the size and media type it names change nothing."""
    img = make_image("desc")
    with ns("a"):
        await env.ingest(img)
        await env.images.create(Image("x", Descriptor("application/x-anything", img.manifest_digest, 1)))
    assert not (await env.collect()).removed_anything()
