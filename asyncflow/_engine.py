"""The app: registration of workflows, steps and transactions, and running workflows durably."""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeAlias, TypeVar

import anyio
import anyio.abc

from . import _api, _codec, _notify
from . import _queries as Q
from ._context import WorkflowContext, current_workflow, step_var, workflow_var
from ._core import Core
from ._errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    SerializationError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowNotFoundError,
    _ExecutionConflict,
)
from ._handle import ERROR, SUCCESS, WorkflowHandle
from ._journal import (
    StepSpec,
    TransactionSpec,
    ensure_running,
    load_journal,
    record,
    run_step,
    run_transaction,
)
from ._recovery import Supervisor
from ._storage import Storage

logger = logging.getLogger("asyncflow")

P = ParamSpec("P")
R = TypeVar("R")

_SPEC_ATTR = "__asyncflow_workflow__"
_Fn: TypeAlias = Callable[P, Coroutine[Any, Any, R]]
CHILD = "asyncflow.start_workflow"


class WorkflowSpec:
    """A registered workflow function."""

    __slots__ = ("fn", "max_recovery_attempts", "name")

    def __init__(
        self, name: str, fn: Callable[..., Awaitable[Any]], max_recovery_attempts: int
    ) -> None:
        self.name = name
        self.fn = fn
        self.max_recovery_attempts = max_recovery_attempts


def _default_executor_id() -> str:
    return os.environ.get("ASYNCFLOW_EXECUTOR_ID") or (
        f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    )


def _check_coroutine_function(fn: Any, what: str) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise ConfigurationError(f"@app.{what}() decorates `async def` functions, not {fn!r}")


