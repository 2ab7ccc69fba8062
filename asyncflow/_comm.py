"""Messages, events, streams and durable sleep, as journaled operations of a running workflow.

Arguments are validated and encoded by the caller (``_api``) before a function id is reserved,
so bad input raises at the call and writes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import _codec, _notify
from . import _queries as Q
from ._context import StepContext, WorkflowContext
from ._errors import (
    DatabaseUnavailableError,
    StreamClosedError,
    WorkflowNotFoundError,
    _ExecutionConflict,
)
from ._handle import PENDING
from ._journal import ensure_running, record, stop_for_status
from ._storage import Tx

SEND = "asyncflow.send"
RECV = "asyncflow.recv"
SET_EVENT = "asyncflow.set_event"
GET_EVENT = "asyncflow.get_event"
WRITE_STREAM = "asyncflow.write_stream"
CLOSE_STREAM = "asyncflow.close_stream"
SLEEP = "asyncflow.sleep"


async def _journaled(
    ctx: WorkflowContext, function_id: int, name: str, effect: Callable[[Tx], Awaitable[None]]
) -> bool:
    """Record the operation and apply its effect in one transaction; False when replayed."""
    if ctx.replay(function_id, name) is not None:
        return False
    await ensure_running(ctx)
    try:
        async with ctx.app.storage.transaction() as tx:
            await record(ctx, function_id, name, tx=tx)
            await effect(tx)
    except DatabaseUnavailableError:
        ctx.db_failed = True
        raise
    return True


# -- messages -----------------------------------------------------------------------------------


async def send(
    ctx: WorkflowContext,
    function_id: int,
    destination_id: str,
    text: str,
    topic: str | None,
    idempotency_key: str | None,
) -> None:
    storage = ctx.app.storage

    async def effect(tx: Tx) -> None:
        if idempotency_key is None:
            await tx.execute(Q.SEND_MESSAGE, destination_id, topic, text, storage.channel)
        else:
            await tx.execute(
                Q.SEND_MESSAGE_ONCE, destination_id, topic, text, storage.channel, idempotency_key
            )

    if await _journaled(ctx, function_id, SEND, effect):
        ctx.app._registry.wake(_notify.MESSAGE, destination_id)


async def send_from_step(
    step: StepContext, destination_id: str, text: str, topic: str | None, key: str | None
) -> None:
    """A send inside a step is made exactly-once by a key derived from the step's position."""
    seq = step.next_seq()
    if key is None:
        key = f"asyncflow:{step.workflow.workflow_id}:{step.function_id}:{seq}"
    app = step.workflow.app
    storage = app.storage
    await storage.execute(
        Q.SEND_MESSAGE_ONCE, destination_id, topic, text, storage.channel, key
    )
    app._registry.wake(_notify.MESSAGE, destination_id)


async def _begin_wait(
    ctx: WorkflowContext, function_id: int, name: str, wait_seconds: float
) -> tuple[Any, float | None]:
    """Replay a finished wait, or checkpoint its deadline (wall clock) before waiting.

    Returns ``(value, None)`` when the outcome is recorded, else ``(None, deadline)``.
    """
    recorded = ctx.replay(function_id, name)
    if recorded is not None:
        if recorded.completed:
            value = None if recorded.output is None else _codec.loads(recorded.output)
            return value, None
        assert recorded.deadline is not None
        return None, recorded.deadline
    await ensure_running(ctx)
    deadline = time.time() + wait_seconds
    await record(ctx, function_id, name, completed=False, deadline=deadline)
    return None, deadline


async def _finish_wait(ctx: WorkflowContext, function_id: int, output: str | None) -> None:
    result = await ctx.app.storage.execute(
        Q.COMPLETE_OPERATION, ctx.workflow_id, function_id, output
    )
    if result.endswith(" 0"):
        await stop_for_status(ctx)


def _loop_deadline(wall_deadline: float) -> float:
    return asyncio.get_running_loop().time() + (wall_deadline - time.time())


async def recv(
    ctx: WorkflowContext, function_id: int, topic: str | None, wait_seconds: float
) -> Any:
    try:
        value, wall_deadline = await _begin_wait(ctx, function_id, RECV, wait_seconds)
        if wall_deadline is None:
            return value
        app = ctx.app
        storage = app.storage
        query = Q.RECV_NO_TOPIC if topic is None else Q.RECV_TOPIC
        deadline = _loop_deadline(wall_deadline)
        keys = ((_notify.MESSAGE, ctx.workflow_id), (_notify.TERMINAL, ctx.workflow_id))
        with app._registry.watch(*keys) as event:
            while True:
                event.clear()
                row = await storage.fetchrow(query, ctx.workflow_id, topic, function_id)
                assert row is not None
                if row["status"] != PENDING:
                    await stop_for_status(ctx)
                if row["message"] is not None:
                    if not row["consumed"]:
                        raise _ExecutionConflict(f"recv #{function_id} completed elsewhere")
                    return _codec.loads(row["message"])
                if time.time() >= wall_deadline:
                    await _finish_wait(ctx, function_id, None)
                    return None
                await app._registry.park(event, deadline)
    except DatabaseUnavailableError:
        ctx.db_failed = True
        raise


