"""The worker of tests/engine/test_replay_property.py: runs one random "program" as workflow ``p``.

    replay_worker.py URL EXECUTOR_ID PROGRAM_JSON KILL_AT

The program is a list of operations (see ``tests/engine/test_replay_property.py``:
``generate``); the workflow interprets it and returns what it observed: each step's value,
each caught exception's type, args and attributes, each message received. Every incarnation
starts ``p`` (idempotent: after the first it only returns a handle), so it either runs it or
recovers it, and waits for it.

Output lines (the test's clock; nothing here sleeps to wait for anything):

- ``LAUNCHED``, then ``STARTED`` once ``p`` exists;
- ``AT <label>`` at every kill point reached (workflow body positions ``op<i>`` and ``end``,
  step bodies ``op<i>.run``, ``op<i>.fail<n>``, ``op<i>.ok``, ``op<i>.child``), and
  ``PARKED <label>`` when the label is ``KILL_AT``: the worker then blocks there for good, waiting
  for its SIGKILL;
- ``RECV <i>`` just before operation ``i`` waits for the message the test sends;
- ``DONE`` when ``p`` has ended (``FAILED <error>`` before it if it failed).

Every step body execution (each attempt) inserts a row into ``runs``: the workflow id, the
step's function id, the kill-point label, and whether the step's checkpoint had already been
committed when the body started (it never may be). A retried step fails while the table
``fails`` is empty for it (or always, for a step that fails for good): a failing attempt inserts
its row just before raising, so "the first attempt fails" holds across crashes and restarts.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import asyncpg

import asyncflow

URL, EXECUTOR, PROGRAM, KILL_AT = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]

app = asyncflow.AsyncFlow(URL, executor_id=EXECUTOR, app_version="replay-property",
                          recovery_interval_seconds=0.2)
side: asyncpg.Pool | None = None


class Refused(Exception):
    """A custom exception built from positional args only (rebuildable from its args)."""

    def __init__(self, msg: str, code: int) -> None:
        super().__init__(msg, code)
        self.code = code
        self.details: Any = None


class Declined(Exception):
    """A custom exception with a required keyword argument (``PaymentDeclined(msg, *, code)``)
    and an optional one: its args are ``(msg,)`` only."""

    def __init__(self, msg: str, *, code: int, details: Any = None) -> None:
        super().__init__(msg)
        self.code = code
        self.details = details


class Flaky(Exception):
    """What a retried step raises on an attempt that fails."""


def make_error(spec: dict[str, Any]) -> Exception:
    if spec["exc"] == "Declined":
        return Declined(spec["msg"], code=spec["code"], details=spec["details"])
    return Refused(spec["msg"], spec["code"])


def observe(exc: BaseException) -> dict[str, Any]:
    """What the workflow records of an exception it caught."""
    if isinstance(exc, asyncflow.RecordedError):
        return {"type": type(exc).__name__, "recorded": exc.type_name}
    if isinstance(exc, asyncflow.AsyncFlowError):
        return {"type": type(exc).__name__}
    return {"type": type(exc).__name__, "args": list(exc.args),
            "code": getattr(exc, "code", None), "details": getattr(exc, "details", None)}


CAUGHT = (Refused, Declined, Flaky, asyncflow.RecordedError, asyncflow.StreamClosedError)


async def point(label: str) -> None:
    print(f"AT {label}", flush=True)
    if label == KILL_AT:
        print(f"PARKED {label}", flush=True)
        await asyncio.Event().wait()


async def record_run(fid: int, label: str) -> None:
    assert side is not None
    await side.execute(
        "insert into runs select $1, $2, $3, exists (select 1 from asyncflow.operations"
        " where workflow_id = $1 and function_id = $2)", asyncflow.workflow_id(), fid, label)


async def effects(fx: dict[str, Any], topic: str) -> None:
    """A step attempt's durable effects: stream writes, then an event, then a send to self."""
    for key, value in fx.get("writes", []):
        await asyncflow.write_stream(key, value)
    if fx.get("event") is not None:
        await asyncflow.set_event(fx["event"][0], fx["event"][1])
    if fx.get("send") is not None:
        await asyncflow.send(asyncflow.workflow_id(), fx["send"], topic)


@app.step(name="value_step")
async def value_step(fid: int, i: int, op: dict[str, Any]) -> Any:
    await record_run(fid, f"op{i}.run")
    await effects(op, f"self{i}")
    await point(f"op{i}.run")
    return op["v"]


