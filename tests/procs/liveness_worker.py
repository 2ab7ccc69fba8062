"""A worker of the liveness fault tests (tests/faults/test_fault_liveness.py and
test_fault_failover.py).

    liveness_worker.py APP_URL SIDE_URL EXECUTOR_ID LIVENESS GATED STEPS GATE_STEP [RUNNING N M]

Launches an app (executor EXECUTOR_ID, liveness timeout LIVENESS seconds, "-" for the default)
whose step bodies record their runs in SIDE_URL's ``step_runs`` (tests/procs/stepcount.py),
starts GATED workflows ``<executor>-g<n>`` of STEPS steps whose step GATE_STEP waits for
SIGUSR1, and (optionally) RUNNING workflows ``<executor>-r<n>`` of N ungated steps of M ms each,
which are still running while the test injects its fault. Prints ``READY`` once all are started,
then serves (recovery, its own workflows) until killed.
"""

from __future__ import annotations

import asyncio
import sys

from stepcount import build_app, open_gate_on_sigusr1, open_side, register, report_listener

APP_URL, SIDE_URL, EXECUTOR, LIVENESS = sys.argv[1:5]
GATED, STEPS, GATE_STEP = (int(a) for a in sys.argv[5:8])
RUNNING, RUN_STEPS, RUN_MS = (int(a) for a in (sys.argv[8:11] or ["0", "0", "0"]))


async def main() -> None:
    open_gate_on_sigusr1()
    side = await open_side(SIDE_URL)
    app = build_app(APP_URL, EXECUTOR, LIVENESS)
    chain = register(app, side, EXECUTOR)
    async with app:
        reporter = asyncio.ensure_future(report_listener(app, EXECUTOR))
        for n in range(GATED):
            await app.start_workflow(chain, STEPS, GATE_STEP, 0, workflow_id=f"{EXECUTOR}-g{n}")
        for n in range(RUNNING):
            await app.start_workflow(chain, RUN_STEPS, -1, RUN_MS,
                                     workflow_id=f"{EXECUTOR}-r{n}")
        print("READY", flush=True)
        await asyncio.Event().wait()
        reporter.cancel()


asyncio.run(main())
