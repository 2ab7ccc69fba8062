"""Workflow statuses, and the read-only snapshots asyncflow returns: workflow status, journal
entry, health."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


class Status(StrEnum):
    """The status of a workflow. Values are the plain strings stored in the database, so
    ``Status.PENDING == "PENDING"``."""

    PENDING = "PENDING"
    #: Waiting in a queue for a dispatcher to start it.
    ENQUEUED = "ENQUEUED"
    #: Waiting in a queue until its ``delay_seconds`` have passed (then ENQUEUED).
    DELAYED = "DELAYED"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"
    MAX_RECOVERY_ATTEMPTS_EXCEEDED = "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
    #: An earlier run of a workflow that called ``asyncflow.continue_as_new``, kept as its own
    #: row (``run_of`` names the workflow id, which went on with the next run).
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW"


PENDING = Status.PENDING
ENQUEUED = Status.ENQUEUED
DELAYED = Status.DELAYED
SUCCESS = Status.SUCCESS
ERROR = Status.ERROR
CANCELLED = Status.CANCELLED
MAX_RECOVERY_ATTEMPTS_EXCEEDED = Status.MAX_RECOVERY_ATTEMPTS_EXCEEDED
CONTINUED_AS_NEW = Status.CONTINUED_AS_NEW
TERMINAL_STATUSES = frozenset({SUCCESS, ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED,
                               CONTINUED_AS_NEW})


class Delivery(StrEnum):
    """What became of a message sent from outside a workflow: what ``send`` returns (an
    ``AsyncFlow``'s or a ``Client``'s). A ``str``, so ``Delivery.DELIVERED == "delivered"``.

    A send to a workflow id that does not exist raises ``WorkflowNotFoundError`` instead.
    """

    #: In the mailbox of a workflow that has not ended (running, waiting, or queued): its next
    #: ``recv`` on that topic gets it.
    DELIVERED = "delivered"
    #: Its ``idempotency_key`` was sent to that workflow before: this send delivered nothing.
    DUPLICATE = "duplicate"
    #: Stored, but the workflow has ended (succeeded, failed or was cancelled): nothing receives
    #: it unless the workflow is resumed.
    WORKFLOW_ENDED = "workflow_ended"

    @classmethod
    def of(cls, inserted: bool, status: str) -> Delivery:
        """The delivery of a send that stored its message (``inserted``) or not, to a
        workflow of ``status``."""
        if not inserted:
            return cls.DUPLICATE
        return cls.WORKFLOW_ENDED if status in TERMINAL_STATUSES else cls.DELIVERED


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """A snapshot of one workflow's row.

    ``status`` is a :class:`Status` (a ``str``). ``error`` is ``"Type: message"`` for a failed
    workflow. Queued workflows also carry their ``queue_name``, ``priority``,
    ``deduplication_id``, ``partition_key``, ``delay_until`` (when a DELAYED one becomes
    ready) and ``dispatched_at`` (when a dispatcher last started it); ``None`` (0 for
    ``priority``) for the others. A workflow started with a timeout has ``timeout_seconds``
    and, once its clock started (at start; at dispatch for a queued one), its ``deadline``.
    """

    workflow_id: str
    name: str
    status: str
    executor_id: str | None
    app_version: str
    recovery_attempts: int
    parent_workflow_id: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    error: str | None
    queue_name: str | None = None
    priority: int = 0
    deduplication_id: str | None = None
    partition_key: str | None = None
    delay_until: datetime | None = None
    dispatched_at: datetime | None = None
    timeout_seconds: float | None = None
    deadline: datetime | None = None
    #: The run of the workflow id (1, then one more at each ``continue_as_new``); on a kept
    #: earlier run (status CONTINUED_AS_NEW) ``run_of`` is the workflow id it continued as.
    run: int = 1
    run_of: str | None = None
    #: The workflow's attributes (``set_attributes``; ``list_workflows(attributes=)``).
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Any) -> WorkflowStatus:
        """Build from a database row (internal)."""
        return cls(
            workflow_id=row["workflow_id"],
            name=row["name"],
            status=Status(row["status"]),
            executor_id=row["executor_id"],
            app_version=row["app_version"],
            recovery_attempts=row["recovery_attempts"],
            parent_workflow_id=row["parent_workflow_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            completed_at=row["completed_at"],
            error=error_summary(row["error"]),
            queue_name=row["queue_name"],
            priority=row["priority"],
            deduplication_id=row["deduplication_id"],
            partition_key=row["partition_key"],
            delay_until=row["delay_until"],
            dispatched_at=row["dispatched_at"],
            timeout_seconds=row["timeout_seconds"],
            deadline=(None if row["deadline"] is None
                      else datetime.fromtimestamp(row["deadline"], UTC)),
            run=row.get("run", 1),
            run_of=row.get("run_of"),
            attributes=orjson.loads(row.get("attributes") or "{}"),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (timestamps as ISO 8601 strings)."""
        return _as_dict(self)

    @property
    def cursor(self) -> str:
        """An opaque text naming this workflow's place in ``list_workflows`` order: pass it as
        ``after=`` to get the page after this workflow (from any process, e.g. over HTTP)."""
        return encode_cursor(self.created_at, self.workflow_id)


def encode_cursor(created_at: datetime, workflow_id: str) -> str:
    """The cursor text of a place in list order (``created_at``, ``workflow_id``)."""
    raw = orjson.dumps([created_at.isoformat(), workflow_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class StepInfo:
    """One entry of a workflow's journal: a step, transaction, message, event, sleep, …

    ``output`` is the recorded value (decoded JSON) and ``error`` is ``"Type: message"`` when the
    operation raised; ``completed`` is false for a wait (recv, get_event) still in progress.
    A send, set_event, stream write or stream close records what it did: ``{"to", "topic",
    "message"}``, ``{"key", "value"}``, ``{"key"}`` (``None`` for entries written before
    asyncflow recorded it).
    """

    function_id: int
    name: str
    output: Any
    error: str | None
    child_workflow_id: str | None
    completed: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any, output: Any) -> StepInfo:
        """Build from a database row and its decoded output (internal)."""
        return cls(
            function_id=row["function_id"],
            name=row["name"],
            output=output,
            error=error_summary(row["error"]),
            child_workflow_id=row["child_id"],
            completed=row["completed"],
            created_at=row["created_at"],
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (timestamps as ISO 8601 strings)."""
        return _as_dict(self)


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    """The state of one background component (``listener``, ``supervisor``).

    ``healthy`` is false while it keeps failing (it retries with backoff on its own);
    ``error`` is the last failure, ``since`` when the current failure streak began and
    ``failures`` how many attempts failed in a row. ``detail`` is what the component reports
    besides (``adoption``: the workflows left for their own app version, with the first ids and
    where their histories diverge from this code; it does not make the component unhealthy).
    """

    healthy: bool
    error: str | None = None
    since: datetime | None = None
    failures: int = 0
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """What ``app.health()`` / ``client.health()`` report: every background component's state.

    ``healthy`` is true when the app or client is running and every component works.
    """

    healthy: bool
    running: bool
    components: dict[str, ComponentHealth] = field(default_factory=dict)


def error_summary(text: str | None) -> str | None:
    """``"module.Type: message"`` of a recorded error (internal)."""
    if text is None:
        return None
    record = orjson.loads(text)
    module = record.get("module") or ""
    type_name = f"{module}.{record['type']}" if module else record["type"]
    return f"{type_name}: {record.get('message', '')}"


def _as_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in obj.__dataclass_fields__:
        value = getattr(obj, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out
