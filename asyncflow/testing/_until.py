"""Waiting, in a test, for something to happen to a workflow before it ends (used by the crash
helpers and the timer helpers alike)."""

from __future__ import annotations

import asyncio
from typing import Any

from .._errors import AsyncFlowError, AsyncFlowTimeoutError, WorkflowNotFoundError
from .._front.app import AsyncFlow


async def journal_text(app: AsyncFlow, workflow_id: str) -> str:
    """The workflow's journal, one ``#n name`` per line, for error messages."""
    try:
        steps = await app.list_workflow_operations(workflow_id)
    except AsyncFlowError as exc:
        return f"(journal unavailable: {exc})"
    lines = [f"  #{s.function_id} {s.name}{'' if s.completed else ' (open)'}" for s in steps]
    return "\n".join(lines) or "  (empty)"


async def until_event(
    app: AsyncFlow,
    event: asyncio.Event,
    workflow_id: str | None,
    timeout_seconds: float,
    what: str,
) -> None:
    """Wait for ``event``; if ``workflow_id`` ends first, raise AssertionError naming ``what``.
    Both waits are tasks of this call: awaited here, and cancelled before it returns."""
    waiter: asyncio.Task[Any] = asyncio.ensure_future(event.wait())
    ended: asyncio.Task[Any] | None = None
    if workflow_id is not None:
        ended = asyncio.ensure_future(_ended(app, workflow_id))
    pending = {waiter} if ended is None else {waiter, ended}
    try:
        done, _ = await asyncio.wait(pending, timeout=timeout_seconds,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    if waiter in done:
        return
    if ended is not None and ended in done:
        status = ended.result()
        assert workflow_id is not None
        raise AssertionError(
            f"workflow {workflow_id!r} ended ({status}) before {what}; its journal:\n"
            + await journal_text(app, workflow_id))
    raise AsyncFlowTimeoutError(f"{what} did not happen within {timeout_seconds} s")


async def _ended(app: AsyncFlow, workflow_id: str) -> str:
    """The workflow's final status, once it has one (woken by NOTIFY, never polled)."""
    try:
        handle = await app.retrieve_workflow(workflow_id)
    except WorkflowNotFoundError:
        await asyncio.Event().wait()  # not started (yet): it cannot end first
        raise AssertionError("unreachable") from None
    try:
        await handle.get_result()
    except Exception:  # the workflow's own exception, or how it ended (cancelled, …)
        pass
    return (await handle.get_status()).status


