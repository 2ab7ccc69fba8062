"""Ownership: a workflow runs in one live execution at a time.

Every claim of a workflow bumps its epoch; every write of an execution is fenced by the epoch it
started with, so a stale execution stops at its first refused write and records nothing. Here a
claim elsewhere is stood in for by bumping the epoch in the database (exactly what a claim by
another process does to the row); the multi-process fault tests are in tests/test_faults_*.py.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

import asyncflow

BUMP = """
UPDATE asyncflow.workflows
SET epoch = epoch + 1, executor_id = 'elsewhere', updated_at = statement_timestamp()
WHERE workflow_id = $1"""


async def _bump(conn: asyncpg.Connection, workflow_id: str) -> None:
    """What a claim by another live process does: a new epoch, its executor id."""
    await conn.execute(
        "insert into asyncflow.executors (executor_id, instance, beat_at, lease_seconds) "
        "values ('elsewhere', 'x', clock_timestamp(), 3600) on conflict do nothing")
    assert await conn.execute(BUMP, workflow_id) == "UPDATE 1"


def _watch_early_stops(app: asyncflow.AsyncFlow) -> asyncio.Event:
    """An event set when an execution of ``app`` stops without finishing its workflow."""
    stopped = asyncio.Event()
    runner = app.runner
    poke = runner.on_stopped_early

    def stopped_early() -> None:
        stopped.set()
        if poke is not None:
            poke()

    runner.on_stopped_early = stopped_early
    return stopped


async def _journal(conn: asyncpg.Connection, workflow_id: str) -> list[str]:
    rows = await conn.fetch(
        "select name from asyncflow.operations where workflow_id = $1 order by function_id",
        workflow_id)
    return [row["name"] for row in rows]


@pytest.mark.parametrize("operation", ["step", "send", "set_event", "write_stream",
                                       "close_stream", "recv", "sleep", "child", "enqueue",
                                       "finish"])
async def test_a_stale_execution_records_nothing(make_app, conn, caplog, operation):
    """Claimed elsewhere while it waited on something not durable, the execution's next write
    (whatever kind) is refused: nothing of it is recorded and it stops quietly."""
    app = make_app()
    queue = app.queue("stale-q")
    gate = asyncio.Event()
    waiting = asyncio.Event()
    body_runs: list[str] = []

    @app.step()
    async def effect() -> str:
        body_runs.append("step")
        return "done"

    @app.workflow()
    async def child() -> int:
        return 1

    @app.workflow()
    async def target() -> None:
        await asyncflow.recv("never", timeout_seconds=3600)

    @app.workflow()
    async def flow(other: str) -> str:
        waiting.set()
        await gate.wait()  # not durable: the claim elsewhere lands here
        if operation == "step":
            await effect()
        elif operation == "send":
            await asyncflow.send(other, "hello", topic="t")
        elif operation == "set_event":
            await asyncflow.set_event("k", 1)
        elif operation == "write_stream":
            await asyncflow.write_stream("s", 1)
        elif operation == "close_stream":
            await asyncflow.close_stream("s")
        elif operation == "recv":
            await asyncflow.recv("t", timeout_seconds=0)
        elif operation == "sleep":
            await asyncflow.sleep(0)
        elif operation == "child":
            await app.start_workflow(child, workflow_id="the-child")
        elif operation == "enqueue":
            await queue.enqueue(child, workflow_id="the-child")
        return "finished"

    caplog.set_level(logging.WARNING, logger="asyncflow")
    async with app:
        stopped = _watch_early_stops(app)
        other = await app.start_workflow(target, workflow_id="target")
        handle = await app.start_workflow(flow, other.workflow_id, workflow_id="stale")
        await waiting.wait()
        await _bump(conn, "stale")
        gate.set()
        await stopped.wait()  # the execution stopped by itself, without finishing
        assert "stale" not in app.running_workflows()
        status = await conn.fetchrow(
            "select status, output from asyncflow.workflows where workflow_id = 'stale'")
        assert tuple(status) == ("PENDING", None)
        assert await _journal(conn, "stale") == []
        assert body_runs == (["step"] if operation == "step" else [])  # ran, not recorded
        assert await conn.fetchval("select count(*) from asyncflow.messages") == 0
        assert await conn.fetchval("select count(*) from asyncflow.events") == 0
        assert await conn.fetchval("select count(*) from asyncflow.streams") == 0
        assert await conn.fetchval("select count(*) from asyncflow.stream_heads") == 0
        assert not await conn.fetchval(
            "select exists (select 1 from asyncflow.workflows where workflow_id = 'the-child')")
        assert handle.workflow_id == "stale"
    assert "claimed by another execution" in caplog.text


async def test_a_cancelled_parent_enqueues_no_child(make_app, conn):
    """A parent cancelled (by another process: no NOTIFY reaches it here) while its execution
    waited on something not durable enqueues nothing afterwards: the queued child's insert is
    fenced by the parent's ownership, like a started child's. (Found by the torture test: the
    child was inserted, the parent's journal entry refused, and the child of a cancelled
    workflow ran.)"""
    app = make_app()
    queue = app.queue("fenced-q")
    gate = asyncio.Event()
    waiting = asyncio.Event()

    @app.workflow()
    async def queued_child() -> int:
        return 1

    @app.workflow()
    async def parent() -> str:
        waiting.set()
        await gate.wait()
        await queue.enqueue(queued_child)
        return "finished"

    async with app:
        stopped = _watch_early_stops(app)
        handle = await app.start_workflow(parent, workflow_id="parent")
        await waiting.wait()
        await conn.execute("update asyncflow.workflows set status = 'CANCELLED' "
                           "where workflow_id = 'parent'")
        gate.set()
        await stopped.wait()  # the execution ended without finishing the workflow
        assert "parent" not in app.running_workflows()
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await handle.get_result(timeout_seconds=30)
        assert await conn.fetchval("select count(*) from asyncflow.workflows "
                                   "where parent_workflow_id = 'parent'") == 0
        assert await _journal(conn, "parent") == []


async def test_a_stray_own_workflow_is_repaired(make_app, conn):
    """A PENDING workflow recorded under this live executor that nothing here runs (its
    execution stopped) is claimed again by the supervisor's self-repair and finishes."""
    app = make_app()
    gate = asyncio.Event()
    waiting = asyncio.Event()

    @app.workflow()
    async def flow() -> str:
        waiting.set()
        await gate.wait()
        await asyncflow.sleep(0)
        return "finished"

    async with app:
        handle = await app.start_workflow(flow, workflow_id="stray")
        await waiting.wait()
        # Claimed elsewhere, then handed back to this executor (say, a lost commit after a
        # failover): this execution is stale, and nothing else runs the workflow.
        await _bump(conn, "stray")
        await conn.execute(
            "update asyncflow.workflows set executor_id = $1, "
            "updated_at = statement_timestamp() - interval '1 minute' where workflow_id = 'stray'",
            app.executor_id)
        gate.set()
        assert await handle.get_result(timeout_seconds=30) == "finished"
        assert app._supervisor is not None and app._supervisor.repaired == 1
        row = await conn.fetchrow(
            "select epoch, recovery_attempts from asyncflow.workflows where workflow_id = 'stray'")
        assert tuple(row) == (3, 1)


