"""The torture test's invariants of the later features (docs/operations.md, "Torture test"),
checked once everything has ended: continue_as_new chains, workflow attributes, debounce
bursts, runtime schedules and their backfills, ``set_workflow_delay``, typed values.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import orjson
from torture_ops import COLORS

if TYPE_CHECKING:
    from torture_harness import Harness

PERIOD = 1.0  # the debouncer's period_seconds (tests/procs/torture_worker.py)
EVERYTHING = 1_000_000


def _args(row: Any) -> list[Any]:
    args: list[Any] = orjson.loads(row["inputs"])["args"]
    return args


def _untouched(h: Harness, wid: str) -> bool:
    """Nothing but the workflow itself decided its outcome: not forked from, resumed,
    exported and re-imported, or deleted by hand."""
    return not (wid in h.rec.forks or wid in h.rec.resumed or wid in h.rec.exported
                or wid in h.rec.deleted)


async def chains(h: Harness) -> None:
    """A continue_as_new workflow's kept runs form one chain (run k ran with n = k - 1, the
    current run after them all); a finished one ran ``total + 1`` runs and received every
    message sent to it exactly once (the rest still wait in its mailbox)."""
    assert h.conn is not None
    for wid in sorted(h.rec.chains):
        rows = await h.conn.fetch(
            "select workflow_id, run, run_of, status, inputs, output from asyncflow.workflows "
            "where workflow_id = $1 or run_of = $1 order by run", wid)
        current = [r for r in rows if r["workflow_id"] == wid]
        kept = [r for r in rows if r["run_of"] == wid]
        runs = [r["run"] for r in kept]
        if len(set(runs)) != len(runs):
            h.violate("chain", f"{wid!r} has runs {runs} kept twice")
        for r in kept:
            if r["status"] != "CONTINUED_AS_NEW" or _args(r)[0] != r["run"] - 1:
                h.violate("chain", f"{wid!r}: kept run {r['workflow_id']!r} #{r['run']} is "
                          f"{r['status']} with arguments {_args(r)}")
        if not current:
            continue
        cur = current[0]
        if kept and cur["run"] <= max(runs):
            h.violate("chain", f"{wid!r}: current run #{cur['run']} is not after kept runs "
                      f"{runs}")
        if _args(cur)[0] != cur["run"] - 1:
            h.violate("chain", f"{wid!r}: run #{cur['run']} ran with arguments {_args(cur)}")
            continue
        if cur["status"] != "SUCCESS" or not _untouched(h, wid):
            continue
        total, got = orjson.loads(cur["output"])
        if total != _args(cur)[1] or cur["run"] != total + 1:
            h.violate("chain", f"{wid!r} ended run #{cur['run']} with {[total, got]}, "
                      f"arguments {_args(cur)}")
        sent = h.rec.chain_sends.get(wid, [])
        maybe = {value for value, _ok in sent}
        surely = {value for value, ok in sent if ok}
        waiting = [orjson.loads(r[0]) for r in await h.conn.fetch(
            "select message from asyncflow.messages where destination_id = $1 "
            "and topic = 'tc'", wid)]
        both = [*got, *waiting]
        if (len(set(both)) != len(both) or not set(both) <= maybe
                or not surely <= set(both)):
            h.violate("chain-messages", f"{wid!r} received {got} over its runs, its mailbox "
                      f"holds {waiting}, sent {sent}: each sent message must be received by "
                      "one run exactly once or still wait")


async def attributes(h: Harness) -> None:
    """``list_workflows(attributes=...)`` finds exactly the workflows whose attributes match:
    the colors the driver set (``set_workflow_attributes``), the phase each finished program
    set last (``asyncflow.set_attributes``)."""
    assert h.conn is not None and h.client is not None
    rows = await h.conn.fetch("select workflow_id, status, name, run_of, inputs "
                              "from asyncflow.workflows")
    existing = {r["workflow_id"] for r in rows}
    runs = {r["workflow_id"] for r in rows if r["run_of"] is not None}
    unsure = {w for w, c in h.rec.colors.items() if c is None} | set(h.rec.forks) | runs
    for color in COLORS:
        found = {w.workflow_id for w in await h.client.list_workflows(
            attributes={"color": color}, limit=EVERYTHING)} - unsure
        expected = {w for w, c in h.rec.colors.items() if c == color and w in existing} - unsure
        if found != expected:
            h.violate("attributes", f"list_workflows(attributes={{'color': {color!r}}}) found "
                      f"{sorted(found - expected)} too many, {sorted(expected - found)} missing")
    phases: dict[int, set[str]] = defaultdict(set)
    candidates: set[str] = set()
    for r in rows:
        if (r["name"] != "prog" or r["status"] != "SUCCESS" or r["workflow_id"] in unsure
                or r["workflow_id"] in h.rec.colors):
            continue
        candidates.add(r["workflow_id"])
        sets = [a[1] for a in _args(r)[0] if a[0] == "attr"]
        if sets:
            phases[sets[-1]].add(r["workflow_id"])
    for phase in range(4):
        found = {w.workflow_id for w in await h.client.list_workflows(
            status="SUCCESS", name="prog", attributes={"phase": phase}, limit=EVERYTHING)}
        found &= candidates
        if found != phases[phase]:
            h.violate("attributes", f"list_workflows(attributes={{'phase': {phase}}}) found "
                      f"{sorted(found - phases[phase])} too many, "
                      f"{sorted(phases[phase] - found)} missing")


async def debounce(h: Harness) -> None:
    """One workflow per burst: two calls of a key less than the period apart (measured
    around both calls) got the same workflow, which ran with the arguments of the last call
    that got it (or of a later call whose answer was lost)."""
    assert h.conn is not None
    rows = await h.conn.fetch("select workflow_id, status, inputs, output "
                              "from asyncflow.workflows where name = 'bounce'")
    outputs = {r["workflow_id"]: (r["status"], r["output"]) for r in rows}
    by_key: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        by_key[_args(r)[0]].add(r["workflow_id"])
    touched = (h.rec.delayed | h.rec.resumed | h.rec.deleted | h.rec.exported
               | {w for w, _c, _at in h.rec.cancels} | set(h.rec.forks))
    for key, calls in sorted(h.rec.bursts.items()):
        got = [c for c in calls if c[3] is not None]
        if any(c[3] in touched for c in got):
            continue
        if key in h.rec.together and got:  # concurrent calls, all within one period: one id
            ids = {c[3] for c in got}
            span = max(c[2] for c in got) - min(c[1] for c in got)
            if len(ids) > 1 and span < PERIOD:
                h.violate("debounce", f"burst {key!r}: concurrent calls within {span:.2f}s "
                          f"(period {PERIOD}s) got {len(ids)} workflows {sorted(ids)}")
        together = key in h.rec.together  # the answers' order is not the calls' order
        for (n1, start1, _e1, id1), (n2, _s2, end2, id2) in itertools.pairwise(
                [] if together else got):
            if id1 != id2 and end2 - start1 < PERIOD and n2 == n1 + 1:
                h.violate("debounce", f"burst {key!r}: calls {n1} and {n2} within "
                          f"{end2 - start1:.2f}s (period {PERIOD}s) got two workflows "
                          f"{id1!r} and {id2!r}")
        lost = {c[0] for c in calls if c[3] is None}
        extra = by_key.get(key, set()) - {c[3] for c in got} - set(h.rec.forks)
        if len(extra) > len(lost):
            h.violate("debounce", f"burst {key!r}: workflows {sorted(extra)} that no call got "
                      f"(calls {calls})")
        for wid in {c[3] for c in got}:
            last = max(c[0] for c in got if c[3] == wid)
            status, output = outputs.get(wid, (None, None))
            if status != "SUCCESS":
                continue
            ran = orjson.loads(output)
            mine = {c[0] for c in got if c[3] == wid}
            if together and ran[0] == key and ran[1] in mine | lost:
                continue
            if ran[0] != key or not (ran[1] == last or (ran[1] > last and ran[1] in lost)):
                h.violate("debounce", f"burst {key!r}: {wid!r} ran with {ran}, the last call "
                          f"that got it was {last} (calls {calls})")


async def schedules(h: Harness) -> None:
    """Each tick of a runtime schedule ran in at most one workflow; each backfilled tick ran
    (its step body), unless its run was cancelled or deleted first."""
    assert h.conn is not None
    ran: dict[tuple[str, str], set[str]] = defaultdict(set)
    bodies: set[str] = set()
    for r in await h.conn.fetch("select workflow_id, tag from torture_effects where ok and "
                                "kind = 'step' and tag like 'tick-%'"):
        ran[(r["workflow_id"].split("@")[0], r["tag"])].add(r["workflow_id"])
        bodies.add(r["workflow_id"])
    for (schedule, tag), ids in sorted(ran.items()):
        if len(ids) > 1:
            h.violate("schedule", f"tick {tag} of {schedule!r} ran in {sorted(ids)}")
    cancelled = {w for w, _c, _at in h.rec.cancels}
    for wid in sorted(h.rec.backfilled - bodies - cancelled - h.rec.deleted):
        h.violate("backfill", f"backfilled tick {wid!r} never ran its step")


async def delays(h: Harness) -> None:
    """A workflow delayed by ``set_workflow_delay`` does not start before its new time (a
    later delay of it, or a resume, may move it)."""
    assert h.conn is not None
    bounced = {r[0] for r in await h.conn.fetch(
        "select workflow_id from asyncflow.workflows where name = 'bounce'")}
    starts: dict[str, list[Any]] = defaultdict(list)
    for r in await h.conn.fetch("select workflow_id, at from torture_starts"):
        starts[r[0]].append(r[1])
    for i, (wid, called, until) in enumerate(h.rec.delays):
        if wid in bounced or wid in h.rec.resumed:
            continue
        later = [c for w, c, _u in h.rec.delays[i + 1:] if w == wid]
        for at in starts.get(wid, []):
            if called <= at < until and not any(c <= at for c in later):
                h.violate("delay", f"{wid!r} delayed (at {called}) until {until} started at "
                          f"{at}")


async def typed(h: Harness) -> None:
    """Typed workflows' results decode to the types their annotations name (compared by
    repr, read by a worker that may not have run them)."""
    assert h.conn is not None
    done = {r[0] for r in await h.conn.fetch(
        "select workflow_id from asyncflow.workflows where name = 'typed' "
        "and status = 'SUCCESS'")}
    ids = [[w, n] for w, n in sorted(h.rec.typed.items()) if w in done]
    if not ids:
        return
    worker = h.live_worker(1)
    assert worker is not None
    answer = await worker.call({"op": "typed_check", "ids": ids}, within=120)
    if "error" in answer:
        h.violate("typed", f"reading typed results raised {answer['error']}")
    for wid, got, expected in answer.get("ok") or []:
        h.violate("typed", f"{wid!r} returned {got}, expected {expected}")


async def check(h: Harness) -> None:
    r = h.rec
    h.note(f"features: {len(r.chains)} chains, {sum(map(len, r.chain_sends.values()))} chain "
           f"sends, {len(r.colors)} colored, {len(r.bursts)} bursts of "
           f"{sum(map(len, r.bursts.values()))} calls, {len(r.backfilled)} backfilled ticks, "
           f"{len(r.delays)} delays, {len(r.typed)} typed")
    for part in (chains, attributes, debounce, schedules, delays, typed):
        await part(h)
