"""Module-level operations used inside workflows and steps (``asyncflow.recv`` and friends).

Each validates and encodes its arguments and reserves the workflow's next function id
*synchronously*, at the call, then returns the coroutine of the variant that fits where it was
called (workflow body, step, outside). That is what makes ``asyncio.gather`` of operations replay
in the same order, and bad input fail before anything is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, NoReturn, TypeVar, overload

from .. import _codec
from .._engine.context import any_context, current_step, current_workflow, require_workflow
from .._errors import InvalidArgumentError
from .._primitives import attributes as _attributes
from .._primitives import continuation as _continue
from .._primitives import events as _events
from .._primitives import messages as _messages
from .._primitives import streams as _streams
from .._primitives import timers as _timers
from .._primitives import wait_first as _wait_first
from .._primitives.handle import WorkflowHandle
from .._primitives.wait_first import Branch, Fired
from .._signature import decoded, decoded_items, reader
from .lifecycle import check_stream_args

R = TypeVar("R")
T = TypeVar("T")


def sleep(seconds: float) -> Coroutine[Any, Any, None]:
    """Durable sleep: the wake-up time is checkpointed, so after a recovery only the remaining
    time is slept. Cancellation of the workflow wakes it at once. Outside a workflow (or in a
    step) it is a plain ``asyncio.sleep``."""
    seconds = _codec.check_timeout(seconds, "seconds")
    ctx = current_workflow()
    if ctx is None:
        return asyncio.sleep(seconds)
    return _timers.sleep(ctx, ctx.reserve(), seconds)


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
    any_context("send")
    text = _codec.check_message(destination_id, message, topic, idempotency_key)
    ctx = current_workflow()
    if ctx is not None:
        return _messages.send_from_workflow(ctx, ctx.reserve(), destination_id, text, topic,
                                            idempotency_key)
    step = current_step()
    assert step is not None
    return _messages.send_from_step(step, destination_id, text, topic, idempotency_key)


@overload
def recv(topic: str | None = None, timeout_seconds: float = 60) -> Coroutine[Any, Any, Any]: ...
@overload
def recv(topic: str | None = None, timeout_seconds: float = 60, *,
         type: type[T]) -> Coroutine[Any, Any, T | None]: ...
@overload
def recv(topic: str | None = None, timeout_seconds: float = 60, *,
         type: Any) -> Coroutine[Any, Any, Any]: ...


def recv(topic: str | None = None, timeout_seconds: float = 60, *,
         type: Any = None) -> Coroutine[Any, Any, Any]:
    """Receive the next message on ``topic`` (FIFO), waiting up to ``timeout_seconds``.

    Workflows only. Returns ``None`` on timeout. The message is consumed and checkpointed in one
    transaction (exactly-once receipt); the deadline is checkpointed before waiting.
    ``type``: the annotation to decode the message by (``Order``, ``list[Order]``…; see
    docs/guide.md, Values); without it the message is plain JSON.
    """
    ctx = require_workflow("recv")
    _codec.check_name(topic, "topic", optional=True)
    timeout_seconds = _codec.check_timeout(timeout_seconds)
    read = reader(type, f"the message received on topic {topic!r}")
    received = _messages.recv(ctx, ctx.reserve(), topic, timeout_seconds)
    return received if read is None else decoded(received, read)


def set_event(key: str, value: Any) -> Coroutine[Any, Any, None]:
    """Publish ``value`` under ``key`` on the running workflow (last value wins)."""
    any_context("set_event")
    _codec.check_name(key, "key")
    text = _codec.dumps(value, f"the value of event {key!r}")
    ctx = current_workflow()
    if ctx is not None:
        return _events.set_event_from_workflow(ctx, ctx.reserve(), key, text)
    step = current_step()
    assert step is not None
    return _events.set_event_from_step(step, key, text)


@overload
def get_event(workflow_id: str, key: str,
              timeout_seconds: float = 60) -> Coroutine[Any, Any, Any]: ...
@overload
def get_event(workflow_id: str, key: str, timeout_seconds: float = 60, *,
              type: type[T]) -> Coroutine[Any, Any, T | None]: ...
@overload
def get_event(workflow_id: str, key: str, timeout_seconds: float = 60, *,
              type: Any) -> Coroutine[Any, Any, Any]: ...


def get_event(
    workflow_id: str, key: str, timeout_seconds: float = 60, *, type: Any = None
) -> Coroutine[Any, Any, Any]:
    """Wait until workflow ``workflow_id`` has set event ``key`` and return its value
    (``None`` after ``timeout_seconds``). In a workflow the value read is checkpointed.
    ``type``: the annotation to decode the value by (without it: plain JSON)."""
    runtime = any_context("get_event").runtime
    _codec.check_id(workflow_id)
    _codec.check_name(key, "key")
    timeout_seconds = _codec.check_timeout(timeout_seconds)
    read = reader(type, f"event {key!r} of workflow {workflow_id!r}")
    ctx = current_workflow()
    if ctx is not None:
        got = _events.get_event_from_workflow(ctx, ctx.reserve(), workflow_id, key,
                                              timeout_seconds)
    else:
        got = _events.get_event_outside(runtime, workflow_id, key, timeout_seconds)
    return got if read is None else decoded(got, read)


async def get_all_events(workflow_id: str) -> dict[str, Any]:
    """Snapshot of every event of ``workflow_id`` (not checkpointed; never blocks)."""
    runtime = any_context("get_all_events").runtime
    _codec.check_id(workflow_id)
    return await runtime.store.get_all_events(workflow_id)


def write_stream(key: str, value: Any) -> Coroutine[Any, Any, None]:
    """Append ``value`` to the running workflow's stream ``key`` (exactly-once, also from a
    step: a retried step overwrites what it wrote instead of appending it again)."""
    any_context("write_stream")
    _codec.check_name(key, "key")
    text = _codec.dumps(value, f"the value written to stream {key!r}")
    ctx = current_workflow()
    if ctx is not None:
        return _streams.write_from_workflow(ctx, ctx.reserve(), key, text)
    step = current_step()
    assert step is not None
    return _streams.write_from_step(step, key, text)


def close_stream(key: str) -> Coroutine[Any, Any, None]:
    """Close the running workflow's stream ``key``: readers stop after its last value."""
    any_context("close_stream")
    _codec.check_name(key, "key")
    ctx = current_workflow()
    if ctx is not None:
        return _streams.close_from_workflow(ctx, ctx.reserve(), key)
    step = current_step()
    assert step is not None
    return _streams.close_from_step(step, key)


