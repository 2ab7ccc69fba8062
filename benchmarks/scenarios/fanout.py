"""``fanout``: many workflows parked in ``recv``; the time from the first of as many sends until
every workflow's result is in."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncflow

from ..counts import Counted
from ..model import Figure, cpu_figure
from ._base import Arrivals, Context, Measured, drain, make_app, wait_parked


async def run(ctx: Context) -> Measured:
    count = ctx.sizes.fanout
    app = make_app(ctx.url)
    arrivals = Arrivals(0)

    @app.workflow(name="bench.parked")
    async def parked() -> Any:
        arrivals.arrive()
        return await asyncflow.recv(timeout_seconds=300)

    async def round_trip(size: int, counts: Counted | None) -> tuple[float, float, float]:
        nonlocal arrivals
        arrivals = Arrivals(size)
        started = time.perf_counter()
        handles = await asyncio.gather(*(app.start_workflow(parked) for _ in range(size)))
        await arrivals.done.wait()
        waiting = await wait_parked(app, ctx.url, size)
        if waiting != size:
            raise AssertionError(f"only {waiting} of {size} workflows parked in recv")
        park_s = time.perf_counter() - started
        ids = [handle.workflow_id for handle in handles]
        results = asyncio.gather(*(handle.get_result() for handle in handles))
        await drain(app, 2 * size)  # the result waiters made their first check and park too
        async with counts if counts is not None else contextlib.nullcontext():
            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(app.send(workflow_id, index) for index, workflow_id in
                                   enumerate(ids)))
            values = await results
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
        if values != list(range(size)):
            raise AssertionError("fanout results do not match the messages sent")
        return park_s, elapsed, cpu

    async with app:
        await round_trip(max(10, count // 10), None)  # warm-up
        counts = ctx.counted()
        park_s, elapsed, cpu = await round_trip(count, counts)
    ctx.note(f"{count} parked in {park_s:.2f} s; all woken and done in {elapsed:.3f} s")
    figures = [
        Figure("seconds", f"{count} sends → {count} results", elapsed, "s", "s_per_commit_20",
               float(count)),
        Figure("park_s", f"start and park {count}", park_s, "s"),
        cpu_figure("cpu_us_per_send", "send (to the woken workflow's result)",
                   cpu, count),
        *counts.figures("send", "send (to the woken workflow's result)", count),
    ]
    return figures, {"workflows": count}
