"""The recovery supervisor: claims PENDING workflows nobody runs and runs them here (a queued
one goes back to its queue instead, for a dispatcher to run within the queue's limits).

A workflow needs recovering when its executor's process is gone. An executor is dead when its
lease ran out (no heartbeat for ``liveness_timeout_seconds``) *and* its liveness lock is free;
both are read in the claim query itself. On the same host the supervisor also proves a silent
executor dead at once when its process no longer exists (``_core.process``). Right after its own
listener reconnected, a supervisor declares nobody dead for a whole lease: the others may not
have renewed theirs yet. Postgres cannot notify anyone when a backend dies, so the sweep runs
every ``recovery_interval_seconds``; resumed or unassigned workflows (kind ``r``
notifications) wake the supervisor at once. Claims bump each workflow's epoch and use
``FOR NO KEY UPDATE SKIP LOCKED``: two supervisors never take the same workflow, and a stale
execution elsewhere is fenced off. A failing sweep is logged, reported through health, and
retried.

Self-repair: "nothing is PENDING on this executor that it does not run". Each sweep compares
how many workflows are PENDING here with how many run here; after a reconnect (or a change of
server), an execution that stopped early, or more PENDING than running in two sweeps in a row
(one alone may be a start in flight), it claims again (a new epoch) those of its own PENDING
workflows that nothing runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from .._core.health import Monitor
from .._core.process import process_gone
from .._core.wait import DEADLINE, QUEUE, RESUMED, TERMINAL, wait_until
from .._specs import WorkflowSpec
from .._status import MAX_RECOVERY_ATTEMPTS_EXCEEDED
from .._storage.lease import Liveness
from .._storage.store import Claimed
from .runner import Runner

logger = logging.getLogger("asyncflow")

CLAIM_BATCH = 500
PRUNE_EVERY = 100  # sweeps between two prunings of dead executors' rows
#: Self-repair leaves alone what was made PENDING here in the last seconds (a start, claim or
#: dispatch commits just before its execution is spawned).
REPAIR_MIN_AGE = 2.0


class Supervisor:
    """Periodically (and on demand) claims orphaned workflows for its app."""

    def __init__(self, runner: Runner, specs: dict[str, WorkflowSpec], interval: float,
                 liveness: Liveness) -> None:
        self._runner = runner
        self._specs = specs
        self._interval = interval
        self._liveness = liveness
        self._wakeup = asyncio.Event()
        self._repair = True
        self._surplus = False  # the last sweep counted more PENDING here than running
        self.monitor = Monitor("supervisor")
        self.sweeps = 0
        #: Workflows claimed again by self-repair (for tests and health).
        self.repaired = 0
        #: The adoption of workflows stranded on other app versions (``_operations.adoption``),
        #: run in
        #: each sweep; it adopts only when told the sweep may take others' workflows, and
        #: returns the PENDING ones adopted.
        self.adopt: Callable[[bool], Awaitable[list[Claimed]]] | None = None

    def poke(self, *, repair: bool = False) -> None:
        """Sweep now (a workflow was resumed or left unassigned; with ``repair``, an execution
        here stopped early or the listener reconnected: look for own workflows nothing runs)."""
        self._repair = self._repair or repair
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

    def _may_take_others(self) -> bool:
        listener = self._runner.runtime.listener
        return listener.connected and self._liveness.connected_for(
            listener.reconnected_at, asyncio.get_running_loop().time())

    async def sweep(self, *, include_own: bool) -> int:
        """Claim and start what can be recovered; returns how many workflows were claimed.
        ``include_own`` (at launch): this executor's own PENDING workflows too (queued ones go
        back to their queue)."""
        runner = self._runner
        store = runner.runtime.store
        executor_id = runner.runtime.executor_id
        assert executor_id is not None
        if self._liveness.replaced:
            return 0  # another process holds this executor id now: it recovers
        self.sweeps += 1
        take_others = self._may_take_others()
        if take_others and self._liveness.host is not None:
            await self._end_leases_of_the_dead()
        # Queued workflows of dead executors go back to their queue (their dispatchers run them
        # within the queue's limits); the others are claimed and run here.
        for queue_name in await store.requeue_orphans(executor_id, include_own, take_others):
            runner.runtime.waits.wake(QUEUE, queue_name)
        total = await self._repair_own(REPAIR_MIN_AGE if not include_own else 0.0,
                                       force=include_own)
        while True:
            claimed = await store.claim_workflows(
                executor_id, list(self._specs), runner.app_version, take_others, CLAIM_BATCH,
            )
            await self._run_claimed(claimed)
            total += len(claimed)
            if len(claimed) < CLAIM_BATCH:
                if self.adopt is not None:
                    adopted = await self.adopt(take_others)
                    await self._run_claimed(adopted)
                    total += len(adopted)
                if self.sweeps % PRUNE_EVERY == 1:
                    await store.prune_executors()
                self.monitor.ok()
                return total

    async def _end_leases_of_the_dead(self) -> None:
        """Executors on this host whose lock is free and whose process is gone are dead now,
        lease or not."""
        store = self._runner.runtime.store
        host = self._liveness.host
        assert host is not None
        for silent in await store.unlocked_on_host(host, self._liveness.executor_id):
            if process_gone(silent.process) and await store.declare_executor_dead(silent):
                logger.info("asyncflow executor %s: its process is gone; recovering its "
                            "workflows", silent.executor_id)

    async def _repair_own(self, min_age: float, *, force: bool) -> int:
        """Claim again this executor's PENDING workflows that nothing runs here."""
        runner = self._runner
        store = runner.runtime.store
        executor_id = self._liveness.executor_id
        if not (force or self._repair):
            surplus = await store.own_pending_count(executor_id) > len(runner.running)
            seen, self._surplus = self._surplus, surplus
            if not (surplus and seen):
                return 0
        self._repair = self._surplus = False
        stray = [workflow_id for workflow_id in await store.own_pending(executor_id, min_age)
                 if workflow_id not in runner.running]
        if not stray:
            return 0
        claimed = await store.claim_own(executor_id, stray, list(self._specs),
                                        runner.app_version)
        if claimed and not force:
            logger.warning("asyncflow executor %s: %d of its PENDING workflows ran nowhere "
                           "(e.g. %s); running them again from their checkpoints",
                           executor_id, len(claimed), claimed[0].workflow_id)
            self.repaired += len(claimed)
        await self._run_claimed(claimed)
        return len(claimed)

    async def _run_claimed(self, claimed: list[Claimed]) -> None:
        runner = self._runner
        store = runner.runtime.store
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
            if row.deadline is not None:
                runner.runtime.waits.wake(DEADLINE, "")
            # If an execution is still unwinding here (say it was cancelled, then resumed),
            # spawn runs the workflow again as soon as that one has ended.
            runner.spawn(row.workflow_id, spec, row.inputs, fresh=False, epoch=row.epoch)
