"""The store's statements for operating workflows (``_operations.admin``, ``_engine.cancel``,
``_operations.retention``), the test kit's databases (``asyncflow.testing``) and the dashboard's
reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .._errors import WorkflowNotFoundError
from .._filters import Cursor, WorkflowFilter
from .._status import WorkflowStatus
from .base import Send
from .batches import BatchStatements
from .database import RetryableTransactionError, UniqueViolation
from .sql import dashboard, operating, retention, testkit


class AdminStatements(BatchStatements):
    """Listing pages, cancelling trees, bulk operations, deleting, retention, test databases,
    dashboard reads."""

    __slots__ = ()

    # -- operating workflows (lifecycle: _admin, _cancel, _retention) ---------------------------

    async def list_page(
        self, selected: WorkflowFilter, after: Cursor | None, limit: int
    ) -> list[WorkflowStatus]:
        """One page of workflows, newest first, after the cursor (keyset)."""
        cursor = (None, None) if after is None else after
        if selected.attributes is not None:  # an attributes' index finds them
            walk = selected.walk
            if walk is None:  # only lists and objects: the GIN index
                rows = await self.storage.fetch(
                    operating.LIST_ATTRIBUTES_PAGE, *selected.params(), *cursor, limit,
                    selected.queue_name, selected.attributes)
            else:  # walk the first scalar attribute's index, in list order
                rows = await self.storage.fetch(
                    operating.LIST_ATTRIBUTE_WALK_PAGE, *selected.params(), *cursor, limit,
                    selected.queue_name, selected.attributes, *walk)
            return [WorkflowStatus.from_row(row) for row in rows]
        template = operating.LIST_WORKFLOWS_PAGE if selected.parent_workflow_id is None else (
            operating.LIST_CHILDREN_PAGE)
        rows = await self.storage.fetch(template, *selected.params(), *cursor, limit,
                                        selected.queue_name)
        return [WorkflowStatus.from_row(row) for row in rows]

    async def cancel_descendants(self, roots: list[str]) -> list[str]:
        """Cancel every PENDING descendant of ``roots``; the ids cancelled."""
        rows = await self.storage.fetch(operating.CANCEL_DESCENDANTS, roots, self.channel)
        return [row["workflow_id"] for row in rows]

    async def database_now(self) -> datetime:
        """The database server's clock (bulk operations bound their work by it)."""
        now: datetime = await self.storage.fetchval(retention.DATABASE_NOW)
        return now

    async def cancel_matching(
        self, selected: WorkflowFilter, created_by: datetime, limit: int
    ) -> list[str]:
        """Cancel up to ``limit`` matching PENDING workflows created by ``created_by``."""
        rows = await self.storage.fetch(operating.CANCEL_MATCHING, *selected.params(), created_by,
                                        limit, self.channel, selected.queue_name)
        return [row["workflow_id"] for row in rows]

    async def resume_matching(
        self, selected: WorkflowFilter, ended_before: datetime, limit: int
    ) -> list[str]:
        """Make up to ``limit`` matching ended workflows PENDING and unassigned (a queued one
        whose deduplication id is held is left out: :meth:`resume_conflicts`)."""
        try:
            rows = await self.storage.fetch(operating.RESUME_MATCHING, *selected.params(),
                                            ended_before, limit, self.channel,
                                            selected.queue_name)
        except UniqueViolation as exc:  # an enqueue took a deduplication id meanwhile
            raise RetryableTransactionError(
                f"a deduplication id was taken while resuming: {exc}") from None
        return [row["workflow_id"] for row in rows]

    async def resume_conflicts(
        self, selected: WorkflowFilter, ended_before: datetime
    ) -> list[tuple[str, str, str | None]]:
        """The matching ended workflows a bulk resume leaves out because another workflow of
        their queue holds their deduplication id: ``(id, deduplication id, holder)``."""
        rows = await self.storage.fetch(operating.RESUME_CONFLICTS, *selected.params(),
                                        ended_before, selected.queue_name)
        return [(row["workflow_id"], row["deduplication_id"], row["holder"]) for row in rows]

    async def lock_workflow_tree(
        self, workflow_id: str, children: bool
    ) -> list[tuple[str, str]]:
        """Lock a workflow (and its descendants): ``(id, status)`` of each (in a transaction)."""
        rows = await self.storage.fetch(retention.LOCK_WORKFLOW_TREE, workflow_id, children)
        return [(row["workflow_id"], row["status"]) for row in rows]

    async def lock_parent(self, workflow_id: str) -> tuple[str, str] | None:
        """Lock a workflow's parent: ``(id, status)``, or ``None`` when it has none (in a
        transaction)."""
        row = await self.storage.fetchrow(retention.LOCK_PARENT, workflow_id)
        return None if row is None else (row["workflow_id"], row["status"])

    async def lock_readers(self, workflow_ids: list[str]) -> list[tuple[str, str, str]]:
        """Unfinished workflows (not among ``workflow_ids``) whose journal names one of them as
        a child: ``(id, status, the child it names)``, locked (in a transaction)."""
        rows = await self.storage.fetch(retention.LOCK_READERS, workflow_ids)
        return [(row["workflow_id"], row["status"], row["child_id"]) for row in rows]

    async def delete_workflows(self, workflow_ids: list[str]) -> list[str]:
        """Delete workflows with everything of theirs; the ids deleted."""
        rows = await self.storage.fetch(retention.DELETE_WORKFLOWS, workflow_ids)
        return [row["workflow_id"] for row in rows]

    async def retention_bounds(
        self, max_age_seconds: float | None, max_count: int | None
    ) -> tuple[datetime | None, Cursor | None]:
        """The age bound (now minus the age) and the newest finished workflow beyond the
        ``max_count`` kept, by the database's clock."""
        row = await self.storage.fetchrow(retention.RETENTION_BOUNDS, max_age_seconds, max_count)
        assert row is not None
        keep = None if row["keep_completed_at"] is None else (
            row["keep_completed_at"], row["keep_workflow_id"])
        return row["age_bound"], keep

    async def retention_delete(self, bound: Cursor, limit: int) -> list[str]:
        """Delete up to ``limit`` finished workflows at or before ``bound`` (oldest first)."""
        rows = await self.storage.fetch(retention.RETENTION_DELETE, *bound, limit)
        return [row["workflow_id"] for row in rows]

    async def retention_count(self, bound: Cursor) -> int:
        """How many finished workflows are at or before ``bound`` (a dry run)."""
        count: int = await self.storage.fetchval(retention.RETENTION_COUNT, *bound)
        return count

    async def send_many_once(self, ops: list[Send], traceparent: str | None = None
                             ) -> list[bool]:
        """Deliver many messages in one statement (in a transaction: no second try). A
        destination deleted while it runs fails it as a whole: WorkflowNotFoundError.
        ``traceparent``: the trace context of the sending span (telemetry)."""
        sent = [(*op, traceparent) for op in ops]
        return [not isinstance(outcome, BaseException) for outcome in await self._send_many(sent)]

    async def send_many(self, ops: list[Send], traceparent: str | None = None) -> list[bool]:
        """Deliver many messages in one statement; per message, whether its destination exists.
        ``traceparent``: the trace context of the sending span (telemetry).

        A destination deleted while the statement runs fails it as a whole (its foreign key):
        it is run again, and at last each message alone."""
        sent = [(*op, traceparent) for op in ops]
        for _attempt in range(3):
            try:
                outcomes = await self._send_many(sent)
            except WorkflowNotFoundError:
                continue
            return [not isinstance(outcome, BaseException) for outcome in outcomes]
        delivered: list[bool] = []
        for op in sent:
            try:
                await self._send_one(op)
                delivered.append(True)
            except WorkflowNotFoundError:
                delivered.append(False)
        return delivered

    # -- test databases (asyncflow.testing; on a server's admin connection) ---------------------

    async def create_database(self, name: str, template: str | None = None) -> None:
        """``CREATE DATABASE name`` (``TEMPLATE template``: a copy of that database)."""
        if template is None:
            await self.storage.execute(testkit.database_statement(testkit.CREATE_DATABASE, db=name))
        else:
            await self.storage.execute(testkit.database_statement(
                testkit.CREATE_DATABASE_FROM_TEMPLATE, db=name, template=template))

    async def drop_database(self, name: str) -> None:
        """End the sessions still connected to database ``name``, then drop it (if it exists)."""
        await self.storage.execute(testkit.TERMINATE_SESSIONS, name)
        await self.storage.execute(testkit.database_statement(testkit.DROP_DATABASE, db=name))

    # -- dashboard reads (raw rows; the dashboard decodes them) ---------------------------------

    async def dashboard_workflow_data(self, workflow_id: str, chars: int) -> Any:
        """A workflow's inputs, output and error, cut at ``chars`` characters."""
        return await self.storage.fetchrow(dashboard.DASHBOARD_WORKFLOW_DATA, workflow_id, chars)

    async def dashboard_pending_messages(
        self, workflow_id: str, limit: int, chars: int
    ) -> list[Any]:
        """The oldest waiting messages of a workflow (all topics), with the total count."""
        return await self.storage.fetch(dashboard.DASHBOARD_PENDING_MESSAGES, workflow_id, limit,
                                        chars)

    async def stream_keys(self, workflow_id: str, first: str, limit: int) -> list[str]:
        """The workflow's stream keys (``limit`` of them), ``first`` first if it is one."""
        rows = await self.storage.fetch(dashboard.STREAM_KEYS, workflow_id, first, limit)
        return [row["key"] for row in rows]

    async def dashboard_streams(
        self, workflow_id: str, keys: int, tail: int, chars: int
    ) -> list[Any]:
        """The last ``tail`` entries of the workflow's first ``keys`` streams."""
        return await self.storage.fetch(dashboard.DASHBOARD_STREAMS, workflow_id, keys, tail, chars)

    async def dashboard_journal_span(self, workflow_id: str) -> Any:
        """A workflow's first and last function ids and its last entry's time (None: empty)."""
        return await self.storage.fetchrow(dashboard.DASHBOARD_JOURNAL_SPAN, workflow_id)

    async def dashboard_last_activity(self, workflow_ids: list[str]) -> list[Any]:
        """When each workflow last recorded a journal entry."""
        return await self.storage.fetch(dashboard.DASHBOARD_LAST_ACTIVITY, workflow_ids)

    async def dashboard_operations(
        self, workflow_id: str, first: int, end: int, chars: int
    ) -> list[Any]:
        """The journal entries ``first <= function id < end`` with their keys and values."""
        return await self.storage.fetch(dashboard.DASHBOARD_OPERATIONS, workflow_id, first, end,
                                        chars)

    async def dashboard_queues(self, registered: list[str]) -> list[Any]:
        """Every queue known to the database (and ``registered``), with its depth and running
        count, by name."""
        return await self.storage.fetch(dashboard.DASHBOARD_QUEUES, registered)

    async def dashboard_queue(self, queue_name: str) -> Any:
        """One queue's depth and running count, and whether the database knows it."""
        return await self.storage.fetchrow(dashboard.DASHBOARD_QUEUE, queue_name)
