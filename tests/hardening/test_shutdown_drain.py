"""SIGINT/SIGTERM drain: calls already running finish with their real status; a second signal cuts it.

* An ingest whose Write stream was open when the signal came goes on: its later
  WRITEs and its COMMIT are served, the commit succeeds and the blob is there
  after a restart. New calls meanwhile get UNAVAILABLE, among them the lookup
  the SDK's ``ingest`` made after its commit: that used to fail the ingest with
  "server is shutting down" although the blob was stored.
* A second SIGINT/SIGTERM during a long drain stops the daemon at once (exit
  status 128 + signal), plugins closed, no traceback. Before, a second SIGINT hit
  Python's default handler mid-drain and the process hung.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator

import pytest
from _daemon import DaemonProc, Launcher, run_sync
from grpclib.client import Channel, UnaryUnaryMethod

from ctrd import errdefs
from ctrd.api.google.protobuf import Empty
from ctrd.client import Client
from ctrd.content import sha256_of

pytestmark = pytest.mark.hardening

SLEEP = "/ctrd.test.Slow/Sleep"
_PROMPT = 8.0  # seconds: a cut drain ends well before the 10 s drain bound it cuts short


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_open_write_stream_commits_after_the_signal(daemon: Launcher, sig: int) -> None:
    d = daemon()
    data = os.urandom(3 << 20)
    dgst = sha256_of(data)

    async def ingest() -> tuple[str, BaseException | None]:
        async with Client(d.socket, namespace="drain", timeout=30) as c:
            w = await c.content.writer("r", total=len(data), expected=dgst)
            await w.write(data[: 1 << 20])
            await w.status()  # the first MiB is on the server
            d.send_signal(sig)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: d.wait_for_log("waiting for 1 in-flight call"))
            # a new call meanwhile is turned away
            refused: BaseException | None = None
            try:
                await c.content.info(dgst)
            except errdefs.Unavailable as exc:
                refused = exc
            await w.write(data[1 << 20 :])
            committed = await w.commit(len(data), dgst, labels={"containerd.io/gc.root": "x"})
            return str(committed), refused

    committed, refused = run_sync(ingest)
    assert committed == dgst
    assert isinstance(refused, errdefs.Unavailable)
    assert "server is shutting down" in str(refused)
    assert d.proc.wait(15) == 0
    assert "Traceback" not in d.log()

    again = daemon(tmp=d.tmp)

    async def read_back() -> bytes:
        async with Client(again.socket, namespace="drain", timeout=30) as c:
            return await c.content.read_all(dgst)

    assert run_sync(read_back) == data


def test_sdk_ingest_interrupted_by_a_signal_succeeds(daemon: Launcher) -> None:
    """``Client.content.ingest`` commits, then looks the blob up: the lookup is a new call the
    draining server refuses, which must not turn the committed ingest into an error."""
    d = daemon()
    data = os.urandom(3 << 20)
    dgst = sha256_of(data)

    async def ingest() -> str:
        async def chunks() -> AsyncIterator[bytes]:
            yield data[: 1 << 20]
            d.send_signal(signal.SIGINT)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: d.wait_for_log("waiting for 1 in-flight call"))
            yield data[1 << 20 :]

        async with Client(d.socket, namespace="drain", timeout=30) as c:
            labels = {"containerd.io/gc.root": "x"}
            info = await c.content.ingest("sdk", chunks(), size=len(data), labels=labels)
            assert info.size == len(data)
            assert info.labels == labels
            return info.digest

    assert run_sync(ingest) == dgst
    assert d.proc.wait(15) == 0
    again = daemon(tmp=d.tmp)

    async def read_back() -> bytes:
        async with Client(again.socket, namespace="drain", timeout=30) as c:
            return await c.content.read_all(dgst)

    assert run_sync(read_back) == data


def _slow_call(d: DaemonProc, seconds: float, out: list[object]) -> threading.Thread:
    async def call() -> object:
        ch = Channel(path=d.socket)
        try:
            return await UnaryUnaryMethod(ch, SLEEP, Empty, Empty)(
                Empty(), metadata={"sleep-seconds": str(seconds)}, timeout=60
            )
        except Exception as exc:  # the call is cut: any error will do
            return exc
        finally:
            ch.close()

    t = threading.Thread(target=lambda: out.append(run_sync(call, 90)))
    t.start()
    return t


@pytest.mark.parametrize(
    ("first", "second"),
    [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGTERM)],
    ids=["INT-INT", "TERM-INT", "INT-TERM"],
)
def test_second_signal_cuts_a_long_drain(daemon: Launcher, first: int, second: int) -> None:
    d = daemon(plugins=True)
    out: list[object] = []
    t = _slow_call(d, 60, out)
    try:
        d.wait_for(lambda: "sleep-start" in d.records(), what="the slow call")
        d.send_signal(first)
        d.wait_for_log("waiting for 1 in-flight call")
        t0 = time.monotonic()
        d.send_signal(second)
        rc = d.proc.wait(_PROMPT)
        assert time.monotonic() - t0 < _PROMPT
    finally:
        d.stop(signal.SIGKILL)
        t.join(30)
    assert rc == 128 + second, d.log()
    log = d.log()
    assert "Traceback" not in log
    name = signal.Signals(second).name
    assert f"received {name} while stopping: not waiting for 1 in-flight call(s)" in log
    assert "sleep-end" not in d.records()
    # the plugins were still closed, in reverse order
    assert d.records()[-3:] == [
        "close io.containerd.grpc.v1.slow",
        "close io.ctrd.test.a.v1.second",
        "close io.ctrd.test.z.v1.first",
    ]
    assert not os.path.exists(d.socket)
