"""Races: two processes start the same workflow ids at once; two supervisors recover the same
dead executor; cancel races completion; send races the receiver's timeout.
"""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest
from faultlib import size

import asyncflow

pytestmark = [pytest.mark.soak, pytest.mark.slow]


async def test_two_processes_start_the_same_ids_at_once(db_url, conn, procs):
    n = size(50, 300, "ASYNCFLOW_SOAK_SAME_ID")
    await conn.execute("create table effects (workflow_id text, executor text)")
    a = await procs("fault_starter.py", db_url, "starter-a", str(n))
    b = await procs("fault_starter.py", db_url, "starter-b", str(n))
    await a.expect("READY")
    await b.expect("READY")
    await conn.execute("notify go")
    results_a = orjson.loads((await a.expect("RESULTS")).split(" ", 1)[1])
    results_b = orjson.loads((await b.expect("RESULTS")).split(" ", 1)[1])
    created_a = int((await a.expect("CREATED")).split()[1])
    created_b = int((await b.expect("CREATED")).split()[1])
    expected = [[i, "ran"] for i in range(n)]
    assert results_a == expected and results_b == expected
    assert created_a + created_b == n
    assert await conn.fetchval("select count(*) from asyncflow.workflows") == n
    # Each workflow ran exactly once, in the process that created it.
    runs = await conn.fetch(
        "select e.workflow_id, e.executor, w.executor_id from effects e "
        "join asyncflow.workflows w using (workflow_id)")
    assert len(runs) == n
    assert all(r["executor"] == r["executor_id"] for r in runs)
    print(f"same ids: {created_a} created by a, {created_b} by b")


async def test_two_live_supervisors_recover_one_dead_executor(db_url, conn, procs):
    n = size(30, 200, "ASYNCFLOW_SOAK_RECOVER")
    await conn.execute("create table effects (workflow_id text, step int)")
    await conn.execute("create table tx_effects (workflow_id text, step int)")
    b = await procs("worker.py", db_url, "sup-b", "serve")
    c = await procs("worker.py", db_url, "sup-c", "serve")
    await b.expect("READY")
    await c.expect("READY")
    a = await procs("worker.py", db_url, "sup-a", "start", str(n), "4", "2")
    for _ in range(n):
        await a.expect("BLOCKED")
    a.kill()
    await a.wait()
    async with asyncflow.Client(db_url) as client:
        for k in range(n):
            handle = await client.retrieve_workflow(f"wf-{k}")
            assert await handle.get_result(timeout_seconds=30) == [0, 10, 20, 30]
    rows = await conn.fetch("select executor_id, recovery_attempts from asyncflow.workflows")
    assert {r["executor_id"] for r in rows} <= {"sup-b", "sup-c"}
    assert {r["recovery_attempts"] for r in rows} == {1}  # each claimed exactly once
    tx = await conn.fetch("select workflow_id, step, count(*) as n from tx_effects group by 1, 2")
    assert len(tx) == n * 4 and {r["n"] for r in tx} == {1}
    steps = await conn.fetch("select step, count(*) as n from effects group by 1 order by 1")
    # Only the step in flight at the kill ran twice (once in the dead process).
    assert [(r["step"], r["n"]) for r in steps] == [(0, n), (1, n), (2, 2 * n), (3, n)]


