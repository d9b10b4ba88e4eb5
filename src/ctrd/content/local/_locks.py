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

from ctrd import errdefs
from ctrd.content._store import utcnow

__all__ = ["RefLocks", "format_duration"]


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
            duration = format_duration(time.monotonic() - started)
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


def format_duration(seconds: float) -> str:
    """Render *seconds* roughly as Go's ``time.Duration.String`` does (``1.5s``, ``12.3ms``, ``2m3s``)."""
    if seconds < 0:
        seconds = 0.0
    if seconds < 1e-6:
        return f"{round(seconds * 1e9)}ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3f}".rstrip("0").rstrip(".") + "µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3f}".rstrip("0").rstrip(".") + "ms"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text
