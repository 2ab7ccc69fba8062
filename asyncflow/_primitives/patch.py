"""Patching running workflows: ``asyncflow.patched`` and ``asyncflow.deprecate_patch``.

A patch is a journaled marker operation named ``asyncflow.patched:<change id>``. A run that
reaches ``patched("x")`` with nothing recorded at (or after) its function id records the marker
and takes the new path (``True``). A run whose journal has the marker there replays it (``True``
again). A run whose journal has *another* operation there — or, in a history replay, nothing
at all — passed this point before the change: ``patched`` returns ``False`` and consumes no
function id, so that run's following operations still line up with its journal.

Everything is decided synchronously, at the call, from the journal loaded when the execution
began: like every operation, the function id is reserved before the caller awaits.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from .. import _codec
from .._engine.context import WorkflowContext, require_workflow
from .._engine.journal import ensure_running, record
from .._errors import InvalidArgumentError

PATCH_PREFIX = "asyncflow.patched:"


def _marker(change_id: object) -> str:
    _codec.check_name(change_id, "change_id")
    if not change_id:
        raise InvalidArgumentError("change_id must not be empty")
    return PATCH_PREFIX + str(change_id)


async def _answer(value: bool) -> bool:
    return value


async def _mark(ctx: WorkflowContext, function_id: int, name: str) -> bool:
    await ensure_running(ctx)
    await record(ctx, function_id, name)
    return True


def patched(change_id: str) -> Coroutine[Any, Any, bool]:
    """Whether this run of the workflow takes the code path of change ``change_id``.

    ``True`` for runs that reach this point with the new code (the decision is recorded in the
    journal, so it is ``True`` again on every recovery); ``False`` for runs that passed this
    point before the change was deployed, so they keep to the path their journal recorded::

        if await asyncflow.patched("tax-v2"):
            total = await compute_tax_v2(order)
        else:
            total = await compute_tax(order)

    Once no run that predates the change is left (nor any history you still replay), remove
    the old branch and replace the call with :func:`deprecate_patch`. Workflow bodies only.
    """
    ctx = require_workflow("patched")
    name = _marker(change_id)
    function_id = ctx.next_function_id
    recorded = ctx.journal.get(function_id)
    if recorded is not None:
        if recorded.name == name:
            ctx.reserve()
            return _answer(True)
        return _answer(False)  # a run that passed this point before the change
    if ctx.replaying or max(ctx.journal, default=-1) > function_id:
        return _answer(False)
    return _mark(ctx, ctx.reserve(), name)


def deprecate_patch(change_id: str) -> None:
    """Mark where ``patched(change_id)`` was, once its old branch is removed.

    Runs that recorded the patch's marker step over it here, so their later operations still
    line up; new runs record nothing. Remove this call too once no run that recorded the marker
    is left. Workflow bodies only; it never blocks (no ``await``).
    """
    ctx = require_workflow("deprecate_patch")
    name = _marker(change_id)
    recorded = ctx.journal.get(ctx.next_function_id)
    if recorded is not None and recorded.name == name:
        ctx.reserve()
