"""``waiters``: many workflows parked in ``recv`` in one process (a helper process, so its RSS
is its own); database connections in use (``pg_stat_activity``) and the process's RSS."""

from __future__ import annotations

import asyncio
import json

import asyncpg

from ..model import Figure
from ._base import COUNT_PARKED, OBSERVER, Context, Measured, observer
from ._subprocess import Helper

POOL_SIZE = 10  # asyncflow's default, stated so the target can name it
SAMPLE_S = 0.02
COUNT_CONNECTIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name <> $1"""


async def _sample(conn: asyncpg.Connection, peak: list[int], stop: asyncio.Event) -> None:
    """Track the most connections seen, sampling every SAMPLE_S until ``stop`` is set."""
    while not stop.is_set():
        peak[0] = max(peak[0], await conn.fetchval(COUNT_CONNECTIONS, OBSERVER))
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_S)
        except TimeoutError:
            pass


async def run(ctx: Context) -> Measured:
    count = ctx.sizes.waiters
    conn = await observer(ctx.url)
    helper = await Helper.start("waiters_proc", ctx.url, str(count), str(POOL_SIZE))
    peak = [0]
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample(conn, peak, stop))
    try:
        while True:
            kind, payload = await helper.line()
            if kind == "PROGRESS":
                ctx.note(f"{payload}/{count} parked")
            elif kind == "PARKED":
                report = json.loads(payload)
                break
        stop.set()
        await sampler
        connections = await conn.fetchval(COUNT_CONNECTIONS, OBSERVER)
        parked = await conn.fetchval(COUNT_PARKED)
        peak[0] = max(peak[0], connections)
    finally:
        stop.set()
        await helper.finish()
        if sampler.done():
            await conn.close()
        else:  # failed mid-sample: a connection with a query in flight is not reusable
            sampler.cancel()
            conn.terminate()
    if parked != count:
        raise AssertionError(f"{parked} of {count} workflows are parked in recv")
    ctx.note(f"{count} parked: {connections} connections (peak {peak[0]}), "
             f"RSS {report['rss_mb']:.0f} MB")
    figures = [
        Figure("connections_peak", "connections in use (peak)", float(peak[0]), "conns"),
        Figure("connections", "connections in use (parked)", float(connections), "conns"),
        Figure("rss_mb", "process RSS (parked)", report["rss_mb"], "MB"),
        Figure("peak_rss_mb", "process RSS (peak)", report["peak_rss_mb"], "MB"),
        Figure("park_s", f"start and park {count}", report["park_s"], "s"),
    ]
    params = {"workflows": count, "pool_size": POOL_SIZE,
              "baseline_rss_mb": report["baseline_rss_mb"]}
    return figures, params
