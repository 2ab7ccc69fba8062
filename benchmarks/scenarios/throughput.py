"""``throughput``: many workflows of three no-op steps started at once; workflows/s."""

from __future__ import annotations

import asyncio
import time

from ..model import Figure, cpu_figure
from ._base import Context, Measured, make_app

STEPS = 3


async def run(ctx: Context) -> Measured:
    count = ctx.sizes.throughput
    app = make_app(ctx.url)

    @app.step(name="bench.noop")
    async def noop() -> None:
        return None

    @app.workflow(name="bench.three_steps")
    async def three_steps() -> None:
        for _ in range(STEPS):
            await noop()

    async def batch(size: int) -> tuple[float, float]:
        started = time.perf_counter()
        handles = await asyncio.gather(*(app.start_workflow(three_steps) for _ in range(size)))
        all_started = time.perf_counter()
        await asyncio.gather(*(handle.get_result() for handle in handles))
        return all_started - started, time.perf_counter() - started

    async with app:
        await batch(max(10, count // 10))  # warm-up
        async with ctx.counted() as counts:
            cpu = time.process_time()
            start_s, total_s = await batch(count)
            cpu = time.process_time() - cpu
    rate = count / total_s
    ctx.note(f"{count} workflows in {total_s:.3f} s ({rate:,.0f}/s)")
    figures = [
        Figure("workflows_per_s", "workflows/s", rate, "wf/s", "commits_per_s_20"),
        Figure("start_s", f"all {count} started", start_s, "s"),
        Figure("total_s", f"all {count} finished", total_s, "s", "s_per_commit_20",
               float(count)),
        cpu_figure("cpu_us_per_workflow", "workflow (start, 3 steps, result)", cpu, count),
        *counts.figures("workflow", "workflow", count),
    ]
    return figures, {"workflows": count, "steps_each": STEPS}
