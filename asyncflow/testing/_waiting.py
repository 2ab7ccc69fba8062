"""Waiting for a workflow to wait, and durable timers run without waiting.

Durable timers (``sleep``, the deadlines of ``recv``/``get_event``, a ``wait_first`` timer) go
by the app's runtime clock. :func:`skip_timers` moves that clock forward and wakes every waiter
to look again: a timer that falls due fires at once; one that does not yet parks until its new,
earlier time. The offset belongs to the app object for the test: a relaunch keeps it.

A timer is only skipped if it was set before the skip. :func:`until_waiting` returns once a
workflow is parked in a durable wait (its timer, if any, set) that it parked in after the latest
skip, told by the app's waiter registry as the workflow parks -- no polling. (Right after a
skip, a workflow still counts as parked in the wait whose timer just fired until its task runs
again: that wait does not count, or two skips in a row would both skip the same timer.)
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any

from .._codec import check_id
from .._errors import (
    InvalidArgumentError,
)
from .._front.app import AsyncFlow
from .._primitives.handle import WorkflowHandle
from ._control import control_of
from ._until import until_event

WorkflowRef = str | WorkflowHandle[Any]


def workflow_id_of(workflow: object) -> str:
    if isinstance(workflow, WorkflowHandle):
        return workflow.workflow_id
    if isinstance(workflow, str):
        return check_id(workflow)
    raise InvalidArgumentError(
        f"give a workflow as its id (str) or its WorkflowHandle, not {workflow!r}")


async def until_waiting(
    app: AsyncFlow, workflow: WorkflowRef, *, timeout_seconds: float = 60.0
) -> None:
    """Return once ``workflow`` (an id or a handle), running in ``app``, is parked in a durable
    wait: ``sleep``, ``recv``, ``get_event``, ``wait_first``, a child's result. Its timer, if the
    wait has one, is then set, so :func:`skip_timers` moves it. After a skip, only a wait the
    workflow parked in after that skip counts (not the one whose timer the skip just fired).

    Raises ``AssertionError`` (with the workflow's journal) if the workflow ends first, and
    ``AsyncFlowTimeoutError`` after ``timeout_seconds``.
    """
    workflow_id = workflow_id_of(workflow)
    control = control_of(app)
    deadline = asyncio.get_running_loop().time() + timeout_seconds
    while not control.waiting_since_skip(workflow_id):
        event = asyncio.Event()
        control.park_waiters.setdefault(workflow_id, []).append(event)
        # Each wake-up is a park (or a detach): look again, within the one timeout.
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        await until_event(app, event, workflow_id, remaining,
                          f"workflow {workflow_id!r} waited")
        if not control.attached:
            return  # reset meanwhile: nobody tracks the workflow's waits any more


def seconds_of(
    seconds: float | timedelta, minutes: float, hours: float, days: float
) -> float:
    total = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
    for value in (total, minutes, hours, days):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value) or value < 0:
            raise InvalidArgumentError(
                f"skip_timers moves the clock forward by a finite amount >= 0, not {value!r}")
    return float(total) + 60.0 * minutes + 3600.0 * hours + 86400.0 * days


async def skip_timers(
    app: AsyncFlow,
    seconds: float | timedelta = 0.0,
    *,
    minutes: float = 0.0,
    hours: float = 0.0,
    days: float = 0.0,
    once_waiting: WorkflowRef | None = None,
) -> None:
    """Move ``app``'s durable clock forward: timers that fall due fire now.

    ``skip_timers(app, days=3)`` makes a workflow sleeping 3 days (or waiting
    ``recv(timeout_seconds=3 * 86400)``) go on at once; a timer not yet due parks until its
    new, earlier time. Only timers already set are moved, so with ``once_waiting=handle`` it
    first waits (see :func:`until_waiting`) until that workflow is parked in its wait. The
    offset lasts for the app object until :func:`reset` (after the test), across relaunches.
    """
    total = seconds_of(seconds, minutes, hours, days)
    if once_waiting is not None:
        await until_waiting(app, once_waiting)
    control = control_of(app)
    control.offset += total
    control.skips += 1
    runtime = app._runtime
    if runtime is not None and not runtime.closing:
        runtime.advance_clock(total)  # wakes every waiter: each looks at the clock again
