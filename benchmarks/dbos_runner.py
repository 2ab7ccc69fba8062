"""DBOS Transact's side of ``--compare dbos``: scenarios 1-5 and the two queue scenarios with
its documented async API.

Run by :mod:`benchmarks.dbos_compare` in a subprocess of its own (DBOS is a process-wide
singleton), one scenario per process, against a fresh database on the same server:
``python -m benchmarks.dbos_runner SCENARIO URL [--quick]``. DBOS runs with its defaults; only
the application name and the system database URL are configured (and, for the worker fleet,
each worker's executor id and the application version, through DBOS's environment variables).
Prints ``PROGRESS text`` lines and finally ``RESULT {json}``.

``queue_latency`` runs in this process (a DBOS queue dequeues by polling the database, so where
the enqueue comes from does not change its latency); ``queue_fleet`` starts 1, 2 and 4 DBOS
worker processes (:mod:`benchmarks.dbos_queue_worker`) and enqueues from a ``DBOSClient`` here,
without launching DBOS in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSClient, DBOSConfig, EnqueueOptions, SetWorkflowID, WorkflowHandleAsync

from . import loop
from .model import Figure, ScenarioResult, cpu_figure, latency_figures
from .scenarios._subprocess import cpu_seconds
from .sizes import FULL, QUICK, Sizes
from .stats import median, to_ms

Measured = tuple[list[Figure], dict[str, Any]]
STEPS = 3
GAP_S = 0.002

durations: list[float] = []
write_rate: list[float] = []
first_step_at: dict[str, float] = {}
LATENCY_QUEUE = "bench_latency"
ROOT = Path(__file__).resolve().parent.parent
FLEET_QUEUE = "bench_fleet"
FLEET_VERSION = "bench-fleet"
APP_NAME = "asyncflow-bench"


class Arrivals:
    def __init__(self, expected: int = 0) -> None:
        self.expected = expected
        self.count = 0
        self.done = asyncio.Event()

    def arrive(self) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


arrivals = Arrivals()


def progress(text: str) -> None:
    print(f"PROGRESS {text}", flush=True)


@DBOS.step(name="bench.noop")
async def noop() -> None:
    return None


@DBOS.workflow(name="bench.steps")
async def chain(steps: int, timed: bool) -> int:
    for _ in range(steps):
        before = time.perf_counter()
        await noop()
        if timed:
            durations.append(time.perf_counter() - before)
    return steps


@DBOS.workflow(name="bench.three_steps")
async def three_steps() -> None:
    for _ in range(STEPS):
        await noop()


@DBOS.workflow(name="bench.ponger")
async def ponger(total: int) -> int:
    for index in range(total):
        message = await DBOS.recv_async("ping", timeout_seconds=60)
        await DBOS.set_event_async(f"pong{index}", message)
    return total


@DBOS.workflow(name="bench.paced_writer")
async def paced_writer(count: int) -> int:
    for _ in range(count):
        await DBOS.write_stream_async("ticks", time.perf_counter())
        await asyncio.sleep(GAP_S)  # pacing between writes, not a wait for state
    await DBOS.close_stream_async("ticks")
    return count


@DBOS.workflow(name="bench.fast_writer")
async def fast_writer(count: int) -> int:
    started = time.perf_counter()
    for index in range(count):
        await DBOS.write_stream_async("values", index)
    write_rate.append(count / (time.perf_counter() - started))
    await DBOS.close_stream_async("values")
    return count


@DBOS.workflow(name="bench.parked")
async def parked() -> Any:
    arrivals.arrive()
    return await DBOS.recv_async(timeout_seconds=300)


@DBOS.step(name="bench.queue.first")
async def first_step() -> None:
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    first_step_at[workflow_id] = time.perf_counter()


@DBOS.workflow(name="bench.queue.ping")
async def ping() -> None:
    await first_step()


async def run_and_wait(workflow: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    handle = await DBOS.start_workflow_async(workflow, *args)
    return await handle.get_result()


async def steps(url: str, sizes: Sizes) -> Measured:
    await run_and_wait(chain, sizes.warmup_rounds, False)
    durations.clear()
    totals = []
    cpu = time.process_time()
    for _ in range(sizes.steps_repeats):
        started = time.perf_counter()
        await run_and_wait(chain, sizes.steps, True)
        totals.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    figures = latency_figures("step", "step", durations, "commit_ms_p50", "commit_ms_p99")
    figures.append(Figure("workflow_ms_per_step", "whole workflow / steps",
                          median(to_ms(totals)) / sizes.steps, "ms", "commit_ms_p50"))
    figures.append(cpu_figure("cpu_us_per_step", "step", cpu, sizes.steps * sizes.steps_repeats))
    return figures, {"steps": sizes.steps, "workflows_timed": sizes.steps_repeats}


async def throughput(url: str, sizes: Sizes) -> Measured:
    async def batch(size: int) -> tuple[float, float]:
        started = time.perf_counter()
        handles = await asyncio.gather(
            *(DBOS.start_workflow_async(three_steps) for _ in range(size))
        )
        all_started = time.perf_counter()
        await asyncio.gather(*(handle.get_result() for handle in handles))
        return all_started - started, time.perf_counter() - started

    count = sizes.throughput
    await batch(max(10, count // 10))
    cpu = time.process_time()
    start_s, total_s = await batch(count)
    cpu = time.process_time() - cpu
    figures = [
        Figure("workflows_per_s", "workflows/s", count / total_s, "wf/s", "commits_per_s_20"),
        Figure("start_s", f"all {count} started", start_s, "s"),
        Figure("total_s", f"all {count} finished", total_s, "s", "s_per_commit_20",
               float(count)),
        cpu_figure("cpu_us_per_workflow", "workflow (start, 3 steps, result)", cpu, count),
    ]
    return figures, {"workflows": count, "steps_each": STEPS}


async def _rounds(send: Any, get_event: Any, workflow_id: str, first: int,
                  count: int) -> list[float]:
    samples = []
    for index in range(first, first + count):
        before = time.perf_counter()
        await send(workflow_id, index, "ping")
        value = await get_event(workflow_id, f"pong{index}", timeout_seconds=30)
        samples.append(time.perf_counter() - before)
        if value != index:
            raise AssertionError(f"round {index}: got {value!r}")
    return samples


async def pingpong(url: str, sizes: Sizes) -> Measured:
    rounds, warmup = sizes.pingpong, sizes.warmup_rounds
    with SetWorkflowID("ponger-app"):
        handle = await DBOS.start_workflow_async(ponger, warmup + rounds)
    await _rounds(DBOS.send_async, DBOS.get_event_async, "ponger-app", 0, warmup)
    cpu = time.process_time()
    in_app = await _rounds(DBOS.send_async, DBOS.get_event_async, "ponger-app", warmup, rounds)
    cpu = time.process_time() - cpu
    await handle.get_result()
    progress(f"{rounds} rounds from the app")
    with SetWorkflowID("ponger-client"):
        handle = await DBOS.start_workflow_async(ponger, warmup + rounds)
    client = DBOSClient(system_database_url=url)
    try:
        await _rounds(client.send_async, client.get_event_async, "ponger-client", 0, warmup)
        via_client = await _rounds(client.send_async, client.get_event_async, "ponger-client",
                                   warmup, rounds)
    finally:
        client.destroy()
    await handle.get_result()
    progress(f"{rounds} rounds from a DBOSClient")
    figures = latency_figures("rtt", "round trip", in_app, "notify_ms_p50", "notify_ms_p99")
    figures += latency_figures("client_rtt", "round trip via Client (NOTIFY)", via_client,
                               "notify_ms_p50", "notify_ms_p99")
    figures.append(cpu_figure("cpu_us_per_round", "round (send, recv, set_event, get_event)",
                              cpu, rounds))
    return figures, {"rounds": rounds, "warmup_rounds": warmup}


async def stream(url: str, sizes: Sizes) -> Measured:
    paced, sustained, warmup = sizes.stream_values, sizes.stream_sustained, sizes.warmup_rounds
    handle = await DBOS.start_workflow_async(paced_writer, warmup + paced)
    latencies = []
    async for written_at in DBOS.read_stream_async(handle.workflow_id, "ticks"):
        latencies.append(time.perf_counter() - written_at)
    await handle.get_result()
    latencies = latencies[warmup:]
    progress(f"{len(latencies)} paced values read")
    started, cpu = time.perf_counter(), time.process_time()
    handle = await DBOS.start_workflow_async(fast_writer, sustained)
    received = 0
    async for _value in DBOS.read_stream_async(handle.workflow_id, "values"):
        received += 1
    elapsed = time.perf_counter() - started
    await handle.get_result()
    cpu = time.process_time() - cpu
    if received != sustained or len(latencies) != paced:
        raise AssertionError(f"read {len(latencies)}/{paced} and {received}/{sustained} values")
    figures = latency_figures("latency", "write→read", latencies, "notify_ms_p50",
                              "notify_ms_p99")
    figures += [
        Figure("values_per_s", "values/s written and read", sustained / elapsed, "values/s",
               "commits_per_s_1"),
        Figure("write_values_per_s", "values/s written", write_rate[0], "values/s",
               "commits_per_s_1"),
        cpu_figure("cpu_us_per_value", "value written and read (back to back)", cpu, sustained),
    ]
    return figures, {"paced_values": paced, "gap_ms": GAP_S * 1000, "sustained_values": sustained}


async def _settle() -> None:
    """Let the thread-pool work DBOS queued for the recvs just entered run (it does its
    database calls in worker threads): two round trips through the same pool, in order."""
    await asyncio.to_thread(lambda: None)
    await asyncio.to_thread(lambda: None)


async def fanout(url: str, sizes: Sizes) -> Measured:
    async def round_trip(size: int) -> tuple[float, float, float]:
        global arrivals
        arrivals = Arrivals(size)
        started = time.perf_counter()
        handles = await asyncio.gather(*(DBOS.start_workflow_async(parked) for _ in range(size)))
        await arrivals.done.wait()
        await _settle()
        park_s = time.perf_counter() - started
        results = asyncio.gather(*(handle.get_result() for handle in handles))
        await _settle()
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(DBOS.send_async(handle.workflow_id, index)
                               for index, handle in enumerate(handles)))
        values = await results
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        if values != list(range(size)):
            raise AssertionError("fanout results do not match the messages sent")
        return park_s, elapsed, cpu

    count = sizes.fanout
    await round_trip(max(10, count // 10))
    park_s, elapsed, cpu = await round_trip(count)
    figures = [
        Figure("seconds", f"{count} sends → {count} results", elapsed, "s", "s_per_commit_20",
               float(count)),
        Figure("park_s", f"start and park {count}", park_s, "s"),
        cpu_figure("cpu_us_per_send", "send (to the woken workflow's result)",
                   cpu, count),
    ]
    return figures, {"workflows": count}


async def queue_latency(url: str, sizes: Sizes) -> Measured:
    rounds, warmup = sizes.dbos_queue_latency, sizes.warmup_rounds
    # DBOS 3.4 refuses ``Queue(...)``: a queue is registered (persisted in the system
    # database) once DBOS is launched, and its worker thread starts within DBOS's one-second
    # check for new queues; the warm-up rounds cover that.
    latency_queue = await DBOS.register_queue_async(LATENCY_QUEUE)
    samples = []
    for _ in range(warmup + rounds):
        before = time.perf_counter()
        handle = await latency_queue.enqueue_async(ping)
        await handle.get_result()
        samples.append(first_step_at[handle.workflow_id] - before)
    samples = samples[warmup:]
    progress(f"{rounds} enqueues (in process)")
    figures = latency_figures("latency", "enqueue → first step", samples, "notify_ms_p50",
                              "notify_ms_p99")
    return figures, {"rounds": rounds, "warmup_rounds": warmup, "where": "in process"}


class FleetWorker:
    """A DBOS worker process serving the fleet queue (``benchmarks.dbos_queue_worker``)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str, executor_id: str) -> FleetWorker:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        env["DBOS__VMID"] = executor_id  # DBOS's executor id: one per process
        env["DBOS__APPVERSION"] = FLEET_VERSION
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.dbos_queue_worker", url,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            cwd=str(ROOT))
        worker = cls(process)
        assert process.stdout is not None
        line = (await process.stdout.readline()).decode().strip()
        if line != "READY":
            await worker.stop()
            raise RuntimeError(f"DBOS worker {executor_id} did not start (exit code "
                               f"{process.returncode})")
        return worker

    async def stop(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        try:
            async with asyncio.timeout(60):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def migrate(url: str) -> None:
    """Create DBOS's system tables with its CLI (``dbos migrate``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from dbos.cli.cli import app; app()", "migrate", "-s", url,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"dbos migrate failed: {output.decode(errors='replace')[-2000:]}")


async def queue_fleet(url: str, sizes: Sizes) -> Measured:
    count = sizes.queue_fleet
    figures: list[Figure] = []
    cpu_figures: list[Figure] = []
    enqueue_s = 0.0
    # The system tables first (DBOS's own `dbos migrate`), then the queue registered before
    # any worker launches, so that each one's queue manager serves it from its first look.
    await migrate(url)
    client = DBOSClient(system_database_url=url, application_name=APP_NAME)
    try:
        await client.register_queue_async(FLEET_QUEUE)
        for workers in sizes.queue_fleet_workers:
            # One at a time: each launch migrates the system database.
            fleet = [await FleetWorker.start(url, f"fleet{workers}-{index}")
                     for index in range(workers)]
            try:
                options: EnqueueOptions = {
                    "queue_name": FLEET_QUEUE, "workflow_name": "bench.queue.three_steps",
                    "app_version": FLEET_VERSION}
                pids = [worker.process.pid for worker in fleet]
                cpu = cpu_seconds(pids)
                started = time.perf_counter()
                handles: list[WorkflowHandleAsync[Any]] = []
                for first in range(0, count, 100):
                    handles += await asyncio.gather(*(
                        client.enqueue_async(options)
                        for _ in range(first, min(count, first + 100))))
                enqueued = time.perf_counter()
                for handle in handles:
                    await handle.get_result()
                drained = time.perf_counter()
                cpu = cpu_seconds(pids) - cpu
            finally:
                for worker in fleet:
                    await worker.stop()
            enqueue_s = enqueued - started
            rate = count / (drained - enqueued)
            progress(f"{workers} worker(s): {count} drained in {drained - enqueued:.3f} s "
                     f"({rate:,.0f}/s); enqueued in {enqueue_s:.3f} s")
            figures.append(Figure(f"workers_{workers}_per_s",
                                  f"workflows/s, {workers} worker(s)", rate, "wf/s",
                                  "commits_per_s_20"))
            cpu_figures.append(Figure(f"cpu_us_per_dispatch_{workers}",
                                      f"worker CPU µs per workflow, {workers} worker(s)",
                                      cpu * 1e6 / count, "µs"))
    finally:
        client.destroy()
    figures += cpu_figures
    figures.append(Figure("enqueue_s", f"enqueue {count} (DBOSClient, 100 at a time)",
                          enqueue_s, "s"))
    return figures, {"workflows": count, "steps_each": STEPS,
                     "workers": list(sizes.queue_fleet_workers)}


SCENARIOS: dict[str, Callable[[str, Sizes], Awaitable[Measured]]] = {
    "steps": steps,
    "throughput": throughput,
    "pingpong": pingpong,
    "stream": stream,
    "fanout": fanout,
    "queue_latency": queue_latency,
    "queue_fleet": queue_fleet,
}
#: Scenarios that run DBOS in other processes only (this one is just a client).
CLIENT_ONLY = {"queue_fleet"}


async def main(name: str, url: str, quick: bool) -> None:
    launched = name not in CLIENT_ONLY
    if launched:
        config: DBOSConfig = {"name": APP_NAME, "system_database_url": url}
        DBOS(config=config)
        DBOS.launch()
    result = ScenarioResult(name)
    started = time.perf_counter()
    try:
        result.figures, result.params = await SCENARIOS[name](url, QUICK if quick else FULL)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.seconds = time.perf_counter() - started
        if launched:
            DBOS.destroy()
    print("RESULT " + json.dumps(result.to_dict(None)), flush=True)


if __name__ == "__main__":
    loop.run(main(sys.argv[1], sys.argv[2], "--quick" in sys.argv[3:]))
