"""The journal: replaying recorded operations and recording new ones, for every primitive.

Each durable operation of a workflow owns one function id. Its row in ``operations`` is written
only while the workflow is PENDING at the epoch the execution started with; a second row for the
same id means another execution of the same workflow got there first, and this one stops
(``_ExecutionConflict``); a moved epoch means the workflow was claimed by another execution, and
this one stops without recording anything (``_OwnershipLost``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from .. import _codec
from .._core.wait import JOURNAL
from .._errors import (
    DatabaseUnavailableError,
    StepFailedError,
    WorkflowCancelledError,
    _ExecutionConflict,
    _OwnershipLost,
)
from .._recorded import decode_error
from .._status import CANCELLED, PENDING
from .._storage.store import JournalEntry
from .context import WorkflowContext

logger = logging.getLogger("asyncflow")


def ownership_lost(ctx: WorkflowContext, epoch: int) -> _OwnershipLost:
    """The error that stops an execution whose workflow was claimed elsewhere (logged once)."""
    logger.warning(
        "workflow %s was claimed by another execution (epoch %d, this execution's %d); this "
        "execution stops without recording anything", ctx.workflow_id, epoch, ctx.epoch)
    return _OwnershipLost(f"workflow {ctx.workflow_id!r} is owned by another execution now")


async def stop_for_status(ctx: WorkflowContext) -> None:
    """A write was refused: raise cancellation, or stop this execution quietly (the workflow
    ended, or another execution owns it now)."""
    status, epoch = await ctx.runtime.store.workflow_ownership(ctx.workflow_id)
    if status is not None and epoch != ctx.epoch:
        raise ownership_lost(ctx, epoch)
    if status == CANCELLED:
        ctx.cancelled = True
        raise WorkflowCancelledError(f"workflow {ctx.workflow_id!r} was cancelled")
    raise _ExecutionConflict(f"workflow {ctx.workflow_id!r} is {status}")


async def ensure_running(ctx: WorkflowContext) -> None:
    """Before starting an operation: stop if the workflow was cancelled (or ended elsewhere),
    or if an earlier operation of this execution lost the database (the execution is re-run
    from its journal: nothing may be recorded after an operation that was not)."""
    if not ctx.needs_check:
        return
    if ctx.db_failed:
        raise DatabaseUnavailableError(
            f"an earlier operation of workflow {ctx.workflow_id!r} could not reach the "
            "database; this execution records nothing more and is re-run from its journal")
    ctx.check_cancelled()
    ctx.stop_hint = False
    status, epoch = await ctx.runtime.store.workflow_ownership(ctx.workflow_id)
    if status != PENDING or epoch != ctx.epoch:
        await stop_for_status(ctx)


async def checked(ctx: WorkflowContext, write: Awaitable[bool]) -> None:
    """Await a guarded journal write; stop if it was refused (the workflow is not PENDING)."""
    if not await write:
        await stop_for_status(ctx)


async def record(ctx: WorkflowContext, function_id: int, name: str, **fields: Any) -> None:
    """Write one journal entry (guarded: only while the workflow is PENDING)."""
    hook = ctx.runtime.on_checkpoint
    if hook is not None:
        hook(ctx.workflow_id, function_id, name)
    # (checked(), inline: every step's checkpoint comes here)
    if not await ctx.runtime.store.record_operation(
            ctx.workflow_id, function_id, name, ctx.epoch, **fields):
        await stop_for_status(ctx)
    ctx.runtime.waits.wake(JOURNAL, ctx.workflow_id)  # observers only: nobody waits on it


def replayed_value(recorded: JournalEntry) -> Any:
    """The recorded outcome: the value, or the recorded exception raised again."""
    if recorded.error is not None:
        raise decode_error(recorded.error, StepFailedError)
    return None if recorded.output is None else _codec.loads(recorded.output)


async def begin(ctx: WorkflowContext, function_id: int, name: str) -> JournalEntry | None:
    """Start operation #function_id: its recorded entry when replaying, else ``None`` once the
    workflow is known to be still running."""
    recorded = ctx.replay(function_id, name)
    if recorded is None:
        await ensure_running(ctx)
    return recorded

