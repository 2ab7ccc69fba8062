"""Helper process of ``waiters``: park many workflows in ``recv`` and report RSS.

Usage: ``python -m benchmarks.scenarios.waiters_proc URL COUNT POOL_SIZE``. Prints
``PROGRESS n`` while parking, then ``PARKED {json}``, and exits when stdin is closed.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

import asyncflow

from .. import loop
from ._base import Arrivals, make_app, wait_parked


def rss_mb() -> float:
    """Resident set size now, from /proc (Linux), else the peak from getrusage."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * resource.getpagesize() / (1024 * 1024)
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / (1024 * 1024)


async def main(url: str, count: int, pool_size: int) -> None:
    app = make_app(url, pool_size=pool_size)
    arrivals = Arrivals(count)
    step = max(1, count // 10)

    @app.workflow(name="bench.waiter")
    async def waiter() -> Any:
        arrivals.arrive()
        if arrivals.count % step == 0:
            print(f"PROGRESS {arrivals.count}", flush=True)
        return await asyncflow.recv(timeout_seconds=3600)

    baseline = rss_mb()
    async with app:
        started = time.perf_counter()
        await asyncio.gather(*(app.start_workflow(waiter) for _ in range(count)))
        await arrivals.done.wait()
        parked = await wait_parked(app, url, count)
        park_s = time.perf_counter() - started
        report = {
            "parked": parked,
            "park_s": park_s,
            "rss_mb": rss_mb(),
            "peak_rss_mb": peak_rss_mb(),
            "baseline_rss_mb": baseline,
            "running": len(app.running_workflows()),
        }
        print("PARKED " + json.dumps(report), flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin


if __name__ == "__main__":
    loop.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
