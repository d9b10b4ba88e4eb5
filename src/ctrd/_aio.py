"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Generator
from typing import Any, Final, TypeVar

__all__ = ["SLICE", "TimeSlice", "shield_eager"]

_T = TypeVar("_T")


class _Rest:
    """Awaitable that drives a coroutine already stepped up to its first suspension."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, _T], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, None, Any]:
        coro, pending = self._coro, self._pending
        while True:
            yield pending  # to the task driving us, which resumes us once it is done
            try:
                pending = coro.send(None)
            except StopIteration as stop:
                return stop.value


async def _finish(rest: _Rest) -> Any:
    return await rest


async def shield_eager(coro: Coroutine[Any, Any, _T]) -> _T:
    """``await asyncio.shield(coro)``, without a task when *coro* never suspends.

    *coro* starts at once in the calling task. If it completes without
    suspending (a local file's close), that is all: no task and no extra loop
    iteration. Otherwise the rest runs in a task under :func:`asyncio.shield`,
    so a cancellation of the caller does not interrupt it, as with ``shield``.
    """
    try:
        pending = coro.send(None)
    except StopIteration as stop:
        result: _T = stop.value
        return result
    result = await asyncio.shield(_finish(_Rest(coro, pending)))
    return result


SLICE: Final = 0.01
"""Seconds a :class:`TimeSlice` loop runs before it lets other tasks in."""


class TimeSlice:
    """Cooperative time slices for a loop of costly steps on the event loop.

    ``await slices.tick()`` before each step returns at once until *budget*
    seconds have passed since the slice began, then lets the loop run other
    tasks (``asyncio.sleep(0)``) and begins a new slice. The loop is then held
    at most *budget* plus one step at a time (filtering rows with regexps:
    :mod:`ctrd.filters` bounds the cost of a step).
    """

    __slots__ = ("_budget", "_until")

    def __init__(self, budget: float = SLICE) -> None:
        self._budget = budget
        self._until = time.monotonic() + budget

    async def tick(self) -> None:
        """Yield to the event loop when the slice is used up."""
        if time.monotonic() >= self._until:
            await asyncio.sleep(0)
            self._until = time.monotonic() + self._budget
