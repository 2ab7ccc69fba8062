"""Endless workflows: ``asyncflow.continue_as_new`` ends the current run of a workflow and starts
the next one, with new arguments and an empty journal, under the same workflow id.

The hand-over is one statement (``Store.continue_as_new``), fenced by the execution's ownership
epoch like every write of an execution: the current run is archived as a linked row (status
``CONTINUED_AS_NEW``, its journal moved there, plus the continue's own entry) — or its journal
dropped, with ``@app.workflow(keep_runs=False)`` — and the workflow's row gets the new
arguments, the next run number and a bumped epoch. The execution then goes on as the new run
(the runner catches :class:`~asyncflow._errors._ContinuedAsNew`); a crash on either side of the
commit leaves either the old run (replayed from its journal up to the continue, which then
happens) or the new one (recovered like any PENDING workflow). Function ids go on across runs,
so the ids and keys derived from an operation's position (children, a step's sends and
enqueues, stream writers) never repeat. Messages, events and streams belong to the workflow id
and stay.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from .. import _codec
from .._engine.context import WorkflowContext, require_workflow
from .._engine.journal import ensure_running, stop_for_status
from .._errors import InvalidArgumentError, WorkflowConflictError, _ContinuedAsNew

NAME = "asyncflow.continue_as_new"


def archive_id(workflow_id: str, function_id: int) -> str:
    """The id of the kept run ended by the continue at ``function_id`` (function ids go on
    across runs, so each run's is different)."""
    return _codec.derived_id(workflow_id, f"~{function_id}")


def continue_as_new(*args: Any, **kwargs: Any) -> Coroutine[Any, Any, NoReturn]:
    """Validate and encode the next run's arguments and reserve the function id (at the call),
    then the coroutine of the hand-over."""
    ctx = require_workflow("continue_as_new")
    spec = ctx.spec
    if spec is not None:
        _check_binds(spec.fn, args, kwargs, ctx.name)
    if spec is not None and spec.types is not None:
        inputs = spec.types.encode_inputs(args, kwargs)
    else:
        inputs = _codec.dumps({"args": list(args), "kwargs": kwargs},
                              f"the arguments of workflow {ctx.name!r}")
    keep = True if spec is None else spec.keep_runs
    return _hand_over(ctx, ctx.reserve(), inputs, keep)


def _check_binds(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 name: str) -> None:
    """The next run's arguments must fit the workflow's parameters (an unknown keyword, a
    missing or extra argument fails at the call, before the current run ends)."""
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        raise InvalidArgumentError(
            f"continue_as_new: the arguments do not fit the parameters of workflow {name!r} "
            f"({exc}); pass what the workflow function takes") from None


async def _hand_over(ctx: WorkflowContext, function_id: int, inputs: str,
                     keep: bool) -> NoReturn:
    if ctx.replay(function_id, NAME) is not None or ctx.replaying:
        # A history replay of a kept run: it ended here. (A live execution never finds its
        # continue in the journal: the same statement moved the journal away.)
        raise _ContinuedAsNew(inputs, ctx.epoch, function_id + 1)
    await ensure_running(ctx)
    hook = ctx.runtime.on_checkpoint
    if hook is not None:
        hook(ctx.workflow_id, function_id, NAME)
    epoch, owned = await ctx.runtime.store.continue_as_new(
        ctx.workflow_id, function_id, inputs, ctx.epoch,
        archive_id(ctx.workflow_id, function_id) if keep else None)
    if epoch is None:
        if owned:
            raise WorkflowConflictError(
                f"workflow {ctx.workflow_id!r} cannot keep its run as "
                f"{archive_id(ctx.workflow_id, function_id)!r}: another workflow has that id; "
                "delete it, or use @app.workflow(keep_runs=False)")
        await stop_for_status(ctx)  # cancelled, ended, or owned by another execution now
    assert epoch is not None
    raise _ContinuedAsNew(inputs, epoch, function_id + 1)
