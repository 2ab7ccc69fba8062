"""Messages: per-(destination, topic) FIFO mailboxes with exactly-once receipt.

``send`` has three variants side by side — journaled from a workflow, keyed by position from a
step, plain from outside — and ``recv`` (workflows only) is one wait on the mailbox.
Arguments are validated and encoded by the caller (``_front.api``) before a function id is reserved,
so bad input raises at the call and writes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from .. import _codec
from .._core.wait import MESSAGE, NOT_YET, TERMINAL, _NotYet, hand_over
from .._engine.context import StepContext, WorkflowContext
from .._engine.journal import begin, record, replayed_value, stop_for_status
from .._engine.observe import outside_operation, workflow_operation
from .._engine.runtime import Runtime
from .._errors import WorkflowNotFoundError, _ExecutionConflict
from .._recorded import encode_error
from .._status import PENDING, Delivery
from .._storage.store import Send, not_found
from .timers import durable_wait

T = TypeVar("T")

SEND = "asyncflow.send"
RECV = "asyncflow.recv"
# Span attributes of a send: (attribute, index of the argument after ctx and function id).
_SENT = {"asyncflow.destination.id": 0, "asyncflow.topic": 2}


@outside_operation(SEND, "producer", _SENT)
async def send_outside(
    runtime: Runtime, destination_id: str, text: str, topic: str | None, key: str | None
) -> Delivery:
    """A send from outside any workflow (an app's or client's method): what became of it."""
    telemetry = runtime.telemetry
    traceparent = None if telemetry is None else telemetry.traceparent()
    (delivery, handed), awaited = await _in_flight(runtime, destination_id,
                                                   runtime.store.send_message(
                                                       destination_id, topic, text, key,
                                                       traceparent))
    woken = delivery is not Delivery.DUPLICATE and _wake(runtime, destination_id, handed, text,
                                                         traceparent)
    if woken or awaited:
        await hand_over()  # the woken recv goes first
    return delivery


def _wake(runtime: Runtime, destination_id: str, handed: int | None, text: str,
          traceparent: str | None) -> bool:
    """Wake the destination's recvs in this process; a message handed to recv #``handed``
    goes to its waiter with the wake-up, with the send's trace context (it need not read its
    entry back)."""
    value = None if handed is None else (handed, text, traceparent)
    return runtime.waits.wake(MESSAGE, destination_id, value)


async def _in_flight(runtime: Runtime, destination_id: str,
                     statement: Awaitable[T]) -> tuple[T, bool]:
    """Await a send's ``statement`` marked in flight to ``destination_id`` (a recv of that
    workflow starting meanwhile waits for it: see ``_core.inflight``): its result, and whether a
    recv waited (the sender then hands over, so that recv goes first)."""
    # A recv of that workflow journaling itself right now (see _core.inflight): wait for its
    # entry, so that this send hands the message to it.
    await runtime.opening.settled(destination_id)
    write = runtime.sends.begin(destination_id)
    try:
        result = await statement
    finally:
        runtime.sends.end(destination_id, write)
    return result, write.awaited


@workflow_operation(SEND, "producer", _SENT)
async def send_from_workflow(
    ctx: WorkflowContext,
    function_id: int,
    destination_id: str,
    text: str,
    topic: str | None,
    idempotency_key: str | None,
) -> None:
    """A journaled send: delivered exactly once across recoveries. A send to a workflow that
    does not exist records its error, raised again by every replay (a destination created later
    does not change what the workflow did)."""
    runtime = ctx.runtime
    recorded = await begin(ctx, function_id, SEND)
    if recorded is not None:
        replayed_value(recorded)  # raises a recorded WorkflowNotFoundError again
        return
    store = runtime.store
    telemetry = runtime.telemetry
    traceparent = None if telemetry is None else telemetry.traceparent()
    awaited = False  # whether a recv of this process waited for this send (it goes first)
    handed: int | None = None  # the destination's recv the message was handed to, if any
    try:
        if idempotency_key is None:
            # Journal entry and delivery in one statement.
            (journaled, handed), awaited = await _in_flight(
                runtime, destination_id, store.journaled_send(
                    ctx.workflow_id, function_id, SEND, ctx.epoch, destination_id, topic, text,
                    traceparent))
            if not journaled:
                await stop_for_status(ctx)
        else:
            # Rare: a caller-chosen key on top of the journal; both in one transaction.
            async with store.storage.transaction():
                await record(ctx, function_id, SEND,
                             output=_described(destination_id, topic, text))
                await store.send_message(destination_id, topic, text, idempotency_key,
                                         traceparent)
    except WorkflowNotFoundError as exc:
        await record(ctx, function_id, SEND, output=_described(destination_id, topic, text),
                     error=encode_error(exc))
        raise
    if _wake(runtime, destination_id, handed, text, traceparent) or awaited:
        await hand_over()  # the woken recv goes first


def _described(destination_id: str, topic: str | None, text: str) -> str:
    """A send's journal output (as JOURNALED_SEND writes it): what was sent where, for the
    dashboard's timeline; a replay never reads it."""
    return (f'{{"to":{_codec.dumps(destination_id)},"topic":{_codec.dumps(topic)},'
            f'"message":{text}}}')


