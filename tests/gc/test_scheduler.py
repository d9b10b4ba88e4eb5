"""The GC scheduler (:mod:`ctrd.gc.scheduler`), Go durations and the plugin's config."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ctrd import errdefs, namespaces
from ctrd.content import sha256_of, write_blob
from ctrd.content.plugin import local as content_plugin
from ctrd.gc.plugin import SchedulerConfig
from ctrd.gc.plugin import scheduler as gc_plugin
from ctrd.gc.scheduler import GCScheduler, Scheduler
from ctrd.golang import DurationError, format_duration, parse_duration
from ctrd.metadata import GarbageCollection
from ctrd.metadata.gc import GCStats
from ctrd.metadata.plugin import sqlite as metadata_plugin
from ctrd.server.config import Config, ConfigError
from ctrd.server.daemon import Daemon

# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("0s", 0),
        ("0ms", 0),
        ("100ms", 100_000_000),
        ("1m30s", 90_000_000_000),
        ("1h", 3_600_000_000_000),
        ("1.5s", 1_500_000_000),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
        ("300us", 300_000),
        ("300µs", 300_000),
        ("300μs", 300_000),
        ("7ns", 7),
        ("+5s", 5_000_000_000),
        ("-1.5h", -5_400_000_000_000),
        ("1h2m3s4ms5us6ns", 3_723_004_005_006),
        ("2562047h47m16.854775807s", (1 << 63) - 1),
    ],
)
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("-", 'time: invalid duration "-"'),
        ("s", 'time: invalid duration "s"'),
        (".s", 'time: invalid duration ".s"'),
        ("100", 'time: missing unit in duration "100"'),
        ("1h30", 'time: missing unit in duration "1h30"'),
        ("10sec", 'time: unknown unit "sec" in duration "10sec"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("1 s", 'time: unknown unit " s" in duration "1 s"'),
        ("2562047h47m16.854775808s", 'time: invalid duration "2562047h47m16.854775808s"'),
    ],
)
def test_parse_duration_errors(text: str, message: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (100_000_000, "100ms"),
        (1_500_000_000, "1.5s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (-2_000_000, "-2ms"),
    ],
)
def test_format_duration(ns: int, text: str) -> None:
    assert format_duration(ns) == text
    assert parse_duration(text) == ns


# -- config ---------------------------------------------------------------------------------------


def test_config_defaults_are_containerds() -> None:
    cfg = SchedulerConfig()
    assert (cfg.pause_threshold, cfg.deletion_threshold, cfg.mutation_threshold) == (0.02, 0, 100)
    assert (cfg.schedule_delay, cfg.startup_delay) == ("0ms", "100ms")
    assert (cfg.schedule_delay_s, cfg.startup_delay_s) == (0.0, 0.1)


def test_config_pause_threshold_is_clamped() -> None:
    assert SchedulerConfig(pause_threshold=0.9).pause_threshold == 0.5
    assert SchedulerConfig(pause_threshold=-1).pause_threshold == 0.0


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"schedule_delay": "10"}, 'time: missing unit in duration "10"'),
        ({"startup_delay": "1x"}, 'time: unknown unit "x" in duration "1x"'),
        ({"startup_delay": 100}, "Go duration string"),
        ({"schedule_delay": "-1s"}, "must not be negative"),
        ({"deletion_threshold": -1}, "greater than or equal to 0"),
        ({"mutation_threshold": -5}, "greater than or equal to 0"),
        ({"schedule_delay_ms": 5}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors(values: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        SchedulerConfig.model_validate(values)
    assert fragment in str(info.value)


async def test_bad_config_stops_the_daemon_with_a_clear_error(tmp_path: Path) -> None:
    cfg = Config(
        root=str(tmp_path / "root"),
        state=str(tmp_path / "state"),
        plugins={"io.containerd.gc.v1.scheduler": {"startup_delay": "5 minutes"}},
    )
    daemon = Daemon(cfg, [content_plugin, metadata_plugin, gc_plugin])
    with pytest.raises(ConfigError) as info:
        await daemon.load_plugins()
    text = str(info.value)
    assert 'plugins."io.containerd.gc.v1.scheduler"' in text
    assert "startup_delay" in text
    assert 'unknown unit " minutes"' in text


async def test_plugin_exports_and_wiring(tmp_path: Path) -> None:
    cfg = Config(
        root=str(tmp_path / "root"),
        state=str(tmp_path / "state"),
        plugins={"io.containerd.gc.v1.scheduler": {"schedule_delay": "10ms", "startup_delay": "1m30s"}},
    )
    daemon = Daemon(cfg, [content_plugin, metadata_plugin, gc_plugin])
    await daemon.load_plugins()
    try:
        p = daemon.plugins.get("io.containerd.gc.v1.scheduler")
        assert p is not None, p and p.error
        assert p.ok, p and p.error
        assert p.exports == {
            "PauseThreshold": "0.02",
            "DeletionThreshold": "0",
            "MutationThreshold": "100",
            "ScheduleDelay": "10ms",
            "StartupDelay": "1m30s",
        }
        sched = p.instance
        assert isinstance(sched, GCScheduler)
        assert isinstance(sched, Scheduler)
        stats = await asyncio.wait_for(sched.schedule_and_wait(), 10)
        assert stats.duration > 0
        assert sched.runs == 1
    finally:
        await daemon.close_plugins()
    assert sched._task is None
    with pytest.raises(errdefs.Unavailable):
        await sched.schedule_and_wait()


async def test_plugin_wiring_by_construction(tmp_path: Path) -> None:
    """The scheduler runs the metadata plugin's own collector and observes its deletions."""
    cfg = Config(
        root=str(tmp_path / "root"),
        state=str(tmp_path / "state"),
        plugins={  # nothing collects unless asked
            "io.containerd.gc.v1.scheduler": {
                "startup_delay": "1h",
                "deletion_threshold": 1000,
                "mutation_threshold": 0,
            }
        },
    )
    daemon = Daemon(cfg, [content_plugin, metadata_plugin, gc_plugin])
    await daemon.load_plugins()
    try:
        p = daemon.plugins.get("io.containerd.gc.v1.scheduler")
        md = daemon.plugins.get("io.containerd.metadata.v1.sqlite")
        assert p is not None, p and p.error
        assert p.ok, p and p.error
        assert md is not None, md.error
        assert md.ok, md.error
        sched = p.instance
        assert isinstance(sched, GCScheduler)
        assert isinstance(sched, Scheduler)
        assert isinstance(md.instance, GarbageCollection)
        with namespaces.with_namespace("default"):
            await write_blob(md.instance.content, "r", b"x", expected=sha256_of(b"x"))
            await md.instance.content.delete(sha256_of(b"x"))
            assert sched._deletions == 1
            await md.instance.leases.create("L")
            await md.instance.leases.delete("L")
            assert sched._deletions == 2
        stats = await asyncio.wait_for(sched.schedule_and_wait(), 10)
        assert isinstance(stats, GCStats)
        assert sched.runs == 1
        assert stats.files == 1  # the deleted blob's file
    finally:
        await daemon.close_plugins()


