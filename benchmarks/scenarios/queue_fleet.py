"""``queue_fleet``: many workflows enqueued at once (one transaction), drained by 1, 2 and 4
worker processes: workflows/s from the enqueue's commit until every workflow has finished, the
worker processes' CPU per workflow over the drain, and the server's transactions, WAL records
and WAL flushes per workflow (enqueue, claims, steps, ends: everything from the enqueue's start
until the processes have closed).

Three workflow bodies (``queue_app.FLEET_STEPS``): 0 no-op steps (a queued workflow's least: its
claim and its terminal write, the counterpart of a pgqueuer job), 1, and 3 (the historical
figures, keys without a prefix). The 0- and 1-step rounds enqueue with one ``enqueue_many``, the
3-step rounds with one ``enqueue`` per workflow (both in one transaction).

The workers are started (and serving, idle) before the enqueue. The runner counts the
workflows' terminal NOTIFYs (no polling), then checks in the database that all succeeded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ..counts import Counts, counts
from ..model import Figure
from ._base import Context, Measured, observer
from ._subprocess import Helper, cpu_seconds
from .queue_app import FLEET_QUEUE, FLEET_STEPS, STEPS, build

VACUUM = "VACUUM (ANALYZE) asyncflow.workflows, asyncflow.operations, asyncflow.queues"
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


@dataclass(frozen=True, slots=True)
class Round:
    enqueue_s: float
    drain_s: float
    per_worker: list[int]
    cpu_s: float
    server: Counts


async def _round(ctx: Context, workers: int, count: int, steps: int) -> Round:
    stats = await observer(ctx.url)
    # Each round on a table as a fresh one would be: the rows of earlier rounds are there, but
    # not their dead versions (otherwise the later rounds drain through the earlier ones' bloat).
    if await stats.fetchval("SELECT to_regclass('asyncflow.workflows') IS NOT NULL"):
        await stats.execute(VACUUM)
    helpers = [await Helper.start("queue_proc", ctx.url, FLEET_QUEUE) for _ in range(workers)]
    try:
        for helper in helpers:
            kind, payload = await helper.line()
            if kind != "READY":
                raise AssertionError(f"unexpected line from a worker: {kind} {payload}")
        built = build(ctx.url, [], lambda _id, _at: None)  # enqueues, serves nothing
        prefix = f"fleet{steps}s{workers}-"
        finished = Finished(prefix, count)
        enqueue = built.enqueue_each if steps == STEPS else built.enqueue_all
        async with built.app:
            remove = built.app._waits.add_observer(finished)
            try:
                pids = [helper.process.pid for helper in helpers]
                before = await counts(stats)
                cpu = cpu_seconds(pids)
                started = time.perf_counter()
                await enqueue(prefix, count, steps)
                committed = time.perf_counter()
                async with asyncio.timeout(600):
                    await finished.done.wait()
                drained = time.perf_counter()
                cpu = cpu_seconds(pids) - cpu
            finally:
                remove()
        done = await stats.fetchval(COUNT_DONE, prefix)
        per_worker = [row[0] for row in await stats.fetch(
            "SELECT count(*) FROM asyncflow.workflows WHERE workflow_id LIKE $1 || '%' "
            "GROUP BY executor_id ORDER BY 1 DESC", prefix)]
        if done != count:
            raise AssertionError(f"{done} of {count} workflows succeeded")
    finally:
        for helper in helpers:
            await helper.finish()
    try:
        server = await counts(stats) - before  # the workers' backends have exited: reported
    finally:
        await stats.close()
    return Round(committed - started, drained - committed, per_worker, cpu, server)


def _key(steps: int, name: str) -> str:
    return name if steps == STEPS else f"steps{steps}_{name}"


async def run(ctx: Context) -> Measured:
    count = ctx.sizes.queue_fleet
    figures: list[Figure] = []
    spread: dict[str, list[int]] = {}
    cpu_figures: list[Figure] = []
    server_figures: list[Figure] = []
    enqueue_figures: list[Figure] = []
    for steps in FLEET_STEPS:
        what = f"{steps} step{'' if steps == 1 else 's'}"
        for workers in ctx.sizes.queue_fleet_workers:
            got = await _round(ctx, workers, count, steps)
            rate = count / got.drain_s
            spread[f"{steps}/{workers}"] = got.per_worker
            server = got.server
            ctx.note(f"{what}, {workers} worker(s): {count} workflows drained in "
                     f"{got.drain_s:.3f} s ({rate:,.0f}/s; per worker {got.per_worker}); "
                     f"enqueued in {got.enqueue_s:.3f} s; worker CPU "
                     f"{got.cpu_s * 1e6 / count:.0f} µs/workflow; per workflow: "
                     f"{server.commits / count:.3f} commits, {server.wal_records / count:.1f} "
                     f"WAL records, {server.wal_flushes / count:.3f} WAL flushes")
            figures.append(Figure(_key(steps, f"workers_{workers}_per_s"),
                                  f"workflows/s ({what}), {workers} worker(s)", rate, "wf/s",
                                  "commits_per_s_20"))
            cpu_figures.append(Figure(_key(steps, f"cpu_us_per_dispatch_{workers}"),
                                      f"worker CPU µs per workflow ({what}), {workers} worker(s)",
                                      got.cpu_s * 1e6 / count, "µs"))
            if workers == ctx.sizes.queue_fleet_workers[0]:
                server_figures += [
                    Figure(_key(steps, "commits_per_workflow"),
                           f"server commits per workflow ({what}, enqueue included)",
                           server.commits / count, ""),
                    Figure(_key(steps, "wal_flushes_per_workflow"),
                           f"WAL flushes per workflow ({what}, enqueue included)",
                           server.wal_flushes / count, ""),
                ]
                if steps == 0:
                    enqueue_figures.append(Figure(
                        "enqueue_s", f"enqueue {count} (enqueue_many, one transaction)",
                        got.enqueue_s, "s"))
                elif steps == STEPS:
                    enqueue_figures.append(Figure(
                        "enqueue_each_s", f"enqueue {count} one by one (one transaction)",
                        got.enqueue_s, "s"))
    figures += cpu_figures + server_figures + enqueue_figures
    return figures, {"workflows": count, "steps_each": list(FLEET_STEPS),
                     "workers": list(ctx.sizes.queue_fleet_workers),
                     "workflows_per_worker": spread}