async def send_from_step(
    step: StepContext, destination_id: str, text: str, topic: str | None, key: str | None
) -> None:
    """A send inside a step is staged: delivered with the step's checkpoint (so a failed attempt
    sends nothing), keyed by the step's position (so it is delivered once)."""
    seq = step.next_seq()
    if key is None:
        key = f"asyncflow:{step.workflow.workflow_id}:{step.function_id}:{seq}"
    runtime = step.workflow.runtime
    store = runtime.store
    if not await store.workflow_exists(destination_id):  # fail at the call, as unstaged sends do
        raise not_found(destination_id)
    chosen = key
    # The trace context of the step's attempt (the send itself is delivered at its checkpoint).
    traceparent = None if runtime.telemetry is None else runtime.telemetry.traceparent()
    step.stage(lambda: store.send_message(destination_id, topic, text, chosen, traceparent),
               (MESSAGE, destination_id))


# -- send_many: many destinations in one statement ------------------------------------------

SEND_MANY = "asyncflow.send_many"
#: Messages per statement of a send_many.
SEND_MANY_CHUNK = 1000


@outside_operation(SEND_MANY, "producer")
async def send_many_outside(runtime: Runtime, ops: list[Send]) -> list[bool]:
    """Deliver ``ops`` (destination, topic, text, idempotency key) in statements of
    :data:`SEND_MANY_CHUNK`; per message, whether its destination exists."""
    telemetry = runtime.telemetry
    traceparent = None if telemetry is None else telemetry.traceparent()
    delivered: list[bool] = []
    for start in range(0, len(ops), SEND_MANY_CHUNK):
        chunk = ops[start:start + SEND_MANY_CHUNK]
        outcomes = await runtime.store.send_many(chunk, traceparent)
        for op, found in zip(chunk, outcomes, strict=True):
            if found:
                runtime.waits.wake(MESSAGE, op[0])
        delivered.extend(outcomes)
    return delivered


@workflow_operation(SEND_MANY, "producer")
async def send_many_from_workflow(
    ctx: WorkflowContext, function_id: int, ops: list[Send]
) -> list[bool]:
    """A journaled send_many: the messages and the journal entry (which records the outcomes)
    commit in one transaction, guarded by the workflow being PENDING."""
    recorded = await begin(ctx, function_id, SEND_MANY)
    if recorded is not None:
        outcomes: list[bool] = _codec.loads(recorded.output or "[]")
        return outcomes
    store = ctx.runtime.store
    telemetry = ctx.runtime.telemetry
    traceparent = None if telemetry is None else telemetry.traceparent()
    attempts = 3
    while True:
        attempts -= 1
        try:
            async with store.storage.transaction():
                delivered: list[bool] = []
                for start in range(0, len(ops), SEND_MANY_CHUNK):
                    delivered.extend(await store.send_many_once(
                        ops[start:start + SEND_MANY_CHUNK], traceparent))
                await record(ctx, function_id, SEND_MANY, output=_codec.dumps(delivered))
            break
        except WorkflowNotFoundError:  # a destination deleted meanwhile: run it again
            if attempts == 0:
                raise
    for op, found in zip(ops, delivered, strict=True):
        if found:
            ctx.runtime.waits.wake(MESSAGE, op[0])
    return delivered


@workflow_operation(RECV, "consumer", {"asyncflow.topic": 0})
async def recv(
    ctx: WorkflowContext, function_id: int, topic: str | None, timeout_seconds: float
) -> Any:
    """Take the next message of ``topic`` into the journal, waiting up to ``timeout_seconds``
    (the deadline is checkpointed first, so a recovery waits only for what is left)."""
    store = ctx.runtime.store
    sends = ctx.runtime.sends
    workflow_id = ctx.workflow_id

    telemetry = ctx.runtime.telemetry

    async def first(deadline: float) -> str | _NotYet:
        # A send of this process to this workflow being committed right now: its message is
        # about to be there, and taken in this statement (see _core.inflight).
        await sends.settled(workflow_id)
        # Journal the recv with its deadline and take a waiting message, in one statement. A
        # send of this process starting meanwhile waits for it, and hands its message over.
        opening = ctx.runtime.opening.begin(workflow_id)
        try:
            recorded, message, sender = await store.recv_first(workflow_id, topic, function_id,
                                                               deadline, ctx.epoch)
        finally:
            ctx.runtime.opening.end(workflow_id, opening)
        if not recorded:
            await stop_for_status(ctx)
        if message is None:
            return NOT_YET
        if telemetry is not None:
            telemetry.link(sender)  # the recv's span links to the send's
        return message

    async def later(_deadline: float) -> str | _NotYet:
        status, message, consumed, sender, handed = await store.recv_next(
            workflow_id, topic, function_id, ctx.epoch)
        if status != PENDING:
            await stop_for_status(ctx)
        if handed is not None:  # a send completed the entry with its message (still ours)
            if telemetry is not None:
                telemetry.link(sender)
            return handed
        if message is None:
            return NOT_YET
        if not consumed:
            raise _ExecutionConflict(f"recv #{function_id} completed elsewhere")
        if telemetry is not None:
            telemetry.link(sender)
        return message

    def handed(value: tuple[int, str, str | None]) -> str | None:
        """A send of this process handed this recv its message: the committed entry's value."""
        if value[0] != function_id:
            return None
        if telemetry is not None:
            telemetry.link(value[2])
        return value[1]

    keys = ((MESSAGE, workflow_id), (TERMINAL, workflow_id))
    return await durable_wait(ctx, function_id, RECV, timeout_seconds, keys, first, later,
                              handed)
