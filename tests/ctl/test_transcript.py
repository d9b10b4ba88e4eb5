"""One command-line session three ways: ``ctr`` on containerd, ``ctrdctl`` on ctrd and on containerd.

Every step's exit status must agree, and so must what the steps print where
both tools print the same thing (digests, sizes, labels, ids, names), and the
state the session leaves (namespaces and their labels, blobs per namespace
with sizes and labels, active ingests), read back through the SDK.

Differences that are by design, normalised below: ``ctrdctl content ingest``
prints the digest (``ctr`` prints nothing); ``ctrdctl`` sorts labels (``ctr``
prints Go map order); ``ctrdctl content active`` has a TOTAL column;
``ctrdctl images import`` prints the names it recorded (``ctr`` nothing); tables
are compared cell by cell (``ctr`` pads with tabwriter). ``ctr images import``
also stores the archive's ``index.json`` as a blob nothing references (until a
collection): that digest is left out of the final state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _imagedata import ImageData, make_image

from ctrd.client import Client
from ctrd.ctl import main as ctl_main
from ctrd.testing import running_containerd, start_ctrd

from .conftest import CTR, run_tool

pytestmark = pytest.mark.interop

ROOT = "containerd.io/gc.root=t"


@dataclasses.dataclass
class Step:
    args: tuple[str, ...]
    namespace: str = "default"
    stdin: str | None = None  # name of a blob file


IMAGE = "example.com/transcript/app:1"


def session(d1: str, d2: str, d3: str) -> list[Step]:
    """The session. Blobs get ``containerd.io/gc.root`` right after ingest, before any deletion
    (deletions trigger a collection on both daemons), so nothing unreferenced is lost."""
    bad = "sha256:" + "1" * 64
    return [
        Step(("namespaces", "create", "tsa", "team=a")),
        Step(("namespaces", "create", "tsb")),
        Step(("namespaces", "label", "tsb", "owner=me")),
        Step(("namespaces", "create", "tsa")),  # already exists: error
        Step(("content", "ingest", "ref1"), "tsa", "blob1"),
        Step(("content", "label", d1, ROOT, "foo=bar"), "tsa"),
        Step(
            ("content", "ingest", "--expected-digest", d2, "--expected-size", "1000000", "ref2"),
            "tsa",
            "blob2",
        ),
        Step(("content", "label", d2, ROOT, "k=v"), "tsa"),
        Step(("content", "label", d1, "foo=", "x"), "tsa"),
        Step(("content", "ingest", "ref2b", "--expected-digest", d2), "tsa", "blob2"),  # exists: success
        Step(("content", "ingest", "--expected-digest", bad, "refbad"), "tsa", "blob3"),  # wrong digest
        Step(("content", "ingest", "--expected-size", "5", "refbad2"), "tsa", "blob3"),  # wrong size
        Step(("content", "active"), "tsa"),
        Step(("content", "ls"), "tsa"),
        Step(("content", "ls", "-q"), "tsa"),
        Step(("content", "get", d2), "tsa"),
        Step(("content", "get", d3), "tsa"),  # not found
        Step(("content", "ingest", "ref3"), "tsb", "blob1"),
        Step(("content", "label", d1, ROOT), "tsb"),
        Step(("content", "ingest", "ref4"), "tsb", "blob3"),
        Step(("content", "label", d3, ROOT, "only=tsb"), "tsb"),
        Step(("content", "rm", d1), "tsb"),
        Step(("content", "rm", d1), "tsb"),  # gone already: silent success
        Step(("leases", "create", "--id", "L1", "-x", "1h", "foo=bar"), "tsa"),
        Step(("leases", "ls", "-q"), "tsa"),
        Step(("leases", "rm", "L1"), "tsa"),
        Step(("leases", "rm", "L1"), "tsa"),  # not found: error
        Step(("namespaces", "ls", "-q")),
        Step(("namespaces", "rm", "tsa")),  # holds content: error
        Step(("namespaces", "create", "tsc")),
        Step(("namespaces", "rm", "tsc", "nosuchns")),  # unknown names are skipped
        Step(("images", "import", "--no-unpack", "-"), "tsi", "archive"),
        Step(("images", "ls"), "tsi"),
        Step(("images", "tag", IMAGE, "example.com/transcript/app:2"), "tsi"),
        Step(("images", "tag", IMAGE, "example.com/transcript/app:2"), "tsi"),  # exists: error
        Step(("images", "ls", "-q"), "tsi"),
        Step(("images", "ls", "-q", "name~=:2$"), "tsi"),
        Step(("images", "check"), "tsi"),
        Step(("images", "rm", "example.com/transcript/app:2", "nosuch"), "tsi"),  # unknown: a warning
        Step(("images", "ls", "-q"), "tsi"),
    ]


def run_ctr(address: str, step: Step, stdin: Path | None) -> tuple[int, bytes]:
    p = run_tool([CTR], address, *step.args, namespace=step.namespace, stdin=stdin)
    return p.returncode, p.stdout


def run_ctrdctl(address: str, step: Step, stdin: Path | None) -> tuple[int, bytes]:
    """``ctrdctl`` in this process (its ``main`` with the same argv; a process per step would
    cost ~0.4 s of interpreter start-up each). ``test_cli`` covers the console script."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    argv = ["--address", address, "--namespace", step.namespace, *step.args]
    with open(stdin or os.devnull, "rb") as f:
        rc = ctl_main(argv, stdin=f, out=out, err=io.StringIO())
    out.flush()
    return rc, raw.getvalue()


