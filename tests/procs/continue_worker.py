"""A worker for the continue_as_new crash test (tests/engine/test_continue.py): runs the workflow
``endless`` (30 iterations, continuing as new every 5), each step body recording its run in the
side table ``cont_runs`` first thing, and kills itself (SIGKILL) around a hand-over:

    continue_worker.py URL before N   SIGKILL just before its Nth continue_as_new commits
    continue_worker.py URL after N    SIGKILL just after its Nth continue_as_new committed
    continue_worker.py URL none 0     run to the end

Lines printed: ``READY``, ``KILL <before|after> <n>``, ``DONE <result>``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import asyncpg

import asyncflow
from asyncflow._storage.runs import RunStatements


async def main() -> None:
    url, mode, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = asyncflow.AsyncFlow(url, executor_id="cont-worker", recovery_interval_seconds=0.2)
    side = await asyncpg.connect(url)
    continues = 0

    @app.step()
    async def work(i: int) -> int:
        await side.execute("insert into cont_runs values ($1, $2)", asyncflow.workflow_id(), i)
        return i

    @app.workflow()
    async def loop(i: int, total: int) -> int:
        stop = i + 5
        while i < stop:
            if i == 30:
                return total
            total += await work(i)
            i += 1
        await asyncflow.continue_as_new(i, total)
        raise AssertionError("unreachable")

    # The fault injection: the process dies right before or right after the statement of its
    # Nth hand-over (counted here, whoever runs the workflow: recovery may start it at launch).
    original = RunStatements.continue_as_new

    async def around(self: Any, *args: Any) -> tuple[int | None, bool]:
        nonlocal continues
        continues += 1
        if mode == "before" and continues == at:
            print(f"KILL before {at}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        done = await original(self, *args)
        if mode == "after" and continues == at:
            print(f"KILL after {at}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return done

    RunStatements.continue_as_new = around  # type: ignore[method-assign]

    async with app:
        handle = await app.start_workflow(loop, 0, 0, workflow_id="endless")
        print("READY", flush=True)
        print(f"DONE {await handle.get_result(timeout_seconds=60)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
