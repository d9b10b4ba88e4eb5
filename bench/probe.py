"""Measurement plumbing: a probe around each timed run, and the machine's own limits.

A :class:`Probe` records wall time, the daemon's CPU (``/proc/<pid>/stat``), the
benchmark client's CPU (``os.times``: this process plus waited-for children such
as ``ctr``) and the whole machine's busy cores (``/proc/stat``). From these it
derives "other load": busy cores not explained by the daemon and the client,
i.e. what other users of the machine were doing during the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.daemons import Daemon

__all__ = ["Probe", "Sample", "hash_only", "write_hash_fsync"]

_CHUNK = 1 << 20
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    vals = [int(x) for x in parts[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already counted in user
    return total - idle, total


@dataclasses.dataclass
class Sample:
    """One timed run."""

    seconds: float
    daemon_user: float = 0.0
    daemon_sys: float = 0.0
    client_cpu: float = 0.0
    busy_cores: float = 0.0
    other_cores: float = 0.0
    daemon_minflt: int = 0
    # a measured quantity other than time (peak RSS in MiB); None: the time is the metric
    metric: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def daemon_cpu(self) -> float:
        return self.daemon_user + self.daemon_sys


class Probe:
    """``with Probe(daemon) as p: ...`` then ``p.sample``; ``daemon=None`` for machine runs.

    ``unborn=True``: the daemon is started inside the block, so its CPU and faults
    count from zero (``/proc/<pid>/stat`` after the block covers its whole life).
    """

    def __init__(self, daemon: Daemon | None, *, unborn: bool = False) -> None:
        self.daemon = daemon
        self.unborn = unborn
        self.sample: Sample | None = None

    def __enter__(self) -> Probe:
        live = self.daemon is not None and not self.unborn
        self._d0 = self.daemon.cpu() if live and self.daemon is not None else (0.0, 0.0)
        self._f0 = self.daemon.minor_faults() if live and self.daemon is not None else 0
        t = os.times()
        self._c0 = t.user + t.system + t.children_user + t.children_system
        self._m0 = _machine_jiffies()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        wall = time.perf_counter() - self._t0
        if exc_type is not None:
            return
        m1 = _machine_jiffies()
        t = os.times()
        client = t.user + t.system + t.children_user + t.children_system - self._c0
        d1 = self.daemon.cpu() if self.daemon is not None else (0.0, 0.0)
        f1 = self.daemon.minor_faults() if self.daemon is not None else 0
        du, ds = d1[0] - self._d0[0], d1[1] - self._d0[1]
        dt_j = max(m1[1] - self._m0[1], 1)
        ncpu = os.cpu_count() or 1
        busy = (m1[0] - self._m0[0]) / dt_j * ncpu
        ours = (du + ds + client) / wall if wall > 0 else 0.0
        self.sample = Sample(
            seconds=wall,
            daemon_user=du,
            daemon_sys=ds,
            client_cpu=client,
            busy_cores=busy,
            other_cores=max(busy - ours, 0.0),
            daemon_minflt=f1 - self._f0,
        )


def write_hash_fsync(buf: memoryview, path: Path) -> None:
    """What an ingest must do at least: append *buf* in 1 MiB chunks, sha256 it, fsync; one thread."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for off in range(0, len(buf), _CHUNK):
            chunk = buf[off : off + _CHUNK]
            h.update(chunk)
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    h.hexdigest()


def hash_only(buf: memoryview) -> None:
    """sha256 of *buf* in 1 MiB chunks (OpenSSL; SHA-NI on the reference machine)."""
    h = hashlib.sha256()
    for off in range(0, len(buf), _CHUNK):
        h.update(buf[off : off + _CHUNK])
    h.hexdigest()
