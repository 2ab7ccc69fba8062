"""The store's statements of endless workflows and workflow attributes: a run continued as new
(the current run archived or dropped, the row reset for the next run, in one fenced statement),
the earlier runs kept, and the attributes set from a workflow's body (journaled) or from
outside."""

from __future__ import annotations

from .. import _codec
from .._status import WorkflowStatus
from .base import JournalEntry, StoreBase, conflict, not_found
from .database import UniqueViolation
from .sql import journal, runs


class RunStatements(StoreBase):
    """The journal of a workflow's current run, ``continue_as_new``, the runs of a workflow,
    and its attributes."""

    __slots__ = ()

    async def load_journal(
        self, workflow_id: str
    ) -> tuple[dict[int, JournalEntry], int, int | None]:
        """The journal of the workflow's current run, the function id the run starts at (0 for
        a first run; one past the continue of the run before it) and the workflow's epoch
        (``None``: no such workflow)."""
        rows = await self.storage.fetch(journal.LOAD_JOURNAL, workflow_id)
        entries = {
            row["function_id"]: JournalEntry(
                row["name"], row["output"], row["error"], row["child_id"], row["completed"],
                row["deadline"],
            )
            for row in rows if row["function_id"] is not None
        }
        if not rows:
            return entries, 0, None
        return entries, rows[0]["first_function_id"], rows[0]["epoch"]

    async def continue_as_new(
        self, workflow_id: str, function_id: int, inputs: str, epoch: int,
        archive_id: str | None,
    ) -> tuple[int | None, bool]:
        """End the current run of ``workflow_id`` (kept as ``archive_id``, or its journal
        dropped when that is ``None``) and start the next one with ``inputs``, if the execution
        at ``epoch`` still owns it: ``(new epoch, owned)``. ``(None, True)``: the archive id is
        taken by another workflow, nothing was done; ``(None, False)``: not owned."""
        row = await self.storage.fetchrow(
            runs.CONTINUE_AS_NEW, workflow_id, function_id, inputs, epoch, archive_id is not None,
            archive_id or "")
        assert row is not None
        return row["epoch"], bool(row["owned"])

    async def list_runs(self, workflow_id: str) -> list[WorkflowStatus]:
        """The earlier runs kept of ``workflow_id``, newest first."""
        rows = await self.storage.fetch(runs.LIST_RUNS, workflow_id)
        return [WorkflowStatus.from_row(row) for row in rows]

    async def set_attributes(self, workflow_id: str, attributes: str, merge: bool) -> str:
        """Set (merge into, or replace) a workflow's attributes; the attributes now (JSON)."""
        text: str | None = await self.storage.fetchval(
            runs.SET_ATTRIBUTES, workflow_id, attributes, merge)
        if text is None:
            raise not_found(workflow_id)
        return text

    async def journaled_set_attributes(
        self, workflow_id: str, function_id: int, attributes: str, merge: bool, epoch: int
    ) -> bool:
        """Set a workflow's attributes from its body, with journal entry ``function_id``, while
        the execution at ``epoch`` owns it (``False``: refused, nothing written)."""
        try:
            recorded = await self.storage.fetchval(
                runs.JOURNALED_SET_ATTRIBUTES, workflow_id, attributes, merge, function_id, epoch)
        except UniqueViolation:
            raise conflict(workflow_id, function_id) from None
        return bool(recorded)

    async def workflow_attributes(self, workflow_id: str) -> dict[str, object]:
        """A workflow's attributes."""
        text: str | None = await self.storage.fetchval(runs.WORKFLOW_ATTRIBUTES, workflow_id)
        if text is None:
            raise not_found(workflow_id)
        value: dict[str, object] = _codec.loads(text)
        return value
