"""``streams_concurrent``: many workflows streaming at once, each followed by its own reader:
aggregate values/s and write→read latency while all run (group commit at work)."""

from __future__ import annotations

import asyncio
import time

import asyncflow

from ..model import Figure, latency_figures
from ._base import Context, Measured, make_app

GAP_S = 0.005


async def run(ctx: Context) -> Measured:
    writers, values = ctx.sizes.streams_concurrent, ctx.sizes.streams_concurrent_values
    app = make_app(ctx.url)
    go = asyncio.Event()

    @app.step(name="bench.ready")
    async def ready() -> None:
        await go.wait()

    @app.workflow(name="bench.streamer")
    async def streamer(count: int) -> int:
        await ready()
        for _ in range(count):
            await asyncflow.write_stream("tokens", time.perf_counter())
            await asyncio.sleep(GAP_S)  # pacing between writes, not a wait for state
        await asyncflow.close_stream("tokens")
        return count

    latencies: list[float] = []

    async def follow(workflow_id: str) -> int:
        read = 0
        async for written_at in app.read_stream(workflow_id, "tokens"):
            latencies.append(time.perf_counter() - written_at)
            read += 1
        return read

    async with app:
        handles = await asyncio.gather(*(app.start_workflow(streamer, values)
                                         for _ in range(writers)))
        readers = [asyncio.ensure_future(follow(h.workflow_id)) for h in handles]
        store = app.runtime.store
        batches, ops = store.writes.batches, store.writes.ops
        started = time.perf_counter()
        go.set()
        counts = await asyncio.gather(*readers)
        elapsed = time.perf_counter() - started
        await asyncio.gather(*(h.get_result() for h in handles))
        batches, ops = store.writes.batches - batches, store.writes.ops - ops
    total = writers * values
    if sum(counts) != total:
        raise AssertionError(f"read {sum(counts)} of {total} values")
    rate = total / elapsed
    ctx.note(f"{writers} streams x {values} values: {rate:,.0f} values/s, "
             f"{ops / max(batches, 1):.1f} writes per statement")
    figures = latency_figures("latency", "write→read", latencies, "notify_ms_p50",
                              "notify_ms_p99")
    figures += [
        Figure("values_per_s", "values/s, all streams", rate, "values/s",
               "notify_commits_per_s_20"),
        Figure("writes_per_statement", "stream writes per statement", ops / max(batches, 1),
               "writes"),
    ]
    return figures, {"writers": writers, "values_each": values, "gap_ms": GAP_S * 1000}