async def test_an_id_in_use_is_refused_even_while_its_holder_reconnects(make_app, conn):
    """A second launch with the executor id of a live app is refused, also in the moment the
    live app's listener reconnects (its lock is free then, its lease is not)."""
    app = make_app(executor_id="one-id", liveness_timeout_seconds=1.0)
    async with app:
        with pytest.raises(asyncflow.ExecutorIdInUseError):
            async with asyncflow.AsyncFlow(app.database_url, executor_id="one-id"):
                pass
        for _ in range(3):
            old = app.listener.backend_pid
            await conn.execute("select pg_terminate_backend($1::int)", old)
            with pytest.raises(asyncflow.ExecutorIdInUseError):
                async with asyncflow.AsyncFlow(app.database_url, executor_id="one-id",
                                               liveness_timeout_seconds=1.0):
                    pass
            await app.listener.wait_connected(not_pid=old, lock=True)
        assert app.health().healthy


async def test_a_clean_shutdown_ends_the_lease(make_app, conn):
    """After a clean shutdown another launch of the same id starts at once, and a live app
    with a long lease recovers what the stopped one left without waiting it out."""
    gate = asyncio.Event()
    first = make_app(executor_id="leaving", liveness_timeout_seconds=600, app_version="v1")

    @first.workflow(name="parked")
    async def parked() -> str:
        await gate.wait()
        return "never"

    async with first:
        await first.start_workflow(parked, workflow_id="left")
    assert await conn.fetchval(
        "select beat_at = '-infinity' from asyncflow.executors where executor_id = 'leaving'")
    async with make_app(executor_id="leaving", app_version="v0"):  # the same id, at once
        pass
    second = make_app(liveness_timeout_seconds=600, app_version="v1")

    @second.workflow(name="parked")
    async def parked_again() -> str:
        return "recovered"

    async with second:
        handle = await second.retrieve_workflow("left")
        assert await handle.get_result(timeout_seconds=30) == "recovered"


