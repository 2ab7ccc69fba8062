"""``--compare dbos``: run scenarios 1-5 and the queue scenarios with DBOS Transact, each in a
subprocess of its own against a fresh database on the same server (see
:mod:`benchmarks.dbos_runner`)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from .model import Comparison, ScenarioResult
from .progress import note
from .server import Server

COMPARED = ("steps", "throughput", "pingpong", "stream", "fanout", "queue_latency",
            "queue_fleet")
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 900.0


async def _run_one(server: Server, name: str, quick: bool) -> ScenarioResult:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    async with server.fresh_database(f"dbos_{name}") as url:
        args = [sys.executable, "-m", "benchmarks.dbos_runner", name, url]
        process = await asyncio.create_subprocess_exec(
            *args, *(["--quick"] if quick else []), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            cwd=str(ROOT),
        )
        assert process.stdout is not None and process.stderr is not None
        stderr = asyncio.ensure_future(process.stderr.read())
        result: ScenarioResult | None = None
        try:
            async with asyncio.timeout(TIMEOUT_S):
                while raw := await process.stdout.readline():
                    kind, _, payload = raw.decode().rstrip("\n").partition(" ")
                    if kind == "PROGRESS":
                        note(f"dbos {name}: {payload}")
                    elif kind == "RESULT":
                        result = ScenarioResult.from_dict(name, json.loads(payload))
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        errors = (await stderr).decode(errors="replace")
    if result is None:
        tail = errors.strip().splitlines()[-1:] or [f"exit code {process.returncode}"]
        return ScenarioResult(name, error=f"DBOS runner failed: {tail[0]}")
    return result


async def compare_dbos(server: Server, names: Sequence[str], *, quick: bool) -> Comparison:
    try:
        version = metadata.version("dbos")
    except metadata.PackageNotFoundError:
        return Comparison("DBOS", reason="not run: the `dbos` package is not installed "
                          "(pip install -e '.[bench]')")
    comparison = Comparison("DBOS", version=version)
    for name in names:
        if name not in COMPARED:
            continue
        note(f"dbos {name}: starting (DBOS {version})")
        result = await _run_one(server, name, quick)
        if result.error:
            note(f"dbos {name}: FAILED: {result.error}")
        comparison.results[name] = result
        note(f"dbos {name}: done in {result.seconds:.1f} s")
    return comparison
