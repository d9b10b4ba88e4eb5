"""The profiles behind ``/debug/pprof/*``, free of aiohttp: stack dumps, CPU samples, heap reports.

* :func:`stack_dump`: every asyncio task's await stack and every thread's stack
  (``/debug/pprof/goroutine``); :func:`log_stack_dump` writes it to the log, which
  is what ``SIGUSR1`` does. Stack snapshots of asyncio tasks are taken on the
  loop, the only place they are consistent; formatting them (source lines) runs
  in a worker thread.
* :class:`Profile`: a sampling CPU profiler (``/debug/pprof/profile``). A sampler
  thread reads :func:`sys._current_frames` every :data:`SAMPLE_INTERVAL` while
  the caller waits elsewhere; the samples come out as collapsed stacks or as a
  :mod:`pstats` file.
* :func:`take_heap` and :func:`heap_report`: a filtered :mod:`tracemalloc`
  snapshot and its top allocation sites (``/debug/pprof/heap``); both block, so
  callers run them in a worker thread.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import linecache
import logging
import marshal
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any, Final

from ctrd import __version__

__all__ = [
    "SAMPLE_INTERVAL",
    "Heap",
    "Profile",
    "heap_report",
    "log_stack_dump",
    "stack_dump",
    "take_heap",
]

log = logging.getLogger("ctrd.debug")


SAMPLE_INTERVAL: Final = 0.005
"""Seconds between two samples of the CPU profiler."""

#: (file name, function) of Python frames that, innermost on a thread, mean it is waiting
_IDLE_LEAVES: Final = frozenset(
    {
        ("selectors.py", "select"),  # the event loop waiting for I/O
        ("threading.py", "wait"),
        ("threading.py", "_wait_for_tstate_lock"),
        ("thread.py", "_worker"),  # ThreadPoolExecutor worker waiting for work
        ("core.py", "_connection_worker_thread"),  # aiosqlite connection thread waiting
    }
)


# -- stacks ---------------------------------------------------------------------------------

_Loc = tuple[str, int, str]  # file name, line, qualified function name


def _loc(frame: FrameType) -> _Loc:
    return frame.f_code.co_filename, frame.f_lineno or 0, frame.f_code.co_qualname


def _thread_stack(frame: FrameType | None) -> list[_Loc]:
    out: list[_Loc] = []
    while frame is not None:
        out.append(_loc(frame))
        frame = frame.f_back
    out.reverse()
    return out


def _await_stack(coro: Any) -> tuple[list[_Loc], str]:
    """Frames of *coro* and of what it awaits, outermost first; then what the innermost awaits."""
    out: list[_Loc] = []
    seen: set[int] = set()
    while coro is not None and id(coro) not in seen and len(out) < 500:
        seen.add(id(coro))
        frame = None
        for attr in ("cr_frame", "gi_frame", "ag_frame"):
            frame = getattr(coro, attr, None)
            if frame is not None:
                break
        if frame is not None:
            out.append(_loc(frame))
        nxt = None
        for attr in ("cr_await", "gi_yieldfrom", "ag_await"):
            nxt = getattr(coro, attr, None)
            if nxt is not None:
                break
        if nxt is None:
            return out, ""
        if not any(hasattr(nxt, a) for a in ("cr_frame", "gi_frame", "ag_frame")):
            if isinstance(nxt, asyncio.Task):
                return out, f"awaiting task {nxt.get_name()!r}"
            if isinstance(nxt, asyncio.Future) or type(nxt).__name__ == "FutureIter":
                return out, "awaiting a future"
            return out, f"awaiting {type(nxt).__name__}"
        coro = nxt
    return out, ""


@dataclasses.dataclass
class _Stacks:
    """A snapshot (plain data) of every task and thread, taken on the loop."""

    tasks: list[tuple[str, str, list[_Loc], str]]  # name, coroutine, frames, what it waits for
    threads: list[tuple[str, int, int | None, bool, list[_Loc]]]  # name, ident, native id, daemon
    current_task: str


def _snapshot() -> _Stacks:
    tasks: list[tuple[str, str, list[_Loc], str]] = []
    current = None
    try:
        all_tasks = asyncio.all_tasks()
        current = asyncio.current_task()
    except RuntimeError:  # no running loop
        all_tasks = set()
    for t in sorted(all_tasks, key=lambda t: t.get_name()):
        coro = t.get_coro()
        name = getattr(coro, "__qualname__", type(coro).__name__)
        if t is current:
            tasks.append((t.get_name(), name, [], "running (taking this dump): see its thread below"))
            continue
        frames, awaiting = _await_stack(coro)
        tasks.append((t.get_name(), name, frames, awaiting))
    by_ident = {t.ident: t for t in threading.enumerate()}
    threads = []
    for ident, frame in sorted(sys._current_frames().items()):
        th = by_ident.get(ident)
        threads.append(
            (
                th.name if th else "?",
                ident,
                th.native_id if th else None,
                bool(th and th.daemon),
                _thread_stack(frame),
            )
        )
    return _Stacks(tasks, threads, current.get_name() if current else "")


def _format_frames(frames: list[_Loc]) -> Iterator[str]:
    for filename, lineno, name in frames:
        yield f'  File "{filename}", line {lineno}, in {name}'
        line = linecache.getline(filename, lineno).strip()
        if line:
            yield f"    {line}"


def _format(stacks: _Stacks) -> str:
    lines = [
        f"ctrd {__version__} pid {os.getpid()}: stacks are outermost call first (most recent call last)",
        "",
        f"asyncio tasks: {len(stacks.tasks)}",
    ]
    for name, coro, frames, note in stacks.tasks:
        lines.append("")
        lines.append(f"task {name!r} ({coro}):")
        lines.extend(_format_frames(frames))
        if note:
            lines.append(f"  {note}")
    lines.append("")
    lines.append(f"threads: {len(stacks.threads)}")
    for tname, ident, native, daemon, frames in stacks.threads:
        lines.append("")
        kind = " daemon" if daemon else ""
        lines.append(f"thread {tname!r} (ident {ident}, native id {native}{kind}):")
        lines.extend(_format_frames(frames))
    return "\n".join(lines) + "\n"


async def stack_dump() -> str:
    """Every asyncio task's await stack and every thread's stack, as text (call on the loop)."""
    return await asyncio.to_thread(_format, _snapshot())


async def log_stack_dump() -> None:
    """Write :func:`stack_dump` to the log, as containerd does on SIGUSR1."""
    text = await stack_dump()
    log.info("=== BEGIN goroutine stack dump ===\n%s=== END goroutine stack dump ===", text)


# -- CPU profile ----------------------------------------------------------------------------

_Key = tuple[str, tuple[tuple[CodeType, int], ...]]  # thread name, (code, line) outermost first
_Func = tuple[str, int, str]  # pstats' key: file name, first line, function name


class Profile:
    """Samples every thread's Python stack from a thread of its own.

    ``start()``, wait (off the sampler thread), ``stop()``; then :meth:`collapsed`
    or :meth:`pstats`. Samples whose innermost frame is a known wait (the event
    loop in ``select``, an idle worker thread) count as idle and are left out
    unless *idle* is true.
    """

    def __init__(self, interval: float = SAMPLE_INTERVAL, *, idle: bool = False) -> None:
        self.interval = interval
        self.idle = idle
        self.counts: collections.Counter[_Key] = collections.Counter()
        self.samples = 0
        self.idle_samples = 0
        self.elapsed = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ctrd-profiler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the sampler to stop (it does within one interval); does not wait."""
        self._stop.set()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        me = threading.get_ident()
        names: dict[int, str] = {}
        t0 = time.monotonic()
        deadline = t0
        while True:
            deadline += self.interval
            if self._stop.wait(max(0.0, deadline - time.monotonic())):
                break
            frames = sys._current_frames()
            if any(ident not in names for ident in frames):
                names = {t.ident or 0: t.name for t in threading.enumerate()}
            for ident, frame in frames.items():
                if ident == me:
                    continue
                stack: list[tuple[CodeType, int]] = []
                f: FrameType | None = frame
                while f is not None:
                    stack.append((f.f_code, f.f_lineno or 0))
                    f = f.f_back
                leaf = stack[0][0] if stack else None
                if leaf is not None and (os.path.basename(leaf.co_filename), leaf.co_name) in _IDLE_LEAVES:
                    self.idle_samples += 1
                    if not self.idle:
                        continue
                stack.reverse()
                self.counts[(names.get(ident, "?"), tuple(stack))] += 1
            self.samples += 1
            if deadline < time.monotonic() - self.interval:
                deadline = time.monotonic()  # fell behind (GIL): do not burst to catch up
        self.elapsed = time.monotonic() - t0

    def collapsed(self) -> str:
        """Brendan Gregg's collapsed-stack format: ``thread;outer;...;inner <samples>`` per line."""
        short = _short_path_fn()
        lines = []
        for (thread, stack), n in self.counts.items():
            parts = [f"thread {thread}"]
            parts.extend(f"{co.co_qualname} ({short(co.co_filename)}:{line})" for co, line in stack)
            lines.append(";".join(p.replace(";", ",") for p in parts) + f" {n}")
        lines.sort()
        return "\n".join(lines) + ("\n" if lines else "")

    def pstats(self) -> bytes:
        """A :mod:`pstats` file: sample counts as calls, sample time as time (marshal'd dict)."""
        stats: dict[_Func, list[Any]] = {}
        dt = self.interval

        def entry(fn: _Func) -> list[Any]:
            e = stats.get(fn)
            if e is None:
                e = stats[fn] = [0, 0, 0.0, 0.0, {}]
            return e

        for (_thread, stack), n in self.counts.items():
            funcs: list[_Func] = [(co.co_filename, co.co_firstlineno, co.co_qualname) for co, _ in stack]
            seen: set[_Func] = set()
            for i, fn in enumerate(funcs):
                e = entry(fn)
                leaf = i == len(funcs) - 1
                if leaf:
                    e[2] += n * dt
                if fn not in seen:
                    seen.add(fn)
                    e[0] += n
                    e[1] += n
                    e[3] += n * dt
                if i:
                    caller = funcs[i - 1]
                    cc, nc, tt, ct = e[4].get(caller, (0, 0, 0.0, 0.0))
                    e[4][caller] = (cc + n, nc + n, tt + (n * dt if leaf else 0.0), ct + n * dt)
        return marshal.dumps({fn: tuple(v) for fn, v in stats.items()})


