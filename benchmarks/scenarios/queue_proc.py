"""Helper process of the queue scenarios: a worker serving one queue.

Usage: ``python -m benchmarks.scenarios.queue_proc URL QUEUE``. Prints ``READY`` once it
serves the queue; for the latency queue, ``RAN <workflow id> <time.monotonic()>`` when a
workflow's first step starts. Exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import sys

from .. import loop
from .queue_app import build


def _ran(workflow_id: str, at: float) -> None:
    print(f"RAN {workflow_id} {at!r}", flush=True)


async def main(url: str, queue: str) -> None:
    built = build(url, [queue], _ran)
    async with built.app:
        print("READY", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the runner closes our stdin


if __name__ == "__main__":
    loop.run(main(sys.argv[1], sys.argv[2]))