@overload
def read_stream(workflow_id: str, key: str, *, offset: int = 0) -> AsyncIterator[Any]: ...
@overload
def read_stream(workflow_id: str, key: str, *, offset: int = 0,
                type: type[T]) -> AsyncIterator[T]: ...
@overload
def read_stream(workflow_id: str, key: str, *, offset: int = 0,
                type: Any) -> AsyncIterator[Any]: ...


def read_stream(workflow_id: str, key: str, *, offset: int = 0,
                type: Any = None) -> AsyncIterator[Any]:
    """Read another workflow's stream (not checkpointed: prefer reading inside a step).
    ``type``: the annotation to decode each value by (without it: plain JSON)."""
    ctx = any_context("read_stream")
    check_stream_args(workflow_id, key, offset)
    read = reader(type, f"a value of stream {key!r} of workflow {workflow_id!r}")
    values = _streams.values(ctx.runtime, workflow_id, key, offset, current_workflow())
    return values if read is None else decoded_items(values, read)


def wait_first(*branches: Branch) -> Coroutine[Any, Any, Fired]:
    """Wait until the first of ``branches`` is ready and return which one fired and its value.

    Branches: :func:`asyncflow.message` (the running workflow's mailbox), :func:`asyncflow.event`,
    :func:`asyncflow.result` (another workflow's outcome; its error is raised) and
    :func:`asyncflow.timer`. In a workflow body it is journaled: a replay takes the same branch
    with the same value, and a message whose branch did not win stays in the mailbox. In a step
    it waits without journaling (no message branches); outside workflows use
    ``app.wait_first`` / ``client.wait_first``.
    """
    ctx = any_context("wait_first")
    current = current_workflow()
    checked = _wait_first.check_branches(branches, in_workflow=current is not None)
    if current is not None:
        return _wait_first.wait_first_in_workflow(current, current.reserve(), checked)
    return _wait_first.wait_first_outside(ctx.runtime, checked)


def start_workflow(
    fn: Callable[..., Coroutine[Any, Any, R]],
    *args: Any,
    workflow_id: str | None = None,
    timeout_seconds: float | None = None,
    **kwargs: Any,
) -> Coroutine[Any, Any, WorkflowHandle[R]]:
    """Start workflow ``fn`` on the app it is registered with (a child workflow when called
    inside a workflow). Pass ``workflow_id=`` to choose its id, ``timeout_seconds=`` to give it
    a durable deadline (see ``AsyncFlow.start_workflow``)."""
    bound = getattr(fn, "__asyncflow_workflow__", None)
    if bound is None:
        raise InvalidArgumentError(
            f"{getattr(fn, '__qualname__', fn)!r} is not a workflow; decorate it with "
            "@app.workflow()"
        )
    started: Coroutine[Any, Any, WorkflowHandle[R]] = bound[0].start_workflow(
        fn, *args, workflow_id=workflow_id, timeout_seconds=timeout_seconds, **kwargs)
    return started


def continue_as_new(*args: Any, **kwargs: Any) -> Coroutine[Any, Any, NoReturn]:
    """End this run of the workflow and start its next run with these arguments, under the same
    workflow id and with an empty journal: ``await asyncflow.continue_as_new(state)`` never
    returns (the workflow function starts over with the new arguments).

    For workflows that loop forever (a subscription, an agent's conversation, a poller): their
    journal, and the time to replay it after a crash, stay bounded. The hand-over is atomic and
    fenced like every write of an execution. The ended run is kept as a linked earlier run
    (status ``CONTINUED_AS_NEW``, listed by ``list_workflow_runs``, exportable, deleted by
    retention), or its journal dropped with ``@app.workflow(keep_runs=False)``. Handles,
    ``get_result``, ``send`` and events go by the workflow id, so they follow it to its latest
    run; messages waiting in its mailbox stay there for the next run.

    Workflow bodies only: from a step or outside a workflow it raises
    :class:`NotInWorkflowError`; arguments that do not fit the workflow's parameters raise
    :class:`InvalidArgumentError`, and arguments that cannot be stored
    :class:`SerializationError`, at the call (the current run goes on).
    """
    return _continue.continue_as_new(*args, **kwargs)


def set_attributes(attributes: Mapping[str, Any], *,
                   merge: bool = True) -> Coroutine[Any, Any, None]:
    """Set the running workflow's attributes (searchable: ``list_workflows(attributes=...)``),
    merged into those it has (``merge=False``: replacing them). Journaled: a replay does not set
    them again. Keys are str, values plain JSON (str, int, float, bool, None, lists and dicts of
    them); anything else raises :class:`InvalidArgumentError` at the call. Workflow bodies only
    (:class:`NotInWorkflowError` from a step or outside; outside, use the app's or a Client's
    ``set_workflow_attributes``)."""
    return _attributes.set_attributes(attributes, merge=merge)
