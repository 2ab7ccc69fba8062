"""How big each scenario runs: the issue's sizes, or small ones for ``--quick`` (CI)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sizes:
    floor_warmup: int
    floor_commits: int
    floor_commits_per_connection: int
    floor_notifies: int
    steps: int  # no-op steps in the one workflow
    steps_repeats: int  # how many such workflows are timed
    throughput: int  # workflows started at once
    pingpong: int  # rounds
    stream_values: int  # paced values (2 ms apart)
    stream_sustained: int  # values written back to back
    streams_concurrent: int  # workflows streaming at once
    streams_concurrent_values: int  # values each (5 ms apart)
    fanout: int  # workflows parked in recv
    waiters: int  # workflows parked in recv in one process
    recovery: int  # PENDING workflows left by the killed process
    transaction: int  # transaction steps in the one workflow
    list_rows: int  # workflow rows in the table list pages are read from
    queue_latency: int  # enqueues timed one after the other (one idle worker)
    # The same for DBOS, whose queues poll once a second (each round takes ~0.5-1 s)
    dbos_queue_latency: int
    queue_fleet: int  # workflows enqueued at once for the worker fleet
    queue_fleet_workers: tuple[int, ...]  # fleet sizes (worker processes)
    warmup_rounds: int  # warm-up iterations before the timed ones


FULL = Sizes(
    floor_warmup=100,
    floor_commits=2000,
    floor_commits_per_connection=250,
    floor_notifies=500,
    steps=200,
    steps_repeats=3,
    throughput=500,
    pingpong=100,
    stream_values=200,
    stream_sustained=3000,
    streams_concurrent=200,
    streams_concurrent_values=100,
    fanout=1000,
    waiters=10_000,
    recovery=1000,
    transaction=100,
    list_rows=1_000_000,
    queue_latency=200,
    dbos_queue_latency=100,
    queue_fleet=5000,
    queue_fleet_workers=(1, 2, 4),
    warmup_rounds=20,
)

QUICK = Sizes(
    floor_warmup=10,
    floor_commits=100,
    floor_commits_per_connection=10,
    floor_notifies=20,
    steps=20,
    steps_repeats=1,
    throughput=30,
    pingpong=10,
    stream_values=20,
    stream_sustained=100,
    streams_concurrent=10,
    streams_concurrent_values=10,
    fanout=30,
    waiters=200,
    recovery=30,
    transaction=10,
    list_rows=20_000,
    queue_latency=20,
    dbos_queue_latency=5,
    queue_fleet=100,
    queue_fleet_workers=(1, 2),
    warmup_rounds=3,
)
