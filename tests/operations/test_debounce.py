"""Debounce: a burst of calls with one key starts exactly one workflow, with the latest
arguments, after the quiet period (or max_wait), across processes; set_workflow_delay moves a
queued workflow's start, woken by NOTIFY; bad input fails at the call and writes nothing."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from clilib import cli, cli_json

import asyncflow

CALLS = 1000
PROCESSES = 3


async def test_a_burst_starts_one_workflow_with_the_latest_arguments(make_app, conn):
    app = make_app()
    runs: Counter[str] = Counter()

    @app.workflow(name="notify_user")
    async def notify_user(user: str, text: str) -> str:
        runs[asyncflow.workflow_id()] += 1
        return f"{user}: {text}"

    debouncer = app.debouncer(notify_user, key=lambda user, text: user, period_seconds=0.5)
    async with app:
        handles = [await debouncer.debounce("ann", f"edit {i}") for i in range(20)]
        other = await debouncer.debounce("bob", "hello")  # another key: another burst
        assert len({h.workflow_id for h in handles}) == 1
        assert other.workflow_id != handles[0].workflow_id
        assert await handles[0].get_result(timeout_seconds=30) == "ann: edit 19"
        assert await other.get_result(timeout_seconds=30) == "bob: hello"
        row = await conn.fetchrow(
            "select status, queue_name, debounce_key from asyncflow.workflows "
            "where workflow_id = $1",
            handles[0].workflow_id)
        assert (row["status"], row["queue_name"], row["debounce_key"]) == (
            "SUCCESS", "asyncflow.debounce", "ann")
        # The burst is over: the next call starts the next one.
        after = await debouncer.debounce("ann", "later")
        assert after.workflow_id != handles[0].workflow_id
        assert await after.get_result(timeout_seconds=30) == "ann: later"
    assert set(runs.values()) == {1} and len(runs) == 3


async def test_max_wait_starts_the_workflow_while_calls_go_on(make_app, conn):
    app = make_app()
    started = asyncio.Event()

    @app.workflow(name="reindex")
    async def reindex(n: int) -> int:
        started.set()
        return n

    debouncer = app.debouncer(reindex, key="index", period_seconds=1.0, max_wait_seconds=1.5)
    async with app:
        first = await debouncer.debounce(0)
        n = 0
        while not started.is_set():  # a call every 0.1 s: never a quiet second
            n += 1
            assert n < 300, "max_wait never started the workflow"
            await debouncer.debounce(n)
            try:
                await asyncio.wait_for(started.wait(), 0.1)
            except TimeoutError:
                pass
        result = await first.get_result(timeout_seconds=30)
        assert 0 < result <= n
        row = await conn.fetchrow(
            "select extract(epoch from dispatched_at - created_at)::float8 as waited "
            "from asyncflow.workflows where workflow_id = $1", first.workflow_id)
        assert 1.5 <= row["waited"] < 3.0, row  # capped by max_wait, not the period
        # It ran with a call made after the first (the latest when it was claimed); a call
        # after it ended belongs to the next burst.
        assert (await debouncer.debounce(n + 1)).workflow_id != first.workflow_id


async def test_a_debounce_in_a_workflow_is_journaled(make_app):
    app = make_app()

    @app.workflow(name="target")
    async def target(n: int) -> int:
        return n

    debouncer = app.debouncer(target, key="k", period_seconds=0.3)

    @app.workflow(name="caller")
    async def caller() -> list[str]:
        a = await debouncer.debounce(1)
        b = await debouncer.debounce(2)
        return [a.workflow_id, b.workflow_id]

    async with app:
        handle = await app.start_workflow(caller)
        a, b = await handle.get_result(timeout_seconds=30)
        assert a == b
        assert await (await app.retrieve_workflow(a)).get_result(timeout_seconds=30) == 2
        steps = await app.list_workflow_steps(handle.workflow_id)
        assert [s.name for s in steps] == ["asyncflow.debounce", "asyncflow.debounce"]
        assert [s.child_workflow_id for s in steps] == [a, a]


async def test_bad_input_fails_at_the_call_and_writes_nothing(make_app, conn):
    app = make_app()

    @app.workflow(name="job")
    async def job(n: int) -> int:
        return n

    async def not_registered(n: int) -> int:
        return n

    for bad in (0, -1, math.nan, math.inf, True, "1"):
        with pytest.raises(asyncflow.InvalidArgumentError, match="period_seconds"):
            app.debouncer(job, key="k", period_seconds=bad)
    with pytest.raises(asyncflow.InvalidArgumentError, match="max_wait_seconds"):
        app.debouncer(job, key="k", period_seconds=1, max_wait_seconds=0)
    for key in (5, ""):
        with pytest.raises(asyncflow.InvalidArgumentError):
            app.debouncer(job, key=key, period_seconds=1)
    with pytest.raises(asyncflow.InvalidArgumentError, match="queue"):
        app.debouncer(job, key="k", period_seconds=1, queue="by-name")
    with pytest.raises(asyncflow.WorkflowNotFoundError):
        app.debouncer(not_registered, key="k", period_seconds=1)
    assert "asyncflow.debounce" not in app._queues  # nothing registered by a refused call
    debouncer = app.debouncer(job, key=lambda n: n, period_seconds=1)  # the key: not a str
    async with app:
        with pytest.raises(asyncflow.InvalidArgumentError, match="debounce key"):
            await debouncer.debounce(5)
        with pytest.raises(asyncflow.SerializationError):
            await app.debouncer(job, key="k", period_seconds=1).debounce(object())
        assert await conn.fetchval("select count(*) from asyncflow.workflows") == 0


async def test_calls_from_three_processes_start_exactly_one_workflow_per_burst(
        make_app, db_url, conn, procs):
    app = make_app()
    runs: Counter[str] = Counter()

    @app.workflow(name="debounced")
    async def debounced(tag: str, burst: int, i: int) -> list[object]:
        runs[asyncflow.workflow_id()] += 1
        return [tag, burst, i]

    app.debouncer(debounced, key="burst", period_seconds=3.0)  # serves its queue
    counts = [CALLS // PROCESSES + (1 if n < CALLS % PROCESSES else 0)
              for n in range(PROCESSES)]
    async with app:
        callers = [await procs("debounce_caller.py", db_url, f"p{n}", str(counts[n]), "3.0")
                   for n in range(PROCESSES)]
        for caller in callers:
            await caller.expect("READY")
        seen: list[str] = []
        for burst in (1, 2):
            await conn.execute(f"NOTIFY go, '{burst}'")
            ids: set[str] = set()
            for caller in callers:
                ids.update((await caller.expect(f"DONE {burst} ")).split()[2].split(","))
            assert len(ids) == 1, ids  # every call of the burst: one workflow
            [workflow_id] = ids
            handle = await app.retrieve_workflow(workflow_id)
            tag, got_burst, i = await handle.get_result(timeout_seconds=60)
            # The latest arguments: the last call to commit is some process's last call.
            assert got_burst == burst and i == counts[int(tag[1:])] - 1
            seen.append(workflow_id)
            assert await conn.fetchval(
                "select count(*) from asyncflow.workflows where name = 'debounced'") == burst
        assert seen[0] != seen[1]
    assert dict(runs) == {seen[0]: 1, seen[1]: 1}


# -- set_workflow_delay -------------------------------------------------------------------------


async def test_set_workflow_delay_moves_a_queued_start_woken_by_notify(make_app, db_url, conn):
    app = make_app()
    queue = app.queue("later")
    ran = asyncio.Event()

    @app.workflow(name="remind")
    async def remind() -> str:
        ran.set()
        return "done"

    async with app:
        handle = await queue.enqueue(remind, delay_seconds=3600)
        # From a Client (another connection): the app's dispatcher hears it by NOTIFY only.
        async with asyncflow.Client(db_url) as client:
            at = await client.set_workflow_delay(handle.workflow_id, seconds=7200)
            assert at - datetime.now(UTC) > timedelta(seconds=7000)
            assert (await handle.get_status()).status == "DELAYED"
            soon = datetime.now(UTC) + timedelta(seconds=0.3)
            assert await client.set_workflow_delay(handle.workflow_id, until=soon) == soon
        await asyncio.wait_for(ran.wait(), 30)
        assert await handle.get_result(timeout_seconds=30) == "done"
        with pytest.raises(asyncflow.WorkflowNotQueuedError, match="SUCCESS"):
            await app.set_workflow_delay(handle.workflow_id, seconds=5)


async def test_set_workflow_delay_delays_an_enqueued_workflow(make_app, conn):
    app = make_app(queues=[])  # serves no queue: the workflow stays ENQUEUED
    queue = app.queue("held")

    @app.workflow(name="held_job")
    async def held_job() -> None:
        return None

    async with app:
        handle = await queue.enqueue(held_job)
        assert (await handle.get_status()).status == "ENQUEUED"
        await app.set_workflow_delay(handle.workflow_id, seconds=60)
        assert (await handle.get_status()).status == "DELAYED"
        await app.set_workflow_delay(handle.workflow_id, seconds=0)  # due: ENQUEUED again
        assert (await handle.get_status()).status == "ENQUEUED"
        before = await conn.fetchrow("select status, delay_until from asyncflow.workflows")
        naive = datetime(2030, 1, 1)
        for kwargs in ({}, {"seconds": 1, "until": datetime.now(UTC)}, {"seconds": -1},
                       {"seconds": math.nan}, {"until": naive}, {"seconds": "1"}):
            with pytest.raises(asyncflow.InvalidArgumentError):
                await app.set_workflow_delay(handle.workflow_id, **kwargs)
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await app.set_workflow_delay("nope", seconds=1)
        assert await conn.fetchrow(
            "select status, delay_until from asyncflow.workflows") == before


async def test_workflow_delay_cli(make_app, db_url):
    app = make_app(queues=[])
    queue = app.queue("held")

    @app.workflow(name="held_job")
    async def held_job() -> None:
        return None

    async with app:
        handle = await queue.enqueue(held_job)
        out = await cli_json(db_url, "workflow", "delay", handle.workflow_id, "--seconds", "60")
        at = datetime.fromisoformat(out["delay_until"])
        assert out["workflow_id"] == handle.workflow_id
        assert timedelta(seconds=50) < at - datetime.now(UTC) < timedelta(seconds=70)
        assert (await handle.get_status()).status == "DELAYED"
        code, _out, err = await cli(db_url, "workflow", "delay", "nope", "--until",
                                    "2030-01-01T00:00")
        assert code != 0 and "nope" in err
