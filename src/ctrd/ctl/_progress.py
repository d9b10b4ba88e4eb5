"""Progress on stderr: a one-line bar for one transfer (bytes, rate, ETA), and a table
of the blobs of a pull, fetch or push (:class:`TransferDisplay`).

Both are redrawn at most 10 times a second, and only on a terminal (:func:`wanted`,
:func:`progress_mode`; the table prints a line per finished blob elsewhere). Rates are
averages since the first update that moved bytes, so a resumed transfer's skipped part
does not inflate them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from typing import IO, TYPE_CHECKING, Final, Literal

from ctrd.ctl._output import human_size

if TYPE_CHECKING:
    from ctrd.client import BlobProgress

__all__ = ["ProgressBar", "ProgressMode", "TransferDisplay", "progress_mode", "wanted"]

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


ProgressMode = Literal["tty", "plain", "none"]
"""How a transfer's progress is shown: a live table (a terminal), a line per blob, nothing."""


def progress_mode(stream: IO[str], choice: str) -> ProgressMode:
    """``auto`` is ``tty`` on a terminal (unless ``TERM=dumb``), else ``plain``."""
    if choice in ("tty", "plain", "none"):
        return choice  # type: ignore[return-value]
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return "tty" if tty and os.environ.get("TERM") != "dumb" else "plain"


@dataclasses.dataclass
class _Row:
    ref: str
    size: int
    status: str = "waiting"
    offset: int = 0
    resumed_at: int = 0
    started: float | None = None
    start_offset: int = 0
    ended: float | None = None

    def rate(self, now: float) -> float:
        """Bytes per second since the first bytes moved (0 for blobs too small to say)."""
        if self.started is None or self.size < _MIN_SIZE:
            return 0.0
        elapsed = (self.ended or now) - self.started
        moved = self.offset - self.start_offset
        return moved / elapsed if elapsed > 0 and moved > 0 else 0.0


def _short(ref: str) -> str:
    kind, _, digest = ref.partition("-")
    algorithm, _, encoded = digest.partition(":")
    return f"{kind}-{algorithm}:{encoded[:12]}" if encoded else ref


class TransferDisplay:
    """The blobs of a pull, fetch or push on stderr: a live table on a terminal (ref,
    status, bar, bytes, rate; redrawn at most 10 times a second), or a line per blob once
    it is done (``plain``)::

        layer-sha256:6ce0b1f9a2d7  downloading  |++++++++------------|  2.517MB/6.291MB  8.1MB/s
        layer-sha256:2b1f0e8a9c31  shared       |++++++++++++++++++++|  118B/118B

    A download that picks up an interrupted one shows ``resumed`` (and, plain, the offset).
    """

    def __init__(self, stream: IO[str], title: str, mode: ProgressMode) -> None:
        self._out = stream
        self._title = title
        self._mode = mode
        self._rows: dict[str, _Row] = {}
        self._drawn = 0
        self._last_draw = 0.0
        self._start = time.monotonic()

    def update(self, event: BlobProgress) -> None:
        """Record *event* (an SDK ``progress`` callback)."""
        if self._mode == "none":
            return
        now = time.monotonic()
        row = self._rows.get(event.ref)
        if row is None:
            row = self._rows[event.ref] = _Row(event.ref, event.descriptor.size)
        if row.ended is not None:
            return
        status: str = event.status
        if status in ("downloading", "uploading"):
            if row.started is None:
                row.started, row.start_offset, row.resumed_at = now, event.offset, event.resumed_at
                if event.resumed_at and self._mode == "plain":
                    self._line(
                        f"{row.ref} resuming at {human_size(event.resumed_at)} of {human_size(row.size)}"
                    )
            if row.resumed_at:
                status = "resumed"
        row.status, row.offset = status, event.offset
        if event.final:
            row.ended = now
            row.offset = max(row.offset, row.size)
            if self._mode == "plain":
                self._line(self._plain(row, now))
        if self._mode == "tty" and (event.final or now - self._last_draw >= _MIN_INTERVAL):
            self._draw(now)

    def finish(self) -> None:
        """The final state (a terminal's table, and the totals)."""
        if self._mode != "tty":
            return
        self._draw(time.monotonic())

    def _line(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    @staticmethod
    def _plain(row: _Row, now: float) -> str:
        text = f"{row.ref} {row.status} {human_size(row.size)}"
        rate = row.rate(now)
        if rate:
            text += f" {human_size(rate)}/s"
        if row.resumed_at:
            text += f" (resumed at {human_size(row.resumed_at)})"
        return text

    def render(self, now: float, width: int, height: int) -> list[str]:
        """The table's lines (exposed for tests)."""
        rows = list(self._rows.values())
        room = max(height - 3, 1)
        hidden = 0
        if len(rows) > room:
            active = [r for r in rows if r.ended is None]
            finished = [r for r in rows if r.ended is not None]
            keep = active[:room] + finished[len(finished) - max(room - len(active), 0) :]
            hidden = len(rows) - len(keep)
            rows = [r for r in rows if r in keep]
        lines = [f"{self._title}"]
        for r in rows:
            filled = int(20 * min(r.offset, r.size) / r.size) if r.size else 20
            bar = "|" + "+" * filled + "-" * (20 - filled) + "|"
            text = f"{_short(r.ref):<28} {r.status:<11}  {bar}  {human_size(r.offset)}/{human_size(r.size)}"
            rate = r.rate(now)
            if rate and r.ended is None:
                text += f"  {human_size(rate)}/s"
            lines.append(text[:width])
        if hidden:
            lines.append(f"… and {hidden} more done"[:width])
        moved = sum(r.offset - r.start_offset for r in self._rows.values() if r.started is not None)
        elapsed = now - self._start
        total = f"elapsed: {elapsed:.1f}s  moved: {human_size(moved)}"
        if elapsed > 0 and moved:
            total += f" ({human_size(moved / elapsed)}/s)"
        lines.append(total[:width])
        return lines

    def _draw(self, now: float) -> None:
        self._last_draw = now
        size = shutil.get_terminal_size((80, 24))
        lines = self.render(now, size.columns - 1, size.lines)
        out = f"\x1b[{self._drawn}F" if self._drawn else ""
        out += "".join("\x1b[2K" + line + "\n" for line in lines)
        if len(lines) < self._drawn:  # fewer lines than before: clear the rest
            out += "\x1b[2K\n" * (self._drawn - len(lines)) + f"\x1b[{self._drawn - len(lines)}F"
        self._out.write(out)
        self._out.flush()
        self._drawn = len(lines)
