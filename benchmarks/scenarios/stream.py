"""``stream``: write→read latency of paced stream values with a reader following, and the
sustained rate of back-to-back ``write_stream`` calls with a reader attached."""

from __future__ import annotations

import asyncio
import time

import asyncflow

from ..model import Figure, cpu_figure, latency_figures
from ._base import Context, Measured, make_app

GAP_S = 0.002


async def run(ctx: Context) -> Measured:
    paced, sustained = ctx.sizes.stream_values, ctx.sizes.stream_sustained
    warmup = ctx.sizes.warmup_rounds
    app = make_app(ctx.url)
    write_rate: list[float] = []

    @app.workflow(name="bench.paced_writer")
    async def paced_writer(count: int) -> int:
        for _ in range(count):
            await asyncflow.write_stream("ticks", time.perf_counter())
            await asyncio.sleep(GAP_S)  # pacing between writes, not a wait for state
        await asyncflow.close_stream("ticks")
        return count

    @app.workflow(name="bench.fast_writer")
    async def fast_writer(count: int) -> int:
        started = time.perf_counter()
        for index in range(count):
            await asyncflow.write_stream("values", index)
        write_rate.append(count / (time.perf_counter() - started))
        await asyncflow.close_stream("values")
        return count

    async with app:
        handle = await app.start_workflow(paced_writer, warmup + paced)
        latencies: list[float] = []
        async for written_at in app.read_stream(handle.workflow_id, "ticks"):
            latencies.append(time.perf_counter() - written_at)
        await handle.get_result()
        latencies = latencies[warmup:]
        ctx.note(f"{len(latencies)} paced values read")

        started, cpu = time.perf_counter(), time.process_time()
        handle = await app.start_workflow(fast_writer, sustained)
        received = 0
        async for _value in app.read_stream(handle.workflow_id, "values"):
            received += 1
        elapsed = time.perf_counter() - started
        await handle.get_result()
        cpu = time.process_time() - cpu
    if received != sustained or len(latencies) != paced:
        raise AssertionError(f"read {len(latencies)}/{paced} and {received}/{sustained} values")
    delivered = sustained / elapsed
    ctx.note(f"{sustained} values back to back: {delivered:,.0f}/s delivered to the reader")
    figures = latency_figures("latency", "write→read", latencies, "notify_ms_p50",
                              "notify_ms_p99")
    figures += [
        Figure("values_per_s", "values/s written and read", delivered, "values/s",
               "commits_per_s_1"),
        Figure("write_values_per_s", "values/s written", write_rate[0], "values/s",
               "commits_per_s_1"),
        cpu_figure("cpu_us_per_value", "value written and read (back to back)", cpu, sustained),
    ]
    return figures, {"paced_values": paced, "gap_ms": GAP_S * 1000, "sustained_values": sustained}
