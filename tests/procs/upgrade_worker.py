"""A worker of the rolling-deploy test (tests/operations/test_rolling_deploy.py), in version v1
or v2.

    upgrade_worker.py URL EXECUTOR_ID VERSION [start COUNT | enqueue COUNT]

Serves queue ``deploy``; with ``start`` it first starts workflows ``wf-<n>`` (n < COUNT) itself,
with ``enqueue`` it enqueues ``q-<n>``; then prints READY and runs until killed.

``deploy_job(n)``: step ``a``, event ``at_a``, ``recv("go1")``, step ``b``, event ``at_b``,
``recv("go2")``, step ``c``. v2 is the same code, except that for ``n % 4 == 0`` it runs a new
step between ``a`` and the event ``at_a``: the histories of those workflows diverge from v2's
code at operation 1 (they are left for v1); the others replay cleanly (v2 adopts them). Every
step body inserts ``(workflow_id, step, version)`` into ``effects``.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

import asyncflow

URL, EXECUTOR, VERSION = sys.argv[1], sys.argv[2], sys.argv[3]
ROLE, COUNT = (sys.argv[4], int(sys.argv[5])) if len(sys.argv) > 5 else ("serve", 0)

app = asyncflow.AsyncFlow(URL, executor_id=EXECUTOR, app_version=VERSION,
                          recovery_interval_seconds=0.2, liveness_timeout_seconds=5)
queue = app.queue("deploy")
pool: asyncpg.Pool | None = None


async def _effect(step: str) -> None:
    assert pool is not None
    await pool.execute("insert into effects values ($1, $2, $3)", asyncflow.workflow_id(), step,
                       VERSION)


@app.step(name="a")
async def step_a(n: int) -> int:
    await _effect("a")
    return n


@app.step(name="new")
async def step_new(n: int) -> int:
    await _effect("new")
    return n


@app.step(name="b")
async def step_b(n: int) -> int:
    await _effect("b")
    return n


@app.step(name="c")
async def step_c(n: int) -> str:
    await _effect("c")
    return VERSION


@app.workflow(name="deploy_job")
async def deploy_job(n: int) -> list:
    await step_a(n)
    if VERSION == "v2" and n % 4 == 0:
        await step_new(n)  # the incompatible change: only some workflows take this branch
    await asyncflow.set_event("at_a", True)
    first = await asyncflow.recv("go1", 120)
    await step_b(n)
    await asyncflow.set_event("at_b", True)
    second = await asyncflow.recv("go2", 120)
    return [n, first, second, await step_c(n)]


async def main() -> None:
    global pool
    pool = await asyncpg.create_pool(URL, min_size=1, max_size=4)
    async with app:
        if ROLE == "start":
            for n in range(COUNT):
                await app.start_workflow(deploy_job, n, workflow_id=f"wf-{n}")
        elif ROLE == "enqueue":
            for n in range(COUNT):
                await queue.enqueue(deploy_job, n, workflow_id=f"q-{n}")
        print("READY", flush=True)
        await asyncio.Event().wait()


asyncio.run(main())
