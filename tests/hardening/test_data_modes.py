"""The data under the root is private: nobody but its owner can read blobs or the database.

Before, blobs/ was 0755, blobs 0444 and meta.db 0644 under a 0711 root: anyone
knowing a digest could read the blob. Now (as containerd) the root is 0700,
directories 0700, files 0600, blobs 0400; the state directory stays 0711 (others
traverse it to the socket). A root an older ctrd made is fixed up at start.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from _daemon import DaemonProc, Launcher, run_sync

from ctrd.client import Client
from ctrd.content import sha256_of

pytestmark = pytest.mark.hardening

CONTENT = "io.containerd.content.v1.content"
METADATA = "io.containerd.metadata.v1.sqlite"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _ingest_and_hold_one(d: DaemonProc, data: bytes, ref: str = "open") -> None:
    """Commit *data*; leave the ingest *ref* in progress with the same bytes written."""

    async def go() -> None:
        async with Client(d.socket, namespace="modes", timeout=30) as c:
            await c.content.ingest(f"{ref}-done", data, labels={"containerd.io/gc.root": "x"})
            w = await c.content.writer(ref, total=2 * len(data))
            await w.write(data)
            await w.close()

    run_sync(go)


def _check_private(d: DaemonProc, data: bytes) -> None:
    root, state = Path(d.root), Path(d.state)
    assert _mode(root) == 0o700
    assert _mode(state) == 0o711
    assert _mode(root / "ctrd.lock") == 0o600
    content, metadata = root / CONTENT, root / METADATA
    for directory in (content, content / "blobs", content / "blobs" / "sha256", content / "ingest", metadata):
        assert _mode(directory) == 0o700, directory
    blob = content / "blobs" / "sha256" / sha256_of(data).removeprefix("sha256:")
    assert _mode(blob) == 0o400
    (ingest,) = (content / "ingest").iterdir()  # the ingest in progress
    assert (ingest / "ref").read_text().endswith("/open")
    assert _mode(ingest) == 0o700
    for f in ingest.iterdir():
        assert _mode(f) == 0o600, f
    for name in ("meta.db", "meta.db-wal", "meta.db-shm"):
        assert _mode(metadata / name) == 0o600, name


def test_data_is_private_after_ingest(daemon: Launcher) -> None:
    old = os.umask(0o022)  # the usual umask (the daemon inherits it): the modes must not depend on it
    try:
        d = daemon()
    finally:
        os.umask(old)
    data = os.urandom(300_000)
    _ingest_and_hold_one(d, data)
    _check_private(d, data)


def test_an_older_root_is_fixed_up_at_start(daemon: Launcher) -> None:
    d = daemon()
    data = os.urandom(100_000)
    _ingest_and_hold_one(d, data)
    assert d.stop() == 0
    root = Path(d.root)
    content, metadata = root / CONTENT, root / METADATA
    # what an older ctrd left behind
    os.chmod(root, 0o711)
    for directory in (content, content / "blobs", content / "blobs" / "sha256", content / "ingest"):
        os.chmod(directory, 0o755)
    os.chmod(metadata, 0o711)
    for name in ("meta.db", "meta.db-wal", "meta.db-shm"):
        if (metadata / name).exists():
            os.chmod(metadata / name, 0o644)
    d2 = daemon(tmp=d.tmp)
    root_mode = _mode(root)
    assert root_mode == 0o700
    for directory in (content, content / "blobs", content / "blobs" / "sha256", content / "ingest", metadata):
        assert _mode(directory) == 0o700, directory
    assert _mode(metadata / "meta.db") == 0o600
    _ingest_and_hold_one(d2, os.urandom(1000), "again")
    for name in ("meta.db-wal", "meta.db-shm"):
        assert _mode(metadata / name) == 0o600, name
