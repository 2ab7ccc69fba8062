"""A worker for wait_first crash tests.

    wait_first_worker.py URL EXECUTOR_ID start    start workflow "wf" and serve
    wait_first_worker.py URL EXECUTOR_ID serve    launch (recovering its workflows), then idle

The workflow waits for the first of: a message on "go", event "k" of workflow "other", and a
60 s timer; then it runs a step that prints FIRED and blocks forever on its first run, so the
test can SIGKILL the process after the wait_first was journaled. On the relaunch the step
returns, and the workflow returns what wait_first gave it.
"""

from __future__ import annotations

import asyncio
import sys

import asyncflow

URL, EXECUTOR, ROLE = sys.argv[1], sys.argv[2], sys.argv[3]

app = asyncflow.AsyncFlow(URL, executor_id=EXECUTOR, app_version="wait-first-test",
                          recovery_interval_seconds=0.2)


@app.step()
async def after(index: int, value: object) -> None:
    print(f"FIRED {index} {value}", flush=True)
    if ROLE == "start":
        await asyncio.Event().wait()


@app.workflow(name="chooser")
async def chooser() -> list[object]:
    fired = await asyncflow.wait_first(
        asyncflow.message("go"), asyncflow.event("other", "k"), asyncflow.timer(60))
    await after(fired.index, fired.value)
    # A second wait: the message not taken above must still be in the mailbox.
    second = await asyncflow.wait_first(asyncflow.message("go"), asyncflow.timer(60))
    return [fired.index, fired.value, second.index, second.value]


@app.workflow(name="other")
async def other() -> None:
    await asyncflow.recv("never", timeout_seconds=60)


async def main() -> None:
    async with app:
        if ROLE == "start":
            await app.start_workflow(other, workflow_id="other")
            await app.start_workflow(chooser, workflow_id="wf")
        print("READY", flush=True)
        await asyncio.Event().wait()


asyncio.run(main())
