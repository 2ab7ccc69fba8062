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

import math
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .. import _codec
from .._core.telemetry import QUEUE_NAME, WORKFLOW_ID, WORKFLOW_NAME
from .._core.wait import QUEUE
from .._engine.context import (
    WorkflowContext,
    after_commit_var,
    current_step,
    current_workflow,
    workflow_on,
)
from .._engine.journal import begin, record, replayed_value, stop_for_status
from .._engine.runner import child_id
from .._engine.runtime import Runtime
from .._errors import (
    InvalidArgumentError,
    InvalidSettingError,
    QueueDeduplicatedError,
    WorkflowConflictError,
    _ExecutionConflict,
)
from .._primitives.handle import WorkflowHandle
from .._recorded import encode_error
from .._signature import Signature
from .._specs import QueueSpec, WorkflowSpec

R = TypeVar("R")

ENQUEUE = "asyncflow.enqueue"
ON_DUPLICATE = ("raise", "return_existing")
#: The app version stored with a workflow enqueued by a Client (which has none). A queued
#: workflow that never ran has no journal, so any worker registering its name may run it; it
#: is stamped with that worker's version when dispatched.
NO_VERSION = ""
_INT4 = 2**31


def _limit(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < _INT4:
        raise InvalidSettingError(f"{what} must be None or an int from 1 to 2**31-1, not "
                                  f"{value!r}")
    return value


def queue_spec(
    name: object,
    concurrency: object = None,
    worker_concurrency: object = None,
    rate_limit: object = None,
    partition_concurrency: object = None,
) -> QueueSpec:
    """Validate a queue's name and limits (:class:`InvalidSettingError` when one is bad)."""
    try:
        checked = _codec.check_id(name, "queue name")
    except InvalidArgumentError as exc:
        raise InvalidSettingError(str(exc)) from None
    rate: tuple[int, float] | None = None
    if rate_limit is not None:
        if not isinstance(rate_limit, tuple | list) or len(rate_limit) != 2:
            raise InvalidSettingError(
                f"rate_limit must be None or (starts, per_seconds), e.g. (10, 1.0), not "
                f"{rate_limit!r}")
        count, per = rate_limit
        count = _limit(count, "rate_limit's count of starts")
        if (isinstance(per, bool) or not isinstance(per, int | float) or not math.isfinite(per)
                or not 0 < per <= 365 * 24 * 3600):
            raise InvalidSettingError(
                f"rate_limit's period must be a number of seconds > 0 (at most a year), not "
                f"{per!r}")
        assert count is not None
        rate = (count, float(per))
    return QueueSpec(checked, _limit(concurrency, "concurrency"),
                     _limit(worker_concurrency, "worker_concurrency"), rate,
                     _limit(partition_concurrency, "partition_concurrency"))


@dataclass(frozen=True, slots=True)
class EnqueueRequest:
    """A validated enqueue: which workflow, where, and how."""

    queue_name: str
    name: str
    inputs: str
    workflow_id: str | None
    priority: int
    deduplication_id: str | None
    delay_seconds: float
    partition_key: str | None
    on_duplicate: str
    #: Its timeout (``None``: none); the clock starts when a dispatcher starts it.
    timeout_seconds: float | None = None
    #: The workflow function's decoders (``None``: enqueued by name), for its handle.
    types: Signature | None = None


def enqueue_request(
    queue_name: str,
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    workflow_id: object,
    priority: object,
    deduplication_id: object,
    delay_seconds: object,
    partition_key: object,
    on_duplicate: object,
    timeout_seconds: object = None,
    types: Signature | None = None,
) -> EnqueueRequest:
    """Validate and encode an enqueue's arguments (raises before anything is written)."""
    wid = None if workflow_id is None else _codec.check_id(workflow_id)
    if isinstance(priority, bool) or not isinstance(priority, int) or not (
            -_INT4 <= priority < _INT4):
        raise InvalidArgumentError(f"priority must be an int from -2**31 to 2**31-1 (lower runs "
                                   f"first), not {priority!r}")
    dedup = (None if deduplication_id is None
             else _codec.check_id(deduplication_id, "deduplication_id"))
    partition = None if partition_key is None else _codec.check_id(partition_key,
                                                                     "partition_key")
    delay = _codec.check_timeout(delay_seconds, "delay_seconds")
    timeout = _codec.check_workflow_timeout(timeout_seconds)
    if on_duplicate not in ON_DUPLICATE:
        raise InvalidArgumentError(
            f"on_duplicate must be 'raise' or 'return_existing', not {on_duplicate!r}")
    inputs = (types.encode_inputs(args, kwargs) if types is not None
              else _codec.dumps({"args": list(args), "kwargs": kwargs},
                                f"the arguments of workflow {name!r}"))
    return EnqueueRequest(queue_name, name, inputs, wid, priority, dedup, delay, partition,
                          str(on_duplicate), timeout, types)


def step_child_id(parent_id: str, function_id: int, seq: int) -> str:
    """The id of a workflow enqueued by a step or transaction: keyed by the step's position and
    the enqueue's order within it, so a retried attempt enqueues the same workflow."""
    return _codec.derived_id(parent_id, f"-{function_id}.{seq}")


# -- the variants -------------------------------------------------------------------------------


async def insert(runtime: Runtime, req: EnqueueRequest, workflow_id: str, app_version: str,
                 parent_id: str | None, parent_epoch: int | None = None) -> str:
    """Insert the queued workflow; returns the id the handle refers to (``workflow_id``, or with
    ``on_duplicate="return_existing"`` the workflow holding the deduplication id). With
    ``parent_epoch`` (an enqueue by the parent's execution) it raises ``_ExecutionConflict``,
    inserting nothing, when that execution no longer owns the parent."""
    telemetry = runtime.telemetry
    if telemetry is None:
        return await _insert(runtime, req, workflow_id, app_version, parent_id, None,
                             parent_epoch)
    # The enqueue's span: its trace context is stored with the workflow, and the workflow's
    # executions are its children (telemetry).
    with telemetry.span(f"enqueue {req.name}", {WORKFLOW_ID: workflow_id, WORKFLOW_NAME: req.name,
                                               QUEUE_NAME: req.queue_name}, kind="producer"):
        return await _insert(runtime, req, workflow_id, app_version, parent_id,
                             telemetry.traceparent(), parent_epoch)


async def _insert(runtime: Runtime, req: EnqueueRequest, workflow_id: str, app_version: str,
                  parent_id: str | None, traceparent: str | None,
                  parent_epoch: int | None) -> str:
    found = await runtime.store.enqueue_workflow(
        workflow_id, req.name, req.inputs, app_version, parent_id, req.queue_name, req.priority,
        req.deduplication_id, req.delay_seconds, req.partition_key, traceparent,
        req.timeout_seconds, parent_epoch,
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
    pending = after_commit_var.get()
    if pending is not None:
        pending.append(lambda: runtime.waits.wake(QUEUE, queue_name))
    else:
        runtime.waits.wake(QUEUE, queue_name)


async def enqueue_with_id(runtime: Runtime, req: EnqueueRequest, workflow_id: str,
                          app_version: str, parent_id: str | None) -> str:
    """Enqueue outside a workflow body (from outside, a step, or a transaction)."""
    got = await insert(runtime, req, workflow_id, app_version, parent_id)
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
    return await enqueue_with_id(runtime, req, req.workflow_id or secrets.token_hex(16),
                                 version, None)


# -- the Queue object ---------------------------------------------------------------------------


class QueueHost(Protocol):
    """What a queue needs from its app (internal)."""

    _runtime: Runtime | None

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
        workflow is durable (``ENQUEUED``, or ``DELAYED`` for ``delay_seconds``).

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

    def __repr__(self) -> str:
        spec = self.spec
        return (f"Queue({spec.name!r}, concurrency={spec.concurrency!r}, "
                f"worker_concurrency={spec.worker_concurrency!r}, "
                f"rate_limit={spec.rate_limit!r}, "
                f"partition_concurrency={spec.partition_concurrency!r})")
