"""The store's statements for recorded histories (``_front.history``): exporting and importing
workflows with everything they own, and forking a workflow from a step."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from .._errors import InvalidArgumentError, WorkflowConflictError
from .base import StoreBase, not_found
from .database import UniqueViolation
from .sql import history, workflows

EXPORT_KINDS = ("workflow", "operation", "event", "stream_head", "stream_entry", "message",
                "message_key")
_EXPORTS = dict(zip(EXPORT_KINDS, (
    history.EXPORT_WORKFLOWS, history.EXPORT_OPERATIONS, history.EXPORT_EVENTS,
    history.EXPORT_STREAM_HEADS, history.EXPORT_STREAMS, history.EXPORT_MESSAGES,
    history.EXPORT_MESSAGE_KEYS), strict=True))
_IMPORTS = {
    "operation": history.IMPORT_OPERATIONS, "event": history.IMPORT_EVENTS,
    "stream_head": history.IMPORT_STREAM_HEADS, "stream_entry": history.IMPORT_STREAMS,
    "message": history.IMPORT_MESSAGES, "message_key": history.IMPORT_MESSAGE_KEYS,
}


@dataclass(frozen=True, slots=True)
class Forked:
    """What :meth:`HistoryStatements.fork_workflow` did: whether it created the fork, the
    workflow name of the row under the new id, the inputs, how many journal entries it
    copied, and the queue it waits in (a fork of a queued workflow; ``None``: none)."""

    created: bool
    name: str | None
    inputs: str
    operations: int
    queue_name: str | None = None


class HistoryStatements(StoreBase):
    """Snapshots, selections, export and import of whole workflows, and forks."""

    __slots__ = ()

    def snapshot(self) -> AbstractAsyncContextManager[Any]:
        """A repeatable-read transaction: the statements run in it see one snapshot."""
        return self.storage.transaction("repeatable_read")

    async def existing_workflow_ids(self, workflow_ids: list[str]) -> set[str]:
        rows = await self.storage.fetch(history.EXISTING_WORKFLOW_IDS, workflow_ids)
        return {row["workflow_id"] for row in rows}

    async def child_workflow_ids(self, parent_ids: list[str]) -> list[str]:
        rows = await self.storage.fetch(history.CHILD_WORKFLOW_IDS, parent_ids)
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
                if await self.storage.fetchval(history.IMPORT_WORKFLOW, workflow) is None:
                    return False
                for kind, statement in _IMPORTS.items():
                    if kind in rows:
                        await self.storage.execute(statement, rows[kind])
                if unassigned:
                    await self.storage.execute(history.NOTIFY_UNASSIGNED, self.channel, workflow_id)
                if queue_name is not None:
                    await self.storage.execute(history.NOTIFY_QUEUE, self.channel, queue_name)
        except UniqueViolation as exc:  # a repeated row in the file, or a deduplication id
            raise WorkflowConflictError(
                f"workflow {workflow_id!r} cannot be imported, nothing of it was: {exc}") from None
        return True

    async def fork_workflow(
        self, source_id: str, new_id: str, from_function_id: int, executor_id: str | None,
        app_version: str | None,
    ) -> Forked:
        """Insert workflow ``new_id`` (PENDING, the source's name and inputs; ENQUEUED in the
        source's queue if it is a queued one) with what the source recorded before
        ``from_function_id`` (see ``FORK_COPY``), in one transaction.
        An existing ``new_id`` is left alone (``created`` false)."""
        async with self.snapshot():
            source = await self.storage.fetchrow(history.FORK_SOURCE, source_id)
            if source is None:
                raise not_found(source_id)
            last = source["last_function_id"]
            limit = 0 if last is None else last + 1  # one past the last recorded operation
            if source["continued"] and last is not None:
                # A kept run's last operation is its continue_as_new: a fork performs the
                # hand-over again (a copied one would end the run without handing over).
                limit = last
            if from_function_id > limit:
                raise InvalidArgumentError(
                    f"from_operation must be at most {limit} (one past the last operation workflow "
                    f"{source_id!r} recorded; a kept run of a continue_as_new: its "
                    f"continue_as_new), not {from_function_id}")
            queue_name = source["queue_name"]
            if queue_name is not None:  # through the source's queue, as a resume goes
                row = await self.storage.fetchrow(
                    history.FORK_ENQUEUE, new_id, source["name"], queue_name, source["priority"],
                    source["partition_key"], source["inputs"],
                    app_version or source["app_version"], self.channel, source["dispatched"])
            else:
                row = await self.storage.fetchrow(
                    workflows.INSERT_WORKFLOW, new_id, source["name"], source["inputs"],
                        executor_id,
                    app_version or source["app_version"], None, None,  # no parent, traceparent
                    None, None, self.channel, None, None)  # no timeout, not a child
            if row is None or not row["created"]:  # the id exists
                name = await self.storage.fetchval(workflows.WORKFLOW_NAME, new_id)
                return Forked(False, name, source["inputs"], 0)
            copied = await self.storage.fetchrow(history.FORK_COPY, source_id, new_id,
                                                 from_function_id, self.channel)
            assert copied is not None
        return Forked(True, source["name"], source["inputs"], copied["operations"],
                      queue_name)

