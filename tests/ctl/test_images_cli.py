"""``ctrdctl images …`` and ``ctrdctl content fetch`` against ctrd and a private registry
(Debian's docker-registry with basic auth); ``ls`` and ``check`` rows compared with
``ctr``'s on the same daemon.

Most commands run in this process through :func:`ctrd.ctl.main`; the terminal's live table
and the environment variables go through the console script in a subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import pty
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ctrd.client import BlobProgress, Client, host_platform
from ctrd.ctl import main as ctl_main
from ctrd.ctl._imagecmds import parse_user
from ctrd.ctl._output import binary_size
from ctrd.ctl._progress import TransferDisplay
from ctrd.images import Descriptor
from ctrd.testing import DaemonProcess
from ctrd.testing.images import ImageBuilder, PushedImage, gzip_layer, raw_layer, tar_layer
from ctrd.testing.registry import Registry, start_registry

from .conftest import CTR, CTRDCTL, run_tool

USER, PASSWORD = "alice", "s3cret"


class Result:
    def __init__(self, rc: int, out: bytes, err: str) -> None:
        self.rc, self.raw, self.err = rc, out, err

    @property
    def out(self) -> str:
        return self.raw.decode()


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reg = start_registry(htpasswd={USER: PASSWORD})
    try:
        yield reg
    finally:
        reg.stop()


class Pushed:
    def __init__(self, amd64: PushedImage, arm64: PushedImage, index: Descriptor) -> None:
        self.amd64, self.arm64, self.index = amd64, arm64, index

    @property
    def native(self) -> PushedImage:
        return self.arm64 if host_platform().architecture == "arm64" else self.amd64


@pytest.fixture(scope="module")
def pushed(registry: Registry) -> Pushed:
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    b = ImageBuilder(registry.url, authorization=auth)
    base = gzip_layer(tar_layer({"etc/hello": b"hello\n"}))
    big = raw_layer(tar_layer({"data/big": os.urandom(5 << 20)}))
    amd = b.push_image("cli/app", None, [base, big], platform=("linux", "amd64", ""))
    arm = b.push_image("cli/app", None, [base], platform=("linux", "arm64", "v8"))
    return Pushed(amd, arm, b.push_index("cli/app", "v1", [amd, arm]))


@pytest.fixture
def ctl_in(ctrd_proc: DaemonProcess) -> Callable[..., Result]:
    def run(*args: str, namespace: str = "default", stdin: bytes = b"", address: str = "") -> Result:
        raw = io.BytesIO()
        out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
        err = io.StringIO()
        argv = ["--address", address or ctrd_proc.address, "--namespace", namespace, *args]
        rc = ctl_main(argv, stdin=io.BytesIO(stdin), out=out, err=err)
        out.flush()
        return Result(rc, raw.getvalue(), err.getvalue())

    return run


def ctr(address: str, namespace: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return run_tool([CTR], address, *args, namespace=namespace)


def cells(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


ISOLATED = '[plugins."io.containerd.metadata.v1.sqlite"]\n  content_sharing_policy = "isolated"\n'


def test_pull_tag_rm_and_progress(
    ctl_in: Callable[..., Result], daemon: Callable[..., Any], registry: Registry, pushed: Pushed
) -> None:
    """On a daemon of its own (``isolated``): the first pull downloads every blob."""
    address = daemon(ISOLATED).socket
    ns = "cli-pull"
    ref = f"{registry.host}/cli/app:v1"
    auth = ("--user", f"{USER}:{PASSWORD}")

    def ctl(*args: str, namespace: str = ns) -> Result:
        return ctl_in(*args, namespace=namespace, address=address)

    r = ctl("images", "pull", ref)
    assert r.rc == 1
    assert r.err.startswith("ctrdctl: ")
    assert r.err.count("\n") == 1
    assert "permission denied" in r.err
    r = ctl("images", "pull", "--user", USER, ref)
    assert (r.rc, r.err) == (
        1,
        f"ctrdctl: --user {USER}: no password: give --user {USER}:PASSWORD "
        "or set CTRDCTL_PASSWORD: invalid argument\n",
    )

    r = ctl("images", "pull", *auth, ref)
    assert r.rc == 0, r.err
    assert r.out == f"{ref}@{pushed.index.digest}\n"
    m = pushed.native
    lines = {line.split()[0]: line.split()[1:] for line in r.err.splitlines()}  # plain: a line per blob
    assert set(lines) == {
        f"index-{pushed.index.digest}",
        f"manifest-{m.manifest.digest}",
        f"config-{m.config.digest}",
        *(f"layer-{x.digest}" for x in m.layers),
    }
    big = max(m.layers, key=lambda x: len(x.data))
    assert lines[f"layer-{big.digest}"][0] == "done"
    assert re.fullmatch(r"[\d.]+MB [\d.]+[kMG]?B/s", " ".join(lines[f"layer-{big.digest}"][1:]))

    again = ctl("images", "pull", *auth, "--format", "json", ref)
    assert again.rc == 0
    doc = json.loads(again.raw)
    assert doc["name"] == ref
    assert doc["target"]["digest"] == pushed.index.digest
    assert {line.split()[1] for line in again.err.splitlines()} == {"exists"}
    assert ctl("images", "pull", *auth, "--no-progress", ref).err == ""

    # tag (several names), rm (an unknown name warns), rm --sync collects the content
    r = ctl("images", "tag", ref, "example.com/a:1", "example.com/b:2")
    assert (r.rc, r.out) == (0, "example.com/a:1\nexample.com/b:2\n")
    r = ctl("images", "tag", ref, "example.com/a:1")
    assert r.rc == 1
    assert r.err == 'ctrdctl: image "example.com/a:1": already exists\n'
    assert ctl("images", "tag", "--force", ref, "example.com/a:1").rc == 0
    assert ctl("i", "ls", "-q").out == f"{ref}\nexample.com/a:1\nexample.com/b:2\n"
    r = ctl("images", "rm", "example.com/a:1", "nosuch", "example.com/b:2")
    assert (r.rc, r.out, r.err) == (
        0,
        "example.com/a:1\nexample.com/b:2\n",
        "ctrdctl: nosuch: image not found\n",
    )
    assert ctl("content", "ls", "-q").out != ""
    r = ctl("images", "rm", "--sync", ref)
    assert (r.rc, r.out) == (0, ref + "\n")
    assert ctl("content", "ls", "-q").out == ""


@pytest.mark.interop
def test_ls_and_check_rows_are_ctrs(
    ctl_in: Callable[..., Result], ctrd_proc: DaemonProcess, registry: Registry, pushed: Pushed
) -> None:
    ns = "cli-rows"
    ref = f"{registry.host}/cli/app:v1"
    assert (
        ctl_in("images", "pull", "-u", f"{USER}:{PASSWORD}", "--label", "team=a", ref, namespace=ns).rc == 0
    )
    assert ctl_in("images", "tag", ref, "example.com/app:2", namespace=ns).rc == 0
    ours = ctl_in("images", "ls", namespace=ns)
    theirs = ctr(ctrd_proc.address, ns, "images", "ls")
    assert ours.rc == theirs.returncode == 0
    assert cells(ours.out) == cells(theirs.stdout.decode())
    m = pushed.native
    size = pushed.index.size + m.manifest.size + m.config.size + sum(len(x.data) for x in m.layers)
    row = cells(ours.out)[1]
    assert row[3:5] == binary_size(size).split()
    assert row[5] == "linux/amd64,linux/arm64/v8"
    assert row[6] == "team=a"

    ours = ctl_in("images", "check", namespace=ns)
    theirs = ctr(ctrd_proc.address, ns, "images", "check")
    assert ours.rc == 0  # ctr fails: it asks a snapshotter whether the image is unpacked
    assert cells(ours.out) == cells(theirs.stdout.decode())
    n = len(m.blobs)
    assert cells(ours.out)[1][3:5] == ["complete", f"({n}/{n})"]
    assert cells(ours.out)[1][-1] == "false"
    assert ctl_in("images", "check", "-q", namespace=ns).out == f"{ref}\nexample.com/app:2\n"
    docs = json.loads(ctl_in("images", "check", "--format", "json", namespace=ns).raw)
    assert docs[0]["status"] == f"complete ({n}/{n})"
    assert docs[0]["unpacked"] is False
    docs = json.loads(ctl_in("images", "ls", "--format", "json", namespace=ns).raw)
    assert docs[0]["size"] == size
    assert docs[0]["platforms"] == ["linux/amd64", "linux/arm64/v8"]

    # a layer gone: incomplete, as ctr says
    assert ctl_in("content", "rm", m.layers[0].digest, namespace=ns).rc == 0
    ours = ctl_in("images", "check", namespace=ns)
    assert cells(ours.out) == cells(ctr(ctrd_proc.address, ns, "images", "check").stdout.decode())
    assert cells(ours.out)[1][3:5] == ["incomplete", f"({n - 1}/{n})"]
    assert ctl_in("images", "check", "-q", namespace=ns).out == ""


def test_fetch_export_import(
    ctl_in: Callable[..., Result],
    ctrd_proc: DaemonProcess,
    registry: Registry,
    pushed: Pushed,
    tmp_path: Path,
) -> None:
    ref = f"{registry.host}/cli/app:v1"
    auth = ("-u", f"{USER}:{PASSWORD}")
    r = ctl_in("content", "fetch", *auth, ref, namespace="cli-f1")
    assert r.rc == 0, r.err
    have = set(ctl_in("content", "ls", "-q", namespace="cli-f1").out.split())
    m = pushed.native
    assert have == {pushed.index.digest, m.manifest.digest, *m.blobs}
    assert ctl_in("content", "fetch", *auth, "--all-platforms", ref, namespace="cli-f2").rc == 0
    have = set(ctl_in("content", "ls", "-q", namespace="cli-f2").out.split())
    assert {pushed.amd64.manifest.digest, pushed.arm64.manifest.digest, *pushed.arm64.blobs} <= have

    # export to a file and to stdout: the same archive; import it from a file and from stdin
    tar = tmp_path / "app.tar"
    assert ctl_in("images", "export", str(tar), ref, namespace="cli-f1").rc == 0
    r = ctl_in("images", "export", "-", ref, namespace="cli-f1")
    assert r.raw == tar.read_bytes()
    with tarfile.open(tar) as tf:
        assert {"oci-layout", "index.json", "manifest.json"} <= set(tf.getnames())
    r = ctl_in("images", "import", str(tar), namespace="cli-imp1")
    assert (r.rc, r.out) == (0, ref + "\n")
    r = ctl_in(
        "images",
        "import",
        "--no-unpack",
        "--format",
        "json",
        "-",
        namespace="cli-imp2",
        stdin=tar.read_bytes(),
    )
    assert r.rc == 0, r.err
    assert [d["name"] for d in json.loads(r.raw)] == [ref]
    assert set(ctl_in("content", "ls", "-q", namespace="cli-imp2").out.split()) == {
        pushed.index.digest,
        m.manifest.digest,
        *m.blobs,
    }
    r = ctl_in("images", "import", "--all-platforms", str(tar), namespace="cli-imp3")
    assert r.rc == 1
    assert "neither in the archive nor in the namespace" in r.err
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar" * 100)
    r = ctl_in("images", "import", str(bad), namespace="cli-imp3")
    assert (r.rc, r.err) == (
        1,
        "ctrdctl: archive: not a tar archive (bad header checksum): invalid argument\n",
    )

    # push (a fetched index with every platform): blobs mounted from the source repository
    r = ctl_in("images", "push", *auth, f"{registry.host}/cli/copy:v1", ref, namespace="cli-f2")
    assert (r.rc, r.out) == (0, f"{registry.host}/cli/copy:v1@{pushed.index.digest}\n")
    statuses = {line.split()[0]: line.split()[1] for line in r.err.splitlines()}
    assert statuses[f"layer-{m.layers[0].digest}"] == "mounted"
    assert statuses[f"index-{pushed.index.digest}"] == "done"


def test_environment_and_terminal_table(ctrd_proc: DaemonProcess, registry: Registry, pushed: Pushed) -> None:
    ref = f"{registry.host}/cli/app:v1"
    env = dict(
        os.environ,
        CONTAINERD_ADDRESS=ctrd_proc.address,
        CONTAINERD_NAMESPACE="cli-env",
        CTRDCTL_PASSWORD=PASSWORD,
        COLUMNS="120",
        LINES="40",
        TERM="xterm",
    )
    master, slave = pty.openpty()
    try:
        p = subprocess.run(
            [*CTRDCTL, "images", "pull", "--user", USER, ref],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            env=env,
            timeout=60,
        )
        os.close(slave)
        slave = -1
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert p.returncode == 0, shown
    text = shown.decode()
    last = text.split("\x1b[2K" + ref)[-1]  # the final drawing of the table
    m = pushed.native
    big = max(m.layers, key=lambda x: len(x.data))
    assert re.search(
        rf"layer-sha256:{big.digest[7:19]} +(done|shared) +\|\+{{20}}\| +[\d.]+MB/[\d.]+MB", last
    ), text
    assert "elapsed: " in last
    assert p.stdout.decode() == f"{ref}@{pushed.index.digest}\n"
    q = subprocess.run([*CTRDCTL, "images", "ls", "-q"], env=env, capture_output=True, timeout=60)
    assert q.stdout.decode() == ref + "\n"


def test_transfer_display_lines() -> None:
    desc = Descriptor("application/vnd.oci.image.layer.v1.tar", "sha256:" + "a" * 64, 4 << 20)
    err = io.StringIO()
    d = TransferDisplay(err, "ref", "plain")
    ref = f"layer-{desc.digest}"
    d.update(BlobProgress(ref, desc, "waiting"))
    d.update(BlobProgress(ref, desc, "downloading", 1 << 20, 1 << 20))
    d.update(BlobProgress(ref, desc, "downloading", 3 << 20, 1 << 20))
    d.update(BlobProgress(ref, desc, "done", 4 << 20))
    d.update(BlobProgress(ref, desc, "done", 4 << 20))  # once only
    lines = err.getvalue().splitlines()
    assert lines[0] == f"{ref} resuming at 1.049MB of 4.194MB"
    assert re.fullmatch(rf"{ref} done 4\.194MB [\d.]+[kMG]?B/s \(resumed at 1\.049MB\)", lines[1])
    assert len(lines) == 2
    tty = TransferDisplay(io.StringIO(), "ref", "tty")
    for i in range(30):
        dd = Descriptor(desc.media_type, f"sha256:{i:064x}", 10)
        tty.update(BlobProgress(f"layer-{dd.digest}", dd, "shared"))
    rows = tty.render(0.0, 100, 12)
    assert rows[0] == "ref"
    assert rows[-2] == "… and 21 more done"
    assert len(rows) == 12
    assert "shared" in rows[1]


def test_parse_user(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_user("bob:pa:ss", {}) == ("bob", "pa:ss")
    assert parse_user("bob", {"CTRDCTL_PASSWORD": "x"}) == ("bob", "x")
    from ctrd import errdefs

    with pytest.raises(errdefs.InvalidArgument, match="CTRDCTL_PASSWORD"):
        parse_user("bob", {})
    with pytest.raises(errdefs.InvalidArgument, match="user name"):
        parse_user(":x", {})


def test_images_completion(ctrd_proc: DaemonProcess, tmp_path: Path) -> None:
    asyncio.run(_record(ctrd_proc.address))
    shim = tmp_path / "ctrdctl"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m ctrd.ctl "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    raw = io.StringIO()
    assert ctl_main(["completion", "bash"], out=raw) == 0

    def complete(words: list[str]) -> list[str]:
        quoted = " ".join("'" + w + "'" for w in words)
        prog = f"{raw.getvalue()}\nCOMP_WORDS=({quoted})\nCOMP_CWORD={len(words) - 1}\n_ctrdctl\n"
        prog += "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
        p = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, env=env, timeout=60)
        return sorted(x for x in p.stdout.splitlines() if x)

    assert complete(["ctrdctl", "images", "p"]) == ["pull", "push"]
    assert complete(["ctrdctl", "i", "im"]) == ["import"]
    assert "--all-platforms" in complete(["ctrdctl", "content", "fetch", "--all"])
    assert complete(["ctrdctl", "images", "pull", "--progress", ""]) == ["auto", "none", "plain", "tty"]
    got = complete(["ctrdctl", "-a", ctrd_proc.address, "-n", "cli-compl", "images", "rm", "exa"])
    assert got == ["example.com/completed:1"]


async def _record(address: str) -> Any:
    from ctrd.images import Image

    async with Client(address, namespace="cli-compl") as c:
        target = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "1" * 64, 10)
        return await c.images.create(Image("example.com/completed:1", target))
