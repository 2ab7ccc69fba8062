"""Workflow attributes: searchable key/value pairs on a workflow (``list_workflows(
attributes=...)`` finds workflows by them, through a GIN index).

From a workflow's body ``asyncflow.set_attributes`` is journaled: the journal entry and the
update are one statement, fenced by the execution's epoch, so a replay does not set them again
and a stale execution cannot set them at all. From outside, ``set_workflow_attributes`` (on the
app and on a Client) sets them at once. Both merge by default (``merge=False`` replaces).
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any

from .. import _codec
from .._core.wait import JOURNAL
from .._engine.context import WorkflowContext, require_workflow
from .._engine.journal import begin, checked
from .._errors import InvalidArgumentError
from .._filters import check_attributes

NAME = "asyncflow.set_attributes"


def set_attributes(attributes: Mapping[str, Any], *,
                   merge: bool = True) -> Coroutine[Any, Any, None]:
    """Validate the attributes and reserve the function id (at the call); the journaled write."""
    ctx = require_workflow("set_attributes")
    text = check_attributes(attributes)
    return _journaled(ctx, ctx.reserve(), text, _check_flag(merge, "merge"))


async def _journaled(ctx: WorkflowContext, function_id: int, text: str, merge: bool) -> None:
    if await begin(ctx, function_id, NAME) is not None:
        return  # set by an earlier execution of this run
    await checked(ctx, ctx.runtime.store.journaled_set_attributes(
        ctx.workflow_id, function_id, text, merge, ctx.epoch))
    ctx.runtime.waits.wake(JOURNAL, ctx.workflow_id)  # observers only


def _check_flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be True or False, not {value!r}")
    return value


def check_outside(workflow_id: object, attributes: object, merge: object) -> tuple[str, bool]:
    """Validate ``set_workflow_attributes``' arguments (bad input fails here)."""
    _codec.check_id(workflow_id)
    return check_attributes(attributes), _check_flag(merge, "merge")
