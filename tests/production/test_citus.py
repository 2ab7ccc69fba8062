"""asyncflow on a Citus cluster (a coordinator and two workers, tests/citus_cluster.py):
``asyncflow db distribute`` refuses plain Postgres and leaves it untouched, may run again, and
every wake-up NOTIFY leaves from the coordinator -- never from the worker a statement was routed
to, where no listener hears it.

Runs on the session's cluster under ``ASYNCFLOW_TEST_CITUS=1`` (``.ci/citus``), else on a cluster
of its own when Citus is installed (``../shared/citus/build.sh``); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from citus_cluster import SHARD_COUNT, CitusCluster, citus_missing
from clilib import cli_json
from faultlib import admin

import asyncflow
from asyncflow._storage.citus import distribute
from asyncflow._storage.database import Storage, channel_name
from asyncflow._storage.sql import distribute as D

pytestmark = pytest.mark.skipif(citus_missing() is not None, reason=citus_missing() or "")


@pytest.fixture
async def citus_db(citus_nodes: CitusCluster) -> AsyncIterator[str]:
    """A database with Citus on every node and the nodes registered, not distributed yet."""
    name = f"asyncflow_c_{uuid.uuid4().hex[:12]}"
    await citus_nodes.create_database(name)
    yield name
    await citus_nodes.drop_database(name)


async def _storage(url: str) -> Storage:
    storage = Storage(url, "asyncflow", pool_size=2)
    await storage.open()
    return storage


async def test_distribute_refuses_plain_postgres_and_changes_nothing(
        citus_nodes: CitusCluster) -> None:
    name = f"asyncflow_p_{uuid.uuid4().hex[:12]}"
    await admin(citus_nodes.url(), f'CREATE DATABASE "{name}"')  # the coordinator only: no Citus
    try:
        storage = await _storage(citus_nodes.url(name))
        try:
            with pytest.raises(asyncflow.DistributionError, match="does not run Citus"):
                await distribute(storage)
            assert not await storage.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'asyncflow')")
            await storage.migrate()
            with pytest.raises(asyncflow.DistributionError):
                await distribute(storage)
            assert not storage.distributed
            assert await storage.fetchval(
                "SELECT to_regclass('asyncflow.workflows_deduplication_idx') IS NOT NULL")
            assert not await storage.fetchval(
                "SELECT to_regclass('asyncflow.coordinator') IS NOT NULL")
        finally:
            await storage.close()
    finally:
        await admin(citus_nodes.url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_distribute_runs_again_and_from_the_cli(citus_nodes: CitusCluster,
                                                      citus_db: str) -> None:
    url = citus_nodes.url(citus_db)
    storage = await _storage(url)
    try:
        assert not storage.distributed
        first = await distribute(storage, shard_count=SHARD_COUNT)
        tables = tuple(table for table, _ in D.DISTRIBUTED)
        assert first.distributed == tables and first.already == ()
        assert first.shard_nodes == len(citus_nodes.workers)
        assert storage.distributed
        again = await distribute(storage, shard_count=SHARD_COUNT)
        assert again.distributed == () and again.already == tables
        placed = await storage.fetch(
            "SELECT DISTINCT colocationid FROM pg_dist_partition "
            "WHERE logicalrelid::text LIKE 'asyncflow.%'")
        assert len(placed) == 1  # co-located: one group
        local = await storage.fetchval(
            "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid IN "
            "('asyncflow.executors'::regclass, 'asyncflow.queues'::regclass, "
            "'asyncflow.schema_version'::regclass, 'asyncflow.transaction_guard'::regclass)")
        assert local == 0  # these stay on the coordinator
    finally:
        await storage.close()
    out = await cli_json(url, "db", "distribute")
    assert out["distributed"] == [] and out["already"] == list(tables)


async def test_no_notify_ever_leaves_a_worker(citus_nodes: CitusCluster, citus_db: str) -> None:
    url = citus_nodes.url(citus_db)
    storage = await _storage(url)
    try:
        await distribute(storage, shard_count=SHARD_COUNT)
    finally:
        await storage.close()
    channel = channel_name("asyncflow")
    heard: dict[str, list[str]] = {"coordinator": [], "workers": []}
    from_worker = asyncio.Event()

    def hear(where: str, payload: str) -> None:
        heard[where].append(payload)
        if where == "workers":
            from_worker.set()

    listeners = []
    for node in citus_nodes.nodes:
        where = "coordinator" if node is citus_nodes.coordinator else "workers"
        conn = await asyncpg.connect(node.url(citus_db))
        await conn.add_listener(channel, lambda *args, where=where: hear(where, args[3]))
        listeners.append(conn)
    try:
        # The detector works: a statement routed whole to one shard NOTIFYs from its worker.
        raw = await asyncpg.connect(url)
        try:
            await raw.execute(
                "INSERT INTO asyncflow.workflows (workflow_id, name, status, inputs, app_version)"
                " VALUES ('probe', 'probe', 'SUCCESS', '[]', '')")
            await raw.fetch(
                "WITH u AS (UPDATE asyncflow.workflows SET status = status "
                "WHERE workflow_id = 'probe' RETURNING workflow_id) "
                "SELECT pg_notify($1, 'x' || workflow_id)::text FROM u", channel)
        finally:
            await raw.close()
        await asyncio.wait_for(from_worker.wait(), 10)
        assert heard["workers"] == ["xprobe"]
        heard["workers"].clear()

        await _every_wake_up(url)
        assert len(heard["coordinator"]) >= 20
        # Anything a worker sent has arrived by the time the coordinator's last one has: the
        # workers' listeners got the same time, and their queues are read by the same loop.
        await asyncio.sleep(0)
        assert heard["workers"] == [], heard["workers"]
    finally:
        for conn in listeners:
            await conn.close()


async def _every_wake_up(url: str) -> None:
    """Starts, steps, messages (one and batched), events, streams, children, queues (with
    deduplication), a debounce, cancel, resume and a timeout, from an app and a client."""
    app = asyncflow.AsyncFlow(url, recovery_interval_seconds=0.2)
    queue = app.queue("q", concurrency=2)

    @app.step()
    async def double(x: int) -> int:
        return 2 * x

    @app.workflow()
    async def child(x: int) -> int:
        await asyncflow.set_event("half", x)
        await asyncflow.write_stream("s", x)
        await asyncflow.close_stream("s")
        return await double(x)

    @app.workflow()
    async def parent(x: int) -> int:
        message = await asyncflow.recv("go", timeout_seconds=30)
        handle = await asyncflow.start_workflow(child, x + int(message))
        return await handle.get_result()

    @app.workflow()
    async def sleeper() -> None:
        await asyncflow.sleep(30)

    async with app:
        parents = [await app.start_workflow(parent, i, workflow_id=f"p{i}") for i in range(4)]
        for i in range(4):
            await app.send(f"p{i}", 1, "go")
        assert [await h.get_result(timeout_seconds=30) for h in parents] == [2, 4, 6, 8]
        queued = [await queue.enqueue(child, i) for i in range(3)]
        held = await queue.enqueue(child, 7, deduplication_id="once")
        assert await held.get_result(timeout_seconds=30) == 14
        assert [await h.get_result(timeout_seconds=30) for h in queued] == [0, 2, 4]
        stopped = await app.start_workflow(sleeper)
        await app.cancel_workflow(stopped.workflow_id)
        await app.resume_workflow(stopped.workflow_id)
        await app.cancel_workflow(stopped.workflow_id)
        timed = await app.start_workflow(sleeper, timeout_seconds=0.5)
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await timed.get_result(timeout_seconds=30)
        debouncer = app.debouncer(child, key="k", period_seconds=0.2)
        burst = await debouncer.debounce(1)
        await debouncer.debounce(2)
        assert await burst.get_result(timeout_seconds=30) == 4
