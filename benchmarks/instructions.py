"""Instructions per operation, counted by valgrind: the client's CPU cost without the noise.

``python -m benchmarks.instructions`` runs each case twice under ``valgrind --tool=callgrind``
(the process only: the server's work is not counted), with ``SMALL`` and ``LARGE`` operations,
and reports ``(large - small) / (LARGE - SMALL)``: the instructions of one operation, start-up
and shutdown cancelled out. Instruction counts repeat to within about 1 % run to run, whatever
else the machine does, where CPU seconds per operation vary by a third on a shared machine; so
this is the figure to compare before and after a change of a hot path. The floor is the same as
the suite's (``floor.py``): plain asyncpg sending a one-row INSERT on a held connection.

Cases: ``floor``; ``step`` (a no-op step in a running workflow: its checkpoint); ``workflow``
(start a workflow of one step and wait for its result, one after another); ``pingpong`` (a
round of the scenario of that name, from the app: ``send``, the workflow's ``recv`` and
``set_event``, ``get_event``; the instructions of both sides, which share the process);
``queued`` (a workflow of no step, enqueued with all the others by one ``enqueue_many`` in one
transaction and run by the same process, which serves the queue: ``queue_fleet``'s 0-step
drain with one worker, the enqueue included).

It runs against ``ASYNCFLOW_DATABASE_URL`` when set, else the embedded server, in a fresh
database of its own, and needs ``valgrind`` on the PATH. Under valgrind Python runs about 50
times slower: the whole run takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys

import asyncpg

import asyncflow

from .floor import CREATE, INSERT
from .scenarios import pingpong, queue_app, queue_fleet
from .server import Server

SMALL, LARGE = 500, 2500
CASES = ("floor", "step", "workflow", "pingpong", "queued")


async def _child(case: str, count: int, url: str) -> None:
    """One measured process: ``count`` operations of ``case`` (with its start-up)."""
    if case == "floor":
        conn = await asyncpg.connect(url)
        try:
            for _ in range(count):
                await conn.execute(INSERT, "x")
        finally:
            await conn.close()
        return
    if case == "queued":
        await _queued(count, url)
        return
    app = asyncflow.AsyncFlow(url, app_version="bench")

    @app.step(name="bench.noop")
    async def noop() -> None:
        return None

    @app.workflow(name="bench.steps")
    async def steps(total: int) -> int:
        for _ in range(total):
            await noop()
        return total

    ponger = pingpong.register(app)

    async with app:
        if case == "step":
            await steps(count)
        elif case == "pingpong":
            handle = await app.start_workflow(ponger, count)
            await pingpong.rounds(app, handle.workflow_id, 0, count)
            await handle.get_result()
        else:
            for _ in range(count):
                await (await app.start_workflow(steps, 1)).get_result()


async def _queued(count: int, url: str) -> None:
    built = queue_app.build(url, [queue_app.FLEET_QUEUE], lambda _id, _at: None)
    prefix = f"q{os.getpid()}-"  # (each measured process: workflows of its own)
    finished = queue_fleet.Finished(prefix, count)
    async with built.app:
        remove = built.app._waits.add_observer(finished)
        await built.enqueue_all(prefix, count, 0)
        await finished.done.wait()
        remove()


def _instructions(case: str, count: int, url: str) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
               "-m", "benchmarks.instructions", "--child", case, str(count), url]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{case} under valgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_operation(case: str, url: str) -> float:
    """Instructions of one operation of ``case``."""
    small, large = _instructions(case, SMALL, url), _instructions(case, LARGE, url)
    return (large - small) / (LARGE - SMALL)


async def _prepare(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(CREATE)
    finally:
        await conn.close()
    async with asyncflow.AsyncFlow(url, app_version="bench"):
        pass  # the schema, migrated once (not in the measured processes)


async def _main(cases: list[str]) -> int:
    server = await Server.resolve()
    async with server.fresh_database("instructions") as url:
        await _prepare(url)
        floor = None
        for case in cases:
            count = await asyncio.to_thread(per_operation, case, url)
            if case == "floor":
                floor = count
            ratio = f"  {count / floor:.2f}x the floor" if floor else ""
            print(f"{case:10} {count:>10,.0f} instructions per operation{ratio}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=CASES, metavar="NAME",
                        help=f"one of {', '.join(CASES)} (repeatable; default: all)")
    parser.add_argument("--child", nargs=3, metavar=("CASE", "COUNT", "URL"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        case, count, url = args.child
        asyncio.run(_child(case, int(count), url))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    cases = args.case or list(CASES)
    if "floor" not in cases:
        cases.insert(0, "floor")
    return asyncio.run(_main(cases))


if __name__ == "__main__":
    sys.exit(main())
