"""Workflow handles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from . import _codec
from ._context import current_workflow
from ._results import wait_result
from ._runtime import Runtime
from ._status import WorkflowStatus

R = TypeVar("R")


class WorkflowHandle(Generic[R]):
    """A reference to one workflow, from ``start_workflow`` or ``retrieve_workflow``."""

    __slots__ = ("_runtime", "workflow_id")

    def __init__(self, runtime: Callable[[], Runtime], workflow_id: str) -> None:
        self._runtime = runtime
        self.workflow_id = workflow_id

    async def get_result(self, timeout_seconds: float | None = None) -> R:
        """Wait until the workflow ends and return its result (or raise its error).

        Blocks until a NOTIFY (or a local wake-up) reports the workflow's terminal status; no
        polling. Raises the workflow's own exception type when it can be rebuilt, else
        :class:`WorkflowFailedError`; :class:`WorkflowCancelledError` if cancelled;
        :class:`MaxRecoveryAttemptsExceededError` if dead-lettered;
        :class:`AsyncFlowTimeoutError` if ``timeout_seconds`` passes first.
        """
        _codec.check_id(self.workflow_id)
        timeout_seconds = None if timeout_seconds is None else _codec.check_timeout(
            timeout_seconds)
        runtime = self._runtime()
        result: R = await wait_result(runtime, self.workflow_id, timeout_seconds,
                                      current_workflow(runtime))
        return result

    async def get_status(self) -> WorkflowStatus:
        """The workflow's current :class:`WorkflowStatus` (never blocks)."""
        _codec.check_id(self.workflow_id)
        return await self._runtime().store.workflow_status(self.workflow_id)

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.workflow_id!r})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, WorkflowHandle) and other.workflow_id == self.workflow_id

    def __hash__(self) -> int:
        return hash(self.workflow_id)
