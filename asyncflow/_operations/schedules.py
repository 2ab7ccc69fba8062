"""Schedules: cron-driven workflow starts, exactly one per tick across every process.

``@app.scheduled(cron, ...)`` registers a :class:`ScheduleSpec`; at launch its row in
``schedules`` is created (or its definition updated), and the app's :class:`Scheduler` serves
every schedule the app registers. The scheduler is one more wait on the one wait primitive: its
check, per schedule, runs one short transaction that locks the schedule's row, works out the due
ticks from ``last_tick`` and the runtime clock (``Runtime.now()``, so ``skip_timers`` moves
schedules too), starts the workflows of the ticks it runs — each with the id
``"<schedule>@<tick in UTC, ISO 8601>"``, so a start that happened already is a no-op — and
moves ``last_tick`` forward. The row's lock serializes the schedulers of all processes, and the
moved ``last_tick`` tells the next one that those ticks are taken. The workflows commit with the
transaction; the scheduler runs them after the commit (if it dies first, they are PENDING rows
of a dead executor, and recovery runs them). Then it parks until the next tick (a real
deadline) or a wake-up: kind ``c`` (a schedule was paused, resumed or triggered), or the
listener's reconnect. No polling.

Missed ticks (no process ran the schedule for a while): ``catch_up="skip"`` starts only ticks at
most ``grace_seconds`` late, ``"latest"`` the most recent one, ``"all"`` every one, up to the
:data:`MAX_CATCH_UP` most recent (older ones are skipped, and logged). The cron expressions are
read by ``croniter`` (the ``schedules`` extra); one that no date matches (Feb 31) is refused at
decoration. One schedule failing to advance is reported through health and retried with
backoff on its own: it never holds up the app's other schedules.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Container
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import anyio.abc

from .. import _codec
from .._core.health import Monitor
from .._core.wait import (
    DEADLINE,
    NOT_YET,
    QUEUE,
    SCHEDULE,
    STARTED,
    Key,
    Wait,
    Waiter,
    _NotYet,
    wait,
)
from .._engine.runner import Runner
from .._errors import ConfigurationError, InvalidArgumentError, InvalidSettingError
from .._primitives.timers import loop_deadline
from .._specs import ScheduleSpec, WorkflowSpec
from .._storage.store import ScheduleStatus

logger = logging.getLogger("asyncflow")

CATCH_UP = ("skip", "all", "latest")
#: ``catch_up="all"`` starts at most this many missed ticks (the most recent ones).
MAX_CATCH_UP = 1000
MANUAL = "manual"
#: ``grace_seconds`` of a schedule when none is given.
DEFAULT_GRACE = 10.0
#: A backfill runs at most this many ticks (a longer range is refused at the call).
MAX_BACKFILL = 10_000


def _croniter() -> Any:
    try:
        from croniter import croniter
    except ImportError:  # pragma: no cover - the extra is installed in development
        raise ConfigurationError(
            "schedules need the croniter package: pip install 'asyncflow-pg[schedules]'"
        ) from None
    return croniter


def schedule_spec(
    cron: object, name: str, workflow_name: str, timezone: object, catch_up: object,
    queue_name: object, grace_seconds: object,
) -> ScheduleSpec:
    """Validate a schedule's settings (:class:`InvalidSettingError` when one is bad)."""
    croniter = _croniter()
    try:
        checked_name = _codec.check_id(name, "schedule name")
        queue = None if queue_name is None else _codec.check_id(queue_name, "queue")
        grace = _codec.check_timeout(grace_seconds, "grace_seconds")
    except InvalidArgumentError as exc:
        raise InvalidSettingError(str(exc)) from None
    if not isinstance(cron, str) or len(cron.split()) not in (5, 6) or not croniter.is_valid(
            cron, second_at_beginning=True):
        raise InvalidSettingError(
            f"not a cron expression: {cron!r}; use 5 fields (minute hour day month weekday, "
            "e.g. '*/5 * * * *') or 6 with seconds first (e.g. '*/10 * * * * *')")
    if not isinstance(timezone, str):
        raise InvalidSettingError(f"timezone must be an IANA name like 'UTC' or "
                                  f"'Europe/Paris', not {timezone!r}")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSettingError(f"unknown time zone {timezone!r}; use an IANA name like "
                                  "'UTC' or 'Europe/Paris'") from None
    if catch_up not in CATCH_UP:
        raise InvalidSettingError(
            f"catch_up must be 'skip', 'all' or 'latest', not {catch_up!r}")
    spec = ScheduleSpec(checked_name, workflow_name, " ".join(cron.split()), timezone,
                        str(catch_up), queue, grace)
    now = datetime.now(UTC)
    try:  # valid syntax that matches no date (Feb 31) has neither a next nor a last tick
        next_tick(spec, now)
        next(_ticks(spec, now, backwards=True))
    except Exception as exc:  # croniter's CroniterBadDateError, or any other failure
        raise InvalidSettingError(
            f"cron expression {cron!r} never fires (no date matches it: {exc}); check its "
            "day of month against its month") from None
    return spec


