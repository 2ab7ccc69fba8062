"""Property test: a workflow replayed after crashes behaves exactly like its first run.

A seeded generator builds random "programs": steps that return values, write streams, set events
and send to their own workflow; steps that raise custom exceptions the workflow catches; steps
with ``retries=1`` whose first attempt (or every attempt) fails; workflow-level stream writes,
stream closes (and writes after them), events, child workflows, durable sleeps and ``recv`` of
messages the test sends. ``tests/procs/replay_worker.py`` interprets a program as workflow ``p``,
which returns everything it observed (values, caught exceptions with their type, args and
attributes, messages).

Each program runs twice, each on its own fresh database:

- the **reference**: once, uninterrupted;
- the **trial**: in workers SIGKILLed at 1 to 3 random points (inside steps, between operations,
  while parked in ``recv``), relaunched alternately under the same executor id (it recovers its
  own workflows at launch) and under a new one (its supervisor claims the dead executor's).

The reference must match a model of the program (the documented semantics), and the trial must
match the reference: the workflow's output, every stream's full contents (read live during the
run, across the crashes, and again at the end: every reader sees one history), the events and the
journal. No step body may run once its checkpoint has committed.

Semantics the model encodes: a caught exception is the class the step raised, with the same args
and JSON attributes, on the first run and on every replay; a step attempt's durable effects
(stream writes, ``set_event``, ``send``) take effect only with the step's successful checkpoint:
an attempt that failed or crashed leaves none.

Modes: ``basic`` avoids the two behaviours known to break these semantics today, and passes;
``kw-exceptions`` adds exceptions with a required keyword argument (issue 9, item 1) and
``attempt-effects`` gives failing attempts durable effects (item 2); all three must pass.

Sizes: ``ASYNCFLOW_SOAK=1`` runs 60 programs per mode instead of 6
(``ASYNCFLOW_SOAK_REPLAY_PROGRAMS`` sets it). A failure names its program's seed; replay it with
``ASYNCFLOW_REPLAY_SEED=<seed> ASYNCFLOW_SOAK_REPLAY_PROGRAMS=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest
from faultlib import admin, size, with_database

import asyncflow

pytestmark = [pytest.mark.soak, pytest.mark.slow]

KEYS = ("a", "b")  # stream keys
EVENT_KEYS = ("e0", "e1", "e2")
WAIT = 30.0  # seconds any single wait may take before the test fails (a wedge)
WORKER_APP = "replay-worker"  # application_name of the workers' connections

MODES = {
    "basic": {"kw": False, "effects": False},
    "kw-exceptions": {"kw": True, "effects": False},
    "attempt-effects": {"kw": False, "effects": True},
}

# -- programs -------------------------------------------------------------------------------------


def _value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(8 if depth < 2 else 6)
    if pick == 0:
        return rng.randint(-1000, 10**6)
    if pick == 1:
        return rng.choice(["", "x", "ünï", "emoji 🙂", "quote ' \" --", "line\nbreak"]) + str(
            rng.randrange(100))
    if pick == 2:
        return rng.choice([True, False, None])
    if pick == 3:
        return rng.randint(0, 10**4) / 8  # exact in binary: survives JSON both ways
    if pick in (4, 5):
        return f"v{rng.randrange(10**6)}"
    if pick == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{j}": _value(rng, depth + 1) for j in range(rng.randint(0, 3))}


def _error(rng: random.Random, kw: bool) -> dict[str, Any]:
    declined = kw and rng.random() < 0.6
    return {
        "exc": "Declined" if declined else "Refused",
        "msg": f"{'declined' if declined else 'refused'} {rng.randrange(10**4)}",
        "code": rng.randint(1, 999),
        "details": ({"reason": _value(rng, 1)} if rng.random() < 0.5 else None)
        if declined else None,
    }


def _fx(rng: random.Random, open_keys: list[str], max_writes: int) -> dict[str, Any]:
    """A step attempt's effects: stream writes (to open streams), maybe an event and a send."""
    fx: dict[str, Any] = {
        "writes": [[rng.choice(open_keys), _value(rng)]
                   for _ in range(rng.randint(0, max_writes) if open_keys else 0)],
        "event": [rng.choice(EVENT_KEYS), _value(rng)] if rng.random() < 0.4 else None,
        "send": _value(rng) if rng.random() < 0.3 else None,
    }
    return fx


