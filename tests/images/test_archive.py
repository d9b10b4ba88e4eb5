"""``client.images.export`` and ``client.images.import_``: OCI layout and ``docker save``
archives, against ctrd and containerd 1.6 (``images_backend``), compared with what Debian's
``ctr`` 1.6.20 writes and reads on the same daemon.

* the SDK's export is byte for byte ``ctr images export``'s (one platform, all platforms, a
  single manifest); a path target is written through a temporary file;
* importing an archive (``ctr``'s, the SDK's, a ``docker save`` one with repeated layers as
  links) gives the records, content and ``gc.ref`` labels ``ctr images import --no-unpack``
  gives; Docker images get the very manifest containerd's importer builds;
* names: annotations, bare tags (``import-<date>:<tag>``, ``base_name``), RepoTags;
* hostile archives (``..``, absolute names, links out, devices, wrong digests, truncation,
  oversized headers, not a tar) fail precisely and leave no record, no ingest, no file;
* memory: a 64 MiB layer is exported and imported in a few MiB.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import gzip
import hashlib
import io
import json
import os
import tarfile
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _imagedata import make_image

from ctrd import errdefs
from ctrd.client import Client, host_platform
from ctrd.images import Descriptor, Image, mediatypes
from ctrd.testing.registry import Registry

from ._archives import DockerImage, Member, docker_save, make_tar, oci_layout
from .conftest import Backend, TestImages

GC = "containerd.io/gc.ref.content."
NAME = "io.containerd.image.name"
REF = "org.opencontainers.image.ref.name"


async def ctr(backend: Backend, namespace: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *["/usr/bin/ctr", "--address", backend.address, "-n", namespace, *args],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"ctr {' '.join(args)}: {err.decode()}"
    return out.decode()


def native(images: TestImages) -> Any:
    return images.arm64 if host_platform().architecture == "arm64" else images.amd64


async def labels(client: Client) -> dict[str, dict[str, str]]:
    return {i.digest: dict(i.labels) async for i in client.content.list()}


def shape(images: list[Image]) -> list[tuple[str, Descriptor]]:
    return sorted((i.name, i.target) for i in images)


# -- export ------------------------------------------------------------------------------------


@pytest.mark.interop
async def test_export_is_ctrs_archive(
    images_client: Client, images_backend: Backend, registry: Registry, images: TestImages, tmp_path: Path
) -> None:
    ns = images_client.namespace
    app, single = f"{registry.host}/test/app:v1", f"{registry.host}/test/single:v1"
    await images_client.images.pull(app)
    await images_client.images.pull(single)
    for names in ([app], [single], [single, app]):
        ours, theirs = tmp_path / "ours.tar", tmp_path / "theirs.tar"
        size = await images_client.images.export(ours, *names)
        await ctr(images_backend, ns, "images", "export", str(theirs), *names)
        assert size == ours.stat().st_size
        if len(names) == 1:
            assert ours.read_bytes() == theirs.read_bytes(), names
        else:  # ctr orders manifest.json's entries as a Go map iterates: the rest is the same
            assert _members(ours) == _members(theirs)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left

    # every platform: the index's manifests all go, manifest.json keeps the host's
    other = images_client.with_namespace(ns + "-all")
    await other.images.pull(app, all_platforms=True)
    buf = io.BytesIO()
    await other.images.export(buf, app, all_platforms=True)
    await ctr(
        images_backend, other.namespace, "images", "export", "--all-platforms", str(tmp_path / "all.tar"), app
    )
    assert buf.getvalue() == (tmp_path / "all.tar").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        names = set(tf.getnames())
        docker = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    for img in (images.amd64, images.arm64):
        assert {f"blobs/sha256/{d[7:]}" for d in [img.manifest.digest, *img.blobs]} <= names
    assert docker[0]["Config"] == "blobs/sha256/" + native(images).config.digest[7:]
    assert docker[0]["RepoTags"] == [app]

    # one platform of a one-platform pull, the other missing
    with pytest.raises(errdefs.NotFound, match="not in the content store"):
        await images_client.images.export(io.BytesIO(), app, all_platforms=True)
    with pytest.raises(errdefs.NotFound, match="no manifest for the platform"):
        await images_client.images.export(io.BytesIO(), app, platforms=["linux/s390x"])
    with pytest.raises(errdefs.NotFound):
        await images_client.images.export(tmp_path / "none.tar", "no/such:image")
    assert not (tmp_path / "none.tar").exists()


def _members(path: Path) -> dict[str, Any]:
    with tarfile.open(path) as tf:
        out: dict[str, Any] = {}
        for m in tf.getmembers():
            data = tf.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            if m.name == "manifest.json":
                out[m.name] = sorted(json.dumps(e, sort_keys=True) for e in json.loads(data))
            else:
                out[m.name] = hashlib.sha256(data).hexdigest()
        return out


# -- import ------------------------------------------------------------------------------------


@pytest.mark.interop
async def test_import_of_exports_matches_ctr(
    images_client: Client, images_backend: Backend, registry: Registry, images: TestImages, tmp_path: Path
) -> None:
    app = f"{registry.host}/test/app:v1"
    await images_client.images.pull(app)
    await images_client.images.pull(f"{registry.host}/test/docker:v1", platforms=["linux/amd64"])
    tar = tmp_path / "x.tar"
    await ctr(
        images_backend,
        images_client.namespace,
        "images",
        "export",
        str(tar),
        app,
        f"{registry.host}/test/docker:v1",
    )
    for source in (tar, tar.read_bytes()):
        ours = images_client.with_namespace(images_client.namespace + "-sdk")
        got = await ours.images.import_(source if isinstance(source, Path) else io.BytesIO(source))
        theirs = images_client.with_namespace(images_client.namespace + "-ctr")
        await ctr(images_backend, theirs.namespace, "images", "import", "--no-unpack", str(tar))
        assert shape(got) == shape(await theirs.images.list())
        mine, ref = await labels(ours), await labels(theirs)
        assert mine == {d: ref[d] for d in mine}  # ctr also keeps index.json, unreferenced
        m = native(images)
        assert mine[images.index.digest] == {GC + "m.0": m.manifest.digest}  # the platform taken
        assert set(mine) >= {m.manifest.digest, *m.blobs}
        assert await ours.leases.list() == []
        assert await ours.content.list_statuses() == []


@pytest.mark.interop
async def test_import_docker_save_matches_ctr(
    images_client: Client, images_backend: Backend, tmp_path: Path
) -> None:
    base = tarfile_bytes({"etc/os-release": b"ID=test\n"})
    app = tarfile_bytes({"app/run": os.urandom(2000)})
    imgs = [
        DockerImage(["busybox:1.36", "example.com/team/app"], [gzip.compress(base, mtime=0), app, app]),
        DockerImage(["arm:1"], [app], architecture="arm64"),
        DockerImage([], [base]),
    ]
    tar = tmp_path / "save.tar"
    tar.write_bytes(docker_save(imgs))
    got = await images_client.images.import_(tar)
    theirs = images_client.with_namespace(images_client.namespace + "-ctr")
    await ctr(
        images_backend, theirs.namespace, "images", "import", "--no-unpack", "--all-platforms", str(tar)
    )
    assert shape(got) == shape(await theirs.images.list())
    by_name = {i.name: i for i in got}
    assert set(by_name) == {
        "docker.io/library/busybox:1.36",
        "example.com/team/app:latest",
        "docker.io/library/arm:1",
    }
    first = by_name["docker.io/library/busybox:1.36"].target
    assert first.digest == "sha256:" + hashlib.sha256(imgs[0].manifest()).hexdigest()  # containerd's bytes
    assert first.media_type == mediatypes.DOCKER_MANIFEST
    assert dict(first.annotations) == {NAME: "docker.io/library/busybox:1.36", REF: "1.36"}
    mine, ref = await labels(images_client), await labels(theirs)
    tree = {
        first.digest,
        by_name["docker.io/library/arm:1"].target.digest,
        imgs[0].config_digest,
        imgs[1].config_digest,
        *("sha256:" + hashlib.sha256(x).hexdigest() for x in (gzip.compress(base, mtime=0), app)),
    }
    assert {d: mine[d] for d in tree} == {d: ref[d] for d in tree}
    assert mine[first.digest] == {
        GC + "config": imgs[0].config_digest,
        GC + "l.0": "sha256:" + hashlib.sha256(gzip.compress(base, mtime=0)).hexdigest(),
        GC + "l.1": "sha256:" + hashlib.sha256(app).hexdigest(),
        GC + "l.2": "sha256:" + hashlib.sha256(app).hexdigest(),
    }
    doc = json.loads(await images_client.content.read_all(first.digest))
    assert [x["mediaType"] for x in doc["layers"]] == [
        mediatypes.DOCKER_LAYER_GZIP,
        mediatypes.DOCKER_LAYER,
        mediatypes.DOCKER_LAYER,
    ]

    # importing again points the names at the same targets, keeps their labels
    await images_client.images.update(Image("docker.io/library/arm:1", first, {"keep": "me"}), ["labels"])
    again = await images_client.images.import_(tar)
    assert shape(again) == shape(got)
    assert (await images_client.images.get("docker.io/library/arm:1")).labels == {"keep": "me"}


def tarfile_bytes(files: dict[str, bytes]) -> bytes:
    return make_tar([Member(k, v) for k, v in files.items()])


async def test_import_names(images_client: Client) -> None:
    img = make_image("names", n_layers=1)
    entries = [
        {**_desc(img.target), "annotations": {REF: "latest"}},
        {**_desc(img.target), "annotations": {REF: "example.com/other:2"}},
        {**_desc(img.target), "annotations": {REF: "example.com/app:3"}},
        _desc(img.target),  # unnamed: stored, not recorded
    ]
    tar = oci_layout(list(img.blobs.values()), entries)
    got = await images_client.images.import_(io.BytesIO(tar))
    today = _dt.date.today().isoformat()
    assert sorted(i.name for i in got) == [
        "example.com/app:3",
        "example.com/other:2",
        f"import-{today}:latest",
    ]
    assert got[0].target.annotations == {REF: "latest"}
    other = images_client.with_namespace(images_client.namespace + "-base")
    got = await other.images.import_(io.BytesIO(tar), base_name="example.com/app")
    assert sorted(i.name for i in got) == ["example.com/app:3", "example.com/app:latest"]
    infos = await labels(other)
    assert infos[img.manifest_digest] == img.manifest_labels()


def _desc(d: Descriptor) -> dict[str, Any]:
    return {"mediaType": d.media_type, "digest": d.digest, "size": d.size}


async def _chunks(data: bytes, n: int = 7777) -> AsyncIterator[bytes]:
    for i in range(0, len(data), n):
        yield data[i : i + n]


async def test_import_sources_gzip_and_devices(images_client: Client, tmp_path: Path) -> None:
    img = make_image("gz", n_layers=2)
    named = [{**_desc(img.target), "annotations": {NAME: "example.com/gz:1"}}]
    odd = [
        Member("dev/null", type=tarfile.CHRTYPE),
        Member("fifo", type=tarfile.FIFOTYPE),
        Member("blobs/", type=tarfile.DIRTYPE),
        Member("./blobs/extra", b"not referenced"),
    ]
    tar = oci_layout(list(img.blobs.values()), named, extra=odd)
    for source in (gzip.compress(tar), tar):
        ns = images_client.with_namespace(f"{images_client.namespace}-{len(source)}")
        got = await ns.images.import_(_chunks(source))
        assert [i.name for i in got] == ["example.com/gz:1"]
        assert img.all_digests <= {i.digest async for i in ns.content.list()}
    assert sorted(os.listdir(tmp_path)) == []


HOSTILE = [
    ("../evil", [Member("../evil", b"x")], errdefs.InvalidArgument, "'..'"),
    ("absolute", [Member("/tmp/ctrd-evil", b"x")], errdefs.InvalidArgument, "absolute"),
    (
        "link out",
        [Member("l", type=tarfile.SYMTYPE, link="../../etc/passwd")],
        errdefs.InvalidArgument,
        "outside",
    ),
    ("abs link", [Member("l", type=tarfile.SYMTYPE, link="/etc/passwd")], errdefs.InvalidArgument, "outside"),
    ("hard link out", [Member("h", type=tarfile.LNKTYPE, link="../x")], errdefs.InvalidArgument, "outside"),
    (
        "pax bomb",
        [Member("big", b"x", pax={"comment": "y" * (1 << 20)})],
        errdefs.ResourceExhausted,
        "pax header",
    ),
    (
        "wrong digest",
        [Member("blobs/sha256/" + "0" * 64, b"not that")],
        errdefs.DataLoss,
        "is not the blob its name says",
    ),
    ("nothing", [Member("hello", b"x")], errdefs.InvalidArgument, "unrecognized image format"),
    ("bad layout", [Member("oci-layout", b'{"imageLayoutVersion":"9"}')], errdefs.InvalidArgument, "version"),
    ("bad json", [Member("oci-layout", b"{"), Member("index.json", b"{")], errdefs.InvalidArgument, "JSON"),
]


@pytest.mark.parametrize(("case", "members", "error", "match"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_import_refuses_hostile_archives(
    images_client: Client,
    tmp_path: Path,
    case: str,
    members: list[Member],
    error: type[Exception],
    match: str,
) -> None:
    img = make_image("hostile", n_layers=1)
    named = [{**_desc(img.target), "annotations": {NAME: "example.com/hostile:1"}}]
    tar = oci_layout(list(img.blobs.values()), named, extra=members)
    if case in ("nothing", "bad layout", "bad json"):
        tar = make_tar(members)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(error, match=match):
            await images_client.images.import_(io.BytesIO(tar))
    finally:
        os.chdir(cwd)
    assert list(tmp_path.iterdir()) == []
    assert not os.path.exists("/tmp/ctrd-evil")
    assert await images_client.images.list() == []
    assert await images_client.content.list_statuses() == []
    assert await images_client.leases.list() == []


async def test_import_refuses_broken_archives(images_client: Client) -> None:
    img = make_image("broken", n_layers=2)
    named = [{**_desc(img.target), "annotations": {NAME: "example.com/broken:1"}}]
    full = oci_layout(list(img.blobs.values()), named)
    with pytest.raises(errdefs.InvalidArgument, match="truncated"):
        await images_client.images.import_(io.BytesIO(full[: len(full) // 2 + 100]))
    with pytest.raises(errdefs.InvalidArgument, match="not a tar archive"):
        await images_client.images.import_(io.BytesIO(os.urandom(4096)))
    with pytest.raises(errdefs.InvalidArgument, match="gzip"):
        await images_client.images.import_(io.BytesIO(gzip.compress(full)[:-100]))
    # a layer the manifest names is in neither the archive nor the namespace
    missing = oci_layout([b for d, b in img.blobs.items() if d != img.layer_digests[1]], named)
    with pytest.raises(errdefs.NotFound, match=img.layer_digests[1]):
        await images_client.images.import_(io.BytesIO(missing))
    # a docker archive whose manifest.json names a file that is not there
    bad = make_tar([Member("manifest.json", json.dumps([{"Config": "c.json", "Layers": []}]).encode())])
    with pytest.raises(errdefs.InvalidArgument, match=r"image config 'c\.json' is not in the archive"):
        await images_client.images.import_(io.BytesIO(bad))
    assert await images_client.images.list() == []
    assert await images_client.content.list_statuses() == []


async def test_import_all_platforms_needs_them(
    images_client: Client, registry: Registry, images: TestImages
) -> None:
    app = f"{registry.host}/test/app:v1"
    await images_client.images.pull(app)
    buf = io.BytesIO()
    await images_client.images.export(buf, app)
    other = images_client.with_namespace(images_client.namespace + "-b")
    with pytest.raises(errdefs.NotFound, match="neither in the archive nor in the namespace"):
        await other.images.import_(io.BytesIO(buf.getvalue()), all_platforms=True)
    assert await other.images.list() == []
    got = await other.images.import_(io.BytesIO(buf.getvalue()))
    assert [i.name for i in got] == [app]


@pytest.mark.parametrize("images_backend", ["ctrd"], indirect=True)
async def test_export_and_import_stream_in_bounded_memory(images_client: Client, tmp_path: Path) -> None:
    """A 64 MiB layer goes through export and import without being held in memory: the
    SDK's Python allocations peak under 16 MiB each way."""
    layer = tmp_path / "layer"
    with layer.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    async with images_client.lease():
        info = await images_client.content.ingest("big-layer", layer)
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
        cinfo = await images_client.content.ingest("big-config", config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mediatypes.OCI_MANIFEST,
                "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": cinfo.digest, "size": cinfo.size},
                "layers": [{"mediaType": mediatypes.OCI_LAYER, "digest": info.digest, "size": info.size}],
            }
        ).encode()
        labels = {GC + "config": cinfo.digest, GC + "l.0": info.digest}
        minfo = await images_client.content.ingest("big-manifest", manifest, labels=labels)
        await images_client.images.create(
            Image("example.com/big:1", Descriptor(mediatypes.OCI_MANIFEST, minfo.digest, minfo.size))
        )
    layer.unlink()
    out = tmp_path / "big.tar"
    tracemalloc.start()
    try:
        await images_client.images.export(out, "example.com/big:1")
        _, export_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        other = images_client.with_namespace(images_client.namespace + "-in")
        got = await other.images.import_(out)
        _, import_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.stat().st_size > 64 << 20
    assert [i.name for i in got] == ["example.com/big:1"]
    assert (await other.content.info(info.digest)).size == 64 << 20
    assert export_peak < 16 << 20, export_peak
    assert import_peak < 16 << 20, import_peak
