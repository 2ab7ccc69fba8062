"""Workflow handles and status snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson

if TYPE_CHECKING:
    from ._core import Core

R = TypeVar("R")

PENDING = "PENDING"
SUCCESS = "SUCCESS"
ERROR = "ERROR"
CANCELLED = "CANCELLED"
MAX_RECOVERY_ATTEMPTS_EXCEEDED = "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
TERMINAL_STATUSES = frozenset({SUCCESS, ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED})


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """A snapshot of one workflow's row.

    ``status`` is one of ``PENDING``, ``SUCCESS``, ``ERROR``, ``CANCELLED`` and
    ``MAX_RECOVERY_ATTEMPTS_EXCEEDED``. ``error`` is ``"Type: message"`` for a failed workflow.
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

    @classmethod
    def from_row(cls, row: Any) -> WorkflowStatus:
        error = _error_summary(row["error"])
        return cls(
            workflow_id=row["workflow_id"],
            name=row["name"],
            status=row["status"],
            executor_id=row["executor_id"],
            app_version=row["app_version"],
            recovery_attempts=row["recovery_attempts"],
            parent_workflow_id=row["parent_workflow_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            completed_at=row["completed_at"],
            error=error,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (timestamps as ISO 8601 strings)."""
        return _as_dict(self)


@dataclass(frozen=True, slots=True)
class StepInfo:
    """One entry of a workflow's journal: a step, transaction, message, event, sleep, …

    ``output`` is the recorded value (decoded JSON) and ``error`` is ``"Type: message"`` when the
    operation raised; ``completed`` is false for a wait (recv, get_event) still in progress.
    """

    function_id: int
    name: str
    output: Any
    error: str | None
    child_workflow_id: str | None
    completed: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> StepInfo:
        return cls(
            function_id=row["function_id"],
            name=row["name"],
            output=None if row["output"] is None else orjson.loads(row["output"]),
            error=_error_summary(row["error"]),
            child_workflow_id=row["child_id"],
            completed=row["completed"],
            created_at=row["created_at"],
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (timestamps as ISO 8601 strings)."""
        return _as_dict(self)


def _error_summary(text: str | None) -> str | None:
    if text is None:
        return None
    record = orjson.loads(text)
    module = record.get("module") or ""
    type_name = f"{module}.{record['type']}" if module else record["type"]
    return f"{type_name}: {record.get('message', '')}"


def _as_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in obj.__dataclass_fields__:
        value = getattr(obj, field)
        out[field] = value.isoformat() if isinstance(value, datetime) else value
    return out


class WorkflowHandle(Generic[R]):
    """A reference to one workflow, from ``start_workflow`` or ``retrieve_workflow``."""

    __slots__ = ("_core", "workflow_id")

    def __init__(self, core: Core, workflow_id: str) -> None:
        self._core = core
        self.workflow_id = workflow_id

    async def get_result(self, timeout_seconds: float | None = None) -> R:
        """Wait until the workflow ends and return its result (or raise its error).

        Blocks until a NOTIFY (or a local wake-up) reports the workflow's terminal status; no
        polling. Raises the workflow's own exception type when it can be rebuilt, else
        :class:`WorkflowFailedError`; :class:`WorkflowCancelledError` if cancelled;
        :class:`MaxRecoveryAttemptsExceededError` if dead-lettered;
        :class:`AsyncFlowTimeoutError` if ``timeout_seconds`` passes first.
        """
        result: R = await self._core.wait_result(self.workflow_id, timeout_seconds)
        return result

    async def get_status(self) -> WorkflowStatus:
        """The workflow's current :class:`WorkflowStatus` (never blocks)."""
        return await self._core.get_workflow_status(self.workflow_id)

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.workflow_id!r})"
