"""Headroom for deletions on a full disk: a pre-allocated reserve file, given back when the disk fills.

With no byte free, the metadata database cannot commit anything, not even the
deletion of a blob row: SQLite appends every transaction to its write-ahead
log first. Deletions and garbage collection would then fail forever, and with
them the only way to free space. So the metadata plugin keeps a file of
:attr:`SpaceReserve.size` bytes (16 MiB by default) allocated next to the
database. When a write fails for lack of space (``ENOSPC``/``EDQUOT`` from the
content store, ``SQLITE_FULL`` from the database), :meth:`SpaceReserve.full`
shrinks it to :attr:`SpaceReserve.floor` (1 MiB) and the database retries its
commit; new data (ingest opens and writes) is refused from then on, so what was
given back serves deletions and the collector. When enough space is free again
(the reserve plus as much again), :meth:`SpaceReserve.recover` re-allocates the
reserve and new data is accepted; the gates and the collector call it.

The floor is for the next start: a database closed cleanly has no ``-wal`` and
``-shm`` files, and SQLite cannot open it without writing them. A daemon that
starts with less than the reserve free (:meth:`SpaceReserve.startup`) gives the
whole file back and starts refusing new data until space returns.

Everything here runs on the event loop thread and costs one ``statvfs`` or one
``fallocate``/``ftruncate``: cheap enough to call inline, and only on the rare
paths (a refused write, a collection, a failure).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path
from typing import Final

from ctrd import errdefs

__all__ = ["DEFAULT_RESERVE", "FLOOR", "SpaceReserve"]

log = logging.getLogger("ctrd.metadata")

DEFAULT_RESERVE: Final = 16 << 20
"""Default size of the reserve file (bytes)."""

FLOOR: Final = 1 << 20
"""What a release keeps of the reserve, for the next start-up (bytes)."""


class SpaceReserve:
    """A reserve file at *path* of *size* bytes (0: no reserve; deletions then get no headroom).

    :attr:`low` is true from a disk-full event until :meth:`recover` succeeds; while
    it is, :meth:`gate` refuses new data.
    """

    def __init__(self, path: Path | str, size: int = DEFAULT_RESERVE) -> None:
        self.path = Path(path)
        self.size = max(int(size), 0)
        self.floor = min(FLOOR, self.size)
        #: a write failed for lack of space and the space has not come back yet
        self.low = False
        #: disk-full events (each released reserve), for metrics and tests
        self.releases = 0
        self._held = self._allocated()

    def __repr__(self) -> str:
        return f"<SpaceReserve {str(self.path)!r} size={self.size} held={self.held} low={self.low}>"

    # -- state ---------------------------------------------------------------------------

    @property
    def held(self) -> int:
        """Bytes of the reserve file allocated now (0 when it is missing)."""
        return self._held

    def _allocated(self) -> int:
        try:
            st = os.stat(self.path)
        except OSError:
            return 0
        return min(st.st_blocks * 512, st.st_size)

    def free(self) -> int:
        """Bytes free for an unprivileged user of the filesystem (``f_bavail``); -1 when unknown."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return -1
        return st.f_bavail * st.f_frsize

    @property
    def threshold(self) -> int:
        """Free bytes needed to re-allocate the reserve and accept new data again."""
        return 2 * self.size

    # -- transitions ---------------------------------------------------------------------

    def startup(self) -> None:
        """At start-up: give the reserve back if the disk is (nearly) full, else allocate it."""
        if self.size == 0:
            self._truncate(0)
            return
        free = self.free()
        if 0 <= free < self.size:
            released = self._truncate(0)
            self.low = True
            self.releases += 1
            log.warning(
                "disk nearly full at start-up (%d bytes free): released the %d-byte reserve so the "
                "metadata database can open; new data is refused until %d bytes are free",
                free,
                released,
                self.threshold,
            )
            return
        if self.held < self.size and not self._allocate(quiet=True):
            log.warning(
                "not enough free space for the %d-byte disk reserve (%d bytes free): deletions on "
                "a full disk may fail",
                self.size,
                free,
            )

    def full(self) -> bool:
        """A write failed for lack of space: give the reserve back (down to the floor).

        Does nothing unless the filesystem really is short of space (a
        ``ResourceExhausted`` may also mean too many open files). Returns whether
        space was given back (the caller may retry).
        """
        free = self.free()
        if free >= 0 and free >= max(self.size, 1 << 20):
            return False  # not a full disk
        first = not self.low
        self.low = True
        released = self._truncate(self.floor) if self.held > self.floor else 0
        if first or released:
            self.releases += 1
            log.warning(
                "disk full (%d bytes free): released %d bytes of reserve so deletions and garbage "
                "collection can complete; new data is refused until %d bytes are free",
                max(free, 0),
                released,
                self.threshold,
            )
        return released > 0

    def release_all(self) -> bool:
        """Give the floor back too (a commit failed with nothing else left); whether anything was freed."""
        if self.held == 0:
            return False
        self.low = True
        released = self._truncate(0)
        log.warning("disk full: released the last %d bytes of reserve", released)
        return released > 0

    def headroom(self, need: int) -> None:
        """Before a commit: if fewer than *need* bytes are free, give the reserve back now.

        A COMMIT that fails for lack of space is rolled back by SQLite (it cannot
        be retried), so the reserve is given back before the commit that would
        fail: down to the floor under *need* bytes free, the floor itself under a
        quarter of it. Costs one ``statvfs`` while any reserve is held.
        """
        if self._held == 0:
            return
        free = self.free()
        if free < 0 or free >= need:
            return
        if self._held > self.floor:
            self.full()
        elif free < self.floor // 4:
            self.release_all()  # the floor too: a commit that frees space comes first

    def recover(self) -> bool:
        """Leave the low state if enough space is free again (re-allocating the reserve).

        Returns whether new data is accepted now.
        """
        if not self.low:
            return True
        free = self.free()
        if free < 0 or free < self.threshold:
            return False
        if self.size and not self._allocate(quiet=False):
            return False
        self.low = False
        log.info("%d bytes free again: disk reserve re-allocated, new data accepted", free)
        return True

    def gate(self, what: str) -> None:
        """Refuse new data while the disk is full.

        :raises errdefs.ResourceExhausted: ``<what>: no space left on device ...``.
        """
        if self.low and not self.recover():
            raise errdefs.ResourceExhausted(
                f"{what}: no space left on device (new data is accepted again once "
                f"{self.threshold} bytes are free)"
            )

    # -- the file ------------------------------------------------------------------------

    def _allocate(self, *, quiet: bool) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            if not quiet:
                log.warning("cannot create the disk reserve: %s", exc.strerror or exc)
            return False
        try:
            before = os.fstat(fd).st_size
            try:
                os.posix_fallocate(fd, 0, self.size)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, before)  # no half-allocated reserve eating what is left
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and not quiet:
                    log.warning("cannot allocate the disk reserve: %s", exc.strerror or exc)
                return False
        finally:
            os.close(fd)
        self._held = self._allocated()
        return True

    def _truncate(self, size: int) -> int:
        """Shrink the file to *size* bytes (freeing its blocks); the bytes given back."""
        before = self._held = self._allocated()
        if before <= size:
            return 0
        try:
            os.truncate(self.path, size)
        except OSError as exc:
            log.warning("cannot release the disk reserve: %s", exc.strerror or exc)
            return 0
        self._held = self._allocated()
        return before - self._held
