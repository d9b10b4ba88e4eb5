"""Garbage collection scheduling: the ``io.containerd.gc.v1.scheduler`` plugin.

The collector itself (mark and sweep over the metadata database and the backend
store) is :mod:`ctrd.metadata.gc`; this package decides *when* it runs
(:mod:`ctrd.gc.scheduler`), parses the config's Go duration strings
(:mod:`ctrd.gc.duration`) and registers the plugin (:mod:`ctrd.gc.plugin`).
"""

from __future__ import annotations

from ctrd.gc.duration import DurationError, format_duration, parse_duration
from ctrd.gc.scheduler import GCScheduler, Scheduler

__all__ = ["DurationError", "GCScheduler", "Scheduler", "format_duration", "parse_duration"]