class AsyncFlow(Core):
    """An asyncflow application: durable workflows on one Postgres database and schema.

    ``database_url``: argument, else ``ASYNCFLOW_DATABASE_URL``, else an embedded Postgres whose
    data lives in ``data_dir`` (default ``ASYNCFLOW_DATA_DIR`` or ``./.asyncflow``).
    ``executor_id`` identifies this process (default ``ASYNCFLOW_EXECUTOR_ID`` or a generated
    one); ``app_version`` defaults to a hash of the registered workflows' source, and only
    workflows started by the same version are recovered by this app.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str = "asyncflow",
        executor_id: str | None = None,
        app_version: str | None = None,
        pool_size: int = 10,
        data_dir: str | os.PathLike[str] | None = None,
        recovery_interval_seconds: float = 1.0,
    ) -> None:
        super().__init__(database_url, schema=schema, pool_size=pool_size, data_dir=data_dir)
        self.executor_id = _codec.check_id(executor_id or _default_executor_id(), "executor_id")
        self._executor_id = self.executor_id
        self._app_version = app_version
        self._recovery_interval = _codec.check_timeout(
            recovery_interval_seconds, "recovery_interval_seconds"
        )
        self._workflows: dict[str, WorkflowSpec] = {}
        self._running: dict[str, WorkflowContext] = {}
        self._respawn: dict[str, tuple[WorkflowSpec, str]] = {}
        self._supervisor: Supervisor | None = None

    # -- registration ---------------------------------------------------------------------------

    def workflow(
        self, name: str | None = None, *, max_recovery_attempts: int = 100
    ) -> Callable[[_Fn[P, R]], _Fn[P, R]]:
        """Register an ``async def`` workflow.

        Calling the decorated function outside a workflow starts it with a fresh id and awaits
        its result; inside a workflow it runs it as a child workflow (deterministic id).
        """

        def decorate(fn: _Fn[P, R]) -> _Fn[P, R]:
            _check_coroutine_function(fn, "workflow")
            spec_name = name or fn.__qualname__
            if spec_name in self._workflows and self._workflows[spec_name].fn is not fn:
                raise ConfigurationError(f"a workflow named {spec_name!r} is already registered")
            spec = WorkflowSpec(spec_name, fn, max_recovery_attempts)
            self._workflows[spec_name] = spec

            @functools.wraps(fn)
            def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
                start = self._begin(spec, args, kwargs, None)
                return self._await_started(start)

            setattr(call, _SPEC_ATTR, (self, spec))
            return call

        return decorate

    @staticmethod
    async def _await_started(start: Awaitable[WorkflowHandle[R]]) -> R:
        handle = await start
        return await handle.get_result()

    def step(
        self,
        name: str | None = None,
        *,
        retries: int = 0,
        retry_interval_seconds: float = 1.0,
        backoff_rate: float = 2.0,
    ) -> Callable[[_Fn[P, R]], _Fn[P, R]]:
        """Register an ``async def`` step: inside a workflow it runs once and its result (or
        exception) is checkpointed; failures are retried ``retries`` times with backoff."""

        def decorate(fn: _Fn[P, R]) -> _Fn[P, R]:
            _check_coroutine_function(fn, "step")
            spec = StepSpec(name or fn.__qualname__, fn, retries, retry_interval_seconds,
                            backoff_rate)

            @functools.wraps(fn)
            def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
                ctx = current_workflow()
                function_id = ctx.reserve() if ctx is not None else -1
                return run_step(spec, ctx, function_id, args, kwargs)

            return call

        return decorate

    def transaction(
        self, name: str | None = None, *, isolation: str | None = None
    ) -> Callable[[_Fn[P, R]], _Fn[P, R]]:
        """Register an ``async def`` database transaction. Inside it,
        :func:`asyncflow.connection` is the transaction's asyncpg connection, and the checkpoint
        commits in that same transaction, so its effects happen exactly once. ``isolation`` is
        ``"read_committed"`` (default), ``"repeatable_read"`` or ``"serializable"``."""
        if isolation not in (None, "read_committed", "repeatable_read", "serializable"):
            raise ConfigurationError(f"unknown isolation level {isolation!r}")

        def decorate(fn: _Fn[P, R]) -> _Fn[P, R]:
            _check_coroutine_function(fn, "transaction")
            spec = TransactionSpec(name or fn.__qualname__, fn, isolation)

            @functools.wraps(fn)
            def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
                ctx = current_workflow()
                function_id = ctx.reserve() if ctx is not None else -1
                return run_transaction(spec, ctx, self.storage, function_id, args, kwargs)

            return call

        return decorate

    def _spec_of(self, fn: Any) -> WorkflowSpec:
        bound = getattr(fn, _SPEC_ATTR, None)
        if bound is None or bound[0] is not self:
            raise WorkflowNotFoundError(
                f"{getattr(fn, '__qualname__', fn)!r} is not a workflow of this app; decorate it "
                "with @app.workflow() on the app you start it from"
            )
        spec: WorkflowSpec = bound[1]
        return spec

    # -- lifecycle hooks ------------------------------------------------------------------------

    @property
    def app_version(self) -> str:
        """The version stamped on workflows this app starts (and recovers)."""
        if self._app_version is None:
            digest = hashlib.sha256()
            for name in sorted(self._workflows):
                fn = self._workflows[name].fn
                try:
                    source = inspect.getsource(fn)
                except (OSError, TypeError):
                    source = repr(fn.__code__.co_code)
                digest.update(name.encode() + b"\0" + source.encode() + b"\0")
            self._app_version = digest.hexdigest()[:16]
        return self._app_version

    async def _prepare_schema(self, storage: Storage) -> None:
        await storage.migrate()

    async def _start_background(self, tg: anyio.abc.TaskGroup) -> None:
        _ = self.app_version
        self._supervisor = Supervisor(self, self._recovery_interval)
        await self._supervisor.sweep(include_own=True)
        await tg.start(self._supervisor.run)

    def _on_notify(self, payload: str) -> None:
        if payload[:1] == _notify.RESUMED and self._supervisor is not None:
            self._supervisor.poke()
        elif payload[:1] == _notify.TERMINAL:
            ctx = self._running.get(payload[1:])
            if ctx is not None:
                ctx.stop_hint = True  # maybe cancelled or ended elsewhere: check before next op

    async def _stop(self, *exc_info: Any) -> bool | None:
        try:
            return await super()._stop(*exc_info)
        finally:
            self._supervisor = None
            self._running.clear()
            self._respawn.clear()

    # -- starting workflows ---------------------------------------------------------------------

    def start_workflow(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        *args: Any,
        workflow_id: str | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, WorkflowHandle[R]]:
        """Start a workflow; returns (when awaited) its handle once its row and inputs are durable.

        ``workflow_id=`` (keyword) chooses the id: starting an id that exists returns a handle to
        that workflow and never runs it again. Inside a workflow this starts a child workflow
        whose id is derived from the parent's (the start is journaled).
        """
        return self._begin(self._spec_of(fn), args, kwargs, workflow_id)

    def _begin(
        self,
        spec: WorkflowSpec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        workflow_id: str | None,
    ) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
        if workflow_id is not None:
            _codec.check_id(workflow_id)
        inputs = _codec.dumps({"args": list(args), "kwargs": kwargs},
                              f"the arguments of workflow {spec.name!r}")
        parent = current_workflow()
        if parent is not None and parent.app is self:
            function_id = parent.reserve()
            return self._start_child(parent, function_id, spec, inputs, workflow_id)
        return self._start(spec, inputs, workflow_id, None)

    async def _start(
        self, spec: WorkflowSpec, inputs: str, workflow_id: str | None, parent_id: str | None
    ) -> WorkflowHandle[Any]:
        storage = self.storage
        if workflow_id is None:
            workflow_id = secrets.token_hex(16)
        row = await storage.fetchrow(
            Q.INSERT_WORKFLOW, workflow_id, spec.name, inputs, self.executor_id,
            self.app_version, parent_id,
        )
        if row is None:  # lost a race with a concurrent start of the same id; it exists now
            existing = await storage.fetchval(Q.WORKFLOW_NAME, workflow_id)
            created = False
        else:
            created, existing = row["created"], row["name"]
        if existing != spec.name:
            raise WorkflowConflictError(
                f"workflow id {workflow_id!r} is already used by workflow {existing!r}, "
                f"not {spec.name!r}; choose another id"
            )
        if created:
            self._spawn(workflow_id, spec, inputs, fresh=True)
        return self._handle(workflow_id)

    async def _start_child(
        self,
        parent: WorkflowContext,
        function_id: int,
        spec: WorkflowSpec,
        inputs: str,
        workflow_id: str | None,
    ) -> WorkflowHandle[Any]:
        recorded = parent.replay(function_id, CHILD)
        if recorded is not None and recorded.child_id is not None:
            return self._handle(recorded.child_id)
        await ensure_running(parent)
        child_id = workflow_id or f"{parent.workflow_id}-{function_id}"
        try:
            handle = await self._start(spec, inputs, child_id, parent.workflow_id)
        except DatabaseUnavailableError:
            parent.db_failed = True
            raise
        await record(parent, function_id, CHILD, child_id=child_id)
        return handle

    def _spawn(self, workflow_id: str, spec: WorkflowSpec, inputs: str, *, fresh: bool) -> None:
        if self._tg is None or self._closing:
            return
        if workflow_id in self._running:
            # Resumed while a cancelled execution is still unwinding: run again once it has.
            self._respawn[workflow_id] = (spec, inputs)
            return
        ctx = WorkflowContext(self, workflow_id, spec.name, {})
        self._running[workflow_id] = ctx
        self._tg.start_soon(self._execute, ctx, spec, inputs, fresh, name=f"workflow {workflow_id}")

    # -- running workflows ----------------------------------------------------------------------

    async def _execute(self, ctx: WorkflowContext, spec: WorkflowSpec, inputs: str,
                       fresh: bool) -> None:
        workflow_var.set(None)
        step_var.set(None)
        delay = 0.1
        finished = False
        try:
            while True:
                try:
                    if not fresh:
                        ctx.journal = await load_journal(self.storage, ctx.workflow_id)
                    finished = await self._run_once(ctx, spec, inputs)
                    return
                except DatabaseUnavailableError as exc:
                    if self._closing:
                        return
                    logger.warning("workflow %s lost its database connection (%s); retrying",
                                   ctx.workflow_id, exc)
                except Exception:
                    # Never let one workflow take the app down: it stays PENDING and is
                    # recovered by the next launch (or resume).
                    logger.exception("workflow %s stopped unexpectedly", ctx.workflow_id)
                    return
                # Retry backoff: replay from the journal once the database answers again. The
                # listener's reconnect (it wakes every registered waiter) or a cancellation ends
                # the wait early.
                with self._registry.watch((_notify.TERMINAL, ctx.workflow_id)) as woken:
                    await _notify.wait_until(woken, anyio.current_time() + delay)
                delay = min(delay * 2, 5.0)
                fresh = False
                cancelled = ctx.cancelled
                ctx = WorkflowContext(self, ctx.workflow_id, spec.name, {})
                ctx.cancelled = cancelled
                self._running[ctx.workflow_id] = ctx
        finally:
            if self._running.get(ctx.workflow_id) is ctx:
                del self._running[ctx.workflow_id]
                again = self._respawn.pop(ctx.workflow_id, None)
                if again is not None:
                    self._spawn(ctx.workflow_id, again[0], again[1], fresh=False)
                elif not finished and self._supervisor is not None and not self._closing:
                    # Stopped early (cancelled, or ended elsewhere): if it was resumed meanwhile
                    # (say by a Client), it is unassigned now, so sweep rather than wait.
                    self._supervisor.poke()

    async def _run_once(self, ctx: WorkflowContext, spec: WorkflowSpec, inputs: str) -> bool:
        """Run the workflow function once; True if this execution wrote its terminal status."""
        payload = _codec.loads(inputs)
        token = workflow_var.set(ctx)
        try:
            result = await spec.fn(*payload["args"], **payload["kwargs"])
        except _ExecutionConflict:
            return False
        except Exception as exc:
            if self._closing:
                return False  # shutting down: leave it PENDING for recovery
            if ctx.db_failed or isinstance(exc, DatabaseUnavailableError):
                raise DatabaseUnavailableError(str(exc)) from exc
            if ctx.cancelled and isinstance(exc, WorkflowCancelledError):
                return False
            return await self._finish(ctx, ERROR, None, _codec.encode_error(exc))
        finally:
            workflow_var.reset(token)
        if ctx.db_failed:
            raise DatabaseUnavailableError("a database operation of the workflow failed")
        try:
            output = _codec.dumps(result, f"the result of workflow {spec.name!r}")
        except SerializationError as exc:
            return await self._finish(ctx, ERROR, None, _codec.encode_error(exc))
        return await self._finish(ctx, SUCCESS, output, None)

    async def _finish(
        self, ctx: WorkflowContext, status: str, output: str | None, error: str | None
    ) -> bool:
        """The terminal write, shielded from cancellation so shutdown cannot tear it."""
        storage = self.storage
        with anyio.CancelScope(shield=True):
            rows = await storage.fetch(
                Q.FINISH_WORKFLOW, ctx.workflow_id, status, output, error, storage.channel
            )
        if rows:
            self._registry.wake(_notify.TERMINAL, ctx.workflow_id, (status, output, error))
        return bool(rows)

    # -- operations that are journaled inside a workflow ----------------------------------------

    async def resume_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Resume a CANCELLED, ERROR or MAX_RECOVERY_ATTEMPTS_EXCEEDED workflow on this app,
        continuing from its checkpoints (recovery attempts reset to 0)."""
        row = await self._resume(workflow_id, self.executor_id)
        if row["name"] is not None:
            spec = self._workflows.get(row["name"])
            if spec is not None:
                self._spawn(workflow_id, spec, row["inputs"], fresh=False)
        return self._handle(workflow_id)

    def _after_cancel(self, workflow_id: str) -> None:
        ctx = self._running.get(workflow_id)
        if ctx is not None:
            ctx.cancelled = True
        super()._after_cancel(workflow_id)

    async def _ensure_waiter_running(self, workflow_id: str) -> None:
        ctx = self._running.get(workflow_id)
        if ctx is not None:
            await ensure_running(ctx)

    def send(
        self,
        destination_id: str,
        message: Any,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Coroutine[Any, Any, None]:
        """Send a message to a workflow (see :func:`asyncflow.send`); journaled in a workflow."""
        return _api.send_via(self, destination_id, message, topic, idempotency_key)

    def get_event(
        self, workflow_id: str, key: str, timeout_seconds: float = 60
    ) -> Coroutine[Any, Any, Any]:
        """Wait for an event's value (see :func:`asyncflow.get_event`); journaled in a workflow."""
        return _api.get_event_via(self, workflow_id, key, timeout_seconds)

    def recv(
        self, topic: str | None = None, timeout_seconds: float = 60
    ) -> Coroutine[Any, Any, Any]:
        """Same as :func:`asyncflow.recv` (workflows only)."""
        return _api.recv(topic, timeout_seconds)

    def set_event(self, key: str, value: Any) -> Coroutine[Any, Any, None]:
        """Same as :func:`asyncflow.set_event` (workflows and steps)."""
        return _api.set_event(key, value)

    def write_stream(self, key: str, value: Any) -> Coroutine[Any, Any, None]:
        """Same as :func:`asyncflow.write_stream` (workflows and steps)."""
        return _api.write_stream(key, value)

    def close_stream(self, key: str) -> Coroutine[Any, Any, None]:
        """Same as :func:`asyncflow.close_stream` (workflows and steps)."""
        return _api.close_stream(key)

    def running_workflows(self) -> list[str]:
        """Ids of the workflows executing in this process right now."""
        return list(self._running)
