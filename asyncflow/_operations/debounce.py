"""Debouncing: many calls with one key within a quiet period start one workflow, with the
latest arguments, once the calls stop (or at the latest ``max_wait_seconds`` after the first).

Built on DELAYED queue entries: a burst is one ``DELAYED`` row of the debouncer's queue,
marked with its key (``debounce_key``). Each call is one statement (``Store.debounce``): it
gives the burst's row the new arguments and pushes its time ``period_seconds`` on (never past
``max_wait_seconds`` after the burst's first call), or inserts the row that starts a burst. A
partial unique index admits one DELAYED row per (queue, workflow, key), so the calls of every
process find the same row: exactly one workflow per burst. When its time comes a dispatcher of
the queue claims it like any DELAYED workflow (its timer is the claim's deadline: no polling);
from then on it is no longer DELAYED, and the next call starts the next burst. A claim and a
call meeting on the row are serialized by its lock: either the call lands first (the claim
skips the row, now due later) or the claim does (the call starts a new burst).

In a workflow body a call is journaled (the burst's id is recorded, a replay returns it); in
a step or outside workflows it is a plain call (a retried step's call only extends its burst).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

from .. import _codec
from .._engine.context import current_workflow
from .._engine.journal import begin, record
from .._engine.runner import child_id
from .._engine.runtime import Runtime
from .._errors import InvalidArgumentError, InvalidSettingError
from .._primitives.handle import WorkflowHandle
from .._specs import WorkflowSpec
from .queues import QueueHost, wake_queue

R = TypeVar("R")

DEBOUNCE = "asyncflow.debounce"
#: The queue a debouncer uses when none is given (registered by ``app.debouncer``).
DEFAULT_QUEUE = "asyncflow.debounce"
_YEAR = 365 * 24 * 3600.0


def _seconds(value: object, what: str, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 < value <= _YEAR):
        raise InvalidSettingError(
            f"{what} must be a number of seconds > 0 (at most a year)"
            f"{' or None' if optional else ''}, not {value!r}")
    return float(value)


class Debouncer(Generic[R]):
    """Debounces starts of one workflow function: made with ``app.debouncer(fn, key=...,
    period_seconds=...)``, used with ``await debouncer.debounce(*args, **kwargs)``.

    Calls with the same key less than ``period_seconds`` apart form a burst, which starts
    **one** workflow with the arguments of its latest call, ``period_seconds`` after that call
    — or ``max_wait_seconds`` after the burst's first call, whichever is earlier (``None``: no
    cap). Every call of a burst returns a handle to that workflow. Exact across processes.
    The workflow waits as a ``DELAYED`` workflow of ``queue`` and runs on the processes
    serving that queue (and registering the function).
    """

    __slots__ = ("_host", "_key", "max_wait_seconds", "period_seconds", "queue_name", "spec")

    def __init__(self, host: QueueHost, spec: WorkflowSpec, key: str | Callable[..., str],
                 period_seconds: object, max_wait_seconds: object, queue_name: str) -> None:
        if isinstance(key, str):
            _codec.check_id(key, "debounce key")
        elif not callable(key):
            raise InvalidSettingError(
                f"key must be a str or a function of the call's arguments returning one, not "
                f"{key!r}")
        period = _seconds(period_seconds, "period_seconds", optional=False)
        assert period is not None
        self.spec = spec
        self._host = host
        self._key = key
        self.period_seconds = period
        self.max_wait_seconds = _seconds(max_wait_seconds, "max_wait_seconds", optional=True)
        self.queue_name = queue_name

    def key_of(self, *args: Any, **kwargs: Any) -> str:
        """The key of a call with these arguments."""
        key = self._key(*args, **kwargs) if callable(self._key) else self._key
        return _codec.check_id(key, "debounce key")

    def debounce(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]:
        """Call the workflow with these arguments, debounced: returns (when awaited) the handle
        of the workflow of this call's burst, which runs with the latest call's arguments
        once the burst is quiet for ``period_seconds`` (or ``max_wait_seconds`` after it
        began). The arguments are checked and encoded at the call (bad ones raise and write
        nothing)."""
        key = self.key_of(*args, **kwargs)
        types = self.spec.types
        if types is not None:
            inputs = types.encode_inputs(args, kwargs)
        else:  # pragma: no cover - every registered workflow has a signature
            inputs = _codec.dumps({"args": list(args), "kwargs": kwargs}, "the arguments")
        host = self._host
        runtime = host._runtime
        ctx = current_workflow(runtime) if runtime is not None else None
        if ctx is not None:
            return self._journaled(ctx.runtime, ctx, ctx.reserve(), key, inputs)
        return self._plain(key, inputs)

    async def _plain(self, key: str, inputs: str) -> WorkflowHandle[R]:
        runtime = self._host.runtime  # raises NotLaunchedError when not running
        return self._handle(await self._call(runtime, key, inputs, secrets.token_hex(16)))

    async def _journaled(self, runtime: Runtime, ctx: Any, function_id: int, key: str,
                         inputs: str) -> WorkflowHandle[R]:
        recorded = await begin(ctx, function_id, DEBOUNCE)
        if recorded is not None:
            assert recorded.child_id is not None
            return self._handle(recorded.child_id)
        got = await self._call(runtime, key, inputs, child_id(ctx.workflow_id, function_id))
        await record(ctx, function_id, DEBOUNCE, child_id=got)
        return self._handle(got)

    async def _call(self, runtime: Runtime, key: str, inputs: str, new_id: str) -> str:
        workflow_id, created = await runtime.store.debounce(
            self.queue_name, self.spec.name, key, new_id, inputs, self.period_seconds,
            self.max_wait_seconds, self._host.app_version,
            timeout_seconds=self.spec.timeout_seconds)
        if created:
            wake_queue(runtime, self.queue_name)  # this process's dispatcher sets its timer
        return workflow_id

    def _handle(self, workflow_id: str) -> WorkflowHandle[R]:
        handle: WorkflowHandle[R] = self._host._handle(workflow_id, self.spec.types)
        return handle

    def __repr__(self) -> str:
        return (f"Debouncer({self.spec.name!r}, period_seconds={self.period_seconds!r}, "
                f"max_wait_seconds={self.max_wait_seconds!r}, queue={self.queue_name!r})")


class DebounceHost(QueueHost, Protocol):
    """What ``make_debouncer`` needs from its app (internal)."""

    _queues: dict[str, Any]

    def queue(self, name: str) -> Any: ...


def make_debouncer(host: DebounceHost, fn: Any, key: Any, period_seconds: object,
                   max_wait_seconds: object, queue: object) -> Debouncer[Any]:
    """``app.debouncer``: validate, and register the default queue when ``queue`` is None."""
    spec = host._spec_of(fn)
    found = DEFAULT_QUEUE if queue is None else getattr(queue, "name", None)
    if isinstance(queue, str) or not isinstance(found, str) or (
            queue is not None and found not in host._queues):
        raise InvalidArgumentError(
            f"queue must be an asyncflow.Queue registered on this app (app.queue(name)), "
            f"or None, not {queue!r}")
    name: str = found
    debouncer: Debouncer[Any] = Debouncer(host, spec, key, period_seconds, max_wait_seconds,
                                          name)
    if name not in host._queues:  # the default queue, on first use
        host.queue(name)
    return debouncer
