"""Starts the same workflow ids as another copy of itself, at the same moment.

    fault_starter.py URL EXECUTOR_ID COUNT

Prints ``READY`` once launched and listening on channel ``go``; on the NOTIFY, starts workflows
``same-0`` .. ``same-<COUNT-1>`` concurrently, then prints ``RESULTS <json>`` (every result) and
``CREATED <n>`` (how many rows it inserted, judged by the executor id stamped on them).
Each step body execution inserts a row into ``effects``.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import orjson

import asyncflow

URL, EXECUTOR, COUNT = sys.argv[1], sys.argv[2], int(sys.argv[3])

app = asyncflow.AsyncFlow(URL, executor_id=EXECUTOR, app_version="same-id",
                          recovery_interval_seconds=0.2)


async def main() -> None:
    conn = await asyncpg.connect(URL)
    go = asyncio.Event()
    await conn.add_listener("go", lambda *_: go.set())

    @app.step(name="record")
    async def record() -> str:
        await conn_pool.execute("insert into effects values ($1, $2)",
                                asyncflow.workflow_id(), EXECUTOR)
        return "ran"

    @app.workflow(name="same")
    async def same(n: int) -> list[object]:
        return [n, await record()]

    conn_pool = await asyncpg.create_pool(URL, min_size=1, max_size=4)
    async with app:
        print("READY", flush=True)
        await go.wait()
        handles = await asyncio.gather(
            *(app.start_workflow(same, n, workflow_id=f"same-{n}") for n in range(COUNT)))
        results = await asyncio.gather(*(h.get_result(timeout_seconds=60) for h in handles))
        print("RESULTS", orjson.dumps(results).decode(), flush=True)
        created = await conn.fetchval(
            "select count(*) from asyncflow.workflows where executor_id = $1", EXECUTOR)
        print("CREATED", created, flush=True)
    await conn_pool.close()
    await conn.close()


asyncio.run(main())
