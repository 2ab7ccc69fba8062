"""The app: running workflows durably (registration of workflows, steps and schedules comes
from ``_front.registration``; transactions are registered here, on the app's storage)."""

from __future__ import annotations

import functools
import os
import secrets
import socket
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from .. import _codec
from .._core.telemetry import Telemetry, detached
from .._core.wait import QUEUE
from .._engine.context import current_step, current_workflow, workflow_on
from .._engine.dispatch import Dispatcher
from .._engine.runner import Runner
from .._engine.runtime import Runtime
from .._engine.supervisor import Supervisor
from .._errors import ConfigurationError, InvalidSettingError
from .._filters import check_attributes
from .._operations.adoption import attach, check_upgrade
from .._operations.deadlines import DeadlineWatcher
from .._operations.debounce import Debouncer, make_debouncer
from .._operations.enqueue_args import queue_spec
from .._operations.queues import Queue
from .._operations.replay import ReplayResult, child_handle
from .._operations.retention import Retention, RetentionWorker
from .._operations.schedules import Scheduler, start_scheduler
from .._primitives.events import get_event_from_workflow, get_event_outside
from .._primitives.handle import WorkflowHandle
from .._primitives.messages import send_from_step, send_from_workflow, send_outside
from .._primitives.steps import run_transaction
from .._signature import Signature, decoded, reader
from .._specs import ScheduleSpec, TransactionSpec, WorkflowSpec
from .._status import TERMINAL_STATUSES, Delivery
from .._storage.lease import BEATS_PER_LEASE
from . import api as _api
from .history import (
    FileArg,
    HistoryOps,
    check_ids,
    replay_from_file,
    replay_from_store,
    selection,
)
from .lifecycle import Connected, check_seconds, setting
from .registration import Fn, Registrations, check_coroutine_function, registered_name

P = ParamSpec("P")
R = TypeVar("R")

MIN_RECOVERY_INTERVAL = 0.05
MIN_LIVENESS_TIMEOUT = 0.25
_ISOLATION_LEVELS = (None, "read_committed", "repeatable_read", "serializable")


def _default_executor_id() -> str:
    generated = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    return os.environ.get("ASYNCFLOW_EXECUTOR_ID") or generated