def generate(seed: int, mode: str) -> tuple[dict[str, Any], list[str]]:
    """A random program and the kill points (labels, in program order) of its trial."""
    rng = random.Random(seed)
    kw, with_effects = MODES[mode]["kw"], MODES[mode]["effects"]
    kinds = ["step"] * 3 + ["raise"] * 2 + ["flaky"] * 3 + ["write"] * 2 + ["event", "child",
                                                                           "sleep", "recv"]
    if rng.random() < 0.5:
        kinds.append("close")
    ops: list[dict[str, Any]] = []
    closed: set[str] = set()
    n = rng.randint(6, 11)
    for i in range(n):
        open_keys = [k for k in KEYS if k not in closed]
        kind = rng.choice(kinds)
        if kind == "close" and len(open_keys) < 2:
            kind = "write"
        if kw and i == n // 3:
            kind = "raise"  # a caught keyword-only exception, early: later kills replay it
        if with_effects and i == n // 2:
            kind = "flaky"
        op: dict[str, Any] = {"k": kind}
        if kind == "step":
            op.update(_fx(rng, open_keys, 2), v=_value(rng))
        elif kind == "raise":
            op.update(_error(rng, kw))
            if kw and i == n // 3:
                op.update(exc="Declined", msg=f"declined {rng.randrange(10**4)}",
                          details={"retry": rng.random() < 0.5})
        elif kind == "flaky":
            fails = 1 if rng.random() < 0.75 else 2
            op.update(_error(rng, kw), fails=fails, v=_value(rng))
            op["ok_fx"] = _fx(rng, open_keys, 2) if fails == 1 else {}
            op["fail_fx"] = _fx(rng, open_keys, 3) if with_effects else {}
            if with_effects and i == n // 2:
                # Leaves a trace unless the failed attempt's effects are dropped: more writes
                # than the retry, an event only it sets, and a send.
                op["fails"] = 1
                key = rng.choice(open_keys)
                op["ok_fx"] = {"writes": [[key, _value(rng)]], "event": None, "send": "ok"}
                op["fail_fx"] = {"writes": [[key, "failed-1"], [key, "failed-2"]],
                                 "event": [f"x{i}", "failed attempt"], "send": "failed"}
        elif kind == "write":
            op.update(key=rng.choice(KEYS), v=_value(rng))
        elif kind == "close":
            op["key"] = rng.choice(open_keys)
            closed.add(op["key"])
        elif kind == "event":
            op.update(key=rng.choice(EVENT_KEYS), v=_value(rng))
        elif kind == "child":
            op.update(_error(rng, kw), v=_value(rng))
            if rng.random() < 0.6:
                op["exc"] = None
        elif kind == "sleep":
            op["s"] = 0.005
        elif kind == "recv":
            op["msg"] = _value(rng)
        ops.append(op)
    program = {"seed": seed, "ops": ops}

    points = kill_points(program)
    chosen = sorted(rng.sample(range(len(points)), rng.randint(1, min(3, len(points)))))
    if kw:
        # At least one kill after the keyword-only exception was checkpointed: it is replayed.
        first = points.index(f"op{n // 3}.run")
        if chosen[-1] <= first:
            chosen[-1] = rng.randrange(first + 1, len(points))
    return program, [points[j] for j in chosen]


def kill_points(program: dict[str, Any]) -> list[str]:
    """Every kill point of a program, in the order a run reaches them."""
    points: list[str] = []
    for i, op in enumerate(program["ops"]):
        points.append(f"op{i}")
        kind = op["k"]
        if kind in ("step", "raise"):
            points.append(f"op{i}.run")
        elif kind == "flaky":
            points.append(f"op{i}.fail0")
            points.append(f"op{i}.ok" if op["fails"] == 1 else f"op{i}.fail1")
        elif kind == "child":
            points.append(f"op{i}.child")
        elif kind == "recv":
            points.append(f"op{i}.recv")  # killed by the test while parked in recv
    points.append("end")
    return points


def expected_runs(program: dict[str, Any]) -> Counter[str]:
    """Step body executions of an uninterrupted run, by kill-point label."""
    runs: Counter[str] = Counter()
    for i, op in enumerate(program["ops"]):
        if op["k"] in ("step", "raise"):
            runs[f"op{i}.run"] += 1
        elif op["k"] == "flaky":
            runs[f"op{i}.fail0"] += 1
            runs[f"op{i}.ok" if op["fails"] == 1 else f"op{i}.fail1"] += 1
        elif op["k"] == "child":
            runs[f"op{i}.child"] += 1
    return runs