def _ticks(spec: ScheduleSpec, start: datetime, *, backwards: bool) -> Any:
    croniter = _croniter()
    local = start.astimezone(ZoneInfo(spec.timezone))
    it = croniter(spec.cron, local, second_at_beginning=len(spec.cron.split()) == 6)
    step = it.get_prev if backwards else it.get_next
    while True:
        yield step(datetime).astimezone(UTC)


def next_tick(spec: ScheduleSpec, after: datetime) -> datetime:
    """The first tick of the schedule after ``after``."""
    tick: datetime = next(_ticks(spec, after, backwards=False))
    return tick


def due_ticks(spec: ScheduleSpec, last: datetime, now: datetime) -> tuple[list[datetime],
                                                                           datetime | None]:
    """The ticks in ``(last, now]`` the schedule starts (oldest first), per its catch-up
    policy, and the latest tick in that range (``None``: none), which becomes ``last_tick``."""
    found: list[datetime] = []
    latest: datetime | None = None
    for tick in _ticks(spec, now, backwards=True):
        if tick <= last:
            break
        if latest is None:
            latest = tick
        if spec.catch_up == "latest":
            found.append(tick)
            break
        if spec.catch_up == "skip" and (now - tick).total_seconds() > spec.grace_seconds:
            break
        if len(found) >= MAX_CATCH_UP:
            logger.warning("schedule %s missed more than %d ticks; the older ones are skipped",
                           spec.name, MAX_CATCH_UP)
            break
        found.append(tick)
    found.reverse()
    return found, latest


def backfill_ticks(spec: ScheduleSpec, start: datetime, end: datetime,
                   limit: int) -> list[datetime] | None:
    """The schedule's ticks in ``[start, end)``, oldest first; ``None`` when there are more
    than ``limit``."""
    found: list[datetime] = []
    if end <= start:
        return found
    for tick in _ticks(spec, start - timedelta(seconds=1), backwards=False):
        if tick >= end:
            break
        if tick < start:
            continue
        if len(found) >= limit:
            return None
        found.append(tick)
    return found


def spec_of_row(row: ScheduleStatus) -> ScheduleSpec:
    """The definition of a schedule made with ``create_schedule``, as stored."""
    grace = row.grace_seconds if row.grace_seconds is not None else DEFAULT_GRACE
    return ScheduleSpec(row.name, row.workflow_name, row.cron, row.timezone, row.catch_up,
                        row.queue_name, grace)


def tick_workflow_id(schedule: str, tick: datetime, manual: bool = False) -> str:
    """The id of the workflow a schedule starts for a tick (or a manual trigger); with a name
    too long for that, the name's SHA-256 stands for it (like a child's id)."""
    stamp = tick.astimezone(UTC).isoformat()
    return _codec.derived_id(schedule, f"@{MANUAL}-{stamp}" if manual else f"@{stamp}")


