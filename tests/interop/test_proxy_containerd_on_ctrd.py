"""containerd on ctrd: a private containerd whose content store is ctrd, through ``proxy_backend_address``.

containerd's own content plugin is disabled and ``[proxy_plugins.ctrd] type =
"content"`` points at ctrd's backend socket. containerd 1.6 sends its backend
calls without a namespace header; ctrd serves them all in
``proxy_backend_namespace``. ``ctr`` against containerd ingests and reads; the
bytes are in ctrd's local store; containerd's deletes reach ctrd.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctrd.testing import Containerd

pytestmark = pytest.mark.interop

CTR = "/usr/bin/ctr"


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


def ctrd_blobs(root: str) -> list[str]:
    d = Path(root) / "io.containerd.content.v1.content" / "blobs" / "sha256"
    return sorted("sha256:" + p.name for p in d.glob("*")) if d.is_dir() else []


def start_pair(daemon: Callable[..., Any], namespace: str = "") -> tuple[Any, Containerd]:
    tmp = daemon.tmpdir()  # type: ignore[attr-defined]
    backend = f"{tmp}/backend.sock"
    ns_line = f'  proxy_backend_namespace = "{namespace}"\n' if namespace else ""
    d = daemon(
        f'[plugins."io.containerd.grpc.v1.content"]\n  proxy_backend_address = "{backend}"\n{ns_line}'
        # collections follow deletions quickly (containerd's deletes land here)
        '[plugins."io.containerd.gc.v1.scheduler"]\n  pause_threshold = 0.5\n',
        tmp=tmp,
        args=["--log-level", "debug"],
    )
    c = Containerd(
        wait_for_startup_gc=True,
        disabled=["io.containerd.content.v1.content"],
        extra=f'[proxy_plugins]\n  [proxy_plugins.ctrd]\n    type = "content"\n    address = "{backend}"\n',
    )
    c.start()
    return d, c


def test_ctr_against_containerd_stores_in_ctrd(daemon: Callable[..., Any]) -> None:
    d, c = start_pair(daemon)
    try:
        plugins = ok(ctr(c.socket, "plugins", "ls"))
        rows = [line.split() for line in plugins.splitlines()]
        assert ["io.containerd.content.v1", "ctrd", "-", "ok"] in rows, plugins
        assert not any(r[:2] == ["io.containerd.content.v1", "content"] for r in rows)

        data = os.urandom(3 * 1024 * 1024 + 5)
        dgst = "sha256:" + hashlib.sha256(data).hexdigest()
        ok(ctr(c.socket, "content", "ingest", "ref1", ns="work", data=data))
        assert dgst in ok(ctr(c.socket, "content", "ls", ns="work"))
        got = ctr(c.socket, "content", "get", dgst, ns="work")
        assert got.returncode == 0
        assert got.stdout == data

        # the bytes are in ctrd's store, recorded in the backend namespace only, rooted
        assert ctrd_blobs(d.root) == [dgst]
        assert not (c.root / "io.containerd.content.v1.content").exists()
        listed = ok(ctr(d.socket, "content", "ls", ns="proxy-backend"))
        assert dgst in listed
        assert "containerd.io/gc.root=" in listed
        for ns in ("work", "default"):
            assert ok(ctr(d.socket, "content", "ls", "-q", ns=ns)).split() == []
        # a second containerd namespace with the same digest: no second copy anywhere
        ok(ctr(c.socket, "content", "ingest", "ref2", ns="other", data=data))
        assert ctrd_blobs(d.root) == [dgst]

        # what containerd 1.6 sent: no namespace header on its backend calls
        d.wait_for_log(r"proxy backend Write: header namespace None")
        headers = set(re.findall(r"proxy backend (\w+): header namespace (\S+),", d.log()))
        assert {m for m, h in headers if h != "None"} == set(), headers

        # deleting in containerd (both namespaces): its collector deletes through the backend,
        # then ctrd's collector removes the file
        ok(ctr(c.socket, "content", "rm", dgst, ns="work"))
        ok(ctr(c.socket, "content", "rm", dgst, ns="other"))
        d.wait_for(
            lambda: ok(ctr(d.socket, "content", "ls", "-q", ns="proxy-backend")).split() == [],
            timeout=20,
            what="containerd's collector deleting through the backend",
        )
        d.wait_for(lambda: ctrd_blobs(d.root) == [], timeout=30, what="ctrd's collector removing the file")
        assert re.search(r"proxy backend (List|Delete): header namespace None", d.log())
    finally:
        log = c.log()
        if c.stop() not in (0, None):
            print(log)


def test_custom_backend_namespace_and_resumed_ingest(daemon: Callable[..., Any], tmp_path: Path) -> None:
    d, c = start_pair(daemon, namespace="host-b")
    try:
        data = os.urandom(2 * 1024 * 1024)
        dgst = "sha256:" + hashlib.sha256(data).hexdigest()
        # an ingest cut short, then resumed by ctr (seekable stdin from a file)
        part = tmp_path / "part"
        part.write_bytes(data[:500_000])
        with part.open("rb") as f:
            p = subprocess.run(
                [
                    CTR,
                    "-a",
                    c.socket,
                    "content",
                    "ingest",
                    "--expected-size",
                    str(len(data)),
                    "--expected-digest",
                    dgst,
                    "r",
                ],
                stdin=f,
                capture_output=True,
                timeout=60,
                check=False,
            )
        assert p.returncode != 0  # short: the commit fails, the ingest stays
        active = ok(ctr(c.socket, "content", "active"))
        assert "r" in active.split()
        full = tmp_path / "full"
        full.write_bytes(data)
        with full.open("rb") as f:
            p = subprocess.run(
                [
                    CTR,
                    "-a",
                    c.socket,
                    "content",
                    "ingest",
                    "--expected-size",
                    str(len(data)),
                    "--expected-digest",
                    dgst,
                    "r",
                ],
                stdin=f,
                capture_output=True,
                timeout=60,
                check=False,
            )
        assert p.returncode == 0, p.stderr
        assert ctr(c.socket, "content", "get", dgst).stdout == data
        assert dgst in ok(ctr(d.socket, "content", "ls", "-q", ns="host-b")).split()
        assert ok(ctr(d.socket, "content", "ls", "-q", ns="proxy-backend")).split() == []
    finally:
        c.stop()
