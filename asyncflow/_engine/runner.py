"""Running workflows: starting them, executing their functions in the app's task group, and
writing their terminal status.

One workflow's failure stays in that workflow: any exception — ``BaseException`` included, a
stray ``CancelledError`` too — ends it in ``ERROR``; only ``KeyboardInterrupt``, ``SystemExit``
and the app's own cancellation (shutdown) pass through. An execution that loses its database
connection is retried from the journal with backoff.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from .. import _codec
from .._core.telemetry import WORKFLOW_ID, WORKFLOW_NAME, Instruments
from .._core.wait import DEADLINE, STARTED, TERMINAL
from .._errors import (
    DatabaseUnavailableError,
    SerializationError,
    WorkflowCancelledError,
    WorkflowConflictError,
    _ContinuedAsNew,
    _ExecutionConflict,
)
from .._recorded import encode_error
from .._specs import WorkflowSpec
from .._status import ERROR, SUCCESS
from .._storage.database import on_unavailable
from .._storage.store import Outcome
from .cancel import cancel_with_descendants, mark_cancelled
from .context import WorkflowContext, step_var, workflow_var
from .journal import checked, ensure_running, ownership_lost, stop_for_status
from .observe import execution
from .runtime import Runtime

logger = logging.getLogger("asyncflow")

CHILD = "asyncflow.start_workflow"


def is_own_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is this task being cancelled (shutdown), not a stray CancelledError
    raised by user code."""
    if not isinstance(exc, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def passes_through(exc: BaseException) -> bool:
    """Exceptions a workflow does not absorb: interpreter exits and real cancellation."""
    return isinstance(exc, KeyboardInterrupt | SystemExit) or is_own_cancellation(exc)


def start_attributes(workflow_id: str, spec: WorkflowSpec) -> dict[str, str]:
    return {WORKFLOW_ID: workflow_id, WORKFLOW_NAME: spec.name}


def child_id(parent_id: str, function_id: int) -> str:
    """The deterministic id of a parent's child workflow, always a valid id."""
    return _codec.derived_id(parent_id, f"-{function_id}")


def decode_inputs(inputs: str, workflow_id: str) -> tuple[list[Any], dict[str, Any]]:
    """A workflow's stored inputs as ``(args, kwargs)``; SerializationError if they are not
    the JSON of ``{"args": [...], "kwargs": {...}}``."""
    try:
        payload = _codec.loads(inputs)
    except ValueError as exc:
        raise SerializationError(
            f"the inputs of workflow {workflow_id!r} are not JSON ({exc}); it cannot run"
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("args"), list) \
            or not isinstance(payload.get("kwargs"), dict):
        raise SerializationError(
            f"the inputs of workflow {workflow_id!r} are not the JSON of "
            '{"args": [...], "kwargs": {...}}; it cannot run')
    return payload["args"], payload["kwargs"]


def finished_output(spec: WorkflowSpec, result: Any) -> str:
    """A workflow's result as stored; :class:`SerializationError` if it cannot be stored, or
    (``DecodeError``) would not read back by the function's return annotation."""
    output = _codec.dumps(result, f"the result of workflow {spec.name!r}", "result")
    if spec.types is not None:
        spec.types.check_result(output)
    return output


class Runner:
    """Starts and executes the workflows of one app."""

    def __init__(self, runtime: Runtime, app_version: str) -> None:
        self.runtime = runtime
        self.app_version = app_version
        self.running: dict[str, WorkflowContext] = {}
        self._respawn: dict[str, tuple[WorkflowSpec, str, int]] = {}
        #: Telemetry: the trace context of the start of workflows started here, for their first
        #: execution (later ones read it from the workflow's row).
        self._started_under: dict[str, str] = {}
        #: Called when an execution stopped without finishing (cancelled, ended elsewhere): if
        #: it was resumed meanwhile it is unassigned, so the supervisor should sweep.
        self.on_stopped_early: Callable[[], None] | None = None

    # -- starting ---------------------------------------------------------------------------

    def start(
        self,
        spec: WorkflowSpec,
        inputs: str,
        workflow_id: str | None,
        parent_id: str | None,
        timeout_seconds: float | None = None,
        parent_epoch: int | None = None,
        attributes: str | None = None,
    ) -> Coroutine[Any, Any, str]:
        """Insert the workflow (idempotent by id) and run it if it is new; returns its id.
        ``timeout_seconds`` (default: the spec's): its deadline starts now; ``attributes``: its
        attributes (JSON of an object). (A plain function returning the start's coroutine: no
        frame of its own while a burst of starts waits.)"""
        if workflow_id is None:
            workflow_id = secrets.token_hex(16)
        if timeout_seconds is None:
            timeout_seconds = spec.timeout_seconds
        telemetry = self.runtime.telemetry
        if telemetry is None:
            return self._start(spec, inputs, workflow_id, parent_id, None, timeout_seconds,
                               parent_epoch, attributes)
        return self._start_traced(telemetry, spec, inputs, workflow_id, parent_id,
                                  timeout_seconds, parent_epoch, attributes)

    async def _start_traced(self, telemetry: Instruments, spec: WorkflowSpec, inputs: str,
                            workflow_id: str, parent_id: str | None,
                            timeout_seconds: float | None, parent_epoch: int | None,
                            attributes: str | None) -> str:
        # The span of the start; its trace context is stored with the workflow, and every
        # execution of the workflow is its child (telemetry).
        with telemetry.span(f"start_workflow {spec.name}", start_attributes(workflow_id, spec),
                            kind="producer"):
            return await self._start(spec, inputs, workflow_id, parent_id,
                                     telemetry.traceparent(), timeout_seconds, parent_epoch,
                                     attributes)

    async def _start(self, spec: WorkflowSpec, inputs: str, workflow_id: str,
                     parent_id: str | None, traceparent: str | None,
                     timeout_seconds: float | None, parent_epoch: int | None,
                     attributes: str | None = None) -> str:
        deadline = None if timeout_seconds is None else self.runtime.now() + timeout_seconds
        created, existing = await self.runtime.store.insert_workflow(
            workflow_id, spec.name, inputs, self.runtime.executor_id, self.app_version,
            parent_id, traceparent, timeout_seconds, deadline, parent_epoch, attributes,
        )
        if existing is None and parent_epoch is not None:
            # Not inserted: the parent's execution no longer owns the parent.
            raise _ExecutionConflict(f"the parent of workflow {workflow_id!r} is not owned")
        if created and deadline is not None:
            self.runtime.waits.wake(DEADLINE, "")  # this process's enforcer (NOTIFY: others)
        if existing != spec.name:
            raise WorkflowConflictError(
                f"workflow id {workflow_id!r} is already used by workflow {existing!r}, "
                f"not {spec.name!r}; choose another id"
            )
        if created:
            self.runtime.waits.wake(STARTED, workflow_id)  # observers only
            if self.runtime.telemetry is not None:
                self.runtime.telemetry.workflow_started(spec.name)
                if traceparent is not None:
                    self._started_under[workflow_id] = traceparent
            self.spawn(workflow_id, spec, inputs, fresh=True, epoch=1)
        return workflow_id

    async def start_child(
        self,
        parent: WorkflowContext,
        function_id: int,
        spec: WorkflowSpec,
        inputs: str,
        workflow_id: str | None,
        timeout_seconds: float | None = None,
        attributes: str | None = None,
    ) -> str:
        """Start a child workflow from a parent's body; the start is journaled."""
        recorded = parent.replay(function_id, CHILD)
        if recorded is not None and recorded.child_id is not None:
            return recorded.child_id
        await ensure_running(parent)
        try:
            started = await self.start(spec, inputs, workflow_id or child_id(
                parent.workflow_id, function_id), parent.workflow_id, timeout_seconds,
                parent.epoch, attributes)
        except _ExecutionConflict:
            await stop_for_status(parent)  # cancelled, or owned by another execution now
            raise
        try:
            await checked(parent, self.runtime.store.record_operation(
                parent.workflow_id, function_id, CHILD, parent.epoch, child_id=started))
        except WorkflowCancelledError:
            # The parent was cancelled before its journal held the child: cancel the child
            # (and what it started) too, or it would run on with no journal knowing of it.
            await self._cancel_unjournaled_child(started, parent.workflow_id)
            raise
        return started

    async def _cancel_unjournaled_child(self, workflow_id: str, parent_id: str) -> None:
        runtime = self.runtime
        with anyio.CancelScope(shield=True):
            status = await runtime.store.workflow_status(workflow_id)
            if status.parent_workflow_id != parent_id:
                return  # an existing workflow chosen by id, not this parent's child
            (cancelled, _queue), _below = await cancel_with_descendants(  # one transaction
                runtime, lambda: runtime.store.cancel_workflow(workflow_id),
                lambda _row: [workflow_id], self.mark_cancelled)
            if cancelled:
                mark_cancelled(runtime, [workflow_id], self.mark_cancelled)

    def spawn(self, workflow_id: str, spec: WorkflowSpec, inputs: str, *, fresh: bool,
              epoch: int) -> None:
        """Execute a workflow in the task group (after the one still unwinding, if any), as the
        owner of ``epoch`` (what its claim or start gave it)."""
        if self.runtime.closing:
            return
        if workflow_id in self.running:
            # Resumed (or claimed again) while an execution is still unwinding: run again once
            # it has.
            self._respawn[workflow_id] = (spec, inputs, epoch)
            return
        ctx = WorkflowContext(self.runtime, workflow_id, spec.name, {}, epoch)
        ctx.spec = spec
        self.running[workflow_id] = ctx
        self.runtime.spawn(self._execute, ctx, spec, inputs, fresh, name=f"workflow {workflow_id}")

    def mark_cancelled(self, workflow_id: str) -> None:
        ctx = self.running.get(workflow_id)
        if ctx is not None:
            ctx.cancelled = True

    def on_notify(self, kind: str, workflow_id: str) -> None:
        if kind == TERMINAL:
            ctx = self.running.get(workflow_id)
            if ctx is not None:
                ctx.stop_hint = True  # maybe cancelled or ended elsewhere: check before next op

    # -- executing --------------------------------------------------------------------------

    async def _execute(self, ctx: WorkflowContext, spec: WorkflowSpec, inputs: str,
                       fresh: bool) -> None:
        workflow_var.set(None)
        step_var.set(None)
        runtime = self.runtime
        delay = 0.1
        finished = False
        try:
            while True:
                on_unavailable.set(ctx.mark_db_failed)
                try:
                    if not fresh:
                        ctx.journal, ctx.next_function_id, epoch = (
                            await runtime.store.load_journal(ctx.workflow_id))
                        if epoch != ctx.epoch:
                            # Owned elsewhere now (or deleted); or a lost write had committed
                            # after all: a continue_as_new moved the epoch on, and these inputs
                            # are stale.
                            raise (_ExecutionConflict(f"workflow {ctx.workflow_id!r} is gone")
                                   if epoch is None else ownership_lost(ctx, epoch))
                    run = functools.partial(self._run_once, ctx, spec, inputs)
                    finished = await (run() if runtime.telemetry is None
                                      else execution(ctx, fresh, run, self._started_under.pop(
                                          ctx.workflow_id, None)))
                    return
                except _ContinuedAsNew as continued:
                    # The next run, in this same execution slot: empty journal, new epoch.
                    inputs, fresh, delay = continued.inputs, True, 0.1
                    ctx = self._next_context(ctx, spec, continued.epoch)
                    ctx.next_function_id = continued.first_function_id
                    continue
                except DatabaseUnavailableError as exc:
                    if runtime.closing:
                        return
                    logger.warning("workflow %s lost its database connection (%s); retrying",
                                   ctx.workflow_id, exc)
                except BaseException as exc:
                    if passes_through(exc):
                        raise
                    if isinstance(exc, _ExecutionConflict) or runtime.closing:
                        return  # another execution owns it; or shutdown: left for recovery
                    # Never let one workflow take the app down, nor leave it PENDING here
                    # with nothing running it: it ends in ERROR with the reason.
                    logger.exception("workflow %s stopped unexpectedly; it ends in ERROR",
                                     ctx.workflow_id)
                    finished = await self._fail(ctx, exc)
                    return
                # Retry backoff: replay from the journal once the database answers again. The
                # listener's reconnect (it wakes every registered waiter) or a cancellation ends
                # the wait early.
                with runtime.waits.watch((TERMINAL, ctx.workflow_id)) as woken:
                    await woken.wait_until(asyncio.get_running_loop().time() + delay)
                delay = min(delay * 2, 5.0)
                fresh = False
                ctx = self._next_context(ctx, spec, ctx.epoch)
        finally:
            if self.running.get(ctx.workflow_id) is ctx:
                del self.running[ctx.workflow_id]
                again = self._respawn.pop(ctx.workflow_id, None)
                if again is not None:
                    self.spawn(ctx.workflow_id, again[0], again[1], fresh=False,
                               epoch=again[2])
                elif not finished and not runtime.closing and self.on_stopped_early is not None:
                    self.on_stopped_early()

    def _next_context(self, ctx: WorkflowContext, spec: WorkflowSpec,
                      epoch: int) -> WorkflowContext:
        """A new context for the workflow's next execution in this slot (a retry, or the next
        run after a continue_as_new), owning ``epoch``."""
        fresh = WorkflowContext(self.runtime, ctx.workflow_id, spec.name, {}, epoch)
        fresh.spec = spec
        fresh.cancelled = ctx.cancelled
        self.running[ctx.workflow_id] = fresh
        return fresh

    async def _run_once(self, ctx: WorkflowContext, spec: WorkflowSpec, inputs: str) -> bool:
        """Run the workflow function once; True if this execution wrote its terminal status."""
        token = workflow_var.set(ctx)
        try:
            # Inside the try: inputs that cannot be decoded (an edited export, say) end the
            # workflow in ERROR with the reason, like any failure to start it.
            args, kwargs = decode_inputs(inputs, ctx.workflow_id)
            if spec.types is not None:  # (returns them as they are when nothing is typed)
                args, kwargs = spec.types.decode_inputs(args, kwargs)
            result = await spec.fn(*args, **kwargs)
        except _ContinuedAsNew:
            raise
        except _ExecutionConflict:
            return False
        except BaseException as exc:
            if passes_through(exc):
                raise
            if self.runtime.closing:
                return False  # shutting down: leave it PENDING for recovery
            if ctx.db_failed or isinstance(exc, DatabaseUnavailableError):
                raise DatabaseUnavailableError(str(exc)) from exc
            if ctx.cancelled and isinstance(exc, WorkflowCancelledError):
                return False
            return await self._finish(ctx, ERROR, None, encode_error(exc))
        finally:
            workflow_var.reset(token)
        if ctx.db_failed:
            raise DatabaseUnavailableError("a database operation of the workflow failed")
        try:
            output = finished_output(spec, result)
        except SerializationError as exc:
            return await self._finish(ctx, ERROR, None, encode_error(exc))
        return await self._finish(ctx, SUCCESS, output, None)

    async def _fail(self, ctx: WorkflowContext, exc: BaseException) -> bool:
        """End a workflow whose execution failed outside its function in ERROR (if that write
        fails too, it is logged: the workflow is recovered by the next launch or a resume)."""
        try:
            return await self._finish(ctx, ERROR, None, encode_error(exc))
        except Exception:
            logger.exception("workflow %s could not be ended in ERROR", ctx.workflow_id)
            return False

    async def _finish(
        self, ctx: WorkflowContext, status: str, output: str | None, error: str | None
    ) -> bool:
        """The terminal write, shielded from cancellation so shutdown cannot tear it."""
        runtime = self.runtime
        with anyio.CancelScope(shield=True):
            done = await runtime.store.finish_workflow(ctx.workflow_id, status, output, error,
                                                       ctx.epoch)
        if done:
            runtime.waits.wake(TERMINAL, ctx.workflow_id, Outcome(status, output, error))
            if runtime.telemetry is not None:
                runtime.telemetry.workflow_finished(ctx.name, status, error, in_execution=True)
        else:  # ended meanwhile (cancelled), or owned by another execution now: say which
            _status, epoch = await runtime.store.workflow_ownership(ctx.workflow_id)
            if epoch != ctx.epoch:
                ownership_lost(ctx, epoch)
        return done
