"""What every part of the store shares: its row types, the errors it raises for rows it
does not find, and the base class holding the storage and the NOTIFY channel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import _codec
from .._errors import QueueDeduplicatedError, WorkflowNotFoundError, _ExecutionConflict
from .._status import TERMINAL_STATUSES, Delivery
from .database import Storage
from .sql import liveness, messages

Finish = tuple[str, str, str | None, str | None, int]  # ..., the execution's epoch
# workflow, function id, name, output, error, child, completed, deadline, the execution's epoch
Record = tuple[str, int, str, str | None, str | None, str | None, bool, float | None, int]
Send = tuple[str, str | None, str, str | None]  # destination, topic, text, idempotency key
Sent = tuple[str, str | None, str, str | None, str | None]  # ... and the sender's traceparent
# workflow, function id, name, key, value, the recorded error if the stream is closed, epoch
Write = tuple[str, int, str, str, str, str, int]
Close = tuple[str, int, str, str, int]  # workflow, function id, name, key, epoch
Read = tuple[str, str, int, int]
# INSERT_WORKFLOW's parameters but the channel: workflow, name, inputs, executor, app version,
# parent, traceparent, timeout, deadline, the parent execution's epoch, attributes
Start = tuple[str, str, str, str | None, str, str | None, str | None, float | None,
              float | None, int | None, str | None]
Started = tuple[bool, str | None]  # created, the name of the row (None: no row)
# A recv's first attempt: workflow, topic, function id, deadline, the execution's epoch
FirstRecv = tuple[str, str | None, int, float, int]
Taken = tuple[bool, str | None, str | None]  # journaled, the message taken, its traceparent
Recv = tuple[str, str | None, int, int]  # a later attempt: workflow, topic, function id, epoch
# the status (None: no longer at the epoch), the message, consumed, the sender's traceparent,
# and the entry's output when it was completed before (a send handed its message over: the
# traceparent is then that send's)
Received = tuple[str | None, str | None, bool, str | None, str | None]
# what became of a send, and the function id of the recv it was handed to (see messages.py)
Delivered = tuple[Delivery, int | None]
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
    #: The ownership epoch the claim gave it.
    epoch: int
    #: Its queue (a queued workflow this executor runs), if any.
    queue_name: str | None = None
    #: Its deadline (runtime-clock seconds), if it has a timeout.
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class Resumed:
    """A workflow that ``resume_workflow`` made runnable again: PENDING (to run), or back in its
    queue (``queue_name`` set) for a dispatcher."""

    name: str
    inputs: str
    queue_name: str | None
    #: The ownership epoch the resume gave it.
    epoch: int






@dataclass(frozen=True, slots=True)
class Outcome:
    """A workflow's status with its recorded output and error (JSON text)."""

    status: str
    output: str | None
    error: str | None


def conflict(workflow_id: str, function_id: int) -> _ExecutionConflict:
    return _ExecutionConflict(
        f"operation #{function_id} of workflow {workflow_id!r} was recorded by another execution"
    )


def deduplicated_resume(workflow_id: str, deduplication_id: str | None = None,
                        holder: str | None = None) -> QueueDeduplicatedError:
    """The error for a resume refused because another workflow of the queue holds the
    workflow's deduplication id (one wording for single and bulk resumes)."""
    held = "its deduplication_id" if deduplication_id is None else (
        f"its deduplication_id {deduplication_id!r}")
    by = "another workflow of its queue" if holder is None else (
        f"workflow {holder!r} of its queue")
    return QueueDeduplicatedError(
        f"workflow {workflow_id!r} cannot be resumed now: {by} holds {held}; resume it once "
        "that one has finished", holder)


def not_found(workflow_id: str) -> WorkflowNotFoundError:
    """The error for an unknown workflow id (one wording everywhere)."""
    return WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")


def page(rows: list[Any]) -> Page:
    entries = [
        (row["offset"], _codec.loads(row["value"])) for row in rows if row["offset"] is not None
    ]
    first = rows[0]
    return entries, bool(first["closed"]) or first["status"] in TERMINAL_STATUSES



class StoreBase:
    """The storage and channel every group of named statements runs on."""

    __slots__ = ()
    storage: Storage
    channel: str

    async def _lock_namespace(self) -> int:
        namespace = self.storage.lock_namespace
        if namespace is None:
            namespace = await self.storage.fetchval(liveness.SCHEMA_LOCK_NAMESPACE,
                                                    self.storage.schema)
            self.storage.lock_namespace = namespace
        assert namespace is not None
        return namespace


    async def _send_one(self, op: Sent) -> Delivered:
        destination_id, topic, text, idempotency_key, traceparent = op
        try:
            if idempotency_key is None:
                row = await self.storage.fetchrow(
                    messages.SEND_MESSAGE, destination_id, topic, text, self.channel, traceparent
                )
            else:
                row = await self.storage.fetchrow(
                    messages.SEND_MESSAGE_ONCE, destination_id, topic, text, self.channel,
                    idempotency_key, traceparent,
                )
        except WorkflowNotFoundError:
            raise not_found(destination_id) from None
        if row is None or row["status"] is None:  # (a repeated key to a deleted workflow)
            raise not_found(destination_id)
        return Delivery.of(row["inserted"], row["status"]), row["handed"]

