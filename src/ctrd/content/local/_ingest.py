"""One ingest directory on disk: reading its status, creating it, resuming it.

An ingest of the local store is ``ingest/<sha256hex(ref)>/`` holding ``ref``,
``data``, ``startedat``, ``updatedat`` and, when known, ``total`` (the layout is
described in :mod:`ctrd.content.local._store`). Everything here blocks: the
store calls it in a worker thread or, for one small read, inline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import os
from pathlib import Path
from typing import Final

from ctrd import errdefs
from ctrd.content._store import Status, utcnow
from ctrd.content.local._fs import (
    DIR_MODE,
    FILE_MODE,
    datetime_from_ns,
    format_timestamp,
    map_os_error,
    parse_timestamp,
    write_file,
    write_files_atomic,
)

__all__ = ["Ingest", "close_ingest", "open_ingest", "read_status"]

_REHASH_CHUNK: Final = 1 << 20


@dataclasses.dataclass(slots=True)
class Ingest:
    """An ingest opened for writing: what :meth:`ctrd.content.local.LocalStore.writer` builds
    its :class:`~ctrd.content.local.LocalWriter` from."""

    fd: int
    offset: int
    total: int
    hasher: hashlib._Hash
    started_at: _dt.datetime
    updated_at: _dt.datetime


def read_status(ingest_dir: Path) -> Status | None:
    """Read one ingest directory; ``None`` if it, ``data`` or ``ref`` is missing."""
    try:
        ref = (ingest_dir / "ref").read_bytes().decode("utf-8", errors="replace")
        data_st = os.stat(ingest_dir / "data")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise map_os_error(exc, "read ingest status") from None
    try:
        total = int((ingest_dir / "total").read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        total = 0
    data_mtime = datetime_from_ns(data_st.st_mtime_ns)
    started_at = _read_timestamp(ingest_dir / "startedat") or data_mtime
    updated_at = max(_read_timestamp(ingest_dir / "updatedat") or data_mtime, data_mtime)
    return Status(
        ref=ref,
        offset=data_st.st_size,
        total=total,
        started_at=started_at,
        updated_at=updated_at,
    )


def open_ingest(ref: str, total: int, ingest_dir: str) -> Ingest:
    """Create the ingest directory *ingest_dir* for *ref*, or resume the one there (re-hashing its data)."""
    try:
        try:
            os.mkdir(ingest_dir, DIR_MODE)
        except FileExistsError:
            st = read_status(Path(ingest_dir))
            if st is not None:
                return _resume(Path(ingest_dir), ref, total, st)
        return _create(ingest_dir, ref, total)
    except OSError as exc:
        raise map_os_error(exc, f"open ref {ref}") from None


def _resume(ingest_dir: Path, ref: str, total: int, st: Status) -> Ingest:
    if st.ref != ref:
        raise errdefs.Unknown(f"ref key does not match: {ref} != {st.ref}")
    if total > 0 and st.total > 0 and total != st.total:
        raise errdefs.FailedPrecondition(f"provided total differs from status: {total} != {st.total}")
    if total > 0 and st.total == 0:
        write_file(os.fspath(ingest_dir / "total"), str(total).encode("ascii"))
    else:
        total = st.total
    fd = os.open(ingest_dir / "data", os.O_RDWR | os.O_CLOEXEC)
    try:
        hasher = hashlib.sha256()
        buf = bytearray(_REHASH_CHUNK)
        view = memoryview(buf)
        offset = 0
        while True:
            n = os.preadv(fd, [buf], offset)
            if n == 0:
                break
            hasher.update(view[:n])
            offset += n
    except BaseException:
        os.close(fd)
        raise
    return Ingest(fd, offset, total, hasher, st.started_at, st.updated_at)


def _create(ingest_dir: str, ref: str, total: int) -> Ingest:
    now = utcnow()
    stamp = format_timestamp(now).encode()
    write_file(f"{ingest_dir}/ref", ref.encode())
    write_files_atomic([(f"{ingest_dir}/startedat", stamp), (f"{ingest_dir}/updatedat", stamp)])
    if total > 0:
        write_file(f"{ingest_dir}/total", str(total).encode("ascii"))
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{ingest_dir}/total")
    fd = os.open(f"{ingest_dir}/data", os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    return Ingest(fd, 0, max(total, 0), hashlib.sha256(), now, now)


def _read_timestamp(path: Path) -> _dt.datetime | None:
    try:
        return parse_timestamp(path.read_text(encoding="ascii", errors="replace"))
    except OSError:
        return None


def close_ingest(ingest: Ingest) -> None:
    """Close the data fd of an ingest nobody will write (its opener was cancelled)."""
    os.close(ingest.fd)