async def test_cancel_racing_completion(make_app, db_url, conn):
    n = size(60, 400, "ASYNCFLOW_SOAK_CANCEL_RACE")
    app = make_app()
    gates = {f"c{i}": asyncio.Event() for i in range(n)}
    parked = asyncio.Event()
    first_runs: dict[str, int] = {}

    @app.step()
    async def first() -> int:
        wid = asyncflow.workflow_id()
        first_runs[wid] = first_runs.get(wid, 0) + 1
        return 1

    waiting: set[str] = set()
    last_runs: dict[str, int] = {}

    @app.step()
    async def last() -> int:
        wid = asyncflow.workflow_id()
        last_runs[wid] = last_runs.get(wid, 0) + 1
        waiting.add(wid)
        if len(waiting) == n:
            parked.set()
        await gates[wid].wait()
        return 2

    @app.workflow()
    async def racer() -> int:
        return await first() + await last()

    rng = random.Random(6)
    async with app, asyncflow.Client(db_url) as client:
        handles = [await app.start_workflow(racer, workflow_id=wid) for wid in gates]
        waiters = [asyncio.ensure_future(h.get_result(timeout_seconds=60)) for h in handles]
        client_waiters = [asyncio.ensure_future(
            (await client.retrieve_workflow(wid)).get_result(timeout_seconds=60))
            for wid in gates]
        await parked.wait()

        async def race(wid: str) -> None:
            canceller = app if rng.random() < 0.5 else client
            if rng.random() < 0.5:
                gates[wid].set()
                await canceller.cancel_workflow(wid)
            else:
                cancel = asyncio.ensure_future(canceller.cancel_workflow(wid))
                gates[wid].set()
                await cancel

        await asyncio.gather(*(race(wid) for wid in gates))
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        client_outcomes = await asyncio.gather(*client_waiters, return_exceptions=True)
        rows = {r["workflow_id"]: r for r in await conn.fetch(
            "select workflow_id, status, output from asyncflow.workflows")}
        for wid, outcome, seen in zip(gates, outcomes, client_outcomes, strict=True):
            row = rows[wid]
            assert row["status"] in ("SUCCESS", "CANCELLED")
            if row["status"] == "SUCCESS":
                assert outcome == seen == 3 and row["output"] == "3"
            else:
                assert isinstance(outcome, asyncflow.WorkflowCancelledError)
                assert isinstance(seen, asyncflow.WorkflowCancelledError)
                assert row["output"] is None
        cancelled = [wid for wid in gates if rows[wid]["status"] == "CANCELLED"]
        # A step already finishing when the cancel committed may still have been journaled
        # (its outcome is kept); resuming replays it instead of running it again.
        journaled = {r["workflow_id"] for r in await conn.fetch(
            "select workflow_id from asyncflow.operations where function_id = 1")}
        runs_before = dict(last_runs)
        for wid in cancelled:
            await app.resume_workflow(wid)
        for wid in cancelled:
            assert await (await app.retrieve_workflow(wid)).get_result(timeout_seconds=30) == 3
    assert all(v == 1 for v in first_runs.values())  # resumed: the recorded step never reran
    for wid in cancelled:
        assert last_runs[wid] == runs_before[wid] + (0 if wid in journaled else 1)
    print(f"cancel race: {len(cancelled)} of {n} cancelled ({len(journaled & set(cancelled))} "
          "with their last step journaled), the rest completed")


async def test_send_racing_the_receivers_timeout(make_app, db_url, conn):
    """Messages sent while receivers time out are received or left in the mailbox: never
    dropped, never duplicated, never reordered."""
    n = size(30, 100, "ASYNCFLOW_SOAK_TIMEOUT_RACE")
    per = 12
    app = make_app()
    timeouts = [0, 0.001, 0.003, 0.01, 0.03]

    @app.workflow()
    async def receiver(attempts: int) -> list[object]:
        got = []
        for k in range(attempts):
            message = await asyncflow.recv("t", timeout_seconds=timeouts[k % len(timeouts)])
            if message is not None:
                got.append(message)
        return got

    async with app, asyncflow.Client(db_url) as client:
        ids = [f"r{i}" for i in range(n)]
        # Few enough attempts that many messages arrive around or after the last timeout.
        rng = random.Random(7)
        handles = [await app.start_workflow(receiver, rng.randint(3, 30), workflow_id=wid)
                   for wid in ids]

        async def sender(wid: str) -> None:
            for j in range(per):
                await client.send(wid, j, "t")

        await asyncio.gather(*(sender(wid) for wid in ids))
        results = [await h.get_result(timeout_seconds=60) for h in handles]
    received = left = 0
    for wid, got in zip(ids, results, strict=True):
        rest = [orjson.loads(r["message"]) for r in await conn.fetch(
            "select message from asyncflow.messages where destination_id = $1 "
            "order by message_id", wid)]
        assert got + rest == list(range(per)), (wid, got, rest)
        received += len(got)
        left += len(rest)
    print(f"timeout race: {received} received, {left} left in mailboxes")


async def test_recovery_claim_is_not_blocked_by_a_send_in_flight(make_app, conn):
    """A send to a workflow holds a key-share lock on its row (the foreign key check) until it
    commits; a recovery sweep running meanwhile must still claim the workflow, not skip it."""
    app = make_app(app_version="v1", recovery_interval_seconds=3600)

    @app.workflow(name="orphan")
    async def orphan() -> object:
        return await asyncflow.recv(timeout_seconds=30)

    async with app:
        await conn.execute(
            "insert into asyncflow.workflows (workflow_id, name, status, inputs, executor_id, "
            "app_version) values ('o', 'orphan', 'PENDING', '{\"args\": [], \"kwargs\": {}}', "
            "'dead-executor', 'v1')")
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "insert into asyncflow.messages (destination_id, message) values ('o', '\"hi\"')")
        try:
            assert await app._supervisor.sweep(include_own=False) == 1
        finally:
            await tx.commit()
        await conn.execute("select pg_notify('asyncflow_asyncflow', 'mo')")
        assert await (await app.retrieve_workflow("o")).get_result(timeout_seconds=10) == "hi"
