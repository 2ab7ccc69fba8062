"""Observability hooks: where the engine meets OpenTelemetry (``_core.telemetry``) and
``logging``.

The hooks are few and explicit: the runner wraps each execution (:func:`execution`),
``_primitives.steps`` each attempt (:func:`attempt`), and the primitives' modules decorate
their operations (:func:`workflow_operation`, :func:`outside_operation`). With telemetry off
(``runtime.telemetry is None``) each hook is one attribute check and hands back the coroutine it
was given. Replayed operations (completed in the journal) get no span: they do nothing.

The logging filter reads the running workflow and step from their context variables, so it
works for any logger, the user's own included.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

from .._core.telemetry import (
    ATTEMPT,
    FUNCTION_ID,
    RESUMED,
    STEP_NAME,
    WORKFLOW_ID,
    WORKFLOW_NAME,
    WORKFLOW_STATUS,
)
from .._status import CANCELLED
from .context import WorkflowContext, step_var, workflow_var
from .runtime import Runtime

P = ParamSpec("P")
R = TypeVar("R")

WorkflowOperation = Callable[Concatenate[WorkflowContext, int, P], Coroutine[Any, Any, R]]
OutsideOperation = Callable[Concatenate[Runtime, P], Coroutine[Any, Any, R]]


def _extra(arguments: Mapping[str, int], args: tuple[Any, ...]) -> dict[str, Any]:
    """Span attributes taken from positional arguments (``None`` values left out)."""
    found: dict[str, Any] = {}
    for name, index in arguments.items():
        if index < len(args) and args[index] is not None:
            found[name] = args[index]
    return found


def workflow_operation(
    name: str, kind: str = "internal", arguments: Mapping[str, int] | None = None
) -> Callable[[WorkflowOperation[P, R]], WorkflowOperation[P, R]]:
    """Decorate an operation of a workflow body, ``fn(ctx, function_id, *args)``: with
    telemetry on, it runs in a span named ``name`` with the workflow's id and name and the
    function id; ``arguments`` maps more attributes to indexes into ``args``."""
    arguments = dict(arguments or {})

    def decorate(fn: WorkflowOperation[P, R]) -> WorkflowOperation[P, R]:
        @functools.wraps(fn)
        def call(
            ctx: WorkflowContext, function_id: int, /, *args: P.args, **kwargs: P.kwargs
        ) -> Coroutine[Any, Any, R]:
            operation = fn(ctx, function_id, *args, **kwargs)
            telemetry = ctx.runtime.telemetry
            if telemetry is None:
                return operation
            recorded = ctx.journal.get(function_id)
            if recorded is not None and recorded.completed:
                return operation  # replayed: nothing happens, no span
            attributes = {WORKFLOW_ID: ctx.workflow_id, WORKFLOW_NAME: ctx.name,
                          FUNCTION_ID: function_id, **_extra(arguments, args)}
            return telemetry.run(operation, name, attributes, kind)

        return call

    return decorate


def outside_operation(
    name: str, kind: str = "internal", arguments: Mapping[str, int] | None = None
) -> Callable[[OutsideOperation[P, R]], OutsideOperation[P, R]]:
    """Decorate an operation from outside workflows, ``fn(runtime, *args)``: with telemetry on,
    it runs in a span named ``name``; ``arguments`` maps attributes to indexes into ``args``."""
    arguments = dict(arguments or {})

    def decorate(fn: OutsideOperation[P, R]) -> OutsideOperation[P, R]:
        @functools.wraps(fn)
        def call(runtime: Runtime, /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
            operation = fn(runtime, *args, **kwargs)
            telemetry = runtime.telemetry
            if telemetry is None:
                return operation
            return telemetry.run(operation, name, _extra(arguments, args), kind)

        return call

    return decorate


def attempt(
    ctx: WorkflowContext | None, kind: str, name: str, function_id: int, number: int,
    body: Awaitable[R],
) -> Awaitable[R]:
    """One attempt (``number``, from 1) of a step or transaction body: with telemetry on, in a
    span ``"<kind> <name>"`` whose duration goes to the step duration histogram."""
    telemetry = None if ctx is None else ctx.runtime.telemetry
    if telemetry is None:
        return body
    assert ctx is not None
    attributes = {WORKFLOW_ID: ctx.workflow_id, WORKFLOW_NAME: ctx.name, STEP_NAME: name,
                  FUNCTION_ID: function_id, ATTEMPT: number}
    return telemetry.attempt(body, kind, name, attributes)


async def execution(
    ctx: WorkflowContext, fresh: bool, run: Callable[[], Awaitable[bool]], started_under: str | None
) -> bool:
    """One execution of a workflow, in a span ``"workflow <name>"`` (telemetry on only).

    The first execution of a workflow started here is a child of the span that started it
    (``started_under``, its traceparent). Any other one — dispatched from a queue, recovered,
    resumed, retried after losing the database — is a child of the starter's trace context
    stored with the workflow, so every execution of a workflow lands in one trace; it links to
    the span that spawned it, if any (say, the request that resumed it). An execution stopped by
    the workflow's cancellation counts it (``asyncflow.workflows.finished``, ``CANCELLED``).
    """
    runtime = ctx.runtime
    telemetry = runtime.telemetry
    assert telemetry is not None
    attributes = {WORKFLOW_ID: ctx.workflow_id, WORKFLOW_NAME: ctx.name, RESUMED: not fresh}
    name = f"workflow {ctx.name}"
    if started_under is not None:
        span = telemetry.span(name, attributes, kind="consumer", parent=started_under)
    else:
        parent = await runtime.store.workflow_traceparent(ctx.workflow_id)
        span = telemetry.span(name, attributes, kind="consumer", parent=parent, new_trace=True,
                              link_current=True)
    with span as current:
        finished = await run()
        if not finished and ctx.cancelled:
            current.set_attribute(WORKFLOW_STATUS, str(CANCELLED))  # the plain string
            telemetry.workflow_finished(ctx.name, CANCELLED)
        return finished


# -- logging -------------------------------------------------------------------------------------


class WorkflowLogFilter(logging.Filter):
    """Adds ``workflow_id``, ``workflow_name``, ``step_name`` and ``function_id`` to every log
    record (``default`` where there is none: outside workflows, or outside steps)."""

    def __init__(self, default: Any = None) -> None:
        super().__init__()
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = workflow_var.get()
        step = step_var.get()
        default = self.default
        record.workflow_id = default if ctx is None else ctx.workflow_id
        record.workflow_name = default if ctx is None else ctx.name
        record.step_name = default if step is None else step.name
        record.function_id = default if step is None else step.function_id
        return True


def logging_filter(default: Any = None) -> logging.Filter:
    """A :class:`logging.Filter` that adds the running workflow's id and name, and the running
    step's name and function id, to every record (``default``, e.g. ``"-"``, where there is
    none). Add it to your handlers: ``handler.addFilter(asyncflow.logging_filter())``, then use
    ``%(workflow_id)s`` in the format (or read the attributes in a JSON formatter). It works for
    every logger whose records reach that handler, yours included."""
    return WorkflowLogFilter(default)