@app.step(name="raising_step")
async def raising_step(fid: int, i: int, op: dict[str, Any]) -> Any:
    await record_run(fid, f"op{i}.run")
    await point(f"op{i}.run")
    raise make_error(op)


@app.step(name="flaky_step", retries=1, retry_interval_seconds=0.001)
async def flaky_step(fid: int, i: int, op: dict[str, Any]) -> Any:
    assert side is not None
    wid = asyncflow.workflow_id()
    failed = await side.fetchval("select count(*) from fails where workflow_id = $1 and fid = $2",
                                 wid, fid)
    # fails=1: only the very first attempt fails; fails=2: every attempt fails. Either way the
    # outcome does not depend on where earlier incarnations were killed.
    if op["fails"] == 2 or failed == 0:
        label = f"op{i}.fail{min(failed, 1)}"
        await record_run(fid, label)
        await effects(op["fail_fx"], f"self{i}")
        await point(label)
        await side.execute("insert into fails values ($1, $2)", wid, fid)
        if failed == 0:
            raise Flaky(f"the first attempt of op {i} fails")
        raise make_error(op)  # recorded: with retries=1 the last attempt is never the first
    await record_run(fid, f"op{i}.ok")
    await effects(op["ok_fx"], f"self{i}")
    await point(f"op{i}.ok")
    return op["v"]


@app.step(name="child_step")
async def child_step(i: int, op: dict[str, Any]) -> Any:
    await record_run(0, f"op{i}.child")
    await point(f"op{i}.child")
    if op["exc"] is not None:
        raise make_error(op)
    return op["v"]


@app.workflow(name="child")
async def child(i: int, op: dict[str, Any]) -> Any:
    return await child_step(i, op)


@app.workflow(name="program")
async def program(prog: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    fid = 0  # the function id the next durable operation takes (checked by the test)
    self_topics: list[int] = []
    for i, op in enumerate(prog["ops"]):
        await point(f"op{i}")
        kind = op["k"]
        seen: dict[str, Any] = {"op": i}
        if kind == "step":
            seen["ok"] = await value_step(fid, i, op)
            fid += 1
            if op.get("send") is not None:
                self_topics.append(i)
                seen["self"] = await asyncflow.recv(f"self{i}", timeout_seconds=60)
                fid += 1
        elif kind in ("raise", "flaky", "child"):
            call = {"raise": raising_step, "flaky": flaky_step}.get(kind)
            try:
                if call is None:
                    seen["ok"] = await child(i, op)
                else:
                    seen["ok"] = await call(fid, i, op)
            except CAUGHT as exc:
                seen["err"] = observe(exc)
            fid += 1
            if kind == "flaky" and (op["fail_fx"].get("send") is not None
                                    or op["ok_fx"].get("send") is not None):
                self_topics.append(i)
                if op["fails"] == 1 and op["ok_fx"].get("send") is not None:
                    seen["self"] = await asyncflow.recv(f"self{i}", timeout_seconds=60)
                    fid += 1
        elif kind == "write":
            try:
                await asyncflow.write_stream(op["key"], op["v"])
                seen["wrote"] = op["key"]
            except CAUGHT as exc:
                seen["err"] = observe(exc)
            fid += 1
        elif kind == "close":
            await asyncflow.close_stream(op["key"])
            seen["closed"] = op["key"]
            fid += 1
        elif kind == "event":
            await asyncflow.set_event(op["key"], op["v"])
            seen["event"] = op["key"]
            fid += 1
        elif kind == "sleep":
            await asyncflow.sleep(op["s"])
            seen["slept"] = True
            fid += 1
        elif kind == "recv":
            print(f"RECV {i}", flush=True)
            seen["got"] = await asyncflow.recv(f"t{i}", timeout_seconds=60)
            fid += 1
        else:
            raise AssertionError(f"unknown operation {kind!r}")
        out.append(seen)
    # Nothing a step sent to this workflow may be left over (a failed attempt's send included).
    for i in self_topics:
        out.append({"leftover": i, "msg": await asyncflow.recv(f"self{i}", timeout_seconds=0)})
    await point("end")
    return out


async def main() -> None:
    global side
    side = await asyncpg.create_pool(URL, min_size=1, max_size=2)
    async with app:
        print("LAUNCHED", flush=True)
        handle = await app.start_workflow(program, PROGRAM, workflow_id="p")
        print("STARTED", flush=True)
        try:
            await handle.get_result()
        except Exception as exc:
            print(f"FAILED {type(exc).__name__}: {exc}", flush=True)
        print("DONE", flush=True)


asyncio.run(main())
