"""One daemon per root: an exclusive ``flock`` on ``<root>/ctrd.lock``.

Two daemons on one root would each run a garbage collector that knows nothing
of the other's ingests in flight, and delete what the other just committed.
containerd's bolt database makes a second daemon wait for the first; ctrd's
second daemon stops at once instead, naming the holder. A lock cannot say who
holds it, so the holder writes its pid into the file; the lock, not the pid,
decides (a stale pid from a dead daemon is just text, and the file is never
removed: removing it would let two daemons lock two different files).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import Final

__all__ = ["LOCK_NAME", "RootInUse", "RootLock"]

LOCK_NAME: Final = "ctrd.lock"


class RootInUse(Exception):
    """Another process holds the root's lock; the message names its pid when known."""


class RootLock:
    """The lock of one root directory, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = os.path.join(os.fspath(root), LOCK_NAME)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock without waiting and write this process's pid into the file.

        :raises RootInUse: another process holds it.
        :raises OSError: the file cannot be created or locked for another reason.
        """
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = _read_pid(fd)
                who = f"ctrd pid {holder}" if holder else "another process"
                raise RootInUse(
                    f"root {os.path.dirname(self.path)} is in use by {who} (it holds {self.path}); "
                    "one daemon per root"
                ) from None
            _write_pid(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the file and the pid in it stay; see the module docstring). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the pid stays: the next holder writes its own over it, needing no free space


def _write_pid(fd: int) -> None:
    """Write this process's pid over the file's content (best effort: a full disk leaves it unnamed).

    Written before the file is cut to its length, so the blocks an earlier holder's
    pid occupies are reused: no free byte is needed for that.
    """
    text = f"{os.getpid()}\n".encode()
    try:
        os.pwrite(fd, text, 0)
        os.ftruncate(fd, len(text))
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
