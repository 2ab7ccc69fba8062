"""The torture test's seeded generator: workflow programs and the driver's operation list.

An **operation** is a JSON-able dict (``{"op": "start", ...}``) run by the driver
(``torture_harness``); a **program** is the list of actions workflow ``prog`` of
``tests/procs/torture_worker.py`` interprets. Everything is drawn from one ``random.Random``
seeded with the run's seed, so a seed names a run; the failure report prints the (shrunk)
operation list itself, which the harness can run again without the generator.

Programs are built so that every wait ends by itself (timeouts, timers, results of children
that end) except ``park``: a ``recv`` on a topic nothing ever sends to, the last action of a
started (never queued, never child) workflow. At quiescence such a workflow must be parked in
its ``recv`` on a live executor that runs it; every other workflow must have ended.
"""

from __future__ import annotations

import random
from typing import Any

QUEUES: dict[str, dict[str, Any]] = {
    "q-conc": {"concurrency": 2, "worker_concurrency": 1},
    "q-part": {"concurrency": 3, "partition_concurrency": 1},
    "q-rate": {"rate_limit": [3, 1.0]},
    "q-free": {},  # no limits: an enqueue in a worker inserts its workflow as that worker's
}
TOPICS = ("t0", "t1")
EVENT_KEYS = ("e0", "e1")
STREAM = "s0"
WORKERS = 3
SCHEDULE = "torture-tick"
RUNTIME_SCHEDULES = ("rs0", "rs1")
COLORS = ("red", "blue", "green")
BACKFILL_RANGES = ((0, 10), (4, 16), (12, 20))  # minutes after 2026-01-01 00:00 UTC

Op = dict[str, Any]


def program(rng: random.Random, depth: int, *, root: bool, queued: bool,
            known: list[str]) -> list[list[Any]]:
    """A random program: the actions of one workflow (``known``: root ids to talk to)."""
    kinds = ["step"] * 4 + ["flaky"] * 2 + ["tx"] * 2 + ["event"] * 2 + ["write"] * 2 + [
        "sleep", "recv", "recv", "wait_first", "send", "get_event", "attr"]
    if depth < 2:
        kinds += ["child", "child", "enqueue"]
    actions: list[list[Any]] = []
    for i in range(rng.randint(1, 6)):
        kind = rng.choice(kinds)
        tag = f"a{i}"
        if kind in ("step", "flaky", "tx"):
            actions.append([kind, tag])
        elif kind == "event":
            actions.append(["event", rng.choice(EVENT_KEYS), i])
        elif kind == "write":
            actions.append(["write", STREAM, i])
        elif kind == "attr":
            actions.append(["attr", rng.randrange(4)])
        elif kind == "sleep":
            actions.append(["sleep", rng.choice([0.01, 0.1, 0.4])])
        elif kind == "recv":
            actions.append(["recv", rng.choice(TOPICS), rng.choice([0.2, 1.0, 3.0])])
        elif kind == "wait_first":
            actions.append(["wait_first", rng.choice(TOPICS), rng.choice([0.1, 0.5, 2.0])])
        elif kind == "send":
            if known:
                actions.append(["send", rng.choice(known), rng.choice(TOPICS), i])
        elif kind == "get_event":
            if known:
                actions.append(["get_event", rng.choice(known), rng.choice(EVENT_KEYS),
                                rng.choice([0.1, 0.5])])
        elif kind == "child":
            actions.append(["child", program(rng, depth + 1, root=False, queued=queued,
                                             known=known), rng.random() < 0.7])
        elif kind == "enqueue":
            # A workflow holding a queue slot (queued, or a descendant of a queued one) never
            # waits for a queued child: with every slot held by such waiters the queues would
            # deadlock, by the program's design, not the engine's.
            actions.append(["enqueue", rng.choice(list(QUEUES)),
                            program(rng, depth + 1, root=False, queued=True, known=known),
                            rng.random() < 0.5 and not queued])
    if rng.random() < 0.4:
        actions.append(["close", STREAM])
    if root and not queued and rng.random() < 0.25:
        actions.append(["park"])
    elif rng.random() < 0.08:
        actions.append(["fail"])
    return actions


def _target(rng: random.Random) -> list[Any]:
    """Which workflow an operation acts on, chosen when it runs: a root started by an earlier
    operation (``["root", n]``), or any workflow in the database (``["any", n]``), sorted by
    id, ``n`` modulo their number."""
    return [rng.choice(["root", "any"]), rng.randrange(10**6)]


