"""Debian's ``ctr`` 1.6.20 and containerd 1.6 against ctrd's image store.

* ``ctr images ls / check / tag / label / export / import --no-unpack / rm [--sync]`` on an image
  record made the SDK-less way
  (blobs through ``ctr content ingest`` and ``ctr content label``, the record through
  ``Images.Create`` over grpclib);
* the same record and ``ctr`` verbs against a private containerd: the same rows;
* one script of ``Images`` calls (create, the errors, updates by mask, filters, delete) against
  ctrd and containerd: the same answers.

These tests FAIL (never skip) when ``/usr/bin/ctr`` or containerd is missing (see ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import re
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _daemon import CTR
from _imagedata import ImageData, make_image
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from ctrd import namespaces
from ctrd.api.containerd import types as api_types
from ctrd.api.containerd.services.images import v1 as api
from ctrd.api.containerd.services.leases import v1 as leases_api
from ctrd.api.google.protobuf import FieldMask
from ctrd.client import RemoteContentStore
from ctrd.content import write_blob
from ctrd.testing import Containerd, running_containerd

pytestmark = pytest.mark.interop

NS = "default"
# ``ctr content ingest`` holds no lease: what it writes is garbage until the image names it, so
# no collection may run before the record exists but the ones ``rm --sync`` asks for
QUIET_GC = '[plugins."io.containerd.gc.v1.scheduler"]\n  startup_delay = "1h"\n  mutation_threshold = 0\n'


def ctr(sock: str, *args: str, stdin: bytes | None = None, ns: str = NS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CTR, "--address", sock, "--namespace", ns, *args],
        input=stdin.decode("latin-1") if stdin is not None else "",
        capture_output=True,
        text=True,
        encoding="latin-1",
        timeout=60,
        check=False,
    )


def ok(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, f"ctr failed ({p.returncode}): {p.stderr}"
    return p.stdout


def table(text: str) -> list[list[str]]:
    """A tabwriter table as rows of cells (header first)."""
    return [line.split() for line in text.splitlines() if line.strip()]


def human(size: int) -> str:
    """containerd's ``progress.Bytes`` for sizes under a KiB (all our images' blobs)."""
    assert size < 1024
    return f"{size:.1f} B"


def pb_target(img: ImageData) -> api_types.Descriptor:
    t = img.target
    return api_types.Descriptor(media_type=t.media_type, digest=t.digest, size=t.size)


async def create_record(sock: str, name: str, img: ImageData, **labels: str) -> api.Image:
    ch = Channel(path=sock)
    try:
        stub = api.ImagesStub(ch, metadata={namespaces.GRPC_HEADER: NS})
        resp = await stub.create(
            api.CreateImageRequest(image=api.Image(name=name, target=pb_target(img), labels=labels))
        )
        assert resp.image is not None
        return resp.image
    finally:
        ch.close()


def blob_files(root: Path) -> set[str]:
    d = root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    return {f"sha256:{p.name}" for p in d.glob("*")}


def test_ctr_images_on_a_record_made_without_the_sdk(daemon: Callable[..., Any]) -> None:
    d = daemon(QUIET_GC)
    sock = d.socket
    img = make_image("ctr", n_layers=2)
    for dgst, data in img.blobs.items():
        ok(ctr(sock, "content", "ingest", f"ingest-{dgst[7:19]}", stdin=data))
    labels = [f"{k}={v}" for k, v in img.manifest_labels().items()]
    ok(ctr(sock, "content", "label", img.manifest_digest, *labels))
    asyncio.run(create_record(sock, "example.com/app:1", img))

    rows = table(ok(ctr(sock, "images", "ls")))
    assert rows == [
        ["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"],
        [
            "example.com/app:1",
            img.target.media_type,
            img.manifest_digest,
            *human(img.size).split(),
            "linux/amd64",
            "-",
        ],
    ]

    # check reads the manifest and its children; UNPACKED (and the exit status) need a snapshotter
    check = ctr(sock, "images", "check")
    rows = table(check.stdout)
    required = len(img.blobs) - 1  # config and layers
    assert rows[0] == ["REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED"]
    assert rows[1][:4] == ["example.com/app:1", img.target.media_type, img.manifest_digest, "complete"]
    assert rows[1][4] == f"({required}/{required})"
    assert rows[1][-1] == "false"
    assert "unable to check unpack" in check.stderr

    assert ok(ctr(sock, "images", "tag", "example.com/app:1", "example.com/app:2")) == "example.com/app:2\n"
    dup = ctr(sock, "images", "tag", "example.com/app:1", "example.com/app:2")
    assert dup.returncode == 1
    assert dup.stderr.strip() == 'ctr: image "example.com/app:2": already exists'
    assert (
        ok(ctr(sock, "images", "tag", "--force", "example.com/app:1", "example.com/app:2"))
        == "example.com/app:2\n"
    )
    assert ok(ctr(sock, "images", "label", "example.com/app:2", "team=a")) == "team=a\n"
    assert ok(ctr(sock, "images", "ls", "-q")) == "example.com/app:1\nexample.com/app:2\n"
    assert ok(ctr(sock, "images", "ls", "-q", "labels.team==a")) == "example.com/app:2\n"
    assert table(ok(ctr(sock, "images", "ls")))[2][-1] == "team=a"

    # export writes an OCI layout; import --no-unpack reads it back into another namespace
    tar = d.tmp / "app.tar"
    ok(ctr(sock, "images", "export", str(tar), "example.com/app:1"))
    with tarfile.open(tar) as tf:
        exported = {n.removeprefix("blobs/sha256/") for n in tf.getnames() if n.startswith("blobs/sha256/")}
        assert {"index.json", "manifest.json", "oci-layout"} <= set(tf.getnames())
    assert exported == {dgst[7:] for dgst in img.blobs}
    ok(ctr(sock, "images", "import", "--no-unpack", str(tar), ns="imported"))
    assert ok(ctr(sock, "images", "ls", "-q", ns="imported")) == "example.com/app:1\n"
    assert img.all_digests <= set(ok(ctr(sock, "content", "ls", "-q", ns="imported")).split())
    ok(ctr(sock, "images", "rm", "--sync", "example.com/app:1", ns="imported"))
    assert ok(ctr(sock, "content", "ls", "-q", ns="imported")) == ""
    assert img.all_digests <= blob_files(d.root)  # still held in the default namespace

    # a missing layer: check says so
    ok(ctr(sock, "content", "rm", img.layer_digests[1]))
    rows = table(ctr(sock, "images", "check").stdout)
    assert rows[1][3:5] == ["incomplete", f"({required - 1}/{required})"]

    # removing one name keeps the blobs; removing the last one with --sync frees them at once
    assert ok(ctr(sock, "images", "rm", "example.com/app:1")) == "example.com/app:1\n"
    assert img.manifest_digest in ok(ctr(sock, "content", "ls", "-q"))
    assert ok(ctr(sock, "images", "rm", "--sync", "example.com/app:2")) == "example.com/app:2\n"
    assert ok(ctr(sock, "content", "ls", "-q")) == ""
    assert blob_files(d.root) == set()
    assert ok(ctr(sock, "images", "ls", "-q")) == ""
    gone = ctr(sock, "images", "rm", "example.com/app:2")
    assert gone.returncode == 0  # ctr warns about a missing image
    assert "image not found" in gone.stderr

    plugins = ok(ctr(sock, "plugins", "ls"))
    assert re.search(r"io\.containerd\.service\.v1\s+images-service\s+-\s+ok", plugins), plugins
    assert re.search(r"io\.containerd\.grpc\.v1\s+images\s+-\s+ok", plugins), plugins


# -- the same against containerd -------------------------------------------------------------------


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    with running_containerd(wait_for_startup_gc=True) as c:
        yield c


async def ingest_leased(sock: str, img: ImageData) -> None:
    """The blobs under a lease (as a fetch writes them), the manifest labelled; the lease dropped
    once the record exists (by the caller: :func:`drop_lease`)."""
    ch = Channel(path=sock)
    try:
        leases = leases_api.LeasesStub(ch, metadata={namespaces.GRPC_HEADER: NS})
        await leases.create(leases_api.CreateRequest(id=f"fetch-{img.manifest_digest[7:19]}"))
        store = RemoteContentStore(ch, namespace=NS)
        with namespaces.with_lease(f"fetch-{img.manifest_digest[7:19]}"):
            for dgst, data in img.blobs.items():
                lbls = img.manifest_labels() if dgst == img.manifest_digest else None
                await write_blob(store, f"w-{dgst}", data, expected=dgst, labels=lbls)
    finally:
        ch.close()


async def drop_lease(sock: str, img: ImageData) -> None:
    ch = Channel(path=sock)
    try:
        leases = leases_api.LeasesStub(ch, metadata={namespaces.GRPC_HEADER: NS})
        await leases.delete(leases_api.DeleteRequest(id=f"fetch-{img.manifest_digest[7:19]}", sync=True))
    finally:
        ch.close()


def ctr_images_rows(sock: str) -> dict[str, list[list[str]]]:
    img = make_image("same", n_layers=2)
    asyncio.run(ingest_leased(sock, img))
    asyncio.run(create_record(sock, "example.com/same:1", img, a="1"))
    asyncio.run(drop_lease(sock, img))
    ok(ctr(sock, "images", "tag", "example.com/same:1", "example.com/same:2"))
    out = {
        "ls": table(ok(ctr(sock, "images", "ls"))),
        "check": [row[:-1] for row in table(ctr(sock, "images", "check").stdout)],  # not UNPACKED
    }
    ok(ctr(sock, "images", "rm", "--sync", "example.com/same:1", "example.com/same:2"))
    out["content after rm --sync"] = table(ok(ctr(sock, "content", "ls", "-q")))
    return out


def test_ctr_images_rows_match_containerds(daemon: Callable[..., Any], containerd: Containerd) -> None:
    d = daemon()
    ours = ctr_images_rows(d.socket)
    theirs = ctr_images_rows(containerd.socket)
    assert ours == theirs
    assert ours["content after rm --sync"] == []


# -- one script of Images calls, both daemons ---------------------------------------------------


D1 = "sha256:" + "1" * 64


def desc(
    media_type: str = "application/vnd.oci.image.manifest.v1+json",
    digest: str = D1,
    size: int = 10,
    **ann: str,
) -> api_types.Descriptor:
    return api_types.Descriptor(media_type=media_type, digest=digest, size=size, annotations=ann)


def image(name: str, target: api_types.Descriptor | None = None, **labels: str) -> api.Image:
    return api.Image(name=name, target=target if target is not None else desc(), labels=labels)


def _shape(msg: Any) -> Any:
    """A reply as comparable data: images without their times (checked apart)."""
    if isinstance(msg, api.Image):
        t = msg.target
        target = None if t is None else (t.media_type, t.digest, t.size, sorted(t.annotations.items()))
        return ("image", msg.name, sorted(msg.labels.items()), target)
    for field in ("image", "images"):
        if hasattr(msg, field):
            value = getattr(msg, field)
            return [_shape(i) for i in value] if isinstance(value, list) else _shape(value)
    return type(msg).__name__


#: messages ctrd words differently (the same code): containerd's status.Errorf has no suffix
MESSAGE_DEVIATIONS = {"Image.Name required": "Image.Name required: invalid argument"}
#: ctrd's label message is containerd 1.7's (with the length; ctrd.labels), 1.6 has none
LABEL_LENGTH = re.compile(r"label key and value length \(\d+ bytes\) greater")


#: containerd's List says "invalid argument" twice after a filter's parse error; ctrd once
DOUBLED = ": invalid argument: invalid argument"


def message_of(exc: GRPCError) -> str:
    message = MESSAGE_DEVIATIONS.get(exc.message or "", exc.message or "")
    message = message.replace(DOUBLED, ": invalid argument")
    return LABEL_LENGTH.sub("label key and value greater", message)


async def script(sock: str) -> list[Any]:
    ch = Channel(path=sock)
    stub = api.ImagesStub(ch, metadata={namespaces.GRPC_HEADER: "script"})
    bare = api.ImagesStub(ch)
    out: list[Any] = []
    created: dict[str, _dt.datetime] = {}

    async def call(what: str, coro: Any) -> Any:
        try:
            reply = await coro
        except GRPCError as exc:
            out.append((what, exc.status.name, message_of(exc)))
            return None
        out.append((what, "OK", _shape(reply)))
        img = getattr(reply, "image", None)
        if isinstance(img, api.Image) and img.created_at is not None:
            # times: created_at kept by every update, updated_at moving forward
            if img.name in created:
                out.append((what, "created_at kept", img.created_at == created[img.name]))
            created.setdefault(img.name, img.created_at)
            out.append(
                (what, "updated >= created", img.updated_at is not None and img.updated_at >= img.created_at)
            )
        return reply

    try:
        await call(
            "create", stub.create(api.CreateImageRequest(image=image("b", desc(a="1", e=""), x="1", e="")))
        )
        await call("create a", stub.create(api.CreateImageRequest(image=image("a", desc(size=3)))))
        await call("create again", stub.create(api.CreateImageRequest(image=image("b"))))
        await call("create no name", stub.create(api.CreateImageRequest(image=image(""))))
        await call("create no request image", stub.create(api.CreateImageRequest()))
        await call(
            "create bad digest",
            stub.create(api.CreateImageRequest(image=image("c", desc(digest="sha256:12")))),
        )
        await call("create size 0", stub.create(api.CreateImageRequest(image=image("c", desc(size=0)))))
        await call(
            "create no media type", stub.create(api.CreateImageRequest(image=image("c", desc(media_type=""))))
        )
        await call("create big label", stub.create(api.CreateImageRequest(image=image("c", k="v" * 4096))))
        await call("get", stub.get(api.GetImageRequest(name="b")))
        await call("get missing", stub.get(api.GetImageRequest(name="zz")))
        await call("get no namespace", bare.get(api.GetImageRequest(name="b")))
        await call("list", stub.list(api.ListImagesRequest()))
        await call("list label", stub.list(api.ListImagesRequest(filters=["labels.x==1"])))
        await call("list ored", stub.list(api.ListImagesRequest(filters=["name==a", "annotations.a==1"])))
        await call(
            "list media type", stub.list(api.ListImagesRequest(filters=["target.mediatype~=manifest"]))
        )
        await call("list digest", stub.list(api.ListImagesRequest(filters=[f"target.digest=={D1},name!=a"])))
        await call("list bad filter", stub.list(api.ListImagesRequest(filters=["name=="])))
        await asyncio.sleep(0.01)
        mask = ["labels.x", "labels.y", "annotations.a", "annotations.n"]
        await call(
            "update mask",
            stub.update(
                api.UpdateImageRequest(
                    image=image("b", desc(size=99, n="2"), y="2"), update_mask=FieldMask(paths=mask)
                )
            ),
        )
        await call(
            "update labels",
            stub.update(
                api.UpdateImageRequest(image=image("b", z="3"), update_mask=FieldMask(paths=["labels"]))
            ),
        )
        await call(
            "update target",
            stub.update(
                api.UpdateImageRequest(
                    image=image("b", desc(size=7, t="1")), update_mask=FieldMask(paths=["target"])
                )
            ),
        )
        await call(
            "update annotations",
            stub.update(
                api.UpdateImageRequest(
                    image=image("b", desc(q="1")), update_mask=FieldMask(paths=["annotations"])
                )
            ),
        )
        await call(
            "update no mask", stub.update(api.UpdateImageRequest(image=image("b", desc(size=5), w="1")))
        )
        await call(
            "update bad path",
            stub.update(api.UpdateImageRequest(image=image("b"), update_mask=FieldMask(paths=["name"]))),
        )
        await call(
            "update bad result",
            stub.update(
                api.UpdateImageRequest(
                    image=image("b", desc(size=0)), update_mask=FieldMask(paths=["target"])
                )
            ),
        )
        await call("update missing", stub.update(api.UpdateImageRequest(image=image("zz"))))
        await call("update no name", stub.update(api.UpdateImageRequest(image=image(""))))
        await call("get after", stub.get(api.GetImageRequest(name="b")))
        await call("delete", stub.delete(api.DeleteImageRequest(name="a")))
        await call("delete again", stub.delete(api.DeleteImageRequest(name="a")))
        await call("delete sync", stub.delete(api.DeleteImageRequest(name="b", sync=True)))
        await call("list empty", stub.list(api.ListImagesRequest()))
    finally:
        ch.close()
    return out


def test_images_api_answers_match_containerds(daemon: Callable[..., Any], containerd: Containerd) -> None:
    d = daemon()
    ours = asyncio.run(script(d.socket))
    theirs = asyncio.run(script(containerd.socket))
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine == ref
    assert ("create", "OK", ("image", "b", [("x", "1")], (desc().media_type, D1, 10, [("a", "1")]))) in ours
