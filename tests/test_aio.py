"""``ctrd._aio.shield_eager``."""

from __future__ import annotations

import asyncio

import pytest

from ctrd._aio import TimeSlice, shield_eager


async def test_completes_inline_without_a_task() -> None:
    tasks_before = len(asyncio.all_tasks())
    seen: list[asyncio.Task[object] | None] = []

    async def inline() -> int:
        seen.append(asyncio.current_task())
        return 7

    assert await shield_eager(inline()) == 7
    assert seen == [asyncio.current_task()]
    assert len(asyncio.all_tasks()) == tasks_before


async def test_raises_what_the_coroutine_raises() -> None:
    async def boom() -> None:
        raise ValueError("x")

    with pytest.raises(ValueError, match="x"):
        await shield_eager(boom())

    async def later_boom() -> None:
        await asyncio.sleep(0)
        raise KeyError("y")

    with pytest.raises(KeyError):
        await shield_eager(later_boom())


async def test_suspending_coroutine_finishes_with_its_result() -> None:
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def waits() -> str:
        await asyncio.sleep(0)
        return await fut + "!"

    task = asyncio.ensure_future(shield_eager(waits()))
    await asyncio.sleep(0.01)
    assert not task.done()
    fut.set_result("done")
    assert await task == "done!"


async def test_caller_cancellation_does_not_interrupt_the_rest() -> None:
    gate = asyncio.Event()
    steps: list[str] = []

    async def close() -> None:
        steps.append("start")
        await gate.wait()
        steps.append("end")

    caller = asyncio.ensure_future(shield_eager(close()))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert steps == ["start"]
    gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert steps == ["start", "end"]


async def test_time_slice_yields_only_when_used_up() -> None:
    ran: list[int] = []

    async def other() -> None:
        ran.append(1)

    task = asyncio.create_task(other())
    await TimeSlice(3600).tick()  # within its slice: returns without letting the task run
    assert ran == []
    await TimeSlice(0).tick()  # used up: the loop runs the task
    assert ran == [1]
    await task
