"""Queues: the ``Queue`` object an app registers, and enqueueing, with its variants side by side.

An enqueued workflow is a row in ``ENQUEUED`` (or ``DELAYED``) status; a dispatcher
(:mod:`._dispatch`) in some process serving the queue claims it within the queue's limits and
runs it. Enqueueing is durable once it returns, and it wakes the queue's dispatchers: by NOTIFY
in the same statement for other processes, directly for this one — after the commit, so inside
an ``@app.transaction`` the wake waits for the transaction to commit.

Variants, picked at the call (arguments are validated and a function id is reserved
synchronously, so bad input writes nothing and ``gather`` replays in order):

* in a workflow body: journaled — exactly once, with a deterministic child id; a refused
  deduplication is journaled too, so a replay raises it again;
* in a step or a transaction of a workflow: keyed by the step's position (a retried attempt
  enqueues the same workflow, never a second); in a transaction it commits with it;
* outside workflows (an app's code, a Client, a transaction of its own): a new id unless one is
  given; in a transaction it commits or rolls back with the transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from .._core.telemetry import QUEUE_NAME, WORKFLOW_ID, WORKFLOW_NAME
from .._core.wait import QUEUE
from .._engine.context import (
    WorkflowContext,
    after_commit_var,
    current_step,
    current_workflow,
    workflow_on,
)
from .._engine.dispatch import Dispatcher
from .._engine.journal import begin, record, replayed_value, stop_for_status
from .._engine.runner import child_id
from .._engine.runtime import Runtime
from .._errors import (
    QueueDeduplicatedError,
    WorkflowConflictError,
    _ExecutionConflict,
)
from .._primitives.handle import WorkflowHandle
from .._recorded import encode_error
from .._signature import Signature
from .._specs import QueueSpec, WorkflowSpec
from .._storage.store import ClaimArgs, EnqueueClaimed
from .enqueue_args import EnqueueRequest, enqueue_request, many_requests, step_child_id

R = TypeVar("R")

ENQUEUE = "asyncflow.enqueue"


# -- the variants -------------------------------------------------------------------------------


async def insert(runtime: Runtime, req: EnqueueRequest, workflow_id: str, app_version: str,
                 parent_id: str | None, parent_epoch: int | None = None,
                 claimer: Dispatcher | None = None) -> str:
    """Insert the queued workflow; returns the id the handle refers to (``workflow_id``, or with
    ``on_duplicate="return_existing"`` the workflow holding the deduplication id). With
    ``parent_epoch`` (an enqueue by the parent's execution) it raises ``_ExecutionConflict``,
    inserting nothing, when that execution no longer owns the parent. ``claimer``: this
    process's dispatcher of the queue, which may claim with the insert."""
    telemetry = runtime.telemetry
    if telemetry is None:
        return await _insert(runtime, req, workflow_id, app_version, parent_id, None,
                             parent_epoch, claimer)
    # The enqueue's span: its trace context is stored with the workflow, and the workflow's
    # executions are its children (telemetry).
    with telemetry.span(f"enqueue {req.name}", {WORKFLOW_ID: workflow_id, WORKFLOW_NAME: req.name,
                                               QUEUE_NAME: req.queue_name}, kind="producer"):
        return await _insert(runtime, req, workflow_id, app_version, parent_id,
                             telemetry.traceparent(), parent_epoch, claimer)


async def _insert(runtime: Runtime, req: EnqueueRequest, workflow_id: str, app_version: str,
                  parent_id: str | None, traceparent: str | None,
                  parent_epoch: int | None, claimer: Dispatcher | None) -> str:
    found = None
    if claimer is not None and parent_id is None and req.delay_seconds <= 0:
        store = runtime.store

        def claiming(claim: ClaimArgs) -> Awaitable[EnqueueClaimed]:
            return store.enqueue_claim(
                workflow_id, req.name, req.inputs, app_version, req.queue_name, req.priority,
                req.deduplication_id, req.partition_key, traceparent, req.timeout_seconds,
                claim)

        found = await claimer.enqueue(workflow_id, claiming)
    if found is None:
        found = await runtime.store.enqueue_workflow(
            workflow_id, req.name, req.inputs, app_version, parent_id, req.queue_name,
            req.priority, req.deduplication_id, req.delay_seconds, req.partition_key,
            traceparent, req.timeout_seconds, parent_epoch,
        )
    if not found.owned:
        raise _ExecutionConflict(f"the parent of queued workflow {workflow_id!r} is not owned")
    if found.created:
        if runtime.telemetry is not None:
            runtime.telemetry.workflow_started(req.name)
        return workflow_id
    if found.existing_name is not None:
        if found.existing_name != req.name:
            raise WorkflowConflictError(
                f"workflow id {workflow_id!r} is already used by workflow "
                f"{found.existing_name!r}, not {req.name!r}; choose another id")
        return workflow_id  # enqueued before (same id): the same workflow, never a second
    assert found.holder is not None
    if req.on_duplicate == "return_existing":
        return found.holder
    raise QueueDeduplicatedError(
        f"queue {req.queue_name!r} already has workflow {found.holder!r} with deduplication_id "
        f"{req.deduplication_id!r} (ENQUEUED, DELAYED or PENDING); nothing was enqueued. Wait "
        "for it to finish, use another deduplication_id, or pass "
        "on_duplicate='return_existing' to get its handle", found.holder)


def wake_queue(runtime: Runtime, queue_name: str) -> None:
    """Wake this process's dispatchers of a queue once what was just written is committed:
    now, or when the enclosing ``@app.transaction`` commits."""
    def wake() -> None:
        runtime.waits.wake(QUEUE, queue_name)

    pending = after_commit_var.get()
    if pending is not None:
        pending.append(wake)
    else:
        wake()


async def enqueue_with_id(runtime: Runtime, req: EnqueueRequest, workflow_id: str,
                          app_version: str, parent_id: str | None,
                          claimer: Dispatcher | None = None) -> str:
    """Enqueue outside a workflow body (from outside, a step, or a transaction). With
    ``claimer`` (outside any transaction) the dispatcher claims with the insert and wakes
    itself as needed."""
    got = await insert(runtime, req, workflow_id, app_version, parent_id, claimer=claimer)
    if claimer is None:
        wake_queue(runtime, req.queue_name)
    return got


async def enqueue_from_workflow(ctx: WorkflowContext, function_id: int, req: EnqueueRequest,
                                app_version: str) -> str:
    """A journaled enqueue: exactly once across recoveries, with a deterministic id."""
    recorded = await begin(ctx, function_id, ENQUEUE)
    if recorded is not None:
        replayed_value(recorded)  # raises a recorded refusal (deduplication) again
        assert recorded.child_id is not None
        return recorded.child_id
    workflow_id = req.workflow_id or child_id(ctx.workflow_id, function_id)
    try:
        got = await insert(ctx.runtime, req, workflow_id, app_version, ctx.workflow_id,
                           ctx.epoch)
    except QueueDeduplicatedError as exc:
        await record(ctx, function_id, ENQUEUE, error=encode_error(exc))
        raise
    except _ExecutionConflict:
        await stop_for_status(ctx)  # cancelled, or owned by another execution now
        raise
    ctx.runtime.waits.wake(QUEUE, req.queue_name)
    await record(ctx, function_id, ENQUEUE, child_id=got)
    return got


async def _handle_of(ids: Coroutine[Any, Any, str],
                     make: Callable[[str], WorkflowHandle[Any]]) -> WorkflowHandle[Any]:
    return make(await ids)


def enqueue(host: QueueHost, req: EnqueueRequest) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
    """Pick the variant for where the call is made (synchronously) and return its coroutine."""
    runtime = host._runtime
    version = host.app_version

    def handle(workflow_id: str) -> WorkflowHandle[Any]:
        return host._handle(workflow_id, req.types)

    replayed = workflow_on(runtime)
    if replayed is not None and replayed.replaying:
        # A history replay: the recorded child, with a handle on the replay's runtime (which
        # answers its recorded outcome); nothing reaches the app's database.
        replay_runtime = replayed.runtime
        return _handle_of(enqueue_from_workflow(replayed, replayed.reserve(), req, version),
                          lambda child: WorkflowHandle(lambda: replay_runtime, child,
                                                       req.types))
    if runtime is not None and not runtime.closing:
        ctx = current_workflow(runtime)
        if ctx is not None:
            return _handle_of(enqueue_from_workflow(ctx, ctx.reserve(), req, version),
                              handle)
        step = current_step(runtime)
        if step is not None:
            parent = step.workflow.workflow_id
            workflow_id = req.workflow_id or step_child_id(parent, step.function_id,
                                                           step.next_seq())
            return _handle_of(enqueue_with_id(runtime, req, workflow_id, version, parent),
                              handle)
    return _handle_of(_enqueue_outside(host, req, version), handle)


async def _enqueue_outside(host: QueueHost, req: EnqueueRequest, version: str) -> str:
    runtime = host.runtime  # raises NotLaunchedError when not running
    # Served here and not in a transaction (whose enqueue runs when it commits): the insert
    # may claim too, so the workflow starts here after one commit, not two.
    claimer = host._dispatchers.get(req.queue_name) if after_commit_var.get() is None else None
    return await enqueue_with_id(runtime, req, req.workflow_id or secrets.token_hex(16),
                                 version, None, claimer)


# -- many at once -------------------------------------------------------------------------------


async def insert_many(runtime: Runtime, reqs: list[EnqueueRequest], ids: list[str],
                      app_version: str, parent_id: str | None) -> list[str]:
    """Insert queued workflows of one function and queue (same options, their own ids and
    inputs) in one statement; returns the ids the handles refer to, as :func:`insert` would
    one by one (an id that existed: the same workflow, or :class:`WorkflowConflictError`)."""
    telemetry = runtime.telemetry
    if telemetry is None:
        return await _insert_many(runtime, reqs, ids, app_version, parent_id, None)
    first = reqs[0]
    with telemetry.span(f"enqueue {first.name}", {WORKFLOW_NAME: first.name,
                                                 QUEUE_NAME: first.queue_name}, kind="producer"):
        return await _insert_many(runtime, reqs, ids, app_version, parent_id,
                                  telemetry.traceparent())


async def _insert_many(runtime: Runtime, reqs: list[EnqueueRequest], ids: list[str],
                       app_version: str, parent_id: str | None,
                       traceparent: str | None) -> list[str]:
    first = reqs[0]
    created = await runtime.store.enqueue_workflows(
        ids, first.name, [req.inputs for req in reqs], app_version, parent_id, first.queue_name,
        first.priority, first.delay_seconds, first.partition_key, traceparent,
        first.timeout_seconds)
    if runtime.telemetry is not None:
        for _ in created:
            runtime.telemetry.workflow_started(first.name)
    got = []
    for req, workflow_id in zip(reqs, ids, strict=True):
        if workflow_id not in created:  # it existed: the same workflow, or a conflict
            await _insert(runtime, req, workflow_id, app_version, parent_id, traceparent, None,
                          None)
        got.append(workflow_id)
    return got


async def enqueue_many_with_ids(runtime: Runtime, reqs: list[EnqueueRequest], ids: list[str],
                                app_version: str, parent_id: str | None) -> list[str]:
    """Enqueue many outside a workflow body (from outside, a step, or a transaction): one
    statement, and the queue's local dispatcher woken once committed."""
    got = await insert_many(runtime, reqs, ids, app_version, parent_id)
    wake_queue(runtime, reqs[0].queue_name)
    return got


async def _one_by_one(calls: list[Coroutine[Any, Any, str]]) -> list[str]:
    got: list[str] = []
    try:
        for call in calls:
            got.append(await call)
    finally:
        for call in calls[len(got) + 1:]:  # not started (after the one that raised)
            call.close()
    return got


async def _handles_of(ids: Coroutine[Any, Any, list[str]],
                      make: Callable[[str], WorkflowHandle[Any]]) -> list[WorkflowHandle[Any]]:
    return [make(workflow_id) for workflow_id in await ids]


async def _none() -> list[str]:
    return []


def enqueue_many(host: QueueHost, reqs: list[EnqueueRequest]
                 ) -> Coroutine[Any, Any, list[WorkflowHandle[Any]]]:
    """:func:`enqueue` for requests of one function and queue: in a workflow body one journaled
    enqueue after the other; elsewhere one statement for all."""
    runtime = host._runtime
    version = host.app_version
    types = reqs[0].types if reqs else None

    def handle(workflow_id: str) -> WorkflowHandle[Any]:
        return host._handle(workflow_id, types)

    if not reqs:
        return _handles_of(_none(), handle)
    replayed = workflow_on(runtime)
    if replayed is not None and replayed.replaying:
        replay_runtime = replayed.runtime
        return _handles_of(
            _one_by_one([enqueue_from_workflow(replayed, replayed.reserve(), req, version)
                         for req in reqs]),
            lambda child: WorkflowHandle(lambda: replay_runtime, child, types))
    if runtime is not None and not runtime.closing:
        ctx = current_workflow(runtime)
        if ctx is not None:
            return _handles_of(
                _one_by_one([enqueue_from_workflow(ctx, ctx.reserve(), req, version)
                             for req in reqs]), handle)
        step = current_step(runtime)
        if step is not None:
            parent = step.workflow.workflow_id
            ids = [req.workflow_id or step_child_id(parent, step.function_id, step.next_seq())
                   for req in reqs]
            return _handles_of(enqueue_many_with_ids(runtime, reqs, ids, version, parent),
                               handle)
    return _handles_of(_enqueue_many_outside(host, reqs, version), handle)


async def _enqueue_many_outside(host: QueueHost, reqs: list[EnqueueRequest],
                                version: str) -> list[str]:
    runtime = host.runtime  # raises NotLaunchedError when not running
    ids = [req.workflow_id or secrets.token_hex(16) for req in reqs]
    return await enqueue_many_with_ids(runtime, reqs, ids, version, None)


# -- the Queue object ---------------------------------------------------------------------------


class QueueHost(Protocol):
    """What a queue needs from its app (internal)."""

    _runtime: Runtime | None
    #: This process's dispatchers, by queue (an enqueue to a queue served here may claim).
    _dispatchers: dict[str, Dispatcher]

    @property
    def runtime(self) -> Runtime: ...

    @property
    def app_version(self) -> str: ...

    def _spec_of(self, fn: Any) -> WorkflowSpec: ...

    def _handle(self, workflow_id: str, types: Signature | None = None
                ) -> WorkflowHandle[Any]: ...


class Queue:
    """A named queue of workflows, registered with ``app.queue(name, ...)``.

    Workflows enqueued on it run on the processes that serve it (by default every app that
    registers it), in priority order (lower first), first-in first-out within a priority, and
    never more at once or faster than its limits allow — across all processes:

    * ``concurrency``: how many of its workflows run at once, in all processes together;
    * ``worker_concurrency``: how many run at once in one process;
    * ``rate_limit=(n, per_seconds)``: at most ``n`` start in any window of ``per_seconds``;
    * ``partition_concurrency``: how many run at once per ``partition_key``.

    Every process serving a queue should declare it with the same limits: each claim enforces
    the limits of the process making it.
    """

    __slots__ = ("_host", "spec")

    def __init__(self, spec: QueueSpec, host: QueueHost) -> None:
        self.spec = spec
        self._host = host

    @property
    def name(self) -> str:
        """The queue's name (what ``Client.enqueue`` and ``list_workflows`` refer to)."""
        return self.spec.name

    @property
    def concurrency(self) -> int | None:
        """Global cap on running workflows of this queue (``None``: none)."""
        return self.spec.concurrency

    @property
    def worker_concurrency(self) -> int | None:
        """Per-process cap on running workflows of this queue (``None``: none)."""
        return self.spec.worker_concurrency

    @property
    def rate_limit(self) -> tuple[int, float] | None:
        """``(n, per_seconds)``: at most ``n`` starts in any window of ``per_seconds``."""
        return self.spec.rate_limit

    @property
    def partition_concurrency(self) -> int | None:
        """Cap on running workflows per partition key (``None``: none)."""
        return self.spec.partition_concurrency

    def enqueue(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        *args: Any,
        workflow_id: str | None = None,
        priority: int = 0,
        deduplication_id: str | None = None,
        delay_seconds: float = 0,
        partition_key: str | None = None,
        on_duplicate: str = "raise",
        timeout_seconds: float | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, WorkflowHandle[R]]:
        """Enqueue workflow ``fn(*args, **kwargs)``; returns (when awaited) its handle, once the
        workflow is durable (``ENQUEUED``, or ``DELAYED`` for ``delay_seconds``). In a process
        that serves the queue the same statement may hand it to this process (``PENDING``,
        started here: one commit, no NOTIFY) when the queue's limits and order allow.

        ``priority``: lower runs first (default 0); FIFO within a priority.
        ``deduplication_id``: refused with :class:`QueueDeduplicatedError` while a workflow of
        this queue holding the same id is ENQUEUED, DELAYED or PENDING — or, with
        ``on_duplicate="return_existing"``, that workflow's handle is returned instead.
        ``workflow_id``: enqueueing an id that exists returns its handle and enqueues nothing.
        ``partition_key``: the partition counted by ``partition_concurrency``.
        ``timeout_seconds`` (default: the function's ``@app.workflow(timeout_seconds=)``): the
        workflow is cancelled (:class:`WorkflowTimeoutError`) once it has run that long; its
        clock starts when a dispatcher starts it, not while it waits in the queue.

        In a workflow the enqueue is journaled (exactly once, deterministic id); in a step it
        is keyed by the step's position; in an ``@app.transaction`` it commits (or rolls
        back) with the transaction.
        """
        spec = self._host._spec_of(fn)
        req = enqueue_request(
            self.spec.name, spec.name, args, kwargs, workflow_id=workflow_id,
            priority=priority, deduplication_id=deduplication_id, delay_seconds=delay_seconds,
            partition_key=partition_key, on_duplicate=on_duplicate,
            timeout_seconds=(spec.timeout_seconds if timeout_seconds is None
                             else timeout_seconds), types=spec.types)
        handle: Coroutine[Any, Any, WorkflowHandle[R]] = enqueue(self._host, req)
        return handle

    def enqueue_many(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        calls: Iterable[tuple[Any, ...]],
        *,
        workflow_ids: Sequence[str] | None = None,
        priority: int = 0,
        delay_seconds: float = 0,
        partition_key: str | None = None,
        timeout_seconds: float | None = None,
    ) -> Coroutine[Any, Any, list[WorkflowHandle[R]]]:
        """Enqueue ``fn(*call)`` for each tuple of positional arguments in ``calls``, in one
        statement; returns (when awaited) their handles in the same order, once every workflow
        is durable. They run first-in first-out in that order within their priority.

        ``workflow_ids``: one id per call (default: new ids); an id that exists is that
        workflow's handle, as with :meth:`enqueue`. The other options are :meth:`enqueue`'s,
        shared by all. There are no deduplication ids here: use :meth:`enqueue` for those.

        In a step or an ``@app.transaction`` (where it commits or rolls back with the
        transaction) and outside workflows it is one statement and one wake-up of the queue's
        dispatchers, however many calls; in a workflow body each enqueue is journaled, one after
        the other. If an id is taken by another workflow function
        (:class:`WorkflowConflictError`), the others are enqueued (roll back with an enclosing
        transaction).
        """
        spec = self._host._spec_of(fn)
        reqs = many_requests(
            self.spec.name, spec.name, calls, workflow_ids=workflow_ids, priority=priority,
            delay_seconds=delay_seconds, partition_key=partition_key,
            timeout_seconds=spec.timeout_seconds if timeout_seconds is None else timeout_seconds,
            types=spec.types)
        handles: Coroutine[Any, Any, list[WorkflowHandle[R]]] = enqueue_many(self._host, reqs)
        return handles

    def __repr__(self) -> str:
        spec = self.spec
        return (f"Queue({spec.name!r}, concurrency={spec.concurrency!r}, "
                f"worker_concurrency={spec.worker_concurrency!r}, "
                f"rate_limit={spec.rate_limit!r}, "
                f"partition_concurrency={spec.partition_concurrency!r})")
