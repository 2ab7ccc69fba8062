"""One run: describe the machine and server, measure the floor, run the scenarios (and the
other systems' side of each, right after or before it), each in a fresh database."""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime

from .compare import run_compared, start
from .floor import measure_floor
from .model import Run, ScenarioResult
from .progress import note
from .scenarios import SCENARIOS, Context
from .server import Server, describe_machine
from .sizes import FULL, QUICK, Sizes

SCENARIO_TIMEOUT_S = 900.0


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


async def run_scenario(server: Server, name: str, sizes: Sizes) -> ScenarioResult:
    """Run one scenario in its own fresh database; an exception becomes the result's error."""
    result = ScenarioResult(name)
    started = time.perf_counter()
    note(f"{name}: starting")
    try:
        async with asyncio.timeout(SCENARIO_TIMEOUT_S), server.fresh_database(name) as url:
            result.figures, result.params = await SCENARIOS[name](Context(name, url, sizes))
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        note(f"{name}: FAILED: {result.error}\n{traceback.format_exc()}")
    result.seconds = time.perf_counter() - started
    note(f"{name}: done in {result.seconds:.1f} s")
    return result


def load_average() -> tuple[float, float, float] | None:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return None
    return round(one, 2), round(five, 2), round(fifteen, 2)


async def run_suite(
    names: Sequence[str], *, quick: bool, compare: Sequence[str], argv: list[str],
    round_number: int | None = None,
) -> Run:
    """One round. Each scenario runs on asyncflow and, right next to it, on every compared
    system; with ``--rounds`` the order flips every round (asyncflow first in odd rounds), so
    neither side always runs on the machine the other just warmed or loaded."""
    sizes = QUICK if quick else FULL
    server = await Server.resolve()
    run = Run(started_at=now(), argv=argv, quick=quick, machine=describe_machine(),
              postgres=await server.describe(), load_start=load_average(), round=round_number)
    note(f"server: PostgreSQL {run.postgres['server_version']} "
         f"({'embedded' if server.embedded else 'ASYNCFLOW_DATABASE_URL'}, "
         f"{run.postgres['transport']}); load average {run.load_start}")
    try:
        async with server.fresh_database("floor") as url:
            run.floor = await measure_floor(url, sizes)
    except Exception as exc:
        run.floor_error = f"{type(exc).__name__}: {exc}"
        note(f"floor: FAILED: {run.floor_error}")
    run.comparisons = [start(key) for key in compare]
    ours_first = (round_number or 1) % 2 == 1
    for name in names:
        if ours_first:
            run.results[name] = await run_scenario(server, name, sizes)
        for comparison in run.comparisons:
            await run_compared(server, comparison, name, quick)
        if not ours_first:
            run.results[name] = await run_scenario(server, name, sizes)
    run.load_end = load_average()
    run.finished_at = now()
    return run
