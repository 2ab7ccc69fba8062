"""The recovery supervisor: claims PENDING workflows nobody runs and runs them here (a queued
one goes back to its queue instead, for a dispatcher to run within the queue's limits).

A workflow needs recovering when its executor's process is gone. Every live app holds a
session-level advisory lock derived from its executor id (on its LISTEN connection), so "the
executor is dead" is "its lock is free", read from ``pg_locks`` in the claim query itself.
Postgres cannot notify anyone when a backend dies, so that check runs every
``recovery_interval_seconds``; resumed or unassigned workflows (kind ``r`` notifications) wake
the supervisor at once. Claims use ``FOR NO KEY UPDATE SKIP LOCKED``: two supervisors never take
the same workflow. A failing sweep is logged, reported through health, and retried.
"""

from __future__ import annotations

import asyncio
import logging

import anyio
import anyio.abc

from ._health import Monitor
from ._runner import Runner
from ._specs import WorkflowSpec
from ._status import MAX_RECOVERY_ATTEMPTS_EXCEEDED
from ._wait import QUEUE, RESUMED, TERMINAL, wait_until

logger = logging.getLogger("asyncflow")

CLAIM_BATCH = 500
PRUNE_EVERY = 100  # sweeps between two prunings of dead executors' rows


class Supervisor:
    """Periodically (and on demand) claims orphaned workflows for its app."""

    def __init__(self, runner: Runner, specs: dict[str, WorkflowSpec], interval: float) -> None:
        self._runner = runner
        self._specs = specs
        self._interval = interval
        self._wakeup = asyncio.Event()
        self.monitor = Monitor("supervisor")
        self.sweeps = 0

    def poke(self) -> None:
        """Sweep now (a workflow was resumed or left unassigned)."""
        self._wakeup.set()

    def on_notify(self, kind: str) -> None:
        if kind == RESUMED:
            self.poke()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        loop = asyncio.get_running_loop()
        delay = self._interval
        while True:
            await wait_until(self._wakeup, loop.time() + delay)
            self._wakeup.clear()
            try:
                await self.sweep(include_own=False)
                delay = self._interval
            except Exception as exc:  # any database error: log, report, retry with backoff
                self.monitor.failed(exc)
                delay = min(max(delay * 2, self._interval), 30.0)

    async def sweep(self, *, include_own: bool) -> int:
        """Claim and start what can be recovered; returns how many workflows were claimed."""
        runner = self._runner
        store = runner.runtime.store
        executor_id = runner.runtime.executor_id
        assert executor_id is not None
        self.sweeps += 1
        # Queued workflows of dead executors go back to their queue (their dispatchers run them
        # within the queue's limits); the others are claimed and run here.
        for queue_name in await store.requeue_orphans(executor_id, include_own):
            runner.runtime.waits.wake(QUEUE, queue_name)
        total = 0
        while True:
            claimed = await store.claim_workflows(
                executor_id, list(self._specs), runner.app_version, include_own, CLAIM_BATCH,
            )
            for row in claimed:
                spec = self._specs[row.name]
                if row.recovery_attempts > spec.max_recovery_attempts:
                    logger.error(
                        "workflow %s exceeded %d recovery attempts; moving it to "
                        "MAX_RECOVERY_ATTEMPTS_EXCEEDED", row.workflow_id,
                        spec.max_recovery_attempts,
                    )
                    if await store.dead_letter(row.workflow_id):
                        runner.runtime.waits.wake(TERMINAL, row.workflow_id)
                        if runner.runtime.telemetry is not None:
                            runner.runtime.telemetry.workflow_finished(
                                row.name, MAX_RECOVERY_ATTEMPTS_EXCEEDED)
                    continue
                # If an execution is still unwinding here (say it was cancelled, then resumed),
                # spawn runs the workflow again as soon as that one has ended.
                runner.spawn(row.workflow_id, spec, row.inputs, fresh=False)
            total += len(claimed)
            if len(claimed) < CLAIM_BATCH:
                if self.sweeps % PRUNE_EVERY == 1:
                    await store.prune_executors()
                self.monitor.ok()
                return total
