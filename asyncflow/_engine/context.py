"""The running workflow and step, carried in context variables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from .._errors import (
    NonDeterministicWorkflowError,
    NotInWorkflowError,
    WorkflowCancelledError,
)
from .._specs import WorkflowSpec
from .._storage.store import JournalEntry
from .runtime import Runtime


class WorkflowContext:
    """State of one execution of one workflow: its id, the journal to replay, the next op id."""

    __slots__ = ("cancelled", "db_failed", "epoch", "journal", "name", "next_function_id",
                 "runtime", "spec", "stop_hint", "workflow_id")

    #: True for a history replay (``asyncflow._operations.replay``): every operation must come
    #: from the journal, and nothing may touch a database.
    replaying = False

    def __init__(
        self, runtime: Runtime, workflow_id: str, name: str, journal: dict[int, JournalEntry],
        epoch: int = 0,
    ) -> None:
        self.runtime = runtime
        self.workflow_id = workflow_id
        self.name = name
        self.journal = journal
        #: The ownership epoch this execution started with: every write it makes is fenced by
        #: it (refused once the workflow was claimed by another execution).
        self.epoch = epoch
        self.next_function_id = 0
        #: The registered workflow it runs (set by the runner; ``continue_as_new`` encodes the
        #: next run's arguments by it).
        self.spec: WorkflowSpec | None = None
        self.cancelled = False  # confirmed: the database says CANCELLED
        self.stop_hint = False  # a notification says it may have ended elsewhere: check
        self.db_failed = False  # the database became unreachable under this execution

    def mark_db_failed(self) -> None:
        self.db_failed = True

    def reserve(self) -> int:
        """Take the next function id. Called synchronously at the call site of every operation."""
        function_id = self.next_function_id
        self.next_function_id = function_id + 1
        hook = self.runtime.on_operation
        if hook is not None:
            hook(self.workflow_id, function_id)
        return function_id

    def replay(self, function_id: int, name: str) -> JournalEntry | None:
        """The recorded entry at ``function_id``, checking it is the same operation."""
        recorded = self.journal.get(function_id)
        if recorded is not None and recorded.name != name:
            raise NonDeterministicWorkflowError(
                f"workflow {self.workflow_id!r} ({self.name}) called {name!r} as operation "
                f"#{function_id}, but its journal recorded {recorded.name!r} there. Workflow code "
                "must call the same durable operations in the same order on every run; move "
                "non-deterministic choices into steps.",
                function_id=function_id, recorded_name=recorded.name, called_name=name,
            )
        return recorded

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise WorkflowCancelledError(f"workflow {self.workflow_id!r} was cancelled")

    @property
    def needs_check(self) -> bool:
        """Whether an operation must look before it starts (``journal.ensure_running`` has
        something to do): a plain test, for the paths that skip the call when it has not."""
        return self.db_failed or self.cancelled or self.stop_hint


class StepContext:
    """One attempt of a step (or transaction) running inside a workflow.

    Durable effects the attempt asks for (sends, events, stream writes) are *staged* here and
    applied in the transaction that commits the step's checkpoint; a failed or interrupted
    attempt leaves none of them behind.
    """

    __slots__ = ("effects", "function_id", "name", "seq", "workflow")

    def __init__(self, workflow: WorkflowContext, function_id: int, name: str) -> None:
        self.workflow = workflow
        self.function_id = function_id
        self.name = name
        self.seq = 0
        self.effects: list[tuple[Callable[[], Awaitable[object]], tuple[str, str]]] = []

    def stage(self, apply: Callable[[], Awaitable[object]], wakes: tuple[str, str]) -> None:
        """Apply ``apply()`` with the checkpoint; then wake the waiters of key ``wakes``."""
        self.effects.append((apply, wakes))

    def next_seq(self) -> int:
        seq = self.seq
        self.seq = seq + 1
        return seq


workflow_var: ContextVar[WorkflowContext | None] = ContextVar("asyncflow_workflow", default=None)
step_var: ContextVar[StepContext | None] = ContextVar("asyncflow_step", default=None)
connection_var: ContextVar[Any] = ContextVar("asyncflow_connection", default=None)
#: Inside an ``@app.transaction`` body: what to run once that transaction has committed (the
#: local wake-ups of what it made durable, e.g. an enqueue); ``None`` outside transactions.
after_commit_var: ContextVar[list[Callable[[], None]] | None] = ContextVar(
    "asyncflow_after_commit", default=None
)


def current_workflow(runtime: Runtime | None = None) -> WorkflowContext | None:
    """The workflow whose own body is running (``None`` outside workflows and inside steps);
    with ``runtime``, only if that workflow runs on it."""
    if step_var.get() is not None:
        return None
    ctx = workflow_var.get()
    if ctx is not None and runtime is not None and ctx.runtime is not runtime:
        return None
    return ctx


def workflow_on(runtime: Runtime | None) -> WorkflowContext | None:
    """The workflow whose own body is running, if it runs on ``runtime`` (an app's methods
    journal only into their own app's workflows) — or if it is a history replay, which stands
    in for whichever app's code it runs and never reaches that app's database."""
    ctx = current_workflow()
    if ctx is None or ctx.replaying or (runtime is not None and ctx.runtime is runtime):
        return ctx
    return None


def current_step(runtime: Runtime | None = None) -> StepContext | None:
    """The step or transaction running inside a workflow (on ``runtime``, if given)."""
    step = step_var.get()
    if step is not None and runtime is not None and step.workflow.runtime is not runtime:
        return None
    return step


def any_context(operation: str) -> WorkflowContext:
    """The running workflow, from its body or one of its steps."""
    ctx = workflow_var.get()
    if ctx is None:
        raise NotInWorkflowError(
            f"asyncflow.{operation}() can only be called inside a workflow or one of its steps; "
            "outside workflows use the app's or a Client's methods"
        )
    return ctx


def require_workflow(operation: str) -> WorkflowContext:
    ctx = workflow_var.get()
    if ctx is None:
        raise NotInWorkflowError(
            f"asyncflow.{operation}() can only be called inside a workflow function; outside "
            "workflows use the app's or a Client's methods"
        )
    if step_var.get() is not None:
        raise NotInWorkflowError(
            f"asyncflow.{operation}() must be called from the workflow function itself, not from "
            "inside a step or transaction"
        )
    return ctx


def workflow_id() -> str:
    """The id of the running workflow (also available inside its steps)."""
    ctx = workflow_var.get()
    if ctx is None:
        raise NotInWorkflowError("asyncflow.workflow_id() can only be called inside a workflow")
    return ctx.workflow_id


def connection() -> Any:
    """The asyncpg connection of the running ``@app.transaction`` function."""
    conn = connection_var.get()
    if conn is None:
        raise NotInWorkflowError(
            "asyncflow.connection() can only be called inside an @app.transaction function"
        )
    return conn
