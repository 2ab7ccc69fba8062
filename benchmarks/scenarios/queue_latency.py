"""``queue_latency``: enqueue → the workflow's first step running, with one idle worker.

Mainly across processes, as a web tier and a worker would be: a ``Client`` in the runner
enqueues, a worker process (serving the queue) starts the workflow when the NOTIFY reaches it;
the step reports ``time.monotonic()``, a clock all processes share. One workflow at a time (the
next is enqueued once the previous has finished, so the worker is idle). Also measured in one
process: an app that enqueues to a queue it serves (woken in process, no NOTIFY).
"""

from __future__ import annotations

import time

import asyncflow

from ..model import latency_figures
from ._base import Context, Measured
from ._subprocess import Helper
from .queue_app import LATENCY_QUEUE, PING, build


async def _across_processes(ctx: Context, rounds: int) -> list[float]:
    helper = await Helper.start("queue_proc", ctx.url, LATENCY_QUEUE)
    try:
        kind, payload = await helper.line()
        if kind != "READY":
            raise AssertionError(f"unexpected line from the worker: {kind} {payload}")
        samples = []
        async with asyncflow.Client(ctx.url) as client:
            for _ in range(rounds):
                before = time.monotonic()
                handle = await client.enqueue(LATENCY_QUEUE, PING)
                kind, payload = await helper.line()
                workflow_id, _, at = payload.partition(" ")
                if kind != "RAN" or workflow_id != handle.workflow_id:
                    raise AssertionError(f"unexpected line from the worker: {kind} {payload}")
                samples.append(float(at) - before)
                await handle.get_result(timeout_seconds=60)  # the worker is idle again
    finally:
        await helper.finish()
    return samples


async def _in_process(ctx: Context, rounds: int) -> list[float]:
    started: dict[str, float] = {}
    built = build(ctx.url, [LATENCY_QUEUE], started.__setitem__)
    samples = []
    async with built.app:
        for _ in range(rounds):
            before = time.monotonic()
            handle = await built.latency.enqueue(built.ping)
            await handle.get_result(timeout_seconds=60)
            samples.append(started[handle.workflow_id] - before)
    return samples


async def run(ctx: Context) -> Measured:
    rounds, warmup = ctx.sizes.queue_latency, ctx.sizes.warmup_rounds
    across = (await _across_processes(ctx, warmup + rounds))[warmup:]
    ctx.note(f"{rounds} enqueues to a worker process")
    local = (await _in_process(ctx, warmup + rounds))[warmup:]
    ctx.note(f"{rounds} enqueues in one process")
    figures = latency_figures("latency", "enqueue → first step (worker process)", across,
                              "notify_ms_p50", "notify_ms_p99")
    figures += latency_figures("local_latency", "enqueue → first step (same process)", local,
                               "commit_ms_p50", "commit_ms_p99")
    return figures, {"rounds": rounds, "warmup_rounds": warmup}
