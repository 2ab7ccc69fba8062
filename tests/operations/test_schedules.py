"""Schedules: cron ticks start exactly one workflow each across processes; missed ticks are
skipped or backfilled as the schedule says; pause, resume and trigger from the API and CLI."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from clilib import cli, cli_json
from ticks import each_tick_once

import asyncflow


@pytest.fixture
def far_minute() -> int:
    """A minute of the hour ~30 minutes away from the test's start: no tick of an hourly
    schedule at that minute comes due during a test. Taken once per test, so that every app
    a test makes declares the same schedule even when the clock's minute turns between them
    (a second app declaring the next minute saw one tick more than the downtime held)."""
    return (datetime.now(UTC).minute + 30) % 60


def _hourly(app: asyncflow.AsyncFlow, minute: int, catch_up: str, ran: list[str] | None = None,
            event: asyncio.Event | None = None) -> None:
    @app.scheduled(f"{minute} * * * *", name="hourly", catch_up=catch_up)
    @app.workflow(name="report")
    async def report(scheduled_at: str) -> str:
        if ran is not None:
            ran.append(scheduled_at)
        if event is not None:
            event.set()
        return scheduled_at


async def _advance(app: asyncflow.AsyncFlow, name: str = "hourly") -> None:
    """Run the app's scheduler for one schedule now (what its background check does; ticks
    are claimed exactly once, so running it again is harmless)."""
    scheduler = app._scheduler
    assert scheduler is not None
    await scheduler.advance(app._schedules[name])


async def _started(app: asyncflow.AsyncFlow) -> list[str]:
    return sorted(w.workflow_id for w in await app.list_workflows(name="report"))


def test_bad_schedules_fail_at_decoration(make_app):
    app = make_app()

    async def job(at: str) -> None:
        return None

    for bad in ({"cron": "every minute"}, {"cron": "61 * * * *"}, {"cron": "* * *"},
                {"cron": "* * * * *", "timezone": "Mars/Olympus"},
                {"cron": "* * * * *", "catch_up": "some"},
                {"cron": "* * * * *", "grace_seconds": -1}):
        cron = bad.pop("cron")
        with pytest.raises(asyncflow.InvalidSettingError):
            app.scheduled(cron, name="bad", **bad)(job)
    assert app._schedules == {}


@pytest.mark.parametrize("cron", ["0 0 31 2 *", "0 0 30 2 *", "0 0 0 31 4 * "])
def test_a_cron_expression_that_never_fires_fails_at_decoration(make_app, cron):
    """Issue 20, item 5: croniter accepts Feb 31 (or Apr 31) as valid, but no tick ever comes."""
    app = make_app()

    async def job(at: str) -> None:
        return None

    with pytest.raises(asyncflow.InvalidSettingError, match="never"):
        app.scheduled(cron, name="never")(job)
    assert app._schedules == {}


async def test_one_failing_schedule_never_stops_the_others(make_app):
    """Issue 20, item 5: a schedule whose ticks cannot be worked out (here an impossible cron
    expression, as stored by a version that let it pass) fails alone: the scheduler reports it
    and retries it with backoff, and every other schedule of the app runs on time."""
    from asyncflow._specs import ScheduleSpec

    app = make_app()
    ran = asyncio.Event()

    @app.workflow(name="never")
    async def never(at: str) -> None:
        return None

    # Registered first: the scheduler meets it before the good schedule.
    app._schedules["impossible"] = ScheduleSpec(
        "impossible", "never", "0 0 31 2 *", "UTC", "skip", None, 10.0)

    @app.scheduled("* * * * * *", name="fast")
    async def fast(scheduled_at: str) -> str:
        ran.set()
        return scheduled_at

    async with app:
        await asyncio.wait_for(ran.wait(), 30)
        scheduler = app._scheduler
        assert scheduler is not None and scheduler.started >= 1
        assert not scheduler.monitor.snapshot().healthy


async def test_a_per_second_schedule_starts_a_workflow_per_tick(make_app):
    app = make_app()
    ticks: list[str] = []
    two = asyncio.Event()

    @app.scheduled("* * * * * *", name="fast", timezone="Europe/Paris")
    async def fast(scheduled_at: str) -> str:  # a plain function: registered as "fast"
        ticks.append(scheduled_at)
        if len(ticks) >= 2:
            two.set()
        return scheduled_at

    async with app:
        await asyncio.wait_for(two.wait(), 30)
        first = datetime.fromisoformat(ticks[0])
        assert first.utcoffset() in (timedelta(hours=1), timedelta(hours=2))  # Paris time
        assert first.microsecond == 0
        workflow_id = f"fast@{first.astimezone(UTC).isoformat()}"
        handle = await app.retrieve_workflow(workflow_id)
        assert await handle.get_result(timeout_seconds=30) == ticks[0]
        [info] = await app.list_schedules()
        assert (info.name, info.cron, info.timezone, info.paused) == (
            "fast", "* * * * * *", "Europe/Paris", False)
        assert info.last_tick is not None


@pytest.mark.parametrize(("catch_up", "expected"), [("all", 5), ("latest", 1), ("skip", 0)])
async def test_missed_ticks_after_downtime(make_app, conn, far_minute, catch_up, expected):
    app = make_app()
    _hourly(app, far_minute, catch_up)
    async with app:
        await _advance(app)  # a new schedule starts from now: nothing missed yet
        assert await _started(app) == []
    # Five hours of downtime: the schedule last ticked five ticks ago.
    await conn.execute("update asyncflow.schedules "
                       "set last_tick = last_tick - interval '5 hours'")
    app = make_app()
    _hourly(app, far_minute, catch_up)
    async with app:
        await _advance(app)
        started = await _started(app)
        assert len(started) == expected
        await _advance(app)  # claimed once: running the check again starts nothing more
        assert await _started(app) == started
    if catch_up == "latest":
        row = await conn.fetchrow("select last_tick from asyncflow.schedules")
        assert started == [f"hourly@{row['last_tick'].astimezone(UTC).isoformat()}"]


async def test_pause_resume_and_trigger(make_app, conn, far_minute):
    app = make_app()
    ran: list[str] = []
    triggered = asyncio.Event()
    _hourly(app, far_minute, "all", ran, triggered)
    async with app:
        await app.pause_schedule("hourly")
        [info] = await app.list_schedules()
        assert info.paused
        await conn.execute("update asyncflow.schedules "
                           "set last_tick = last_tick - interval '3 hours'")
        await _advance(app)
        assert await _started(app) == []  # paused: nothing starts
        # A trigger runs even while paused; triggers waiting together share one run.
        workflow_id = await app.trigger_schedule("hourly")
        assert workflow_id.startswith("hourly@manual-")
        await asyncio.wait_for(triggered.wait(), 30)
        handle = await app.retrieve_workflow(workflow_id)
        assert await handle.get_result(timeout_seconds=30) == ran[0]
        # Resumed: the ticks missed while paused are not run, whatever catch_up says.
        await app.resume_schedule("hourly")
        await _advance(app)
        assert await _started(app) == [workflow_id]
        [info] = await app.list_schedules()
        assert not info.paused
        for call in (app.pause_schedule, app.resume_schedule, app.trigger_schedule):
            with pytest.raises(asyncflow.ScheduleNotFoundError):
                await call("nope")


async def test_a_schedule_on_a_queue_enqueues_each_run(make_app, conn):
    app = make_app()
    app.queue("reports", concurrency=1)
    done = asyncio.Event()

    @app.scheduled("* * * * * *", name="queued", queue="reports")
    @app.workflow(name="queued_report")
    async def queued_report(scheduled_at: str) -> str:
        done.set()
        return scheduled_at

    async with app:
        await asyncio.wait_for(done.wait(), 30)
        runs = await app.list_workflows(name="queued_report")
        assert runs and all(w.queue_name == "reports" for w in runs)


@pytest.mark.slow
async def test_three_processes_start_each_tick_exactly_once(db_url, conn, procs):
    await conn.execute("create table runs (workflow_id text, tick text, executor text)")
    workers = [await procs("sched_worker.py", db_url, f"s-{i}") for i in range(3)]
    for worker in workers:
        await worker.expect("READY")
    await each_tick_once(workers, conn, "every-second")


@pytest.mark.slow
async def test_schedule_cli(make_app, db_url, far_minute):
    app = make_app()
    triggered = asyncio.Event()
    _hourly(app, far_minute, "skip", event=triggered)
    async with app:
        [row] = await cli_json(db_url, "schedule", "list")
        assert row["name"] == "hourly" and row["paused"] is False
        assert await cli_json(db_url, "schedule", "pause", "hourly") == {"paused": "hourly"}
        [row] = await cli_json(db_url, "schedule", "list")
        assert row["paused"] is True
        await cli_json(db_url, "schedule", "resume", "hourly")
        out = await cli_json(db_url, "schedule", "trigger", "hourly")
        assert out["workflow_id"].startswith("hourly@manual-")
        await asyncio.wait_for(triggered.wait(), 30)  # the live app started it (NOTIFY)
        handle = await app.retrieve_workflow(out["workflow_id"])
        await handle.get_result(timeout_seconds=30)
        code, _out, err = await cli(db_url, "schedule", "pause", "nope")
        assert code != 0 and "no schedule named 'nope'" in err
        code, out_text, _err = await cli(db_url, "schedule", "list")
        assert code == 0 and "hourly" in out_text and "active" in out_text


async def test_run_ids_of_a_long_schedule_name_are_valid_ids(make_app):
    """Issue 20, item 10: a schedule name near the id limit gives run ids over it; they are
    hashed then (as children's ids are), so every run id — the one trigger_schedule returns
    included — is one the API accepts."""
    import hashlib

    app = make_app()
    name = "s" * 990
    ran: list[str] = []
    two = asyncio.Event()
    manual_ran = asyncio.Event()

    @app.scheduled("* * * * * *", name=name)
    @app.workflow(name="long")
    async def long(scheduled_at: str) -> str:
        ran.append(scheduled_at)
        if len(ran) >= 2:
            two.set()
        if "@manual-" in asyncflow.workflow_id():
            manual_ran.set()
        return scheduled_at

    digest = hashlib.sha256(name.encode()).hexdigest()
    async with app:
        await asyncio.wait_for(two.wait(), 30)
        manual = await app.trigger_schedule(name)
        assert manual.startswith(f"{digest}@manual-") and len(manual.encode()) <= 1000
        await asyncio.wait_for(manual_ran.wait(), 30)
        handle = await app.retrieve_workflow(manual)
        assert await handle.get_result(timeout_seconds=30) is not None
        ids = [w.workflow_id for w in await app.list_workflows(name="long")]
        assert len(ids) >= 3
        for workflow_id in ids:
            assert workflow_id.startswith(f"{digest}@") and len(workflow_id.encode()) <= 1000
            await (await app.retrieve_workflow(workflow_id)).get_result(timeout_seconds=30)
