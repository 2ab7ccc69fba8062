"""Recovery: SIGKILLed processes, failover to a live executor, supervisors, dead letters."""

from __future__ import annotations

import asyncio
import time

import pytest

import asyncflow

TABLES = [
    "create table effects (workflow_id text, step int)",
    "create table tx_effects (workflow_id text, step int, unique (workflow_id, step))",
]


async def _tables(conn):
    for statement in TABLES:
        await conn.execute(statement)


async def _wait_all(db_url, ids, within=30):
    async with asyncflow.Client(db_url) as client:
        results = {}
        for wid in ids:
            handle = await client.retrieve_workflow(wid)
            results[wid] = await handle.get_result(timeout_seconds=within)
        return results


async def test_sigkill_mid_workflow_resumes_without_rerunning_steps(db_url, conn, procs):
    await _tables(conn)
    a = await procs("worker.py", db_url, "exec-a", "start", "1", "5", "3")
    await a.expect("BLOCKED wf-0")
    a.kill()
    await a.wait()
    # Same executor id relaunched: launch recovers its own pending workflows.
    b = await procs("worker.py", db_url, "exec-a", "serve")
    await b.expect("READY")
    assert await _wait_all(db_url, ["wf-0"]) == {"wf-0": [0, 10, 20, 30, 40]}
    runs = await conn.fetch("select step, count(*) as n from effects group by step order by step")
    # Steps 0-2 completed before the kill and were never run again; step 3 was in flight.
    assert [(r["step"], r["n"]) for r in runs] == [(0, 1), (1, 1), (2, 1), (3, 2), (4, 1)]
    assert await conn.fetchval("select count(*) from tx_effects") == 5
    status = await conn.fetchrow(
        "select status, recovery_attempts, executor_id from asyncflow.workflows")
    assert tuple(status) == ("SUCCESS", 1, "exec-a")


async def test_failover_to_live_process_within_seconds(db_url, conn, procs):
    await _tables(conn)
    b = await procs("worker.py", db_url, "exec-b", "serve")
    await b.expect("READY")
    a = await procs("worker.py", db_url, "exec-a", "start", "5", "4", "2")
    for _ in range(5):
        await a.expect("BLOCKED")
    killed_at = time.monotonic()
    a.kill()
    await a.wait()
    results = await _wait_all(db_url, [f"wf-{n}" for n in range(5)], within=20)
    assert time.monotonic() - killed_at < 10
    assert all(r == [0, 10, 20, 30] for r in results.values())
    owners = await conn.fetch("select distinct executor_id from asyncflow.workflows")
    assert [r["executor_id"] for r in owners] == ["exec-b"]
    assert await conn.fetchval("select count(*) from tx_effects") == 20
    twice = await conn.fetch(
        "select workflow_id, step from effects group by 1, 2 having count(*) > 1")
    assert {r["step"] for r in twice} == {2}  # only the in-flight step ran again


async def test_same_executor_id_twice_is_refused(make_app):
    first = make_app(executor_id="dup")
    second = make_app(executor_id="dup")
    async with first:
        with pytest.raises(asyncflow.ExecutorIdInUseError, match="already in use"):
            async with second:
                pass
    async with second:  # free again once the first one stopped
        pass


def _seed_pending(n, executor="dead-executor", name="seeded", attempts=0, version="v1"):
    return (
        "insert into asyncflow.workflows (workflow_id, name, status, inputs, executor_id, "
        "app_version, recovery_attempts) "
        f"select 'wf-' || g, '{name}', 'PENDING', '{{\"args\": [], \"kwargs\": {{}}}}', "
        f"'{executor}', '{version}', {attempts} from generate_series(1, {n}) g"
    )


def register_seeded_runner(app):
    @app.transaction(name="note_run")
    async def note_run():
        await asyncflow.connection().execute(
            "insert into runs values ($1, $2)", asyncflow.workflow_id(), app.executor_id)

    @app.workflow(name="seeded")
    async def seeded():
        await note_run()
        return asyncflow.workflow_id()


async def test_two_supervisors_never_claim_the_same_workflow(make_app, conn):
    await conn.execute("create table runs (workflow_id text, executor text)")
    apps = [make_app(executor_id=f"sup-{i}", app_version="v1", recovery_interval_seconds=3600)
            for i in range(3)]
    for app in apps:
        register_seeded_runner(app)
    async with apps[0], apps[1], apps[2]:
        await conn.execute(_seed_pending(300))
        claimed = await asyncio.gather(
            *(app._supervisor.sweep(include_own=False) for app in apps for _ in range(3)))
        assert sum(claimed) == 300
        results = await _wait_all(apps[0].storage.url, [f"wf-{g}" for g in range(1, 301)])
    assert len(results) == 300
    assert await conn.fetchval("select count(*) from runs") == 300
    assert await conn.fetchval("select count(distinct workflow_id) from runs") == 300
    assert await conn.fetchval(
        "select max(recovery_attempts) from asyncflow.workflows") == 1


