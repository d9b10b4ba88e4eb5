"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["shield_eager"]

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
