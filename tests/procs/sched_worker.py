"""A process serving a per-second schedule; every run records itself and prints a line.

    sched_worker.py URL EXECUTOR_ID [runtime]
        launch; print READY; print RAN <tick> per run started here. With ``runtime`` the
        workflow ``tick`` is registered without a schedule: the test creates one at runtime
        (create_schedule), which every worker serves.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

import asyncflow

URL, EXECUTOR = sys.argv[1], sys.argv[2]
RUNTIME = sys.argv[3:4] == ["runtime"]

app = asyncflow.AsyncFlow(URL, executor_id=EXECUTOR, app_version="sched",
                          recovery_interval_seconds=0.2)
pool: asyncpg.Pool | None = None


@app.step()
async def record(tick: str) -> None:
    assert pool is not None
    await pool.execute("insert into runs values ($1, $2, $3)", asyncflow.workflow_id(), tick,
                       EXECUTOR)


@app.workflow(name="tick")
async def tick(scheduled_at: str) -> str:
    await record(scheduled_at)
    print(f"RAN {scheduled_at}", flush=True)
    return scheduled_at


if not RUNTIME:
    app.scheduled("* * * * * *", name="every-second", catch_up="all")(tick)


async def main() -> None:
    global pool
    pool = await asyncpg.create_pool(URL, min_size=1, max_size=2)
    async with app:
        print("READY", flush=True)
        await asyncio.Event().wait()


asyncio.run(main())