def _short_path_fn() -> Callable[[str], str]:
    prefixes = sorted(
        {os.path.join(p, "") for p in sys.path if p and os.path.isabs(p)}, key=len, reverse=True
    )

    def short(filename: str) -> str:
        for p in prefixes:
            if filename.startswith(p):
                return filename[len(p) :]
        return filename

    return short


# -- heap -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Heap:
    """A filtered :mod:`tracemalloc` snapshot and the tracer's counters at that moment."""

    snapshot: tracemalloc.Snapshot
    current: int
    peak: int
    own: int
    frames: int


def take_heap() -> Heap:
    """A snapshot of the traced allocations, without tracemalloc's own and import machinery's."""
    snap = tracemalloc.take_snapshot().filter_traces(
        (
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<unknown>"),
        )
    )
    current, peak = tracemalloc.get_traced_memory()
    return Heap(snap, current, peak, tracemalloc.get_tracemalloc_memory(), tracemalloc.get_traceback_limit())


def heap_report(heap: Heap, limit: int, key: str, header: str) -> str:
    stats = heap.snapshot.statistics(key)
    lines = [
        header,
        f"traced: {heap.current} bytes now, {heap.peak} bytes peak; tracemalloc's own use: "
        f"{heap.own} bytes; {heap.frames} frames kept",
        f"top {min(limit, len(stats))} of {len(stats)} allocation sites by size (key={key}):",
        "",
    ]
    for i, st in enumerate(stats[:limit], 1):
        avg = st.size // st.count if st.count else 0
        lines.append(f"#{i}: {st.size} bytes in {st.count} blocks (avg {avg} B)")
        frames = st.traceback if key == "traceback" else st.traceback[:1]
        for fr in frames:
            lines.append(f'  File "{fr.filename}", line {fr.lineno}')
            src = linecache.getline(fr.filename, fr.lineno).strip()
            if src:
                lines.append(f"    {src}")
    return "\n".join(lines) + "\n"
