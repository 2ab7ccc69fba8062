"""Schedules made at runtime (create_schedule, delete_schedule, backfill_schedule): served by
every app registering their workflow, one run per tick across processes, backfills that skip
ticks already run; bad input fails at the call and writes nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from clilib import cli, cli_json
from ticks import each_tick_once

import asyncflow

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _hourly_report(app: asyncflow.AsyncFlow, ran: Counter[str],
                   events: dict[str, asyncio.Event]) -> object:
    @app.workflow(name="report")
    async def report(scheduled_at: str) -> str:
        ran[asyncflow.workflow_id()] += 1
        events.setdefault(asyncflow.workflow_id(), asyncio.Event()).set()
        return scheduled_at

    return report


async def _ran(events: dict[str, asyncio.Event], ids: list[str]) -> None:
    for workflow_id in ids:
        await asyncio.wait_for(events.setdefault(workflow_id, asyncio.Event()).wait(), 30)


async def test_a_runtime_schedule_runs_each_tick_and_stops_when_deleted(make_app):
    app = make_app()
    ticks: list[str] = []
    two = asyncio.Event()

    @app.workflow(name="fast")
    async def fast(scheduled_at: str) -> str:
        ticks.append(scheduled_at)
        if len(ticks) >= 2:
            two.set()
        return scheduled_at

    async with app:
        info = await app.create_schedule("fast-rt", fast, "* * * * * *",
                                         timezone="Europe/Paris")
        assert (info.name, info.workflow_name, info.dynamic, info.paused) == (
            "fast-rt", "fast", True, False)
        await asyncio.wait_for(two.wait(), 30)  # the live scheduler was woken (kind c)
        first = datetime.fromisoformat(ticks[0])
        handle = await app.retrieve_workflow(f"fast-rt@{first.astimezone(UTC).isoformat()}")
        assert await handle.get_result(timeout_seconds=30) == ticks[0]
        # Created again: a new definition of the same schedule (its last tick kept).
        again = await app.create_schedule("fast-rt", "fast", "*/2 * * * * *")
        assert again.cron == "*/2 * * * * *" and again.last_tick is not None
        await app.delete_schedule("fast-rt")
        assert await app.list_schedules() == []
        with pytest.raises(asyncflow.ScheduleNotFoundError):
            await app.delete_schedule("fast-rt")
        with pytest.raises(asyncflow.ScheduleNotFoundError):
            await app.trigger_schedule("fast-rt")


async def test_backfill_runs_missed_ticks_once_with_their_ids(make_app, db_url):
    app = make_app()
    ran: Counter[str] = Counter()
    events: dict[str, asyncio.Event] = {}
    report = _hourly_report(app, ran, events)
    async with app:
        await app.create_schedule("hourly-rt", report, "0 * * * *")
        ids = await app.backfill_schedule("hourly-rt", T0, T0 + timedelta(hours=5))
        assert ids == [f"hourly-rt@{(T0 + timedelta(hours=h)).isoformat()}" for h in range(5)]
        await _ran(events, ids)
        # An overlapping backfill, from a Client: the ticks that ran are skipped.
        async with asyncflow.Client(db_url) as client:
            more = await client.backfill_schedule("hourly-rt", T0 + timedelta(hours=3),
                                                  T0 + timedelta(hours=7))
        assert more == ids[3:] + [f"hourly-rt@{(T0 + timedelta(hours=h)).isoformat()}"
                                  for h in (5, 6)]
        await _ran(events, more)
        handle = await app.retrieve_workflow(more[-1])
        assert await handle.get_result(timeout_seconds=30) == "2026-01-01T06:00:00+00:00"
        assert sorted(ran) == sorted(set(ids + more)) and set(ran.values()) == {1}
        [info] = await app.list_schedules()
        assert info.backfills == ()  # run and forgotten
        assert await app.backfill_schedule("hourly-rt", T0, T0) == []  # an empty range


async def test_a_removed_tick_runs_again_on_a_later_backfill(make_app):
    """The skip goes by the tick's workflow: once retention or delete_workflow removed it,
    backfilling its tick again runs it again, as a new workflow without the old attributes."""
    app = make_app()
    ran: Counter[str] = Counter()
    events: dict[str, asyncio.Event] = {}
    report = _hourly_report(app, ran, events)
    async with app:
        await app.create_schedule("hourly-rm", report, "0 * * * *")
        [tick] = await app.backfill_schedule("hourly-rm", T0, T0 + timedelta(hours=1))
        await _ran(events, [tick])
        await app.set_workflow_attributes(tick, {"color": "blue"})
        assert [w.workflow_id for w in await app.list_workflows(
            attributes={"color": "blue"})] == [tick]
        assert await app.backfill_schedule("hourly-rm", T0, T0 + timedelta(hours=1)) == [tick]
        assert ran[tick] == 1  # kept: skipped
        assert await app.delete_workflow(tick) == [tick]
        events.pop(tick)
        assert await app.backfill_schedule("hourly-rm", T0, T0 + timedelta(hours=1)) == [tick]
        await _ran(events, [tick])
        assert ran[tick] == 2
        assert await app.list_workflows(attributes={"color": "blue"}) == []


async def test_ticks_asked_for_before_a_delete_still_start(make_app, db_url, conn):
    """A backfill or a trigger returned the ids of runs to come: deleting the schedule before
    any app started them does not drop them. The schedule leaves every list at once; the first
    app serving it starts those runs (and no other tick), then its row goes."""
    async with asyncflow.Client(db_url) as client:  # no scheduler runs until the app below
        await client.create_schedule("gone-rt", "report", "0 * * * *")
        await client.pause_schedule("gone-rt")
        ids = await client.backfill_schedule("gone-rt", T0, T0 + timedelta(hours=3))
        triggered = await client.trigger_schedule("gone-rt")
        await client.delete_schedule("gone-rt")
        assert await client.list_schedules() == []
        for call in (client.delete_schedule("gone-rt"), client.trigger_schedule("gone-rt"),
                     client.pause_schedule("gone-rt"),
                     client.backfill_schedule("gone-rt", T0, T0 + timedelta(hours=1))):
            with pytest.raises(asyncflow.ScheduleNotFoundError):
                await call
        # Made again before they started: a new schedule (unpaused, from its next tick on)
        # that still owes those runs; deleted again, it still owes them.
        again = await client.create_schedule("gone-rt", "report", "0 * * * *")
        assert (again.paused, again.last_tick, len(again.backfills)) == (False, None, 1)
        await client.delete_schedule("gone-rt")
    assert await conn.fetchval(
        "select deleted from asyncflow.schedules where schedule_name = 'gone-rt'") is True

    app = make_app()
    ran: Counter[str] = Counter()
    events: dict[str, asyncio.Event] = {}
    _hourly_report(app, ran, events)
    async with app:
        await _ran(events, [*ids, triggered])
        assert await conn.fetchval(
            "select count(*) from asyncflow.schedules where schedule_name = 'gone-rt'") == 0
        assert sorted(ran) == sorted([*ids, triggered]) and set(ran.values()) == {1}
        assert await app.list_schedules() == []


async def test_bad_input_fails_at_the_call_and_writes_nothing(make_app, conn):
    app = make_app()

    @app.scheduled("0 * * * *", name="decorated")
    @app.workflow(name="job")
    async def job(scheduled_at: str) -> str:
        return scheduled_at

    async with app:
        # (last_tick moves on its own: the live scheduler's first advance)
        columns = ("schedule_name, workflow_name, cron, timezone, catch_up, queue_name, paused, "
                   "dynamic, grace_seconds, backfill_starts, backfill_ends")
        before = await conn.fetch(f"select {columns} from asyncflow.schedules order by 1")
        for bad in ({"cron": "every minute"}, {"cron": "0 * * * *", "timezone": "Mars/Base"},
                    {"cron": "0 * * * *", "catch_up": "some"},
                    {"cron": "0 * * * *", "grace_seconds": -1},
                    {"cron": "0 * * * *", "queue": 5}):
            cron = bad.pop("cron")
            with pytest.raises(asyncflow.InvalidSettingError if "queue" not in bad
                               else asyncflow.InvalidArgumentError):
                await app.create_schedule("new", job, cron, **bad)
        with pytest.raises(asyncflow.InvalidArgumentError):
            await app.create_schedule("new", lambda: None, "0 * * * *")
        with pytest.raises(asyncflow.ScheduleConflictError):
            await app.create_schedule("decorated", job, "5 * * * *")
        with pytest.raises(asyncflow.ScheduleConflictError):
            await app.delete_schedule("decorated")
        with pytest.raises(asyncflow.InvalidArgumentError, match="before start"):
            await app.backfill_schedule("decorated", T0, T0 - timedelta(hours=1))
        with pytest.raises(asyncflow.InvalidArgumentError, match="timezone-aware"):
            await app.backfill_schedule("decorated", datetime(2026, 1, 1), T0)
        with pytest.raises(asyncflow.InvalidArgumentError, match="more than 10000"):
            await app.backfill_schedule("decorated", T0, T0 + timedelta(days=500))
        with pytest.raises(asyncflow.ScheduleNotFoundError):
            await app.backfill_schedule("nope", T0, T0 + timedelta(hours=1))
        after = await conn.fetch(f"select {columns} from asyncflow.schedules order by 1")
        assert after == before
        assert await app.list_workflows(name="job") == []


async def test_three_processes_run_each_tick_of_a_runtime_schedule_once(db_url, conn, procs):
    await conn.execute("create table runs (workflow_id text, tick text, executor text)")
    workers = [await procs("sched_worker.py", db_url, f"rt-{i}", "runtime") for i in range(3)]
    for worker in workers:
        await worker.expect("READY")
    async with asyncflow.Client(db_url) as client:  # made after the workers launched
        await client.create_schedule("every-second-rt", "tick", "* * * * * *", catch_up="all")
    await each_tick_once(workers, conn, "every-second-rt")


async def test_runtime_schedule_cli(make_app, db_url):
    app = make_app()
    ran: Counter[str] = Counter()
    events: dict[str, asyncio.Event] = {}
    _hourly_report(app, ran, events)
    async with app:
        row = await cli_json(db_url, "schedule", "create", "cli-rt", "report", "0 * * * *",
                             "--timezone", "UTC")
        assert row["name"] == "cli-rt" and row["dynamic"] is True
        out = await cli_json(db_url, "schedule", "backfill", "cli-rt",
                             "2026-01-01T00:00:00+00:00", "2026-01-01T02:00:00+00:00")
        assert out["workflow_ids"] == ["cli-rt@2026-01-01T00:00:00+00:00",
                                       "cli-rt@2026-01-01T01:00:00+00:00"]
        await _ran(events, out["workflow_ids"])
        code, _out, err = await cli(db_url, "schedule", "backfill", "cli-rt",
                                    "2026-01-02T00:00:00+00:00", "2026-01-01T00:00:00+00:00")
        assert code != 0 and "before start" in err
        assert await cli_json(db_url, "schedule", "delete", "cli-rt") == {"deleted": "cli-rt"}
        assert await app.list_schedules() == []
