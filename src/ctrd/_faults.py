"""Test-only fault injection: crash the process at a named point.

``CTRD_FAULT_POINT=<name>`` (read once, at import) makes :func:`point` end the
process with ``os._exit(137)`` -- no ``finally`` blocks, no flushing, no SQLite
rollback, as a ``SIGKILL`` would -- when execution reaches *name*.
``CTRD_FAULT_SKIP=<n>`` lets the first *n* hits pass and crashes on hit
``n + 1``. Before exiting, one line ``ctrd: fault point <name> reached`` is
written straight to fd 2 so a test can tell the injected crash from a bug.

When the variable is unset, :func:`point` is a function that returns at once
(no environment lookup, no string comparison beyond the call).

The points (see :data:`POINTS`) sit in the local store's commit, the metadata
store's commit and delete, and the garbage collector's sweep;
``tests/gc/test_crash.py`` kills the daemon at each and checks that restart and
collection converge.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

__all__ = ["EXIT_CODE", "POINTS", "point"]

EXIT_CODE: Final = 137

#: Every fault point in the code base, in the order an operation reaches them.
POINTS: Final = (
    # ctrd.content.local: LocalWriter commit
    "content.commit.before_rename",  # data fsynced and verified, not yet renamed into blobs/
    "content.commit.after_rename",  # blob file in place, ingest directory not yet removed
    # ctrd.metadata._writer (commit) and ctrd.metadata.content (delete): NamespacedContentStore
    "metadata.commit.before_tx",  # backend commit done, no DB transaction yet
    "metadata.commit.in_tx",  # blob row inserted and ingest row deleted, before COMMIT
    "metadata.delete.in_tx",  # blob row deleted, before COMMIT
    "metadata.delete.after_tx",  # delete committed, collector not yet notified
    # ctrd.metadata.gc: GarbageCollector
    "gc.sweep.in_tx",  # unmarked rows deleted, before COMMIT
    "gc.sweep.after_db",  # sweep committed, no backend file deleted yet
    "gc.sweep.between_files",  # after deleting one backend file, before the next
)


def _noop(name: str) -> None:
    """Fault injection is off."""


def _make_armed(target: str, skip: int) -> Callable[[str], None]:
    hits = 0

    def armed(name: str) -> None:
        nonlocal hits
        if name != target:
            return
        hits += 1
        if hits <= skip:
            return
        try:
            os.write(2, f"ctrd: fault point {name} reached (hit {hits}); exiting {EXIT_CODE}\n".encode())
        finally:
            os._exit(EXIT_CODE)

    return armed


def _configure() -> Callable[[str], None]:
    target = os.environ.get("CTRD_FAULT_POINT", "")
    if not target:
        return _noop
    try:
        skip = max(int(os.environ.get("CTRD_FAULT_SKIP", "0") or "0"), 0)
    except ValueError:
        skip = 0
    if target not in POINTS:
        os.write(2, f"ctrd: CTRD_FAULT_POINT={target!r} names no fault point; ignored\n".encode())
        return _noop
    return _make_armed(target, skip)


point: Callable[[str], None] = _configure()
"""``point(name)``: crash here if *name* is the configured fault point (see module docstring)."""
