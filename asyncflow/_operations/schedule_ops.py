"""Operating schedules from outside workflows — the same from an app and from a Client:
listing, pausing, resuming and triggering every schedule, and the schedules made at runtime
(``create_schedule``, ``delete_schedule``) with their backfills.

A runtime schedule is a row of ``schedules`` marked ``dynamic``: the scheduler of every app
that registers its workflow serves it (reading those rows at each check, woken by NOTIFY kind
``c`` when they change), with the same one-run-per-tick guarantee as ``@app.scheduled``: ticks
are claimed under the row's lock and each tick's workflow has the deterministic id
``"<name>@<tick>"``. A backfill is recorded in the row and run by a scheduler of the schedule
under that lock, with those same ids, so ticks that already ran are skipped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .. import _codec
from .._core.wait import SCHEDULE
from .._engine.runtime import Runtime
from .._errors import InvalidArgumentError, ScheduleConflictError, ScheduleNotFoundError
from .._specs import SPEC_ATTR
from .._storage.store import ScheduleStatus
from .schedules import (
    DEFAULT_GRACE,
    MAX_BACKFILL,
    backfill_ticks,
    schedule_spec,
    spec_of_row,
    tick_workflow_id,
)


def _workflow_name(workflow: object) -> str:
    """The registered name of a workflow function (``@app.workflow``), or a name given."""
    if isinstance(workflow, str):
        return _codec.check_id(workflow, "workflow name")
    bound = getattr(workflow, SPEC_ATTR, None)
    if bound is None:
        raise InvalidArgumentError(
            f"create_schedule needs a workflow function decorated with @app.workflow() or its "
            f"registered name, not {workflow!r}")
    name: str = bound[1].name
    return name


def _queue_name(queue: object) -> str | None:
    if queue is None or isinstance(queue, str):
        return queue
    name = getattr(queue, "name", None)  # an asyncflow.Queue
    if not isinstance(name, str):
        raise InvalidArgumentError(f"queue must be an asyncflow.Queue, a queue name or None, "
                                   f"not {queue!r}")
    return name


def _aware(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidArgumentError(
            f"{what} must be a timezone-aware datetime (e.g. datetime(2026, 1, 1, "
            f"tzinfo=timezone.utc)), not {value!r}")
    return value


def no_schedule(name: str) -> ScheduleNotFoundError:
    """The error for an unknown schedule (one wording everywhere)."""
    return ScheduleNotFoundError(
        f"no schedule named {name!r}; list_schedules() (asyncflow schedule list) shows them, "
        "and an app creates one with @app.scheduled(...) when it launches, or "
        "create_schedule(...) at any time")


class ScheduleOps:
    """Schedule operations (a base of ``Admin``, so of ``AsyncFlow`` and ``Client``)."""

    @property
    def runtime(self) -> Runtime:
        """The running runtime (given by the subclass)."""
        raise NotImplementedError

    async def list_schedules(self) -> list[ScheduleStatus]:
        """Every schedule stored in the database (registered by some app with
        ``@app.scheduled``, or made with :meth:`create_schedule`), by name: its definition,
        whether it is paused, its last tick."""
        return await self.runtime.store.list_schedules()

    async def pause_schedule(self, name: str) -> None:
        """Pause a schedule in every process: no tick starts until it is resumed (a manual
        :meth:`trigger_schedule` still runs). :class:`ScheduleNotFoundError` if there is none."""
        await self._set_paused(name, True)

    async def resume_schedule(self, name: str) -> None:
        """Resume a paused schedule from its next tick on: ticks that came due while it was
        paused are not run, whatever its ``catch_up``."""
        await self._set_paused(name, False)

    async def _set_paused(self, name: str, paused: bool) -> None:
        _codec.check_id(name, "schedule name")
        runtime = self.runtime
        skip_to = None if paused else datetime.fromtimestamp(runtime.now(), UTC)
        if not await runtime.store.set_schedule_paused(name, paused, skip_to):
            raise no_schedule(name)
        runtime.waits.wake(SCHEDULE, name)  # this process's scheduler (NOTIFY: the others)

    async def trigger_schedule(self, name: str) -> str:
        """Start a run of a schedule now, outside its ticks (also while it is paused): a live
        app serving the schedule starts it at once. Returns the run's workflow id,
        ``"<name>@manual-<time>"`` (``retrieve_workflow`` it once it has started). Triggers
        made before a scheduler picked the first one up share its run."""
        _codec.check_id(name, "schedule name")
        runtime = self.runtime
        at = await runtime.store.trigger_schedule(name, datetime.fromtimestamp(runtime.now(),
                                                                               UTC))
        if at is None:
            raise no_schedule(name)
        runtime.waits.wake(SCHEDULE, name)
        return tick_workflow_id(name, at, manual=True)

    # -- schedules made at runtime ------------------------------------------------------------

    async def create_schedule(
        self,
        name: str,
        workflow: Any,
        cron: str,
        *,
        timezone: str = "UTC",
        catch_up: str = "skip",
        queue: Any = None,
        grace_seconds: float = DEFAULT_GRACE,
    ) -> ScheduleStatus:
        """Create a schedule now, in the database: every live app that registers the workflow
        serves it, and exactly one run starts per tick across all of them (the same guarantee
        as ``@app.scheduled``), each with the tick's time (ISO 8601, in ``timezone``) as its
        argument and the id ``"<name>@<tick in UTC>"``. ``workflow``: the ``@app.workflow``
        function or its registered name. ``cron``, ``timezone``, ``catch_up``,
        ``grace_seconds`` and ``queue`` (an :class:`asyncflow.Queue` or its name: the runs are
        enqueued on it) mean what they mean for ``@app.scheduled``. The first tick is the
        first one after the call.

        Creating a name made this way again replaces its definition (its paused flag, last
        tick and pending backfills are kept). A name ``@app.scheduled`` registers is refused
        (:class:`ScheduleConflictError`). Bad settings raise :class:`InvalidSettingError`;
        nothing is written then."""
        workflow_name = _workflow_name(workflow)
        spec = schedule_spec(cron, name, workflow_name, timezone, catch_up, _queue_name(queue),
                             grace_seconds)
        store = self.runtime.store
        if not await store.create_schedule(spec.name, spec.workflow_name, spec.cron,
                                           spec.timezone, spec.catch_up, spec.queue_name,
                                           spec.grace_seconds):
            raise ScheduleConflictError(
                f"schedule {spec.name!r} is registered by @app.scheduled; change it there, or "
                "create this one under another name")
        self.runtime.waits.wake(SCHEDULE, "")  # this process's scheduler (NOTIFY: the others)
        found = await store.get_schedule(spec.name)
        if found is None:  # deleted at once by another caller
            raise no_schedule(spec.name)
        return found

    async def delete_schedule(self, name: str) -> None:
        """Delete a schedule made with :meth:`create_schedule`: no new tick of it starts
        anywhere from now on. Runs already started go on, and the ticks already asked for by
        :meth:`backfill_schedule` or :meth:`trigger_schedule` still start (an app serving it
        starts them; the schedule is gone from every list at once).
        :class:`ScheduleNotFoundError` if there is none; one registered by ``@app.scheduled`` is
        refused (:class:`ScheduleConflictError`: remove the decorator, or
        :meth:`pause_schedule` it)."""
        _codec.check_id(name, "schedule name")
        deleted = await self.runtime.store.delete_schedule(name)
        if deleted is None:
            raise no_schedule(name)
        if not deleted:
            raise ScheduleConflictError(
                f"schedule {name!r} is registered by @app.scheduled and would be registered "
                "again at the next launch; remove the decorator, or pause_schedule it")
        self.runtime.waits.wake(SCHEDULE, "")

    async def backfill_schedule(self, name: str, start: datetime, end: datetime) -> list[str]:
        """Run every tick of a schedule from ``start`` (inclusive) to ``end`` (exclusive) —
        ticks missed while no app ran it, or from before it existed. Each run has its tick's
        id, ``"<name>@<tick>"``, so a tick that already ran (or is already backfilled) is
        skipped, never run twice (while its workflow is kept: one removed by retention or
        ``delete_workflow`` runs again). A live app serving the schedule starts them (at once, also
        while the schedule is paused); returns their ids, oldest first.

        ``start`` and ``end`` are timezone-aware datetimes; ``end`` before ``start``, or a
        range of more than :data:`MAX_BACKFILL` (10,000) ticks, raises
        :class:`InvalidArgumentError`, and an unknown schedule
        :class:`ScheduleNotFoundError`: nothing is written then."""
        _codec.check_id(name, "schedule name")
        start = _aware(start, "start")
        end = _aware(end, "end")
        if end < start:
            raise InvalidArgumentError(
                f"backfill_schedule({name!r}): end ({end.isoformat()}) is before start "
                f"({start.isoformat()}); pass the earlier time first")
        store = self.runtime.store
        row = await store.get_schedule(name)
        if row is None:
            raise no_schedule(name)
        ticks = backfill_ticks(spec_of_row(row), start, end, MAX_BACKFILL)
        if ticks is None:
            raise InvalidArgumentError(
                f"backfill_schedule({name!r}): more than {MAX_BACKFILL} ticks from "
                f"{start.isoformat()} to {end.isoformat()}; backfill shorter ranges")
        if ticks:
            if not await store.backfill_schedule(name, start.astimezone(UTC),
                                                 end.astimezone(UTC)):
                raise no_schedule(name)
            self.runtime.waits.wake(SCHEDULE, name)
        return [tick_workflow_id(name, tick) for tick in ticks]
