"""The runtime's tasks (``_engine.executions``): plain asyncio tasks with a task group's
guarantees — cancelled (level-triggered, shields respected) and waited for when the group is
cancelled, and a failure cancels the group and is raised by it."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from asyncflow._engine.executions import Executions


async def test_cancelling_the_group_cancels_every_task_and_waits_for_shielded_work():
    events: list[str] = []
    parked = asyncio.Event()

    async def worker(tag: str) -> None:
        try:
            parked.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append(f"{tag} cancelled")
            try:
                await asyncio.sleep(0)  # cancelled again: level-triggered, as in a task group
            except asyncio.CancelledError:
                events.append(f"{tag} cancelled again")
            with anyio.CancelScope(shield=True):
                await asyncio.sleep(0.05)  # a terminal write: shutdown does not tear it
                events.append(f"{tag} finished its shielded write")
            raise

    async with anyio.create_task_group() as tg:
        executions = Executions(tg)
        executions.start(worker, ("a",), "a")
        executions.start(worker, ("b",), "b")
        await parked.wait()
        await asyncio.sleep(0)
        tg.cancel_scope.cancel()
    # The group's exit waited for both tasks.
    assert sorted(events) == sorted([
        "a cancelled", "a cancelled again", "a finished its shielded write",
        "b cancelled", "b cancelled again", "b finished its shielded write"])


async def test_a_failed_task_cancels_the_group_and_is_raised():
    cancelled = asyncio.Event()

    async def parked() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def fails() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    with pytest.raises(BaseExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            executions = Executions(tg)
            executions.start(parked, (), "parked")
            executions.start(fails, (), "fails")
            await asyncio.Event().wait()  # until the failure cancels the group
    assert info.group_contains(RuntimeError, match="boom")
    assert cancelled.is_set()


async def test_a_task_ending_normally_is_forgotten_and_the_group_ends_once_cancelled():
    ran: list[int] = []
    all_ran = asyncio.Event()

    async def quick(value: int) -> None:
        ran.append(value)
        if len(ran) == 100:
            all_ran.set()

    async with anyio.create_task_group() as tg:
        executions = Executions(tg)
        for value in range(100):
            executions.start(quick, (value,), f"quick {value}")
        await all_ran.wait()
        await asyncio.sleep(0)  # the last task's done callback
        assert not executions._tasks
        tg.cancel_scope.cancel()
    assert sorted(ran) == list(range(100))
