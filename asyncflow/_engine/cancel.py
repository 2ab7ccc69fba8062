"""Cancelling down the tree: a cancelled workflow's PENDING descendants are cancelled with it.

A child's row names its parent (``parent_workflow_id``), so the descendants are one recursive
walk down the parent index. A child being started while its parent is cancelled may commit just
after the walk read the tree; so the walk runs again as long as the previous one cancelled
anything (a workflow it cancelled may have been starting a child). A child whose start the
parent could no longer journal (it was cancelled first) is cancelled by the runner.

The cancel of the workflows themselves and the walks down their trees commit together
(:func:`cancel_with_descendants`): a connection lost or a process dying in between leaves
nothing half done — neither a cancelled parent whose children run on with nobody left to
cancel them (a timed-out parent is no longer due), nor children cancelled under a parent that
runs on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from .._core.wait import TERMINAL
from .runtime import Runtime

T = TypeVar("T")


def mark_cancelled(
    runtime: Runtime, workflow_ids: list[str], on_cancelled: Callable[[str], None] | None
) -> None:
    """After a cancel committed: tell the local executions and wake the local waiters."""
    for workflow_id in workflow_ids:
        if on_cancelled is not None:
            on_cancelled(workflow_id)
        runtime.waits.wake(TERMINAL, workflow_id)


async def cancel_with_descendants(
    runtime: Runtime, cancel: Callable[[], Awaitable[T]], roots: Callable[[T], list[str]],
    on_cancelled: Callable[[str], None] | None,
) -> tuple[T, list[str]]:
    """Run ``cancel`` (a store statement cancelling workflows) and cancel every PENDING
    descendant of the ``roots`` its result names, in ONE transaction; returns ``cancel``'s
    result and the descendants cancelled. After the commit the descendants' executions are
    told and their waiters woken (the caller does that for the workflows ``cancel`` cancelled).
    """
    store = runtime.store
    cancelled: list[str] = []
    async with store.storage.transaction():
        result = await cancel()
        walk_from = roots(result)
        while walk_from:
            now = await store.cancel_descendants(walk_from)
            if not now:
                break
            cancelled.extend(now)
    mark_cancelled(runtime, cancelled, on_cancelled)
    return result, cancelled