class Scheduler:
    """Starts the workflows of the schedules of one app, one per tick across all processes:
    those it registers with ``@app.scheduled``, and those made with ``create_schedule`` whose
    workflow it registers (read again at each check; key ``(c, "")`` wakes it when they
    change)."""

    def __init__(self, runner: Runner, schedules: dict[str, ScheduleSpec],
                 specs: dict[str, WorkflowSpec]) -> None:
        self._runner = runner
        self._schedules = schedules
        self._specs = specs
        #: The runtime schedules this app serves, as last read.
        self._dynamic: dict[str, ScheduleSpec] = {}
        self.monitor = Monitor("scheduler")
        self.monitor.ok()
        self.started = 0
        #: Schedules whose last advance failed: the backoff before the next try, by name.
        self._retry_delays: dict[str, float] = {}

    async def register(self) -> None:
        """Create or update the rows of this app's schedules (at launch)."""
        store = self._runner.runtime.store
        for spec in self._schedules.values():
            await store.upsert_schedule(spec.name, spec.workflow_name, spec.cron, spec.timezone,
                                        spec.catch_up, spec.queue_name)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Start ticks until the app shuts down; failures are reported through health and
        retried with backoff."""
        waits = self._runner.runtime.waits
        loop = asyncio.get_running_loop()
        task_status.started()
        delay = 0.05
        while True:
            # The keys of the schedules served now; a check that finds the runtime schedules
            # changed ends the wait, and the next one waits on their keys.
            keys: tuple[Key, ...] = ((SCHEDULE, ""), *(
                (SCHEDULE, name) for name in [*self._schedules, *self._dynamic]))
            try:
                await wait(Wait(waits, keys, self._check, background=True))
                delay = 0.05
            except Exception as exc:  # a database error: report, back off, retry
                self.monitor.failed(exc)
                with waits.watch(*keys) as woken:
                    await woken.wait_until(loop.time() + delay)
                delay = min(delay * 2, 5.0)

    async def _check(self, waiter: Waiter) -> int | _NotYet:
        runtime = self._runner.runtime
        nearest = math.inf
        healthy = True
        try:
            changed = await self._load_dynamic()
        except Exception as exc:
            self.monitor.failed(exc)
            changed, healthy = False, False
            nearest = runtime.now() + self._retry_delays.setdefault("", 0.05)
            self._retry_delays[""] = min(self._retry_delays[""] * 2, 5.0)
        for spec in [*self._schedules.values(), *self._dynamic.values()]:
            # One schedule's failure is its own: reported, retried with backoff, and the
            # others advance all the same.
            try:
                upcoming = await self.advance(spec)
            except Exception as exc:
                healthy = False
                self.monitor.failed(exc)
                delay = self._retry_delays.get(spec.name, 0.05)
                self._retry_delays[spec.name] = min(delay * 2, 5.0)
                nearest = min(nearest, runtime.now() + delay)
                continue
            self._retry_delays.pop(spec.name, None)
            if upcoming is not None:
                nearest = min(nearest, upcoming.timestamp())
        if healthy:
            self.monitor.ok()
            self._retry_delays.pop("", None)
        if changed:
            return 1  # wait again, on the keys of the schedules served now
        waiter.deadline = None if nearest == math.inf else loop_deadline(runtime, nearest)
        return NOT_YET

    async def _load_dynamic(self) -> bool:
        """Read the runtime schedules this app serves; whether their names changed."""
        rows = await self._runner.runtime.store.dynamic_schedules(list(self._specs))
        found = {row.name: spec_of_row(row) for row in rows if row.name not in self._schedules}
        changed = found.keys() != self._dynamic.keys()
        self._dynamic = found
        return changed

    async def advance(self, spec: ScheduleSpec) -> datetime | None:
        """Start the due ticks (and a manual trigger) of one schedule; returns when its next
        tick is due (``None``: paused)."""
        runtime = self._runner.runtime
        store = runtime.store
        now = datetime.fromtimestamp(runtime.now(), UTC)
        created: list[tuple[str, str]] = []  # (workflow id, inputs)
        async with store.storage.transaction():
            row = await store.lock_schedule(spec.name)
            if row is None:
                if spec.name not in self._schedules:  # a runtime schedule, deleted
                    self._dynamic.pop(spec.name, None)
                    return None
                await self.register()  # deleted behind our back: register it again
                row = await store.lock_schedule(spec.name)
                assert row is not None
            if row.dynamic and spec.name not in self._schedules:
                spec = spec_of_row(row)  # its definition as of now (create_schedule may
                # have changed it since the check read it)
                if spec.workflow_name not in self._specs:
                    return None  # now starts a workflow this app does not register
            runs: list[tuple[str, datetime]] = []
            if row.triggered_at is not None:
                runs.append((tick_workflow_id(spec.name, row.triggered_at, True),
                             row.triggered_at))
            for start, end in row.backfills:
                ticks = backfill_ticks(spec, start, end, MAX_BACKFILL) or []
                runs.extend((tick_workflow_id(spec.name, tick), tick) for tick in ticks)
            latest: datetime | None = None
            if not row.paused:
                if row.last_tick is None:  # a new schedule starts from now on
                    latest = next(_ticks(spec, now, backwards=True))
                else:
                    ticks, latest = due_ticks(spec, row.last_tick, now)
                    runs.extend((tick_workflow_id(spec.name, tick), tick) for tick in ticks)
            for workflow_id, tick in runs:
                inputs = await self._start(spec, workflow_id, tick)
                if inputs is not None:
                    created.append((workflow_id, inputs))
            if latest is not None or row.triggered_at is not None or row.backfills:
                await store.advance_schedule(spec.name, latest or row.last_tick or now,
                                             row.triggered_at is not None,
                                             bool(row.backfills))
        self._after_commit(spec, created)
        return None if row.paused else next_tick(spec, now)

    async def _start(self, spec: ScheduleSpec, workflow_id: str,
                     tick: datetime) -> str | None:
        """Insert the workflow of a tick (in the claim's transaction); its inputs if it is new
        (``None``: it exists already)."""
        runner = self._runner
        store = runner.runtime.store
        workflow = self._specs[spec.workflow_name]
        scheduled_at = tick.astimezone(ZoneInfo(spec.timezone)).isoformat()
        inputs = _codec.dumps({"args": [scheduled_at], "kwargs": {}}, "a schedule's tick")
        timeout = workflow.timeout_seconds
        if spec.queue_name is not None:
            found = await store.enqueue_workflow(
                workflow_id, workflow.name, inputs, runner.app_version, None, spec.queue_name,
                0, None, 0.0, None, timeout_seconds=timeout)
            return inputs if found.created else None
        deadline = None if timeout is None else runner.runtime.now() + timeout
        created, _name = await store.insert_workflow(
            workflow_id, workflow.name, inputs, runner.runtime.executor_id, runner.app_version,
            None, None, timeout, deadline)
        return inputs if created else None

    def _after_commit(self, spec: ScheduleSpec, created: list[tuple[str, str]]) -> None:
        runner = self._runner
        waits = runner.runtime.waits
        if not created:
            return
        self.started += len(created)
        if spec.queue_name is not None:
            waits.wake(QUEUE, spec.queue_name)
            return
        workflow = self._specs[spec.workflow_name]
        for workflow_id, inputs in created:
            waits.wake(STARTED, workflow_id)
            runner.spawn(workflow_id, workflow, inputs, fresh=True, epoch=1)
        if workflow.timeout_seconds is not None:
            waits.wake(DEADLINE, "")


async def start_scheduler(runner: Runner, schedules: dict[str, ScheduleSpec],
                          specs: dict[str, WorkflowSpec], queues: Container[str]) -> Scheduler:
    """At launch: check that the app's schedules enqueue on queues it registers, store them,
    and run the app's scheduler in its task group — also without ``@app.scheduled``: it
    serves the runtime schedules of the app's workflows."""
    for spec in schedules.values():
        if spec.queue_name is not None and spec.queue_name not in queues:
            raise ConfigurationError(
                f"schedule {spec.name!r} enqueues on queue {spec.queue_name!r}, which this app "
                "does not register; register it with app.queue(name) first")
    runtime = runner.runtime
    scheduler = Scheduler(runner, schedules, specs)
    runtime.monitors[scheduler.monitor.name] = scheduler.monitor
    await scheduler.register()
    await runtime.tg.start(scheduler.run)
    return scheduler
