"""The local store's file primitives (atomic writes, ingest removal) and the writer's digest cache."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from ctrd.content import sha256_of
from ctrd.content.local import LocalStore
from ctrd.content.local._fs import remove_ingest_dir, write_file_atomic, write_files_atomic


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_write_file_atomic_mode_and_content(tmp_path: Path) -> None:
    target = tmp_path / "stamp"
    write_file_atomic(target, b"one")
    write_file_atomic(str(target), b"two")  # replaces
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stamp"]  # no temp file left


def test_write_files_atomic_writes_all_in_order(tmp_path: Path) -> None:
    write_files_atomic([(tmp_path / "a", b"1"), (str(tmp_path / "b"), b"22")])
    assert (tmp_path / "a").read_bytes() == b"1"
    assert (tmp_path / "b").read_bytes() == b"22"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_write_files_atomic_failure_leaves_no_temp_and_no_target(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_files_atomic([(tmp_path / "a", b"1"), (tmp_path / "missing" / "b", b"2")])
    assert list(tmp_path.iterdir()) == []


def test_remove_ingest_dir(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("ref", "data", "startedat", ".updatedat.abc"):
        (flat / name).write_bytes(b"x")
    remove_ingest_dir(str(flat))
    nested = tmp_path / "nested"
    (nested / "sub").mkdir(parents=True)
    (nested / "sub" / "f").write_bytes(b"x")
    (nested / "g").write_bytes(b"x")
    remove_ingest_dir(str(nested))  # falls back to rmtree
    remove_ingest_dir(str(tmp_path / "gone"))  # errors are ignored
    assert list(tmp_path.iterdir()) == []


async def test_ingest_creation_leaves_only_the_layout(tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "content")
    w = await local.writer("r", total=3)
    d = local.root / "ingest" / hashlib.sha256(b"r").hexdigest()
    assert sorted(p.name for p in d.iterdir()) == ["data", "ref", "startedat", "total", "updatedat"]
    assert (d / "startedat").read_bytes() == (d / "updatedat").read_bytes()
    for name in ("ref", "startedat", "updatedat", "total", "data"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600 & ~_umask(), name
    await w.close()


async def test_digest_follows_writes_and_truncate(tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "content")
    w = await local.writer("r")
    empty = w.digest()
    assert empty == sha256_of(b"")
    await w.write(b"abc")
    assert w.digest() == sha256_of(b"abc")
    assert w.digest() == sha256_of(b"abc")
    await w.write(b"x" * 100_000)  # in a worker thread
    assert w.digest() == sha256_of(b"abc" + b"x" * 100_000)
    await w.truncate(0)
    assert w.digest() == empty
    await w.write(b"abc")
    assert w.digest() == sha256_of(b"abc")
    await w.commit(3, sha256_of(b"abc"))
    assert w.digest() == sha256_of(b"abc")
