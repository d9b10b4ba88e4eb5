"""The debug endpoint (``[debug] address``): containerd's ``/debug/vars`` and ``/debug/pprof/*``.

=============================  ==========================================================
``/debug/vars``                JSON: cmdline, pid, uptime, RSS and peak RSS, GC counts, open
                               fds, threads, asyncio tasks, in-flight calls, plugin status
``/debug/pprof/``              index (HTML)
``/debug/pprof/cmdline``       the command line, NUL-separated (as Go's pprof)
``/debug/pprof/profile``       ``?seconds=N`` (default 30): a sampling CPU profile as collapsed
                               stacks (flamegraph.pl, speedscope, inferno); ``?format=pstats``
                               for a :mod:`pstats` file (snakeviz, ``python -m pstats``)
``/debug/pprof/goroutine``     every asyncio task's await stack and every thread's stack (text)
``/debug/pprof/heap``          ``?seconds=N`` (default 10): :mod:`tracemalloc` traces for N
                               seconds, then the top sites of what was allocated meanwhile
                               and is still alive; tracing is stopped again before the reply
=============================  ==========================================================

Tracing allocations slows every allocation down (small ingests run several times
slower), so nothing here leaves it on: a heap profile traces for its ``seconds``
only. When tracing was on already (``PYTHONTRACEMALLOC``, ``-X tracemalloc``), the
report is taken at once and tracing left as it was; ``?stop=1`` stops it.

Nothing here blocks the event loop for long: the profile is taken by a sampler
thread reading :func:`sys._current_frames` every :data:`SAMPLE_INTERVAL` while the
handler awaits :func:`asyncio.sleep`; formatting stacks (source lines), heap
snapshots and their statistics run in worker threads. Stack snapshots of asyncio
tasks are taken on the loop, the only place they are consistent.

:func:`log_stack_dump` is what ``SIGUSR1`` does: the goroutine dump, to the log.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import html
import json
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
from typing import Any, Final, Protocol

from aiohttp import web

from ctrd import __version__
from ctrd.plugin import PluginSet

__all__ = [
    "DEFAULT_HEAP_SECONDS",
    "DEFAULT_PROFILE_SECONDS",
    "MAX_PROFILE_SECONDS",
    "SAMPLE_INTERVAL",
    "DebugApp",
    "Profile",
    "debug_vars",
    "log_stack_dump",
    "stack_dump",
]

log = logging.getLogger("ctrd.debug")

SAMPLE_INTERVAL: Final = 0.005
"""Seconds between two samples of the CPU profiler."""

DEFAULT_PROFILE_SECONDS: Final = 30
"""``/debug/pprof/profile`` without ``seconds`` (Go's default)."""

MAX_PROFILE_SECONDS: Final = 600
"""Longest CPU or heap profile (seconds)."""

DEFAULT_HEAP_SECONDS: Final = 10
"""``/debug/pprof/heap`` without ``seconds``: how long allocations are traced."""

_TRACEMALLOC_FRAMES: Final = 25

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


class _Daemon(Protocol):
    plugins: PluginSet
    started_at: float


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
class _Heap:
    """A filtered :mod:`tracemalloc` snapshot and the tracer's counters at that moment."""

    snapshot: tracemalloc.Snapshot
    current: int
    peak: int
    own: int
    frames: int


def _take_heap() -> _Heap:
    snap = tracemalloc.take_snapshot().filter_traces(
        (
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<unknown>"),
        )
    )
    current, peak = tracemalloc.get_traced_memory()
    return _Heap(snap, current, peak, tracemalloc.get_tracemalloc_memory(), tracemalloc.get_traceback_limit())


def _heap_report(heap: _Heap, limit: int, key: str, header: str) -> str:
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


# -- vars -----------------------------------------------------------------------------------


def _proc_status() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM", "Threads"):
                    parts = rest.split()
                    value = int(parts[0])
                    out[name] = value * 1024 if parts[1:] == ["kB"] else value
    except OSError:
        pass
    return out


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listing the directory
    except OSError:
        return None


def _plugin_status(plugins: PluginSet) -> list[dict[str, Any]]:
    out = []
    for p in plugins:
        d: dict[str, Any] = {"type": p.registration.type, "id": p.registration.id}
        if p.ok:
            d["status"] = "ok"
        else:
            d["status"] = "skipped" if p.skipped else "error"
            d["error"] = str(p.error)
        out.append(d)
    return out


def debug_vars(daemon: _Daemon) -> dict[str, Any]:
    """What ``/debug/vars`` serves (call on the loop)."""
    status = _proc_status()
    return {
        "cmdline": list(sys.orig_argv),
        "pid": os.getpid(),
        "version": __version__,
        "python": sys.version,
        "uptime_seconds": round(time.time() - daemon.started_at, 3),
        "rss_bytes": status.get("VmRSS"),
        "peak_rss_bytes": status.get("VmHWM"),
        "gc": {
            "counts": list(gc.get_count()),
            "thresholds": list(gc.get_threshold()),
            "generations": gc.get_stats(),
        },
        "open_fds": _open_fds(),
        "threads": threading.active_count(),
        "asyncio_tasks": len(asyncio.all_tasks()),
        "grpc_inflight": getattr(daemon, "grpc_inflight", None),
        "tracemalloc": tracemalloc.is_tracing(),
        "plugins": _plugin_status(daemon.plugins),
    }


# -- the application ------------------------------------------------------------------------

_INDEX: Final = """<html>
<head><title>/debug/pprof/</title></head>
<body>
/debug/pprof/<br>
<br>
Types of profiles available:
<table>
<thead><td>Profile</td><td>Description</td></thead>
{rows}
</table>
<p><a href="/debug/vars">/debug/vars</a>: process and plugin state (JSON)</p>
</body>
</html>
"""

_PROFILES: Final = (
    ("cmdline", "cmdline", "The command line of the daemon (NUL-separated)."),
    (
        "profile",
        "profile?seconds=30",
        "CPU profile: samples every thread's stack for `seconds` (collapsed stacks for flame graphs; "
        "format=pstats for a pstats file; idle=1 keeps samples of waiting threads).",
    ),
    ("goroutine", "goroutine", "Stack of every asyncio task and every thread."),
    (
        "heap",
        "heap",
        "Top allocation sites of what was allocated during `seconds` and is still alive "
        "(tracemalloc runs for that long only; limit=N, key=lineno|filename|traceback).",
    ),
)


class DebugApp:
    """The aiohttp application of the debug endpoint over a daemon."""

    def __init__(self, daemon: _Daemon) -> None:
        self._daemon = daemon
        self._profiling = False
        self._tracing = False

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/debug/vars", self.vars)
        r.add_get("/debug/pprof", self.redirect)
        r.add_get("/debug/pprof/", self.index)
        r.add_get("/debug/pprof/cmdline", self.cmdline)
        r.add_get("/debug/pprof/profile", self.profile)
        r.add_get("/debug/pprof/goroutine", self.goroutine)
        r.add_get("/debug/pprof/heap", self.heap)
        r.add_get("/debug/pprof/{name}", self.unknown)
        return app

    async def vars(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(debug_vars(self._daemon), dumps=lambda o: json.dumps(o, indent=2))

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently("/debug/pprof/")

    async def index(self, request: web.Request) -> web.StreamResponse:
        rows = "\n".join(
            f'<tr><td><a href="/debug/pprof/{html.escape(href)}">{html.escape(name)}</a></td>'
            f"<td>{html.escape(doc)}</td></tr>"
            for name, href, doc in _PROFILES
        )
        return web.Response(text=_INDEX.format(rows=rows), content_type="text/html")

    async def cmdline(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="\x00".join(sys.orig_argv), content_type="text/plain")

    async def unknown(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound(text="Unknown profile\n")

    async def goroutine(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=await stack_dump(), content_type="text/plain")

    async def profile(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            seconds = float(q.get("seconds", DEFAULT_PROFILE_SECONDS))
        except ValueError:
            raise web.HTTPBadRequest(text="seconds must be a number\n") from None
        if not 0 < seconds <= MAX_PROFILE_SECONDS:
            raise web.HTTPBadRequest(text=f"seconds must be in (0, {MAX_PROFILE_SECONDS}]\n")
        fmt = q.get("format", "collapsed")
        if fmt not in ("collapsed", "pstats"):
            raise web.HTTPBadRequest(text="format must be collapsed or pstats\n")
        if self._profiling:
            raise web.HTTPConflict(text="a CPU profile is already being taken\n")
        prof = Profile(idle=q.get("idle", "") in ("1", "true"))
        self._profiling = True
        prof.start()
        try:
            await asyncio.sleep(seconds)
        finally:
            prof.stop()
            self._profiling = False
        await asyncio.to_thread(prof.join)
        headers = {
            "X-Ctrd-Samples": str(prof.samples),
            "X-Ctrd-Idle-Samples": str(prof.idle_samples),
            "X-Ctrd-Sample-Interval": f"{prof.interval}",
        }
        if fmt == "pstats":
            body = await asyncio.to_thread(prof.pstats)
            headers["Content-Disposition"] = 'attachment; filename="ctrd.pstats"'
            return web.Response(body=body, content_type="application/octet-stream", headers=headers)
        text = await asyncio.to_thread(prof.collapsed)
        return web.Response(text=text, content_type="text/plain", headers=headers)

    async def heap(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if q.get("stop", "") in ("1", "true"):
            was = tracemalloc.is_tracing()
            tracemalloc.stop()
            return web.Response(
                text="tracemalloc stopped\n" if was else "tracemalloc was not running\n",
                content_type="text/plain",
            )
        try:
            limit = int(q.get("limit", "50"))
            seconds = float(q.get("seconds", DEFAULT_HEAP_SECONDS))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be an integer, seconds a number\n") from None
        key = q.get("key", "lineno")
        if key not in ("lineno", "filename", "traceback") or limit < 1:
            raise web.HTTPBadRequest(text="key must be lineno, filename or traceback; limit >= 1\n")
        if not 0 < seconds <= MAX_PROFILE_SECONDS:
            raise web.HTTPBadRequest(text=f"seconds must be in (0, {MAX_PROFILE_SECONDS}]\n")
        if tracemalloc.is_tracing() and not self._tracing:
            # somebody else's tracing (PYTHONTRACEMALLOC, -X tracemalloc): report now, leave it on
            heap = await asyncio.to_thread(_take_heap)
            header = "tracemalloc was running already: everything traced since it started; left running"
            text = await asyncio.to_thread(_heap_report, heap, limit, key, header)
            return web.Response(text=text, content_type="text/plain")
        if self._tracing:
            raise web.HTTPConflict(text="a heap profile is already being taken\n")
        heap = await self._trace(seconds)
        header = (
            f"allocations made during {seconds:g} s of tracing and still alive at its end "
            "(tracemalloc is stopped again)"
        )
        text = await asyncio.to_thread(_heap_report, heap, limit, key, header)
        return web.Response(text=text, content_type="text/plain")

    async def _trace(self, seconds: float) -> _Heap:
        """Trace allocations for *seconds*, snapshot, stop tracing (also when the request is dropped)."""
        self._tracing = True
        tracemalloc.start(_TRACEMALLOC_FRAMES)
        log.info("tracemalloc started for %g s by a /debug/pprof/heap request", seconds)
        snap: asyncio.Future[_Heap] | None = None
        try:
            await asyncio.sleep(seconds)
            snap = asyncio.get_running_loop().run_in_executor(None, _take_heap)
            return await asyncio.shield(snap)
        finally:
            if snap is None or snap.done():
                self._stop_tracing()
            else:  # dropped while the snapshot is taken: stop once it is
                snap.add_done_callback(self._stop_tracing)

    def _stop_tracing(self, snap: asyncio.Future[_Heap] | None = None) -> None:
        if snap is not None and not snap.cancelled():
            snap.exception()  # nobody awaits it any more: not "never retrieved"
        tracemalloc.stop()
        self._tracing = False
        log.info("tracemalloc stopped")