def step_name(program: dict[str, Any], label: str) -> str:
    i = int(label[2:].split(".")[0])
    kind = program["ops"][i]["k"]
    if label.endswith(".child"):
        return "child_step"
    return {"step": "value_step", "raise": "raising_step", "flaky": "flaky_step"}[kind]


# -- the model ------------------------------------------------------------------------------------


def _error_seen(op: dict[str, Any]) -> dict[str, Any]:
    if op["exc"] == "Declined":
        return {"type": "Declined", "args": [op["msg"]], "code": op["code"],
                "details": op["details"]}
    return {"type": "Refused", "args": [op["msg"], op["code"]], "code": op["code"],
            "details": None}


def model(program: dict[str, Any]) -> tuple[list[Any], dict[str, list[Any]], dict[str, Any]]:
    """What a run must produce: the workflow's output, the streams and the events."""
    out: list[Any] = []
    streams: dict[str, list[Any]] = {k: [] for k in KEYS}
    events: dict[str, Any] = {}
    closed: set[str] = set()
    self_topics: list[int] = []

    def apply(fx: dict[str, Any]) -> None:
        for key, value in fx.get("writes", []):
            streams[key].append(value)
        if fx.get("event") is not None:
            events[fx["event"][0]] = fx["event"][1]

    for i, op in enumerate(program["ops"]):
        kind = op["k"]
        seen: dict[str, Any] = {"op": i}
        if kind == "step":
            apply(op)
            seen["ok"] = op["v"]
            if op["send"] is not None:
                self_topics.append(i)
                seen["self"] = op["send"]
        elif kind == "raise":
            seen["err"] = _error_seen(op)
        elif kind == "flaky":
            if op["fails"] == 1:
                apply(op["ok_fx"])  # the failed attempt's effects are gone
                seen["ok"] = op["v"]
            else:
                seen["err"] = _error_seen(op)
            if op["fail_fx"].get("send") is not None or op["ok_fx"].get("send") is not None:
                self_topics.append(i)
                if op["fails"] == 1 and op["ok_fx"].get("send") is not None:
                    seen["self"] = op["ok_fx"]["send"]
        elif kind == "child":
            if op["exc"] is None:
                seen["ok"] = op["v"]
            else:
                seen["err"] = _error_seen(op)
        elif kind == "write":
            if op["key"] in closed:
                seen["err"] = {"type": "StreamClosedError"}
            else:
                streams[op["key"]].append(op["v"])
                seen["wrote"] = op["key"]
        elif kind == "close":
            closed.add(op["key"])
            seen["closed"] = op["key"]
        elif kind == "event":
            events[op["key"]] = op["v"]
            seen["event"] = op["key"]
        elif kind == "sleep":
            seen["slept"] = True
        elif kind == "recv":
            seen["got"] = op["msg"]
        out.append(seen)
    out.extend({"leftover": i, "msg": None} for i in self_topics)
    return out, streams, events


# -- running a program ----------------------------------------------------------------------------


@dataclass
class Outcome:
    result: Any = None
    streams: dict[str, list[Any]] = field(default_factory=dict)
    live: dict[str, list[Any]] = field(default_factory=dict)
    events: dict[str, Any] = field(default_factory=dict)
    journal: list[tuple[int, str, str | None]] = field(default_factory=list)
    runs: list[tuple[str, int, str, bool, str | None]] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    incarnations: int = 0


def _worker_url(url: str) -> str:
    """The URL with an application_name, so the test can find a killed worker's sessions."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), ("application_name", WORKER_APP)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


async def _reap(url: str) -> None:
    """End a SIGKILLed worker's server sessions and wait until they are gone (as a process
    supervisor would before relaunching under the same executor id)."""
    conn = await asyncpg.connect(url)
    try:
        sessions = ("from pg_stat_activity where datname = current_database()"
                    " and application_name = $1")
        # With a timeout, pg_terminate_backend waits for the session to end (false if it had
        # already ended, or did not end in time: the count below tells which).
        await conn.execute(f"select pg_terminate_backend(pid, 30000) {sessions}", WORKER_APP)
        left = await conn.fetchval(f"select count(*) {sessions}", WORKER_APP)
        assert left == 0, f"{left} session(s) of a killed worker did not end"
    finally:
        await conn.close()


async def _drive(proc: Any, program: dict[str, Any], kill_at: str | None,
                 client: asyncflow.Client, on_started: Callable[[], None]) -> None:
    """Follow a worker's lines: send the messages it waits for, SIGKILL it at ``kill_at``."""
    stdout = proc.process.stdout
    try:
        await _follow(proc, stdout, program, kill_at, client, on_started)
    except TimeoutError:
        raise AssertionError(
            f"the worker printed nothing new for {WAIT} s (wedged?) while the test waited for "
            f"{f'kill point {kill_at}' if kill_at else 'the end'}; output:\n"
            + "\n".join(proc.lines[-40:])) from None
    if kill_at is not None:
        proc.kill()
    await proc.wait(WAIT)


