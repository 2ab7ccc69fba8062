"""Messages, events, streams and durable sleep, as journaled operations of a running workflow.

Arguments are validated and encoded by the caller (``_api``) before a function id is reserved,
so bad input raises at the call and writes nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import _codec, _notify
from . import _queries as Q
from ._context import StepContext, WorkflowContext
from ._errors import (
    DatabaseUnavailableError,
    StepFailedError,
    StreamClosedError,
    WorkflowNotFoundError,
    _ExecutionConflict,
)
from ._handle import PENDING
from ._journal import ensure_running, record, stop_for_status
from ._storage import Row, Storage, UniqueViolation

SEND = "asyncflow.send"
RECV = "asyncflow.recv"
SET_EVENT = "asyncflow.set_event"
GET_EVENT = "asyncflow.get_event"
WRITE_STREAM = "asyncflow.write_stream"
CLOSE_STREAM = "asyncflow.close_stream"
SLEEP = "asyncflow.sleep"


async def _journaled(
    ctx: WorkflowContext, function_id: int, name: str, template: str, *args: Any
) -> Row | None:
    """Journal the operation and apply its effect in one statement (``_queries.JOURNALED_*``).

    Returns the statement's row, or ``None`` when the operation is replayed from the journal
    (a recorded failure is raised again).
    """
    recorded = ctx.replay(function_id, name)
    if recorded is not None:
        if recorded.error is not None:
            raise _codec.decode_error(recorded.error, StepFailedError)
        return None
    await ensure_running(ctx)
    try:
        row = await ctx.app.storage.fetchrow(template, ctx.workflow_id, function_id, name, *args)
    except UniqueViolation:
        raise _ExecutionConflict(f"operation #{function_id} recorded elsewhere") from None
    except DatabaseUnavailableError:
        ctx.db_failed = True
        raise
    assert row is not None
    if not row["recorded"]:
        await stop_for_status(ctx)
    return row


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
    if idempotency_key is not None:
        # Rare: a caller-chosen key on top of the journal. Journal entry + keyed send in one
        # transaction.
        if ctx.replay(function_id, SEND) is not None:
            return
        await ensure_running(ctx)
        try:
            async with storage.transaction() as tx:
                await record(ctx, function_id, SEND, tx=tx)
                await tx.execute(Q.SEND_MESSAGE_ONCE, destination_id, topic, text,
                                 storage.channel, idempotency_key)
        except DatabaseUnavailableError:
            ctx.db_failed = True
            raise
    elif await _journaled(ctx, function_id, SEND, Q.JOURNALED_SEND, destination_id, topic,
                          text, storage.channel) is None:
        return
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
        app = ctx.app
        storage = app.storage
        recorded = ctx.replay(function_id, RECV)
        if recorded is not None and recorded.completed:
            return None if recorded.output is None else _codec.loads(recorded.output)
        keys = ((_notify.MESSAGE, ctx.workflow_id), (_notify.TERMINAL, ctx.workflow_id))
        with app._registry.watch(*keys) as event:
            if recorded is not None:
                assert recorded.deadline is not None
                wall_deadline = recorded.deadline
                event.set()  # check the mailbox first
            else:
                # First attempt: journal the recv with its deadline and take a waiting message,
                # in one statement.
                await ensure_running(ctx)
                wall_deadline = time.time() + wait_seconds
                first = Q.RECV_FIRST_NO_TOPIC if topic is None else Q.RECV_FIRST_TOPIC
                try:
                    row = await storage.fetchrow(
                        first, ctx.workflow_id, topic, function_id, wall_deadline
                    )
                except UniqueViolation:
                    raise _ExecutionConflict(f"recv #{function_id} recorded elsewhere") from None
                assert row is not None
                if not row["recorded"]:
                    await stop_for_status(ctx)
                if row["consumed"]:
                    return _codec.loads(row["message"])
            query = Q.RECV_NO_TOPIC if topic is None else Q.RECV_TOPIC
            deadline = _loop_deadline(wall_deadline)
            loop = asyncio.get_running_loop()
            while True:
                if event.is_set():
                    event.clear()
                    row = await storage.fetchrow(query, ctx.workflow_id, topic, function_id)
                    assert row is not None
                    if row["status"] != PENDING:
                        await stop_for_status(ctx)
                    if row["message"] is not None:
                        if not row["consumed"]:
                            raise _ExecutionConflict(f"recv #{function_id} completed elsewhere")
                        return _codec.loads(row["message"])
                if loop.time() >= deadline or time.time() >= wall_deadline:
                    await _finish_wait(ctx, function_id, None)
                    return None
                await app._registry.park(event, deadline)
    except DatabaseUnavailableError:
        ctx.db_failed = True
        raise


# -- events -------------------------------------------------------------------------------------


async def set_event(ctx: WorkflowContext, function_id: int, key: str, text: str) -> None:
    channel = ctx.app.storage.channel
    if await _journaled(ctx, function_id, SET_EVENT, Q.JOURNALED_SET_EVENT, key, text,
                        channel) is not None:
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
        app = ctx.app
        storage = app.storage
        recorded = ctx.replay(function_id, GET_EVENT)
        if recorded is not None and recorded.completed:
            return None if recorded.output is None else _codec.loads(recorded.output)
        keys = ((_notify.EVENT, target_id), (_notify.TERMINAL, ctx.workflow_id))
        with app._registry.watch(*keys) as event:
            if recorded is not None:
                assert recorded.deadline is not None
                wall_deadline = recorded.deadline
                event.set()
            else:
                await ensure_running(ctx)
                wall_deadline = time.time() + wait_seconds
                try:
                    row = await storage.fetchrow(
                        Q.GET_EVENT_FIRST, ctx.workflow_id, target_id, key, function_id,
                        wall_deadline,
                    )
                except UniqueViolation:
                    raise _ExecutionConflict(
                        f"get_event #{function_id} recorded elsewhere"
                    ) from None
                assert row is not None
                if not row["recorded"]:
                    await stop_for_status(ctx)
                if not row["found"]:
                    raise WorkflowNotFoundError(f"no workflow with id {target_id!r}")
                if row["value"] is not None:
                    return _codec.loads(row["value"])
            deadline = _loop_deadline(wall_deadline)
            loop = asyncio.get_running_loop()
            while True:
                if event.is_set():
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
                if loop.time() >= deadline or time.time() >= wall_deadline:
                    await _finish_wait(ctx, function_id, None)
                    return None
                await app._registry.park(event, deadline)
    except DatabaseUnavailableError:
        ctx.db_failed = True
        raise


# -- streams ------------------------------------------------------------------------------------


def _closed_error(workflow_id: str, key: str) -> StreamClosedError:
    return StreamClosedError(
        f"stream {key!r} of workflow {workflow_id!r} is closed; nothing more can be written"
    )


async def _write(
    storage: Storage, workflow_id: str, key: str, text: str, fid: int, seq: int, channel: str
) -> None:
    row = await storage.fetchrow(Q.WRITE_STREAM, workflow_id, key, text, fid, seq, channel)
    if row is None or row["offset"] is None:
        raise _closed_error(workflow_id, key)


async def write_stream(ctx: WorkflowContext, function_id: int, key: str, text: str) -> None:
    storage = ctx.app.storage
    row = await _journaled(ctx, function_id, WRITE_STREAM, Q.JOURNALED_WRITE_STREAM, key, text,
                           storage.channel)
    if row is None:
        return
    if row["offset"] is None:
        # Journaled, but the stream was closed: record the failure so a replay raises it too.
        error = _closed_error(ctx.workflow_id, key)
        await storage.execute(Q.SET_OPERATION_ERROR, ctx.workflow_id, function_id,
                              _codec.encode_error(error))
        raise error
    ctx.app._registry.wake(_notify.STREAM, ctx.workflow_id)


async def write_stream_from_step(step: StepContext, key: str, text: str) -> None:
    """Keyed by (step function id, write number): a retried step overwrites, never appends."""
    app = step.workflow.app
    seq = step.next_seq()
    await _write(app.storage, step.workflow.workflow_id, key, text, step.function_id, seq,
                 app.storage.channel)
    app._registry.wake(_notify.STREAM, step.workflow.workflow_id)


async def close_stream(ctx: WorkflowContext, function_id: int, key: str) -> None:
    if await _journaled(ctx, function_id, CLOSE_STREAM, Q.JOURNALED_CLOSE_STREAM, key,
                        ctx.app.storage.channel) is not None:
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
