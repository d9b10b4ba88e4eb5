"""``[plugins."io.containerd.content.v1.content"] direct_write``, seen from outside the daemon.

A blob ingested with direct writes leaves no pages of it in the page cache;
one ingested with ordinary writes leaves all of them (fsynced, still cached).
``mincore`` on a private mapping of the blob file tells which.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
from pathlib import Path

import pytest
from _daemon import Launcher, run_sync

from ctrd.client import Client
from ctrd.content.local._direct import O_DIRECT, supported_in

pytestmark = pytest.mark.skipif(O_DIRECT == 0, reason="no O_DIRECT on this platform")

SECTION = '[plugins."io.containerd.content.v1.content"]\n'


def _cached_pages(path: Path) -> tuple[int, int]:
    """(pages of *path* in the page cache, pages of *path*)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    page = mmap.PAGESIZE
    pages = (size + page - 1) // page
    with path.open("rb") as f:
        m = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    try:
        start = ctypes.c_char.from_buffer(m)
        vec = (ctypes.c_ubyte * pages)()
        rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(start)), ctypes.c_size_t(size), vec)
        del start
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return sum(v & 1 for v in vec), pages
    finally:
        m.close()


@pytest.mark.parametrize(
    ("setting", "direct"), [("", True), ("direct_write = true\n", True), ("direct_write = false\n", False)]
)
def test_direct_write_setting(daemon: Launcher, setting: str, direct: bool) -> None:
    d = daemon(SECTION + setting if setting else "")
    data = hashlib.shake_256(b"direct-daemon").digest(4 << 20)
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()

    async def upload() -> None:
        async with Client(d.socket, namespace="direct") as c:
            info = await c.content.ingest("direct-ref", data, expected=dgst)
            assert (info.digest, info.size) == (dgst, len(data))

    run_sync(upload)
    blob = (
        Path(d.root) / "io.containerd.content.v1.content" / "blobs" / "sha256" / dgst.removeprefix("sha256:")
    )
    cached, pages = _cached_pages(blob)
    # where the filesystem refuses O_DIRECT the writer falls back to ordinary writes
    direct = direct and supported_in(d.tmp)  # the same filesystem, outside the store
    assert cached == (0 if direct else pages), (cached, pages)
    assert blob.read_bytes() == data


def test_direct_write_must_be_a_bool(daemon: Launcher) -> None:
    d = daemon(SECTION + 'direct_write = "sometimes"\n', wait=False)
    assert d.proc.wait(30) != 0
    assert "direct_write: Input should be a valid boolean" in d.log()
