"""A Citus worker node crashes and restarts (``pg_ctl stop -m immediate``, then start) while
workflows run on a distributed schema: nothing is lost (every workflow, started or queued,
finishes with its result) and nothing runs twice (each transaction's effect is committed once,
each journal entry exists once).

Runs on the session's cluster under ``ASYNCFLOW_TEST_CITUS=1`` (``.ci/citus``), else on a cluster
of its own when Citus is installed; skipped otherwise.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from citus_cluster import SHARD_COUNT, CitusCluster, citus_missing

import asyncflow
from asyncflow._storage.citus import distribute
from asyncflow._storage.database import Storage

pytestmark = pytest.mark.skipif(citus_missing() is not None, reason=citus_missing() or "")

STARTED = 24
QUEUED = 16


@pytest.fixture
async def distributed_url(citus_nodes: CitusCluster) -> AsyncIterator[str]:
    name = f"asyncflow_r_{uuid.uuid4().hex[:12]}"
    await citus_nodes.create_database(name)
    storage = Storage(citus_nodes.url(name), "asyncflow", pool_size=2)
    await storage.open()
    try:
        await distribute(storage, shard_count=SHARD_COUNT)
    finally:
        await storage.close()
    conn = await asyncpg.connect(citus_nodes.url(name))
    try:  # the transactions' effects: a plain table on the coordinator
        await conn.execute("CREATE TABLE effects (workflow_id text NOT NULL)")
    finally:
        await conn.close()
    yield citus_nodes.url(name)
    await citus_nodes.drop_database(name)


async def test_a_worker_restarted_mid_run_loses_nothing_and_runs_nothing_twice(
    citus_nodes: CitusCluster, distributed_url: str
) -> None:
    app = asyncflow.AsyncFlow(distributed_url, recovery_interval_seconds=0.2)
    queue = app.queue("restart", concurrency=4)
    finished: set[str] = set()
    halfway = asyncio.Event()

    @app.step()
    async def work(i: int) -> int:
        await asyncio.sleep(0.02)
        return i * 10

    @app.transaction()
    async def effect(workflow_id: str) -> None:
        await asyncflow.connection().execute(
            "INSERT INTO effects (workflow_id) VALUES ($1)", workflow_id)

    @app.workflow()
    async def job(i: int) -> int:
        first = await work(i)
        await asyncflow.sleep(0.05)
        await effect(asyncflow.workflow_id())
        second = await work(i + 1)
        return first + second

    async def result(handle: asyncflow.WorkflowHandle[int]) -> int:
        value = await handle.get_result(timeout_seconds=180)
        finished.add(handle.workflow_id)
        if len(finished) >= (STARTED + QUEUED) // 4:
            halfway.set()
        return value

    async with app:
        handles = [await app.start_workflow(job, i, workflow_id=f"s{i}") for i in range(STARTED)]
        handles += [await queue.enqueue(job, i, workflow_id=f"q{i}") for i in range(QUEUED)]
        results = asyncio.gather(*(result(h) for h in handles))
        await asyncio.wait_for(halfway.wait(), 60)
        unfinished = STARTED + QUEUED - len(finished)
        await asyncio.to_thread(citus_nodes.restart_worker, 0)
        values = await asyncio.wait_for(results, 180)
    assert unfinished > 0  # the crash came mid-run
    expected = [i * 10 + (i + 1) * 10 for i in range(STARTED)]
    expected += [i * 10 + (i + 1) * 10 for i in range(QUEUED)]
    assert values == expected
    conn = await asyncpg.connect(distributed_url)
    try:
        effects = await conn.fetch(
            "SELECT workflow_id, count(*) AS n FROM effects GROUP BY workflow_id")
        assert {r["workflow_id"]: r["n"] for r in effects} == {h.workflow_id: 1 for h in handles}
        statuses = await conn.fetch(
            "SELECT status, count(*) AS n FROM asyncflow.workflows GROUP BY status")
        assert {r["status"]: r["n"] for r in statuses} == {"SUCCESS": STARTED + QUEUED}
        entries = await conn.fetchval(
            "SELECT count(*) FROM asyncflow.operations o JOIN asyncflow.workflows w "
            "USING (workflow_id)")
        assert entries == 4 * (STARTED + QUEUED)  # work, sleep, effect, work: once each
    finally:
        await conn.close()