async def _follow(proc: Any, stdout: asyncio.StreamReader, program: dict[str, Any],
                  kill_at: str | None, client: asyncflow.Client,
                  on_started: Callable[[], None]) -> None:
    while True:
        async with asyncio.timeout(WAIT):
            raw = await stdout.readline()
        if not raw:
            raise AssertionError("the worker exited on its own; output:\n"
                                 + "\n".join(proc.lines[-40:]))
        line = raw.decode().rstrip("\n")
        proc.lines.append(line)
        if line == "STARTED":
            on_started()
        elif line.startswith("RECV "):
            i = int(line.split()[1])
            if kill_at == f"op{i}.recv":
                return  # killed while parked in recv (or about to be)
            # Sent again on every replay of the recv: the key delivers it once.
            await client.send("p", program["ops"][i]["msg"], f"t{i}", idempotency_key=f"t{i}")
        elif line == f"PARKED {kill_at}":
            return
        elif line == "DONE":
            assert kill_at is None, f"the run ended without reaching kill point {kill_at}"
            return


async def _read(client: asyncflow.Client, key: str) -> list[Any]:
    return [value async for value in client.read_stream("p", key)]


async def run_program(procs: Callable[..., Awaitable[Any]], url: str, program: dict[str, Any],
                      kills: list[str], executor: str) -> Outcome:
    """Run ``program`` on the database ``url``, killing its worker at each of ``kills``."""
    outcome = Outcome()
    live: dict[str, asyncio.Task[list[Any]]] = {}
    async with asyncflow.Client(url) as client:

        def start_readers() -> None:
            for key in KEYS:
                if key not in live:
                    live[key] = asyncio.create_task(_read(client, key))

        try:
            for n, kill_at in enumerate([*kills, None]):
                # Alternate: the same executor id (recovers its own workflows at launch) and a
                # new one (its supervisor claims the dead executor's workflows).
                worker_id = executor if n % 2 == 0 else f"{executor}-{n}"
                proc = await procs("replay_worker.py", _worker_url(url), worker_id,
                                   json.dumps(program), kill_at or "-")
                await _drive(proc, program, kill_at, client, start_readers)
                outcome.incarnations += 1
                if kill_at is not None:
                    await _reap(url)
            handle = await client.retrieve_workflow("p")
            try:
                outcome.result = ["ok", await handle.get_result(timeout_seconds=WAIT)]
            except asyncflow.AsyncFlowError as exc:
                outcome.result = ["error", type(exc).__name__, str(exc)]
            async with asyncio.timeout(WAIT):
                for key in KEYS:
                    outcome.streams[key] = await _read(client, key)
                    outcome.live[key] = await live[key]
            outcome.events = await client.get_all_events("p")
            outcome.journal = [(s.function_id, s.name, s.child_workflow_id)
                               for s in await client.list_workflow_steps("p")]
            outcome.statuses = {s.workflow_id: s.status for s in await client.list_workflows()}
        finally:
            for task in live.values():
                task.cancel()
            await asyncio.gather(*live.values(), return_exceptions=True)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "select r.workflow_id, r.fid, r.label, r.after_checkpoint, o.name from runs r"
            " left join asyncflow.operations o"
            " on o.workflow_id = r.workflow_id and o.function_id = r.fid")
        outcome.runs = [tuple(row) for row in rows]
    finally:
        await conn.close()
    return outcome


def _diff(what: str, got: Any, want: Any) -> str | None:
    if got == want:
        return None
    if isinstance(got, list) and isinstance(want, list) and got[:1] == want[:1] == ["ok"]:
        return _diff(what + " (observations)", got[1], want[1])  # a workflow result
    if isinstance(got, list) and isinstance(want, list):
        lines = [f"{what} differ:"]
        for j in range(max(len(got), len(want))):
            g = got[j] if j < len(got) else "<missing>"
            w = want[j] if j < len(want) else "<missing>"
            if g != w:
                lines.append(f"  [{j}] got {g!r}\n       want {w!r}")
        return "\n".join(lines)
    return f"{what} differ:\n  got  {got!r}\n  want {want!r}"


