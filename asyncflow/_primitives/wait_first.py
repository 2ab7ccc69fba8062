"""Durable wait-for-any: the first of several branches — a message, an event, a workflow's
result, a timer — to be ready wins.

Inside a workflow it is one journaled operation: the winning branch and its value are recorded
with the entry, so a replay takes the same branch with the same value; a message is consumed
only when its branch wins, atomically with the journal entry. Outside a workflow it waits on
events, workflow results and timers without journaling. No polling: one wait on the union of
the branches' keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import _codec
from .._core.wait import EVENT, MESSAGE, NOT_YET, TERMINAL, Key, Wait, Waiter, _NotYet, wait
from .._engine.context import WorkflowContext
from .._engine.journal import begin, checked, record, stop_for_status
from .._engine.observe import workflow_operation
from .._engine.runtime import Runtime
from .._errors import InvalidArgumentError, NotInWorkflowError, _ExecutionConflict
from .._signature import reader
from .._status import PENDING
from .._storage.store import Outcome
from .results import finished_outcome, outcome_value
from .timers import loop_deadline

WAIT_FIRST = "asyncflow.wait_first"


@dataclass(frozen=True, slots=True)
class Branch:
    """One thing :func:`asyncflow.wait_first` can wait for; make it with
    :func:`asyncflow.message`, :func:`asyncflow.event`, :func:`asyncflow.result` or
    :func:`asyncflow.timer`."""

    kind: str  # "message", "event", "result", "timer"
    topic: str | None = None
    workflow_id: str | None = None
    key: str | None = None
    seconds: float | None = None
    #: Decodes the branch's value by the ``type=`` it was made with (``None``: plain JSON).
    read: Callable[[Any], Any] | None = field(default=None, compare=False, repr=False)

    def value(self, stored: Any) -> Any:
        """The branch's stored value, decoded by its ``type=``."""
        return stored if self.read is None else self.read(stored)


@dataclass(frozen=True, slots=True)
class Fired:
    """What :func:`asyncflow.wait_first` returns: the ``index`` of the branch that fired (in
    the order given), the ``branch`` itself, and its ``value`` (the message, the event's value,
    the workflow's result, or ``None`` for a timer)."""

    index: int
    branch: Branch
    value: Any


def message(topic: str | None = None, *, type: Any = None) -> Branch:
    """A :func:`wait_first` branch: the next message on ``topic`` to the running workflow.
    ``type``: the annotation to decode the message by (without it: plain JSON)."""
    _codec.check_name(topic, "topic", optional=True)
    return Branch("message", topic=topic,
                  read=reader(type, f"the message received on topic {topic!r}"))


def event(workflow_id: str, key: str, *, type: Any = None) -> Branch:
    """A :func:`wait_first` branch: event ``key`` of workflow ``workflow_id`` is set.
    ``type``: the annotation to decode the value by (without it: plain JSON)."""
    _codec.check_id(workflow_id)
    _codec.check_name(key, "key")
    return Branch("event", workflow_id=workflow_id, key=key,
                  read=reader(type, f"event {key!r} of workflow {workflow_id!r}"))


def result(handle_or_id: Any, *, type: Any = None) -> Branch:
    """A :func:`wait_first` branch: the workflow (a handle or an id) has finished; its value is
    the workflow's result (its error is raised by ``wait_first``). ``type``: the annotation to
    decode the result by (default: the handle's, from the workflow function it started)."""
    workflow_id = getattr(handle_or_id, "workflow_id", handle_or_id)
    _codec.check_id(workflow_id)
    read = reader(type, f"the result of workflow {workflow_id!r}")
    types = getattr(handle_or_id, "_types", None)
    if read is None and types is not None:
        read = types.decode_result
    return Branch("result", workflow_id=workflow_id, read=read)


def timer(seconds: float) -> Branch:
    """A :func:`wait_first` branch: ``seconds`` have passed (durable inside a workflow)."""
    return Branch("timer", seconds=_codec.check_timeout(seconds, "seconds"))


def check_branches(branches: Sequence[Branch], *, in_workflow: bool) -> tuple[Branch, ...]:
    if not branches:
        raise InvalidArgumentError("wait_first() needs at least one branch")
    for branch in branches:
        if not isinstance(branch, Branch):
            raise InvalidArgumentError(
                f"wait_first() takes branches made by asyncflow.message(), event(), result() "
                f"or timer(), not {branch!r}"
            )
        if branch.kind == "message" and not in_workflow:
            raise NotInWorkflowError(
                "asyncflow.message() branches can only be waited on inside a workflow (they "
                "receive from the running workflow's mailbox)"
            )
    return tuple(branches)


def _keys(branches: Sequence[Branch], own_id: str | None) -> tuple[Key, ...]:
    keys: set[Key] = set()
    for branch in branches:
        if branch.kind == "message":
            assert own_id is not None
            keys.add((MESSAGE, own_id))
        elif branch.kind == "event":
            assert branch.workflow_id is not None
            keys.add((EVENT, branch.workflow_id))
        elif branch.kind == "result":
            assert branch.workflow_id is not None
            keys.add((TERMINAL, branch.workflow_id))
    if own_id is not None:
        keys.add((TERMINAL, own_id))
    return tuple(sorted(keys))


def _timer_index(branches: Sequence[Branch]) -> int | None:
    """The timer branch that fires first (the earliest; the first listed on a tie)."""
    timers = [(b.seconds, i) for i, b in enumerate(branches) if b.kind == "timer"]
    return min(timers)[1] if timers else None


