"""The store's statements for time-driven work: workflow deadlines (``_operations.deadlines``) and
schedules (``_operations.schedules``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .base import StoreBase
from .sql import deadlines, schedules


@dataclass(frozen=True, slots=True)
class ScheduleStatus:
    """A schedule's stored state, as ``list_schedules`` reports it: its definition (``cron``,
    ``timezone``, ``catch_up``, ``queue_name``, the ``workflow_name`` it starts), whether it is
    ``paused``, ``last_tick`` (the latest tick started or skipped; ``None`` before its first)
    and ``triggered_at`` (a manual trigger not started yet)."""

    name: str
    workflow_name: str
    cron: str
    timezone: str
    catch_up: str
    queue_name: str | None
    paused: bool
    last_tick: datetime | None
    triggered_at: datetime | None
    updated_at: datetime
    #: Made with ``create_schedule`` (``False``: registered by ``@app.scheduled``).
    dynamic: bool = False
    #: How late a tick may still start under ``catch_up="skip"`` (``None``: set by the
    #: decorator of the app serving it).
    grace_seconds: float | None = None
    #: Backfill ranges ``(start, end)`` asked for and not run yet.
    backfills: tuple[tuple[datetime, datetime], ...] = ()

    @classmethod
    def from_row(cls, row: Any) -> ScheduleStatus:
        """Build from a database row (internal)."""
        return cls(row["schedule_name"], row["workflow_name"], row["cron"], row["timezone"],
                   row["catch_up"], row["queue_name"], row["paused"], row["last_tick"],
                   row["triggered_at"], row["updated_at"], row["dynamic"],
                   row["grace_seconds"],
                   tuple(zip(row["backfill_starts"], row["backfill_ends"], strict=True)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (timestamps as ISO 8601 strings)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        out["backfills"] = [[start.isoformat(), end.isoformat()]
                            for start, end in self.backfills]
        return out


class ScheduleStatements(StoreBase):
    """Deadlines of workflows with a timeout, and the state of schedules."""

    __slots__ = ()

    # -- deadlines ------------------------------------------------------------------------------

    async def next_deadline(self) -> float | None:
        """The nearest deadline (runtime-clock seconds) of a workflow not ended yet."""
        found: float | None = await self.storage.fetchval(deadlines.NEXT_DEADLINE)
        return found

    async def enforce_deadlines(
        self, now: float, batch: int
    ) -> list[tuple[str, str | None]]:
        """Cancel up to ``batch`` workflows whose deadline is at or before ``now`` (recording a
        WorkflowTimeoutError) and notify them; returns ``(workflow id, queue name)`` of each."""
        rows = await self.storage.fetch(deadlines.ENFORCE_DEADLINES, now, batch, self.channel)
        return [(row["workflow_id"], row["queue_name"]) for row in rows]

    async def set_deadline(self, workflow_id: str, timeout_seconds: float,
                           deadline: float, epoch: int) -> bool:
        """Give a running workflow (owned at ``epoch``) without a deadline one (and notify the
        enforcers)."""
        row = await self.storage.fetchrow(deadlines.SET_DEADLINE, workflow_id, timeout_seconds,
                                          deadline, self.channel, epoch)
        return bool(row is not None and row["updated"])

    # -- schedules ------------------------------------------------------------------------------

    async def upsert_schedule(self, name: str, workflow_name: str, cron: str, timezone: str,
                              catch_up: str, queue_name: str | None) -> None:
        """Store a schedule's definition (its paused flag and last tick are kept)."""
        await self.storage.execute(schedules.UPSERT_SCHEDULE, name, workflow_name, cron, timezone,
                                   catch_up, queue_name)

    async def list_schedules(self) -> list[ScheduleStatus]:
        """Every stored schedule, by name."""
        rows = await self.storage.fetch(schedules.LIST_SCHEDULES)
        return [ScheduleStatus.from_row(row) for row in rows]

    async def get_schedule(self, name: str) -> ScheduleStatus | None:
        """One stored schedule, or ``None``."""
        row = await self.storage.fetchrow(schedules.GET_SCHEDULE, name)
        return None if row is None else ScheduleStatus.from_row(row)

    async def set_schedule_paused(self, name: str, paused: bool,
                                  skip_to: datetime | None) -> bool:
        """Pause or resume a schedule (with ``skip_to``, its last tick moves forward to it) and
        wake every scheduler; False if there is no such schedule."""
        row = await self.storage.fetchrow(schedules.SET_SCHEDULE_PAUSED, name, paused, skip_to,
                                          self.channel)
        return bool(row is not None and row["updated"])

    async def lock_schedule(self, name: str) -> ScheduleStatus | None:
        """Lock and read a schedule's row (inside ``storage.transaction()``)."""
        row = await self.storage.fetchrow(schedules.LOCK_SCHEDULE, name)
        return None if row is None else ScheduleStatus.from_row(row)

    async def advance_schedule(self, name: str, last_tick: datetime,
                               clear_trigger: bool, clear_backfills: bool = False) -> None:
        """Move a schedule's last tick forward (never back); forget its manual trigger and
        its backfills once they ran. A deleted schedule's row (whose asked-for ticks just
        started) is removed instead, and every scheduler woken."""
        await self.storage.execute(schedules.ADVANCE_SCHEDULE, name, last_tick, clear_trigger,
                                   clear_backfills, self.channel)

    async def dynamic_schedules(self, workflow_names: list[str]) -> list[ScheduleStatus]:
        """The schedules made with ``create_schedule`` that start one of ``workflow_names``."""
        rows = await self.storage.fetch(schedules.DYNAMIC_SCHEDULES, workflow_names)
        return [ScheduleStatus.from_row(row) for row in rows]

    async def create_schedule(self, name: str, workflow_name: str, cron: str, timezone: str,
                              catch_up: str, queue_name: str | None,
                              grace_seconds: float) -> bool:
        """Store a runtime schedule (or a new definition of one) and wake every scheduler;
        False: the name belongs to an ``@app.scheduled`` schedule (nothing written)."""
        stored: int = await self.storage.fetchval(
            schedules.CREATE_SCHEDULE, name, workflow_name, cron, timezone, catch_up, queue_name,
            grace_seconds, self.channel)
        return stored > 0

    async def delete_schedule(self, name: str) -> bool | None:
        """Delete a runtime schedule and wake every scheduler: True; None: there is no such
        schedule; False: it is an ``@app.scheduled`` one (nothing deleted). Ticks asked for
        and not started yet (a backfill, a manual trigger) still start: the row stays, marked
        deleted, until a scheduler of it has started them."""
        async with self.storage.transaction() as tx:
            row = await tx.fetchrow(schedules.LOCK_SCHEDULE_TO_DELETE, name)
            if row is None:
                return None
            if not row["dynamic"]:
                return False
            statement = schedules.MARK_SCHEDULE_DELETED if row["asked"] else (
                schedules.DELETE_SCHEDULE)
            await tx.execute(statement, name, self.channel)
            return True

    async def backfill_schedule(self, name: str, start: datetime, end: datetime) -> bool:
        """Ask the schedulers of a schedule to run its ticks in ``[start, end)``; False if
        there is no such schedule."""
        row = await self.storage.fetchrow(schedules.BACKFILL_SCHEDULE, name, start, end,
                                          self.channel)
        return row is not None

    async def trigger_schedule(self, name: str, at: datetime) -> datetime | None:
        """Ask the schedulers to start a run of a schedule now; returns the time of the trigger
        that will run (an earlier one still waiting is kept), ``None``: no such schedule."""
        row = await self.storage.fetchrow(schedules.TRIGGER_SCHEDULE, name, at, self.channel)
        return None if row is None else row["triggered_at"]
