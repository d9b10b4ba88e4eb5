"""A full disk: RESOURCE_EXHAUSTED (never UNKNOWN, no traceback), deletions and GC still free space,
and the daemon recovers by itself, across a restart at 0 bytes free too.

Before, SQLite's "database or disk is full" became UNKNOWN with a traceback in the
log, every collection failed from then on (its sweep could not commit), and a
restart did not help. Each test runs on a tmpfs of its own (mounting needs root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _daemon import DaemonProc, Launcher, run_sync, short_tmpdir, toml_str

from ctrd import errdefs
from ctrd.client import Client
from ctrd.metadata._reserve import SpaceReserve
from ctrd.metadata.db import DB

pytestmark = pytest.mark.hardening

MiB = 1 << 20
ROOT_LABEL = {"containerd.io/gc.root": "keep"}


@contextlib.contextmanager
def small_fs(size_mib: int) -> Iterator[Path]:
    """A fresh tmpfs of *size_mib* MiB, unmounted afterwards (skips when it cannot be mounted)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mnt = short_tmpdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        shutil.rmtree(mnt, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip() or res.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(mnt, ignore_errors=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path) -> None:
    """Write zeros to *path* until not one more byte fits."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (MiB, 64 << 10, 4096, 512, 1):
            chunk = bytes(size)
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)
    assert free_bytes(path.parent) == 0


# -- the database alone ------------------------------------------------------------------------


async def test_commit_at_zero_free_takes_the_reserve_and_recovers() -> None:
    with small_fs(16) as mnt:
        reserve = SpaceReserve(mnt / "db" / "reserve", 4 * MiB)
        db = DB(mnt / "db" / "meta.db", reserve)
        await db.open()
        try:
            assert reserve.held == 4 * MiB
            assert not reserve.low
            fill(mnt / "filler")
            # a commit needs room in the write-ahead log: it gets it from the reserve
            for i in range(20):
                async with db.update(inline=i % 2 == 0) as tx:
                    await tx.run("INSERT INTO namespaces(name, created_at) VALUES (?, 1)", (f"ns{i}",))
            assert reserve.low
            assert reserve.held == reserve.floor
            assert reserve.releases == 1
            with pytest.raises(errdefs.ResourceExhausted, match="no space left on device"):
                reserve.gate("write")
            os.unlink(mnt / "filler")
            reserve.gate("write")  # space is back: the reserve is re-allocated, data accepted
            assert not reserve.low
            assert reserve.held == 4 * MiB
        finally:
            await db.close()


async def test_without_a_reserve_a_full_disk_is_resource_exhausted() -> None:
    with small_fs(8) as mnt:
        db = DB(mnt / "meta.db", SpaceReserve(mnt / "reserve", 0))
        await db.open()
        try:
            async with db.update() as tx:  # the log exists, sized for a few pages
                await tx.run("INSERT INTO namespaces(name, created_at) VALUES ('a', 1)")
            fill(mnt / "filler")

            async def grow_the_log() -> None:
                for i in range(2000):  # past what it holds
                    async with db.update(inline=True) as tx:
                        await tx.run(
                            "INSERT INTO namespaces(name, created_at) VALUES (?, 1)", (f"n{i}" + "x" * 900,)
                        )

            with pytest.raises(errdefs.ResourceExhausted, match="metadata database: no space left on device"):
                await grow_the_log()
            # the writer is usable again once there is room (no transaction left open)
            os.unlink(mnt / "filler")
            async with db.update() as tx:
                await tx.run("INSERT INTO namespaces(name, created_at) VALUES ('b', 1)")
        finally:
            await db.close()


# -- a real daemon -----------------------------------------------------------------------------


def _start(daemon: Launcher, tmp: Path, root: Path) -> DaemonProc:
    config = tmp / "config.toml"
    if not config.exists():
        config.write_text(f"root = {toml_str(root)}\nstate = {toml_str(tmp / 'state')}\n")
    return daemon(tmp=tmp)


def _fill_with_ingests(d: DaemonProc, prefix: str) -> tuple[list[str], list[BaseException]]:
    """Ingest 4 MiB blobs until the daemon refuses; the digests committed and the errors seen."""

    async def go() -> tuple[list[str], list[BaseException]]:
        digests: list[str] = []
        errors: list[BaseException] = []
        async with Client(d.socket, namespace="full", timeout=30) as c:
            for i in range(64):
                try:
                    info = await c.content.ingest(f"{prefix}{i}", os.urandom(4 * MiB), labels=ROOT_LABEL)
                except Exception as exc:
                    errors.append(exc)
                    if len(errors) == 3:
                        break
                else:
                    digests.append(info.digest)
        return digests, errors

    return run_sync(go, 120)


def _delete_and_collect(d: DaemonProc, digests: list[str], root: Path) -> None:
    """Delete *digests*; wait until the collector (which runs after deletions) removed their files."""

    async def go() -> None:
        async with Client(d.socket, namespace="full", timeout=30) as c:
            for dgst in digests:
                await c.content.delete(dgst)
        for _ in range(1000):
            if not _blob_files(root) & set(digests):
                return
            await asyncio.sleep(0.02)

    run_sync(go, 60)


def _ingest_ok(d: DaemonProc, ref: str) -> str:
    async def go() -> str:
        async with Client(d.socket, namespace="full", timeout=30) as c:
            return (await c.content.ingest(ref, os.urandom(2 * MiB), labels=ROOT_LABEL)).digest

    return run_sync(go, 60)


def _blob_files(root: Path) -> set[str]:
    d = root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    return {f"sha256:{p.name}" for p in d.iterdir()} if d.is_dir() else set()


def _assert_clean_log(d: DaemonProc) -> None:
    log = d.log()
    assert "Traceback" not in log
    assert "unexpected error" not in log  # what turned into UNKNOWN
    assert "database or disk is full" not in log or "no space left on device" in log
    assert "garbage collection failed" not in log


def test_full_disk_end_to_end(daemon: Launcher) -> None:
    with small_fs(64) as mnt:
        tmp = daemon.tmpdir()
        root = mnt / "root"
        d = _start(daemon, tmp, root)

        # 1. fill the disk: every refusal is RESOURCE_EXHAUSTED
        digests, errors = _fill_with_ingests(d, "a")
        assert len(digests) >= 5
        assert errors, errors
        assert all(isinstance(e, errdefs.ResourceExhausted) for e in errors), errors
        assert d.log().count("disk full (") == 1  # one line for the event, none per refused call
        # what the daemon gave back is for deletions: take it away too, down to 0 bytes free
        fill(mnt / "filler")

        # 2. delete blobs at 0 bytes free: the metadata commits, the collector removes the files
        doomed, kept = digests[:-2], digests[-2:]
        _delete_and_collect(d, doomed, root)
        assert _blob_files(root) == set(kept)
        # the space came back, and 16 MiB of it went into the reserve again
        assert free_bytes(mnt) >= 4 * MiB * len(doomed) - 16 * MiB - MiB

        # 3. new ingests succeed again: the reserve is back in place
        new = _ingest_ok(d, "after")
        assert new in _blob_files(root)
        reserve = root / "io.containerd.metadata.v1.sqlite" / "reserve"
        assert reserve.stat().st_blocks * 512 >= 16 * MiB
        _assert_clean_log(d)
        assert "disk reserve re-allocated, new data accepted" in d.log()

        # 4. fill it again, stop, leave not one byte free, restart: it starts and serves
        os.unlink(mnt / "filler")
        more, errors = _fill_with_ingests(d, "b")
        assert errors, errors
        assert all(isinstance(e, errdefs.ResourceExhausted) for e in errors), errors
        assert d.stop() == 0
        _assert_clean_log(d)
        fill(mnt / "filler")
        d2 = daemon(tmp=tmp)  # waits until Version answers
        assert "disk nearly full at start-up" in d2.log()

        async def listed() -> set[str]:
            async with Client(d2.socket, namespace="full", timeout=30) as c:
                return {i.digest async for i in c.content.list()}

        everything = set(kept) | {new} | set(more)
        assert run_sync(listed) == everything
        assert _blob_files(root) == everything
        # and frees space, then takes new data, on its own
        _delete_and_collect(d2, sorted(everything), root)
        assert _blob_files(root) == set()
        _ingest_ok(d2, "again")
        _assert_clean_log(d2)
        assert d2.stop() == 0
