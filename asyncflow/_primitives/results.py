"""Waiting for a workflow's outcome, and turning a recorded outcome into a value or an error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .. import _codec
from .._core.wait import NOT_YET, TERMINAL, Key, Wait, Waiter, _NotYet, wait
from .._engine.context import WorkflowContext
from .._engine.journal import ensure_running
from .._engine.runtime import Runtime
from .._errors import (
    AsyncFlowTimeoutError,
    MaxRecoveryAttemptsExceededError,
    WorkflowCancelledError,
    WorkflowFailedError,
)
from .._recorded import decode_error
from .._status import (
    CANCELLED,
    CONTINUED_AS_NEW,
    ERROR,
    MAX_RECOVERY_ATTEMPTS_EXCEEDED,
    SUCCESS,
    TERMINAL_STATUSES,
)
from .._storage.store import Outcome, not_found

Read = Callable[[Any], Any]


def outcome_value(workflow_id: str, outcome: Outcome, read: Read | None = None) -> Any:
    """The result of a finished workflow (decoded by ``read``, if given), or its error raised."""
    status = outcome.status
    if status == SUCCESS:
        value = None if outcome.output is None else _codec.loads(outcome.output)
        return value if read is None else read(value)
    if status == ERROR and outcome.error is not None:
        raise decode_error(outcome.error, WorkflowFailedError)
    if status == CANCELLED:
        if outcome.error is not None:  # a recorded reason: its deadline passed
            reason = decode_error(outcome.error, WorkflowFailedError)
            if isinstance(reason, WorkflowCancelledError):
                raise reason
        raise WorkflowCancelledError(f"workflow {workflow_id!r} was cancelled")
    if status == MAX_RECOVERY_ATTEMPTS_EXCEEDED:
        raise MaxRecoveryAttemptsExceededError(
            f"workflow {workflow_id!r} exceeded its maximum recovery attempts and was moved "
            "to MAX_RECOVERY_ATTEMPTS_EXCEEDED; fix the cause, then resume_workflow() it"
        )
    if status == CONTINUED_AS_NEW:
        raise WorkflowFailedError(
            "ContinuedAsNew", f"{workflow_id!r} is an earlier run of a workflow that continued "
            "as new (its run_of); get the result of that workflow id instead", "")
    raise WorkflowFailedError("unknown", f"workflow ended with status {status}", "")


async def finished_outcome(
    runtime: Runtime, workflow_id: str, waiter: Waiter | None = None
) -> Outcome | _NotYet:
    """The outcome if the workflow has finished (handed over in-process, or read), else
    :data:`NOT_YET`."""
    if waiter is not None:
        handed = waiter.handed.get((TERMINAL, workflow_id))
        if handed is not None:  # finished in this process: its outcome was handed over
            outcome: Outcome = handed
            return outcome
    found = await runtime.store.workflow_outcome(workflow_id)
    if found is None:
        raise not_found(workflow_id)
    return found if found.status in TERMINAL_STATUSES else NOT_YET  # PENDING or queued


async def wait_result(
    runtime: Runtime,
    workflow_id: str,
    timeout_seconds: float | None,
    reader: WorkflowContext | None = None,
    read: Read | None = None,
) -> Any:
    """Wait for a workflow's terminal status and return (or raise) its outcome. ``reader``: the
    workflow doing the waiting (its own cancellation wakes it)."""
    keys: tuple[Key, ...] = ((TERMINAL, workflow_id),)
    if reader is not None:
        keys += ((TERMINAL, reader.workflow_id),)

    async def check(waiter: Waiter) -> Outcome | _NotYet:
        outcome = await finished_outcome(runtime, workflow_id, waiter)
        if isinstance(outcome, _NotYet) and reader is not None:
            await ensure_running(reader)
        return outcome

    loop = asyncio.get_running_loop()
    deadline = None if timeout_seconds is None else loop.time() + timeout_seconds
    result = await wait(Wait(runtime.waits, keys, check, deadline=deadline,
                             retry_unavailable=True))
    if isinstance(result, _NotYet):
        raise AsyncFlowTimeoutError(
            f"workflow {workflow_id!r} did not finish within {timeout_seconds} seconds"
        )
    return outcome_value(workflow_id, result, read)

