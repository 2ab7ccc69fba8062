"""Workflow handles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from .. import _codec
from .._engine.context import current_workflow
from .._engine.runtime import Runtime
from .._signature import Signature, reader
from .._status import WorkflowStatus
from .results import wait_result

R = TypeVar("R")
T = TypeVar("T")


class WorkflowHandle(Generic[R]):
    """A reference to one workflow, from ``start_workflow`` or ``retrieve_workflow``.

    A handle from ``start_workflow(fn, ...)`` (or ``queue.enqueue(fn, ...)``) is a
    ``WorkflowHandle[R]`` for ``fn``'s return annotation ``R``: :meth:`get_result` decodes the
    stored result by that annotation (see docs/guide.md, Values)."""

    __slots__ = ("_runtime", "_types", "workflow_id")

    def __init__(self, runtime: Callable[[], Runtime], workflow_id: str,
                 types: Signature | None = None) -> None:
        self._runtime = runtime
        self.workflow_id = workflow_id
        self._types = types

    @overload
    async def get_result(self, timeout_seconds: float | None = None) -> R: ...

    @overload
    async def get_result(self, timeout_seconds: float | None = None, *,
                         type: type[T]) -> T: ...

    @overload
    async def get_result(self, timeout_seconds: float | None = None, *,
                         type: Any) -> Any: ...

    async def get_result(self, timeout_seconds: float | None = None, *,
                         type: Any = None) -> Any:
        """Wait until the workflow ends and return its result (or raise its error).

        Blocks until a NOTIFY (or a local wake-up) reports the workflow's terminal status; no
        polling. Raises the workflow's own exception type when it can be rebuilt, else
        :class:`WorkflowFailedError`; :class:`WorkflowCancelledError` if cancelled;
        :class:`MaxRecoveryAttemptsExceededError` if dead-lettered;
        :class:`AsyncFlowTimeoutError` if ``timeout_seconds`` passes first.

        ``type``: the annotation to decode the result by (``Order``, ``list[Order]``…); by
        default the return annotation of the workflow function the handle was started from,
        else plain JSON. A stored result that does not fit raises :class:`DecodeError`.
        """
        _codec.check_id(self.workflow_id)
        timeout_seconds = None if timeout_seconds is None else _codec.check_timeout(
            timeout_seconds)
        read = (reader(type, f"the result of workflow {self.workflow_id!r}")
                if type is not None else None if self._types is None
                else self._types.decode_result)
        runtime = self._runtime()
        return await wait_result(runtime, self.workflow_id, timeout_seconds,
                                 current_workflow(runtime), read)

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
