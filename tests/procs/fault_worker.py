"""The kill-loop worker: runs COUNT workflows of STEPS steps (and as many transactions) until all
are done, and is SIGKILLed at random moments by tests/faults/test_faults.py.

    fault_worker.py URL EXECUTOR_ID COUNT STEPS

Every start is idempotent (workflow ids are fixed), so each incarnation starts what is missing,
recovers the rest, and waits for everything. Prints ``LAUNCHED``, one ``S <id> <i>`` line per
step body execution (the test's progress clock), and ``ALLDONE`` at the end.

Every step body execution inserts a row into ``effects``, noting whether the step's checkpoint
was already committed when the body started (it must never be). Every transaction body inserts a
row into ``tx_effects`` in the transaction that records its checkpoint (exactly once).
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

import asyncflow

URL, EXECUTOR, COUNT, STEPS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

app = asyncflow.AsyncFlow(URL, executor_id=EXECUTOR, app_version="kill-loop",
                          recovery_interval_seconds=0.2)
effects: asyncpg.Pool | None = None


@app.step()
async def work(i: int) -> int:
    assert effects is not None
    wid = asyncflow.workflow_id()
    # Step i is the workflow's operation 2*i (each step is followed by one transaction).
    await effects.execute(
        "insert into effects select $1, $2, exists (select 1 from asyncflow.operations"
        " where workflow_id = $1 and function_id = $3)", wid, i, 2 * i)
    print(f"S {wid} {i}", flush=True)
    return i * 10


@app.transaction()
async def commit_once(i: int) -> int:
    await asyncflow.connection().execute(
        "insert into tx_effects values ($1, $2)", asyncflow.workflow_id(), i)
    return i


# Every incarnation recovers every pending workflow once: allow long soaks.
@app.workflow(name="kill-loop", max_recovery_attempts=100_000)
async def chain(n: int, steps: int) -> list[int]:
    out = []
    for i in range(steps):
        out.append(await work(i) + n)
        await commit_once(i)
    return out


async def main() -> None:
    global effects
    effects = await asyncpg.create_pool(URL, min_size=1, max_size=4)
    async with app:
        print("LAUNCHED", flush=True)
        handles = [await app.start_workflow(chain, n, STEPS, workflow_id=f"k-{n}")
                   for n in range(COUNT)]
        await asyncio.gather(*(h.get_result() for h in handles))
        print("ALLDONE", flush=True)


asyncio.run(main())
