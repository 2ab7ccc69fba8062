"""Registering workflows, steps and schedules on an app: the decorators, the checks they make at
decoration time, and the app version derived from what is registered. (Transactions are
registered by the app itself: they run on its storage.)"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeAlias, TypeVar

from .. import _codec
from .._engine.context import current_workflow
from .._errors import ConfigurationError, InvalidSettingError, WorkflowNotFoundError
from .._operations.schedules import schedule_spec
from .._primitives.handle import WorkflowHandle
from .._primitives.steps import check_step_options, run_step
from .._signature import Signature
from .._specs import SPEC_ATTR, ScheduleSpec, StepSpec, WorkflowSpec
from .lifecycle import check_positive_int, setting

P = ParamSpec("P")
R = TypeVar("R")

_SPEC_ATTR = SPEC_ATTR
Fn: TypeAlias = Callable[P, Coroutine[Any, Any, R]]


def check_coroutine_function(fn: Any, what: str) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise ConfigurationError(f"@app.{what}() decorates `async def` functions, not {fn!r}")


def registered_name(name: str | None, fn: Any) -> str:
    """The journal name of a decorated function: valid text Postgres stores exactly."""
    chosen = name if name is not None else fn.__qualname__
    return setting(_codec.check_id, chosen, "the registered name")


def _finite(value: object, what: str, minimum: float) -> float:
    """A finite number >= ``minimum`` (retry options)."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value < minimum):
        raise InvalidSettingError(f"{what} must be a finite number >= {minimum}, not {value!r}")
    return float(value)


def workflow_binding(fn: Any) -> tuple[Registrations, WorkflowSpec] | None:
    """The app and spec of a decorated workflow function, if it is one."""
    bound: tuple[Registrations, WorkflowSpec] | None = getattr(fn, _SPEC_ATTR, None)
    return bound


