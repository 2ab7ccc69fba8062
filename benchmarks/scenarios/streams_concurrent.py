"""``streams_concurrent``: many workflows streaming at once, each followed by its own reader
(group commit at work). Four phases, each with fresh workflows released together:

1. ``offered``: each writer paces its values 5 ms apart (200 writers: 40,000 values/s offered,
   more than two cores sustain): aggregate values/s and write→read latency while all run;
2. ``capacity``: the same writers back to back, no pacing: the values/s the machine sustains
   (written and read), and the process's CPU per value;
3. ``sustained``: an open-loop load of half the capacity just measured: writer ``k`` of ``n``
   writes its ``i``-th value at ``release + (1 + k / n + i) * period``, so arrivals are
   spread evenly in time, whatever each write's latency: the write→read latency at a load the
   machine sustains (the ``p99 ≤ 10 ms`` target);
4. ``sustained_bursty``: the same offered rate paced as phases 1 and 2 were before: every
   writer sleeps ``period`` after each write returns, all starting on the same tick. Writers
   whose writes share a batch return together and sleep together, so they stay in step: 200
   values arrive at once every period (bursts, not a load spread in time).

Latency is from the ``write_stream`` call to the reader having the value. Phase 3 reports it
three ways: over every value; over the steady state, each writer's first and last values left
out (the target's figure); and over those first and last values alone. A writer's first value
comes right after all 200 workflows were released together (their ``ready`` steps checkpointed
at once), and its last is followed at once by its ``close_stream`` and its workflow's end: in
the phase's last period the machine does the period's 200 writes and 200 closes, 200 workflow
ends and 200 readers' ends besides, which is not the offered load. The phase also counts the
garbage collector's full collections (each stops the event loop).
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass

import asyncflow

from ..model import Figure, cpu_figure, latency_figures
from ..stats import percentile, to_ms
from ._base import Context, Measured, make_app

GAP_S = 0.005
SUSTAINED_SHARE = 0.5  # phases 3 and 4 offer this share of the measured capacity


@dataclass(slots=True)
class Phase:
    latencies: list[float]
    steady: list[float]  # latencies of every value but each writer's first and last
    edges: list[float]  # latencies of each writer's first and last values
    full_collections: list[float]  # seconds each full collection of the garbage collector took
    lateness: list[float]  # open loop: how late each write started after its scheduled time
    elapsed: float
    cpu: float
    batches: int
    ops: int
    total: int

    @property
    def rate(self) -> float:
        return self.total / self.elapsed

    @property
    def writes_per_statement(self) -> float:
        return self.ops / max(self.batches, 1)


async def run(ctx: Context) -> Measured:
    writers, values = ctx.sizes.streams_concurrent, ctx.sizes.streams_concurrent_values
    app = make_app(ctx.url)
    go = asyncio.Event()
    released = [0.0]  # perf_counter() when the phase's writers were let go
    lateness: list[float] = []

    @app.step(name="bench.ready")
    async def ready() -> None:
        await go.wait()

    @app.workflow(name="bench.streamer")
    async def streamer(count: int, gap_s: float, phase_s: float | None) -> int:
        """``phase_s`` None: sleep ``gap_s`` after each write (closed loop); else write value
        ``i`` at ``released + phase_s + i * gap_s`` (open loop)."""
        await ready()
        for index in range(count):
            if phase_s is not None:
                due = released[0] + phase_s + index * gap_s
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing to a schedule, not a wait for state
                lateness.append(time.perf_counter() - due)
            await asyncflow.write_stream("tokens", time.perf_counter())
            if gap_s and phase_s is None:
                await asyncio.sleep(gap_s)  # pacing between writes, not a wait for state
        await asyncflow.close_stream("tokens")
        return count

    async def phase(gap_s: float, *, open_loop: bool = False) -> Phase:
        latencies: list[float] = []
        steady: list[float] = []
        edges: list[float] = []
        lateness.clear()

        async def follow(workflow_id: str) -> int:
            read = 0
            async for written_at in app.read_stream(workflow_id, "tokens"):
                latency = time.perf_counter() - written_at
                latencies.append(latency)
                (edges if read in (0, values - 1) else steady).append(latency)
                read += 1
            return read

        go.clear()
        handles = await asyncio.gather(*(
            app.start_workflow(streamer, values, gap_s,
                               gap_s * (1 + index / writers) if open_loop else None)
            for index in range(writers)))
        readers = [asyncio.ensure_future(follow(h.workflow_id)) for h in handles]
        store = app.runtime.store
        batches, ops = store.writes.batches, store.writes.ops
        started, cpu = time.perf_counter(), time.process_time()
        released[0] = started
        full_collections: list[float] = []
        collecting = [0.0]

        def on_collection(event: str, info: dict[str, int]) -> None:
            if info["generation"] != 2:
                return
            if event == "start":
                collecting[0] = time.perf_counter()
            else:
                full_collections.append(time.perf_counter() - collecting[0])

        gc.callbacks.append(on_collection)
        go.set()
        try:
            counts = await asyncio.gather(*readers)
        finally:
            gc.callbacks.remove(on_collection)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        await asyncio.gather(*(h.get_result() for h in handles))
        total = writers * values
        if sum(counts) != total:
            raise AssertionError(f"read {sum(counts)} of {total} values")
        return Phase(latencies, steady, edges, full_collections, list(lateness), elapsed, cpu,
                     store.writes.batches - batches, store.writes.ops - ops, total)

    async with app:
        offered = await phase(GAP_S)
        ctx.note(f"{writers} streams x {values} values, {GAP_S * 1000:.0f} ms apart: "
                 f"{offered.rate:,.0f} values/s, {offered.writes_per_statement:.1f} writes "
                 "per statement")
        capacity = await phase(0.0)
        ctx.note(f"back to back: {capacity.rate:,.0f} values/s (the capacity), "
                 f"{capacity.cpu * 1e6 / capacity.total:.0f} µs CPU per value")
        sustained_gap = writers / (SUSTAINED_SHARE * capacity.rate)
        sustained = await phase(sustained_gap, open_loop=True)
        late_p99 = percentile(to_ms(sustained.lateness), 99)
        ctx.note(f"offered {writers / sustained_gap:,.0f} values/s, spread in time (each "
                 f"writer {sustained_gap * 1000:.1f} ms apart): {sustained.rate:,.0f} values/s, "
                 f"{sustained.writes_per_statement:.1f} writes per statement, writes started "
                 f"p99 {late_p99:.2f} ms late; {_collections(sustained)}")
        bursty = await phase(sustained_gap)
        ctx.note(f"offered {writers / sustained_gap:,.0f} values/s in bursts (all writers in "
                 f"step): {bursty.rate:,.0f} values/s, {bursty.writes_per_statement:.1f} writes "
                 "per statement")
    figures = latency_figures("latency", f"write→read, {writers / GAP_S:,.0f} values/s offered",
                              offered.latencies, "notify_ms_p50", "notify_ms_p99")
    figures += [
        Figure("values_per_s", "values/s, all streams", offered.rate, "values/s",
               "notify_commits_per_s_20"),
        Figure("writes_per_statement", "stream writes per statement",
               offered.writes_per_statement, "writes"),
        Figure("capacity_values_per_s", "sustained capacity: values/s back to back",
               capacity.rate, "values/s", "notify_commits_per_s_20"),
        cpu_figure("cpu_us_per_value", "value written and read (back to back)", capacity.cpu,
                   capacity.total),
        Figure("sustained_offered_per_s", f"offered at {SUSTAINED_SHARE:.0%} of capacity",
               writers / sustained_gap, "values/s"),
    ]
    figures += latency_figures("sustained_latency", "write→read at that load, spread in time",
                               sustained.latencies, "notify_ms_p50", "notify_ms_p99")
    figures += latency_figures("sustained_steady_latency",
                               "write→read at that load, steady state (no first or last values)",
                               sustained.steady, "notify_ms_p50", "notify_ms_p99")
    figures += latency_figures("sustained_edge_latency",
                               "write→read at that load, first and last values",
                               sustained.edges, "notify_ms_p50", "notify_ms_p99")
    figures.append(Figure("sustained_full_collections",
                          "full garbage collections during that load",
                          len(sustained.full_collections), "collections"))
    figures.append(Figure("sustained_full_collection_max_ms",
                          "longest full garbage collection during that load",
                          max(sustained.full_collections, default=0.0) * 1000, "ms"))
    figures += latency_figures("sustained_bursty_latency",
                               "write→read at that load, in bursts (writers in step)",
                               bursty.latencies, "notify_ms_p50", "notify_ms_p99")
    params = {"writers": writers, "values_each": values, "gap_ms": GAP_S * 1000,
              "sustained_gap_ms": sustained_gap * 1000, "sustained_share": SUSTAINED_SHARE,
              "writes_per_statement_capacity": capacity.writes_per_statement,
              "writes_per_statement_sustained": sustained.writes_per_statement,
              "writes_per_statement_bursty": bursty.writes_per_statement,
              "sustained_values_per_s": sustained.rate, "bursty_values_per_s": bursty.rate,
              "sustained_late_start_ms_p99": late_p99,
              "cpu_us_per_value_offered": offered.cpu * 1e6 / offered.total}
    return figures, params


def _collections(phase: Phase) -> str:
    if not phase.full_collections:
        return "no full garbage collection"
    longest = max(phase.full_collections) * 1000
    return (f"{len(phase.full_collections)} full garbage collection(s), the longest "
            f"{longest:.1f} ms")
