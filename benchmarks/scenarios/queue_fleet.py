"""``queue_fleet``: many workflows of three no-op steps enqueued at once (one transaction),
drained by 1, 2 and 4 worker processes: workflows/s from the enqueue's commit until every
workflow has finished, and the worker processes' CPU per workflow over the drain (a queue
dispatch: the claim, the spawn, the three steps and the end).

The workers are started (and serving, idle) before the enqueue. The runner counts the
workflows' terminal NOTIFYs (no polling), then checks in the database that all succeeded.
"""

from __future__ import annotations

import asyncio
import time

from ..model import Figure
from ._base import Context, Measured, observer
from ._subprocess import Helper, cpu_seconds
from .queue_app import FLEET_QUEUE, STEPS, build

COUNT_DONE = "SELECT count(*) FROM asyncflow.workflows WHERE workflow_id LIKE $1 || '%' " \
    "AND status = 'SUCCESS'"


class Finished:
    """Counts terminal wake-ups of workflows whose id starts with ``prefix``."""

    def __init__(self, prefix: str, expected: int) -> None:
        self.prefix = prefix
        self.expected = expected
        self.seen: set[str] = set()
        self.done = asyncio.Event()

    def __call__(self, kind: str, workflow_id: str) -> None:
        if kind == "t" and workflow_id.startswith(self.prefix):
            self.seen.add(workflow_id)
            if len(self.seen) >= self.expected:
                self.done.set()


async def _round(ctx: Context, workers: int,
                 count: int) -> tuple[float, float, list[int], float]:
    helpers = [await Helper.start("queue_proc", ctx.url, FLEET_QUEUE) for _ in range(workers)]
    try:
        for helper in helpers:
            kind, payload = await helper.line()
            if kind != "READY":
                raise AssertionError(f"unexpected line from a worker: {kind} {payload}")
        built = build(ctx.url, [], lambda _id, _at: None)  # enqueues, serves nothing
        prefix = f"fleet{workers}-"
        finished = Finished(prefix, count)
        async with built.app:
            remove = built.app._waits.add_observer(finished)
            try:
                pids = [helper.process.pid for helper in helpers]
                cpu = cpu_seconds(pids)
                started = time.perf_counter()
                await built.enqueue_all(prefix, count)
                committed = time.perf_counter()
                async with asyncio.timeout(600):
                    await finished.done.wait()
                drained = time.perf_counter()
                cpu = cpu_seconds(pids) - cpu
            finally:
                remove()
        conn = await observer(ctx.url)
        try:
            done = await conn.fetchval(COUNT_DONE, prefix)
            per_worker = [row[0] for row in await conn.fetch(
                "SELECT count(*) FROM asyncflow.workflows WHERE workflow_id LIKE $1 || '%' "
                "GROUP BY executor_id ORDER BY 1 DESC", prefix)]
        finally:
            await conn.close()
        if done != count:
            raise AssertionError(f"{done} of {count} workflows succeeded")
    finally:
        for helper in helpers:
            await helper.finish()
    return committed - started, drained - committed, per_worker, cpu


async def run(ctx: Context) -> Measured:
    count = ctx.sizes.queue_fleet
    figures: list[Figure] = []
    spread: dict[str, list[int]] = {}
    cpu_figures: list[Figure] = []
    enqueue_s = 0.0
    for workers in ctx.sizes.queue_fleet_workers:
        enqueue_s, drain_s, per_worker, cpu = await _round(ctx, workers, count)
        rate = count / drain_s
        spread[str(workers)] = per_worker
        ctx.note(f"{workers} worker(s): {count} workflows drained in {drain_s:.3f} s "
                 f"({rate:,.0f}/s; per worker {per_worker}); enqueued in {enqueue_s:.3f} s")
        figures.append(Figure(f"workers_{workers}_per_s", f"workflows/s, {workers} worker(s)",
                              rate, "wf/s", "commits_per_s_20"))
        cpu_figures.append(Figure(f"cpu_us_per_dispatch_{workers}",
                                  f"worker CPU µs per workflow, {workers} worker(s)",
                                  cpu * 1e6 / count, "µs"))
    figures += cpu_figures
    figures.append(Figure("enqueue_s", f"enqueue {count} (one transaction)", enqueue_s, "s"))
    return figures, {"workflows": count, "steps_each": STEPS,
                     "workers": list(ctx.sizes.queue_fleet_workers),
                     "workflows_per_worker": spread}
