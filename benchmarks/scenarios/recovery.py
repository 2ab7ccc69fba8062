"""``recovery``: a helper process starts workflows that block in a step and is SIGKILLed; an app
that has never run them (in this process) launches and completes them all. Timed from the start
of its launch until every result is in."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import asyncpg

from ..model import Figure
from ._base import Context, Measured
from ._subprocess import Helper
from .recovery_app import build, workflow_id

COUNT_PENDING = "SELECT count(*) FROM asyncflow.workflows WHERE status = 'PENDING'"


async def _leave_pending(ctx: Context, count: int) -> None:
    helper = await Helper.start("recovery_proc", ctx.url, str(count))
    try:
        kind, payload = await helper.line()
        if kind != "READY":
            raise AssertionError(f"unexpected line from the helper: {kind} {payload}")
        os.kill(helper.process.pid, signal.SIGKILL)
        code = await helper.process.wait()
    finally:
        helper.kill()
    if code != -signal.SIGKILL:
        raise AssertionError(f"the helper exited with {code}, not by SIGKILL")


async def run(ctx: Context) -> Measured:
    count = ctx.sizes.recovery
    await _leave_pending(ctx, count)
    conn = await asyncpg.connect(ctx.url)
    try:
        pending = await conn.fetchval(COUNT_PENDING)
    finally:
        await conn.close()
    if pending != count:
        raise AssertionError(f"{pending} PENDING workflows after the kill, expected {count}")
    ctx.note(f"{count} PENDING workflows left by a SIGKILLed process")
    app, _job = build(ctx.url, None)
    started = time.perf_counter()
    async with app:
        launched = time.perf_counter() - started
        results = await asyncio.gather(
            *(app._handle(workflow_id(index)).get_result(120) for index in range(count))
        )
        elapsed = time.perf_counter() - started
    if results != list(range(count)):
        raise AssertionError("recovered workflows returned the wrong results")
    ctx.note(f"all {count} recovered in {elapsed:.3f} s")
    figures = [
        Figure("seconds", f"recover {count}", elapsed, "s", "s_per_commit_20", float(count)),
        Figure("launch_s", "launch (connect, sweep, spawn)", launched, "s"),
    ]
    return figures, {"workflows": count}