def generate(seed: int, count: int) -> list[Op]:
    """``count`` operations (plus the restarts that keep at least two workers alive)."""
    rng = random.Random(seed)
    ops: list[Op] = []
    roots: list[str] = []
    down: list[int] = []
    created: set[str] = set()  # runtime schedules the operations so far created
    table: list[tuple[str, float]] = [
        ("start", 4), ("enqueue", 4), ("send", 4), ("get_event", 1), ("read_stream", 1),
        ("cancel", 1.5), ("resume", 1.5), ("fork", 1), ("delete", 1), ("retention", 0.6),
        ("export_import", 0.7), ("trigger", 0.6), ("kill", 0.8), ("terminate", 1.2),
        ("refuse", 0.4), ("pause", 3), ("chain", 1.5), ("send_chain", 2), ("attrs", 1),
        ("debounce", 1), ("schedule", 1), ("delay", 1.2), ("typed", 1)]
    names = [name for name, _ in table]
    weights = [weight for _, weight in table]
    for n in range(count):
        kind = rng.choices(names, weights)[0]
        if down and rng.random() < 0.5:
            ops.append({"op": "restart", "worker": down.pop(0), "new_id": rng.random() < 0.4})
        if kind == "start":
            wid = f"r{n}"
            roots.append(wid)
            ops.append({"op": "start", "worker": rng.randrange(WORKERS), "wid": wid,
                        "prog": program(rng, 0, root=True, queued=False, known=roots),
                        "timeout": rng.choice([0.5, 1.5, 3.0]) if rng.random() < 0.2
                        else None})
        elif kind == "enqueue":
            wid = f"q{n}"
            roots.append(wid)
            queue = rng.choice(list(QUEUES))
            ops.append({
                "op": "enqueue", "via": rng.choice(["client", "worker"]),
                "worker": rng.randrange(WORKERS), "queue": queue, "wid": wid,
                "prog": program(rng, 0, root=True, queued=True, known=roots),
                "priority": rng.choice([-1, 0, 0, 1, 2]),
                "dedup": rng.choice(["d0", "d1"]) if rng.random() < 0.25 else None,
                "delay": rng.choice([0.3, 1.0, 2.0, 4.0]) if rng.random() < 0.35 else 0,
                "partition": rng.choice(["p0", "p1", "p2"]) if queue == "q-part" else None,
                "timeout": rng.choice([1.0, 3.0]) if rng.random() < 0.15 else None})
        elif kind == "send":
            ops.append({"op": "send", "target": _target(rng), "topic": rng.choice(TOPICS),
                        "value": n, "key": f"k{n}"})
        elif kind == "get_event":
            ops.append({"op": "get_event", "target": _target(rng),
                        "key": rng.choice(EVENT_KEYS)})
        elif kind == "read_stream":
            ops.append({"op": "read_stream", "target": _target(rng)})
        elif kind == "cancel":
            ops.append({"op": "cancel", "target": _target(rng),
                        "children": rng.random() < 0.75})
        elif kind in ("resume", "retention", "trigger"):
            op: Op = {"op": kind}
            if kind == "resume":
                op["target"] = _target(rng)
            if kind == "retention":
                op["max_count"] = rng.choice([None, 10, 30])
                op["max_age"] = rng.choice([1.0, 3.0]) if op["max_count"] is None else None
            ops.append(op)
        elif kind == "fork":
            wid = f"f{n}"
            roots.append(wid)
            ops.append({"op": "fork", "target": _target(rng), "wid": wid,
                        "step": rng.randrange(10**6)})
        elif kind == "delete":
            ops.append({"op": "delete", "target": _target(rng), "children": rng.random() < 0.6})
        elif kind == "export_import":
            ops.append({"op": "export_import", "target": _target(rng)})
        elif kind == "chain":
            wid = f"c{n}"
            roots.append(wid)
            ops.append({"op": "chain", "worker": rng.randrange(WORKERS), "wid": wid,
                        "total": rng.randint(1, 4)})
        elif kind == "send_chain":
            ops.append({"op": "send_chain", "target": ["chain", rng.randrange(10**6)],
                        "value": f"m{n}", "key": f"k{n}"})
        elif kind == "attrs":
            ops.append({"op": "attrs", "target": _target(rng), "color": rng.choice(COLORS),
                        "merge": rng.random() < 0.7})
        elif kind == "debounce":
            ops.append({"op": "debounce", "key": f"b{n}", "together": rng.random() < 0.4,
                        "calls": [[rng.randrange(WORKERS), rng.choice([0, 0, 0.1, 0.3, 1.5])]
                                  for _ in range(rng.randint(1, 4))]})
        elif kind == "schedule":
            name = rng.choice(RUNTIME_SCHEDULES)
            if name in created or rng.random() < 0.1:
                action = rng.choice(["create", "delete", "backfill", "backfill", "backfill"])
            else:
                action = "create"
            if action == "create":
                created.add(name)
            elif action == "delete":
                created.discard(name)
            ops.append({"op": "schedule", "name": name, "action": action,
                        "range": list(rng.choice(BACKFILL_RANGES))})
        elif kind == "delay":
            ops.append({"op": "delay", "target": ["queued", rng.randrange(10**6)],
                        "seconds": rng.choice([0.0, 0.5, 1.5, 3.0])})
        elif kind == "typed":
            wid = f"y{n}"
            roots.append(wid)
            ops.append({"op": "typed", "worker": rng.randrange(WORKERS), "wid": wid, "n": n,
                        "pause": rng.choice([0.01, 0.3])})
        elif kind == "kill":
            alive = [w for w in range(WORKERS) if w not in down]
            if len(alive) >= 2 and not down:
                victim = rng.choice(alive)
                down.append(victim)
                ops.append({"op": "kill", "worker": victim})
        elif kind == "terminate":
            ops.append({"op": "terminate", "which": rng.choice(["pool", "listener", "any"]),
                        "worker": rng.choice([None, *range(WORKERS)]),
                        "count": rng.randint(1, 4)})
        elif kind == "refuse":
            ops.append({"op": "refuse", "seconds": rng.choice([0.3, 0.8, 1.5])})
        else:
            ops.append({"op": "pause", "seconds": rng.choice([0.1, 0.3, 0.8])})
    ops.extend({"op": "restart", "worker": w, "new_id": False} for w in down)
    return ops
