"""A worker for the first-run-versus-replay property test (tests/faults/test_reliability_replay.py).

    rel_random_program.py URL EXECUTOR_ID SEED COUNT

Runs COUNT random workflows generated from SEED (see ``program``) until all are done; the test
SIGKILLs it at random points and starts it again with the same executor id, which recovers the
workflows from their journals. Prints ``LAUNCHED``, ``OP <workflow id> <op>`` at the start of
every step body execution (the test's kill clock), and at the end ``RESULT <json>``: for each
workflow its result (or error), its stream and its events.

``program`` and ``expected`` are imported by the test: the expected outcome is derived from the
program alone, never from a run.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path
from typing import Any

import orjson

import asyncflow

Op = tuple[str, str]


class PaymentDeclined(Exception):
    """``__init__`` takes a required keyword: rebuilt on replay without calling it."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def program(seed: int, count: int) -> dict[str, list[Op]]:
    """Workflow id -> its operations: ``ok`` (a step returns), ``fail`` (a step raises
    PaymentDeclined, caught), ``missing`` (a step opens a missing file, caught), ``retry`` (a
    step fails once after writing two stream values, then writes one and returns), ``write``
    (the workflow writes its stream), ``stepwrite`` (a step writes it), ``event``. Every
    workflow has at least one ``retry``."""
    rng = random.Random(seed)
    kinds = ["ok", "fail", "missing", "retry", "write", "stepwrite", "event"]
    programs: dict[str, list[Op]] = {}
    for n in range(count):
        ops = [(rng.choice(kinds), f"v{n}-{i}") for i in range(rng.randint(3, 9))]
        ops.insert(rng.randint(0, len(ops)), ("retry", f"v{n}-r"))
        programs[f"prop-{n}"] = ops
    return programs


def expected(seed: int, count: int) -> dict[str, Any]:
    """What every run must end with, killed or not: the first run's outcome."""
    out: dict[str, Any] = {}
    for wid, ops in program(seed, count).items():
        trace: list[Any] = []
        stream: list[Any] = []
        events: dict[str, Any] = {}
        for kind, value in ops:
            if kind in ("ok", "retry", "stepwrite"):
                trace.append(value)
            elif kind == "fail":
                trace.append(["caught", "PaymentDeclined", [f"declined {value}"], value])
            elif kind == "missing":
                trace.append(["caught", "FileNotFoundError", f"/nonexistent/{value}.csv"])
            if kind == "retry":
                stream.append(f"{value}-second")
            elif kind in ("write", "stepwrite"):
                stream.append(value)
            elif kind == "event":
                events[value] = len(trace)
        out[wid] = {"result": trace, "stream": stream, "events": events}
    return out


def build(url: str, executor_id: str, seed: int, count: int) -> tuple[asyncflow.AsyncFlow, Any]:
    app = asyncflow.AsyncFlow(url, executor_id=executor_id, app_version=f"prop-{seed}",
                              recovery_interval_seconds=0.2)
    programs = program(seed, count)
    attempts: dict[tuple[str, str], int] = {}

    def clock(op: str) -> None:
        print(f"OP {asyncflow.workflow_id()} {op}", flush=True)

    @app.step(name="ok")
    async def ok(value: str) -> str:
        clock(value)
        return value

    @app.step(name="fail")
    async def fail(value: str) -> str:
        clock(value)
        raise PaymentDeclined(f"declined {value}", code=value)

    @app.step(name="missing")
    async def missing(value: str) -> str:
        clock(value)
        return await asyncio.to_thread(Path(f"/nonexistent/{value}.csv").read_text)

    @app.step(name="retry", retries=1, retry_interval_seconds=0.01)
    async def retry(value: str) -> str:
        clock(value)
        key = (asyncflow.workflow_id(), value)
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] % 2 == 1:  # every odd attempt in this process fails
            await asyncflow.write_stream("s", f"{value}-first-1")
            await asyncflow.write_stream("s", f"{value}-first-2")
            raise RuntimeError("transient")
        await asyncflow.write_stream("s", f"{value}-second")
        return value

    @app.step(name="stepwrite")
    async def stepwrite(value: str) -> str:
        clock(value)
        await asyncflow.write_stream("s", value)
        return value

    @app.workflow(name="random-program")
    async def run(wid: str) -> list[Any]:
        trace: list[Any] = []
        for kind, value in programs[wid]:
            try:
                if kind == "ok":
                    trace.append(await ok(value))
                elif kind == "fail":
                    trace.append(await fail(value))
                elif kind == "missing":
                    trace.append(await missing(value))
                elif kind == "retry":
                    trace.append(await retry(value))
                elif kind == "stepwrite":
                    trace.append(await stepwrite(value))
                elif kind == "write":
                    await asyncflow.write_stream("s", value)
                else:
                    await asyncflow.set_event(value, len(trace))
            except PaymentDeclined as exc:
                trace.append(["caught", type(exc).__name__, list(exc.args), exc.code])
            except FileNotFoundError as exc:
                trace.append(["caught", type(exc).__name__, exc.filename])
        await asyncflow.close_stream("s")
        return trace

    return app, run


async def main() -> None:
    url, executor_id, seed, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    app, run = build(url, executor_id, seed, count)
    async with app:
        print("LAUNCHED", flush=True)
        ids = list(program(seed, count))
        handles = [await app.start_workflow(run, wid, workflow_id=wid) for wid in ids]
        results = await asyncio.gather(*(h.get_result() for h in handles),
                                       return_exceptions=True)
        out: dict[str, Any] = {}
        for wid, result in zip(ids, results, strict=True):
            out[wid] = {
                "result": f"error: {result!r}" if isinstance(result, BaseException) else result,
                "stream": [value async for value in app.read_stream(wid, "s")],
                "events": await app.get_all_events(wid),
            }
        print("RESULT " + orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
