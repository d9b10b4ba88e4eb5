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

Nothing here blocks the event loop for long: a profile is taken by a sampler
thread while the handler awaits :func:`asyncio.sleep`; formatting stacks, heap
snapshots and their statistics run in worker threads. The profiles themselves
are :mod:`ctrd.server.pprof`.
"""

from __future__ import annotations

import asyncio
import gc
import html
import json
import logging
import os
import sys
import threading
import time
import tracemalloc
from typing import Any, Final, Protocol

from aiohttp import web

from ctrd import __version__
from ctrd.plugin import PluginSet
from ctrd.server.pprof import Heap, Profile, heap_report, stack_dump, take_heap

__all__ = [
    "DEFAULT_HEAP_SECONDS",
    "DEFAULT_PROFILE_SECONDS",
    "MAX_PROFILE_SECONDS",
    "DebugApp",
    "debug_vars",
]

log = logging.getLogger("ctrd.debug")

DEFAULT_PROFILE_SECONDS: Final = 30
"""``/debug/pprof/profile`` without ``seconds`` (Go's default)."""

MAX_PROFILE_SECONDS: Final = 600
"""Longest CPU or heap profile (seconds)."""

DEFAULT_HEAP_SECONDS: Final = 10
"""``/debug/pprof/heap`` without ``seconds``: how long allocations are traced."""

_TRACEMALLOC_FRAMES: Final = 25


class _Daemon(Protocol):
    plugins: PluginSet
    started_at: float


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
            heap = await asyncio.to_thread(take_heap)
            header = "tracemalloc was running already: everything traced since it started; left running"
            text = await asyncio.to_thread(heap_report, heap, limit, key, header)
            return web.Response(text=text, content_type="text/plain")
        if self._tracing:
            raise web.HTTPConflict(text="a heap profile is already being taken\n")
        heap = await self._trace(seconds)
        header = (
            f"allocations made during {seconds:g} s of tracing and still alive at its end "
            "(tracemalloc is stopped again)"
        )
        text = await asyncio.to_thread(heap_report, heap, limit, key, header)
        return web.Response(text=text, content_type="text/plain")

    async def _trace(self, seconds: float) -> Heap:
        """Trace allocations for *seconds*, snapshot, stop tracing (also when the request is dropped)."""
        self._tracing = True
        tracemalloc.start(_TRACEMALLOC_FRAMES)
        log.info("tracemalloc started for %g s by a /debug/pprof/heap request", seconds)
        snap: asyncio.Future[Heap] | None = None
        try:
            await asyncio.sleep(seconds)
            snap = asyncio.get_running_loop().run_in_executor(None, take_heap)
            return await asyncio.shield(snap)
        finally:
            if snap is None or snap.done():
                self._stop_tracing()
            else:  # dropped while the snapshot is taken: stop once it is
                snap.add_done_callback(self._stop_tracing)

    def _stop_tracing(self, snap: asyncio.Future[Heap] | None = None) -> None:
        if snap is not None and not snap.cancelled():
            snap.exception()  # nobody awaits it any more: not "never retrieved"
        tracemalloc.stop()
        self._tracing = False
        log.info("tracemalloc stopped")
