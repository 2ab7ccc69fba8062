"""The store: every database operation asyncflow performs, as one named method each.

A method owns its statement (from ``_queries``), the order of its parameters, the NOTIFY
channel, the decoding of its rows and the translation of its errors. Nothing else in asyncflow
passes ``$n`` arguments. Statements run on the pool (autocommit), or on the transaction's own
connection when called inside ``storage.transaction()`` by the same task.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import _codec
from . import _queries as Q
from ._batch import Batcher
from ._errors import (
    DatabaseUnavailableError,
    InvalidArgumentError,
    QueueDeduplicatedError,
    WorkflowConflictError,
    WorkflowNotFoundError,
    _ExecutionConflict,
)
from ._filters import Cursor, WorkflowFilter
from ._specs import QueueSpec
from ._status import TERMINAL_STATUSES, StepInfo, WorkflowStatus
from ._storage import (
    Connection,
    Storage,
    UniqueViolation,
    holds_connection,
    refuse_in_replay,
    report_unavailable,
)

Finish = tuple[str, str, str | None, str | None]
Record = tuple[str, int, str, str | None, str | None, str | None, bool, float | None]
Send = tuple[str, str | None, str, str | None]
Write = tuple[str, int, str, str, str, str]  # ..., the recorded error if the stream is closed
Read = tuple[str, str, int, int]
Written = tuple[bool, int | None, bool]
Page = tuple[list[tuple[int, Any]], bool]


@dataclass(slots=True)
class JournalEntry:
    """One recorded operation of a workflow, as loaded for replay."""

    name: str
    output: str | None
    error: str | None
    child_id: str | None
    completed: bool
    deadline: float | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A workflow the supervisor claimed for this executor."""

    workflow_id: str
    name: str
    inputs: str
    recovery_attempts: int


@dataclass(frozen=True, slots=True)
class Resumed:
    """A workflow that ``resume_workflow`` made runnable again: PENDING (to run), or back in its
    queue (``queue_name`` set) for a dispatcher."""

    name: str
    inputs: str
    queue_name: str | None


@dataclass(frozen=True, slots=True)
class Enqueued:
    """What an enqueue found: ``created``, else the name of the workflow that already has the
    id (``existing_name``) or the id of the active workflow holding the deduplication id."""

    created: bool
    existing_name: str | None
    holder: str | None


@dataclass(frozen=True, slots=True)
class QueueClaim:
    """One workflow a dispatcher claimed: it is PENDING on this executor now. ``fresh``: it
    never ran before (no journal to load)."""

    workflow_id: str
    name: str
    inputs: str
    recovery_attempts: int
    fresh: bool


@dataclass(frozen=True, slots=True)
class Forked:
    """What :meth:`Store.fork_workflow` did: whether it created the fork, the workflow name of
    the row under the new id, the inputs, and how many journal entries it copied."""

    created: bool
    name: str | None
    inputs: str
    operations: int


EXPORT_KINDS = ("workflow", "operation", "event", "stream_head", "stream_entry", "message",
                "message_key")
_EXPORTS = dict(zip(EXPORT_KINDS, (
    Q.EXPORT_WORKFLOWS, Q.EXPORT_OPERATIONS, Q.EXPORT_EVENTS, Q.EXPORT_STREAM_HEADS,
    Q.EXPORT_STREAMS, Q.EXPORT_MESSAGES, Q.EXPORT_MESSAGE_KEYS), strict=True))
