"""The database goes away under two live workers (issue 19): a restart of Postgres, and a
failover from a primary to its promoted replica. Neither worker dies, so neither may take the
other's workflows: each step body runs in the process that started its workflow, once — or again
in that same process when its connection was lost mid-step — and never in two live processes.

Every step body is counted in a side table on the test server (tests/bodycount.py), which
outlives the faults; the checkpoints are logged in the app's database.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from bodycount import (
    collect,
    completed,
    in_one_process,
    never_two_go_on,
    no_run_after_checkpoint,
    prepare_app_database,
    prepare_side,
)
from clusters import ReplicatedPair, missing
from faultlib import PrivateServer
from liveprocs import Lines, expected_steps, results, start_worker

from asyncflow._storage.database import Storage

pytestmark = pytest.mark.soak

LIVENESS = "2"
GATED, STEPS, GATE_STEP = 8, 4, 2
RUNNING = (2, 40, 50)  # per worker: 2 workflows of 40 steps of 50 ms, running through the fault
WORKERS = ("a", "b")


async def _prepare(url: str) -> None:
    storage = Storage(url, "asyncflow", pool_size=1)
    await storage.open()
    try:
        await storage.migrate()
    finally:
        await storage.close()
    conn = await asyncpg.connect(url)
    try:
        await prepare_app_database(conn)
    finally:
        await conn.close()


async def _start(procs, app_url: str, side_url: str, prefix: str) -> dict[str, Lines]:
    workers = {}
    for name in WORKERS:
        executor = f"{prefix}-{name}"
        workers[executor] = await start_worker(procs, app_url, side_url, executor, LIVENESS,
                                               GATED, STEPS, GATE_STEP, RUNNING)
    for lines in workers.values():
        for _ in range(GATED):
            await lines.next("GATED")
    return workers


async def _after_outage(workers: dict[str, Lines], pids: dict[str, int], app_url: str,
                        side_url: str) -> None:
    """Both workers are back; for twice the liveness timeout nobody may take anybody's
    workflows; then the gates open and everything must finish where it started."""
    for executor, lines in workers.items():
        await lines.listener(not_pid=pids[executor])
    await asyncio.gather(*(lines.watch(2 * float(LIVENESS)) for lines in workers.values()))
    for lines in workers.values():
        lines.open_gate()
    expected: dict[str, int] = {}
    for executor in workers:
        expected.update(expected_steps(executor, GATED, STEPS, RUNNING))
    outcomes = await results(app_url, list(expected), within=45)
    evidence = await collect(side_url, app_url)
    problems = [f"{wid}: {value!r}" for wid, value in outcomes.items()
                if not isinstance(value, list)]
    problems += completed(evidence, expected)
    problems += in_one_process(evidence, {wid: wid.rsplit("-", 1)[0] for wid in expected})
    problems += no_run_after_checkpoint(evidence) + never_two_go_on(evidence)
    assert not problems, (f"{len(problems)} violations ({evidence.summary()}):\n"
                          + "\n".join(problems[:30]))
    again = Counter((r.workflow_id, r.step) for r in evidence.runs)
    print(f"{evidence.summary()}; run again in their own process after losing the connection: "
          f"{sorted(k for k, n in again.items() if n > 1)}")


@pytest.fixture(scope="module")
def private_server() -> Iterator[PrivateServer]:
    server = PrivateServer()
    try:
        yield server
    finally:
        server.close()


async def test_postgres_restart_under_two_workers(private_server, db_url, procs):
    app_url = await private_server.new_database()
    await _prepare(app_url)
    await prepare_side(db_url)
    workers = await _start(procs, app_url, db_url, "restart")
    pids = {executor: await lines.listener() for executor, lines in workers.items()}
    await private_server.restart("immediate")
    await _after_outage(workers, pids, app_url, db_url)


@pytest.fixture
async def pair() -> AsyncIterator[ReplicatedPair]:
    reason = missing()
    if reason is not None:
        pytest.skip(f"no private primary/replica cluster: {reason}")
    made = await asyncio.to_thread(ReplicatedPair)
    try:
        yield made
    finally:
        await asyncio.to_thread(made.close)


async def test_failover_to_a_promoted_replica_under_two_workers(pair, db_url, procs):
    admin = await asyncpg.connect(pair.primary.url())
    try:
        await admin.execute("create database app")
        # Asynchronous replication for the workers, as in production.
        await admin.execute("alter database app set synchronous_commit = local")
    finally:
        await admin.close()
    app_url = pair.url("app")
    await _prepare(app_url)
    await prepare_side(db_url)
    workers = await _start(procs, app_url, db_url, "failover")
    pids = {executor: await lines.listener() for executor, lines in workers.items()}
    # Everything up to the gated steps is on the replica (the running workflows go on writing
    # asynchronously: their last commits may be lost in the failover).
    conn = await asyncpg.connect(app_url)
    try:
        await conn.execute("set synchronous_commit = remote_apply")
        await conn.execute("create table replicated (at timestamptz default now())")
    finally:
        await conn.close()
    await pair.fail_over()
    try:
        await _after_outage(workers, pids, app_url, db_url)
    except BaseException:
        print(pair.logs()[-4000:])
        raise
