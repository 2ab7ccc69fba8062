"""A process that starts a workflow with a timeout and is then killed.

    timeout_worker.py URL EXECUTOR_ID WORKFLOW_ID TIMEOUT   start it; print STARTED; idle

The workflow starts a child, then both wait for a message that never comes.
"""

from __future__ import annotations

import asyncio
import sys

import asyncflow

URL, EXECUTOR, WORKFLOW_ID, TIMEOUT = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

app = asyncflow.AsyncFlow(URL, executor_id=EXECUTOR, app_version="timeouts",
                          recovery_interval_seconds=0.2)


@app.workflow(name="waiting_child")
async def waiting_child() -> str:
    return str(await asyncflow.recv("never", timeout_seconds=3600))


@app.workflow(name="waiting_parent")
async def waiting_parent() -> str:
    child = await app.start_workflow(waiting_child)
    print(f"CHILD {child.workflow_id}", flush=True)
    return str(await asyncflow.recv("never", timeout_seconds=3600))


async def main() -> None:
    async with app:
        await app.start_workflow(waiting_parent, workflow_id=WORKFLOW_ID,
                                 timeout_seconds=TIMEOUT)
        print("STARTED", flush=True)
        await asyncio.Event().wait()


asyncio.run(main())
