"""A DBOS worker process of the ``queue_fleet`` comparison: it serves the fleet queue until its
stdin closes. ``python -m benchmarks.dbos_queue_worker URL``; DBOS's executor id and application
version come from ``DBOS__VMID`` and ``DBOS__APPVERSION`` (set by the runner). Prints ``READY``
once launched. The workflow is declared here only, so the runner (a DBOSClient) never runs it.
The queue is registered by the runner before the workers launch (DBOS 3.4 refuses ``Queue(...)``:
a queue is a row of the system database), so each worker's queue manager serves it from its first
look at the registered queues.
"""

from __future__ import annotations

import asyncio
import sys

from dbos import DBOS, DBOSConfig

from . import loop

STEPS = 3


@DBOS.step(name="bench.noop")
async def noop() -> None:
    return None


@DBOS.workflow(name="bench.queue.three_steps")
async def three_steps() -> None:
    for _ in range(STEPS):
        await noop()


async def main(url: str) -> None:
    config: DBOSConfig = {"name": "asyncflow-bench", "system_database_url": url}
    DBOS(config=config)
    DBOS.launch()
    try:
        print("READY", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the runner closes our stdin
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    loop.run(main(sys.argv[1]))
