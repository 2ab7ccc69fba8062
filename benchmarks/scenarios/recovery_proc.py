"""Helper process of ``recovery``: start workflows that block in a step, say ``READY``, and wait
to be SIGKILLed.

Usage: ``python -m benchmarks.scenarios.recovery_proc URL COUNT``.
"""

from __future__ import annotations

import asyncio
import sys

from .. import loop
from ._base import Arrivals
from .recovery_app import build, workflow_id


async def main(url: str, count: int) -> None:
    arrivals = Arrivals(count)
    forever = asyncio.Event()

    async def hold() -> None:
        arrivals.arrive()
        await forever.wait()  # never set: this process is killed while every workflow is here

    app, job = build(url, hold)
    async with app:
        # (workflow_id= is accepted at run time; start_workflow's ParamSpec typing omits it)
        starts = [app.start_workflow(job, index, workflow_id=workflow_id(index))  # type: ignore[call-arg]
                  for index in range(count)]
        await asyncio.gather(*starts)
        await arrivals.done.wait()
        print(f"READY {count}", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # normally killed long before stdin closes


if __name__ == "__main__":
    loop.run(main(sys.argv[1], int(sys.argv[2])))
