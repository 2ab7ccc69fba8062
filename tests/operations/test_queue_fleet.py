"""Fleets of real worker processes on one queue: global limits across processes, exactly-once
runs, and recovery of a SIGKILLed worker's queued workflows within the queue's limits."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import asyncflow

pytestmark = pytest.mark.slow  # worker fleets in subprocesses

TABLES = [
    "create table runs (workflow_id text primary key, executor_id text, "
    "started_at timestamptz, ended_at timestamptz)",
    "create table execs (workflow_id text, executor_id text, started_at timestamptz)",
    "create table effects (workflow_id text, step int, executor_id text)",
    # Checks the queue's global concurrency at every moment a workflow of it becomes PENDING
    # (the only moments the count can grow): any excess is recorded.
    "create table excess (at timestamptz, running bigint)",
    """create function check_running() returns trigger language plpgsql as $$
    declare running bigint;
    begin
        select count(*) into running from asyncflow.workflows
        where queue_name = 'fleet' and status = 'PENDING';
        if running > %CONCURRENCY% then
            insert into excess values (clock_timestamp(), running);
        end if;
        return null;
    end $$""",
    "create trigger check_running after update of status on asyncflow.workflows "
    "for each row when (new.status = 'PENDING' and new.queue_name = 'fleet') "
    "execute function check_running()",
]


async def _prepare(conn, concurrency: int) -> None:
    for statement in TABLES:
        await conn.execute(statement.replace("%CONCURRENCY%", str(int(concurrency))))


async def _results(db_url: str, ids: list[str], within: float = 90) -> dict[str, int]:
    async with asyncflow.Client(db_url) as client:
        handles = [await client.retrieve_workflow(wid) for wid in ids]
        values = await asyncio.gather(*(h.get_result(timeout_seconds=within) for h in handles))
    return dict(zip(ids, values, strict=True))


def _max_overlap(intervals: list[tuple]) -> int:
    """The largest number of [start, end) intervals open at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))  # an end at t is processed before a start at t
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    return peak


def _max_in_window(times: list, per: timedelta) -> int:
    """The largest number of ``times`` in any half-open window (t - per, t]."""
    times = sorted(times)
    peak = first = 0
    for last, t in enumerate(times):
        while times[first] <= t - per:
            first += 1
        peak = max(peak, last - first + 1)
    return peak


async def _not_exactly_once(conn, table: str, key: str, expected: list[str]) -> list[str]:
    """The keys (the SQL text expression ``key`` over ``table``, one row per body execution)
    not counted exactly once, with the executors that ran them; empty when all ran once."""
    counted = {r["key"]: (r["n"], r["executors"]) for r in await conn.fetch(
        f"select {key} as key, count(*) as n, string_agg(executor_id, ',') as executors "
        f"from {table} group by 1")}
    problems = [f"{k}: ran {counted[k][0]} times ({counted[k][1]})"
                for k in expected if k in counted and counted[k][0] != 1]
    problems += [f"{k}: never ran" for k in expected if k not in counted]
    problems += [f"{k}: not a workflow of the fleet" for k in counted if k not in set(expected)]
    return problems


async def _start_workers(procs, db_url, count, *limits, prefix="w"):
    workers = [await procs("queue_worker.py", db_url, f"{prefix}-{i}", "serve", *limits)
               for i in range(count)]
    for worker in workers:
        await worker.expect("READY")
    return workers


async def test_fleet_of_three_workers_holds_concurrency_and_rate_limit(db_url, conn, procs):
    concurrency, rate_n, rate_per, total = 5, 20, 0.25, 300
    await _prepare(conn, concurrency)
    await _start_workers(procs, db_url, 3, str(concurrency), "-", str(rate_n), str(rate_per))
    enqueuer = await procs("queue_worker.py", db_url, "enqueuer", "enqueue", str(total))
    await enqueuer.expect("ENQUEUED")
    ids = [f"fleet-{n}" for n in range(total)]
    results = await _results(db_url, ids)
    assert results == {f"fleet-{n}": n for n in range(total)}

    # Every workflow ran exactly once: one execution, one run, each step body once.
    assert await _not_exactly_once(conn, "execs", "workflow_id", ids) == []
    assert await _not_exactly_once(conn, "effects", "workflow_id || '/' || step",
                                   [f"{wid}/{step}" for wid in ids for step in (0, 1)]) == []
    assert await conn.fetchval("select count(distinct workflow_id) from runs") == total
    # Concurrency: at no instant did more than 5 runs overlap, across the three processes.
    runs = await conn.fetch(
        "select r.started_at, r.ended_at, w.dispatched_at from runs r "
        "join asyncflow.workflows w using (workflow_id)")
    assert all(r["ended_at"] is not None for r in runs)
    assert _max_overlap([(r["started_at"], r["ended_at"]) for r in runs]) <= concurrency
    assert await conn.fetchval("select count(*) from excess") == 0
    # Rate: no window of 0.25 s holds more than 20 starts (the dispatch times recorded by the
    # claims, which every run started after).
    assert all(r["dispatched_at"] <= r["started_at"] for r in runs)
    starts = [r["dispatched_at"] for r in runs]
    assert _max_in_window(starts, timedelta(seconds=rate_per)) <= rate_n
    executors = await conn.fetch("select distinct executor_id from runs")
    assert {r["executor_id"] for r in executors} <= {"w-0", "w-1", "w-2"}


async def test_sigkill_one_worker_of_three_recovers_within_the_limits(db_url, conn, procs):
    concurrency, total = 4, 40
    await _prepare(conn, concurrency)
    victim = await procs("queue_worker.py", db_url, "victim", "serve", str(concurrency), "2",
                         "-", "-", "block")
    await victim.expect("READY")
    enqueuer = await procs("queue_worker.py", db_url, "enqueuer", "enqueue", str(total))
    await enqueuer.expect("ENQUEUED")
    blocked = {(await victim.expect("BLOCKED")).split()[1] for _ in range(2)}
    await _start_workers(procs, db_url, 2, str(concurrency), "2", "-", "-", prefix="ok")
    victim.kill()
    await victim.wait()
    ids = [f"fleet-{n}" for n in range(total)]
    results = await _results(db_url, ids)
    assert results == {f"fleet-{n}": n for n in range(total)}

    # The victim's two workflows were put back in the queue and finished elsewhere, once.
    rows = await conn.fetch("select workflow_id, executor_id, recovery_attempts "
                            "from asyncflow.workflows where workflow_id = any($1::text[])",
                            list(blocked))
    assert all(r["executor_id"] != "victim" and r["recovery_attempts"] == 1 for r in rows)
    # Completed steps never ran again: only the step the victim was in when killed ran twice.
    twice = await conn.fetch("select workflow_id, step from effects group by 1, 2 "
                             "having count(*) > 1")
    assert {(r["workflow_id"], r["step"]) for r in twice} == {(wid, 1) for wid in blocked}
    assert await conn.fetchval("select count(*) from runs where ended_at is not null") == total
    # The global limit held throughout, recovery included.
    assert await conn.fetchval("select count(*) from excess") == 0
    execs = await conn.fetch("select workflow_id, count(*) as n from execs group by 1")
    assert {r["workflow_id"]: r["n"] for r in execs if r["n"] > 1} == dict.fromkeys(blocked, 2)
