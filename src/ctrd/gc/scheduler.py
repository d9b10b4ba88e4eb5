"""When to collect garbage: containerd's ``gc/scheduler``, on asyncio.

One background task runs the collector; nothing else ever waits for a
collection except :meth:`GCScheduler.schedule_and_wait`. Triggers:

* **start-up**: one collection ``startup_delay`` after :meth:`GCScheduler.start`;
* **deletions** (:meth:`GCScheduler.notify_deletion`, registered as the metadata
  store's deletion observer: content, lease and image deletes): with
  ``deletion_threshold == 0`` any deletion asks for a collection
  ``schedule_delay`` after it, but not before the pause limit allows (below);
  with ``deletion_threshold = n > 0``, *n* deletions since the last collection
  ask for one ``schedule_delay`` after the n-th, regardless of the pause limit
  (containerd's ``deletions >= threshold``);
* **mutations**: with ``mutation_threshold = n > 0``, once the database counted
  *n* committed write transactions (``db.mutations``) since the last collection,
  the next scheduled tick collects (as containerd: the threshold does not
  schedule by itself, it makes the next tick count);
* **explicit**: :meth:`GCScheduler.schedule_and_wait` (``Leases.Delete`` with
  ``sync=true``) collects ``schedule_delay`` from now, regardless of the pause
  limit, and returns the stats of a collection that *started after* the call.

**Pause limit** (``pause_threshold``, clamped to [0, 0.5]): after each collection
the scheduler computes ``interval = avg / pause_threshold - avg`` from the
average duration of all collections so far, so collections take at most that
fraction of wall time; ticks happen every ``interval`` (1 s while
``pause_threshold`` is 0 or no collection has run) and deletion- or
mutation-driven collections never start earlier than ``interval`` after the
previous one ended. A failed collection is logged and retried ``interval + 1 s``
later; its waiters get the error.

Counters for metrics: :attr:`GCScheduler.runs`, :attr:`GCScheduler.failures`,
:attr:`GCScheduler.total_duration` (seconds), :attr:`GCScheduler.freed_bytes`,
:attr:`GCScheduler.last_stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from ctrd import errdefs

__all__ = ["GCScheduler", "Scheduler", "Stats"]

log = logging.getLogger("ctrd.gc")

_DEFAULT_INTERVAL = 1.0
_MIN_INTERVAL = 0.01
_RETRY_PENALTY = 1.0


class Stats(Protocol):
    """What the scheduler reads from a collection's result."""

    @property
    def duration(self) -> float:
        """Wall time of the collection, seconds."""
        ...

    @property
    def bytes(self) -> int:
        """Bytes freed in the backend store."""
        ...


@runtime_checkable
class Scheduler(Protocol):
    """What other plugins use of an ``io.containerd.gc.v1`` plugin (containerd's ``gc.Scheduler``)."""

    async def schedule_and_wait(self) -> Any:
        """Ask for a collection; return its stats once one that started after the call finished."""
        ...


