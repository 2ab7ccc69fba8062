"""Crash faults: a worker SIGKILLed again and again, and pool connections cut mid-step and
mid-commit. Nothing is lost and nothing is done twice.

Sizes are small by default; ``ASYNCFLOW_SOAK=1`` (or the ``ASYNCFLOW_SOAK_*`` variables) scales
them up.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from pathlib import Path

import pytest
from faultlib import FaultProxy, size

import asyncflow

pytestmark = [pytest.mark.soak, pytest.mark.slow]


async def _progress(proc, count: int) -> bool:
    """Read ``count`` progress lines (step executions); True if the worker finished first."""
    stdout = proc.process.stdout
    seen = 0
    while seen < count:
        raw = await stdout.readline()
        if not raw:
            raise AssertionError("worker died on its own:\n" + "\n".join(proc.lines[-30:]))
        line = raw.decode().rstrip("\n")
        if line.startswith("S "):
            seen += 1
        else:
            proc.lines.append(line)
        if line.startswith("ALLDONE"):
            return True
    return False


async def _launch(procs, db_url: str, executor: str, count: int, steps: int):
    """Start a worker; like a process supervisor, start it again if the server still holds the
    executor id of its SIGKILLed predecessor (it lets go once it notices the socket closed)."""
    for _ in range(100):
        worker = await procs("fault_worker.py", db_url, executor, str(count), str(steps))
        try:
            await worker.expect("LAUNCHED")
            return worker
        except AssertionError:
            if not any("ExecutorIdInUseError" in line for line in worker.lines):
                raise
    raise AssertionError(f"executor id {executor} never became free")


async def test_kill_loop_nothing_lost_nothing_twice(db_url, conn, procs):
    count = size(200, 200, "ASYNCFLOW_SOAK_KILL_WORKFLOWS")
    steps = 5
    kills = size(20, 60, "ASYNCFLOW_SOAK_KILLS")
    seed = int(os.environ.get("ASYNCFLOW_SOAK_SEED") or time.time_ns() % 100000)
    rng = random.Random(seed)
    await conn.execute("create table effects (workflow_id text, step int, after_checkpoint bool)")
    await conn.execute("create table tx_effects (workflow_id text, step int)")
    # Mean progress per incarnation: small enough that every kill lands mid-run.
    budget = max(1, count * steps // (kills * 3))
    killed = 0
    incarnation = 0
    while True:
        # Alternate between relaunching the same executor id (it recovers its own workflows at
        # launch) and a new one (the dead executor's workflows are claimed via pg_locks).
        executor = "kill-a" if incarnation % 2 == 0 else f"kill-{incarnation}"
        incarnation += 1
        worker = await _launch(procs, db_url, executor, count, steps)
        if killed == kills:
            done = await _progress(worker, 10**9)
            assert done
            break
        done = await _progress(worker, rng.randint(0, 2 * budget))
        worker.kill()
        await worker.wait()
        if done:
            break
        killed += 1
    assert killed == kills, f"the workflows finished after {killed} kills (seed {seed})"

    rows = await conn.fetch("select workflow_id, status, output from asyncflow.workflows")
    assert len(rows) == count
    for row in rows:
        n = int(row["workflow_id"].split("-")[1])
        assert row["status"] == "SUCCESS", (row, seed)
        assert row["output"] == str([i * 10 + n for i in range(steps)]).replace(" ", "")
    # Every transaction body committed exactly once.
    tx = await conn.fetch("select workflow_id, step, count(*) as n from tx_effects group by 1, 2")
    assert len(tx) == count * steps
    assert {r["n"] for r in tx} == {1}, seed
    # Every step ran at least once, and never again once its checkpoint had committed.
    ran = await conn.fetchval("select count(distinct (workflow_id, step)) from effects")
    assert ran == count * steps
    assert await conn.fetchval("select count(*) from effects where after_checkpoint") == 0, seed
    reruns = await conn.fetchval("select count(*) from effects") - count * steps
    print(f"kill loop: seed {seed}, {killed} kills, {incarnation} incarnations, {reruns} step "
          "bodies re-run after a kill (in flight when killed)")


# -- pool connection loss ------------------------------------------------------------------------


@pytest.fixture
async def proxy(db_url):
    cutter = FaultProxy(db_url)
    url = await cutter.start()
    yield cutter, url
    await cutter.close()


@pytest.mark.parametrize(
    ("kind", "trigger", "after", "runs"),
    [
        # The step's checkpoint INSERT never reaches the server: not recorded, so retried.
        ("step", "marker", False, 2),
        # The INSERT ran and committed but its reply was lost: the retry finds it recorded.
        ("step", "marker", True, 1),
        # The transaction's checkpoint INSERT is cut: the transaction never commits.
        ("transaction", "marker", False, 2),
        ("transaction", "marker", True, 2),
        # COMMIT is lost on its way to the server: rolled back, so the body runs again.
        ("transaction", "COMMIT", False, 2),
        # COMMIT ran but its reply was lost: committed once, never run again.
        ("transaction", "COMMIT", True, 1),
    ],
)
async def test_connection_cut_mid_checkpoint(make_app, conn, proxy, kind, trigger, after, runs):
    cutter, url = proxy
    await conn.execute("create table tx_effects (workflow_id text, attempt int)")
    app = asyncflow.AsyncFlow(url, recovery_interval_seconds=0.2)
    marker = f"CUT-{uuid.uuid4().hex}"
    bodies = []
    fired = None

    def arm() -> None:
        nonlocal fired
        if not bodies:  # only the first execution is cut
            fired = cutter.arm((marker if trigger == "marker" else trigger).encode(),
                               after=after)
        bodies.append(1)

    @app.step()
    async def step_body() -> str:
        arm()
        return marker

    @app.transaction()
    async def tx_body() -> str:
        arm()
        await asyncflow.connection().execute(
            "insert into tx_effects values ($1, $2)", asyncflow.workflow_id(), len(bodies))
        return marker

    @app.workflow()
    async def wf() -> list[str]:
        first = await (step_body() if kind == "step" else tx_body())
        return [first, await after_cut()]

    @app.step()
    async def after_cut() -> str:
        return "next"

    async with app:
        handle = await app.start_workflow(wf, workflow_id="cut")
        assert await handle.get_result(timeout_seconds=30) == [marker, "next"]
    assert fired is not None and fired.is_set()
    assert len(bodies) == runs
    journal = await conn.fetch(
        "select function_id, output from asyncflow.operations where workflow_id = 'cut' "
        "order by function_id")
    assert [(r["function_id"], r["output"]) for r in journal] == [
        (0, f'"{marker}"'), (1, '"next"')]
    if kind == "transaction":
        assert await conn.fetchval("select count(*) from tx_effects") == 1


@pytest.mark.parametrize("noticed", [False, True])
async def test_connection_killed_inside_transaction_body(make_app, conn, noticed):
    """The transaction's own connection dies while its body runs: the transaction is retried as
    a database outage, never recorded as the step's failure."""
    await conn.execute("create table tx_effects (workflow_id text, attempt int)")
    app = make_app()
    attempts = []
    pids: asyncio.Queue[int] = asyncio.Queue()
    resume = asyncio.Event()

    @app.transaction()
    async def body() -> int:
        c = asyncflow.connection()
        attempts.append(1)
        await c.execute("insert into tx_effects values ($1, $2)", asyncflow.workflow_id(),
                        len(attempts))
        if len(attempts) == 1:
            closed = asyncio.Event()
            c.add_termination_listener(lambda _c: closed.set())
            await pids.put(c.get_server_pid())
            await resume.wait()
            if noticed:
                await closed.wait()
        await c.execute("select 1")
        return len(attempts)

    @app.workflow()
    async def wf() -> int:
        return await body()

    async with app:
        handle = await app.start_workflow(wf, workflow_id="killed-tx")
        assert await conn.fetchval("select pg_terminate_backend($1::int)", await pids.get())
        resume.set()
        assert await handle.get_result(timeout_seconds=30) == 2
    assert await conn.fetchval("select count(*) from tx_effects") == 1
    assert await conn.fetchval("select attempt from tx_effects") == 2


