"""Per-ref ingest locks (containerd ``content/local/locks.go``).

One :class:`RefLocks` belongs to one store instance (containerd since
2535b187a). Locks live in memory only: they are neither persisted nor shared
between processes or between two stores on the same root. There is no retry
here; callers retry with :func:`ctrd.content.helpers.open_writer`.

All methods are synchronous and never await, so on the event loop thread a
check-and-set is atomic.
"""

from __future__ import annotations

import datetime as _dt
import time

from ctrd import errdefs, golang
from ctrd.content._store import utcnow

__all__ = ["RefLocks"]


class RefLocks:
    """The set of refs with an open writer, with the time each was taken."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, tuple[_dt.datetime, float]] = {}

    def lock(self, ref: str) -> None:
        """Take the lock on *ref*.

        :raises errdefs.Unavailable: ``ref <ref> locked for <duration> (since <time>)``
            when it is held already.
        """
        held = self._held.get(ref)
        if held is not None:
            since, started = held
            duration = golang.format_seconds(time.monotonic() - started)
            raise errdefs.Unavailable(f"ref {ref} locked for {duration} (since {since.isoformat()})")
        self._held[ref] = (utcnow(), time.monotonic())

    def unlock(self, ref: str) -> None:
        """Release the lock on *ref* (no-op when it is not held)."""
        self._held.pop(ref, None)

    def locked(self, ref: str) -> bool:
        """Whether *ref* is currently locked."""
        return ref in self._held

    def __len__(self) -> int:
        return len(self._held)
