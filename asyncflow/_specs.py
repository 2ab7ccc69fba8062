"""What the decorators register: workflow, step and transaction specifications."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._signature import Signature

#: The attribute of a decorated workflow function holding ``(app, WorkflowSpec)``.
SPEC_ATTR = "__asyncflow_workflow__"


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """A registered workflow function."""

    name: str
    fn: Callable[..., Awaitable[Any]]
    max_recovery_attempts: int
    #: The default timeout of its runs (``None``: none): see ``@app.workflow(timeout_seconds=)``.
    timeout_seconds: float | None = None
    #: Decoders of its parameters and result, by annotation (``None``: plain JSON).
    types: Signature | None = None
    #: Whether a run that continues as new is kept as a linked earlier run (with its journal),
    #: or its journal dropped: see ``@app.workflow(keep_runs=)``.
    keep_runs: bool = True


@dataclass(frozen=True, slots=True)
class StepSpec:
    """A registered step."""

    name: str
    fn: Callable[..., Awaitable[Any]]
    retries: int
    retry_interval_seconds: float
    backoff_rate: float
    #: Each attempt is cancelled after this many seconds (``None``: no limit).
    timeout_seconds: float | None = None
    #: Called with a failed attempt's exception: retry only if it returns True (``None``: always).
    should_retry: Callable[[Exception], bool] | None = None
    #: Decoder of its result, by annotation (``None``: plain JSON).
    types: Signature | None = None


@dataclass(frozen=True, slots=True)
class TransactionSpec:
    """A registered transaction."""

    name: str
    fn: Callable[..., Awaitable[Any]]
    isolation: str | None
    max_retries: int = 20
    #: Decoder of its result, by annotation (``None``: plain JSON).
    types: Signature | None = None


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A registered queue's limits (``None``: no limit); ``rate_limit`` is
    ``(starts, per_seconds)``."""

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate_limit: tuple[int, float] | None = None
    partition_concurrency: int | None = None

    @property
    def bounds_running(self) -> bool:
        """Whether a workflow of this queue ending can let another one start."""
        return (self.concurrency is not None or self.worker_concurrency is not None
                or self.partition_concurrency is not None)


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A registered schedule: which workflow it starts, on which cron expression (5 fields, or
    6 with seconds first) in which time zone, what it does with ticks missed while no process
    ran it (``catch_up``: ``"skip"``, ``"all"`` or ``"latest"``; ``grace_seconds``: how late a
    tick may still start under ``"skip"``), and the queue it enqueues on (``None``: started
    directly by the scheduler's process)."""

    name: str
    workflow_name: str
    cron: str
    timezone: str
    catch_up: str
    queue_name: str | None
    grace_seconds: float
