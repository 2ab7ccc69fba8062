"""Durable sleep, and the conversion of recorded wall-clock deadlines to event-loop time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .. import _codec
from .._core.wait import NOT_YET, TERMINAL, Key, Wait, Waiter, _NotYet, wait
from .._engine.context import WorkflowContext
from .._engine.journal import begin, record, replayed_value, stop_for_status
from .._engine.observe import workflow_operation
from .._engine.runtime import Runtime
from .._status import PENDING

SLEEP = "asyncflow.sleep"


def loop_deadline(runtime: Runtime, wall_deadline: float) -> float:
    """The event-loop time at which the runtime's clock reaches ``wall_deadline``."""
    return asyncio.get_running_loop().time() + (wall_deadline - runtime.now())


@workflow_operation(SLEEP)
async def sleep(ctx: WorkflowContext, function_id: int, seconds: float) -> None:
    """Checkpoint the wake-up time, then wait for it; cancellation wakes the sleeper at once."""
    recorded = await begin(ctx, function_id, SLEEP)
    if recorded is not None:
        assert recorded.output is not None
        wake_at = float(_codec.loads(recorded.output))
    else:
        wake_at = ctx.runtime.now() + seconds
        await record(ctx, function_id, SLEEP, output=_codec.dumps(wake_at))
    if ctx.runtime.now() >= wake_at:
        return

    async def check(waiter: Waiter) -> bool | _NotYet:
        if await ctx.runtime.store.workflow_state(ctx.workflow_id) != PENDING:
            await stop_for_status(ctx)
        if ctx.runtime.now() >= wake_at:
            return True
        # The runtime's clock may have moved (advance_clock): park until its new time.
        waiter.deadline = loop_deadline(ctx.runtime, wake_at)
        return NOT_YET

    await wait(Wait(ctx.runtime.waits, ((TERMINAL, ctx.workflow_id),), check,
                    deadline=loop_deadline(ctx.runtime, wake_at)))


Attempt = Callable[[float], Awaitable[str | _NotYet | None]]


async def durable_wait(
    ctx: WorkflowContext,
    function_id: int,
    name: str,
    timeout_seconds: float,
    keys: tuple[Key, ...],
    first: Attempt,
    later: Attempt,
    handed: Callable[[Any], str | None] | None = None,
) -> Any:
    """A journaled wait with a durable deadline (``recv``, ``get_event`` in a workflow).

    A completed journal entry is replayed. Otherwise the first check is ``first(deadline)``
    (it journals the wait with its wall-clock deadline and may already find the value), later
    checks ``later(deadline)``: each returns the value's JSON text, or :data:`NOT_YET` (an entry
    completed with an error, see ``get_event``, raises it again). When the
    runtime's clock passes the deadline the entry is completed with ``None`` and ``None`` is
    returned; a recovery waits only for what is left. ``handed``: the value a local wake-up
    of ``keys[0]`` carries, or ``None`` (a wake-up carrying the committed value need not be
    followed by a read).
    """
    recorded = await begin(ctx, function_id, name)
    if recorded is not None and recorded.completed:
        return replayed_value(recorded)  # the value, or the recorded error raised again
    runtime = ctx.runtime
    wall_deadline = (runtime.now() + timeout_seconds if recorded is None
                     else recorded.deadline)
    assert wall_deadline is not None
    attempt = first if recorded is None else later

    async def check(waiter: Waiter) -> str | _NotYet | None:
        nonlocal attempt
        if handed is not None and attempt is later:
            carried = waiter.handed.pop(keys[0], None)
            value = None if carried is None else handed(carried)
            if value is not None:
                return value
        current, attempt = attempt, later
        found = await current(wall_deadline)
        if not isinstance(found, _NotYet):
            return found
        if runtime.now() >= wall_deadline:
            return None  # timed out (by the clock the deadline was recorded in)
        waiter.deadline = loop_deadline(runtime, wall_deadline)  # the clock may have moved
        return NOT_YET

    result = await wait(Wait(runtime.waits, keys, check,
                             deadline=loop_deadline(runtime, wall_deadline)))
    if isinstance(result, str):
        return _codec.loads(result)
    if not await runtime.store.complete_operation(ctx.workflow_id, function_id, None,
                                                  ctx.epoch):
        # Completed meanwhile, by a send handing its message to this recv (the last check
        # then returns it), or the workflow is no longer ours to run (it stops).
        found = await later(wall_deadline)
        if isinstance(found, str):
            return _codec.loads(found)
        await stop_for_status(ctx)
    return None