# -- triggers -------------------------------------------------------------------------------------


@dataclasses.dataclass
class FakeStats:
    duration: float
    bytes: int = 7


class FakeCollector:
    """Records when it runs; each run takes *cost* seconds."""

    def __init__(self, cost: float = 0.0, fail: int = 0) -> None:
        self.cost = cost
        self.fail = fail
        self.starts: list[float] = []
        self.mutations = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def collect(self) -> FakeStats:
        self.starts.append(time.monotonic())
        await self.gate.wait()
        if self.cost:
            await asyncio.sleep(self.cost)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("disk on fire")
        return FakeStats(duration=self.cost or 0.001)


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., tuple[GCScheduler, FakeCollector]]]:
    made: list[GCScheduler] = []

    def factory(collector: FakeCollector | None = None, **kw: Any) -> tuple[GCScheduler, FakeCollector]:
        c = collector or FakeCollector()
        kw.setdefault("startup_delay", 3600.0)
        s = GCScheduler(c.collect, lambda: c.mutations, **kw)
        s.start()
        made.append(s)
        return s, c

    yield factory
    for s in made:
        await s.aclose()


async def wait_runs(c: FakeCollector, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(c.starts) < n:
        assert time.monotonic() < deadline, f"only {len(c.starts)} collections, expected {n}"
        await asyncio.sleep(0.005)


async def test_startup_collection_after_the_delay(make: Any) -> None:
    t0 = time.monotonic()
    s, c = make(startup_delay=0.15)
    await wait_runs(c, 1)
    assert c.starts[0] - t0 >= 0.14
    await asyncio.sleep(0.2)
    assert len(c.starts) == 1, "nothing asked for another collection"
    assert s.runs == 1
    assert s.freed_bytes == 7


async def test_deletion_collects_promptly_with_threshold_zero(make: Any) -> None:
    s, c = make(pause_threshold=0.5)
    await asyncio.sleep(0.05)
    assert c.starts == []
    t0 = time.monotonic()
    s.notify_deletion()
    await wait_runs(c, 1)
    assert c.starts[0] - t0 < 1.0


async def test_schedule_delay_applies_to_deletions(make: Any) -> None:
    s, c = make(pause_threshold=0.5, schedule_delay=0.2)
    t0 = time.monotonic()
    s.notify_deletion()
    s.notify_deletion()
    await wait_runs(c, 1)
    assert c.starts[0] - t0 >= 0.19
    await asyncio.sleep(0.1)
    assert len(c.starts) == 1, "both deletions were served by one collection"


async def test_pause_threshold_spaces_deletion_driven_collections(make: Any) -> None:
    # each run takes 40 ms; at most 20 % of the time: >= 160 ms between runs
    s, c = make(FakeCollector(cost=0.04), pause_threshold=0.2)
    s.notify_deletion()
    await wait_runs(c, 1)
    await asyncio.sleep(0.06)
    s.notify_deletion()
    await wait_runs(c, 2)
    gap = c.starts[1] - (c.starts[0] + 0.04)
    assert gap >= 0.15, gap
    assert s.interval == pytest.approx(0.16, rel=0.3)


async def test_deletion_threshold_counts(make: Any) -> None:
    s, c = make(deletion_threshold=3, mutation_threshold=0)
    s.notify_deletion()
    s.notify_deletion()
    await asyncio.sleep(0.15)
    assert c.starts == []
    s.notify_deletion()
    await wait_runs(c, 1)
    s.notify_deletion()
    await asyncio.sleep(0.15)
    assert len(c.starts) == 1, "the count restarts after a collection"


async def test_mutation_threshold_makes_the_next_tick_collect(make: Any) -> None:
    s, c = make(pause_threshold=0.5, mutation_threshold=5)
    s.interval = 0.05  # tick quickly for the test
    c.mutations = 4
    await asyncio.sleep(0.15)
    assert c.starts == []
    c.mutations = 5
    await wait_runs(c, 1)
    await asyncio.sleep(0.15)
    assert len(c.starts) == 1, "the base moved to the count at the end of the run"


async def test_mutation_threshold_zero_disables_it(make: Any) -> None:
    s, c = make(pause_threshold=0.5, mutation_threshold=0)
    s.interval = 0.02
    c.mutations = 10_000
    await asyncio.sleep(0.1)
    assert c.starts == []


async def test_schedule_and_wait(make: Any) -> None:
    s, c = make()
    a, b = await asyncio.gather(s.schedule_and_wait(), s.schedule_and_wait())
    assert a is b
    assert len(c.starts) == 1
    # a request during a run waits for the next run (which starts after it)
    c.gate.clear()
    first = asyncio.ensure_future(s.schedule_and_wait())
    await wait_runs(c, 2)
    second = asyncio.ensure_future(s.schedule_and_wait())
    await asyncio.sleep(0.02)
    c.gate.set()
    r1, r2 = await first, await second
    assert r1 is not r2
    assert len(c.starts) == 3
    assert s.runs == 3
    assert s.total_duration > 0


async def test_explicit_trigger_ignores_the_pause_limit(make: Any) -> None:
    s, _ = make(FakeCollector(cost=0.05), pause_threshold=0.01)  # interval ~ 5 s
    await s.schedule_and_wait()
    t0 = time.monotonic()
    await s.schedule_and_wait()
    assert time.monotonic() - t0 < 1.0


async def test_failure_is_reported_and_retried(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    s, c = make(FakeCollector(fail=1), pause_threshold=0.5)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await s.schedule_and_wait()
    assert s.failures == 1
    assert s.runs == 0
    assert any("garbage collection failed" in r.getMessage() for r in caplog.records)
    # retried (interval + 1 s) later without being asked again
    await wait_runs(c, 2, timeout=10.0)
    assert c.starts[1] - c.starts[0] >= 0.9
    await asyncio.sleep(0.05)
    assert s.runs == 1


async def test_close_stops_a_running_collection_and_fails_waiters(make: Any) -> None:
    s, c = make()
    c.gate.clear()
    waiter = asyncio.ensure_future(s.schedule_and_wait())
    await wait_runs(c, 1)
    assert s.running
    await asyncio.wait_for(s.aclose(), 2)
    with pytest.raises(errdefs.Unavailable):
        await waiter
    s.notify_deletion()  # ignored once closed
    with pytest.raises(errdefs.Unavailable):
        await s.schedule_and_wait()
