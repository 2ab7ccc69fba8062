"""A worker process for crash tests.

    worker.py URL EXECUTOR_ID start COUNT STEPS BLOCK_AT   start COUNT workflows of STEPS steps
                                                           each; step BLOCK_AT blocks forever
    worker.py URL EXECUTOR_ID serve                        launch (recovering), then idle

Every step body execution inserts a row into ``effects`` (at-least-once counter) and every
transaction body commits a row into ``tx_effects`` (must be exactly once).
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

import asyncflow

URL, EXECUTOR, ROLE = sys.argv[1], sys.argv[2], sys.argv[3]
BLOCK_AT = int(sys.argv[6]) if ROLE == "start" else -1

app = asyncflow.AsyncFlow(URL, executor_id=EXECUTOR, app_version="crash-test",
                          recovery_interval_seconds=0.2)
effects: asyncpg.Pool | None = None


@app.step()
async def work(i: int) -> int:
    assert effects is not None
    await effects.execute("insert into effects values ($1, $2)", asyncflow.workflow_id(), i)
    if i == BLOCK_AT:
        print(f"BLOCKED {asyncflow.workflow_id()}", flush=True)
        await asyncio.Event().wait()
    return i * 10


@app.transaction()
async def record_tx(i: int) -> int:
    await asyncflow.connection().execute(
        "insert into tx_effects values ($1, $2)", asyncflow.workflow_id(), i
    )
    return i


@app.workflow(name="crashy")
async def crashy(steps: int) -> list[int]:
    out = []
    for i in range(steps):
        out.append(await work(i))
        await record_tx(i)
    return out


async def main() -> None:
    global effects
    effects = await asyncpg.create_pool(URL, min_size=1, max_size=4)
    async with app:
        if ROLE == "start":
            count, steps = int(sys.argv[4]), int(sys.argv[5])
            for n in range(count):
                await app.start_workflow(crashy, steps, workflow_id=f"wf-{n}")
            print("STARTED", flush=True)
        print("READY", flush=True)
        await asyncio.Event().wait()


asyncio.run(main())
