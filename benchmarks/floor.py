"""The floor: what plain asyncpg gets from the same server, measured before every run.

* commit latency: one connection, single-row INSERTs in autocommit, p50/p99, and the runner
  process's CPU time per commit (what the CPU-per-operation figures are divided by);
* commits/s over 20 connections: the same INSERT from 20 connections at once;
* NOTIFY round trip: ``SELECT pg_notify`` on one connection until the LISTENing one hears it;
* notifying commits/s over 20 connections: the INSERT plus a ``pg_notify`` in the same
  transaction. Postgres serializes the commits of notifying transactions (a global lock held
  through the commit's WAL flush), so this rate, not the plain one, bounds operations that wake
  waiters in other processes.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from .model import Floor
from .progress import note
from .sizes import Sizes
from .stats import percentile, to_ms

CREATE = "CREATE TABLE floor_rows (id bigserial PRIMARY KEY, value text NOT NULL)"
INSERT = "INSERT INTO floor_rows (value) VALUES ($1)"
INSERT_NOTIFY = """
WITH row AS (INSERT INTO floor_rows (value) VALUES ($1) RETURNING id)
SELECT pg_notify('asyncflow_bench_floor', id::text) FROM row"""
CHANNEL = "asyncflow_bench_floor"


async def _commit_latency(
    url: str, warmup: int, count: int
) -> tuple[list[float], float, float]:
    conn = await asyncpg.connect(url)
    try:
        for _ in range(warmup):
            await conn.execute(INSERT, "warm-up")
        samples: list[float] = []
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            before = time.perf_counter()
            await conn.execute(INSERT, "x")
            samples.append(time.perf_counter() - before)
        rate = count / (time.perf_counter() - started)
        cpu_us = (time.process_time() - cpu) * 1e6 / count
    finally:
        await conn.close()
    return samples, rate, cpu_us


async def _concurrent_commits(
    url: str, connections: int, per_connection: int, statement: str = INSERT
) -> float:
    conns = [await asyncpg.connect(url) for _ in range(connections)]
    listener = await asyncpg.connect(url)
    await listener.add_listener(CHANNEL, _ignore)
    try:

        async def worker(conn: asyncpg.Connection, count: int) -> None:
            for _ in range(count):
                await conn.execute(statement, "x")

        await asyncio.gather(*(worker(conn, 10) for conn in conns))  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(worker(conn, per_connection) for conn in conns))
        elapsed = time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()
        await listener.close()
    return connections * per_connection / elapsed


def _ignore(_conn: object, _pid: int, _channel: str, _payload: str) -> None:
    return None


async def _notify_round_trip(url: str, warmup: int, count: int) -> list[float]:
    listener = await asyncpg.connect(url)
    sender = await asyncpg.connect(url)
    heard: asyncio.Queue[float] = asyncio.Queue()

    # perf_counter, not loop.time(): uvloop's clock counts whole milliseconds.
    def on_notify(_conn: object, _pid: int, _channel: str, _payload: str) -> None:
        heard.put_nowait(time.perf_counter())

    try:
        await listener.add_listener(CHANNEL, on_notify)
        samples: list[float] = []
        for index in range(warmup + count):
            before = time.perf_counter()
            await sender.execute("SELECT pg_notify($1, $2)", CHANNEL, str(index))
            arrived = await asyncio.wait_for(heard.get(), 10)
            if index >= warmup:
                samples.append(arrived - before)
    finally:
        await listener.close()
        await sender.close()
    return samples


async def measure_floor(url: str, sizes: Sizes) -> Floor:
    """Measure the floor in the (fresh) database at ``url``."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(CREATE)
    finally:
        await conn.close()
    commits, rate_1, cpu_us = await _commit_latency(url, sizes.floor_warmup,
                                                    sizes.floor_commits)
    commit_ms = to_ms(commits)
    note(f"floor: commit latency p50 {percentile(commit_ms, 50):.3f} ms, "
         f"p99 {percentile(commit_ms, 99):.3f} ms; {cpu_us:.0f} µs of CPU per commit")
    rate_20 = await _concurrent_commits(url, 20, sizes.floor_commits_per_connection)
    note(f"floor: {rate_20:,.0f} commits/s over 20 connections")
    notifying = await _concurrent_commits(url, 20, sizes.floor_commits_per_connection,
                                          INSERT_NOTIFY)
    note(f"floor: {notifying:,.0f} notifying commits/s over 20 connections")
    notify_ms = to_ms(await _notify_round_trip(url, sizes.floor_warmup, sizes.floor_notifies))
    note(f"floor: NOTIFY round trip p50 {percentile(notify_ms, 50):.3f} ms, "
         f"p99 {percentile(notify_ms, 99):.3f} ms")
    return Floor(
        commit_ms_p50=percentile(commit_ms, 50),
        commit_ms_p99=percentile(commit_ms, 99),
        commits_per_s_1=rate_1,
        commits_per_s_20=rate_20,
        notify_commits_per_s_20=notifying,
        notify_ms_p50=percentile(notify_ms, 50),
        notify_ms_p99=percentile(notify_ms, 99),
        commit_cpu_us=cpu_us,
    )
