"""Steps and transactions: run once per workflow, checkpointed.

A step runs its body and records its JSON result (or exception) before the workflow continues;
a transaction runs its body in a database transaction that also commits its checkpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NoReturn

from .. import _codec
from .._engine.context import (
    StepContext,
    WorkflowContext,
    after_commit_var,
    connection_var,
    step_var,
)
from .._engine.journal import begin, ensure_running, record, replayed_value
from .._engine.observe import attempt as observed
from .._errors import (
    AsyncFlowError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    InvalidSettingError,
    SerializationError,
    StepTimeoutError,
)
from .._recorded import encode_error
from .._specs import StepSpec, TransactionSpec
from .._storage.database import RetryableTransactionError, Storage


def check_step_options(
    timeout_seconds: object, should_retry: object
) -> tuple[float | None, Callable[[Exception], bool] | None]:
    """Validate ``@app.step``'s ``timeout_seconds`` (a number > 0, or ``None``) and
    ``should_retry`` (a callable, or ``None``)."""
    seconds = None
    if timeout_seconds is not None:
        try:
            seconds = _codec.check_timeout(timeout_seconds, "timeout_seconds")
        except InvalidArgumentError as exc:
            raise InvalidSettingError(str(exc)) from None
        if seconds <= 0:
            raise InvalidSettingError(
                f"timeout_seconds must be > 0 (or None: no limit), not {timeout_seconds!r}")
    if should_retry is not None and not callable(should_retry):
        raise InvalidSettingError(
            "should_retry must be a function taking the exception and returning a bool, not "
            f"{should_retry!r}")
    return seconds, should_retry


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
    # (begin(), inline: no coroutine of its own on every step)
    recorded = ctx.replay(function_id, spec.name)
    if recorded is not None:
        return _read(spec, replayed_value(recorded))
    if ctx.needs_check:
        await ensure_running(ctx)
    attempt = 0
    delay = spec.retry_interval_seconds
    while True:
        step = StepContext(ctx, function_id, spec.name)  # a fresh one per attempt
        token = step_var.set(step)
        try:
            body = (spec.fn(*args, **kwargs) if spec.timeout_seconds is None
                    else _attempt_with_timeout(spec, ctx, args, kwargs))
            result = await observed(ctx, "step", spec.name, function_id, attempt + 1, body)
            break
        except Exception as exc:
            if attempt < spec.retries and not ctx.cancelled and await _retry_wanted(
                    spec, ctx, function_id, exc):
                attempt += 1
                await asyncio.sleep(delay)  # retry backoff
                delay *= spec.backoff_rate
                continue
            if isinstance(exc, DatabaseUnavailableError):
                raise
            await fail(ctx, function_id, spec.name, exc)
        finally:
            step_var.reset(token)
    try:
        output = _codec.dumps(result, f"the result of step {spec.name!r}", "result")
        # What the first run returns is what every replay returns: the stored value, read back
        # by the return annotation (a value that would not read back fails the step now).
        value = _read(spec, _codec.loads(output))
    except SerializationError as exc:  # journaled, so a replay raises it instead of re-running
        await fail(ctx, function_id, spec.name, exc)
    if not step.effects:
        await record(ctx, function_id, spec.name, output=output)
    else:
        try:
            async with ctx.runtime.store.storage.transaction():
                await apply_effects(step)
                await record(ctx, function_id, spec.name, output=output)
        except DatabaseUnavailableError:
            raise
        except AsyncFlowError as exc:  # an effect refused (a closed stream, a deleted workflow)
            await fail(ctx, function_id, spec.name, exc)
        wake_effects(step)
    return value


def _read(spec: StepSpec | TransactionSpec, value: Any) -> Any:
    """A step's or transaction's stored result, decoded by its return annotation."""
    return value if spec.types is None else spec.types.decode_result(value)


async def _attempt_with_timeout(
    spec: StepSpec, ctx: WorkflowContext, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """One attempt, cancelled after ``spec.timeout_seconds``: then :class:`StepTimeoutError`.
    A ``TimeoutError`` the body raises itself passes through as it is."""
    assert spec.timeout_seconds is not None
    limit = asyncio.timeout(spec.timeout_seconds)
    try:
        async with limit:
            return await spec.fn(*args, **kwargs)
    except TimeoutError:
        if not limit.expired():
            raise
        raise StepTimeoutError(
            f"an attempt of step {spec.name!r} in workflow {ctx.workflow_id!r} ran longer than "
            f"its timeout_seconds={spec.timeout_seconds:g} and was cancelled"
        ) from None


async def _retry_wanted(
    spec: StepSpec, ctx: WorkflowContext, function_id: int, exc: Exception
) -> bool:
    """Whether ``should_retry`` wants the failure ``exc`` retried; if the predicate itself
    raises, that is recorded as the step's failure."""
    if spec.should_retry is None:
        return True
    try:
        return bool(spec.should_retry(exc))
    except Exception as predicate_error:
        await fail(ctx, function_id, spec.name, predicate_error)


