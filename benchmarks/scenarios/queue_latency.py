"""``queue_latency``: enqueue → the workflow's first step running, with one idle worker.

Mainly across processes, as a web tier and a worker would be: a ``Client`` in the runner
enqueues, a worker process (serving the queue) starts the workflow when the NOTIFY reaches it;
the step reports ``time.monotonic()``, a clock all processes share. One workflow at a time (the
next is enqueued once the previous has finished, so the worker is idle). Also measured in one
process: an app that enqueues to a queue it serves (no NOTIFY: the enqueue hands the workflow to
the process); and open loop, enqueues offered at a fixed rate to the worker process whatever
their latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncflow

from ..model import latency_figures
from ._base import Context, Measured
from ._subprocess import Helper
from .queue_app import LATENCY_QUEUE, PING, build


async def _worker(ctx: Context) -> Helper:
    """A worker process serving the latency queue, once it says it is ready."""
    helper = await Helper.start("queue_proc", ctx.url, LATENCY_QUEUE)
    kind, payload = await helper.line()
    if kind != "READY":
        await helper.finish()
        raise AssertionError(f"unexpected line from the worker: {kind} {payload}")
    return helper


def ran_lines(helper: Helper) -> Callable[[], Awaitable[tuple[str, float]]]:
    """A reader of a worker's ``RAN <id> <time.monotonic()>`` lines (also pgqueuer's)."""
    async def ran() -> tuple[str, float]:
        kind, payload = await helper.line()
        job_id, _, at = payload.partition(" ")
        if kind != "RAN":
            raise AssertionError(f"unexpected line from the worker: {kind} {payload}")
        return job_id, float(at)

    return ran


async def _across_processes(ctx: Context, rounds: int) -> list[float]:
    helper = await _worker(ctx)
    try:
        samples = []
        ran = ran_lines(helper)
        async with asyncflow.Client(ctx.url) as client:
            for _ in range(rounds):
                before = time.monotonic()
                handle = await client.enqueue(LATENCY_QUEUE, PING)
                workflow_id, at = await ran()
                if workflow_id != handle.workflow_id:
                    raise AssertionError(f"the worker ran {workflow_id}, not "
                                         f"{handle.workflow_id}")
                samples.append(at - before)
                await handle.get_result(timeout_seconds=60)  # the worker is idle again
    finally:
        await helper.finish()
    return samples


#: The open-loop phase's offered rate: enqueues per second, spread evenly in time.
OPEN_RATE = 200


async def open_loop(count: int, enqueue: Callable[[], Awaitable[str]],
                    ran: Callable[[], Awaitable[tuple[str, float]]]) -> list[float]:
    """Enqueue ``count`` jobs at :data:`OPEN_RATE` per second whatever each one's latency
    (``enqueue`` returns its id; a late one does not push the next ones back), while ``ran``
    reads the worker's ``(id, time.monotonic())`` lines; returns each job's enqueue → start.
    Shared with pgqueuer's side (:mod:`benchmarks.pgqueuer_runner`)."""
    sent: dict[str, float] = {}
    started: dict[str, float] = {}

    async def read() -> None:
        while len(started) < count:
            job_id, at = await ran()
            started[job_id] = at

    reader = asyncio.ensure_future(read())
    try:
        first = time.monotonic()
        for n in range(count):
            delay = first + n / OPEN_RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule: an open loop, not a wait for state
            before = time.monotonic()
            sent[await enqueue()] = before
        async with asyncio.timeout(60):
            await reader
    finally:
        reader.cancel()
    return [started[job_id] - before for job_id, before in sent.items()]


async def _open_loop(ctx: Context, count: int) -> list[float]:
    helper = await _worker(ctx)
    try:
        async with asyncflow.Client(ctx.url) as client:
            async def enqueue() -> str:
                return (await client.enqueue(LATENCY_QUEUE, PING)).workflow_id

            return await open_loop(count, enqueue, ran_lines(helper))
    finally:
        await helper.finish()


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
    offered = (await _open_loop(ctx, warmup + rounds))[warmup:]
    ctx.note(f"{rounds} enqueues at {OPEN_RATE}/s to a worker process")
    figures = latency_figures("latency", "enqueue → first step (worker process)", across,
                              "notify_ms_p50", "notify_ms_p99")
    figures += latency_figures("open_latency",
                               f"enqueue → first step (worker process, {OPEN_RATE}/s open loop)",
                               offered, "notify_ms_p50", "notify_ms_p99")
    figures += latency_figures("local_latency", "enqueue → first step (same process)", local,
                               "commit_ms_p50", "commit_ms_p99")
    return figures, {"rounds": rounds, "warmup_rounds": warmup}
