"""The debug endpoint: ``/debug/vars``, ``/debug/pprof/*``, SIGUSR1 stack dumps, and what listens.

In-process tests drive :class:`ctrd.server.debug.DebugApp` through aiohttp's test
client; subprocess tests start ``ctrd`` with ``[debug] address`` on a unix
socket (and ``[metrics]`` on TCP) through the ``daemon`` fixture, take a CPU
profile while a gRPC load runs, and inspect ``/proc`` for listening sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import marshal
import os
import pstats
import re
import signal
import socket
import stat
import sys
import threading
import time
import tracemalloc
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from _daemon import DaemonProc, Launcher, run_sync
from aiohttp import test_utils, web
from grpclib.client import Channel

from ctrd import __version__, errdefs
from ctrd.client import RemoteContentStore
from ctrd.plugin import Plugin, PluginSet, Registration, SkipPlugin
from ctrd.server.debug import DebugApp
from ctrd.server.pprof import Profile

# -- in-process -------------------------------------------------------------------------------


async def _never(ic: Any) -> Any:
    raise AssertionError("not initialised in this test")


class FakeDaemon:
    def __init__(self) -> None:
        self.plugins = PluginSet()
        self.plugins.add(Plugin(Registration(type="io.t.v1", id="good", init=_never), instance=object()))
        self.plugins.add(
            Plugin(Registration(type="io.t.v1", id="skipped", init=_never), error=SkipPlugin("no address"))
        )
        self.plugins.add(
            Plugin(Registration(type="io.t.v1", id="broken", init=_never), error=RuntimeError("boom"))
        )
        self.started_at = time.time() - 5.0


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[test_utils.TestClient[web.Request, web.Application]]:
    async with test_utils.TestClient(test_utils.TestServer(DebugApp(FakeDaemon()).app())) as c:
        yield c


async def test_vars() -> None:
    async with client() as c:
        resp = await c.get("/debug/vars")
        assert resp.status == 200
        assert resp.content_type == "application/json"
        v = json.loads(await resp.text())
    assert v["cmdline"] == sys.orig_argv
    assert v["pid"] == os.getpid()
    assert v["version"] == __version__
    assert 5.0 <= v["uptime_seconds"] < 60.0
    assert v["rss_bytes"] > 1 << 20
    assert v["peak_rss_bytes"] >= v["rss_bytes"]
    assert len(v["gc"]["counts"]) == 3
    assert len(v["gc"]["generations"]) == 3
    assert "collections" in v["gc"]["generations"][0]
    assert v["open_fds"] > 3
    assert v["threads"] >= 1
    assert v["asyncio_tasks"] >= 1
    assert v["plugins"] == [
        {"type": "io.t.v1", "id": "good", "status": "ok"},
        {"type": "io.t.v1", "id": "skipped", "status": "skipped", "error": "skip plugin: no address"},
        {"type": "io.t.v1", "id": "broken", "status": "error", "error": "boom"},
    ]


async def test_pprof_index_and_cmdline() -> None:
    async with client() as c:
        resp = await c.get("/debug/pprof/")
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
        for name in ("cmdline", "profile?seconds=30", "goroutine", "heap"):
            assert f'href="/debug/pprof/{name}"' in page
        resp = await c.get("/debug/pprof", allow_redirects=False)
        assert resp.status == 301
        assert resp.headers["Location"] == "/debug/pprof/"
        resp = await c.get("/debug/pprof/cmdline")
        assert (await resp.text()).split("\x00") == sys.orig_argv
        resp = await c.get("/debug/pprof/threadcreate")
        assert resp.status == 404


async def _marked_coroutine(started: asyncio.Event) -> None:
    started.set()
    await asyncio.sleep(3600)


def _marked_thread_body(stop: threading.Event) -> None:
    stop.wait()


async def test_goroutine_dump_has_tasks_and_threads() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(_marked_coroutine(started), name="marked-task")
    stop = threading.Event()
    th = threading.Thread(target=_marked_thread_body, args=(stop,), name="marked-thread")
    th.start()
    try:
        await started.wait()
        async with client() as c:
            resp = await c.get("/debug/pprof/goroutine")
            assert resp.status == 200
            assert resp.content_type == "text/plain"
            text = await resp.text()
    finally:
        task.cancel()
        stop.set()
        th.join()
    assert re.search(r"^asyncio tasks: \d+$", text, re.M)
    block = text[text.index("task 'marked-task' (_marked_coroutine):") :]
    block = block[: block.index("\n\n")]
    assert "in _marked_coroutine\n    await asyncio.sleep(3600)" in block
    assert "in sleep" in block  # the await chain goes down into asyncio.sleep
    assert "awaiting a future" in block
    assert "running (taking this dump)" in text
    tblock = text[text.index("thread 'marked-thread'") :]
    assert "in _marked_thread_body\n    stop.wait()" in tblock.split("\n\n")[0]
    assert "thread 'MainThread'" in text


def _burn(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(10_000):
            x += i * i


@contextlib.contextmanager
def burning() -> Iterator[None]:
    stop = threading.Event()
    th = threading.Thread(target=_burn, args=(stop,), name="burner")
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join()


async def _max_loop_lag(until: asyncio.Future[Any]) -> float:
    worst = 0.0
    while not until.done():
        t = time.monotonic()
        await asyncio.sleep(0.01)
        worst = max(worst, time.monotonic() - t - 0.01)
    return worst


async def test_profile_collapsed_stacks_without_blocking_the_loop() -> None:
    with burning():
        async with client() as c:
            req = asyncio.ensure_future(c.get("/debug/pprof/profile?seconds=0.5"))
            lag = await _max_loop_lag(req)
            resp = await req
            assert resp.status == 200
            assert resp.content_type == "text/plain"
            text = await resp.text()
    assert lag < 0.2
    assert int(resp.headers["X-Ctrd-Samples"]) > 20
    lines = text.splitlines()
    assert lines
    for line in lines:
        assert re.fullmatch(r"thread [^;]+(;[^;]+)+ \d+", line), line
    burner = [ln for ln in lines if ln.startswith("thread burner;")]
    assert burner
    assert all(";_burn (" in ln for ln in burner)
    assert sum(int(ln.rsplit(" ", 1)[1]) for ln in burner) > 20
    # the loop waiting in select() is idle: left out by default
    assert not any("select (selectors.py:" in ln for ln in lines)


async def test_profile_pstats_and_idle() -> None:
    with burning():
        async with client() as c:
            resp = await c.get("/debug/pprof/profile?seconds=0.3&format=pstats")
            assert resp.status == 200
            assert resp.headers["Content-Disposition"] == 'attachment; filename="ctrd.pstats"'
            raw = await resp.read()
            resp = await c.get("/debug/pprof/profile?seconds=0.3&idle=1")
            idle_text = await resp.text()
    stats = marshal.loads(raw)
    burn = [k for k in stats if k[2] == "_burn"]
    assert burn
    _cc, nc, tt, ct, callers = stats[burn[0]]
    assert nc > 0
    assert tt > 0
    assert ct >= tt
    assert callers
    path = Path(f"/tmp/ctrd-test-{os.getpid()}.pstats")
    try:
        path.write_bytes(raw)
        st = pstats.Stats(str(path))
        assert st.total_tt > 0
    finally:
        path.unlink()
    assert "select (selectors.py:" in idle_text  # the loop's idle samples are kept with idle=1


async def test_profile_arguments_and_one_at_a_time() -> None:
    async with client() as c:
        for q in ("seconds=0", "seconds=-1", "seconds=x", "seconds=601", "seconds=1&format=pprof"):
            resp = await c.get(f"/debug/pprof/profile?{q}")
            assert resp.status == 400, q
        first = asyncio.ensure_future(c.get("/debug/pprof/profile?seconds=0.5"))
        await asyncio.sleep(0.1)
        resp = await c.get("/debug/pprof/profile?seconds=0.1")
        assert resp.status == 409
        assert (await first).status == 200
        resp = await c.get("/debug/pprof/profile?seconds=0.1")
        assert resp.status == 200


def test_profile_sampler_stops_promptly() -> None:
    p = Profile(0.005)
    p.start()
    time.sleep(0.1)
    t = time.monotonic()
    p.stop()
    p.join()
    assert time.monotonic() - t < 0.1
    assert 5 <= p.samples <= 30


async def test_heap_reports_running_tracing_and_leaves_it_on() -> None:
    """Tracing started by somebody else (PYTHONTRACEMALLOC): reported at once, left on."""
    was = tracemalloc.is_tracing()
    tracemalloc.start(5)
    try:
        async with client() as c:
            keep = [bytearray(1000) for _ in range(2000)]  # ~2 MB from this line
            resp = await c.get("/debug/pprof/heap?limit=5")
            assert resp.status == 200
            text = await resp.text()
            assert text.startswith("tracemalloc was running already")
            assert re.search(r"^traced: \d+ bytes now", text, re.M)
            assert len(re.findall(r"^#\d+: \d+ bytes in \d+ blocks", text, re.M)) == 5
            assert "keep = [bytearray(1000)" in text
            del keep
            assert tracemalloc.is_tracing()
            resp = await c.get("/debug/pprof/heap?key=traceback&limit=1")
            assert resp.status == 200
            assert (await c.get("/debug/pprof/heap?key=size")).status == 400
            assert (await c.get("/debug/pprof/heap?seconds=0")).status == 400
            assert (await c.get("/debug/pprof/heap?seconds=x")).status == 400
            assert await (await c.get("/debug/pprof/heap?stop=1")).text() == "tracemalloc stopped\n"
            assert not tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()
        if was:
            tracemalloc.start()


# -- subprocess -------------------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def get(sock_path: str, url: str, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    conn = UnixHTTPConnection(sock_path, timeout)
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def listening(pid: int) -> set[str]:
    """What *pid* listens on: ``tcp:<port>`` and ``unix:<path>`` (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
                    out.add(f"tcp:{int(parts[1].rsplit(':', 1)[1], 16)}")
    with open(f"/proc/{pid}/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[6] in inodes and int(parts[3], 16) & 0x10000:  # __SO_ACCEPTCON
                out.add(f"unix:{parts[7]}")
    return out


def _start(daemon: Launcher, extra: str = "") -> tuple[DaemonProc, str]:
    tmp = daemon.tmpdir()
    dbg = str(tmp / "debug.sock")
    d = daemon(f'[debug]\naddress = "{dbg}"\n{extra}', tmp=tmp)
    return d, dbg


def test_nothing_listens_unless_configured(daemon: Launcher) -> None:
    d = daemon()
    assert listening(d.pid) == {f"unix:{d.socket}"}
    assert d.log().count("serving...") == 1


def test_debug_on_a_unix_socket_and_metrics_on_tcp(daemon: Launcher) -> None:
    d, dbg = _start(daemon, '[metrics]\naddress = "127.0.0.1:0"\n')
    port = int(d.wait_for_log(r'serving\.\.\. address=127\.0\.0\.1:(\d+)" module=ctrd\.metrics').group(1))
    d.wait_for_log(rf'serving\.\.\. address={re.escape(dbg)}" module=ctrd\.debug')
    assert listening(d.pid) == {f"unix:{d.socket}", f"unix:{dbg}", f"tcp:{port}"}
    assert stat.S_IMODE(os.stat(dbg).st_mode) == 0o660
    # both HTTP endpoints were serving before the gRPC socket
    log = d.log()
    assert log.index("module=ctrd.metrics") < log.index(f"serving... address={d.socket}")
    assert log.index("module=ctrd.debug") < log.index(f"serving... address={d.socket}")
    assert "not a loopback address" not in log

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="Write",'
        'grpc_service="containerd.services.content.v1.Content",grpc_type="bidi_stream"} 0.0'
    ) in text.splitlines()

    status, headers, body = get(dbg, "/debug/vars")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    v = json.loads(body)
    assert v["pid"] == d.pid
    assert v["cmdline"][-4:] == ["--config", str(d.config_path), "--address", d.socket]
    assert v["grpc_inflight"] == 0
    plugins = {f"{p['type']}.{p['id']}": p["status"] for p in v["plugins"]}
    assert plugins["io.containerd.grpc.v1.content"] == "ok"
    assert plugins["io.containerd.metadata.v1.sqlite"] == "ok"
    status, _, body = get(dbg, "/debug/pprof/goroutine")
    assert status == 200
    assert "task 'Task-1' (Daemon.run):" in body.decode()
    assert "thread 'MainThread'" in body.decode()
    status, _, body = get(dbg, "/debug/pprof/heap?seconds=0.1")
    assert status == 200
    assert body.startswith(b"allocations made during 0.1 s of tracing")
    status, _, body = get(dbg, "/debug/pprof/")
    assert status == 200
    assert b'href="/debug/pprof/goroutine"' in body

    d.stop()
    assert not os.path.exists(dbg)  # removed at shutdown


def test_profile_during_load_and_daemon_keeps_serving(daemon: Launcher) -> None:
    d, dbg = _start(daemon)
    result: dict[str, Any] = {}

    def profile() -> None:
        result["resp"] = get(dbg, "/debug/pprof/profile?seconds=2")

    async def load() -> int:
        ch = Channel(path=d.socket)
        st = RemoteContentStore(ch, namespace="load", timeout=10)
        deadline = time.monotonic() + 3.0

        async def worker() -> int:
            n = 0
            while time.monotonic() < deadline:
                with contextlib.suppress(errdefs.NotFound):
                    await st.info("sha256:" + "0" * 64)
                n += 1
            return n

        try:
            return sum(await asyncio.gather(*(worker() for _ in range(4))))
        finally:
            ch.close()

    th = threading.Thread(target=profile)
    th.start()
    calls = run_sync(load)
    th.join(30)
    status, headers, body = result["resp"]
    assert status == 200
    text = body.decode()
    assert int(headers["X-Ctrd-Samples"]) > 100
    lines = text.splitlines()
    assert lines
    assert all(re.fullmatch(r"thread [^;]+(;[^;]+)+ \d+", ln) for ln in lines)
    # the loop thread was caught serving gRPC calls (where it releases the GIL: see docs/metrics.md)
    serving = ("(grpclib/", "GrpcListener._serve (ctrd/wire/server.py")
    assert any(ln.startswith("thread MainThread;") and any(s in ln for s in serving) for ln in lines), text
    assert calls > 100  # the daemon kept answering while profiled
    status, _, _ = get(dbg, "/debug/vars")
    assert status == 200


def test_shutdown_does_not_wait_for_a_long_profile(daemon: Launcher) -> None:
    d, dbg = _start(daemon)
    errors: list[BaseException] = []

    def profile() -> None:
        try:
            get(dbg, "/debug/pprof/profile?seconds=60")
        except BaseException as exc:  # the connection is closed by the shutdown
            errors.append(exc)

    th = threading.Thread(target=profile, daemon=True)
    th.start()
    time.sleep(0.5)
    t = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t < 8.0
    th.join(10)
    assert not th.is_alive()


def test_sigusr1_dumps_stacks_to_the_log(daemon: Launcher) -> None:
    d = daemon()
    d.send_signal(signal.SIGUSR1)
    m = d.wait_for_log(r"=== BEGIN goroutine stack dump ===.*?=== END goroutine stack dump ===")
    dump = m.group(0)
    assert "task 'Task-1' (Daemon.run):" in dump
    assert "thread 'MainThread'" in dump
    assert d.proc.poll() is None  # still running
    # and again: the handler stays installed
    d.send_signal(signal.SIGUSR1)
    d.wait_for(lambda: d.log().count("BEGIN goroutine stack dump") == 2, what="second dump")
    assert d.stop() == 0


def test_non_loopback_debug_address_warns(daemon: Launcher) -> None:
    d = daemon('[debug]\naddress = "0.0.0.0:0"\n')
    d.wait_for_log(r"debug endpoint address=0\.0\.0\.0:0 is not a loopback address")


def test_relative_debug_address_is_a_config_error(daemon: Launcher) -> None:
    tmp = daemon.tmpdir()
    cfg = tmp / "c.toml"
    cfg.write_text(f'root = "{tmp}/r"\nstate = "{tmp}/s"\n[debug]\naddress = "debug.sock"\n')
    res = daemon.run("--config", str(cfg), "--address", str(tmp / "s.sock"))
    assert res.returncode == 1
    assert "debug.address: must be an absolute unix socket path or a TCP host:port" in res.stderr
