"""The journal: recording operations, replaying them, and running steps and transactions.

Each durable operation of a workflow owns one function id. Its row in ``operations`` is written
only while the workflow is PENDING; a second row for the same id is a unique violation, which
means another execution of the same workflow got there first, and this one stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import _codec
from . import _queries as Q
from ._context import (
    Recorded,
    StepContext,
    WorkflowContext,
    connection_var,
    step_var,
)
from ._errors import (
    DatabaseUnavailableError,
    SerializationError,
    StepFailedError,
    WorkflowCancelledError,
    _ExecutionConflict,
)
from ._handle import CANCELLED, PENDING
from ._storage import RetryableTransactionError, Storage, Tx, UniqueViolation


@dataclass(frozen=True, slots=True)
class StepSpec:
    name: str
    fn: Callable[..., Awaitable[Any]]
    retries: int
    retry_interval_seconds: float
    backoff_rate: float


@dataclass(frozen=True, slots=True)
class TransactionSpec:
    name: str
    fn: Callable[..., Awaitable[Any]]
    isolation: str | None
    max_retries: int = 20


async def load_journal(storage: Storage, workflow_id: str) -> dict[int, Recorded]:
    rows = await storage.fetch(Q.LOAD_JOURNAL, workflow_id)
    return {
        row["function_id"]: Recorded(
            name=row["name"],
            output=row["output"],
            error=row["error"],
            child_id=row["child_id"],
            completed=row["completed"],
            deadline=row["deadline"],
        )
        for row in rows
    }


async def stop_for_status(ctx: WorkflowContext) -> None:
    """The workflow is no longer PENDING: raise cancellation, or stop this execution quietly."""
    status = await ctx.app.storage.fetchval(Q.WORKFLOW_STATE, ctx.workflow_id)
    if status == CANCELLED:
        ctx.cancelled = True
        raise WorkflowCancelledError(f"workflow {ctx.workflow_id!r} was cancelled")
    raise _ExecutionConflict(f"workflow {ctx.workflow_id!r} is {status}")


async def ensure_running(ctx: WorkflowContext) -> None:
    """Before starting an operation: stop if the workflow was cancelled (or ended elsewhere)."""
    if not ctx.should_check:
        return
    ctx.check_cancelled()
    ctx.stop_hint = False
    status = await ctx.app.storage.fetchval(Q.WORKFLOW_STATE, ctx.workflow_id)
    if status != PENDING:
        await stop_for_status(ctx)


async def record(
    ctx: WorkflowContext,
    function_id: int,
    name: str,
    *,
    output: str | None = None,
    error: str | None = None,
    child_id: str | None = None,
    completed: bool = True,
    deadline: float | None = None,
    tx: Tx | None = None,
) -> None:
    """Write one journal entry (guarded: only while the workflow is PENDING)."""
    target: Tx | Storage = tx if tx is not None else ctx.app.storage
    try:
        result = await target.execute(
            Q.RECORD_OPERATION,
            ctx.workflow_id,
            function_id,
            name,
            output,
            error,
            child_id,
            completed,
            deadline,
        )
    except UniqueViolation:
        raise _ExecutionConflict(
            f"operation #{function_id} of {ctx.workflow_id!r} was recorded by another execution"
        ) from None
    except DatabaseUnavailableError:
        ctx.db_failed = True
        raise
    if result.endswith(" 0"):
        await stop_for_status(ctx)


def replayed_value(recorded: Recorded) -> Any:
    """The recorded outcome: the value, or the recorded exception raised again."""
    if recorded.error is not None:
        raise _codec.decode_error(recorded.error, StepFailedError)
    return None if recorded.output is None else _codec.loads(recorded.output)


async def run_step(
    spec: StepSpec,
    ctx: WorkflowContext | None,
    function_id: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run a step once per workflow: replay its recorded outcome, or run and record it."""
    if ctx is None:
        return await spec.fn(*args, **kwargs)
    recorded = ctx.replay(function_id, spec.name)
    if recorded is not None:
        return replayed_value(recorded)
    await ensure_running(ctx)
    attempt = 0
    delay = spec.retry_interval_seconds
    while True:
        token = step_var.set(StepContext(ctx, function_id, spec.name))
        try:
            result = await spec.fn(*args, **kwargs)
            break
        except Exception as exc:
            if attempt < spec.retries and not ctx.cancelled:
                attempt += 1
                await asyncio.sleep(delay)  # retry backoff
                delay *= spec.backoff_rate
                continue
            if isinstance(exc, DatabaseUnavailableError):
                ctx.db_failed = True
                raise
            await record(ctx, function_id, spec.name, error=_codec.encode_error(exc))
            raise
        finally:
            step_var.reset(token)
    output = _codec.dumps(result, f"the result of step {spec.name!r}")
    await record(ctx, function_id, spec.name, output=output)
    return _codec.loads(output)


async def run_transaction(
    spec: TransactionSpec,
    ctx: WorkflowContext | None,
    storage: Storage,
    function_id: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run a transaction function; its checkpoint commits in the same database transaction.

    Serialization failures and deadlocks roll back and run the body again (with backoff).
    """
    if ctx is not None:
        recorded = ctx.replay(function_id, spec.name)
        if recorded is not None:
            return replayed_value(recorded)
        await ensure_running(ctx)
    delay = 0.005
    attempt = 0
    while True:
        try:
            async with storage.transaction(spec.isolation, user_code=True) as tx:
                conn_token = connection_var.set(tx.connection)
                step_token = step_var.set(
                    StepContext(ctx, function_id, spec.name) if ctx is not None else None
                )
                try:
                    result = await spec.fn(*args, **kwargs)
                finally:
                    step_var.reset(step_token)
                    connection_var.reset(conn_token)
                if ctx is None:
                    return result
                output = _codec.dumps(result, f"the result of transaction {spec.name!r}")
                await record(ctx, function_id, spec.name, output=output, tx=tx)
            return _codec.loads(output)
        except RetryableTransactionError:
            pass
        except Exception as exc:
            if storage.is_retryable(exc):
                pass
            elif isinstance(exc, DatabaseUnavailableError):
                if ctx is not None:
                    ctx.db_failed = True
                raise
            else:
                if ctx is not None and not isinstance(exc, SerializationError):
                    await record(ctx, function_id, spec.name, error=_codec.encode_error(exc))
                raise
        attempt += 1
        if attempt > spec.max_retries:
            raise RetryableTransactionError(
                f"transaction {spec.name!r} kept failing with serialization errors"
            )
        await asyncio.sleep(delay)  # retry backoff
        delay = min(delay * 2, 0.5)
