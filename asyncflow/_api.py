"""Module-level operations used inside workflows and steps (``asyncflow.recv`` and friends).

Each validates and encodes its arguments and reserves the workflow's next function id
*synchronously*, at the call, then returns the coroutine doing the work. That is what makes
``asyncio.gather`` of operations replay in the same order, and bad input fail before anything is
written.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from . import _codec, _comm
from ._context import WorkflowContext, current_workflow, require_workflow, step_var, workflow_var
from ._errors import InvalidArgumentError, NotInWorkflowError
from ._handle import WorkflowHandle

if TYPE_CHECKING:
    from ._engine import AsyncFlow

R = TypeVar("R")


def _any_context(operation: str) -> WorkflowContext:
    ctx = workflow_var.get()
    if ctx is None:
        raise NotInWorkflowError(
            f"asyncflow.{operation}() can only be called inside a workflow or one of its steps; "
            "outside workflows use the app's or a Client's methods"
        )
    return ctx


def sleep(seconds: float) -> Coroutine[Any, Any, None]:
    """Durable sleep: the wake-up time is checkpointed, so after a recovery only the remaining
    time is slept. Cancellation of the workflow wakes it at once. Outside a workflow (or in a
    step) it is a plain ``asyncio.sleep``."""
    seconds = _codec.check_timeout(seconds, "seconds")
    ctx = current_workflow()
    if ctx is None:
        return asyncio.sleep(seconds)
    return _comm.sleep(ctx, ctx.reserve(), seconds)


def send(
    destination_id: str,
    message: Any,
    topic: str | None = None,
    *,
    idempotency_key: str | None = None,
) -> Coroutine[Any, Any, None]:
    """Send ``message`` to workflow ``destination_id`` on ``topic`` (workflows and steps).

    From a workflow the send is journaled: it happens exactly once across recoveries. From a
    step it is keyed by the step's position, so a retried step does not send twice.
    """
    ctx = _any_context("send")
    return send_via(ctx.app, destination_id, message, topic, idempotency_key)


def send_via(
    app: AsyncFlow,
    destination_id: str,
    message: Any,
    topic: str | None,
    idempotency_key: str | None,
) -> Coroutine[Any, Any, None]:
    _codec.check_id(destination_id, "destination_id")
    _codec.check_name(topic, "topic", optional=True)
    _codec.check_name(idempotency_key, "idempotency_key", optional=True)
    text = _codec.dumps(message, "message")
    ctx = current_workflow()
    if ctx is not None and ctx.app is app:
        return _comm.send(ctx, ctx.reserve(), destination_id, text, topic, idempotency_key)
    step = step_var.get()
    if step is not None and step.workflow.app is app:
        return _comm.send_from_step(step, destination_id, text, topic, idempotency_key)
    return app._send_outside(destination_id, message, topic, idempotency_key)


def recv(topic: str | None = None, timeout_seconds: float = 60) -> Coroutine[Any, Any, Any]:
    """Receive the next message on ``topic`` (FIFO), waiting up to ``timeout_seconds``.

    Workflows only. Returns ``None`` on timeout. The message is consumed and checkpointed in one
    transaction (exactly-once receipt); the deadline is checkpointed before waiting.
    """
    ctx = require_workflow("recv")
    _codec.check_name(topic, "topic", optional=True)
    timeout = _codec.check_timeout(timeout_seconds)
    return _comm.recv(ctx, ctx.reserve(), topic, timeout)


def set_event(key: str, value: Any) -> Coroutine[Any, Any, None]:
    """Publish ``value`` under ``key`` on the running workflow (last value wins)."""
    ctx = _any_context("set_event")
    _codec.check_name(key, "key")
    text = _codec.dumps(value, f"the value of event {key!r}")
    current = current_workflow()
    if current is not None:
        return _comm.set_event(current, current.reserve(), key, text)
    step = step_var.get()
    assert step is not None and step.workflow is ctx
    return _comm.set_event_from_step(step, key, text)


def get_event(
    workflow_id: str, key: str, timeout_seconds: float = 60
) -> Coroutine[Any, Any, Any]:
    """Wait until workflow ``workflow_id`` has set event ``key`` and return its value
    (``None`` after ``timeout_seconds``). In a workflow the value read is checkpointed."""
    ctx = _any_context("get_event")
    return get_event_via(ctx.app, workflow_id, key, timeout_seconds)


def get_event_via(
    app: AsyncFlow, workflow_id: str, key: str, timeout_seconds: float
) -> Coroutine[Any, Any, Any]:
    _codec.check_id(workflow_id)
    _codec.check_name(key, "key")
    timeout = _codec.check_timeout(timeout_seconds)
    ctx = current_workflow()
    if ctx is not None and ctx.app is app:
        return _comm.get_event(ctx, ctx.reserve(), workflow_id, key, timeout)
    return app._get_event_outside(workflow_id, key, timeout)


async def get_all_events(workflow_id: str) -> dict[str, Any]:
    """Snapshot of every event of ``workflow_id`` (not checkpointed; never blocks)."""
    return await _any_context("get_all_events").app.get_all_events(workflow_id)


def write_stream(key: str, value: Any) -> Coroutine[Any, Any, None]:
    """Append ``value`` to the running workflow's stream ``key`` (exactly-once, also from a
    step: a retried step overwrites what it wrote instead of appending it again)."""
    ctx = _any_context("write_stream")
    _codec.check_name(key, "key")
    text = _codec.dumps(value, f"the value written to stream {key!r}")
    current = current_workflow()
    if current is not None:
        return _comm.write_stream(current, current.reserve(), key, text)
    step = step_var.get()
    assert step is not None and step.workflow is ctx
    return _comm.write_stream_from_step(step, key, text)


def close_stream(key: str) -> Coroutine[Any, Any, None]:
    """Close the running workflow's stream ``key``: readers stop after its last value."""
    ctx = _any_context("close_stream")
    _codec.check_name(key, "key")
    current = current_workflow()
    if current is not None:
        return _comm.close_stream(current, current.reserve(), key)
    step = step_var.get()
    assert step is not None and step.workflow is ctx
    return _comm.close_stream_from_step(step, key)


def read_stream(workflow_id: str, key: str, *, offset: int = 0) -> AsyncIterator[Any]:
    """Read another workflow's stream (not checkpointed: prefer reading inside a step)."""
    return _any_context("read_stream").app.read_stream(workflow_id, key, offset=offset)


def start_workflow(
    fn: Callable[..., Coroutine[Any, Any, R]],
    *args: Any,
    workflow_id: str | None = None,
    **kwargs: Any,
) -> Coroutine[Any, Any, WorkflowHandle[R]]:
    """Start workflow ``fn`` on the app it is registered with (a child workflow when called
    inside a workflow). Pass ``workflow_id=`` to choose its id."""
    bound = getattr(fn, "__asyncflow_workflow__", None)
    if bound is None:
        raise InvalidArgumentError(
            f"{getattr(fn, '__qualname__', fn)!r} is not a workflow; decorate it with "
            "@app.workflow()"
        )
    app: AsyncFlow = bound[0]
    return app.start_workflow(fn, *args, workflow_id=workflow_id, **kwargs)
