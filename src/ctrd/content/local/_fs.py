"""Filesystem primitives of the local store, shared by the store, its reader and its writer.

Blocking work (large writes and reads, fsync, rename, directory removal) runs in
the default thread pool through :func:`run_blocking`, which always lets the
blocking step finish before the coroutine returns, even when it is cancelled; so
the callers' in-memory state (offset, hash, fd, lock) never disagrees with the
file. :func:`map_os_error` turns an :class:`OSError` into an :mod:`errdefs`
error without a path; the timestamp helpers read and write containerd's
``startedat``/``updatedat`` files; files are written atomically, and made with
the store's private modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import errno
import functools
import os
import re
import shutil
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from ctrd import errdefs

__all__ = [
    "BLOB_MODE",
    "DIR_MODE",
    "FILE_MODE",
    "INLINE_MAX",
    "datetime_from_ns",
    "format_timestamp",
    "fsync_dir",
    "map_os_error",
    "parse_timestamp",
    "remove_ingest_dir",
    "run_blocking",
    "write_file",
    "write_file_atomic",
    "write_files_atomic",
]

_T = TypeVar("_T")

INLINE_MAX: Final = 64 * 1024
"""Writes and reads up to this many bytes run on the event loop; larger ones in a thread."""

FILE_MODE: Final = 0o600
"""Mode of every file the store creates (ingest files; a committed blob then loses the write bit)."""

BLOB_MODE: Final = 0o400
"""Mode of a committed blob."""

DIR_MODE: Final = 0o700
"""Mode of every directory the store creates."""
_TIMESTAMP_RE: Final = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")


async def run_blocking(
    fn: Callable[..., _T],
    *args: object,
    discard: Callable[[_T], object] | None = None,
) -> _T:
    """Run ``fn(*args)`` in the default executor and return its result.

    If the calling task is cancelled meanwhile, the call still runs to
    completion before :class:`asyncio.CancelledError` propagates, so callers'
    ``finally`` blocks run after the blocking step, never beside it. A result
    produced for a cancelled caller is passed to *discard* (e.g. to close an fd).
    """
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, functools.partial(fn, *args))
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(fut)
        except asyncio.CancelledError:
            if fut.cancelled():
                raise
            cancelled = True
            continue
        except BaseException as exc:
            if cancelled:
                raise asyncio.CancelledError from exc
            raise
        break
    if cancelled:
        if discard is not None:
            discard(result)
        raise asyncio.CancelledError
    return result


def map_os_error(exc: OSError, what: str) -> errdefs.Error:
    """Translate an :class:`OSError` into an :mod:`errdefs` error.

    The message is ``<what>: <strerror>``; it never contains a filesystem path.
    """
    reason = exc.strerror or type(exc).__name__
    msg = f"{what}: {reason}"
    code = exc.errno
    if code in (errno.ENOENT, errno.ENOTDIR):
        return errdefs.NotFound(msg)
    if code == errno.EEXIST:
        return errdefs.AlreadyExists(msg)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return errdefs.PermissionDenied(msg)
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EMFILE, errno.ENFILE):
        return errdefs.ResourceExhausted(msg)
    return errdefs.Unknown(msg)


def datetime_from_ns(ns: int) -> _dt.datetime:
    """UTC datetime from nanoseconds since the epoch (truncated to microseconds)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return _dt.datetime.fromtimestamp(seconds, _dt.UTC).replace(microsecond=rest // 1000)


def format_timestamp(t: _dt.datetime) -> str:
    """RFC 3339 with the fraction trimmed of trailing zeros, in UTC (Go's ``RFC3339Nano``)."""
    t = t.astimezone(_dt.UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_timestamp(text: str) -> _dt.datetime | None:
    """Parse what Go's ``time.MarshalText`` writes (any offset, up to 9 fraction digits).

    Returns ``None`` for anything else; the fraction is truncated to microseconds.
    """
    m = _TIMESTAMP_RE.fullmatch(text.strip())
    if m is None:
        return None
    base, frac, zone = m.groups()
    try:
        t = _dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    if frac:
        t = t.replace(microsecond=int(frac[:6].ljust(6, "0")))
    if zone == "Z":
        return t.replace(tzinfo=_dt.UTC)
    sign = 1 if zone[0] == "+" else -1
    offset = _dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return t.replace(tzinfo=_dt.timezone(sign * offset)).astimezone(_dt.UTC)


def write_file_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write *data* to *path* via a temp file in the same directory, fsync and rename.

    Blocking; the equivalent of continuity's ``AtomicWriteFile`` (mode :data:`FILE_MODE`).
    The temp file is ``.<name>.<random>`` next to *path*.
    """
    write_files_atomic([(path, data)])


def write_files_atomic(files: Sequence[tuple[str | os.PathLike[str], bytes]]) -> None:
    """:func:`write_file_atomic` for several files: every temp file is written and
    fsynced before the first rename, so the filesystem can commit their data together
    (one journal commit instead of one per file on ext4). Renames happen in order;
    on an error the temp files not yet renamed are removed.
    """
    fds: list[int] = []  # open temp files (closed before the renames)
    temps: list[tuple[str, str]] = []  # (temp path, final path) not renamed yet
    try:
        for path, data in files:
            path = os.fspath(path)
            parent, name = os.path.split(path)
            fd, tmp = _create_temp(parent or ".", name)
            fds.append(fd)
            temps.append((tmp, path))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        for fd in fds:
            os.fsync(fd)
        while fds:
            os.close(fds.pop())
        while temps:
            os.replace(*temps[0])
            del temps[0]
    except BaseException:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        for tmp, _path in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


_TEMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _create_temp(parent: str, name: str) -> tuple[int, str]:
    """A new file ``<parent>/.<name>.<random>``, mode :data:`FILE_MODE` (as ``mkstemp``, but no chmod)."""
    for _ in range(100):
        tmp = f"{parent}/.{name}.{os.urandom(6).hex()}"
        try:
            return os.open(tmp, _TEMP_FLAGS, FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no usable temporary file name found")


def write_file(path: str, data: bytes) -> None:
    """Create or truncate *path* (mode :data:`FILE_MODE`) and write *data*; no fsync (``os.WriteFile``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def remove_ingest_dir(path: str) -> None:
    """Remove an ingest directory and the files in it; errors are ignored (``rmtree(ignore_errors=True)``).

    The usual content (a few regular files) takes one ``listdir``, an ``unlink`` per
    file and an ``rmdir``; anything else falls back to :func:`shutil.rmtree`.
    """
    try:
        for name in os.listdir(path):
            os.unlink(f"{path}/{name}")
        os.rmdir(path)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync the directory *path* (makes a rename in it durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
