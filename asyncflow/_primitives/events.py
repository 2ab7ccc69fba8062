"""Events: the latest value per key of a workflow, readable by anyone, waited on by NOTIFY.

``set_event`` from a workflow is journaled, from a step it is a plain upsert; ``get_event``
inside a workflow checkpoints the value it read (and its deadline), outside it is a plain wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from .. import _codec
from .._core.telemetry import WORKFLOW_ID
from .._core.wait import EVENT, NOT_YET, TERMINAL, Wait, Waiter, _NotYet, wait
from .._engine.context import StepContext, WorkflowContext
from .._engine.journal import begin, checked, stop_for_status
from .._engine.observe import outside_operation, workflow_operation
from .._engine.runtime import Runtime
from .._errors import WorkflowNotFoundError
from .._recorded import encode_error
from .._status import PENDING, TERMINAL_STATUSES
from .timers import durable_wait

SET_EVENT = "asyncflow.set_event"
GET_EVENT = "asyncflow.get_event"


@workflow_operation(SET_EVENT, arguments={"asyncflow.event.key": 0})
async def set_event_from_workflow(
    ctx: WorkflowContext, function_id: int, key: str, text: str
) -> None:
    if await begin(ctx, function_id, SET_EVENT) is not None:
        return
    await checked(ctx, ctx.runtime.store.journaled_set_event(
        ctx.workflow_id, function_id, SET_EVENT, ctx.epoch, key, text))
    # The committed value is handed to local waiters (no read back for an outside get_event).
    ctx.runtime.waits.wake(EVENT, ctx.workflow_id, (key, text))


async def set_event_from_step(step: StepContext, key: str, text: str) -> None:
    """Staged: the event is set with the step's checkpoint (never by a failed attempt)."""
    store = step.workflow.runtime.store
    workflow_id = step.workflow.workflow_id
    step.stage(lambda: store.set_event(workflow_id, key, text, step.function_id),
               (EVENT, workflow_id))


@outside_operation(GET_EVENT, arguments={WORKFLOW_ID: 0, "asyncflow.event.key": 1})
async def get_event_outside(
    runtime: Runtime, workflow_id: str, key: str, timeout_seconds: float
) -> Any:
    """Wait until the event is set; its value, or ``None`` after ``timeout_seconds``."""

    async def check(waiter: Waiter) -> str | _NotYet:
        handed = waiter.handed.pop((EVENT, workflow_id), None)
        if handed is not None and handed[0] == key:  # set by a commit in this process
            text: str = handed[1]
            return text
        value, _ = await runtime.store.get_event(workflow_id, key)
        return NOT_YET if value is None else value

    deadline = asyncio.get_running_loop().time() + timeout_seconds
    result = await wait(Wait(runtime.waits, ((EVENT, workflow_id),), check,
                             deadline=deadline, retry_unavailable=True))
    return None if isinstance(result, _NotYet) else _codec.loads(result)


@workflow_operation(GET_EVENT, arguments={"asyncflow.target.id": 0, "asyncflow.event.key": 1})
async def get_event_from_workflow(
    ctx: WorkflowContext, function_id: int, target_id: str, key: str,
    timeout_seconds: float,
) -> Any:
    """Read an event inside a workflow; the value read (or the timeout, or that the workflow
    does not exist) is checkpointed."""
    store = ctx.runtime.store
    workflow_id = ctx.workflow_id

    async def gone(exc: WorkflowNotFoundError) -> None:
        # No such workflow (never was, or deleted while waited on): the journal entry records
        # the error, so a recovery or a replay raises it again instead of waiting anew.
        await checked(ctx, store.fail_operation(workflow_id, function_id, encode_error(exc),
                                                ctx.epoch))

    async def first(deadline: float) -> str | _NotYet:
        # Journal the wait with its deadline, completed at once if the event is set.
        try:
            recorded, value = await store.get_event_first(workflow_id, target_id, key,
                                                          function_id, deadline, ctx.epoch)
        except WorkflowNotFoundError as exc:
            await gone(exc)
            raise
        if not recorded:
            await stop_for_status(ctx)
        return NOT_YET if value is None else value

    async def later(_deadline: float) -> str | _NotYet:
        try:
            value, waiter_status = await store.get_event(target_id, key, workflow_id)
        except WorkflowNotFoundError as exc:
            await gone(exc)
            raise
        if waiter_status != PENDING:
            await stop_for_status(ctx)
        if value is None:
            return NOT_YET
        await checked(ctx, store.complete_operation(workflow_id, function_id, value, ctx.epoch))
        return value

    keys = ((EVENT, target_id), (TERMINAL, workflow_id))
    return await durable_wait(ctx, function_id, GET_EVENT, timeout_seconds, keys, first, later)


async def watch(runtime: Runtime, workflow_id: str, key: str) -> AsyncIterator[Any]:
    """Yield the event's value now (if set) and after every change, until the workflow ends.

    Between two checks several sets may land: the latest is yielded (never a lost final value).
    After the workflow ends, a value set before its end is still yielded, then the iteration
    stops. A listener reconnect wakes the watcher, which re-reads.
    """
    seen = 0
    ended = False

    async def check(_waiter: Waiter) -> tuple[str | None, bool] | _NotYet:
        nonlocal seen, ended
        status, value, version = await runtime.store.watch_event(workflow_id, key)
        ended = status in TERMINAL_STATUSES  # not PENDING, ENQUEUED or DELAYED
        if version != seen and value is not None:
            seen = version
            return value, ended
        return (None, True) if ended else NOT_YET

    keys = ((EVENT, workflow_id), (TERMINAL, workflow_id))
    spec = Wait(runtime.waits, keys, check, retry_unavailable=True)
    with runtime.waits.watch(*keys) as waiter:  # registered once for the whole watch
        first = True
        while True:
            result = await wait(spec, waiter, park_first=not first)
            first = False
            assert not isinstance(result, _NotYet)
            value, finished = result
            if value is not None:
                yield _codec.loads(value)
            if finished:
                return