async def fail(ctx: WorkflowContext, function_id: int, name: str, exc: Exception) -> NoReturn:
    """Record a step's failure and raise what a replay will raise: the same exception, rebuilt
    from its record, so the first run and every replay see the same type and values."""
    encoded = encode_error(exc)
    await record(ctx, function_id, name, error=encoded)
    raise exc


async def apply_effects(step: StepContext) -> None:
    """Apply a step's staged effects (inside the transaction of its checkpoint)."""
    for apply, _key in step.effects:
        await apply()


def wake_effects(step: StepContext) -> None:
    """After the checkpoint committed: wake the local waiters of the effects' keys."""
    waits = step.workflow.runtime.waits
    for key in {key for _apply, key in step.effects}:
        waits.wake(*key)


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
        recorded = await begin(ctx, function_id, spec.name)
        if recorded is not None:
            return _read(spec, replayed_value(recorded))
    delay = 0.005
    attempt = 0
    while True:
        try:
            after_commit: list[Callable[[], None]] = []
            async with storage.transaction(spec.isolation, user_code=True,
                                           name=spec.name) as tx:
                conn_token = connection_var.set(tx.connection)
                step_token = step_var.set(
                    StepContext(ctx, function_id, spec.name) if ctx is not None else None
                )
                after_token = after_commit_var.set(after_commit)
                try:
                    result = await observed(ctx, "transaction", spec.name, function_id,
                                            attempt + 1, spec.fn(*args, **kwargs))
                finally:
                    step = step_var.get()
                    after_commit_var.reset(after_token)
                    step_var.reset(step_token)
                    connection_var.reset(conn_token)
                await tx.check_intact(spec.name)
                if ctx is not None:
                    output = _codec.dumps(result, f"the result of transaction {spec.name!r}",
                                          "result")
                    value = _read(spec, _codec.loads(output))
                    assert step is not None
                    await apply_effects(step)
                    await record(ctx, function_id, spec.name, output=output)
            outer = after_commit_var.get()
            if outer is not None:  # nested (a savepoint): the outermost commit wakes them
                outer.extend(after_commit)
            else:
                for callback in after_commit:  # committed: wake what the body made durable
                    callback()
            if ctx is None:
                return result
            assert step is not None
            wake_effects(step)
            return value
        except RetryableTransactionError:
            pass
        except Exception as exc:
            if storage.is_retryable(exc):
                pass
            elif isinstance(exc, DatabaseUnavailableError):
                raise
            else:
                if ctx is not None and not isinstance(exc, SerializationError):
                    await record(ctx, function_id, spec.name, error=encode_error(exc))
                raise
        attempt += 1
        if attempt > spec.max_retries:
            raise RetryableTransactionError(
                f"transaction {spec.name!r} kept failing with serialization errors"
            )
        await asyncio.sleep(delay)  # retry backoff
        delay = min(delay * 2, 0.5)
