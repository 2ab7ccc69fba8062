"""The store: every database operation asyncflow performs, as one named method each.

A method owns its statement (from ``sql``, one module per part), the order of its parameters,
the NOTIFY channel, the decoding of its rows and the translation of its errors. Nothing else in
asyncflow passes ``$n`` arguments. Statements run on the pool (autocommit), or on the transaction's
own connection when called inside ``storage.transaction()`` by the same task. The other parts
(``admin``, ``queues``, ``batches``, ``history``, ``schedules``, ``liveness``, ``versions``,
``runs``) live beside this module; :class:`Store` has them all."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from .. import _codec
from .._errors import DatabaseUnavailableError, WorkflowNotFoundError
from .._status import StepInfo, WorkflowStatus
from .admin import AdminStatements
from .base import (
    Claimed,
    Close,
    Delivered,
    Finish,
    FirstRecv,
    JournalEntry,
    Outcome,
    Page,
    Read,
    Received,
    Record,
    Recv,
    Resumed,
    Send,
    Sent,
    Start,
    Started,
    Taken,
    Write,
    Written,
    deduplicated_resume,
    not_found,
)
from .base import conflict as _conflict
from .batcher import Batcher
from .batches import StreamCommitted
from .database import Storage, UniqueViolation, holds_connection, report_unavailable
from .driver import refuse_in_replay
from .history import EXPORT_KINDS, Forked, HistoryStatements
from .liveness import Beat, Holder, LivenessStatements, Silent
from .queues import ClaimArgs, EnqueueClaimed, Enqueued, QueueClaim, QueueStatements
from .runs import RunStatements
from .schedules import ScheduleStatements, ScheduleStatus
from .sql import events, journal, liveness, messages, streams, workflows
from .versions import Adopted, Stranded, VersionChange, VersionCount, VersionStatements

#: How often a journaled stream write that lost its offset to a concurrent writer is run again.
_OFFSET_RACES = 5

__all__ = [
    "EXPORT_KINDS", "Adopted", "Beat", "ClaimArgs", "Claimed", "Enqueued", "EnqueueClaimed",
    "Forked", "Holder", "JournalEntry", "Outcome", "QueueClaim", "Resumed", "ScheduleStatus",
    "Send", "Silent", "Store", "Stranded", "VersionChange", "VersionCount",
    "deduplicated_resume", "not_found",
]


class Store(AdminStatements, QueueStatements, HistoryStatements, ScheduleStatements,
            LivenessStatements, VersionStatements, RunStatements):
    """Named database operations over one :class:`Storage` (pool + schema).

    Workflow starts and completions, outcome checks, journal entries, recvs and messages from
    outside workflows go through group commit (:mod:`asyncflow._storage.batcher`): concurrent
    ones share a statement.
    """

    __slots__ = ("channel", "closes", "finishes", "first_recvs", "on_stream_committed", "outcomes",
                 "reads", "records", "recvs", "sends", "starts", "storage", "writes")

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.channel = storage.channel
        self.finishes: Batcher[Finish, bool] = Batcher(self._finish_many, self._finish_one)
        self.records: Batcher[Record, bool] = Batcher(self._record_many, self._record_one)
        self.sends: Batcher[Sent, Delivered] = Batcher(self._send_many, self._send_one)
        #: (See BatchStatements._written and _closed.)
        self.on_stream_committed: StreamCommitted | None = None
        self.writes: Batcher[Write, Written] = Batcher(self._write_many, self._write_one,
                                                       settled=self._written)
        self.closes: Batcher[Close, int | None] = Batcher(self._close_many, self._close_one,
                                                          settled=self._closed)
        # Readers woken by one commit read together (reads do not contend: two in flight).
        self.reads: Batcher[Read, Page] = Batcher(self._read_many, self._read_one, writers=2)
        self.starts: Batcher[Start, Started] = Batcher(self._insert_many, self._insert_one)
        self.outcomes: Batcher[str, Outcome | None] = Batcher(
            self._outcome_many, self._outcome_one, writers=2)  # reads, as above
        self.first_recvs: Batcher[FirstRecv, Taken] = Batcher(self._recv_first_many,
                                                               self._recv_first_one)
        self.recvs: Batcher[Recv, Received] = Batcher(self._recv_many, self._recv_one)

    @staticmethod
    async def _submit(batcher: Batcher[Any, Any], one: Any, op: Any) -> Any:
        refuse_in_replay("a database write")  # a batch may be written by another task
        if holds_connection():  # inside a transaction: its own statement, on its connection
            return await one(op)
        try:
            return await batcher.submit(op)
        except DatabaseUnavailableError:
            report_unavailable()  # in the caller's context (the batch ran in another's)
            raise

    # -- workflows ------------------------------------------------------------------------------

    async def insert_workflow(
        self,
        workflow_id: str,
        name: str,
        inputs: str,
        executor_id: str | None,
        app_version: str,
        parent_id: str | None,
        traceparent: str | None = None,
        timeout_seconds: float | None = None,
        deadline: float | None = None,
        parent_epoch: int | None = None,
        attributes: str | None = None,
    ) -> tuple[bool, str | None]:
        """Insert a PENDING workflow (epoch 1) unless the id exists: ``(created, name of the
        row)``. ``traceparent``: the trace context of the span that started it (telemetry). With
        a ``deadline`` (runtime-clock seconds) the deadline enforcers are notified. A child
        (``parent_epoch`` given) is inserted only while its parent's execution owns the parent:
        otherwise nothing is inserted and the name is ``None`` (unless the id exists).
        ``attributes``: its attributes (JSON text of an object). Concurrent starts share a
        statement."""
        started: Started = await self._submit(
            self.starts, self._insert_one,
            (workflow_id, name, inputs, executor_id, app_version, parent_id, traceparent,
             timeout_seconds, deadline, parent_epoch, attributes))
        return started

    async def insert_unassigned_workflow(
        self, workflow_id: str, name: str, inputs: str
    ) -> tuple[bool, str | None]:
        """Insert a PENDING workflow for any live app registering ``name`` to claim (and wake
        the recovery supervisors), unless the id exists: ``(created, name of the row)``."""
        row = await self.storage.fetchrow(
            workflows.INSERT_UNASSIGNED_WORKFLOW, workflow_id, name, inputs, self.channel)
        if row is None:  # lost a race with a concurrent insert of the same id: it exists now
            existing: str | None = await self.storage.fetchval(workflows.WORKFLOW_NAME, workflow_id)
            return False, existing
        return bool(row["created"]), row["name"]

    async def workflow_state(self, workflow_id: str) -> str | None:
        """The workflow's status, or ``None`` if there is no such workflow."""
        status: str | None = await self.storage.fetchval(workflows.WORKFLOW_STATE, workflow_id)
        return status

    async def workflow_ownership(self, workflow_id: str) -> tuple[str | None, int]:
        """``(status, epoch)`` of a workflow (``(None, 0)``: no such workflow)."""
        row = await self.storage.fetchrow(workflows.WORKFLOW_OWNERSHIP, workflow_id)
        if row is None:
            return None, 0
        return row["status"], row["epoch"]

    async def workflow_traceparent(self, workflow_id: str) -> str | None:
        """The trace context stored when the workflow was started (``None``: none)."""
        traceparent: str | None = await self.storage.fetchval(workflows.WORKFLOW_TRACEPARENT,
                                                              workflow_id)
        return traceparent

    async def workflow_outcome(self, workflow_id: str) -> Outcome | None:
        """Status, output and error (``None``: no such workflow); concurrent checks share a
        query."""
        outcome: Outcome | None = await self._submit(self.outcomes, self._outcome_one,
                                                     workflow_id)
        return outcome

    async def workflow_status(self, workflow_id: str) -> WorkflowStatus:
        row = await self.storage.fetchrow(workflows.WORKFLOW_STATUS, workflow_id)
        if row is None:
            raise not_found(workflow_id)
        return WorkflowStatus.from_row(row)

    async def workflow_exists(self, workflow_id: str) -> bool:
        return bool(await self.storage.fetchval(events.WORKFLOW_EXISTS, workflow_id))

    async def finish_workflow(
        self, workflow_id: str, status: str, output: str | None, error: str | None, epoch: int
    ) -> bool:
        """Write the terminal status of a workflow the execution of ``epoch`` owns (and
        notify); False if it is no longer PENDING at that epoch."""
        done: bool = await self._submit(self.finishes, self._finish_one,
                                        (workflow_id, status, output, error, epoch))
        return done

    async def cancel_workflow(self, workflow_id: str) -> tuple[bool, str | None]:
        """Cancel a PENDING (or queued) workflow: ``(cancelled now, its queue or None)``.
        Unknown id: not found."""
        row = await self.storage.fetchrow(workflows.CANCEL_WORKFLOW, workflow_id, self.channel)
        assert row is not None
        if not row["found"]:
            raise not_found(workflow_id)
        return bool(row["cancelled"]), row["queue_name"]

    async def resume_workflow(
        self, workflow_id: str, executor_id: str | None
    ) -> Resumed | None:
        """Make a finished-but-not-successful workflow PENDING on ``executor_id`` (``None``:
        unassigned, for a supervisor to claim), or ENQUEUED again if it is a queued one.
        Returns what was resumed (``None``: nothing, it was not in a resumable status)."""
        try:
            row = await self.storage.fetchrow(
                workflows.RESUME_WORKFLOW, workflow_id, executor_id, self.channel
            )
        except UniqueViolation:
            raise deduplicated_resume(workflow_id) from None
        assert row is not None
        if not row["found"]:
            raise not_found(workflow_id)
        if row["name"] is None:
            return None
        return Resumed(row["name"], row["inputs"], row["queue_name"], row["epoch"])

    async def claim_workflows(
        self,
        executor_id: str,
        names: list[str],
        app_version: str,
        take_others: bool,
        limit: int,
    ) -> list[Claimed]:
        """Claim unassigned PENDING workflows (with ``take_others``, also dead executors')
        for ``executor_id``: each gets a new epoch."""
        rows = await self.storage.fetch(
            workflows.CLAIM_WORKFLOWS, executor_id, names, app_version, take_others,
            await self._lock_namespace(), limit
        )
        return [
            Claimed(row["workflow_id"], row["name"], row["inputs"], row["recovery_attempts"],
                    row["epoch"])
            for row in rows
        ]

    async def release_unregistered(self, executor_id: str, names: list[str]) -> int:
        """Unassign this executor's PENDING workflows whose names are not in ``names``."""
        rows = await self.storage.fetch(workflows.RELEASE_UNREGISTERED, executor_id, names,
                                        self.channel)
        return len(rows)

    async def dead_letter(self, workflow_id: str) -> bool:
        """End a PENDING workflow in MAX_RECOVERY_ATTEMPTS_EXCEEDED (and notify)."""
        return bool(await self.storage.fetch(workflows.DEAD_LETTER, workflow_id, self.channel))

    async def prune_executors(self) -> None:
        """Forget dead executors that own no PENDING workflow."""
        if self.storage.lock_namespace is not None:
            await self.storage.execute(liveness.PRUNE_EXECUTORS, self.storage.lock_namespace)

    # -- the journal ------------------------------------------------------------------------------

    async def list_operations(self, workflow_id: str) -> list[StepInfo]:
        rows = await self.storage.fetch(journal.LIST_OPERATIONS, workflow_id)
        if not rows and not await self.workflow_exists(workflow_id):
            raise not_found(workflow_id)
        return [
            StepInfo.from_row(row, None if row["output"] is None else _codec.loads(row["output"]))
            for row in rows
        ]

    def record_operation(
        self,
        workflow_id: str,
        function_id: int,
        name: str,
        epoch: int,
        *,
        output: str | None = None,
        error: str | None = None,
        child_id: str | None = None,
        completed: bool = True,
        deadline: float | None = None,
    ) -> Coroutine[Any, Any, bool]:
        """Journal one operation of the execution of ``epoch``; False when the workflow is no
        longer PENDING at that epoch. (A plain function returning the write's coroutine: it is
        every step's checkpoint.)"""
        return self._submit(
            self.records, self._record_one,
            (workflow_id, function_id, name, output, error, child_id, completed, deadline,
             epoch))

    async def complete_operation(
        self, workflow_id: str, function_id: int, output: str | None, epoch: int
    ) -> bool:
        """Complete an open wait's journal entry; False when the workflow is no longer PENDING
        at ``epoch``."""
        result = await self.storage.execute(
            journal.COMPLETE_OPERATION, workflow_id, function_id, output, epoch
        )
        return not result.endswith(" 0")

    async def fail_operation(self, workflow_id: str, function_id: int, error: str,
                             epoch: int) -> bool:
        """Complete an open wait's journal entry with an error (recorded); False when the
        workflow is no longer PENDING at ``epoch``."""
        result = await self.storage.execute(journal.FAIL_OPERATION, workflow_id, function_id, error,
                                            epoch)
        return not result.endswith(" 0")

    async def set_operation_error(self, workflow_id: str, function_id: int, error: str,
                                  epoch: int) -> bool:
        result = await self.storage.execute(journal.SET_OPERATION_ERROR, workflow_id, function_id,
                                            error, epoch)
        return not result.endswith(" 0")

    async def _journaled(self, template: str, workflow_id: str, function_id: int,
                         *args: Any) -> Any:
        """Run a statement that inserts journal entry (workflow_id, function_id): those are its
        parameters $1 and $2, followed by ``args``."""
        return await self._insert_entry(workflow_id, function_id, template, workflow_id,
                                        function_id, *args)

    async def _insert_entry(self, workflow_id: str, function_id: int, template: str,
                            *params: Any) -> Any:
        try:
            row = await self.storage.fetchrow(template, *params)
        except UniqueViolation:
            raise _conflict(workflow_id, function_id) from None
        assert row is not None
        return row

    async def journaled_send(
        self, workflow_id: str, function_id: int, name: str, epoch: int, destination_id: str,
        topic: str | None, text: str, traceparent: str | None = None,
    ) -> tuple[bool, int | None]:
        """Journal a send and deliver the message (or hand it to the destination's waiting
        recv) in one statement: (False if not owned, the function id of the recv handed it)."""
        try:
            row = await self._journaled(messages.JOURNALED_SEND, workflow_id, function_id, name,
                                        destination_id, topic, text, self.channel, traceparent,
                                        epoch)
        except WorkflowNotFoundError:
            raise not_found(destination_id) from None
        return bool(row["recorded"]), row["handed"]

    async def journaled_set_event(
        self, workflow_id: str, function_id: int, name: str, epoch: int, key: str, text: str
    ) -> bool:
        row = await self._journaled(journal.JOURNALED_SET_EVENT, workflow_id, function_id, name,
                                    key, text, self.channel, epoch)
        return bool(row["recorded"])

    async def journaled_write_stream(
        self, workflow_id: str, function_id: int, name: str, epoch: int, key: str, text: str,
        closed_error: str,
    ) -> Written:
        """Journal and append a write (``closed_error`` is journaled instead when the stream
        is closed): ``(recorded, offset or None, refused as closed)``."""
        written: Written = await self._submit(
            self.writes, self._write_one, (workflow_id, function_id, name, key, text,
                                           closed_error, epoch))
        return written

    async def _write_one(self, op: Write) -> Written:
        workflow_id, function_id, name, key, text, closed_error, epoch = op
        for _attempt in range(_OFFSET_RACES):
            try:
                row = await self.storage.fetchrow(
                    journal.JOURNALED_WRITE_STREAM, workflow_id, function_id, name, key, text,
                    self.channel, closed_error, epoch)
            except UniqueViolation:
                # Either another execution journaled this write (a conflict), or the entry
                # lost a race for its offset with a concurrent writer of the stream: then the
                # statement, run again, takes the head's lock and its next offset.
                if await self.storage.fetchval(journal.OPERATION_EXISTS, workflow_id, function_id):
                    raise _conflict(workflow_id, function_id) from None
                continue
            assert row is not None
            return bool(row["recorded"]), row["offset"], bool(row["refused"])
        raise DatabaseUnavailableError(
            f"write #{function_id} of workflow {workflow_id!r} to stream {key!r} lost "
            f"{_OFFSET_RACES} races for its offset in a row; it is retried from the journal")

    async def journaled_close_stream(
        self, workflow_id: str, function_id: int, name: str, epoch: int, key: str
    ) -> bool:
        length: int | None = await self._submit(self.closes, self._close_one,
                                                (workflow_id, function_id, name, key, epoch))
        return length is not None

    # -- messages -------------------------------------------------------------------------------

    async def send_message(
        self, destination_id: str, topic: str | None, text: str, idempotency_key: str | None,
        traceparent: str | None = None,
    ) -> Delivered:
        """Deliver a message (once per idempotency key, if given): see :data:`Delivered`.
        Unknown destination: not found. ``traceparent``: the sending span's trace context."""
        delivered: Delivered = await self._submit(
            self.sends, self._send_one, (destination_id, topic, text, idempotency_key,
                                         traceparent))
        return delivered

    async def recv_first(
        self, workflow_id: str, topic: str | None, function_id: int, deadline: float,
        epoch: int,
    ) -> tuple[bool, str | None, str | None]:
        """Journal recv #function_id (with its wall-clock deadline) and take a waiting message
        in one statement (shared by concurrent ones): ``(recorded, message or None, its
        sender's traceparent)``."""
        taken: Taken = await self._submit(self.first_recvs, self._recv_first_one,
                                          (workflow_id, topic, function_id, deadline, epoch))
        return taken

    async def recv_next(
        self, workflow_id: str, topic: str | None, function_id: int, epoch: int
    ) -> Received:
        """Take the next message into the open recv of the execution of ``epoch``: see
        :data:`Received` (status ``None``: claimed elsewhere, this execution must stop).
        Concurrent ones share a statement."""
        received: Received = await self._submit(self.recvs, self._recv_one,
                                                (workflow_id, topic, function_id, epoch))
        return received

    async def take_branch_message(
        self, workflow_id: str, topic: str | None, function_id: int, index: int, epoch: int
    ) -> tuple[str | None, str | None, bool]:
        """Like :meth:`recv_next` for wait_first's branch ``index``: the open journal entry is
        completed with ``{"index": index, "value": message}``."""
        template = (messages.TAKE_BRANCH_MESSAGE_NO_TOPIC if topic is None
                    else messages.TAKE_BRANCH_MESSAGE_TOPIC)
        row = await self.storage.fetchrow(template, workflow_id, topic, function_id, index,
                                          epoch)
        assert row is not None
        status = row["status"] if row["epoch"] == epoch else None
        return status, row["message"], bool(row["consumed"])

    # -- events ---------------------------------------------------------------------------------

    async def watch_event(self, workflow_id: str, key: str) -> tuple[str, str | None, int]:
        """``(workflow status, event value or None, event version or 0)``."""
        row = await self.storage.fetchrow(events.WATCH_EVENT, workflow_id, key)
        if row is None:
            raise not_found(workflow_id)
        return row["status"], row["value"], row["version"] or 0

    async def set_event(self, workflow_id: str, key: str, text: str, writer_fid: int) -> None:
        await self.storage.execute(events.SET_EVENT, workflow_id, key, text, self.channel,
                                   writer_fid)

    async def get_event(
        self, workflow_id: str, key: str, waiter_id: str | None = None
    ) -> tuple[str | None, str | None]:
        """``(value or None, status of the waiting workflow)``; unknown workflow: not found."""
        row = await self.storage.fetchrow(events.GET_EVENT, workflow_id, key, waiter_id)
        assert row is not None
        if not row["found"]:
            raise not_found(workflow_id)
        return row["value"], row["waiter_status"]

    async def get_event_first(
        self, workflow_id: str, target_id: str, key: str, function_id: int, deadline: float,
        epoch: int,
    ) -> tuple[bool, str | None]:
        """Journal get_event #function_id of ``workflow_id``, completed if event (target, key)
        is set: ``(recorded, value or None)``."""
        row = await self._insert_entry(workflow_id, function_id, events.GET_EVENT_FIRST,
                                       workflow_id,
                                       target_id, key, function_id, deadline, epoch)
        if row["recorded"] and not row["found"]:
            raise not_found(target_id)
        return bool(row["recorded"]), row["value"]

    async def get_all_events(self, workflow_id: str) -> dict[str, Any]:
        rows = await self.storage.fetch(events.GET_ALL_EVENTS, workflow_id)
        if not rows and not await self.workflow_exists(workflow_id):
            raise not_found(workflow_id)
        return {row["key"]: _codec.loads(row["value"]) for row in rows}

    # -- streams --------------------------------------------------------------------------------

    async def write_stream(
        self, workflow_id: str, key: str, text: str, writer_fid: int, writer_seq: int
    ) -> int | None:
        """Write (or overwrite) the value of writer (fid, seq); ``None``: the stream is closed."""
        row = await self.storage.fetchrow(
            streams.WRITE_STREAM, workflow_id, key, text, writer_fid, writer_seq, self.channel
        )
        return None if row is None else row["offset"]

    async def close_stream(self, workflow_id: str, key: str, closed_by: int) -> None:
        await self.storage.execute(streams.CLOSE_STREAM, workflow_id, key, self.channel,
                                   closed_by)

    async def read_stream(
        self, workflow_id: str, key: str, offset: int, limit: int
    ) -> tuple[list[tuple[int, Any]], bool]:
        """The next ``(offset, value)`` entries from ``offset``, and whether the stream had
        ended (closed, or its workflow finished) as of the same snapshot."""
        page: Page = await self._submit(self.reads, self._read_one,
                                        (workflow_id, key, offset, limit))
        return page
