"""``/debug/pprof/heap`` traces allocations for ``seconds`` only: tracemalloc is off again afterwards.

Left on, tracemalloc made small ingests several times slower until somebody asked
for ``?stop=1``.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from aiohttp import test_utils

from ctrd.plugin import PluginSet
from ctrd.server.debug import DebugApp

pytestmark = pytest.mark.hardening


class _Daemon:
    def __init__(self) -> None:
        self.plugins = PluginSet()
        self.started_at = time.time()


@pytest.fixture(autouse=True)
def _no_tracing() -> Iterator[None]:
    was = tracemalloc.is_tracing()
    tracemalloc.stop()
    yield
    tracemalloc.stop()
    if was:
        tracemalloc.start()


async def test_heap_profile_stops_tracing_after_its_seconds() -> None:
    async with test_utils.TestClient(test_utils.TestServer(DebugApp(_Daemon()).app())) as c:
        call = asyncio.ensure_future(c.get("/debug/pprof/heap?seconds=0.5&limit=20"))
        while not tracemalloc.is_tracing():
            await asyncio.sleep(0.01)
            assert not call.done(), await call.result().text()
        keep = [bytearray(1000) for _ in range(2000)]  # ~2 MB from this line, during the window
        # a second heap profile meanwhile is refused, not stacked on the first
        assert (await c.get("/debug/pprof/heap?seconds=0.1")).status == 409
        resp = await call
        assert resp.status == 200
        text = await resp.text()
        assert not tracemalloc.is_tracing()
        assert text.startswith("allocations made during 0.5 s of tracing")
        assert "keep = [bytearray(1000)" in text
        del keep
        # the next profile traces again, and stops again
        resp = await c.get("/debug/pprof/heap?seconds=0.05")
        assert resp.status == 200
        assert not tracemalloc.is_tracing()


async def test_dropped_heap_request_stops_tracing() -> None:
    async with test_utils.TestClient(test_utils.TestServer(DebugApp(_Daemon()).app())) as c:
        call = asyncio.ensure_future(c.get("/debug/pprof/heap?seconds=30"))
        while not tracemalloc.is_tracing():  # no event tells: poll  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        # dropped: the test server cancels the handler (the daemon's runs out its seconds)
        call.cancel()
        for _ in range(500):
            if not tracemalloc.is_tracing():
                break
            await asyncio.sleep(0.01)
        assert not tracemalloc.is_tracing()
