"""``--compare dbos`` / ``--compare pgqueuer``: the other systems' side of the scenarios they
also have, each scenario in a subprocess of its own against a fresh database on the same server
(see :mod:`benchmarks.dbos_runner` and :mod:`benchmarks.pgqueuer_runner`).

A runner is ``python -m MODULE SCENARIO URL [--quick]``; it prints ``PROGRESS text`` lines and
finally ``RESULT {json}`` (a :class:`~benchmarks.model.ScenarioResult`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .model import Comparison, ScenarioResult
from .progress import note
from .server import Server

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class System:
    """Another system the suite can compare with."""

    label: str  # as the table names it
    package: str  # the distribution that must be installed
    runner: str  # the module run as ``python -m``
    scenarios: tuple[str, ...]  # the suite's scenarios it has a side of


SYSTEMS: dict[str, System] = {
    "dbos": System("DBOS", "dbos", "benchmarks.dbos_runner",
                   ("steps", "throughput", "pingpong", "stream", "fanout", "queue_latency",
                    "queue_fleet")),
    "pgqueuer": System("pgqueuer", "pgqueuer", "benchmarks.pgqueuer_runner",
                       ("queue_latency", "queue_fleet")),
}


def start(key: str) -> Comparison:
    """An empty comparison with ``key``'s system, or one saying why it cannot run."""
    system = SYSTEMS[key]
    try:
        version = metadata.version(system.package)
    except metadata.PackageNotFoundError:
        return Comparison(system.label, reason=f"not run: the `{system.package}` package is "
                          "not installed (pip install -e '.[bench]')")
    return Comparison(system.label, version=version, key=key)


async def run_compared(server: Server, comparison: Comparison, name: str,
                       quick: bool) -> None:
    """Run the other system's side of scenario ``name`` (if it has one) into ``comparison``."""
    if comparison.key is None or name not in SYSTEMS[comparison.key].scenarios:
        return
    system = SYSTEMS[comparison.key]
    label = f"{comparison.key} {name}"
    note(f"{label}: starting ({system.label} {comparison.version})")
    result = await _run_one(server, system.runner, comparison.key, name, quick, label)
    if result.error:
        note(f"{label}: FAILED: {result.error}")
    comparison.results[name] = result
    note(f"{label}: done in {result.seconds:.1f} s")


async def _run_one(server: Server, module: str, key: str, name: str, quick: bool,
                   label: str) -> ScenarioResult:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    async with server.fresh_database(f"{key}_{name}") as url:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, name, url, *(["--quick"] if quick else []),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT),
        )
        assert process.stdout is not None and process.stderr is not None
        stderr = asyncio.ensure_future(process.stderr.read())
        result: ScenarioResult | None = None
        try:
            async with asyncio.timeout(TIMEOUT_S):
                while raw := await process.stdout.readline():
                    kind, _, payload = raw.decode().rstrip("\n").partition(" ")
                    if kind == "PROGRESS":
                        note(f"{label}: {payload}")
                    elif kind == "RESULT":
                        result = ScenarioResult.from_dict(name, json.loads(payload))
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        errors = (await stderr).decode(errors="replace")
    if result is None:
        tail = errors.strip().splitlines()[-1:] or [f"exit code {process.returncode}"]
        return ScenarioResult(name, error=f"runner failed: {tail[0]}")
    return result
