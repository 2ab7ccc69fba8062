"""Durable sleep, and the conversion of recorded wall-clock deadlines to event-loop time."""

from __future__ import annotations

import asyncio

from . import _codec
from ._context import WorkflowContext
from ._journal import begin, record, stop_for_status
from ._runtime import Runtime
from ._status import PENDING
from ._wait import NOT_YET, TERMINAL, Wait, Waiter, _NotYet, wait

SLEEP = "asyncflow.sleep"


def loop_deadline(runtime: Runtime, wall_deadline: float) -> float:
    """The event-loop time at which the runtime's clock reaches ``wall_deadline``."""
    return asyncio.get_running_loop().time() + (wall_deadline - runtime.now())


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
