"""Launches many apps in one process while other processes prune executors
(tests/faults/test_fault_liveness.py), or tries to launch their twins.

    launcher.py APP_URL SIDE_URL LIVENESS launch COUNT
        launch apps ``launch-<i>`` (explicit executor ids) one after the other, each starting a
        workflow ``launch-<i>`` of 3 steps whose step 1 waits for SIGUSR1; print
        ``LAUNCHED launch-<i>`` per app, ``READY`` after the last, then serve until killed
    launcher.py APP_URL SIDE_URL LIVENESS twin COUNT
        try to launch a second app with each id ``launch-<i>``: print ``REFUSED <id>``
        (ExecutorIdInUseError) or ``ACCEPTED <id>``, then ``DONE``
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from stepcount import build_app, open_gate_on_sigusr1, open_side, register

import asyncflow

APP_URL, SIDE_URL, LIVENESS, MODE, COUNT = sys.argv[1:6]


async def launch(side, stack: contextlib.AsyncExitStack) -> None:
    for i in range(int(COUNT)):
        executor_id = f"launch-{i}"
        app = build_app(APP_URL, executor_id, LIVENESS, pool_size=2)
        chain = register(app, side, executor_id)
        await stack.enter_async_context(app)
        await app.start_workflow(chain, 3, 1, 0, workflow_id=executor_id)
        print(f"LAUNCHED {executor_id}", flush=True)
    print("READY", flush=True)
    await asyncio.Event().wait()


async def twins(side) -> None:
    for i in range(int(COUNT)):
        executor_id = f"launch-{i}"
        app = build_app(APP_URL, executor_id, LIVENESS, pool_size=2)
        register(app, side, executor_id)
        try:
            async with app:
                print(f"ACCEPTED {executor_id}", flush=True)
        except asyncflow.ExecutorIdInUseError:
            print(f"REFUSED {executor_id}", flush=True)
    print("DONE", flush=True)


async def main() -> None:
    open_gate_on_sigusr1()
    side = await open_side(SIDE_URL)
    if MODE == "launch":
        async with contextlib.AsyncExitStack() as stack:
            await launch(side, stack)
    else:
        await twins(side)


asyncio.run(main())