async def test_dead_letter_after_max_recovery_attempts_and_resume(make_app, conn):
    await conn.execute(_seed_pending(1, attempts=2))
    app = make_app(app_version="v1")

    @app.workflow(name="seeded", max_recovery_attempts=2)
    async def seeded():
        return "finally"

    async with app:
        handle = app._handle("wf-1")
        with pytest.raises(asyncflow.MaxRecoveryAttemptsExceededError):
            await handle.get_result(timeout_seconds=10)
        status = await handle.get_status()
        assert (status.status, status.recovery_attempts) == ("MAX_RECOVERY_ATTEMPTS_EXCEEDED", 3)
        await app.resume_workflow("wf-1")
        assert await handle.get_result(timeout_seconds=10) == "finally"
        assert (await handle.get_status()).recovery_attempts == 0


async def test_only_matching_app_version_is_recovered(make_app, conn):
    # With upgrade="never", a workflow runs on its own version only (the default, "replay",
    # adopts it when its history replays cleanly: tests/operations/test_upgrade.py).
    await conn.execute(_seed_pending(1, version="old"))
    app = make_app(app_version="new", upgrade="never")

    @app.workflow(name="seeded")
    async def seeded():
        return 1

    async with app:
        await app._supervisor.sweep(include_own=True)
        assert (await app.get_workflow_status("wf-1")).status == "PENDING"


async def test_recovered_sleep_only_sleeps_the_remaining_time(make_app, conn):
    await conn.execute(_seed_pending(2))
    wake_soon = time.time() + 0.5
    await conn.execute(
        "insert into asyncflow.operations (workflow_id, function_id, name, output) values "
        "('wf-1', 0, 'asyncflow.sleep', $1), ('wf-2', 0, 'asyncflow.sleep', $2)",
        repr(wake_soon), repr(time.time() - 100),
    )
    app = make_app(app_version="v1")

    @app.workflow(name="seeded")
    async def seeded():
        await asyncflow.sleep(3600)
        return time.time()

    async with app:
        finished = await _wait_all(app.storage.url, ["wf-1", "wf-2"], within=10)
    assert wake_soon - 0.05 <= finished["wf-1"] < wake_soon + 3
    assert finished["wf-2"] < wake_soon


async def test_client_resume_is_claimed_by_a_live_supervisor(make_app, db_url):
    app = make_app(recovery_interval_seconds=3600)  # only the NOTIFY can wake the supervisor
    runs = []

    @app.workflow()
    async def wf():
        runs.append(1)
        await asyncflow.recv(timeout_seconds=3600)
        return "resumed"

    async with app:
        handle = await app.start_workflow(wf, workflow_id="cl")
        await app.cancel_workflow("cl")
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await handle.get_result()
        async with asyncflow.Client(db_url) as client:
            await client.resume_workflow("cl")
            await client.send("cl", "go")
            assert await (await client.retrieve_workflow("cl")).get_result(10) == "resumed"


async def test_two_executions_never_both_record_a_step(make_app, conn):
    """A slow execution and a recovery race: the journal key lets one win each operation and
    the loser stops without doing anything after that."""
    app = make_app()
    gate = asyncio.Event()
    entered = asyncio.Event()
    both_inside = asyncio.Event()
    bodies = []

    @app.step()
    async def slow(i):
        bodies.append(i)
        entered.set()
        if bodies.count(0) == 2:
            both_inside.set()
        if i == 0:
            await gate.wait()
        return i

    @app.step()
    async def after(i):
        bodies.append(("after", i))
        return i

    @app.workflow()
    async def wf():
        return [await slow(0), await after(1)]

    async with app:
        handle = await app.start_workflow(wf, workflow_id="race")
        await entered.wait()  # the first execution is inside slow(0)
        # A second execution of the same workflow (as a recovery would start).
        first = app.runner.running.pop("race")
        await conn.execute("update asyncflow.workflows set executor_id = null")
        await app._supervisor.sweep(include_own=False)
        second = app.runner.running["race"]
        assert second is not first
        await both_inside.wait()  # the second execution is inside slow(0) too
        gate.set()  # both now race to record slow(0), then after(1)
        assert await handle.get_result(timeout_seconds=10) == [0, 1]
    rows = await conn.fetch(
        "select function_id, count(*) from asyncflow.operations group by 1 order by 1")
    assert [tuple(r) for r in rows] == [(0, 1), (1, 1)]
    assert bodies.count(("after", 1)) == 1  # the loser did nothing after losing