def check(program: dict[str, Any], kills: list[str], ref: Outcome, trial: Outcome) -> list[str]:
    """Every way the two runs break the semantics (empty: none)."""
    problems: list[str] = []
    out, streams, events = model(program)

    def expect(what: str, got: Any, want: Any) -> None:
        diff = _diff(what, got, want)
        if diff is not None:
            problems.append(diff)

    # The first run follows the documented semantics.
    expect("first run: workflow result", ref.result, ["ok", out])
    expect("first run: streams", ref.streams, streams)
    expect("first run: events", ref.events, events)
    expect("first run: stream contents a live reader saw", ref.live, ref.streams)
    expect("first run: step executions", Counter(r[2] for r in ref.runs), expected_runs(program))
    # The crashed and recovered run does exactly what the first run did.
    expect("replayed run: workflow result", trial.result, ref.result)
    expect("replayed run: streams", trial.streams, ref.streams)
    expect("replayed run: events", trial.events, ref.events)
    expect("replayed run: stream contents a live reader saw across the crashes", trial.live,
           trial.streams)
    expect("replayed run: journal (function id, operation, child id)", trial.journal,
           ref.journal)
    expect("replayed run: workflow statuses", trial.statuses, ref.statuses)
    expect("replayed run: steps that ran", {r[2] for r in trial.runs}, {r[2] for r in ref.runs})
    for outcome, which in ((ref, "first run"), (trial, "replayed run")):
        again = [r for r in outcome.runs if r[3]]
        expect(f"{which}: step bodies run after their checkpoint committed", again, [])
        # The function ids the worker counted are the ones the journal used.
        names = [(r[2], r[4]) for r in outcome.runs if r[4] != step_name(program, r[2])]
        expect(f"{which}: steps whose function id holds another operation", names, [])
    expect("killed workers", trial.incarnations, len(kills) + 1)
    return problems


# -- the test -------------------------------------------------------------------------------------


@pytest.fixture
async def new_database(server_url: str, template_db: str) -> AsyncIterator[Callable[[], Any]]:
    """Create fresh migrated databases (with the worker's side tables) on demand."""
    names: list[str] = []

    async def make() -> str:
        name = f"asyncflow_rp_{uuid.uuid4().hex[:12]}"
        await admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        names.append(name)
        url = with_database(server_url, name)
        await admin(url,
                    "create table runs (workflow_id text, fid int, label text,"
                    " after_checkpoint bool)",
                    "create table fails (workflow_id text, fid int)")
        return url

    yield make
    for name in names:
        await admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("mode", [
    "basic",
    "kw-exceptions",
    "attempt-effects",
])
async def test_replay_matches_first_run(mode: str, procs: Any, new_database: Any) -> None:
    programs = size(6, 60, "ASYNCFLOW_SOAK_REPLAY_PROGRAMS")
    base = int(os.environ.get("ASYNCFLOW_REPLAY_SEED") or time.time_ns() % 10**6)
    kills_total = 0
    for j in range(programs):
        seed = base + j
        program, kills = generate(seed, mode)
        ref_url, trial_url = await new_database(), await new_database()
        about = (f"program seed {seed} ({mode}), killed at {kills}; replay it: "
                 f"ASYNCFLOW_REPLAY_SEED={seed} ASYNCFLOW_SOAK_REPLAY_PROGRAMS=1 python -m pytest"
                 " -q 'tests/engine/test_replay_property.py"
                 f"::test_replay_matches_first_run[{mode}]'"
                 f"\nprogram: {json.dumps(program)}")
        try:
            async with asyncio.TaskGroup() as tg:  # both at once; a failure stops the other
                ref_run = tg.create_task(run_program(procs, ref_url, program, [], "ref"))
                trial_run = tg.create_task(run_program(procs, trial_url, program, kills, "trial"))
        except Exception as exc:
            exc.add_note(about)
            raise
        problems = check(program, kills, ref_run.result(), trial_run.result())
        if problems:
            pytest.fail("\n".join(problems) + "\n" + about, pytrace=False)
        kills_total += len(kills)
    print(f"replay property ({mode}): seeds {base}..{base + programs - 1}, "
          f"{kills_total} kills, all runs matched")
