"""Registration of the garbage collection scheduler plugin ``io.containerd.gc.v1.scheduler``.

Config (containerd's names and defaults)::

    [plugins."io.containerd.gc.v1.scheduler"]
      pause_threshold = 0.02      # fraction of time GC may take; clamped to [0, 0.5]
      deletion_threshold = 0      # 0: any delete schedules a collection
      mutation_threshold = 100    # write transactions that make the next tick collect; 0: off
      schedule_delay = "0ms"      # Go duration: delay of triggered collections
      startup_delay = "100ms"     # Go duration: first collection after start

Exports, as containerd: ``PauseThreshold``, ``DeletionThreshold``,
``MutationThreshold``, ``ScheduleDelay``, ``StartupDelay``. The plugin requires
the metadata type; the metadata plugin's instance must be a
:class:`ctrd.metadata.GarbageCollection`: the scheduler runs that store's own
collector, reads its mutation counter and registers itself as its deletion
observer. The instance is the :class:`ctrd.gc.scheduler.GCScheduler`, a
:class:`ctrd.gc.Scheduler`: the leases-service plugin makes ``Leases.Delete``
with ``sync=true`` wait on its
:meth:`~ctrd.gc.scheduler.GCScheduler.schedule_and_wait`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ctrd.gc.duration import DurationError, format_duration, parse_duration
from ctrd.plugin import InitContext, Registration, types

if TYPE_CHECKING:
    from ctrd.gc.scheduler import GCScheduler

__all__ = ["SchedulerConfig", "scheduler"]

log = logging.getLogger("ctrd.gc")


class SchedulerConfig(BaseModel):
    """``[plugins."io.containerd.gc.v1.scheduler"]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pause_threshold: float = Field(
        default=0.02,
        description="largest fraction of wall time collections may take (clamped to [0, 0.5])",
    )
    deletion_threshold: int = Field(
        default=0,
        ge=0,
        description="deletions that schedule a collection (0: every deletion schedules one, paced)",
    )
    mutation_threshold: int = Field(
        default=100,
        ge=0,
        description="database mutations after which the next tick collects (0: never by count)",
    )
    schedule_delay: str = Field(
        default="0ms", description='Go duration: delay of a triggered collection, e.g. "0ms", "1s"'
    )
    startup_delay: str = Field(
        default="100ms", description="Go duration: delay of the first collection after start-up"
    )

    @field_validator("pause_threshold")
    @classmethod
    def _clamp(cls, v: float) -> float:
        if v != v:  # NaN
            raise ValueError("pause_threshold must be a number between 0 and 0.5")
        clamped = min(max(v, 0.0), 0.5)
        if clamped != v:
            log.warning("gc scheduler: pause_threshold %s clamped to %s", v, clamped)
        return clamped

    @field_validator("schedule_delay", "startup_delay", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> str:
        if not isinstance(v, str):
            raise ValueError(f'expected a Go duration string such as "100ms" or "1m30s", got {v!r}')
        try:
            ns = parse_duration(v)
        except DurationError as exc:
            raise ValueError(str(exc)) from None
        if ns < 0:
            raise ValueError(f"duration {v!r} must not be negative")
        return v

    @property
    def schedule_delay_s(self) -> float:
        """``schedule_delay`` in seconds."""
        return parse_duration(self.schedule_delay) / 1e9

    @property
    def startup_delay_s(self) -> float:
        """``startup_delay`` in seconds."""
        return parse_duration(self.startup_delay) / 1e9


def _go_float(v: float) -> str:
    """``fmt.Sprint(float64)`` for the values a threshold takes (``0.02``, ``0.5``, ``0``)."""
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


async def _init(ic: InitContext[SchedulerConfig]) -> GCScheduler:
    from ctrd.gc.scheduler import GCScheduler
    from ctrd.metadata import GarbageCollection

    cfg = ic.config
    md = ic.get_single(types.METADATA, GarbageCollection)
    sched = GCScheduler(
        md.collector.collect,
        md.mutations,
        pause_threshold=cfg.pause_threshold,
        deletion_threshold=cfg.deletion_threshold,
        mutation_threshold=cfg.mutation_threshold,
        schedule_delay=cfg.schedule_delay_s,
        startup_delay=cfg.startup_delay_s,
    )
    md.observe_deletions(sched.notify_deletion)
    ic.exports.update(
        {
            "PauseThreshold": _go_float(sched.pause_threshold),
            "DeletionThreshold": str(sched.deletion_threshold),
            "MutationThreshold": str(sched.mutation_threshold),
            "ScheduleDelay": format_duration(parse_duration(cfg.schedule_delay)),
            "StartupDelay": format_duration(parse_duration(cfg.startup_delay)),
        }
    )
    sched.start()
    return sched


scheduler = Registration(
    type=types.GC,
    id="scheduler",
    requires=(types.METADATA,),
    config=SchedulerConfig,
    init=_init,
)