async def test_transaction_body_os_error_is_a_failure_not_an_outage(make_app, conn):
    """Errors the body raises itself (a missing file, a timeout) fail the transaction; they are
    not mistaken for a lost database connection and retried forever."""
    app = make_app()
    attempts = []

    @app.transaction()
    async def opens(path: str) -> str:
        attempts.append(path)
        return await asyncio.to_thread(Path(path).read_text)

    @app.transaction()
    async def times_out() -> None:
        attempts.append("timeout")
        raise TimeoutError("the other service did not answer")

    @app.workflow()
    async def wf(which: str) -> str:
        if which == "file":
            return await opens("/nonexistent/asyncflow/file")
        await times_out()
        return "unreachable"

    async with app:
        # Rebuilt as itself, filename included (issue 9 item 1: the same type on every path).
        with pytest.raises(FileNotFoundError, match=r"No such file.*asyncflow/file"):
            await (await app.start_workflow(wf, "file")).get_result(timeout_seconds=10)
        with pytest.raises(TimeoutError, match="did not answer"):
            await (await app.start_workflow(wf, "timeout")).get_result(timeout_seconds=10)
    assert attempts == ["/nonexistent/asyncflow/file", "timeout"]


async def test_pool_connections_killed_while_steps_run(make_app, conn):
    """Every pooled connection is terminated while step bodies run: each step's outcome is
    recorded exactly once (or the step is retried), and no raw driver error escapes."""
    n = size(30, 200, "ASYNCFLOW_SOAK_POOL_WORKFLOWS")
    app = make_app(pool_size=4)
    runs: dict[tuple[str, int], int] = {}
    inside = asyncio.Event()
    release = asyncio.Event()

    @app.step()
    async def s(i: int) -> int:
        key = (asyncflow.workflow_id(), i)
        runs[key] = runs.get(key, 0) + 1
        if i == 1 and len(runs) >= n:
            inside.set()
        if i == 1:
            await release.wait()
        return i

    @app.workflow()
    async def wf() -> list[int]:
        return [await s(i) for i in range(3)]

    async with app:
        handles = [await app.start_workflow(wf, workflow_id=f"p{k}") for k in range(n)]
        await inside.wait()
        killed = await conn.fetchval(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity "
            "where datname = current_database() and pid <> pg_backend_pid() and pid <> $1",
            app.listener.backend_pid)
        assert killed >= 1
        release.set()
        results = [await h.get_result(timeout_seconds=30) for h in handles]
    assert results == [[0, 1, 2]] * n
    counts = await conn.fetch(
        "select workflow_id, count(*) as n from asyncflow.operations group by 1")
    assert {r["n"] for r in counts} == {3} and len(counts) == n
    assert all(1 <= v <= 2 for v in runs.values())
