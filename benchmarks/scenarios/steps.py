"""``steps``: one workflow running no-op steps sequentially; ms per step."""

from __future__ import annotations

import time

from ..model import Figure, cpu_figure, latency_figures
from ..stats import median, to_ms
from ._base import Context, Measured, make_app


async def run(ctx: Context) -> Measured:
    count, repeats = ctx.sizes.steps, ctx.sizes.steps_repeats
    app = make_app(ctx.url)
    durations: list[float] = []

    @app.step(name="bench.noop")
    async def noop() -> None:
        return None

    @app.workflow(name="bench.steps")
    async def chain(steps: int, timed: bool) -> int:
        for _ in range(steps):
            before = time.perf_counter()
            await noop()
            if timed:
                durations.append(time.perf_counter() - before)
        return steps

    async with app:
        await chain(ctx.sizes.warmup_rounds, False)
        totals: list[float] = []
        async with ctx.counted() as counts:
            cpu = time.process_time()
            for repeat in range(repeats):
                started = time.perf_counter()
                await chain(count, True)
                totals.append(time.perf_counter() - started)
                ctx.note(f"workflow {repeat + 1}/{repeats}: {count} steps in {totals[-1]:.3f} s")
            cpu = time.process_time() - cpu
    figures = latency_figures("step", "step", durations, "commit_ms_p50", "commit_ms_p99")
    whole = median(to_ms(totals)) / count
    figures.append(
        Figure("workflow_ms_per_step", "whole workflow / steps", whole, "ms", "commit_ms_p50")
    )
    figures.append(cpu_figure("cpu_us_per_step", "step", cpu, count * repeats))
    # (each timed workflow's start, result and finish are counted with its steps)
    figures += counts.figures("step", "step", count * repeats)
    return figures, {"steps": count, "workflows_timed": repeats}
