"""The recovery supervisor: claims PENDING workflows nobody runs and runs them here.

A workflow needs recovering when its executor's process is gone. Every live app holds a
session-level advisory lock derived from its executor id (on its LISTEN connection), so "the
executor is dead" is "its lock is free", read from ``pg_locks`` in the claim query itself.
Postgres cannot notify anyone when a backend dies, so that check runs every
``recovery_interval_seconds``; resumed or unassigned workflows (kind ``r`` notifications) wake
the supervisor at once. Claims use ``FOR UPDATE SKIP LOCKED``: two supervisors never take the
same workflow.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from . import _notify
from . import _queries as Q
from ._errors import AsyncFlowError

if TYPE_CHECKING:
    from ._engine import AsyncFlow

logger = logging.getLogger("asyncflow")

CLAIM_BATCH = 500


class Supervisor:
    """Periodically (and on demand) claims orphaned workflows for its app."""

    def __init__(self, app: AsyncFlow, interval: float) -> None:
        self._app = app
        self._interval = interval
        self._wakeup = asyncio.Event()
        self.sweeps = 0

    def poke(self) -> None:
        """Sweep now (a workflow was resumed or left unassigned)."""
        self._wakeup.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        loop = asyncio.get_running_loop()
        while True:
            await _notify.wait_until(self._wakeup, loop.time() + self._interval)
            self._wakeup.clear()
            try:
                await self.sweep(include_own=False)
            except AsyncFlowError as exc:
                logger.warning("asyncflow recovery sweep failed: %s", exc)

    async def sweep(self, *, include_own: bool) -> int:
        """Claim and start what can be recovered; returns how many workflows were claimed."""
        app = self._app
        storage = app.storage
        self.sweeps += 1
        total = 0
        while True:
            rows = await storage.fetch(
                Q.CLAIM_WORKFLOWS,
                app.executor_id,
                list(app._workflows),
                app.app_version,
                include_own,
                storage.namespace,
                CLAIM_BATCH,
            )
            for row in rows:
                workflow_id = row["workflow_id"]
                spec = app._workflows[row["name"]]
                if row["recovery_attempts"] > spec.max_recovery_attempts:
                    logger.error(
                        "workflow %s exceeded %d recovery attempts; moving it to "
                        "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
                        workflow_id,
                        spec.max_recovery_attempts,
                    )
                    if await storage.fetch(Q.DEAD_LETTER, workflow_id, storage.channel):
                        app._registry.wake(_notify.TERMINAL, workflow_id)
                    continue
                # If an execution is still unwinding here (say it was cancelled, then resumed),
                # _spawn runs the workflow again as soon as that one has ended.
                app._spawn(workflow_id, spec, row["inputs"], fresh=False)
            total += len(rows)
            if len(rows) < CLAIM_BATCH:
                return total
