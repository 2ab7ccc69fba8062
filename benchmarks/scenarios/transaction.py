"""``transaction``: a workflow of ``@app.transaction`` steps that each update a row."""

from __future__ import annotations

import time

import asyncpg

import asyncflow

from ..model import latency_figures
from ._base import Context, Measured, make_app

SETUP = """
CREATE TABLE bench_rows (id integer PRIMARY KEY, n integer NOT NULL);
INSERT INTO bench_rows SELECT i, 0 FROM generate_series(0, {last}) AS i"""


async def run(ctx: Context) -> Measured:
    count = ctx.sizes.transaction
    conn = await asyncpg.connect(ctx.url)
    try:
        await conn.execute(SETUP.format(last=count - 1))
    finally:
        await conn.close()
    app = make_app(ctx.url)
    durations: list[float] = []

    @app.transaction(name="bench.bump")
    async def bump(row: int) -> None:
        await asyncflow.connection().execute(
            "UPDATE bench_rows SET n = n + 1 WHERE id = $1", row
        )

    @app.workflow(name="bench.transactions")
    async def transactions(total: int, timed: bool) -> int:
        for index in range(total):
            before = time.perf_counter()
            await bump(index % count)
            if timed:
                durations.append(time.perf_counter() - before)
        return total

    async with app:
        await transactions(ctx.sizes.warmup_rounds, False)
        async with ctx.counted() as counts:
            await transactions(count, True)
    ctx.note(f"{count} transactions")
    figures = latency_figures("transaction", "transaction step", durations, "commit_ms_p50",
                              "commit_ms_p99")
    figures += counts.figures("transaction", "transaction step", count)
    return figures, {"transactions": count}