_IMPORTS = {
    "operation": Q.IMPORT_OPERATIONS, "event": Q.IMPORT_EVENTS,
    "stream_head": Q.IMPORT_STREAM_HEADS, "stream_entry": Q.IMPORT_STREAMS,
    "message": Q.IMPORT_MESSAGES, "message_key": Q.IMPORT_MESSAGE_KEYS,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """A workflow's status with its recorded output and error (JSON text)."""

    status: str
    output: str | None
    error: str | None


def _conflict(workflow_id: str, function_id: int) -> _ExecutionConflict:
    return _ExecutionConflict(
        f"operation #{function_id} of workflow {workflow_id!r} was recorded by another execution"
    )


def not_found(workflow_id: str) -> WorkflowNotFoundError:
    """The error for an unknown workflow id (one wording everywhere)."""
    return WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")


def _page(rows: list[Any]) -> Page:
    entries = [
        (row["offset"], _codec.loads(row["value"])) for row in rows if row["offset"] is not None
    ]
    first = rows[0]
    return entries, bool(first["closed"]) or first["status"] in TERMINAL_STATUSES


class Store:
    """Named database operations over one :class:`Storage` (pool + schema).

    Workflow completions, journal entries and messages from outside workflows go through group
    commit (:mod:`asyncflow._batch`): concurrent ones share a statement.
    """

    __slots__ = ("channel", "finishes", "reads", "records", "sends", "storage", "writes")

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.channel = storage.channel
        self.finishes: Batcher[Finish, bool] = Batcher(self._finish_many, self._finish_one)
        self.records: Batcher[Record, bool] = Batcher(self._record_many, self._record_one)
        self.sends: Batcher[Send, None] = Batcher(self._send_many, self._send_one)
        self.writes: Batcher[Write, Written] = Batcher(self._write_many, self._write_one)
        # Readers woken by one commit read together (reads do not contend: two in flight).
        self.reads: Batcher[Read, Page] = Batcher(self._read_many, self._read_one, writers=2)

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
    ) -> tuple[bool, str | None]:
        """Insert a PENDING workflow unless the id exists: ``(created, name of the row)``."""
        row = await self.storage.fetchrow(
            Q.INSERT_WORKFLOW, workflow_id, name, inputs, executor_id, app_version, parent_id
        )
        if row is None:  # lost a race with a concurrent insert of the same id: it exists now
            existing: str | None = await self.storage.fetchval(Q.WORKFLOW_NAME, workflow_id)
            return False, existing
        return bool(row["created"]), row["name"]

    async def workflow_state(self, workflow_id: str) -> str | None:
        """The workflow's status, or ``None`` if there is no such workflow."""
        status: str | None = await self.storage.fetchval(Q.WORKFLOW_STATE, workflow_id)
        return status

    async def workflow_outcome(self, workflow_id: str) -> Outcome | None:
        row = await self.storage.fetchrow(Q.WORKFLOW_RESULT, workflow_id)
        if row is None:
            return None
        return Outcome(row["status"], row["output"], row["error"])

    async def workflow_status(self, workflow_id: str) -> WorkflowStatus:
        row = await self.storage.fetchrow(Q.WORKFLOW_STATUS, workflow_id)
        if row is None:
            raise not_found(workflow_id)
        return WorkflowStatus.from_row(row)

    async def workflow_exists(self, workflow_id: str) -> bool:
        return bool(await self.storage.fetchval(Q.WORKFLOW_EXISTS, workflow_id))

    async def finish_workflow(
        self, workflow_id: str, status: str, output: str | None, error: str | None
    ) -> bool:
        """Write the terminal status of a PENDING workflow (and notify); False if not PENDING."""
        done: bool = await self._submit(self.finishes, self._finish_one,
                                        (workflow_id, status, output, error))
        return done

    async def _finish_one(self, op: Finish) -> bool:
        return bool(await self.storage.fetch(Q.FINISH_WORKFLOW, *op, self.channel))

    async def _finish_many(self, ops: list[Finish]) -> list[bool | BaseException]:
        columns = list(zip(*ops, strict=True))
        rows = await self.storage.fetch(Q.FINISH_WORKFLOWS, *map(list, columns), self.channel)
        finished = {row["workflow_id"] for row in rows}
        return [op[0] in finished for op in ops]

    async def cancel_workflow(self, workflow_id: str) -> tuple[bool, str | None]:
        """Cancel a PENDING (or queued) workflow: ``(cancelled now, its queue or None)``.
        Unknown id: not found."""
        row = await self.storage.fetchrow(Q.CANCEL_WORKFLOW, workflow_id, self.channel)
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
                Q.RESUME_WORKFLOW, workflow_id, executor_id, self.channel
            )
        except UniqueViolation:
            raise QueueDeduplicatedError(
                f"workflow {workflow_id!r} cannot be resumed now: another workflow of its queue "
                "holds its deduplication_id; resume it once that one has finished"
            ) from None
        assert row is not None
        if not row["found"]:
            raise not_found(workflow_id)
        if row["name"] is None:
            return None
        return Resumed(row["name"], row["inputs"], row["queue_name"])

    async def claim_workflows(
        self,
        executor_id: str,
        names: list[str],
        app_version: str,
        include_own: bool,
        limit: int,
    ) -> list[Claimed]:
        namespace = self.storage.lock_namespace
        if namespace is None:
            namespace = await self.storage.fetchval(Q.SCHEMA_LOCK_NAMESPACE, self.storage.schema)
            self.storage.lock_namespace = namespace
        rows = await self.storage.fetch(
            Q.CLAIM_WORKFLOWS, executor_id, names, app_version, include_own, namespace, limit
        )
        return [
            Claimed(row["workflow_id"], row["name"], row["inputs"], row["recovery_attempts"])
            for row in rows
        ]

    async def release_unregistered(self, executor_id: str, names: list[str]) -> int:
        """Unassign this executor's PENDING workflows whose names are not in ``names``."""
        rows = await self.storage.fetch(Q.RELEASE_UNREGISTERED, executor_id, names,
                                        self.channel)
        return len(rows)

    async def dead_letter(self, workflow_id: str) -> bool:
        """End a PENDING workflow in MAX_RECOVERY_ATTEMPTS_EXCEEDED (and notify)."""
        return bool(await self.storage.fetch(Q.DEAD_LETTER, workflow_id, self.channel))

    async def try_executor_lock(self, conn: Connection, executor_id: str) -> bool:
        """Take this executor's liveness lock on ``conn`` (the listener's own connection): an
        advisory lock on (the schema's OID, the executor's unique lock key)."""
        storage = self.storage
        namespace = await conn.fetchval(Q.SCHEMA_LOCK_NAMESPACE, storage.schema)
        lock_key = await conn.fetchval(storage.sql(Q.REGISTER_EXECUTOR), executor_id)
        storage.lock_namespace = namespace
        got: bool = await conn.fetchval(Q.TRY_EXECUTOR_LOCK, namespace, lock_key)
        return got

    async def _lock_namespace(self) -> int:
        namespace = self.storage.lock_namespace
        if namespace is None:
            namespace = await self.storage.fetchval(Q.SCHEMA_LOCK_NAMESPACE, self.storage.schema)
            self.storage.lock_namespace = namespace
        assert namespace is not None
        return namespace

    async def prune_executors(self) -> None:
        """Forget dead executors that own no PENDING workflow."""
        if self.storage.lock_namespace is not None:
            await self.storage.execute(Q.PRUNE_EXECUTORS, self.storage.lock_namespace)

    # -- operating workflows (lifecycle: _admin, _cancel, _retention) ---------------------------

    async def list_page(
        self, selected: WorkflowFilter, after: Cursor | None, limit: int
    ) -> list[WorkflowStatus]:
        """One page of workflows, newest first, after the cursor (keyset)."""
        template = Q.LIST_WORKFLOWS_PAGE if selected.parent_workflow_id is None else (
            Q.LIST_CHILDREN_PAGE)
        cursor = (None, None) if after is None else after
        rows = await self.storage.fetch(template, *selected.params(), *cursor, limit,
                                        selected.queue_name)
        return [WorkflowStatus.from_row(row) for row in rows]

    async def cancel_descendants(self, roots: list[str]) -> list[str]:
        """Cancel every PENDING descendant of ``roots``; the ids cancelled."""
        rows = await self.storage.fetch(Q.CANCEL_DESCENDANTS, roots, self.channel)
        return [row["workflow_id"] for row in rows]

    async def database_now(self) -> datetime:
        """The database server's clock (bulk operations bound their work by it)."""
        now: datetime = await self.storage.fetchval(Q.DATABASE_NOW)
        return now

    async def cancel_matching(
        self, selected: WorkflowFilter, created_by: datetime, limit: int
    ) -> list[str]:
        """Cancel up to ``limit`` matching PENDING workflows created by ``created_by``."""
        rows = await self.storage.fetch(Q.CANCEL_MATCHING, *selected.params(), created_by,
                                        limit, self.channel, selected.queue_name)
        return [row["workflow_id"] for row in rows]

    async def resume_matching(
        self, selected: WorkflowFilter, ended_before: datetime, limit: int
    ) -> list[str]:
        """Make up to ``limit`` matching ended workflows PENDING and unassigned."""
        rows = await self.storage.fetch(Q.RESUME_MATCHING, *selected.params(), ended_before,
                                        limit, self.channel, selected.queue_name)
        return [row["workflow_id"] for row in rows]

    async def lock_workflow_tree(
        self, workflow_id: str, children: bool
    ) -> list[tuple[str, str]]:
        """Lock a workflow (and its descendants): ``(id, status)`` of each (in a transaction)."""
        rows = await self.storage.fetch(Q.LOCK_WORKFLOW_TREE, workflow_id, children)
        return [(row["workflow_id"], row["status"]) for row in rows]

    async def delete_workflows(self, workflow_ids: list[str]) -> list[str]:
        """Delete workflows with everything of theirs; the ids deleted."""
        rows = await self.storage.fetch(Q.DELETE_WORKFLOWS, workflow_ids)
        return [row["workflow_id"] for row in rows]

    async def retention_bounds(
        self, max_age_seconds: float | None, max_count: int | None
    ) -> tuple[datetime | None, Cursor | None]:
        """The age bound (now minus the age) and the newest finished workflow beyond the
        ``max_count`` kept, by the database's clock."""
        row = await self.storage.fetchrow(Q.RETENTION_BOUNDS, max_age_seconds, max_count)
        assert row is not None
        keep = None if row["keep_completed_at"] is None else (
            row["keep_completed_at"], row["keep_workflow_id"])
        return row["age_bound"], keep

    async def retention_delete(self, bound: Cursor, limit: int) -> list[str]:
        """Delete up to ``limit`` finished workflows at or before ``bound`` (oldest first)."""
        rows = await self.storage.fetch(Q.RETENTION_DELETE, *bound, limit)
        return [row["workflow_id"] for row in rows]

    async def retention_count(self, bound: Cursor) -> int:
        """How many finished workflows are at or before ``bound`` (a dry run)."""
        count: int = await self.storage.fetchval(Q.RETENTION_COUNT, *bound)
        return count

    async def send_many_once(self, ops: list[Send]) -> list[bool]:
        """Deliver many messages in one statement (in a transaction: no second try). A
        destination deleted while it runs fails it as a whole: WorkflowNotFoundError."""
        return [outcome is None for outcome in await self._send_many(ops)]

    async def send_many(self, ops: list[Send]) -> list[bool]:
        """Deliver many messages in one statement; per message, whether its destination exists.

        A destination deleted while the statement runs fails it as a whole (its foreign key):
        it is run again, and at last each message alone."""
        for _attempt in range(3):
            try:
                outcomes = await self._send_many(ops)
            except WorkflowNotFoundError:
                continue
            return [outcome is None for outcome in outcomes]
        delivered: list[bool] = []
        for op in ops:
            try:
                await self._send_one(op)
                delivered.append(True)
            except WorkflowNotFoundError:
                delivered.append(False)
        return delivered

    # -- the journal ------------------------------------------------------------------------------

    async def load_journal(self, workflow_id: str) -> dict[int, JournalEntry]:
        rows = await self.storage.fetch(Q.LOAD_JOURNAL, workflow_id)
        return {
            row["function_id"]: JournalEntry(
                row["name"], row["output"], row["error"], row["child_id"], row["completed"],
                row["deadline"],
            )
            for row in rows
        }

    async def list_operations(self, workflow_id: str) -> list[StepInfo]:
        rows = await self.storage.fetch(Q.LIST_OPERATIONS, workflow_id)
        if not rows and not await self.workflow_exists(workflow_id):
            raise not_found(workflow_id)
        return [
            StepInfo.from_row(row, None if row["output"] is None else _codec.loads(row["output"]))
            for row in rows
        ]

    async def record_operation(
        self,
        workflow_id: str,
        function_id: int,
        name: str,
        *,
        output: str | None = None,
        error: str | None = None,
        child_id: str | None = None,
        completed: bool = True,
        deadline: float | None = None,
    ) -> bool:
        """Journal one operation; False when the workflow is no longer PENDING."""
        recorded: bool = await self._submit(
            self.records, self._record_one,
            (workflow_id, function_id, name, output, error, child_id, completed, deadline))
        return recorded

    async def _record_one(self, op: Record) -> bool:
        try:
            result = await self.storage.execute(Q.RECORD_OPERATION, *op)
        except UniqueViolation:
            raise _conflict(op[0], op[1]) from None
        return not result.endswith(" 0")

    async def _record_many(self, ops: list[Record]) -> list[bool | BaseException]:
        columns = list(zip(*ops, strict=True))
        rows = await self.storage.fetch(Q.RECORD_OPERATIONS, *map(list, columns))
        recorded = {(r["workflow_id"], r["function_id"]) for r in rows if r["kind"] == "r"}
        pending = {r["workflow_id"] for r in rows if r["kind"] == "p"}
        results: list[bool | BaseException] = []
        for op in ops:
            if (op[0], op[1]) in recorded:
                # Two executions of one workflow may record the same entry in one batch: the
                # first wins, like the first of two inserts; the other is a conflict.
                recorded.discard((op[0], op[1]))
                results.append(True)
            elif op[0] in pending:  # a PENDING workflow whose entry exists: another execution
                results.append(_conflict(op[0], op[1]))
            else:
                results.append(False)
        return results

    async def complete_operation(
        self, workflow_id: str, function_id: int, output: str | None
    ) -> bool:
        """Complete an open wait's journal entry; False when the workflow is no longer PENDING."""
        result = await self.storage.execute(
            Q.COMPLETE_OPERATION, workflow_id, function_id, output
        )
        return not result.endswith(" 0")

    async def set_operation_error(self, workflow_id: str, function_id: int, error: str) -> None:
        await self.storage.execute(Q.SET_OPERATION_ERROR, workflow_id, function_id, error)

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
        self, workflow_id: str, function_id: int, name: str, destination_id: str,
        topic: str | None, text: str,
    ) -> bool:
        """Journal a send and deliver the message in one statement; False if not PENDING."""
        try:
            row = await self._journaled(Q.JOURNALED_SEND, workflow_id, function_id, name,
                                        destination_id, topic, text, self.channel)
        except WorkflowNotFoundError:
            raise not_found(destination_id) from None
        return bool(row["recorded"])

    async def journaled_set_event(
        self, workflow_id: str, function_id: int, name: str, key: str, text: str
    ) -> bool:
        row = await self._journaled(Q.JOURNALED_SET_EVENT, workflow_id, function_id, name, key,
                                    text, self.channel)
        return bool(row["recorded"])

    async def journaled_write_stream(
        self, workflow_id: str, function_id: int, name: str, key: str, text: str,
        closed_error: str,
    ) -> Written:
        """Journal and append a write (``closed_error`` is journaled instead when the stream
        is closed): ``(recorded, offset or None, refused as closed)``."""
        written: Written = await self._submit(
            self.writes, self._write_one, (workflow_id, function_id, name, key, text,
                                           closed_error))
        return written

    async def _write_one(self, op: Write) -> Written:
        workflow_id, function_id, name, key, text, closed_error = op
        row = await self._journaled(Q.JOURNALED_WRITE_STREAM, workflow_id, function_id, name,
                                    key, text, self.channel, closed_error)
        return bool(row["recorded"]), row["offset"], bool(row["refused"])

    async def _write_many(self, ops: list[Write]) -> list[Written | BaseException]:
        columns = [list(column) for column in zip(*ops, strict=True)]
        rows = await self.storage.fetch(Q.JOURNALED_WRITE_STREAMS, *columns[:5], self.channel,
                                        columns[5])
        journaled = {(r["workflow_id"], r["function_id"]): bool(r["refused"])
                     for r in rows if r["kind"] == "o"}
        offsets = {(r["workflow_id"], r["function_id"]): r["offset"]
                   for r in rows if r["kind"] == "w"}
        pending = {r["workflow_id"] for r in rows if r["kind"] == "p"}
        results: list[Written | BaseException] = []
        for op in ops:
            key = (op[0], op[1])
            if key in journaled:  # (the first of two executions' writes wins, as in records)
                results.append((True, offsets.get(key), journaled.pop(key)))
            elif op[0] in pending:
                results.append(_conflict(op[0], op[1]))
            else:
                results.append((False, None, False))
        return results

    async def journaled_close_stream(
        self, workflow_id: str, function_id: int, name: str, key: str
    ) -> bool:
        row = await self._journaled(Q.JOURNALED_CLOSE_STREAM, workflow_id, function_id, name,
                                    key, self.channel)
        return bool(row["recorded"])

    # -- history: export, import, fork (asyncflow._history) -----------------------------------

    def snapshot(self) -> AbstractAsyncContextManager[Any]:
        """A repeatable-read transaction: the statements run in it see one snapshot."""
        return self.storage.transaction("repeatable_read")

    async def existing_workflow_ids(self, workflow_ids: list[str]) -> set[str]:
        rows = await self.storage.fetch(Q.EXISTING_WORKFLOW_IDS, workflow_ids)
        return {row["workflow_id"] for row in rows}

    async def child_workflow_ids(self, parent_ids: list[str]) -> list[str]:
        rows = await self.storage.fetch(Q.CHILD_WORKFLOW_IDS, parent_ids)
        return [row["workflow_id"] for row in rows]

    async def export_rows(self, workflow_ids: list[str], kinds: tuple[str, ...] = EXPORT_KINDS,
                          ) -> dict[str, list[tuple[str, str]]]:
        """For each kind of row (``workflow``, ``operation``, ``event``, ``stream_head``,
        ``stream_entry``, ``message``, ``message_key``), the ``(workflow id, row as JSON)`` of
        the given workflows, each kind in its natural order."""
        found: dict[str, list[tuple[str, str]]] = {}
        for kind, statement in _EXPORTS.items():
            if kind in kinds:
                rows = await self.storage.fetch(statement, workflow_ids)
                found[kind] = [(row["workflow_id"], row["row"]) for row in rows]
        return found

    async def import_workflow(
        self, workflow_id: str, workflow: str, rows: dict[str, str], unassigned: bool,
        queue_name: str | None,
    ) -> bool:
        """Insert an exported workflow (its row as JSON) and its other rows (a JSON array per
        kind) in one transaction; False, writing nothing, if the id exists. At commit, wake the
        recovery supervisors (``unassigned``) or the dispatchers of ``queue_name``."""
        try:
            async with self.storage.transaction():
                if await self.storage.fetchval(Q.IMPORT_WORKFLOW, workflow) is None:
                    return False
                for kind, statement in _IMPORTS.items():
                    if kind in rows:
                        await self.storage.execute(statement, rows[kind])
                if unassigned:
                    await self.storage.execute(Q.NOTIFY_UNASSIGNED, self.channel, workflow_id)
                if queue_name is not None:
                    await self.storage.execute(Q.NOTIFY_QUEUE, self.channel, queue_name)
        except UniqueViolation as exc:  # a repeated row in the file, or a deduplication id
            raise WorkflowConflictError(
                f"workflow {workflow_id!r} cannot be imported, nothing of it was: {exc}") from None
        return True

    async def fork_workflow(
        self, source_id: str, new_id: str, from_function_id: int, executor_id: str | None,
        app_version: str | None,
    ) -> Forked:
        """Insert workflow ``new_id`` (PENDING, the source's name and inputs) with what the
        source recorded before ``from_function_id`` (see ``FORK_COPY``), in one transaction.
        An existing ``new_id`` is left alone (``created`` false)."""
        async with self.snapshot():
            source = await self.storage.fetchrow(Q.FORK_SOURCE, source_id)
            if source is None:
                raise not_found(source_id)
            last = source["last_function_id"]
            limit = 0 if last is None else last + 1  # one past the last recorded operation
            if from_function_id > limit:
                raise InvalidArgumentError(
                    f"from_step must be at most {limit} (one past the last operation workflow "
                    f"{source_id!r} recorded), not {from_function_id}")
            created, name = await self.insert_workflow(
                new_id, source["name"], source["inputs"], executor_id,
                app_version or source["app_version"], None)
            if not created:
                return Forked(False, name, source["inputs"], 0)
            copied = await self.storage.fetchrow(Q.FORK_COPY, source_id, new_id,
                                                 from_function_id, self.channel)
            assert copied is not None
        return Forked(True, source["name"], source["inputs"], copied["operations"])

    # -- messages -------------------------------------------------------------------------------

    async def send_message(
        self, destination_id: str, topic: str | None, text: str, idempotency_key: str | None
    ) -> None:
        """Deliver a message (once per idempotency key, if given); unknown destination: not
        found."""
        await self._submit(self.sends, self._send_one,
                           (destination_id, topic, text, idempotency_key))

    async def _send_many(self, ops: list[Send]) -> list[BaseException | None]:
        columns = list(zip(*ops, strict=True))
        rows = await self.storage.fetch(Q.SEND_MESSAGES, *map(list, columns), self.channel)
        return [None if row["found"] else not_found(op[0])
                for op, row in zip(ops, rows, strict=True)]

    async def _send_one(self, op: Send) -> None:
        destination_id, topic, text, idempotency_key = op
        try:
            if idempotency_key is None:
                await self.storage.execute(
                    Q.SEND_MESSAGE, destination_id, topic, text, self.channel
                )
            else:
                await self.storage.execute(
                    Q.SEND_MESSAGE_ONCE, destination_id, topic, text, self.channel,
                    idempotency_key,
                )
        except WorkflowNotFoundError:
            raise not_found(destination_id) from None

    async def recv_first(
        self, workflow_id: str, topic: str | None, function_id: int, deadline: float
    ) -> tuple[bool, str | None]:
        """Journal recv #function_id (with its wall-clock deadline) and take a waiting message
        in one statement: ``(recorded, message or None)``."""
        template = Q.RECV_FIRST_NO_TOPIC if topic is None else Q.RECV_FIRST_TOPIC
        row = await self._insert_entry(workflow_id, function_id, template, workflow_id, topic,
                                       function_id, deadline)
        return bool(row["recorded"]), row["message"] if row["consumed"] else None

    async def recv_next(
        self, workflow_id: str, topic: str | None, function_id: int
    ) -> tuple[str | None, str | None, bool]:
        """Take the next message into the open recv: ``(workflow status, message, consumed)``."""
        template = Q.RECV_NO_TOPIC if topic is None else Q.RECV_TOPIC
        row = await self.storage.fetchrow(template, workflow_id, topic, function_id)
        assert row is not None
        return row["status"], row["message"], bool(row["consumed"])

    async def take_branch_message(
        self, workflow_id: str, topic: str | None, function_id: int, index: int
    ) -> tuple[str | None, str | None, bool]:
        """Like :meth:`recv_next` for wait_first's branch ``index``: the open journal entry is
        completed with ``{"index": index, "value": message}``."""
        template = Q.TAKE_BRANCH_MESSAGE_NO_TOPIC if topic is None else Q.TAKE_BRANCH_MESSAGE_TOPIC
        row = await self.storage.fetchrow(template, workflow_id, topic, function_id, index)
        assert row is not None
        return row["status"], row["message"], bool(row["consumed"])

    # -- events ---------------------------------------------------------------------------------

    async def watch_event(self, workflow_id: str, key: str) -> tuple[str, str | None, int]:
        """``(workflow status, event value or None, event version or 0)``."""
        row = await self.storage.fetchrow(Q.WATCH_EVENT, workflow_id, key)
        if row is None:
            raise not_found(workflow_id)
        return row["status"], row["value"], row["version"] or 0

    async def set_event(self, workflow_id: str, key: str, text: str) -> None:
        await self.storage.execute(Q.SET_EVENT, workflow_id, key, text, self.channel)

    async def get_event(
        self, workflow_id: str, key: str, waiter_id: str | None = None
    ) -> tuple[str | None, str | None]:
        """``(value or None, status of the waiting workflow)``; unknown workflow: not found."""
        row = await self.storage.fetchrow(Q.GET_EVENT, workflow_id, key, waiter_id)
        assert row is not None
        if not row["found"]:
            raise not_found(workflow_id)
        return row["value"], row["waiter_status"]

    async def get_event_first(
        self, workflow_id: str, target_id: str, key: str, function_id: int, deadline: float
    ) -> tuple[bool, str | None]:
        """Journal get_event #function_id of ``workflow_id``, completed if event (target, key)
        is set: ``(recorded, value or None)``."""
        row = await self._insert_entry(workflow_id, function_id, Q.GET_EVENT_FIRST, workflow_id,
                                       target_id, key, function_id, deadline)
        if row["recorded"] and not row["found"]:
            raise not_found(target_id)
        return bool(row["recorded"]), row["value"]

    async def get_all_events(self, workflow_id: str) -> dict[str, Any]:
        rows = await self.storage.fetch(Q.GET_ALL_EVENTS, workflow_id)
        if not rows and not await self.workflow_exists(workflow_id):
            raise not_found(workflow_id)
        return {row["key"]: _codec.loads(row["value"]) for row in rows}

    # -- streams --------------------------------------------------------------------------------

    async def write_stream(
        self, workflow_id: str, key: str, text: str, writer_fid: int, writer_seq: int
    ) -> int | None:
        """Write (or overwrite) the value of writer (fid, seq); ``None``: the stream is closed."""
        row = await self.storage.fetchrow(
            Q.WRITE_STREAM, workflow_id, key, text, writer_fid, writer_seq, self.channel
        )
        return None if row is None else row["offset"]

    async def close_stream(self, workflow_id: str, key: str) -> None:
        await self.storage.execute(Q.CLOSE_STREAM, workflow_id, key, self.channel)

    async def read_stream(
        self, workflow_id: str, key: str, offset: int, limit: int
    ) -> tuple[list[tuple[int, Any]], bool]:
        """The next ``(offset, value)`` entries from ``offset``, and whether the stream had
        ended (closed, or its workflow finished) as of the same snapshot."""
        page: Page = await self._submit(self.reads, self._read_one,
                                        (workflow_id, key, offset, limit))
        return page

    async def _read_one(self, op: Read) -> Page:
        rows = await self.storage.fetch(Q.READ_STREAM, *op)
        if not rows:
            raise not_found(op[0])
        return _page(rows)

    async def _read_many(self, ops: list[Read]) -> list[Page | BaseException]:
        columns = list(zip(*ops, strict=True))
        rows = await self.storage.fetch(Q.READ_STREAMS, *map(list, columns))
        grouped: dict[int, list[Any]] = {}
        for row in rows:
            grouped.setdefault(row["ord"], []).append(row)
        results: list[Page | BaseException] = []
        for ordinal, op in enumerate(ops, start=1):
            mine = grouped.get(ordinal, [])
            if not mine or mine[0]["status"] is None:
                results.append(not_found(op[0]))
            else:
                results.append(_page(mine))
        return results

    # -- dashboard reads (raw rows; the dashboard decodes them) ---------------------------------

    async def dashboard_workflow_data(self, workflow_id: str, chars: int) -> Any:
        """A workflow's inputs, output and error, cut at ``chars`` characters."""
        return await self.storage.fetchrow(Q.DASHBOARD_WORKFLOW_DATA, workflow_id, chars)

    async def dashboard_pending_messages(
        self, workflow_id: str, limit: int, chars: int
    ) -> list[Any]:
        """The oldest waiting messages of a workflow (all topics), with the total count."""
        return await self.storage.fetch(Q.DASHBOARD_PENDING_MESSAGES, workflow_id, limit, chars)

    async def dashboard_streams(
        self, workflow_id: str, keys: int, tail: int, chars: int
    ) -> list[Any]:
        """The last ``tail`` entries of the workflow's first ``keys`` streams."""
        return await self.storage.fetch(Q.DASHBOARD_STREAMS, workflow_id, keys, tail, chars)

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
    ) -> Enqueued:
        """Insert an ENQUEUED (or DELAYED) workflow and notify its queue, unless the id exists
        or the deduplication id is held (then say which)."""
        for _ in range(10):
            row = await self.storage.fetchrow(
                Q.ENQUEUE_WORKFLOW, workflow_id, name, inputs, app_version, parent_id,
                queue_name, priority, deduplication_id, delay_seconds, partition_key,
                self.channel,
            )
            assert row is not None
            if row["created"]:
                return Enqueued(True, None, None)
            if row["existing_name"] is not None or row["holder"] is not None:
                return Enqueued(False, row["existing_name"], row["holder"])
            # A concurrent insert committed after this statement's snapshot: look again.
        raise WorkflowConflictError(
            f"enqueueing workflow {workflow_id!r} kept conflicting with concurrent enqueues of "
            "the same id or deduplication id; try again")

    async def claim_queued(
        self,
        spec: QueueSpec,
        executor_id: str,
        names: list[str],
        app_version: str,
        batch: int,
    ) -> tuple[list[QueueClaim], float | None, bool]:
        """Claim the workflows of a queue that may start now, within its limits: one short
        transaction serialized with every other claim of the queue by the queue row's lock.
        Returns the claims, the seconds until the next moment something may become startable
        on its own (a DELAYED row due, the rate limit's window opening), and whether another
        claim right away may find more (the batch was full, or a partition's cap dropped
        rows)."""
        rate, per = spec.rate_limit if spec.rate_limit is not None else (None, None)
        async with self.storage.transaction():
            await self.storage.execute(Q.LOCK_QUEUE, spec.name)
            rows = await self.storage.fetch(
                Q.CLAIM_QUEUED, spec.name, executor_id, names, app_version, spec.concurrency,
                spec.worker_concurrency, rate, per, spec.partition_concurrency, batch,
            )
        claims = [
            QueueClaim(row["workflow_id"], row["name"], row["inputs"], row["recovery_attempts"],
                       bool(row["fresh"]))
            for row in rows if row["workflow_id"] is not None
        ]
        first = rows[0]
        found, room = first["found"], first["room"]
        more = len(claims) < found or (found == room == batch)
        return claims, first["wait_s"], more

    async def release_unstarted(
        self, queue_name: str, executor_id: str, running: list[str]
    ) -> int:
        """Put this executor's PENDING workflows of a queue that are not in ``running`` back in
        the queue (after a claim whose outcome was lost); returns how many."""
        released: int = await self.storage.fetchval(
            Q.RELEASE_UNSTARTED, queue_name, executor_id, running, self.channel)
        return released

    async def requeue_orphans(self, executor_id: str, include_own: bool) -> list[str]:
        """Put dead executors' (and with ``include_own`` this executor's) PENDING queued
        workflows back in their queues; returns the queues notified."""
        rows = await self.storage.fetch(
            Q.REQUEUE_ORPHANS, executor_id, include_own, self.channel,
            await self._lock_namespace(),
        )
        return [row["queue_name"] for row in rows]
