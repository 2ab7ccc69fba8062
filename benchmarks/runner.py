"""One run: describe the machine and server, measure the floor, run the scenarios (and the
comparison), each in a fresh database."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime

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


async def run_suite(
    names: Sequence[str], *, quick: bool, compare: str | None, argv: list[str]
) -> Run:
    sizes = QUICK if quick else FULL
    server = await Server.resolve()
    run = Run(started_at=now(), argv=argv, quick=quick, machine=describe_machine(),
              postgres=await server.describe())
    note(f"server: PostgreSQL {run.postgres['server_version']} "
         f"({'embedded' if server.embedded else 'ASYNCFLOW_DATABASE_URL'}, "
         f"{run.postgres['transport']})")
    try:
        async with server.fresh_database("floor") as url:
            run.floor = await measure_floor(url, sizes)
    except Exception as exc:
        run.floor_error = f"{type(exc).__name__}: {exc}"
        note(f"floor: FAILED: {run.floor_error}")
    for name in names:
        run.results[name] = await run_scenario(server, name, sizes)
    if compare == "dbos":
        from .dbos_compare import compare_dbos

        run.comparison = await compare_dbos(server, names, quick=quick)
    run.finished_at = now()
    return run