def _fired(branches: Sequence[Branch], recorded: dict[str, Any], workflow_id: str) -> Fired:
    index = recorded["index"]
    branch = branches[index]
    if "outcome" in recorded:
        outcome = Outcome(**recorded["outcome"])
        return Fired(index, branch, outcome_value(branch.workflow_id or workflow_id, outcome,
                                                  branch.read))
    return Fired(index, branch, branch.value(recorded.get("value")))


async def wait_first_outside(runtime: Runtime, branches: Sequence[Branch]) -> Fired:
    """Wait for the first ready branch without journaling (events, results and timers)."""
    timer_index = _timer_index(branches)
    loop = asyncio.get_running_loop()
    deadline = None
    if timer_index is not None:
        seconds = branches[timer_index].seconds
        assert seconds is not None
        deadline = loop.time() + seconds
    store = runtime.store

    async def check(waiter: Waiter) -> Fired | _NotYet:
        for index, branch in enumerate(branches):
            if branch.kind == "event":
                assert branch.workflow_id is not None and branch.key is not None
                value, _ = await store.get_event(branch.workflow_id, branch.key)
                if value is not None:
                    return Fired(index, branch, branch.value(_codec.loads(value)))
            elif branch.kind == "result":
                assert branch.workflow_id is not None
                outcome = await finished_outcome(runtime, branch.workflow_id, waiter)
                if not isinstance(outcome, _NotYet):
                    return Fired(index, branch, outcome_value(branch.workflow_id, outcome,
                                                              branch.read))
        if deadline is not None and loop.time() >= deadline:
            assert timer_index is not None
            return Fired(timer_index, branches[timer_index], None)
        return NOT_YET

    fired = await wait(Wait(runtime.waits, _keys(branches, None), check, deadline=deadline,
                            retry_unavailable=True))
    assert not isinstance(fired, _NotYet)
    return fired


@workflow_operation(WAIT_FIRST)
async def wait_first_in_workflow(
    ctx: WorkflowContext, function_id: int, branches: Sequence[Branch]
) -> Fired:
    """The journaled wait-for-any of a workflow body."""
    recorded = await begin(ctx, function_id, WAIT_FIRST)
    if recorded is not None and recorded.completed:
        assert recorded.output is not None
        return _fired(branches, _codec.loads(recorded.output), ctx.workflow_id)
    timer_index = _timer_index(branches)
    wall_deadline: float | None
    if recorded is not None:
        wall_deadline = recorded.deadline
    elif timer_index is not None:
        seconds = branches[timer_index].seconds
        assert seconds is not None
        wall_deadline = ctx.runtime.now() + seconds
    else:
        wall_deadline = None
    if recorded is None:
        # Journal the open wait (with its durable deadline) before looking at any branch.
        await record(ctx, function_id, WAIT_FIRST, completed=False, deadline=wall_deadline)
    store = ctx.runtime.store
    workflow_id = ctx.workflow_id

    async def complete(payload: dict[str, Any]) -> None:
        await checked(ctx, store.complete_operation(
            workflow_id, function_id, _codec.dumps(payload), ctx.epoch))

    async def check(waiter: Waiter) -> dict[str, Any] | _NotYet:
        if await store.workflow_state(workflow_id) != PENDING:
            await stop_for_status(ctx)
        for index, branch in enumerate(branches):
            if branch.kind == "message":
                status, text, consumed = await store.take_branch_message(
                    workflow_id, branch.topic, function_id, index, ctx.epoch)
                if status != PENDING:
                    await stop_for_status(ctx)
                if text is not None:
                    if not consumed:
                        raise _ExecutionConflict(f"wait_first #{function_id} completed elsewhere")
                    return {"index": index, "value": _codec.loads(text)}
            elif branch.kind == "event":
                assert branch.workflow_id is not None and branch.key is not None
                value, _ = await store.get_event(branch.workflow_id, branch.key)
                if value is not None:
                    payload = {"index": index, "value": _codec.loads(value)}
                    await complete(payload)
                    return payload
            elif branch.kind == "result":
                assert branch.workflow_id is not None
                outcome = await finished_outcome(ctx.runtime, branch.workflow_id, waiter)
                if not isinstance(outcome, _NotYet):
                    payload = {"index": index, "outcome": {
                        "status": outcome.status, "output": outcome.output,
                        "error": outcome.error}}
                    await complete(payload)
                    return payload
        if wall_deadline is not None and ctx.runtime.now() >= wall_deadline:
            assert timer_index is not None
            payload = {"index": timer_index, "value": None}
            await complete(payload)
            return payload
        if wall_deadline is not None:  # the runtime's clock may have moved: park until then
            waiter.deadline = loop_deadline(ctx.runtime, wall_deadline)
        return NOT_YET

    deadline = None if wall_deadline is None else loop_deadline(ctx.runtime, wall_deadline)
    outcome = await wait(Wait(ctx.runtime.waits, _keys(branches, workflow_id), check,
                              deadline=deadline))
    while isinstance(outcome, _NotYet):  # the loop's clock reached the deadline first
        outcome = await wait(Wait(ctx.runtime.waits, _keys(branches, workflow_id), check,
                                  deadline=loop_deadline(ctx.runtime,
                                                         wall_deadline or ctx.runtime.now())))
    return _fired(branches, outcome, workflow_id)
