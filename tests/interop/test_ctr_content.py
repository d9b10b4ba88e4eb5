"""Debian's ``ctr`` driving a full content and namespace session against a real ctrd."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel

from ctrd import namespaces
from ctrd.client import RemoteContentStore
from ctrd.content import open_writer

pytestmark = pytest.mark.interop

CTR = "/usr/bin/ctr"


def ctr_in(sock: str, ns: str, *args: str, stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``ctr -a sock -n ns args`` with *stdin* from a file."""
    with open(stdin or os.devnull, "rb") as f:
        return subprocess.run(
            [CTR, "--address", sock, "--namespace", ns, *args],
            stdin=f,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def ok(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, f"ctr failed ({p.returncode}): {p.stderr}"
    return p.stdout


def blob_files(root: str) -> list[Path]:
    return sorted((Path(root) / "io.containerd.content.v1.content" / "blobs" / "sha256").glob("*"))


# ``ctr content ingest`` holds no lease, so what it writes is garbage once committed: keep the
# start-up collection (100 ms after start, possibly just after the first ingest) out of the way.
# Collections triggered by deletes still run.
NO_STARTUP_GC = '[plugins."io.containerd.gc.v1.scheduler"]\n  startup_delay = "1h"\n'


def policy_config(policy: str) -> str:
    return (
        f'[plugins."io.containerd.metadata.v1.sqlite"]\n  content_sharing_policy = "{policy}"\n'
        + NO_STARTUP_GC
    )


EARLY_ACK = '[plugins."io.containerd.grpc.v1.content"]\n  early_write_ack = true\n'


@pytest.mark.parametrize("early_ack", [False, True], ids=["containerd-replies", "early-write-ack"])
def test_content_session(daemon: Callable[..., Any], tmp_path: Path, early_ack: bool) -> None:
    d = daemon(policy_config("shared") + (EARLY_ACK if early_ack else ""))
    data = os.urandom(3 * 1024 * 1024 + 17)
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    src = tmp_path / "blob"
    src.write_bytes(data)

    ok(ctr_in(d.socket, "work", "content", "ingest", "ref1", stdin=src))
    ls = ok(ctr_in(d.socket, "work", "content", "ls"))
    assert dgst in ls
    assert "3.146MB" in ls
    assert ok(ctr_in(d.socket, "work", "content", "ls", "-q")).split() == [dgst]
    got = subprocess.run(
        [CTR, "-a", d.socket, "-n", "work", "content", "get", dgst],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    assert got == data
    # other namespace sees nothing
    assert ok(ctr_in(d.socket, "other", "content", "ls", "-q")).split() == []
    missing = ctr_in(d.socket, "other", "content", "get", dgst)
    assert missing.returncode == 1
    assert f"content digest {dgst}: not found" in missing.stderr

    # labels
    assert ok(ctr_in(d.socket, "work", "content", "label", dgst, "foo=bar")).strip() == "foo=bar"
    out = ok(ctr_in(d.socket, "work", "content", "label", dgst, "k2=v2", "foo=")).strip()
    assert out == "k2=v2"
    assert "k2=v2" in ok(ctr_in(d.socket, "work", "content", "ls"))

    # ingesting the same data again: ALREADY_EXISTS is success for ctr
    ok(ctr_in(d.socket, "work", "content", "ingest", "ref2", stdin=src))
    ok(ctr_in(d.socket, "work", "content", "ingest", "ref3", "--expected-digest", dgst, stdin=src))

    # wrong digest: fails, ingest stays active
    bad = ctr_in(
        d.socket, "work", "content", "ingest", "refbad", "--expected-digest", "sha256:" + "1" * 64, stdin=src
    )
    assert bad.returncode == 1
    assert "unexpected commit digest" in bad.stderr
    active = ok(ctr_in(d.socket, "work", "content", "active"))
    assert active.splitlines()[0].split() == ["REF", "SIZE", "AGE"]
    assert "refbad" in active
    assert "3.146MB" in active
    # wrong size: fails, stays active
    bad2 = ctr_in(d.socket, "work", "content", "ingest", "refbad2", "--expected-size", "5", stdin=src)
    assert bad2.returncode == 1
    assert "failed size validation" in bad2.stderr

    # remove: prints the digest; a second rm is silent and exit 0
    assert ok(ctr_in(d.socket, "work", "content", "rm", dgst)).split() == [dgst]
    again = ctr_in(d.socket, "work", "content", "rm", dgst)
    assert again.returncode == 0
    assert again.stdout == ""
    assert ok(ctr_in(d.socket, "work", "content", "ls", "-q")).split() == []

    # no namespace
    nons = subprocess.run(
        [CTR, "-a", d.socket, "-n", "", "content", "ls"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert nons.returncode == 1
    assert "namespace is required" in nons.stderr


def test_namespace_session(daemon: Callable[..., Any], tmp_path: Path) -> None:
    d = daemon(NO_STARTUP_GC)
    ok(ctr_in(d.socket, "default", "namespaces", "create", "nsa", "team=a"))
    dup = ctr_in(d.socket, "default", "namespaces", "create", "nsa")
    assert dup.returncode == 1
    assert 'namespace "nsa": already exists' in dup.stderr
    ok(ctr_in(d.socket, "default", "namespaces", "create", "nsb"))
    ok(ctr_in(d.socket, "default", "namespaces", "label", "nsb", "foo=bar"))
    lines = ok(ctr_in(d.socket, "default", "namespaces", "ls")).splitlines()
    assert lines[0].split() == ["NAME", "LABELS"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[1:]}
    assert rows == {"nsa": ["team=a"], "nsb": ["foo=bar"]}
    assert ok(ctr_in(d.socket, "default", "namespaces", "ls", "-q")).split() == ["nsa", "nsb"]

    src = tmp_path / "small"
    src.write_bytes(b"hello namespace\n")
    ok(ctr_in(d.socket, "nsc", "content", "ingest", "r", stdin=src))  # implicit creation
    assert "nsc" in ok(ctr_in(d.socket, "default", "namespaces", "ls", "-q")).split()
    busy = ctr_in(d.socket, "default", "namespaces", "rm", "nsc")
    assert busy.returncode == 1
    assert 'namespace "nsc" must be empty' in busy.stderr

    assert ok(ctr_in(d.socket, "default", "namespaces", "rm", "nsa")).split() == ["nsa"]
    assert ok(ctr_in(d.socket, "default", "namespaces", "rm", "nosuch")).split() == ["nosuch"]
    bad = ctr_in(d.socket, "default", "namespaces", "create", "bad/name")
    assert bad.returncode == 1
    assert "invalid argument" in bad.stderr
    assert ok(ctr_in(d.socket, "default", "namespaces", "ls", "-q")).split() == ["nsb", "nsc"]


@pytest.mark.parametrize("policy", ["shared", "isolated"])
def test_cross_namespace_ingest(daemon: Callable[..., Any], tmp_path: Path, policy: str) -> None:
    """Shared: B gets A's blob without sending bytes. Isolated: B must send all of them.

    Proof without a packet capture: B's input file has the right size but wrong
    bytes. Under "shared" ctr seeks past them and sends none, so the ingest
    succeeds and B reads A's real bytes; under "isolated" they are uploaded and
    the digest check fails.
    """
    d = daemon(policy_config(policy))
    data = os.urandom(1_000_000)
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    real, fake = tmp_path / "real", tmp_path / "fake"
    real.write_bytes(data)
    fake.write_bytes(b"\0" * len(data))
    ok(ctr_in(d.socket, "sa", "content", "ingest", "ra", stdin=real))
    assert ctr_in(d.socket, "sb", "content", "get", dgst).returncode == 1

    args = ["content", "ingest", "--expected-digest", dgst, "--expected-size", str(len(data)), "rb"]
    r = ctr_in(d.socket, "sb", *args, stdin=fake)
    if policy == "shared":
        ok(r)
    else:
        assert r.returncode == 1
        assert "unexpected commit digest" in r.stderr
        assert ok(ctr_in(d.socket, "sb", "content", "ls", "-q")).split() == []
        ok(ctr_in(d.socket, "sb", *args[:-1], "rb2", stdin=real))
    got = subprocess.run(
        [CTR, "-a", d.socket, "-n", "sb", "content", "get", dgst], capture_output=True, timeout=60, check=True
    ).stdout
    assert got == data
    assert len(blob_files(d.root)) == 1
    plugins = ok(ctr_in(d.socket, "default", "plugins", "ls", "-d"))
    assert f"policy      {policy}" in plugins or f"policy {policy}" in " ".join(plugins.split())


def test_restart_mid_ingest(daemon: Callable[..., Any]) -> None:
    """SIGKILL the daemon mid-ingest, restart on the same root, resume and commit."""
    data = os.urandom(5 * 1024 * 1024 + 3)
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    d = daemon()
    half = len(data) // 2

    async def first() -> None:
        ch = Channel(path=d.socket)
        try:
            store = RemoteContentStore(ch, namespace="restart")
            w = await open_writer(store, "big", total=len(data), expected=dgst)
            await w.write(data[:half])
            assert (await w.status()).offset == half
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait(10)
        finally:
            ch.close()

    asyncio.run(first())
    d2 = daemon(tmp=d.tmp)

    async def second() -> None:
        ch = Channel(path=d2.socket)
        try:
            store = RemoteContentStore(ch, namespace="restart")
            with namespaces.with_namespace("restart"):
                st = await store.status("big")
                assert (st.offset, st.total) == (half, len(data))
                w = await open_writer(store, "big", total=len(data), expected=dgst)
                assert (await w.status()).offset == half
                await w.write(data[half:])
                await w.commit(len(data), dgst)
                info = await store.info(dgst)
                assert info.size == len(data)
                assert await store.list_statuses() == []
        finally:
            ch.close()

    asyncio.run(second())