# -- events -------------------------------------------------------------------------------------


async def set_event(ctx: WorkflowContext, function_id: int, key: str, text: str) -> None:
    channel = ctx.app.storage.channel

    async def effect(tx: Tx) -> None:
        await tx.execute(Q.SET_EVENT, ctx.workflow_id, key, text, channel)

    if await _journaled(ctx, function_id, SET_EVENT, effect):
        ctx.app._registry.wake(_notify.EVENT, ctx.workflow_id)


async def set_event_from_step(step: StepContext, key: str, text: str) -> None:
    app = step.workflow.app
    await app.storage.execute(Q.SET_EVENT, step.workflow.workflow_id, key, text,
                              app.storage.channel)
    app._registry.wake(_notify.EVENT, step.workflow.workflow_id)


async def get_event(
    ctx: WorkflowContext, function_id: int, target_id: str, key: str, wait_seconds: float
) -> Any:
    try:
        value, wall_deadline = await _begin_wait(ctx, function_id, GET_EVENT, wait_seconds)
        if wall_deadline is None:
            return value
        app = ctx.app
        storage = app.storage
        deadline = _loop_deadline(wall_deadline)
        keys = ((_notify.EVENT, target_id), (_notify.TERMINAL, ctx.workflow_id))
        with app._registry.watch(*keys) as event:
            while True:
                event.clear()
                row = await storage.fetchrow(Q.GET_EVENT, target_id, key, ctx.workflow_id)
                assert row is not None
                if row["waiter_status"] != PENDING:
                    await stop_for_status(ctx)
                if not row["found"]:
                    raise WorkflowNotFoundError(f"no workflow with id {target_id!r}")
                if row["value"] is not None:
                    await _finish_wait(ctx, function_id, row["value"])
                    return _codec.loads(row["value"])
                if time.time() >= wall_deadline:
                    await _finish_wait(ctx, function_id, None)
                    return None
                await app._registry.park(event, deadline)
    except DatabaseUnavailableError:
        ctx.db_failed = True
        raise


# -- streams ------------------------------------------------------------------------------------


async def _write(
    target: Tx | Any, workflow_id: str, key: str, text: str, fid: int, seq: int, channel: str
) -> None:
    row = await target.fetchrow(Q.WRITE_STREAM, workflow_id, key, text, fid, seq, channel)
    if row is None or row["offset"] is None:
        raise StreamClosedError(
            f"stream {key!r} of workflow {workflow_id!r} is closed; nothing more can be written"
        )


async def write_stream(ctx: WorkflowContext, function_id: int, key: str, text: str) -> None:
    channel = ctx.app.storage.channel

    async def effect(tx: Tx) -> None:
        await _write(tx, ctx.workflow_id, key, text, function_id, 0, channel)

    if await _journaled(ctx, function_id, WRITE_STREAM, effect):
        ctx.app._registry.wake(_notify.STREAM, ctx.workflow_id)


async def write_stream_from_step(step: StepContext, key: str, text: str) -> None:
    """Keyed by (step function id, write number): a retried step overwrites, never appends."""
    app = step.workflow.app
    seq = step.next_seq()
    await _write(app.storage, step.workflow.workflow_id, key, text, step.function_id, seq,
                 app.storage.channel)
    app._registry.wake(_notify.STREAM, step.workflow.workflow_id)


async def close_stream(ctx: WorkflowContext, function_id: int, key: str) -> None:
    channel = ctx.app.storage.channel

    async def effect(tx: Tx) -> None:
        await tx.execute(Q.CLOSE_STREAM, ctx.workflow_id, key, channel)

    if await _journaled(ctx, function_id, CLOSE_STREAM, effect):
        ctx.app._registry.wake(_notify.STREAM, ctx.workflow_id)


async def close_stream_from_step(step: StepContext, key: str) -> None:
    app = step.workflow.app
    await app.storage.execute(Q.CLOSE_STREAM, step.workflow.workflow_id, key, app.storage.channel)
    app._registry.wake(_notify.STREAM, step.workflow.workflow_id)


# -- durable sleep ------------------------------------------------------------------------------


async def sleep(ctx: WorkflowContext, function_id: int, seconds: float) -> None:
    """Checkpoint the wake-up time, then wait for it; cancellation wakes the sleeper at once."""
    try:
        recorded = ctx.replay(function_id, SLEEP)
        if recorded is not None:
            assert recorded.output is not None
            wake_at = float(_codec.loads(recorded.output))
        else:
            await ensure_running(ctx)
            wake_at = time.time() + seconds
            await record(ctx, function_id, SLEEP, output=_codec.dumps(wake_at))
        app = ctx.app
        deadline = _loop_deadline(wake_at)
        with app._registry.watch((_notify.TERMINAL, ctx.workflow_id)) as event:
            while time.time() < wake_at:
                event.clear()
                status = await app.storage.fetchval(Q.WORKFLOW_STATE, ctx.workflow_id)
                if status != PENDING:
                    await stop_for_status(ctx)
                await app._registry.park(event, deadline)
    except DatabaseUnavailableError:
        ctx.db_failed = True
        raise