async def test_an_ended_lease_relaunches_under_the_same_id(make_app, conn):
    """A lease ended at once (a clean shutdown; a dead process declared dead by a supervisor
    on its host) while its executor still owns a PENDING workflow: the same executor id
    launches again and finishes it. (Found by the torture test: the launch computed how long
    the '-infinity' lease still runs and failed with "cannot subtract infinite timestamps" on
    Postgres 15 and 16; 17 and later define that arithmetic. Run this file with
    ASYNCFLOW_TEST_DATABASE_URL pointing at such a server to see it fail without the fix.)"""
    gate = asyncio.Event()
    first = make_app(executor_id="again", app_version="v1")

    @first.workflow(name="parked")
    async def parked() -> str:
        await gate.wait()
        return "never"

    async with first:
        await first.start_workflow(parked, workflow_id="kept")
    assert await conn.fetchval(
        "select beat_at = '-infinity' from asyncflow.executors where executor_id = 'again'")
    second = make_app(executor_id="again", app_version="v1")

    @second.workflow(name="parked")
    async def parked_again() -> str:
        return "resumed"

    async with second:
        handle = await second.retrieve_workflow("kept")
        assert await handle.get_result(timeout_seconds=30) == "resumed"


async def test_liveness_setting_is_validated():
    with pytest.raises(asyncflow.InvalidSettingError):
        asyncflow.AsyncFlow("postgresql://x/y", liveness_timeout_seconds=0.01)
    with pytest.raises(asyncflow.InvalidSettingError):
        asyncflow.AsyncFlow("postgresql://x/y", liveness_timeout_seconds=float("nan"))


async def test_health_reports_wakeups_that_do_not_arrive(make_app, monkeypatch):
    """The listener probes its own wake-ups: a NOTIFY committed through the pool must reach the
    LISTEN connection. When it does not (here the probe is committed without its NOTIFY, as if
    a transaction pooler had swallowed it), health turns unhealthy naming the cause; when
    probes arrive again it recovers."""
    from asyncflow._core.health import Monitor
    from asyncflow._storage import listener as _listener
    from asyncflow._storage.store import Store

    monkeypatch.setattr(_listener, "PROBE_EVERY", 0.1)
    monkeypatch.setattr(_listener, "PROBE_WITHIN", 0.3)
    app = make_app()
    async with app:
        wakeups = app.listener.wakeups
        lost, back = asyncio.Event(), asyncio.Event()
        failed, ok = Monitor.failed, Monitor.ok

        def failing(self: Monitor, exc: BaseException) -> None:
            failed(self, exc)
            if self is wakeups:
                lost.set()

        def recovering(self: Monitor) -> None:
            ok(self)
            if self is wakeups:
                back.set()

        monkeypatch.setattr(Monitor, "failed", failing)
        monkeypatch.setattr(Monitor, "ok", recovering)
        probe = Store.probe_wakeups

        async def swallowed(self: Store, token: str) -> None:
            await self.storage.execute("SELECT 1")

        monkeypatch.setattr(Store, "probe_wakeups", swallowed)
        await lost.wait()
        health = app.health()
        assert not health.healthy
        assert "listen_url" in (health.components["wakeups"].error or "")
        monkeypatch.setattr(Store, "probe_wakeups", probe)
        back.clear()
        await back.wait()
        assert app.health().healthy