def run_session(
    runner: Callable[[str, Step, Path | None], tuple[int, bytes]],
    address: str,
    steps: list[Step],
    blobs: dict[str, Path],
) -> list[tuple[int, bytes]]:
    return [runner(address, s, blobs[s.stdin] if s.stdin else None) for s in steps]


async def final_state(address: str, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    async with Client(address, timeout=30) as c:
        state: dict[str, Any] = {}
        for ns in await c.namespaces.list():
            if not ns.name.startswith("ts"):
                continue
            view = c.with_namespace(ns.name)
            state[ns.name] = {
                "labels": dict(ns.labels),
                "blobs": {
                    i.digest: (i.size, dict(i.labels))
                    async for i in view.content.list()
                    if i.digest not in skip
                },
                "images": sorted((i.name, i.target.digest, dict(i.labels)) for i in await view.images.list()),
                "active": sorted((s.ref, s.offset) for s in await view.content.list_statuses()),
                "leases": sorted(x.id for x in await view.leases.list()),
            }
        return state


def normalise(step: Step, rc: int, stdout: bytes, ctrdctl: bool) -> Any:
    """What must match between the tools for one step."""
    cmd = step.args[:2]
    text = stdout.decode(errors="replace")
    if cmd == ("content", "ingest"):
        return rc  # ctrdctl prints the digest, ctr nothing (checked separately)
    if cmd == ("content", "label"):
        return rc, sorted(text.strip().split(",")) if text.strip() else []
    if cmd == ("content", "ls") and "-q" not in step.args:
        rows = [line.split() for line in text.splitlines()[1:]]
        # digest, size, labels (as a set: ctr prints Go map order); AGE is words
        return rc, sorted((r[0], r[1], tuple(sorted(r[-1].split(",")))) for r in rows)
    if cmd == ("content", "active"):
        rows = [line.split() for line in text.splitlines()[1:]]
        return rc, sorted((r[0], r[1]) for r in rows)  # REF, SIZE (the offset)
    if cmd == ("content", "get"):
        return rc, hashlib.sha256(stdout).hexdigest()
    if cmd == ("images", "import"):
        return rc  # ctrdctl prints the names recorded, ctr nothing
    if cmd in (("images", "ls"), ("images", "check")) and "-q" not in step.args:
        return rc, [line.split() for line in text.splitlines()]
    return rc, text


def archive(img: ImageData) -> tuple[bytes, str]:
    """An OCI layout tar naming *img* :data:`IMAGE`, and its ``index.json``'s digest."""
    t = img.target
    entry = {"mediaType": t.media_type, "digest": t.digest, "size": t.size}
    entry["annotations"] = {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "1"}
    index = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    files.update({f"blobs/sha256/{d[7:]}": data for d, data in img.blobs.items()})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue(), "sha256:" + hashlib.sha256(index).hexdigest()


def test_transcript_matches_ctr(tmp_path: Path) -> None:
    img = make_image("transcript", n_layers=2)
    tar, index_digest = archive(img)
    blobs = {
        "blob1": os.urandom(3 * 1024 * 1024 + 17),
        "blob2": os.urandom(1_000_000),
        "blob3": os.urandom(4321),
        "archive": tar,
    }
    files = {}
    for name, data in blobs.items():
        files[name] = tmp_path / name
        files[name].write_bytes(data)
    skip = frozenset({index_digest})
    d1, d2, d3 = ("sha256:" + hashlib.sha256(blobs[n]).hexdigest() for n in ("blob1", "blob2", "blob3"))
    steps = session(d1, d2, d3)
    gc_off = '[plugins."io.containerd.gc.v1.scheduler"]\n  mutation_threshold = 0\n'

    runs: dict[str, tuple[list[tuple[int, bytes]], dict[str, Any]]] = {}
    with running_containerd() as ctd:
        time.sleep(0.3)  # past the start-up collection
        runs["ctr@containerd"] = (
            run_session(run_ctr, ctd.address, steps, files),
            asyncio.run(final_state(ctd.address, skip)),
        )
    with running_containerd() as ctd:
        time.sleep(0.3)
        runs["ctrdctl@containerd"] = (
            run_session(run_ctrdctl, ctd.address, steps, files),
            asyncio.run(final_state(ctd.address, skip)),
        )
    ctrd = start_ctrd(gc_off)
    try:
        time.sleep(0.3)
        runs["ctrdctl@ctrd"] = (
            run_session(run_ctrdctl, ctrd.address, steps, files),
            asyncio.run(final_state(ctrd.address, skip)),
        )
    finally:
        ctrd.stop()

    ref_out, ref_state = runs["ctr@containerd"]
    for name, (out, state) in runs.items():
        for step, (rc, stdout), (ref_rc, ref_stdout) in zip(steps, out, ref_out, strict=True):
            got = normalise(step, rc, stdout, ctrdctl=True)
            want = normalise(step, ref_rc, ref_stdout, ctrdctl=False)
            assert got == want, (
                f"{name}: step {' '.join(step.args)} (-n {step.namespace}): {got!r} != {want!r}"
            )
            if step.args[:2] == ("content", "ingest") and rc == 0 and name != "ctr@containerd":
                assert stdout.decode().strip() in (d1, d2, d3)
        assert state == ref_state, f"{name}: final state differs"

    # the reference itself is what the session intends
    assert ref_state["tsa"]["labels"] == {"team": "a"}
    assert ref_state["tsb"]["labels"] == {"owner": "me"}
    assert ref_state["tsa"]["blobs"] == {
        d1: (len(blobs["blob1"]), {"containerd.io/gc.root": "t", "x": "true"}),
        d2: (1_000_000, {"containerd.io/gc.root": "t", "k": "v"}),
    }
    assert ref_state["tsb"]["blobs"] == {d3: (4321, {"containerd.io/gc.root": "t", "only": "tsb"})}
    assert ref_state["tsa"]["active"] == [("refbad", 4321), ("refbad2", 4321)]
    assert "tsc" not in ref_state
    assert ref_state["tsi"]["images"] == [(IMAGE, img.manifest_digest, {})]
    assert ref_state["tsi"]["blobs"][img.manifest_digest][1] == img.manifest_labels()
    ls = normalise(steps[13], *ref_out[13], ctrdctl=False)
    assert ls[1][0][1] in ("3.146MB", "1MB")