class AsyncFlow(HistoryOps, Registrations):
    """An asyncflow application: durable workflows on one Postgres database and schema.

    ``database_url``: argument, else ``ASYNCFLOW_DATABASE_URL``, else an embedded Postgres whose
    data lives in ``data_dir`` (default ``ASYNCFLOW_DATA_DIR`` or ``./.asyncflow``).
    ``executor_id`` identifies this process (default ``ASYNCFLOW_EXECUTOR_ID`` or a generated
    one). ``liveness_timeout_seconds``: how long this process may show no sign of life (while
    its liveness lock is also free) before other processes take its workflows over; it renews
    its lease five times within it (docs/operations.md, "Liveness and fencing").
    ``app_version`` defaults to a hash of the registered workflows' source. ``upgrade``: what
    becomes of workflows of other versions that no live process of theirs can run —
    ``"replay"`` (default) adopts each whose recorded history replays cleanly against this
    code, ``"always"`` adopts them without replay, ``"never"`` leaves them for their own
    version (docs/deploying.md). ``retention``: a :class:`Retention` the app applies in the
    background (it deletes finished workflows older, or more, than it keeps; ``None``: none).
    ``queues``: the names of the queues (see :meth:`queue`) whose workflows this process runs;
    ``None`` (default): every queue it registers; ``[]``: none (it can still enqueue).
    ``telemetry``: OpenTelemetry spans and metrics — ``None`` (default) turns them on when a
    global tracer or meter provider is configured at launch, ``False`` off, ``True`` or a
    :class:`Telemetry` on (see docs/observability.md). ``listen_url``, ``connect_options``
    (as for :class:`Client`), ``migrate=False`` (a runtime role): docs/operations.md.
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
        liveness_timeout_seconds: float = 10.0,
        retention: Retention | None = None,
        queues: Iterable[str] | None = None,
        telemetry: bool | Telemetry | None = None,
        listen_url: str | None = None,
        connect_options: Mapping[str, Any] | None = None,
        migrate: bool = True,
        upgrade: str = "replay",
    ) -> None:
        super().__init__(database_url, schema=schema, pool_size=pool_size, data_dir=data_dir,
                         telemetry=telemetry, listen_url=listen_url,
                         connect_options=connect_options, migrate=migrate)
        if retention is not None and not isinstance(retention, Retention):
            raise InvalidSettingError(
                f"retention must be an asyncflow.Retention (or None), not {retention!r}")
        self.retention = retention
        self._retention_worker: RetentionWorker | None = None
        if queues is not None:
            if isinstance(queues, str):
                raise InvalidSettingError(
                    f"queues must be a list of queue names, not the string {queues!r}")
            queues = [setting(_codec.check_id, name, "queue name") for name in queues]
        self._serve: list[str] | None = queues
        self.executor_id = setting(_codec.check_id, executor_id or _default_executor_id(),
                                   "executor_id")
        self._executor_id = self.executor_id
        if app_version is not None:
            setting(_codec.check_id, app_version, "app_version")
        self._app_version = app_version
        self.upgrade = check_upgrade(upgrade)
        self._recovery_interval = check_seconds(
            recovery_interval_seconds, "recovery_interval_seconds", MIN_RECOVERY_INTERVAL,
            "each sweep is a query")
        self._liveness_timeout = check_seconds(
            liveness_timeout_seconds, "liveness_timeout_seconds", MIN_LIVENESS_TIMEOUT,
            f"the lease is renewed {BEATS_PER_LEASE} times within it")
        self._workflows: dict[str, WorkflowSpec] = {}
        self._step_names: set[str] = set()  # of steps and transactions (journal names)
        self._runner: Runner | None = None
        self._supervisor: Supervisor | None = None
        self._queues: dict[str, Queue] = {}
        self._dispatchers: dict[str, Dispatcher] = {}
        self._deadlines: DeadlineWatcher | None = None
        self._schedules: dict[str, ScheduleSpec] = {}
        self._scheduler: Scheduler | None = None

    # -- registration (workflow, step and scheduled: _registration) ---------------------------

    def transaction(
        self, name: str | None = None, *, isolation: str | None = None
    ) -> Callable[[Fn[P, R]], Fn[P, R]]:
        """Register an ``async def`` database transaction. Inside it,
        :func:`asyncflow.connection` is the transaction's asyncpg connection, and the checkpoint
        commits in that same transaction, so its effects happen exactly once. ``isolation`` is
        ``"read_committed"`` (default), ``"repeatable_read"`` or ``"serializable"``."""
        if isolation not in _ISOLATION_LEVELS:
            raise ConfigurationError(f"unknown isolation level {isolation!r}")

        def decorate(fn: Fn[P, R]) -> Fn[P, R]:
            check_coroutine_function(fn, "transaction")
            tx_name = registered_name(name, fn)
            spec = TransactionSpec(tx_name, fn, isolation,
                                   types=Signature(fn, f"transaction {tx_name!r}"))
            self._step_names.add(spec.name)

            @functools.wraps(fn)
            def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
                ctx = current_workflow()
                function_id = ctx.reserve() if ctx is not None else -1
                # In a workflow: its own database (where its checkpoint commits).
                storage = ctx.runtime.store.storage if ctx is not None else self.storage
                return run_transaction(spec, ctx, storage, function_id, args, kwargs)

            return call

        return decorate

    def queue(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        worker_concurrency: int | None = None,
        rate_limit: tuple[int, float] | None = None,
        partition_concurrency: int | None = None,
    ) -> Queue:
        """Register a named queue and return it; enqueue with ``queue.enqueue(fn, ...)``.

        ``concurrency`` caps how many of its workflows run at once across all processes;
        ``worker_concurrency`` caps them per process; ``rate_limit=(n, per_seconds)`` caps how
        many start in any window of that length across all processes; ``partition_concurrency``
        caps each ``partition_key``. ``None``: no limit. This app runs the queue's workflows
        (if it registers their functions) unless ``queues=`` leaves the queue out.
        """
        spec = queue_spec(name, concurrency, worker_concurrency, rate_limit, partition_concurrency)
        if spec.name in self._queues:
            raise ConfigurationError(f"a queue named {spec.name!r} is already registered")
        queue = self._queues[spec.name] = Queue(spec, self)
        if self._runner is not None and self._serves(spec.name):
            self._start_dispatcher(self.runtime, queue)
        return queue

    def debouncer(self, fn: Callable[..., Coroutine[Any, Any, R]], *, key: str | Callable[
            ..., str], period_seconds: float, max_wait_seconds: float | None = None,
            queue: Queue | None = None) -> Debouncer[R]:
        """A :class:`Debouncer` of workflow ``fn`` (see there): ``key`` (a str, or a function
        of the call's arguments returning one), ``period_seconds`` > 0, ``max_wait_seconds``
        (``None``: none) and ``queue`` (default: queue ``"asyncflow.debounce"``)."""
        return make_debouncer(self, fn, key, period_seconds, max_wait_seconds, queue)

    def _serves(self, name: str) -> bool:
        return self._serve is None or name in self._serve

    def _start_dispatcher(self, runtime: Runtime, queue: Queue) -> None:
        assert self._runner is not None
        dispatcher = Dispatcher(queue.spec, self._runner, self._workflows)
        self._dispatchers[queue.name] = dispatcher
        runtime.monitors[dispatcher.monitor.name] = dispatcher.monitor
        with detached(runtime.telemetry):  # outside the trace of whoever registered the queue
            runtime.spawn(dispatcher.run, name=f"dispatcher {queue.name}")

    # -- lifecycle hooks ------------------------------------------------------------------------

    async def _start_background(self, runtime: Runtime) -> None:
        runner = self._runner = Runner(runtime, self.app_version)
        liveness = runtime.listener.liveness
        assert liveness is not None
        supervisor = self._supervisor = Supervisor(runner, self._workflows,
                                                   self._recovery_interval, liveness)
        runner.on_stopped_early = functools.partial(supervisor.poke, repair=True)
        runtime.monitors["supervisor"] = supervisor.monitor
        attach(supervisor, runtime, self._workflows, self.app_version, self.upgrade)
        if self._serve is not None:
            unknown = [name for name in self._serve if name not in self._queues]
            if unknown:
                raise ConfigurationError(
                    f"queues={self._serve!r} names queues this app does not register: "
                    f"{unknown!r}; register them with app.queue(name, ...) before launch")
        # Workflows this executor ran that this app cannot run go to apps that can.
        await runtime.store.release_unregistered(self.executor_id, list(self._workflows))
        await supervisor.sweep(include_own=True)
        await runtime.tg.start(supervisor.run)
        deadlines = self._deadlines = DeadlineWatcher(runtime, runner.mark_cancelled)
        runtime.monitors[deadlines.monitor.name] = deadlines.monitor
        await runtime.tg.start(deadlines.run)
        self._scheduler = await start_scheduler(runner, self._schedules, self._workflows,
                                                self._queues)
        if self.retention is not None:
            worker = self._retention_worker = RetentionWorker(runtime.store, self.retention)
            runtime.monitors["retention"] = worker.monitor
            await runtime.tg.start(worker.run)
        for name, queue in self._queues.items():
            if self._serves(name):
                self._start_dispatcher(runtime, queue)

    def _on_reconnect(self, server_changed: bool) -> None:
        # Anything may have happened while this process was cut off (even lost commits, after a
        # failover): look for own PENDING workflows that nothing runs.
        if self._supervisor is not None:
            self._supervisor.poke(repair=True)

    def _on_notify(self, kind: str, workflow_id: str) -> None:
        if self._supervisor is not None:
            self._supervisor.on_notify(kind)
        if self._runner is not None:
            self._runner.on_notify(kind, workflow_id)

    def _stopped(self) -> None:
        self._runner = None
        self._supervisor = None
        self._retention_worker = None
        self._dispatchers = {}
        self._scheduler = None
        self._deadlines = None

    def _after_resume(self) -> None:
        if self._supervisor is not None:
            self._supervisor.poke()  # our own NOTIFY is an echo we ignore: sweep now

    def _executor_version(self) -> str:
        return self.app_version

    def _retention_setting(self) -> Retention | None:
        return self.retention

    @property
    def runner(self) -> Runner:
        """The workflow runner (internal)."""
        runner = self._runner
        if runner is None or self._runtime is None:
            _ = self.runtime  # raises NotLaunchedError
            raise AssertionError("unreachable")
        return runner

    # -- starting workflows ---------------------------------------------------------------------

    def start_workflow(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        *args: Any,
        workflow_id: str | None = None,
        timeout_seconds: float | None = None,
        attributes: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, WorkflowHandle[R]]:
        """Start a workflow; returns (when awaited) its handle once its row and inputs are durable.

        ``workflow_id=`` (keyword) chooses the id: starting an id that exists returns a handle to
        that workflow and never runs it again. Inside a workflow this starts a child workflow
        whose id is derived from the parent's (the start is journaled).

        ``timeout_seconds=`` (keyword; default: the ``@app.workflow(timeout_seconds=)`` of the
        function, else none): a durable deadline, stored with the workflow. When it passes the
        workflow is cancelled with its descendants, wherever it runs and across restarts, and
        ``get_result`` raises :class:`WorkflowTimeoutError`. ``attributes=``: its attributes.
        """
        timeout = _codec.check_workflow_timeout(timeout_seconds)
        return self._begin(self._spec_of(fn), args, kwargs, workflow_id, timeout,
                           None if attributes is None else check_attributes(attributes))

    def _begin(
        self,
        spec: WorkflowSpec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        workflow_id: str | None,
        timeout_seconds: float | None, attributes: str | None = None,
    ) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
        if workflow_id is not None:
            _codec.check_id(workflow_id)
        assert spec.types is not None
        inputs = spec.types.encode_inputs(args, kwargs)
        parent = workflow_on(self._runtime)
        if parent is not None:
            if parent.replaying:  # a history replay: the recorded child, nothing started
                return child_handle(parent, parent.reserve(), spec.types)
            return self._start_child(parent.reserve(), spec, inputs, workflow_id,
                                     timeout_seconds, attributes)
        return self._start(spec, inputs, workflow_id, timeout_seconds, attributes)

    async def _start(
        self, spec: WorkflowSpec, inputs: str, workflow_id: str | None,
        timeout_seconds: float | None, attributes: str | None = None,
    ) -> WorkflowHandle[Any]:
        return self._handle(await self.runner.start(
            spec, inputs, workflow_id, None, timeout_seconds, attributes=attributes), spec.types)

    async def _start_child(
        self, function_id: int, spec: WorkflowSpec, inputs: str, workflow_id: str | None,
        timeout_seconds: float | None, attributes: str | None,
    ) -> WorkflowHandle[Any]:
        parent = current_workflow()
        assert parent is not None
        return self._handle(await self.runner.start_child(parent, function_id, spec, inputs,
                            workflow_id, timeout_seconds, attributes), spec.types)

    async def resume_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Resume a CANCELLED, ERROR or MAX_RECOVERY_ATTEMPTS_EXCEEDED workflow, continuing from
        its checkpoints (recovery attempts reset to 0). It runs on this app if this app registers
        its workflow function; otherwise it is left unassigned for a live app that does (woken
        by NOTIFY). Until some app registering it runs, it stays PENDING. A queued workflow goes
        back to its queue (ENQUEUED) and runs when a dispatcher of the queue starts it."""
        _codec.check_id(workflow_id)
        runtime = self.runtime
        status = await runtime.store.workflow_status(workflow_id)
        here = status.name in self._workflows
        resumed = await runtime.store.resume_workflow(
            workflow_id, self.executor_id if here else None)
        if resumed is not None and resumed.queue_name is not None:
            runtime.waits.wake(QUEUE, resumed.queue_name)
        elif resumed is not None and here:
            self.runner.spawn(workflow_id, self._workflows[resumed.name], resumed.inputs,
                              fresh=False, epoch=resumed.epoch)
        return self._handle(workflow_id)

    def _after_cancel(self, workflow_id: str) -> None:
        if self._runner is not None:
            self._runner.mark_cancelled(workflow_id)

    def _running_count(self) -> int | None:
        return None if self._runner is None else len(self._runner.running)

    def _queue_depths(self) -> dict[str, int]:
        return {name: dispatcher.depth for name, dispatcher in self._dispatchers.items()
                if dispatcher.depth is not None}

    # -- history: replay, and where forks and imports run (asyncflow._front.history) ------------

    async def replay(
        self,
        workflow_ids: Iterable[str] | None = None,
        *,
        file: FileArg | None = None,
        client: Connected | None = None,
        status: str | Iterable[str] | None = None,
        name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        workflow_id_prefix: str | None = None,
        app_version: str | None = None,
        parent_workflow_id: str | None = None,
        queue_name: str | None = None,
        limit: int | None = None,
        timeout_seconds: float = 10.0,
    ) -> list[ReplayResult]:
        """Replay recorded workflows against the workflow functions registered now, without
        effects, and report each: ``ok``, ``diverged`` (the code takes another path, or ends
        with another result), ``failed`` (it could not be replayed) or ``skipped``.

        Nothing runs for real and nothing is written: steps and transactions return their
        recorded outputs (or raise their recorded errors), sends, events, streams, sleeps and
        receives return what was recorded; any database access is refused. The histories come
        from ``file`` (an export; no database needed), else from ``client``'s database, else
        from this (launched) app's. ``workflow_ids`` names them; otherwise the filters of
        :meth:`list_workflows` choose (default: every finished workflow; newest first, at most
        ``limit``). A replay that does not finish within ``timeout_seconds`` fails.
        """
        ids = check_ids(workflow_ids)
        if status is None and ids is None:
            status = sorted(TERMINAL_STATUSES)  # finished runs, unless asked otherwise
        chosen = selection(
            limit, status=status, name=name, created_after=created_after,
            created_before=created_before, workflow_id_prefix=workflow_id_prefix,
            app_version=app_version, parent_workflow_id=parent_workflow_id,
            queue_name=queue_name)
        timeout = _codec.check_timeout(timeout_seconds)
        if file is not None:
            return await replay_from_file(file, self._workflows, ids, chosen, timeout)
        source = self if client is None else client
        return await replay_from_store(source.runtime.store, self._workflows, ids, chosen,
                                       timeout)

    def _fork_target(self, name: str, app_version: str | None) -> tuple[str, str] | None:
        if name in self._workflows and app_version in (None, self.app_version):
            return self.executor_id, self.app_version
        return None

    def _run_forked(self, workflow_id: str, name: str, inputs: str) -> None:
        self.runner.spawn(workflow_id, self._workflows[name], inputs, fresh=False, epoch=1)

    def running_workflows(self) -> list[str]:
        """Ids of the workflows executing in this process right now."""
        return [] if self._runner is None else list(self._runner.running)

    # -- communication --------------------------------------------------------------------------

    def send(
        self,
        destination_id: str,
        message: Any,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Coroutine[Any, Any, Delivery | None]:
        """Send a message to a workflow (see :func:`asyncflow.send`); journaled in a workflow.

        Outside a workflow it returns a :class:`Delivery`: delivered to a workflow that has not
        ended, a ``DUPLICATE`` of an idempotency key sent before, or ``WORKFLOW_ENDED``. Inside
        a workflow or step it returns ``None`` (the send is journaled or staged)."""
        text = _codec.check_message(destination_id, message, topic, idempotency_key)
        runtime = self._runtime
        ctx = workflow_on(runtime)
        if ctx is not None:
            return send_from_workflow(ctx, ctx.reserve(), destination_id, text, topic,
                                      idempotency_key)
        step = current_step(runtime) if runtime is not None else None
        if step is not None:
            return send_from_step(step, destination_id, text, topic, idempotency_key)
        return send_outside(self.runtime, destination_id, text, topic, idempotency_key)

    def get_event(
        self, workflow_id: str, key: str, timeout_seconds: float = 60, *, type: Any = None
    ) -> Coroutine[Any, Any, Any]:
        """Wait for an event's value (see :func:`asyncflow.get_event`); journaled in a workflow.
        ``type``: the annotation to decode the value by (without it: plain JSON)."""
        _codec.check_id(workflow_id)
        _codec.check_name(key, "key")
        timeout_seconds = _codec.check_timeout(timeout_seconds)
        read = reader(type, f"event {key!r} of workflow {workflow_id!r}")
        ctx = workflow_on(self._runtime)
        if ctx is not None:
            got = get_event_from_workflow(ctx, ctx.reserve(), workflow_id, key, timeout_seconds)
        else:
            got = get_event_outside(self.runtime, workflow_id, key, timeout_seconds)
        return got if read is None else decoded(got, read)

    def recv(
        self, topic: str | None = None, timeout_seconds: float = 60, *, type: Any = None
    ) -> Coroutine[Any, Any, Any]:
        """Same as :func:`asyncflow.recv` (workflows only)."""
        return _api.recv(topic, timeout_seconds, type=type)

    def set_event(self, key: str, value: Any) -> Coroutine[Any, Any, None]:
        """Same as :func:`asyncflow.set_event` (workflows and steps)."""
        return _api.set_event(key, value)

    def write_stream(self, key: str, value: Any) -> Coroutine[Any, Any, None]:
        """Same as :func:`asyncflow.write_stream` (workflows and steps)."""
        return _api.write_stream(key, value)

    def close_stream(self, key: str) -> Coroutine[Any, Any, None]:
        """Same as :func:`asyncflow.close_stream` (workflows and steps)."""
        return _api.close_stream(key)
