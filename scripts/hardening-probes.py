"""The hostile-client probes of issue 14, against the ctrd of any source tree: before and after.

Usage::

    python scripts/hardening-probes.py [SRC_DIR]

runs ``python -m ctrd`` from *SRC_DIR* (default: this checkout's ``src``) on a
fresh root for each probe, with only public interfaces (raw HTTP/2 frames,
grpcio, grpclib with generated stubs built from this checkout), and prints one
line per figure. A probe that the tree under test fails (a stall, a crash) still
prints what it measured. The hostile-client suite (``pytest -m hardening``)
asserts the bounds; this script measures the same things on old code, which the
suite's tests cannot import.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "src"))

from grpclib.client import Channel  # noqa: E402
from grpclib.exceptions import GRPCError  # noqa: E402

from ctrd.api.containerd.services.content import v1 as content_api  # noqa: E402
from ctrd.api.containerd.services.version.v1 import VersionStub  # noqa: E402

MiB = 1 << 20
NS = (("containerd-namespace", "probe"),)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Daemon:
    def __init__(self, src: Path, extra: str = "") -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ctrd-probe-", dir="/tmp"))
        self.sock = str(self.tmp / "ctrd.sock")
        cfg = self.tmp / "config.toml"
        cfg.write_text(f'root = "{self.tmp}/root"\nstate = "{self.tmp}/state"\n{extra}\n')
        env = dict(os.environ, PYTHONPATH=str(src))
        self.log = self.tmp / "log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ctrd", "--config", str(cfg), "--address", self.sock],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if os.path.exists(self.sock):
                try:
                    asyncio.run(version(self.sock, 1.0))
                    return
                except Exception:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"ctrd did not start:\n{self.log.read_text()}")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


async def version(sock: str, limit: float = 60.0) -> str:
    ch = Channel(path=sock)
    try:
        return (await VersionStub(ch).version(timeout=limit)).version
    finally:
        ch.close()


class Victim:
    """Another client calling Version every 50 ms in its own thread; the worst latency seen."""

    def __init__(self, sock: str) -> None:
        self.sock = sock
        self.worst = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        async def loop() -> None:
            while not self.stop.is_set():
                t0 = time.monotonic()
                with contextlib.suppress(Exception):
                    await version(self.sock, 120.0)
                self.worst = max(self.worst, time.monotonic() - t0)
                await asyncio.sleep(0.05)

        asyncio.run(loop())

    def __enter__(self) -> Victim:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(180)


def frame(kind: int, flags: int, sid: int, payload: bytes = b"", length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes((kind, flags)) + struct.pack(">I", sid) + payload


def handshake(sock_path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock_path)
    s.sendall(PREFACE + frame(4, 0, 0))
    got = b""
    while len(got) < 9 or len(got) < 9 + int.from_bytes(got[:3], "big"):
        got += s.recv(65536)
    s.sendall(frame(4, 1, 0))
    return s


def figure(name: str, value: float | str) -> None:
    shown = f"{value:.1f}" if isinstance(value, float) else value
    print(f"{name}: {shown}", flush=True)


def probe_long_ref(src: Path) -> None:
    d = Daemon(src)
    try:

        async def status() -> float:
            ch = Channel(path=d.sock)
            t0 = time.monotonic()
            try:
                await content_api.ContentStub(ch).status(
                    content_api.StatusRequest(ref="a" * (256 << 10)), metadata=dict(NS), timeout=300
                )
            except GRPCError:
                pass
            except Exception as exc:  # the answer broke the client (a header over its limit)
                figure("256 KiB ref: the client got", f"{type(exc).__name__}: {exc}")
            finally:
                ch.close()
            return time.monotonic() - t0

        with Victim(d.sock) as v:
            took = asyncio.run(status())
        figure("256 KiB ref: answer (ms)", took * 1000)
        figure("256 KiB ref: max victim latency (ms)", v.worst * 1000)
    finally:
        d.stop()


def probe_regex_bomb(src: Path) -> None:
    d = Daemon(src)
    try:
        data = b"bomb"
        dgst = "sha256:" + hashlib.sha256(data).hexdigest()

        async def run() -> float:
            ch = Channel(path=d.sock)
            stub = content_api.ContentStub(ch)
            try:
                req = content_api.WriteContentRequest(
                    action=content_api.WriteAction.COMMIT,
                    ref="r",
                    data=data,
                    total=len(data),
                    expected=dgst,
                    labels={"x": "a" * 25 + "b", "containerd.io/gc.root": "1"},
                )
                [r async for r in stub.write([req], metadata=dict(NS), timeout=30)]
                t0 = time.monotonic()
                [
                    r
                    async for r in stub.list(
                        content_api.ListContentRequest(filters=['labels.x~="^(a+)+$"']),
                        metadata=dict(NS),
                        timeout=600,
                    )
                ]
                return time.monotonic() - t0
            finally:
                ch.close()

        with Victim(d.sock) as v:
            took = asyncio.run(run())
        figure("regex bomb on a 26-byte label: List answer (ms)", took * 1000)
        figure("regex bomb: max victim latency (ms)", v.worst * 1000)
    finally:
        d.stop()


def probe_data_headers(src: Path) -> None:
    d = Daemon(src)
    socks = []
    try:
        before = d.rss_mib()
        for _ in range(200):
            s = handshake(d.sock)
            s.sendall(frame(0, 0, 1, b"x", length=2 * MiB - 1))
            socks.append(s)
        time.sleep(1.0)
        figure("200 x 10-byte 2 MiB DATA headers: RSS growth (MiB)", d.rss_mib() - before)
    finally:
        for s in socks:
            s.close()
        d.stop()


def probe_grpcio(src: Path) -> None:
    d = Daemon(src)
    try:
        failures = 0
        for i in range(20):
            data = bytes([i]) * 80_000
            ch = grpc.insecure_channel(f"unix:{d.sock}")
            write = ch.stream_stream(
                "/containerd.services.content.v1.Content/Write",
                request_serializer=bytes,
                response_deserializer=content_api.WriteContentResponse.parse,
            )
            req = content_api.WriteContentRequest(
                action=content_api.WriteAction.COMMIT,
                ref=f"g{i}",
                data=data,
                total=len(data),
                expected="sha256:" + hashlib.sha256(data).hexdigest(),
            )
            try:
                list(write(iter([req]), metadata=NS, timeout=30))
            except grpc.RpcError:
                failures += 1
            ch.close()
        figure("grpcio first call, 80 KB Write: failures of 20", float(failures))
    finally:
        d.stop()


def probe_unread_readers(src: Path) -> None:
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.settings import SettingCodes

    d = Daemon(src)
    socks = []
    try:
        data = bytes(range(256)) * (32 * MiB // 256)
        dgst = "sha256:" + hashlib.sha256(data).hexdigest()

        async def put() -> None:
            ch = Channel(path=d.sock)
            try:
                reqs = [
                    content_api.WriteContentRequest(
                        action=content_api.WriteAction.WRITE, ref="big", offset=o, data=data[o : o + MiB]
                    )
                    for o in range(0, len(data), MiB)
                ]
                reqs.append(
                    content_api.WriteContentRequest(
                        action=content_api.WriteAction.COMMIT,
                        ref="big",
                        offset=len(data),  # COMMIT at offset 0 would truncate (containerd's rule)
                        total=len(data),
                        expected=dgst,
                        labels={"containerd.io/gc.root": "1"},
                    )
                )
                [r async for r in content_api.ContentStub(ch).write(reqs, metadata=dict(NS), timeout=120)]
            finally:
                ch.close()

        asyncio.run(put())
        before = d.rss_mib()
        body = bytes(content_api.ReadContentRequest(digest=dgst))
        framed = struct.pack(">BI", 0, len(body)) + body
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/containerd.services.content.v1.Content/Read"),
            (":authority", "x"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("containerd-namespace", "probe"),
        ]
        for _ in range(5):
            c = H2Connection(H2Configuration(client_side=True, header_encoding="ascii"))
            c.initiate_connection()
            c.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1})
            c.increment_flow_control_window((1 << 31) - 1 - 65535)
            for _ in range(100):
                sid = c.get_next_available_stream_id()
                c.send_headers(sid, headers)
                c.send_data(sid, framed, end_stream=True)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(d.sock)
            s.sendall(c.data_to_send())
            socks.append(s)
        time.sleep(3.0)
        figure("500 unread Read streams: RSS growth (MiB)", d.rss_mib() - before)
    finally:
        for s in socks:
            s.close()
        d.stop()


def probe_flood(src: Path, kind: str) -> None:
    d = Daemon(src)
    try:
        before = d.rss_mib()
        s = handshake(d.sock)
        s.setblocking(False)
        unit = frame(6, 0, 0, b"12345678") * 64 if kind == "ping" else frame(4, 0, 0) * 64
        end = time.monotonic() + 3.0
        with Victim(d.sock) as v:
            while time.monotonic() < end:
                try:
                    s.send(unit)
                except BlockingIOError:
                    time.sleep(0.001)
                except OSError:
                    break
        s.close()
        figure(f"{kind} flood 3 s: max victim latency (ms)", v.worst * 1000)
        figure(f"{kind} flood 3 s: RSS growth (MiB)", d.rss_mib() - before)
    finally:
        d.stop()


def probe_second_daemon(src: Path) -> None:
    d = Daemon(src)
    try:
        other = d.tmp / "other.sock"
        cfg = d.tmp / "config.toml"
        proc = subprocess.Popen(
            [sys.executable, "-m", "ctrd", "--config", str(cfg), "--address", str(other)],
            env=dict(os.environ, PYTHONPATH=str(src)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            rc = proc.wait(10)
            figure("second daemon on the same root", f"exited {rc}")
        except subprocess.TimeoutExpired:
            figure("second daemon on the same root", "started (still running after 10 s)")
            proc.kill()
            proc.wait()
    finally:
        d.stop()


def probe_bolt(src: Path) -> None:
    d = Daemon(src, '[plugins."io.containerd.metadata.v1.bolt"]\ncontent_sharing_policy = "isolated"\n')
    try:
        log = d.log.read_text()
        policy = "isolated" if "policy=isolated" in log else "shared" if "policy=shared" in log else "?"
        figure('config with [plugins."...bolt"] isolated: policy run', policy)
    finally:
        d.stop()


def main() -> None:
    src = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE / "src"
    print(f"# ctrd from {src}", flush=True)
    for probe in (
        probe_long_ref,
        probe_regex_bomb,
        probe_data_headers,
        probe_grpcio,
        probe_unread_readers,
        probe_second_daemon,
        probe_bolt,
    ):
        try:
            probe(src)
        except Exception as exc:  # the tree under test failed the probe: say so and go on
            figure(f"{probe.__name__} failed", f"{type(exc).__name__}: {exc}")
    for kind in ("ping", "settings"):
        probe_flood(src, kind)


if __name__ == "__main__":
    main()
