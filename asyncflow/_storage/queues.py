"""The store's statements for queues (``_operations.queues``, ``_engine.dispatch``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from .._errors import WorkflowConflictError
from .._specs import QueueSpec
from .base import StoreBase
from .sql import queues


@dataclass(frozen=True, slots=True)
class Enqueued:
    """What an enqueue found: ``created``, else the name of the workflow that already has the
    id (``existing_name``) or the id of the active workflow holding the deduplication id."""

    created: bool
    existing_name: str | None
    holder: str | None
    owned: bool = True  # False: the parent's execution no longer owns the parent (nothing done)


@dataclass(frozen=True, slots=True)
class QueueClaim:
    """One workflow a dispatcher claimed: it is PENDING on this executor now. ``fresh``: it
    never ran before (no journal to load)."""

    workflow_id: str
    name: str
    inputs: str
    recovery_attempts: int
    fresh: bool
    #: Its deadline (runtime-clock seconds), if it has a timeout (set at dispatch).
    deadline: float | None = None
    #: The ownership epoch this claim gave it (its execution's writes are fenced by it).
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class ClaimArgs:
    """What a claim by this executor needs besides the queue's name: the queue's limits
    (``spec``), this executor, the workflow names it runs, its batch size and the runtime
    clock's now (where the claimed workflows' timeouts start)."""

    spec: QueueSpec
    executor_id: str
    names: list[str]
    batch: int
    now: float


def _claims_of(rows: list[Any], batch: int) -> tuple[list[QueueClaim], float | None, bool]:
    """A claim's rows (``claim_queued``'s columns): the claims, the seconds to the next
    deadline, and whether claiming again at once may find more."""
    claims = [
        QueueClaim(row["workflow_id"], row["name"], row["inputs"], row["recovery_attempts"],
                   bool(row["fresh"]), row["deadline"], row["epoch"])
        for row in rows if row["workflow_id"] is not None
    ]
    first = rows[0]
    found, room = first["found"], first["room"]
    more = len(claims) < found or (found == room == batch)
    return claims, first["wait_s"], more


#: What an enqueue that may claim returns: the enqueue's outcome, then the claim's (the
#: claims, the seconds to the next deadline, whether claiming again at once may find more).
EnqueueClaimed = tuple[Enqueued, list[QueueClaim], float | None, bool]
_T = TypeVar("_T")


def _existing(row: Any) -> Enqueued | None:
    """Nothing inserted, and the enqueue's row names what holds the id or deduplication id; or
    ``None``: neither was seen (a concurrent insert committed after the lookup's snapshot)."""
    if row["existing_name"] is None and row["holder"] is None:
        return None
    return Enqueued(False, row["existing_name"], row["holder"])


async def _settled(workflow_id: str, attempt: Callable[[], Awaitable[_T | None]]) -> _T:
    """Run an enqueue's statement until it settles: inserted, or it saw what holds the id or
    deduplication id (``None``: look again)."""
    for _ in range(10):
        got = await attempt()
        if got is not None:
            return got
    raise WorkflowConflictError(
        f"enqueueing workflow {workflow_id!r} kept conflicting with concurrent enqueues of the "
        "same id or deduplication id; try again")


class QueueStatements(StoreBase):
    """Enqueueing, claiming and requeueing queued workflows."""

    __slots__ = ()

    # -- queues ---------------------------------------------------------------------------------

    async def enqueue_workflow(
        self,
        workflow_id: str,
        name: str,
        inputs: str,
        app_version: str,
        parent_id: str | None,
        queue_name: str,
        priority: int,
        deduplication_id: str | None,
        delay_seconds: float,
        partition_key: str | None,
        traceparent: str | None = None,
        timeout_seconds: float | None = None,
        parent_epoch: int | None = None,
    ) -> Enqueued:
        """Insert an ENQUEUED (or DELAYED) workflow and notify its queue, unless the id exists
        or the deduplication id is held (then say which). ``traceparent``: the trace context of
        the span that enqueued it (telemetry); ``timeout_seconds``: its timeout, whose clock
        starts at dispatch. With ``parent_epoch`` (enqueued by the parent's execution of that
        epoch) nothing is inserted unless that execution still owns the parent: then
        ``owned`` is False."""
        async def attempt() -> Enqueued | None:
            row = await self.storage.fetchrow(
                queues.ENQUEUE_WORKFLOW, workflow_id, name, inputs, app_version, parent_id,
                queue_name, priority, deduplication_id, delay_seconds, partition_key,
                self.channel, traceparent, timeout_seconds, parent_epoch,
            )
            assert row is not None
            if row["created"]:
                return Enqueued(True, None, None)
            if not row["owned"]:
                return Enqueued(False, None, None, owned=False)
            return _existing(row)

        return await _settled(workflow_id, attempt)

    async def enqueue_claim(
        self,
        workflow_id: str,
        name: str,
        inputs: str,
        app_version: str,
        queue_name: str,
        priority: int,
        deduplication_id: str | None,
        partition_key: str | None,
        traceparent: str | None,
        timeout_seconds: float | None,
        claim: ClaimArgs,
    ) -> EnqueueClaimed:
        """Enqueue (as :meth:`enqueue_workflow`, with no parent and no delay) and, in the same
        statement, claim for this executor what the queue lets start now (as
        :meth:`claim_queued`), unless a claim of the queue is in progress elsewhere; the queue
        is notified only when the new workflow is left ENQUEUED. Returns the enqueue's outcome
        and the claim's (nothing claimed when nothing was inserted or the queue was busy)."""
        if self.storage.distributed:  # (the Citus form of an enqueue: no claim with it)
            found = await self.enqueue_workflow(
                workflow_id, name, inputs, app_version, None, queue_name, priority,
                deduplication_id, 0.0, partition_key, traceparent, timeout_seconds)
            return found, [], None, False
        spec = claim.spec
        if not spec.bounds_running and spec.rate_limit is None:
            return await self._enqueue_run(
                workflow_id, name, inputs, app_version, queue_name, priority, deduplication_id,
                partition_key, traceparent, timeout_seconds, claim)
        rate, per = spec.rate_limit if spec.rate_limit is not None else (None, None)

        async def attempt() -> EnqueueClaimed | None:
            rows = await self.storage.fetch(
                queues.ENQUEUE_CLAIM, workflow_id, name, inputs, app_version, queue_name,
                priority, deduplication_id, partition_key, traceparent, timeout_seconds,
                self.channel, claim.executor_id, claim.names, spec.concurrency,
                spec.worker_concurrency, rate, per, spec.partition_concurrency, claim.batch,
                claim.now,
            )
            first = rows[0]
            if first["created"]:
                if first["found"] is None:  # the queue was busy: nothing claimed
                    return Enqueued(True, None, None), [], None, False
                claims, wait_s, more = _claims_of(rows, claim.batch)
                return Enqueued(True, None, None), claims, wait_s, more
            existing = _existing(first)
            return None if existing is None else (existing, [], None, False)

        return await _settled(workflow_id, attempt)

    async def _enqueue_run(
        self, workflow_id: str, name: str, inputs: str, app_version: str, queue_name: str,
        priority: int, deduplication_id: str | None, partition_key: str | None,
        traceparent: str | None, timeout_seconds: float | None, claim: ClaimArgs,
    ) -> EnqueueClaimed:
        """:meth:`enqueue_claim` for a queue without limits: nothing to count, so no claim and
        no lock; the workflow is inserted as this executor's unless another waits first."""
        async def attempt() -> EnqueueClaimed | None:
            row = await self.storage.fetchrow(
                queues.ENQUEUE_RUN, workflow_id, name, inputs, app_version, queue_name,
                priority, deduplication_id, partition_key, traceparent, timeout_seconds,
                self.channel, claim.executor_id, claim.now,
            )
            assert row is not None
            if row["status"] is not None:  # inserted: here and running, or left in the queue
                mine = [QueueClaim(workflow_id, name, inputs, 0, True, row["deadline"],
                                   row["epoch"])] if row["status"] == "PENDING" else []
                return Enqueued(True, None, None), mine, None, False
            existing = _existing(row)
            return None if existing is None else (existing, [], None, False)

        return await _settled(workflow_id, attempt)

    async def enqueue_workflows(
        self,
        workflow_ids: list[str],
        name: str,
        inputs: list[str],
        app_version: str,
        parent_id: str | None,
        queue_name: str,
        priority: int,
        delay_seconds: float,
        partition_key: str | None,
        traceparent: str | None = None,
        timeout_seconds: float | None = None,
    ) -> set[str]:
        """Insert ENQUEUED (or DELAYED) workflows of one workflow function, one per id with its
        inputs, in one statement (on Citus: one by one), and notify their queue; returns the ids
        inserted. An id that exists is left alone (the caller looks at it with
        :meth:`enqueue_workflow`)."""
        if self.storage.distributed:  # the Citus form of an enqueue holds deduplication locks
            created = set()
            for workflow_id, encoded in zip(workflow_ids, inputs, strict=True):
                found = await self.enqueue_workflow(
                    workflow_id, name, encoded, app_version, parent_id, queue_name, priority,
                    None, delay_seconds, partition_key, traceparent, timeout_seconds)
                if found.created:
                    created.add(workflow_id)
            return created
        rows = await self.storage.fetch(
            queues.ENQUEUE_WORKFLOWS, workflow_ids, name, inputs, app_version, parent_id,
            queue_name, priority, delay_seconds, partition_key, self.channel, traceparent,
            timeout_seconds)
        return {row["workflow_id"] for row in rows}

    async def debounce(
        self,
        queue_name: str,
        name: str,
        key: str,
        new_id: str,
        inputs: str,
        period_seconds: float,
        max_wait_seconds: float | None,
        app_version: str,
        traceparent: str | None = None,
        timeout_seconds: float | None = None,
    ) -> tuple[str, bool]:
        """One call of a burst: the burst's DELAYED workflow takes ``inputs`` and waits
        ``period_seconds`` more (at most ``max_wait_seconds`` after the burst's first call), or
        a new one (``new_id``) starts the burst. Returns the workflow's id and whether it was
        inserted now (its queue was notified). Exact across processes: the partial unique index
        admits one DELAYED workflow per key, and every caller finds it."""
        for _ in range(20):
            row = await self.storage.fetchrow(
                queues.DEBOUNCE, queue_name, name, key, new_id, inputs, period_seconds,
                max_wait_seconds, app_version, traceparent, timeout_seconds, self.channel)
            assert row is not None
            if row["extended"] is not None:
                return row["extended"], False
            if row["created"] is not None:
                return row["created"], True
            # Released a due workflow (its burst is over), or lost the insert to a concurrent
            # caller: run the statement again, which finds the state those committed.
        raise WorkflowConflictError(
            f"debouncing key {key!r} of workflow {name!r} kept conflicting with concurrent "
            "calls; try again")

    async def set_workflow_delay(self, workflow_id: str, seconds: float,
                                 until: datetime | None) -> tuple[str, datetime, str] | None:
        """Delay an ENQUEUED or DELAYED workflow (``seconds`` from now, or ``until``) and notify
        its queue; returns ``(queue name, delay_until, status)``, ``None`` if it was neither."""
        row = await self.storage.fetchrow(queues.SET_WORKFLOW_DELAY, workflow_id, seconds, until,
                                          self.channel)
        return None if row is None else (row["queue_name"], row["delay_until"], row["status"])

    async def queue_depth(self, queue_name: str) -> int:
        """How many workflows wait in the queue (ENQUEUED or DELAYED)."""
        depth: int = await self.storage.fetchval(queues.QUEUE_DEPTH, queue_name)
        return depth

    async def claim_queued(
        self,
        spec: QueueSpec,
        executor_id: str,
        names: list[str],
        app_version: str,
        batch: int,
        now: float,
    ) -> tuple[list[QueueClaim], float | None, bool]:
        """Claim the workflows of a queue that may start now, within its limits: one statement
        (a function: the queue row's lock, then the claim) serialized with every other claim of
        the queue by that lock.
        Returns the claims, the seconds until the next moment something may become startable
        on its own (a DELAYED row due, the rate limit's window opening), and whether another
        claim right away may find more (the batch was full, or a partition's cap dropped
        rows). ``now``: the runtime clock, where the timeouts of the claimed workflows start."""
        rate, per = spec.rate_limit if spec.rate_limit is not None else (None, None)
        rows = await self.storage.fetch(
            queues.CLAIM_QUEUED, spec.name, executor_id, names, app_version, spec.concurrency,
            spec.worker_concurrency, rate, per, spec.partition_concurrency, batch,
            now, self.channel,
        )
        return _claims_of(rows, batch)

    async def release_unstarted(
        self, queue_name: str, executor_id: str, running: list[str]
    ) -> int:
        """Put this executor's PENDING workflows of a queue that are not in ``running`` back in
        the queue (after a claim whose outcome was lost); returns how many."""
        released: int = await self.storage.fetchval(
            queues.RELEASE_UNSTARTED, queue_name, executor_id, running, self.channel)
        return released

    async def requeue_orphans(
        self, executor_id: str, include_own: bool, take_others: bool = True
    ) -> list[str]:
        """Put unassigned PENDING queued workflows back in their queues, with ``take_others``
        also those of dead executors, and with ``include_own`` this executor's; returns the
        queues notified."""
        rows = await self.storage.fetch(
            queues.REQUEUE_ORPHANS, executor_id, include_own, self.channel,
            await self._lock_namespace(), take_others,
        )
        return [row["queue_name"] for row in rows]
