"""History replay: run recorded workflows against the code registered now, without effects.

A replay executes a workflow function under a :class:`ReplayContext`: every durable operation
must come from the recorded journal (a step returns its recorded output or raises its recorded
error; a send, event, stream write, sleep or recv returns what was recorded), and the first
operation that does not match — another name at that function id, or an operation past the end
of a finished workflow's journal — is a divergence. Nothing reaches a database: the replay's
runtime has no store (it answers only the outcomes of the workflow's children, from the loaded
history), and while a replay runs, every database access in its context is refused
(``_storage.database.no_database``), including through an app's or client's methods.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import anyio.abc

from .. import _codec
from .._core.wait import WaitRegistry
from .._engine.context import WorkflowContext, connection_var, step_var, workflow_var
from .._engine.runner import CHILD, finished_output
from .._engine.runtime import Runtime
from .._errors import (
    AsyncFlowError,
    NonDeterministicWorkflowError,
    ReplayError,
    SerializationError,
    _ContinuedAsNew,
)
from .._primitives.handle import WorkflowHandle
from .._recorded import encode_error
from .._signature import Signature
from .._specs import WorkflowSpec
from .._status import CONTINUED_AS_NEW, ERROR, PENDING, SUCCESS
from .._storage.driver import no_database
from .._storage.listener import Listener
from .._storage.store import JournalEntry, Outcome, Store
from .archive import WorkflowHistory

OK = "ok"
DIVERGED = "diverged"
FAILED = "failed"
SKIPPED = "skipped"
#: Statuses whose journal is the whole run: an operation past its end is a divergence, and the
#: replay's result must be the recorded one.
COMPLETE = frozenset({SUCCESS, ERROR, CONTINUED_AS_NEW})
#: Added to the wall clock in a replay: every recorded timer has fired.
_FAR_FUTURE = 1e10


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What replaying one recorded workflow against the current code found.

    ``outcome`` is ``"ok"`` (the code takes the recorded path and, for a finished run, ends
    with the recorded result), ``"diverged"`` (it takes another path or ends differently;
    ``error`` is the :class:`NonDeterministicWorkflowError` naming the first divergent
    operation), ``"failed"`` (the replay could not run to the end: ``error`` is a
    :class:`ReplayError`) or ``"skipped"`` (no workflow of that name is registered).
    ``status`` is the recorded status, ``operations`` how many recorded operations the replay
    went through, and ``detail`` says what happened in words.
    """

    workflow_id: str
    name: str
    status: str
    outcome: str
    detail: str
    error: AsyncFlowError | None = None
    operations: int = 0

    @property
    def ok(self) -> bool:
        """False when the replay diverged or failed."""
        return self.outcome in (OK, SKIPPED)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (the error as its type name and message)."""
        error = None if self.error is None else {
            "type": type(self.error).__name__, "message": str(self.error),
            "function_id": getattr(self.error, "function_id", None),
            "recorded_name": getattr(self.error, "recorded_name", None),
            "called_name": getattr(self.error, "called_name", None),
        }
        return {"workflow_id": self.workflow_id, "name": self.name, "status": self.status,
                "outcome": self.outcome, "detail": self.detail, "operations": self.operations,
                "error": error}


class _HistoryEnds(BaseException):
    """The replayed code needs an operation the recorded history does not have (a
    ``BaseException``: user code catching ``Exception`` cannot swallow it)."""


class _Refused(BaseException):
    """The replayed code tried to reach a database."""


class _NoStorage:
    """Stands where a store's storage would be; any use is refused."""

    def __init__(self, refuse: Callable[[str], BaseException]) -> None:
        self._refuse = refuse

    def __getattr__(self, name: str) -> NoReturn:
        raise self._refuse("a database transaction")


class ReplayStore:
    """The replay's store: the outcomes of workflows in the loaded history, nothing else."""

    def __init__(self, outcomes: Mapping[str, Outcome]) -> None:
        self._outcomes = outcomes
        self._ctx: ReplayContext | None = None
        self.channel = ""

    def attach(self, ctx: ReplayContext) -> None:
        self._ctx = ctx
        self.storage = _NoStorage(ctx.refuse)

    async def workflow_outcome(self, workflow_id: str) -> Outcome | None:
        assert self._ctx is not None
        outcome = self._outcomes.get(workflow_id)
        if outcome is None:
            raise self._ctx.refuse(f"the outcome of workflow {workflow_id!r}, which is not in "
                                   "the replayed history (export it too)")
        if outcome.status == PENDING:
            raise self._ctx.end(f"it waits for workflow {workflow_id!r}, which had not "
                                "finished when the history was recorded")
        return outcome

    def __getattr__(self, name: str) -> NoReturn:
        assert self._ctx is not None
        raise self._ctx.refuse(f"the database ({name})")


