"""``pingpong``: a workflow loops ``recv`` → ``set_event``; the caller ``send``s then
``get_event``s. Timed from the app itself (wake-ups in process), and from a Client in the same
process (its own LISTEN connection, so every wake-up travels through NOTIFY)."""

from __future__ import annotations

import time
from typing import Any

import asyncflow

from ..model import cpu_figure, latency_figures
from ._base import Context, Measured, make_app


def register(app: asyncflow.AsyncFlow) -> Any:
    """The scenario's workflow, registered on ``app``: ``total`` times ``recv`` then
    ``set_event`` (also run by ``benchmarks.instructions``)."""

    @app.workflow(name="bench.ponger")
    async def ponger(total: int) -> int:
        for index in range(total):
            message = await asyncflow.recv("ping", timeout_seconds=60)
            await asyncflow.set_event(f"pong{index}", message)
        return total

    return ponger


async def rounds(caller: Any, workflow_id: str, first: int, count: int) -> list[float]:
    """``count`` rounds from ``caller`` (an app or a Client): each one's seconds."""
    samples: list[float] = []
    for index in range(first, first + count):
        before = time.perf_counter()
        await caller.send(workflow_id, index, "ping")
        value = await caller.get_event(workflow_id, f"pong{index}", timeout_seconds=30)
        samples.append(time.perf_counter() - before)
        if value != index:
            raise AssertionError(f"round {index}: got {value!r}")
    return samples


async def run(ctx: Context) -> Measured:
    count, warmup = ctx.sizes.pingpong, ctx.sizes.warmup_rounds
    app = make_app(ctx.url)
    ponger = register(app)

    total = warmup + count
    async with app:
        handle = await app.start_workflow(ponger, total)
        await rounds(app, handle.workflow_id, 0, warmup)
        async with ctx.counted() as counts:
            cpu = time.process_time()
            in_app = await rounds(app, handle.workflow_id, warmup, count)
            cpu = time.process_time() - cpu
        await handle.get_result()
        ctx.note(f"{count} rounds from the app")
        handle = await app.start_workflow(ponger, total)
        async with asyncflow.Client(ctx.url) as client:
            await rounds(client, handle.workflow_id, 0, warmup)
            via_client = await rounds(client, handle.workflow_id, warmup, count)
        await handle.get_result()
        ctx.note(f"{count} rounds from a Client")
    figures = latency_figures("rtt", "round trip", in_app, "notify_ms_p50", "notify_ms_p99")
    figures += latency_figures("client_rtt", "round trip via Client (NOTIFY)", via_client,
                               "notify_ms_p50", "notify_ms_p99")
    figures.append(cpu_figure("cpu_us_per_round", "round (send, recv, set_event, get_event)",
                              cpu, count))
    figures += counts.figures("round", "round (send, recv, set_event, get_event)", count)
    return figures, {"rounds": count, "warmup_rounds": warmup}
