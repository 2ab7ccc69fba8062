"""A queue worker (or enqueuer) process for the fleet tests.

    queue_worker.py URL EXECUTOR_ID serve CONCURRENCY WORKER_CONCURRENCY RATE_N RATE_PER [block]
        serve queue ``fleet`` ("-" for a limit: none); with ``block`` the step ``work`` blocks
        forever (after printing ``BLOCKED id``), so the process can be killed mid-workflow
    queue_worker.py URL EXECUTOR_ID enqueue COUNT
        enqueue COUNT workflows ``fleet-<n>`` (an app that serves no queue), print ENQUEUED, exit

Every run of the workflow body inserts a row into ``execs`` (one per execution); the
transactions ``begin_run`` / ``end_run`` record the run's start and end in ``runs`` (exactly
once per workflow: a second insert would fail); every step body execution inserts a row into
``effects`` (at-least-once counter). Times are the database's ``clock_timestamp()``.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

import asyncflow

URL, EXECUTOR, ROLE = sys.argv[1], sys.argv[2], sys.argv[3]


def _limit(text: str) -> int | None:
    return None if text == "-" else int(text)


if ROLE == "serve":
    concurrency, worker_concurrency = _limit(sys.argv[4]), _limit(sys.argv[5])
    rate = None if sys.argv[6] == "-" else (int(sys.argv[6]), float(sys.argv[7]))
    BLOCK = sys.argv[8:9] == ["block"]
    serve: list[str] | None = None
else:
    concurrency = worker_concurrency = None
    rate = None
    BLOCK = False
    serve = []

app = asyncflow.AsyncFlow(URL, executor_id=EXECUTOR, app_version="fleet-test",
                          recovery_interval_seconds=0.2, queues=serve)
queue = app.queue("fleet", concurrency=concurrency, worker_concurrency=worker_concurrency,
                  rate_limit=rate)
pool: asyncpg.Pool | None = None


@app.transaction(name="begin_run")
async def begin_run() -> None:
    await asyncflow.connection().execute(
        "insert into runs (workflow_id, executor_id, started_at) values ($1, $2, "
        "clock_timestamp())", asyncflow.workflow_id(), EXECUTOR)


@app.transaction(name="end_run")
async def end_run() -> None:
    await asyncflow.connection().execute(
        "update runs set ended_at = clock_timestamp() where workflow_id = $1",
        asyncflow.workflow_id())


@app.step(name="work")
async def work(step: int, sleep_ms: int) -> int:
    assert pool is not None
    await pool.execute("insert into effects values ($1, $2, $3)", asyncflow.workflow_id(), step,
                       EXECUTOR)
    if BLOCK and step == 1:
        print(f"BLOCKED {asyncflow.workflow_id()}", flush=True)
        await asyncio.Event().wait()
    await asyncio.sleep(sleep_ms / 1000)  # the work itself: a real duration
    return step


@app.workflow(name="fleet_job")
async def fleet_job(n: int, sleep_ms: int) -> int:
    assert pool is not None
    await pool.execute("insert into execs values ($1, $2, clock_timestamp())",
                       asyncflow.workflow_id(), EXECUTOR)
    await begin_run()
    await work(0, sleep_ms)
    await work(1, sleep_ms)
    await end_run()
    return n


async def main() -> None:
    global pool
    pool = await asyncpg.create_pool(URL, min_size=1, max_size=4)
    async with app:
        if ROLE == "enqueue":
            count = int(sys.argv[4])
            for start in range(0, count, 50):
                await asyncio.gather(*(
                    queue.enqueue(fleet_job, n, (n * 7) % 4 * 10, workflow_id=f"fleet-{n}")
                    for n in range(start, min(count, start + 50))))
            print("ENQUEUED", flush=True)
            return
        print("READY", flush=True)
        await asyncio.Event().wait()


asyncio.run(main())