class ReplayRuntime(Runtime):
    """A runtime without database, listener or task group; its clock is past every timer."""

    __slots__ = ()

    def __init__(self, store: ReplayStore) -> None:  # Runtime's own needs a live app
        for slot in Runtime.__slots__:  # hooks and anything added later: none
            setattr(self, slot, None)
        self.store = cast(Store, store)
        self.waits = WaitRegistry()
        self.listener = cast(Listener, None)
        self.tg = cast(anyio.abc.TaskGroup, None)
        self.closing = False
        self.monitors = {}
        self.clock_offset = _FAR_FUTURE

    def spawn(self, fn: Any, *args: Any, name: str) -> bool:
        return False


class ReplayContext(WorkflowContext):
    """The context of one replay: operations come from the journal or the replay stops."""

    __slots__ = ("complete", "divergence", "ended", "refused", "status", "timed_out")
    replaying = True

    def __init__(self, runtime: Runtime, workflow_id: str, name: str,
                 journal: dict[int, JournalEntry], status: str) -> None:
        super().__init__(runtime, workflow_id, name, journal)
        self.status = status
        self.complete = status in COMPLETE
        self.divergence: NonDeterministicWorkflowError | None = None
        self.ended: str | None = None
        self.refused: str | None = None
        self.timed_out = False

    def replay(self, function_id: int, name: str) -> JournalEntry:
        recorded = self.journal.get(function_id)
        if recorded is None:
            if self.complete:
                self.diverge(NonDeterministicWorkflowError(
                    f"workflow {self.workflow_id!r} ({self.name}) called {name!r} as operation "
                    f"#{function_id}, past the end of its recorded history ({len(self.journal)} "
                    f"operations; the recorded run ended {self.status})",
                    function_id=function_id, called_name=name))
            raise self.end(f"the recorded history ends before operation #{function_id} "
                           f"({name!r})")
        if recorded.name != name:
            error = NonDeterministicWorkflowError(
                f"workflow {self.workflow_id!r} ({self.name}) called {name!r} as operation "
                f"#{function_id}, but its recorded history has {recorded.name!r} there",
                function_id=function_id, recorded_name=recorded.name, called_name=name)
            self.diverge(error)
            raise error
        if not recorded.completed:
            if self.complete:
                self.diverge(NonDeterministicWorkflowError(
                    f"workflow {self.workflow_id!r} ({self.name}) waits in operation "
                    f"#{function_id} ({name!r}), which its recorded run never completed",
                    function_id=function_id, recorded_name=recorded.name, called_name=name))
            raise self.end(f"the recorded run was still waiting in operation #{function_id} "
                           f"({name!r})")
        return recorded

    def diverge(self, error: NonDeterministicWorkflowError) -> None:
        if self.divergence is None:
            self.divergence = error

    def end(self, detail: str) -> _HistoryEnds:
        if self.ended is None:
            self.ended = detail
        return _HistoryEnds(detail)

    def refuse(self, what: str) -> _Refused:
        """Record (and return, to raise) an attempt of the replayed code to use a database."""
        if self.refused is None:
            self.refused = what
        return _Refused(what)


async def child_handle(ctx: WorkflowContext, function_id: int,
                       types: Signature | None = None) -> WorkflowHandle[Any]:
    """A replayed child start: the recorded child, with a handle on the replay's runtime."""
    recorded = ctx.replay(function_id, CHILD)
    assert recorded is not None and isinstance(ctx, ReplayContext)
    if recorded.child_id is None:
        raise ctx.end(f"operation #{function_id} recorded no child workflow id")
    runtime = ctx.runtime
    return WorkflowHandle(lambda: runtime, recorded.child_id, types)


# -- one replay ---------------------------------------------------------------------------------


def _error_key(error: str) -> tuple[str, str]:
    """A recorded error's class name and message (the module is left out: a script's
    ``__main__`` is an importable module when replayed)."""
    record = _codec.loads(error)
    return str(record.get("type", "")).rsplit(".", 1)[-1], str(record.get("message", ""))


def _described(status: str, output: str | None, error: str | None) -> str:
    if status == SUCCESS:
        return "returned " + _short(output)
    if status == CONTINUED_AS_NEW:
        return "continued as new with " + _short(output)
    if error is not None:
        name, message = _error_key(error)
        return f"raised {name}: {message}"
    return f"ended {status}"


def _short(text: str | None, limit: int = 200) -> str:
    shown = "null" if text is None else text.strip()
    return shown if len(shown) <= limit else shown[:limit] + "…"


def _same(recorded: Outcome, status: str, output: str | None, error: str | None) -> bool:
    if recorded.status != status:
        return False
    if status in (SUCCESS, CONTINUED_AS_NEW):  # the result, or the next run's arguments
        def value(text: str | None) -> Any:
            return None if text is None else _codec.loads(text)
        return bool(value(recorded.output) == value(output))
    if recorded.error is None or error is None:
        return recorded.error is error
    return _error_key(recorded.error) == _error_key(error)


def _is_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return True
    task = asyncio.current_task()
    return isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling() > 0


