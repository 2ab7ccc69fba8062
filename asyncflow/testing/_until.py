"""Waiting, in a test, for something to happen to a workflow before it ends (used by the crash
helpers and the timer helpers alike)."""

from __future__ import annotations

import asyncio

import anyio

from .._app import AsyncFlow
from .._errors import AsyncFlowError, AsyncFlowTimeoutError, WorkflowNotFoundError


async def journal_text(app: AsyncFlow, workflow_id: str) -> str:
    """The workflow's journal, one ``#n name`` per line, for error messages."""
    try:
        steps = await app.list_workflow_steps(workflow_id)
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
    """Wait for ``event``; if ``workflow_id`` ends first, raise AssertionError naming ``what``."""
    outcome: dict[str, str] = {}

    async def happened(scope: anyio.CancelScope) -> None:
        await event.wait()
        outcome["event"] = "set"
        scope.cancel()

    async def ended_first(scope: anyio.CancelScope, target: str) -> None:
        outcome["ended"] = await _ended(app, target)
        scope.cancel()

    with anyio.move_on_after(timeout_seconds):
        async with anyio.create_task_group() as tg:
            tg.start_soon(happened, tg.cancel_scope)
            if workflow_id is not None:
                tg.start_soon(ended_first, tg.cancel_scope, workflow_id)
    if "event" in outcome:
        return
    if "ended" in outcome:
        assert workflow_id is not None
        raise AssertionError(
            f"workflow {workflow_id!r} ended ({outcome['ended']}) before {what}; its journal:\n"
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