class GCScheduler:
    """Runs *collect* in the background according to the triggers above."""

    def __init__(
        self,
        collect: Callable[[], Awaitable[Any]],
        mutations: Callable[[], int],
        *,
        pause_threshold: float = 0.02,
        deletion_threshold: int = 0,
        mutation_threshold: int = 100,
        schedule_delay: float = 0.0,
        startup_delay: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._collect = collect
        self._mutations = mutations
        self.pause_threshold = min(max(float(pause_threshold), 0.0), 0.5)
        self.deletion_threshold = max(int(deletion_threshold), 0)
        self.mutation_threshold = max(int(mutation_threshold), 0)
        self.schedule_delay = max(float(schedule_delay), 0.0)
        self.startup_delay = max(float(startup_delay), 0.0)
        self._clock = clock

        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

        # trigger state (since the last collection started)
        self._deletions = 0
        self._deleted_at: float | None = None  # first counted deletion
        self._threshold_at: float | None = None  # deletion_threshold reached
        self._triggered_at: float | None = None  # explicit request
        self._startup_at: float | None = None
        self._retry_at: float | None = None  # after a failed collection
        self._waiters: list[asyncio.Future[Any]] = []
        self._mutations_base = 0

        # pacing
        self.interval = _DEFAULT_INTERVAL
        self._last_end: float | None = None
        self._next_tick: float | None = None

        #: completed collections, failed ones, their summed duration (s), backend bytes freed
        self.runs = 0
        self.failures = 0
        self.total_duration = 0.0
        self.freed_bytes = 0
        self.last_stats: Any = None
        self.running = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background task (the start-up collection comes ``startup_delay`` later)."""
        if self._task is not None:
            return
        now = self._clock()
        self._startup_at = now + self.startup_delay
        self._mutations_base = self._mutations()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ctrd-gc-scheduler")

    async def aclose(self) -> None:
        """Stop the background task; a collection in progress is cancelled (it rolls back cleanly)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_waiters(self._waiters, errdefs.Unavailable("garbage collector stopped"))
        self._waiters = []

    # -- triggers --------------------------------------------------------------------------------

    def notify_deletion(self, *_: object) -> None:
        """A deletion happened (content or lease): a collection may be due."""
        if self._closed:
            return
        now = self._clock()
        self._deletions += 1
        if self._deleted_at is None:
            self._deleted_at = now
        if (
            self.deletion_threshold > 0
            and self._deletions >= self.deletion_threshold
            and self._threshold_at is None
        ):
            self._threshold_at = now
        self._wake.set()

    async def schedule_and_wait(self) -> Any:
        """Ask for a collection and return its stats (one that starts after this call).

        :raises errdefs.Unavailable: the scheduler is stopped or stops meanwhile.
        :raises Exception: whatever made that collection fail.
        """
        if self._closed or self._task is None:
            raise errdefs.Unavailable("garbage collector is not running")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        if self._triggered_at is None:
            self._triggered_at = self._clock()
        self._wake.set()
        return await asyncio.shield(fut)

    # -- the loop --------------------------------------------------------------------------------

    def _mutations_due(self) -> bool:
        return self.mutation_threshold > 0 and (
            self._mutations() - self._mutations_base >= self.mutation_threshold
        )

    def _due(self, now: float) -> float | None:
        """When the next collection should start (``None``: no collection wanted yet)."""
        candidates: list[float] = []
        if self._startup_at is not None:
            candidates.append(self._startup_at)
        if self._retry_at is not None:
            candidates.append(self._retry_at)
        if self._triggered_at is not None:
            candidates.append(self._triggered_at + self.schedule_delay)
        if self._threshold_at is not None:
            candidates.append(self._threshold_at + self.schedule_delay)
        paced: list[float] = []
        if self.deletion_threshold == 0 and self._deleted_at is not None:
            paced.append(self._deleted_at + self.schedule_delay)
        if self._mutations_due():
            # the next tick collects
            paced.append(self._next_tick if self._next_tick is not None else now)
        if paced:
            earliest = self._last_end + self.interval if self._last_end is not None else now
            candidates.append(max(min(paced), earliest))
        return min(candidates) if candidates else None

    async def _run(self) -> None:
        while True:
            now = self._clock()
            due = self._due(now)
            if due is None or due > now:
                if self._next_tick is None or self._next_tick <= now:
                    self._next_tick = now + self.interval
                wake_at = self._next_tick if due is None else min(due, self._next_tick)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(wake_at - now, 0.0))
                continue
            await self._collect_once()

    async def _collect_once(self) -> None:
        # Everything asked for until now is served by this run; deletions and requests that
        # arrive while it runs (possibly after its mark) count for the next one.
        waiters, self._waiters = self._waiters, []
        self._startup_at = self._triggered_at = self._threshold_at = self._retry_at = None
        self._deletions = 0
        self._deleted_at = None
        self.running = True
        t0 = self._clock()
        try:
            stats = await self._collect()
        except asyncio.CancelledError:
            self._fail_waiters(waiters, errdefs.Unavailable("garbage collector stopped"))
            raise
        except Exception as exc:
            end = self._clock()
            self.failures += 1
            # a domain error (a full disk) is one line; anything else keeps its traceback
            log.error("garbage collection failed: %s", exc, exc_info=not isinstance(exc, errdefs.Error))
            self._last_end = end
            # retry after the usual spacing plus a second (containerd)
            self._retry_at = self._next_tick = end + self.interval + _RETRY_PENALTY
            self._fail_waiters(waiters, exc)
            return
        finally:
            self.running = False
        end = self._clock()
        self.runs += 1
        self.total_duration += float(getattr(stats, "duration", end - t0))
        self.freed_bytes += int(getattr(stats, "bytes", 0))
        self.last_stats = stats
        if self.pause_threshold > 0.0:
            avg = self.total_duration / self.runs
            self.interval = max(avg / self.pause_threshold - avg, _MIN_INTERVAL)
        self._last_end = end
        self._mutations_base = self._mutations()
        self._next_tick = end + self.interval
        for fut in waiters:
            if not fut.done():
                fut.set_result(stats)

    @staticmethod
    def _fail_waiters(waiters: list[asyncio.Future[Any]], exc: BaseException) -> None:
        for fut in waiters:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # a caller that gave up (cancelled) must not make this "never retrieved"