Ran = tuple[str, str | None, str | None]  # (status, output, error) as the runner would write


async def _run(ctx: ReplayContext, spec: WorkflowSpec, inputs: str,
               timeout_seconds: float) -> Ran | None:
    """Run the workflow function under ``ctx``; its outcome, or ``None`` when the replay
    stopped (divergence, end of history, refused database access, timeout)."""
    payload = _codec.loads(inputs)
    context = contextvars.copy_context()
    context.run(workflow_var.set, ctx)
    context.run(step_var.set, None)
    context.run(connection_var.set, None)
    context.run(no_database.set, ctx.refuse)
    task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(
        _call(spec, payload["args"], payload["kwargs"]), context=context)
    try:
        async with asyncio.timeout(timeout_seconds) as deadline:
            value = await task
    except (_HistoryEnds, _Refused):
        return None
    except _ContinuedAsNew as continued:  # a kept earlier run: it ended by continuing
        return CONTINUED_AS_NEW, continued.inputs, None
    except BaseException as exc:
        if _is_interrupt(exc):
            raise
        if isinstance(exc, TimeoutError) and deadline.expired():
            ctx.timed_out = True
            return None
        if isinstance(exc, NonDeterministicWorkflowError) and ctx.divergence is not None:
            return None
        return ERROR, None, encode_error(exc)
    try:
        return SUCCESS, finished_output(spec, value), None
    except SerializationError as exc:
        return ERROR, None, encode_error(exc)


async def _call(spec: WorkflowSpec, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The workflow function called with its stored arguments, decoded by its annotations."""
    if spec.types is not None:
        args, kwargs = spec.types.decode_inputs(args, kwargs)
    return await cast(Coroutine[Any, Any, Any], spec.fn(*args, **kwargs))


async def replay_workflow(
    specs: Mapping[str, WorkflowSpec],
    history: WorkflowHistory,
    outcomes: Mapping[str, Outcome],
    timeout_seconds: float,
) -> ReplayResult:
    """Replay one recorded workflow against the registered code; never writes anything."""
    workflow_id, name, status = history.workflow_id, history.name, history.status
    label = f"workflow {workflow_id!r} ({name})"

    def result(outcome: str, detail: str | AsyncFlowError, operations: int = 0) -> ReplayResult:
        error = detail if isinstance(detail, AsyncFlowError) else None
        return ReplayResult(workflow_id, name, status, outcome, str(detail), error, operations)

    spec = specs.get(name)
    if spec is None:
        return result(SKIPPED, f"no workflow named {name!r} is registered by this code")
    journal = history.journal()
    store = ReplayStore(outcomes)
    ctx = ReplayContext(ReplayRuntime(store), workflow_id, name, journal, status)
    ctx.next_function_id = int(history.row.get("first_function_id") or 0)  # a later run's
    ctx.spec = spec
    store.attach(ctx)
    ran = await _run(ctx, spec, history.inputs, timeout_seconds)
    done = len([f for f in journal if f < ctx.next_function_id])
    if ctx.divergence is not None:
        return result(DIVERGED, ctx.divergence, done)
    if ctx.refused is not None:
        return result(FAILED, ReplayError(
            f"{label} used {ctx.refused} while being replayed; a replay runs on the recorded "
            "journal alone. Keep database access in steps, and non-journaled reads "
            "(read_stream, get_all_events, an app's or client's methods) out of workflow "
            "bodies"), done)
    if ctx.timed_out:
        return result(FAILED, ReplayError(
            f"{label} did not finish replaying within {timeout_seconds:g} seconds; it waits "
            "on something outside its journal (an asyncio event, a plain sleep, a task)"), done)
    if ctx.ended is not None:  # the history ends where the recorded run stopped
        if status in COMPLETE:
            return result(FAILED, ReplayError(
                f"{label} cannot be replayed to its end: {ctx.ended}"), done)
        return result(OK, f"replayed {done} recorded operations; {ctx.ended} (the recorded "
                      f"run is {status})", done)
    assert ran is not None
    unused = sorted(f for f in journal if f >= ctx.next_function_id)
    if unused:
        first = journal[unused[0]].name
        return result(DIVERGED, NonDeterministicWorkflowError(
            f"{label} finished without calling operation #{unused[0]} ({first!r}) of its "
            f"recorded history ({len(unused)} recorded operations were not called)",
            function_id=unused[0], recorded_name=first), done)
    if status not in COMPLETE:
        return result(OK, f"replayed {done} recorded operations and finished (the recorded "
                      f"run is {status}: there is no result to compare)", done)
    recorded = history.outcome()
    if not _same(recorded, *ran):
        return result(DIVERGED, NonDeterministicWorkflowError(
            f"{label} took the recorded path but {_described(*ran)}; the recorded run "
            f"{_described(recorded.status, recorded.output, recorded.error)}"), done)
    return result(OK, f"replayed {done} recorded operations; same result", done)
