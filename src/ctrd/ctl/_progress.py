"""A one-line progress bar for terminals: bytes, rate, ETA.

Drawn on stderr with carriage returns, at most 10 times a second, and only
when the stream is a terminal (:func:`wanted`). The rate is the average since
the first update that moved bytes, so a resumed transfer's skipped part does
not inflate it.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import IO, Final

from ctrd.ctl._output import human_size

__all__ = ["ProgressBar", "wanted"]

_MIN_INTERVAL: Final = 0.1
_MIN_SIZE: Final = 1 << 20
"""Blobs smaller than this finish before a bar is worth drawing."""


def wanted(stream: IO[str], total: int | None, *, disabled: bool = False) -> bool:
    """Whether to draw a bar on *stream* for a transfer of *total* bytes (``None``: unknown)."""
    if disabled or os.environ.get("TERM") == "dumb":
        return False
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and (total is None or total >= _MIN_SIZE)


def _eta(seconds: float) -> str:
    s = int(seconds + 0.5)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressBar:
    """``label [=======>      ] 12.5MB/64MB 41.3MB/s ETA 0:01``."""

    def __init__(self, stream: IO[str], label: str, total: int | None) -> None:
        self._out = stream
        self._label = label
        self._total = total or None
        self._start: float | None = None
        self._start_bytes = 0
        self._last_draw = 0.0
        self._done = 0
        self._finished = False

    def update(self, done: int, total: int | None = None) -> None:
        """Record *done* bytes (of *total*, if now known) and redraw when due."""
        now = time.monotonic()
        if total:
            self._total = total
        if self._start is None:
            self._start, self._start_bytes = now, done
        self._done = done
        if now - self._last_draw >= _MIN_INTERVAL:
            self._draw(now)

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if self._finished:
            return
        self._finished = True
        self._draw(time.monotonic(), final=True)
        self._out.write("\n")
        self._out.flush()

    def render(self, now: float, width: int, *, final: bool = False) -> str:
        """The bar's text for a terminal *width* columns wide (exposed for tests)."""
        elapsed = now - self._start if self._start is not None else 0.0
        moved = self._done - self._start_bytes
        rate = moved / elapsed if elapsed > 0 else 0.0
        size = human_size(self._done) + (f"/{human_size(self._total)}" if self._total else "")
        stats = f" {size} {human_size(rate)}/s" if rate else f" {size}"
        if self._total and not final:
            left = max(self._total - self._done, 0)
            stats += f" ETA {_eta(left / rate)}" if rate > 0 else " ETA --:--"
        elif final:
            stats += f" in {elapsed:.1f}s"
        label = self._label
        room = width - len(stats) - 1
        if self._total:
            bar_width = max(min(40, room - len(label) - 3), 0)
            if bar_width >= 10:
                filled = min(int(bar_width * self._done / self._total), bar_width)
                arrow = ">" if filled < bar_width else ""
                bar = "=" * filled + arrow + " " * (bar_width - filled - len(arrow))
                return f"{label} [{bar}]{stats}"[:width]
        return f"{label}{stats}"[:width]

    def _draw(self, now: float, *, final: bool = False) -> None:
        self._last_draw = now
        width = shutil.get_terminal_size((80, 24)).columns
        line = self.render(now, width - 1, final=final)
        self._out.write("\r" + line.ljust(width - 1))
        self._out.flush()
