"""Queue dispatch: one dispatcher per queue a process serves, and it is one more wait.

The dispatcher waits on key ``(q, queue name)``; its check claims what may start now
(``Store.claim_queued``: serialized per queue by the queue row's lock, counting running
workflows and recent starts in the same transaction) and runs the claimed workflows here. The
key is woken by NOTIFY from other processes (a workflow enqueued or put back in the queue) and
directly by this process's own commits (an enqueue here; a local workflow of the queue ending,
seen by an observer of the registry). Queues whose limits count across processes also wait on
``(f, queue name)``: a workflow of the queue ended elsewhere, so a slot may be free. The only
timer is a real deadline: the next DELAYED workflow's time or the moment the rate limit's
window opens, which the claim reports. The listener's reconnect wakes every waiter, so every
dispatcher re-checks after an outage. No polling loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from .._core.health import Monitor
from .._core.telemetry import detached
from .._core.wait import (
    DEADLINE,
    NOT_YET,
    QUEUE,
    SLOT_FREED,
    TERMINAL,
    Key,
    Wait,
    Waiter,
    _NotYet,
    wait,
)
from .._specs import QueueSpec, WorkflowSpec
from .._status import MAX_RECOVERY_ATTEMPTS_EXCEEDED
from .._storage.store import ClaimArgs, EnqueueClaimed, Enqueued, QueueClaim
from .runner import Runner

logger = logging.getLogger("asyncflow")

#: At most this many workflows are claimed by one claim (a busy queue is claimed again at once).
CLAIM_BATCH = 100


class Dispatcher:
    """Claims and runs the workflows of one queue in this process, within the queue's limits."""

    def __init__(self, spec: QueueSpec, runner: Runner, specs: dict[str, WorkflowSpec]) -> None:
        self.spec = spec
        self._runner = runner
        self._specs = specs
        self._key = (QUEUE, spec.name)
        # A workflow of the queue ending elsewhere matters only to limits counted across
        # processes; this process's own endings are seen by the observer (any limit).
        self._keys: tuple[Key, ...] = (self._key,)
        if spec.concurrency is not None or spec.partition_concurrency is not None:
            self._keys += ((SLOT_FREED, spec.name),)
        #: Workflows of this queue started here and not ended yet (for the local slot wake-up).
        self._local: set[str] = set()
        #: A claim failed: its transaction may have committed unseen, so claimed workflows
        #: not running here are put back before the next claim.
        self._uncertain = False
        self.monitor = Monitor(f"queue {spec.name}")
        self.monitor.ok()  # healthy until a claim fails (the app launched: the database answers)
        self.claimed = 0
        #: Telemetry on: how many workflows waited in the queue after this dispatcher's last
        #: claim (the ``asyncflow.queue.depth`` metric); ``None`` until counted.
        self.depth: int | None = None
        #: An enqueue here is claiming with its insert (at most one at a time).
        self._enqueuing = False

    def _observe(self, kind: str, workflow_id: str) -> None:
        if kind == TERMINAL and workflow_id in self._local:
            self._local.discard(workflow_id)
            self._runner.runtime.waits.wake(*self._key)  # a slot of the queue is free here

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Dispatch until the app shuts down; failures are reported through health and
        retried with backoff (ended early by a wake-up of the queue or a reconnect)."""
        waits = self._runner.runtime.waits
        remove = waits.add_observer(self._observe) if self.spec.bounds_running else None
        loop = asyncio.get_running_loop()
        task_status.started()
        delay = 0.05
        try:
            while True:
                try:
                    await wait(Wait(waits, self._keys, self._check))
                    delay = 0.05
                except Exception as exc:  # a database error: report, back off, retry
                    self._uncertain = True
                    self.monitor.failed(exc)
                    with waits.watch(self._key) as woken:
                        await woken.wait_until(loop.time() + delay)
                    delay = min(delay * 2, 5.0)
        finally:
            if remove is not None:
                remove()

    async def _check(self, waiter: Waiter) -> int | _NotYet:
        runner = self._runner
        runtime = runner.runtime
        store = runtime.store
        executor_id = runtime.executor_id
        assert executor_id is not None
        # (Not while an enqueue here is starting what it claimed: those are not running yet.
        # It wakes this dispatcher when it is done.)
        if self._uncertain and not self._enqueuing:
            if await store.release_unstarted(self.spec.name, executor_id, list(runner.running)):
                logger.info("asyncflow queue %s: put back workflows claimed by a claim whose "
                            "outcome was lost", self.spec.name)
            self._uncertain = False
        claims, wait_s, more = await store.claim_queued(
            self.spec, executor_id, list(self._specs), runner.app_version, CLAIM_BATCH,
            runtime.now())
        if runtime.telemetry is not None:
            self.depth = await store.queue_depth(self.spec.name)
        self.monitor.ok()
        if claims:
            await self._start_all(claims)
            if more:
                return len(claims)  # claim again at once
        # Nothing more startable now: park (at once re-checked if woken during this check)
        # until a wake-up or the next deadline.
        waiter.deadline = None if wait_s is None else (
            asyncio.get_running_loop().time() + max(wait_s, 0.001))
        return NOT_YET

    async def enqueue(
        self, workflow_id: str,
        insert: Callable[[ClaimArgs], Awaitable[EnqueueClaimed]],
    ) -> Enqueued | None:
        """An enqueue in this process that claims in the same statement (``insert``, given the
        claim's arguments): one commit before the workflow runs here, instead of the enqueue's
        and then this dispatcher's. Starts what it claimed and wakes this dispatcher unless it
        took the new workflow and nothing else may be waiting. ``None``: not now (another such
        enqueue is in flight, a claim's outcome is uncertain, or the app is stopping): the
        caller enqueues the plain way."""
        runner = self._runner
        runtime = runner.runtime
        if self._enqueuing or self._uncertain or runtime.closing or runtime.executor_id is None:
            return None
        self._enqueuing = True
        try:
            try:
                found, claims, wait_s, more = await insert(ClaimArgs(
                    self.spec, runtime.executor_id, list(self._specs), CLAIM_BATCH,
                    runtime.now()))
            except BaseException:
                self._uncertain = True  # its claim may have committed unseen: put back first
                runtime.waits.wake(*self._key)
                raise
            if claims:
                # Claimed here, they run here; started as the dispatcher would (outside the
                # enqueuer's trace: a run's span follows the trace context stored with it).
                with anyio.CancelScope(shield=True), detached(runtime.telemetry):
                    await self._start_all(claims)
            if more or wait_s is not None or not any(
                    claim.workflow_id == workflow_id for claim in claims):
                runtime.waits.wake(*self._key)
            return found
        finally:
            self._enqueuing = False
            if self._uncertain:  # a claim failed meanwhile: its put-back waited for this one
                runtime.waits.wake(*self._key)

    async def _start_all(self, claims: list[QueueClaim]) -> None:
        self._local.intersection_update(self._runner.running)
        for claim in claims:
            await self._start(claim)
        self.claimed += len(claims)

    async def _start(self, claim: QueueClaim) -> None:
        runner = self._runner
        spec = self._specs[claim.name]
        if claim.recovery_attempts > spec.max_recovery_attempts:
            logger.error(
                "workflow %s exceeded %d recovery attempts; moving it to "
                "MAX_RECOVERY_ATTEMPTS_EXCEEDED", claim.workflow_id, spec.max_recovery_attempts)
            if await runner.runtime.store.dead_letter(claim.workflow_id):
                runner.runtime.waits.wake(TERMINAL, claim.workflow_id)
                if runner.runtime.telemetry is not None:
                    runner.runtime.telemetry.workflow_finished(
                        claim.name, MAX_RECOVERY_ATTEMPTS_EXCEEDED)
            return
        timeout = spec.timeout_seconds
        if claim.deadline is not None:
            runner.runtime.waits.wake(DEADLINE, "")  # its clock started: this process enforces
        elif timeout is not None:  # enqueued by name (a Client): the function's default applies
            now = runner.runtime.now()
            if await runner.runtime.store.set_deadline(claim.workflow_id, timeout, now + timeout,
                                                       claim.epoch):
                runner.runtime.waits.wake(DEADLINE, "")
        if self.spec.bounds_running:
            self._local.add(claim.workflow_id)
        runner.spawn(claim.workflow_id, spec, claim.inputs, fresh=claim.fresh, epoch=claim.epoch)
