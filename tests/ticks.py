"""Shared check of the schedule tests: worker processes print ``RAN <tick>``; every tick they
ran was started exactly once, none was skipped, and its run has the tick's deterministic id."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any


async def each_tick_once(workers: list[Any], conn: Any, schedule: str, ticks: int = 4) -> None:
    """Read the workers' ``RAN`` lines until ``ticks`` distinct ticks ran, kill the workers,
    then check the ``runs`` table: each tick once, one second apart, ids ``schedule@tick``."""
    seen: list[str] = []
    enough = asyncio.Event()

    async def read(worker: Any) -> None:
        while True:
            line = await worker.expect("RAN", within=60)
            seen.append(line.split()[1])
            if len(set(seen)) >= ticks:
                enough.set()

    readers = [asyncio.create_task(read(worker)) for worker in workers]
    try:
        await asyncio.wait_for(enough.wait(), 60)
    finally:
        for reader in readers:
            reader.cancel()
        for worker in workers:
            worker.kill()
    rows = await conn.fetch("select tick, count(*) as n, min(workflow_id) as wid "
                            "from runs group by tick order by tick")
    assert all(row["n"] == 1 for row in rows), rows  # never twice
    times = [datetime.fromisoformat(row["tick"]) for row in rows]
    # catch_up="all": no tick skipped between the first and the last (each second once).
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(times)] == [
        1.0] * (len(times) - 1)
    assert all(row["wid"] == f"{schedule}@{t.astimezone(UTC).isoformat()}"
               for row, t in zip(rows, times, strict=True))