class Registrations:
    """The registration half of :class:`asyncflow.AsyncFlow`, which sets up the registries and
    provides ``_begin`` (start a workflow, or a child inside a workflow: its handle)."""

    _workflows: dict[str, WorkflowSpec]
    _step_names: set[str]
    _schedules: dict[str, ScheduleSpec]
    _app_version: str | None
    _begin: Callable[[WorkflowSpec, tuple[Any, ...], dict[str, Any], str | None, float | None],
                     Coroutine[Any, Any, WorkflowHandle[Any]]]

    # -- registration ---------------------------------------------------------------------------

    def workflow(
        self,
        name: str | None = None,
        *,
        max_recovery_attempts: int = 100,
        timeout_seconds: float | None = None,
        keep_runs: bool = True,
    ) -> Callable[[Fn[P, R]], Fn[P, R]]:
        """Register an ``async def`` workflow.

        Calling the decorated function outside a workflow starts it with a fresh id and awaits
        its result; inside a workflow it runs it as a child workflow (deterministic id).
        ``timeout_seconds``: the default timeout of its runs (see :meth:`start_workflow`).
        ``keep_runs``: when it calls ``asyncflow.continue_as_new``, keep each ended run as a
        linked earlier run with its journal (default; see ``list_workflow_runs``), or drop its
        journal (``False``).
        """

        check_positive_int(max_recovery_attempts, "max_recovery_attempts", 0)
        if not isinstance(keep_runs, bool):
            raise InvalidSettingError(f"keep_runs must be True or False, not {keep_runs!r}")
        default_timeout = setting(_codec.check_workflow_timeout, timeout_seconds,
                                  "timeout_seconds")

        def decorate(fn: Fn[P, R]) -> Fn[P, R]:
            check_coroutine_function(fn, "workflow")
            spec_name = registered_name(name, fn)
            if spec_name in self._workflows and self._workflows[spec_name].fn is not fn:
                raise ConfigurationError(f"a workflow named {spec_name!r} is already registered")
            spec = WorkflowSpec(spec_name, fn, max_recovery_attempts, default_timeout,
                                Signature(fn, f"workflow {spec_name!r}"), keep_runs)
            self._workflows[spec_name] = spec

            @functools.wraps(fn)
            def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
                return self._await_started(self._begin(spec, args, kwargs, None, None))

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
        timeout_seconds: float | None = None,
        should_retry: Callable[[Exception], bool] | None = None,
    ) -> Callable[[Fn[P, R]], Fn[P, R]]:
        """Register an ``async def`` step: inside a workflow it runs once and its result (or
        exception) is checkpointed; failures are retried ``retries`` times with backoff.

        ``timeout_seconds``: an attempt that runs longer is cancelled and fails with
        :class:`StepTimeoutError` (a failed attempt like any other). ``should_retry``: called
        with a failed attempt's exception; the step is retried only if it returns true (and
        retries remain). Both apply inside workflows; outside one a step is a plain call."""
        options = check_step_options(timeout_seconds, should_retry)

        check_positive_int(retries, "retries", 0)
        interval = _finite(retry_interval_seconds, "retry_interval_seconds", 0.0)
        rate = _finite(backoff_rate, "backoff_rate", 0.0)

        def decorate(fn: Fn[P, R]) -> Fn[P, R]:
            check_coroutine_function(fn, "step")
            step_name = registered_name(name, fn)
            spec = StepSpec(step_name, fn, retries, interval, rate, *options,
                            types=Signature(fn, f"step {step_name!r}"))
            self._step_names.add(spec.name)

            @functools.wraps(fn)
            def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
                ctx = current_workflow()
                function_id = ctx.reserve() if ctx is not None else -1
                return run_step(spec, ctx, function_id, args, kwargs)

            return call

        return decorate

    def scheduled(
        self,
        cron: str,
        *,
        name: str | None = None,
        timezone: str = "UTC",
        catch_up: str = "skip",
        queue: str | None = None,
        grace_seconds: float = 10.0,
    ) -> Callable[[Fn[P, R]], Fn[P, R]]:
        """Start a workflow on a cron schedule: one run per tick across all processes.

        ``cron``: 5 fields (minute hour day-of-month month day-of-week) or 6 with **seconds
        first** (``"*/10 * * * * *"``: every 10 seconds), read in ``timezone`` (an IANA name).
        The workflow is called with the tick's time as an ISO 8601 string (in that time zone)
        and gets the id ``"<name>@<tick in UTC>"`` (the name's SHA-256, when it is too long for
        that). Put it above ``@app.workflow(...)`` (a plain
        ``async def`` is registered as a workflow of the schedule's name). ``name`` defaults to
        the workflow's name. Ticks missed while no process ran: ``catch_up="skip"`` runs only
        those at most ``grace_seconds`` late, ``"latest"`` the most recent one, ``"all"`` every
        one (the 1,000 most recent at most). ``queue``: enqueue each run on that registered
        queue instead of starting it here. Needs the ``schedules`` extra (croniter).
        """

        def decorate(fn: Fn[P, R]) -> Fn[P, R]:
            bound = workflow_binding(fn)
            if bound is None:
                fn = self.workflow(name=name)(fn)
                bound = workflow_binding(fn)
            if bound is None or bound[0] is not self:
                raise ConfigurationError(
                    f"@app.scheduled() decorates a workflow of this app, not {fn!r}")
            workflow = bound[1]
            spec = schedule_spec(cron, name if name is not None else workflow.name,
                                 workflow.name, timezone, catch_up, queue, grace_seconds)
            if spec.name in self._schedules:
                raise ConfigurationError(f"a schedule named {spec.name!r} is already registered")
            self._schedules[spec.name] = spec
            return fn

        return decorate

    def _spec_of(self, fn: Any) -> WorkflowSpec:
        bound = workflow_binding(fn)
        if bound is None or bound[0] is not self:
            raise WorkflowNotFoundError(
                f"{getattr(fn, '__qualname__', fn)!r} is not a workflow of this app; decorate it "
                "with @app.workflow() on the app you start it from"
            )
        return bound[1]

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
