"""A worker process of the torture test (tests/torture.py).

    torture_worker.py URL EXECUTOR_ID QUEUES_JSON

Launches an app registering the torture workflows (``prog``, which interprets a program of
actions, and the schedule ``torture-tick``), the queues given (name -> limits) and nothing
else, prints ``READY <pid>``, then runs the driver's commands, one JSON object per stdin line,
answering each with ``R <n> <json>`` (``n`` is the command's number):

- ``{"op": "start", "wid", "prog", "timeout"}``: start ``prog`` here;
- ``{"op": "enqueue", "queue", "wid", "prog", "priority", "dedup", "delay", "partition",
  "timeout"}``: enqueue it through this app's ``Queue``;
- ``{"op": "running"}``: ``app.running_workflows()``;
- ``{"op": "replay"}``: ``app.replay()`` of every finished workflow, the reports not ``ok``.

An answer is ``{"ok": value}`` or ``{"error": [type name, is an AsyncFlowError, message]}``.
Every step body inserts an effect row (``kind`` "step", its pid) into ``torture_effects``
through its own pool before returning; every transaction inserts one in its transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import sys
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

import asyncflow

URL, EXECUTOR = sys.argv[1], sys.argv[2]
QUEUES: dict[str, dict[str, Any]] = orjson.loads(sys.argv[3])  # tests/torture_ops.py
PID = os.getpid()

app = asyncflow.AsyncFlow(URL, executor_id=EXECUTOR, app_version="torture",
                          recovery_interval_seconds=0.2)
queues = {name: app.queue(name, **{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in limits.items()})
          for name, limits in QUEUES.items()}
effects: asyncpg.Pool | None = None
attempts: dict[tuple[str, str], int] = {}


class Flaky(Exception):
    """A step attempt that fails on purpose (retried)."""


class Boom(Exception):
    """A workflow that fails on purpose."""


async def _effect(tag: str, kind: str, ok: bool) -> None:
    assert effects is not None
    wid = asyncflow.workflow_id()
    for attempt in range(50):  # the effects pool may lose its connections to the faults too
        try:
            await effects.execute(
                "insert into torture_effects (workflow_id, tag, kind, pid, ok) "
                "values ($1, $2, $3, $4, $5)", wid, tag, kind, PID, ok)
            return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0))
    raise RuntimeError("effects table unreachable")


@app.step(name="effect")
async def effect(tag: str) -> str:
    await _effect(tag, "step", True)
    return tag


@app.step(name="flaky", retries=2, retry_interval_seconds=0.01)
async def flaky(tag: str) -> str:
    key = (asyncflow.workflow_id(), tag)
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] == 1:
        await _effect(tag, "step", False)
        raise Flaky(f"first attempt of {tag}")
    await _effect(tag, "step", True)
    return tag


@app.transaction(name="tx")
async def tx(tag: str) -> str:
    await asyncflow.connection().execute(
        "insert into torture_effects (workflow_id, tag, kind, pid, ok) "
        "values ($1, $2, 'tx', $3, true)", asyncflow.workflow_id(), tag, PID)
    return tag


def _caught(exc: BaseException) -> list[Any]:
    return ["caught", type(exc).__name__, isinstance(exc, asyncflow.AsyncFlowError)]


@app.workflow(name="prog")
async def prog(actions: list[list[Any]]) -> list[Any]:
    """Interpret a program (see tests/torture.py, ``Program``)."""
    trace: list[Any] = []
    for action in actions:
        kind = action[0]
        try:
            if kind == "step":
                trace.append(await effect(action[1]))
            elif kind == "flaky":
                trace.append(await flaky(action[1]))
            elif kind == "tx":
                trace.append(await tx(action[1]))
            elif kind == "event":
                await asyncflow.set_event(action[1], action[2])
            elif kind == "write":
                await asyncflow.write_stream(action[1], action[2])
            elif kind == "close":
                await asyncflow.close_stream(action[1])
            elif kind == "sleep":
                await asyncflow.sleep(action[1])
            elif kind == "recv":
                trace.append(await asyncflow.recv(action[1], timeout_seconds=action[2]))
            elif kind == "park":
                await asyncflow.set_event("parked", True)
                trace.append(await asyncflow.recv("never", timeout_seconds=3600))
            elif kind == "wait_first":
                fired = await asyncflow.wait_first(asyncflow.message(action[1]),
                                                   asyncflow.timer(action[2]))
                trace.append([fired.index, fired.value])
            elif kind == "send":
                await asyncflow.send(action[1], action[3], action[2])
            elif kind == "get_event":
                trace.append(await asyncflow.get_event(action[1], action[2],
                                                       timeout_seconds=action[3]))
            elif kind == "child":
                handle = await app.start_workflow(prog, action[1])
                if action[2]:
                    trace.append(await handle.get_result())
            elif kind == "enqueue":
                handle = await queues[action[1]].enqueue(prog, action[2])
                if action[3]:
                    trace.append(await handle.get_result())
            elif kind == "attr":
                await asyncflow.set_attributes({"phase": action[1]})
            elif kind == "fail":
                raise Boom("failed on purpose")
        except (Boom, asyncflow.WorkflowCancelledError):
            raise
        except Exception as exc:  # every error a workflow sees is recorded in its trace
            trace.append(_caught(exc))
    return trace


@app.workflow(name="chain")
async def chain(n: int, total: int, got: list[str]) -> list[Any]:
    """An endless workflow of ``total`` runs (continue_as_new): each run checkpoints one step,
    receives what the driver sent on topic ``tc`` meanwhile, and hands over what it got."""
    await effect(f"c{n}")
    await asyncflow.set_attributes({"run": n})
    message = await asyncflow.recv("tc", timeout_seconds=0.2)
    if message is not None:
        got = [*got, message]
    if n < total:
        await asyncflow.continue_as_new(n + 1, total, got)
    return [total, got]


async def _bounce(key: str, n: int) -> list[Any]:
    await effect(f"b{n}")
    return [key, n]


bounce = app.workflow(name="bounce")(_bounce)
debouncer = app.debouncer(bounce, key=lambda key, n: key, period_seconds=1.0)


@dataclasses.dataclass
class Money:
    """A typed value: decoded by annotation (issue: typed values)."""

    amount: Decimal
    at: dt.datetime
    ref: uuid.UUID
    tags: list[str]


def money(n: int) -> Money:
    return Money(Decimal(n) / Decimal(100), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
                 + dt.timedelta(minutes=n), uuid.UUID(int=n), [f"t{n}"])


def doubled(m: Money) -> Money:
    return Money(m.amount * 2, m.at + dt.timedelta(days=1), m.ref, [*m.tags, "s"])


@app.step(name="typed-step")
async def typed_step(m: Money) -> Money:
    await _effect(f"typed-{m.ref}", "typed", True)
    return doubled(m)


@app.workflow(name="typed")
async def typed(m: Money, pause: float) -> Money:
    out = await typed_step(m)
    await asyncflow.sleep(pause)
    assert isinstance(out, Money) and isinstance(out.amount, Decimal), repr(out)
    return out


@app.scheduled("0 0 1 1 *", name="torture-tick")
@app.workflow(name="torture-tick")
async def tick(at: str) -> str:
    await effect(f"tick-{at}")
    return at


async def _command(cmd: dict[str, Any]) -> Any:
    op = cmd["op"]
    if op == "start":
        handle = await app.start_workflow(prog, cmd["prog"], workflow_id=cmd["wid"],
                                          timeout_seconds=cmd["timeout"])
        return handle.workflow_id
    if op == "enqueue":
        handle = await queues[cmd["queue"]].enqueue(
            prog, cmd["prog"], workflow_id=cmd["wid"], priority=cmd["priority"],
            deduplication_id=cmd["dedup"], delay_seconds=cmd["delay"],
            partition_key=cmd["partition"], timeout_seconds=cmd["timeout"])
        return handle.workflow_id
    if op == "chain":
        handle = await app.start_workflow(chain, 0, cmd["total"], [], workflow_id=cmd["wid"])
        return handle.workflow_id
    if op == "debounce":
        handle = await debouncer.debounce(cmd["key"], cmd["n"])
        return handle.workflow_id
    if op == "typed":
        handle = await app.start_workflow(typed, money(cmd["n"]), cmd["pause"],
                                          workflow_id=cmd["wid"])
        return handle.workflow_id
    if op == "typed_check":  # [wid, n] pairs: the results' reprs that differ from expected
        wrong = []
        for wid, n in cmd["ids"]:
            try:
                handle = await app.retrieve_workflow(wid)
                out = await handle.get_result(timeout_seconds=30, type=Money)
            except asyncflow.AsyncFlowError as exc:
                out = exc
            if not isinstance(out, asyncflow.AsyncFlowError) and repr(out) != repr(
                    doubled(money(n))):
                wrong.append([wid, repr(out), repr(doubled(money(n)))])
        return wrong
    if op == "running":
        return app.running_workflows()
    if op == "replay":
        reports = await app.replay(timeout_seconds=30)
        return [[r.workflow_id, r.outcome, str(r)] for r in reports if r.outcome != "ok"]
    raise ValueError(f"unknown command {op!r}")


async def _answer(n: int, cmd: dict[str, Any]) -> None:
    try:
        out: dict[str, Any] = {"ok": await _command(cmd)}
    except Exception as exc:
        out = {"error": [f"{type(exc).__module__}.{type(exc).__qualname__}",
                         isinstance(exc, asyncflow.AsyncFlowError), str(exc)[:300]]}
    sys.stdout.write(f"R {n} {orjson.dumps(out).decode()}\n")
    sys.stdout.flush()


async def main() -> None:
    global effects
    effects = await asyncpg.create_pool(URL, min_size=2, max_size=6,
                                        server_settings={"application_name": "torture-effects"})
    async with app:
        print(f"READY {PID}", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        tasks: set[asyncio.Task[None]] = set()
        while line := await reader.readline():
            n, _, body = line.decode().partition(" ")
            task = asyncio.create_task(_answer(int(n), orjson.loads(body)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.run(main())
