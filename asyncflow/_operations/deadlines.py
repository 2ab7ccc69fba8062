"""Workflow deadlines: every live app enforces the deadlines of all workflows, with no polling.

A workflow started (or dispatched from its queue) with a timeout has a ``deadline`` in its row,
in seconds of the runtime clock durable timers use (``Runtime.now()``, so the test kit's
``skip_timers`` moves deadlines too). The enforcer is one more wait on the one wait primitive:
its check cancels every workflow whose deadline has passed — one guarded ``UPDATE … RETURNING``
per batch, so when several processes wake for the same deadline exactly one cancels each
workflow — cancels their descendants in the same transaction (so a lost connection or a crash
never leaves a timed-out parent's children running), then reads the nearest remaining deadline
and parks until then. Setting a deadline notifies kind ``d`` (the enforcers re-read the nearest
one); the listener's reconnect and the test clock wake every waiter. A cancelled workflow records a
``WorkflowTimeoutError``, which ``get_result`` raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import anyio.abc

from .._core.health import Monitor
from .._core.wait import DEADLINE, NOT_YET, QUEUE, Wait, Waiter, _NotYet, wait
from .._engine.cancel import cancel_with_descendants, mark_cancelled
from .._engine.runtime import Runtime
from .._primitives.timers import loop_deadline

#: At most this many workflows are cancelled by one statement (more are cancelled at once after).
ENFORCE_BATCH = 500


class DeadlineWatcher:
    """Cancels workflows whose deadline passed, sleeping until the nearest one otherwise."""

    def __init__(self, runtime: Runtime, on_cancelled: Callable[[str], None] | None) -> None:
        self._runtime = runtime
        self._on_cancelled = on_cancelled
        self.monitor = Monitor("deadlines")
        self.monitor.ok()  # healthy until a check fails (the app launched: the database answers)
        self.enforced = 0

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Enforce deadlines until the app shuts down; failures are reported through health and
        retried with backoff (ended early by a deadline being set, or a reconnect)."""
        waits = self._runtime.waits
        loop = asyncio.get_running_loop()
        task_status.started()
        delay = 0.05
        while True:
            try:
                await wait(Wait(waits, ((DEADLINE, ""),), self._check, background=True))
                delay = 0.05
            except Exception as exc:  # a database error: report, back off, retry
                self.monitor.failed(exc)
                with waits.watch((DEADLINE, "")) as woken:
                    await woken.wait_until(loop.time() + delay)
                delay = min(delay * 2, 5.0)

    async def _check(self, waiter: Waiter) -> int | _NotYet:
        await self.enforce()
        nearest = await self._runtime.store.next_deadline()
        self.monitor.ok()
        # Park until the nearest deadline (a new one set anywhere wakes this waiter first).
        waiter.deadline = None if nearest is None else loop_deadline(self._runtime, nearest)
        return NOT_YET

    async def enforce(self) -> list[str]:
        """Cancel every workflow whose deadline has passed, with its descendants; returns the
        ids of the workflows that timed out."""
        runtime = self._runtime
        store = runtime.store
        timed_out: list[str] = []
        while True:
            # One transaction per batch: the timed-out workflows and their descendants.
            done, _descendants = await cancel_with_descendants(
                runtime, lambda: store.enforce_deadlines(runtime.now(), ENFORCE_BATCH),
                lambda rows: [workflow_id for workflow_id, _ in rows], self._on_cancelled)
            self.enforced += len(done)  # counted before anyone is woken
            ids = [workflow_id for workflow_id, _ in done]
            mark_cancelled(runtime, ids, self._on_cancelled)
            for queue_name in {queue for _, queue in done if queue is not None}:
                runtime.waits.wake(QUEUE, queue_name)  # a slot of the queue may be free
            timed_out.extend(ids)
            if len(done) < ENFORCE_BATCH:
                break
        return timed_out
