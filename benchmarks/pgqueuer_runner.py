"""pgqueuer's side of ``--compare pgqueuer``: the two queue scenarios with pgqueuer's documented
API (``Queries.enqueue``, a ``QueueManager`` with an entrypoint per job kind), with its defaults.

Run by :mod:`benchmarks.compare` in a subprocess, one scenario per process, against a fresh
database on the same server: ``python -m benchmarks.pgqueuer_runner SCENARIO URL [--quick]``.
Installs pgqueuer's schema first (``Queries.install``). Prints ``PROGRESS text`` lines and
finally ``RESULT {json}``.

A pgqueuer job is not a durable workflow: its entrypoint runs once per dequeue, nothing is
checkpointed, and its completion is logged by the worker after the entrypoint returns. So the
comparison is asyncflow's queued workflow against the lightest thing pgqueuer does.

- ``queue_latency``: enqueue → the entrypoint running, one idle worker process
  (:mod:`benchmarks.pgqueuer_worker`), the runner enqueueing; and in one process (a queue
  manager in the runner itself).
- ``queue_fleet``: jobs enqueued in one statement, drained by 1, 2 and 4 worker processes
  started beforehand: jobs/s from the enqueue's commit until every entrypoint has run; the
  workers' CPU per job; the server's commits and WAL flushes per job. A job does nothing: its
  figures are reported under asyncflow's keys for 0, 1 and 3 no-op steps alike (the 0-step
  workflow is its counterpart: a claim and a terminal write).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from pgqueuer import Job, PgQueuer, Queries

from . import loop
from .counts import Counts, counts
from .model import Figure, ScenarioResult, latency_figures
from .scenarios._subprocess import Helper, cpu_seconds
from .scenarios.queue_latency import OPEN_RATE, open_loop, ran_lines
from .sizes import FULL, QUICK, Sizes

Measured = tuple[list[Figure], dict[str, Any]]
#: asyncflow's fleet figures by body (0, 1 and 3 no-op steps): a job is compared with each.
FLEET_PREFIXES = ("steps0_", "steps1_", "")


def progress(text: str) -> None:
    print(f"PROGRESS {text}", flush=True)


async def start_worker(url: str) -> Helper:
    helper = await Helper.start("pgqueuer_worker", url, package="benchmarks")
    kind, payload = await helper.line()
    if kind != "READY":
        await helper.finish()
        raise AssertionError(f"unexpected line from a pgqueuer worker: {kind} {payload}")
    return helper


async def _across_processes(url: str, queries: Queries, rounds: int) -> list[float]:
    worker = await start_worker(url)
    samples = []
    try:
        for _ in range(rounds):
            before = time.monotonic()
            [job_id] = await queries.enqueue("bench_ping", None)
            kind, payload = await worker.line()
            ran_id, _, at = payload.partition(" ")
            if kind != "RAN" or ran_id != str(job_id):
                raise AssertionError(f"unexpected line from the worker: {kind} {payload}")
            samples.append(float(at) - before)
    finally:
        await worker.finish()
    return samples


async def _in_process(url: str, queries: Queries, rounds: int) -> list[float]:
    conn = await asyncpg.connect(url)
    pgq = PgQueuer.from_asyncpg_connection(conn)
    loop = asyncio.get_running_loop()
    ran: dict[int, asyncio.Future[float]] = {}

    @pgq.entrypoint("bench_local")
    async def local(job: Job) -> None:
        ran.setdefault(int(job.id), loop.create_future()).set_result(time.monotonic())

    worker = asyncio.ensure_future(pgq.qm.run())
    samples = []
    try:
        for _ in range(rounds):
            before = time.monotonic()
            [job_id] = await queries.enqueue("bench_local", None)
            started = await asyncio.wait_for(ran.setdefault(int(job_id), loop.create_future()),
                                             60)
            samples.append(started - before)
    finally:
        pgq.shutdown.set()
        await worker
        await conn.close()
    return samples


async def _open_loop(url: str, queries: Queries, count: int) -> list[float]:
    worker = await start_worker(url)
    try:
        async def enqueue() -> str:
            [job_id] = await queries.enqueue("bench_ping", None)
            return str(job_id)

        return await open_loop(count, enqueue, ran_lines(worker))
    finally:
        await worker.finish()


async def queue_latency(url: str, queries: Queries, sizes: Sizes) -> Measured:
    rounds, warmup = sizes.queue_latency, sizes.warmup_rounds
    across = (await _across_processes(url, queries, warmup + rounds))[warmup:]
    progress(f"{rounds} enqueues to a worker process")
    local = (await _in_process(url, queries, warmup + rounds))[warmup:]
    progress(f"{rounds} enqueues in one process")
    offered = (await _open_loop(url, queries, warmup + rounds))[warmup:]
    progress(f"{rounds} enqueues at {OPEN_RATE}/s to a worker process")
    figures = latency_figures("latency", "enqueue → entrypoint (worker process)", across,
                              "notify_ms_p50", "notify_ms_p99")
    figures += latency_figures("open_latency",
                               f"enqueue → entrypoint (worker process, {OPEN_RATE}/s open loop)",
                               offered, "notify_ms_p50", "notify_ms_p99")
    figures += latency_figures("local_latency", "enqueue → entrypoint (same process)", local,
                               "commit_ms_p50", "commit_ms_p99")
    return figures, {"rounds": rounds, "warmup_rounds": warmup}


async def _drain(url: str, queries: Queries, workers: int,
                 count: int) -> tuple[float, float, float, Counts]:
    helpers = [await start_worker(url) for _ in range(workers)]
    stats = await asyncpg.connect(url)
    done = asyncio.Event()
    seen = [0]

    async def count_lines(helper: Helper) -> None:
        while not done.is_set():
            kind, payload = await helper.line()
            if kind != "D":
                raise AssertionError(f"unexpected line from a worker: {kind} {payload}")
            seen[0] += 1
            if seen[0] >= count:
                done.set()

    readers = [asyncio.ensure_future(count_lines(helper)) for helper in helpers]
    try:
        pids = [helper.process.pid for helper in helpers]
        before = await counts(stats)
        cpu_before = cpu_seconds(pids)
        started = time.perf_counter()
        await queries.enqueue(["bench_noop"] * count, [None] * count, [0] * count)
        committed = time.perf_counter()
        async with asyncio.timeout(600):
            finished = asyncio.ensure_future(done.wait())
            await asyncio.wait([finished, *readers], return_when=asyncio.FIRST_COMPLETED)
            for reader in readers:
                if reader.done() and reader.exception() is not None:
                    raise reader.exception()  # type: ignore[misc]
            await finished
        drained = time.perf_counter()
        cpu = cpu_seconds(pids) - cpu_before
    finally:
        for reader in readers:
            reader.cancel()
        for helper in helpers:
            await helper.finish()
    try:
        server = await counts(stats) - before  # the workers' backends have exited: reported
    finally:
        await stats.close()
    return committed - started, drained - committed, cpu, server


async def queue_fleet(url: str, queries: Queries, sizes: Sizes) -> Measured:
    count = sizes.queue_fleet
    figures: list[Figure] = []
    cpu_figures: list[Figure] = []
    server_figures: list[Figure] = []
    enqueue_s = 0.0
    for workers in sizes.queue_fleet_workers:
        enqueue_s, drain_s, cpu, server = await _drain(url, queries, workers, count)
        rate = count / drain_s
        progress(f"{workers} worker(s): {count} jobs drained in {drain_s:.3f} s ({rate:,.0f}/s); "
                 f"enqueued in {enqueue_s:.3f} s; worker CPU {cpu * 1e6 / count:.0f} µs/job; "
                 f"per job: {server.commits / count:.3f} commits, "
                 f"{server.wal_records / count:.1f} WAL records, "
                 f"{server.wal_flushes / count:.3f} WAL flushes")
        for prefix in FLEET_PREFIXES:
            figures.append(Figure(f"{prefix}workers_{workers}_per_s",
                                  f"jobs/s, {workers} worker(s)", rate, "jobs/s",
                                  "commits_per_s_20"))
            cpu_figures.append(Figure(f"{prefix}cpu_us_per_dispatch_{workers}",
                                      f"worker CPU µs per job, {workers} worker(s)",
                                      cpu * 1e6 / count, "µs"))
            if workers == sizes.queue_fleet_workers[0]:
                server_figures += [
                    Figure(f"{prefix}commits_per_workflow", "server commits per job",
                           server.commits / count, ""),
                    Figure(f"{prefix}wal_flushes_per_workflow", "WAL flushes per job",
                           server.wal_flushes / count, "")]
    figures += cpu_figures + server_figures
    figures.append(Figure("enqueue_s", f"enqueue {count} (one statement)", enqueue_s, "s"))
    figures.append(Figure("enqueue_each_s", f"enqueue {count} (one statement)", enqueue_s, "s"))
    return figures, {"jobs": count, "workers": list(sizes.queue_fleet_workers),
                     "batch_size": 10}


SCENARIOS: dict[str, Callable[[str, Queries, Sizes], Awaitable[Measured]]] = {
    "queue_latency": queue_latency,
    "queue_fleet": queue_fleet,
}


async def main(name: str, url: str, quick: bool) -> None:
    result = ScenarioResult(name)
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        queries = Queries.from_asyncpg_connection(conn)
        await queries.install()
        result.figures, result.params = await SCENARIOS[name](url, queries,
                                                              QUICK if quick else FULL)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.seconds = time.perf_counter() - started
        await conn.close()
    print("RESULT " + json.dumps(result.to_dict(None)), flush=True)


if __name__ == "__main__":
    loop.run(main(sys.argv[1], sys.argv[2], "--quick" in sys.argv[3:]))
