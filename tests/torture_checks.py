"""The torture test's invariants (see docs/operations.md, "Torture test").

Continuous (after every operation): no queue limit exceeded at any moment (a trigger checks
every transition to PENDING of a queued workflow and records any excess); no descendant of a
cancelled or timed-out workflow still running; nothing a non-terminal workflow may read (a
child its journal names) has been deleted. At quiescence: every workflow terminal or parked on
a message never sent, and every PENDING workflow run by its (live) executor. After releasing
the parked ones, when everything has ended: effects once per checkpoint (a second time only
where a process died or a fault hit mid-step), transactions exactly once, streams and events
as the programs wrote them, every error a workflow caught an AsyncFlowError, ``app.replay`` of
every finished workflow ``ok``, no rate limit window exceeded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import orjson
import torture_features
from torture_ops import EVENT_KEYS, STREAM

import asyncflow

if TYPE_CHECKING:
    from torture_harness import Harness

UNFINISHED = ("PENDING", "ENQUEUED", "DELAYED")
SLACK = dt.timedelta(seconds=1)  # clock slack between the effects table and the journal


def side_tables(queues: dict[str, dict[str, Any]]) -> list[str]:
    """The effects table, and a trigger recording any queue limit exceeded at a transition."""
    checks: list[str] = []
    for name, limits in queues.items():
        body: list[str] = []
        if "concurrency" in limits:
            body.append(f"""
            select count(*) into n from asyncflow.workflows
            where queue_name = '{name}' and status = 'PENDING';
            if n > {int(limits['concurrency'])} then
                insert into torture_excess values
                    (clock_timestamp(), '{name}', 'concurrency', n, new.workflow_id);
            end if;""")
        if "worker_concurrency" in limits:
            body.append(f"""
            select count(*) into n from asyncflow.workflows
            where queue_name = '{name}' and status = 'PENDING'
              and executor_id = new.executor_id;
            if n > {int(limits['worker_concurrency'])} then
                insert into torture_excess values (clock_timestamp(), '{name}',
                    'worker_concurrency ' || coalesce(new.executor_id, '-'), n, new.workflow_id);
            end if;""")
        if "partition_concurrency" in limits:
            body.append(f"""
            select count(*) into n from asyncflow.workflows
            where queue_name = '{name}' and status = 'PENDING'
              and partition_key = new.partition_key;
            if new.partition_key is not null
               and n > {int(limits['partition_concurrency'])} then
                insert into torture_excess values (clock_timestamp(), '{name}',
                    'partition ' || coalesce(new.partition_key, '-'), n, new.workflow_id);
            end if;""")
        if "rate_limit" in limits:
            body.append(f"""
            insert into torture_dispatches values ('{name}', new.workflow_id,
                                                   new.dispatched_at);""")
        checks.append(f"if new.queue_name = '{name}' then {''.join(body)} end if;")
    return [
        "create table torture_effects (id bigserial primary key, workflow_id text, tag text, "
        "kind text, pid int, ok boolean, at timestamptz not null default clock_timestamp())",
        "create table torture_excess (at timestamptz, queue text, what text, n bigint, "
        "workflow_id text)",
        "create table torture_dispatches (queue text, workflow_id text, at timestamptz)",
        "create table torture_starts (workflow_id text, at timestamptz)",
        f"""create function torture_check() returns trigger language plpgsql as $$
        declare n bigint;
        begin
            insert into torture_starts values (new.workflow_id, clock_timestamp());
            {' '.join(checks)}
            return null;
        end $$""",
        "create trigger torture_check after insert or update of status on asyncflow.workflows "
        "for each row when (new.status = 'PENDING' and new.queue_name is not null) "
        "execute function torture_check()",
    ]


# -- continuous ---------------------------------------------------------------------------------

_CANCELLED_TREES = """
with recursive tree as (
    select w.workflow_id as root, w.workflow_id, array[w.workflow_id] as path
    from asyncflow.workflows w where w.workflow_id = any($1::text[])
    union all
    select t.root, c.workflow_id, t.path || c.workflow_id
    from tree t join asyncflow.workflows c on c.parent_workflow_id = t.workflow_id
    where cardinality(t.path) < 20
)
select t.root, t.workflow_id, t.path, c.status from tree t
join asyncflow.workflows c using (workflow_id)
where t.workflow_id <> t.root and c.status in ('PENDING', 'ENQUEUED', 'DELAYED')"""

_DELETED_READS = """
select o.workflow_id, o.function_id, o.child_id, p.status
from asyncflow.operations o join asyncflow.workflows p using (workflow_id)
where p.status in ('PENDING', 'ENQUEUED', 'DELAYED') and o.child_id is not null
  and not exists (select 1 from asyncflow.workflows c where c.workflow_id = o.child_id)"""


_MISSING_CHILDREN = """
select o.workflow_id, o.function_id, o.child_id, p.status
from asyncflow.operations o join asyncflow.workflows p using (workflow_id)
where o.child_id is not null
  and not exists (select 1 from asyncflow.workflows c where c.workflow_id = o.child_id)"""


def _exempt(h: Harness, path: list[str]) -> bool:
    """A descendant may outlive its cancelled ancestor when a cancel on the way down spared
    children, or it (or a workflow between them) was resumed since."""
    spared = {wid for wid, children, _at in h.rec.cancels if not children}
    return any(w in spared for w in path[:-1]) or any(w in h.rec.resumed for w in path[1:])


async def cancelled_tree(h: Harness, wid: str, index: int) -> None:
    """Right after ``cancel_workflow(wid, children=True)`` returned: no descendant runs."""
    assert h.conn is not None
    for row in await h.conn.fetch(_CANCELLED_TREES, [wid]):
        if not any(w in h.rec.resumed for w in row["path"][1:]):
            h.violate("cancel-descendants", f"operation {index}: cancel_workflow({wid!r}) "
                      f"returned and its descendant {row['workflow_id']!r} is {row['status']}")


async def continuous(h: Harness) -> None:
    assert h.conn is not None
    for row in await h.conn.fetch("select * from torture_excess"):
        h.violate("queue-limit", f"{row['queue']} {row['what']}: {row['n']} PENDING at "
                  f"{row['at']} (transition of {row['workflow_id']})")
    cancelled = [r[0] for r in await h.conn.fetch(
        "select workflow_id from asyncflow.workflows where status = 'CANCELLED'")]
    for row in await h.conn.fetch(_CANCELLED_TREES, cancelled):
        if not _exempt(h, row["path"]):
            h.violate("cancel-descendants", f"{row['root']!r} is CANCELLED and its descendant "
                      f"{row['workflow_id']!r} is {row['status']} (path {row['path']})")
    for row in await h.conn.fetch(_DELETED_READS):
        if row["child_id"] in h.rec.deleted:
            # Deleted by hand while its parent was finished, and the parent resumed since: the
            # user's choice (delete_workflow refuses only children of unfinished parents).
            note = (f"{row['workflow_id']!r} was resumed after its child {row['child_id']!r} "
                    "was deleted by a delete operation")
            if note not in h.known:
                h.known.append(note)
            continue
        h.violate("deleted-read", f"{row['workflow_id']!r} is {row['status']} and its journal "
                  f"entry #{row['function_id']} names child {row['child_id']!r}, deleted")


# -- quiescence ---------------------------------------------------------------------------------

_UNFINISHED = """
select w.workflow_id, w.status, w.executor_id, o.name, o.completed,
       coalesce(o.deadline > extract(epoch from clock_timestamp()) + 600, false)
           and not o.completed and w.status = 'PENDING' as parked
from asyncflow.workflows w
left join lateral (select name, completed, deadline from asyncflow.operations
                   where workflow_id = w.workflow_id order by function_id desc limit 1) o on true
where w.status in ('PENDING', 'ENQUEUED', 'DELAYED')
order by w.workflow_id"""


async def _result(h: Harness, wid: str, within: float) -> None:
    assert h.client is not None
    try:
        handle = await h.client.retrieve_workflow(wid)
        await handle.get_result(timeout_seconds=within)
    except asyncflow.AsyncFlowError:
        pass
    except Exception as exc:
        if not isinstance(exc, asyncflow.AsyncFlowError):
            h.violate("error-type", f"get_result({wid!r}) raised {exc!r}")


async def wait_quiet(h: Harness, within: float, *, parked_ok: bool = True) -> list[str]:
    """Wait (on results, re-looking at least every 2 s) until every workflow has ended or, with
    ``parked_ok``, is parked in its ``park``; the parked ids."""
    assert h.conn is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        rows = await h.conn.fetch(_UNFINISHED)
        busy = [r for r in rows if not (parked_ok and r["parked"])]
        if not busy:
            return [r["workflow_id"] for r in rows]
        if loop.time() > deadline:
            h.violate("quiescence", f"{len(busy)} workflows neither ended nor parked after "
                      f"{within:.0f}s: " + "; ".join(
                          f"{r['workflow_id']} {r['status']} on {r['executor_id']}, last "
                          f"operation {r['name']} completed={r['completed']}"
                          for r in busy[:10]))
            return []
        tasks = [asyncio.create_task(_result(h, r["workflow_id"], 2.0)) for r in busy[:50]]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _strays(h: Harness) -> list[str]:
    assert h.conn is not None
    running: dict[str, set[str]] = {}
    for worker in h.workers:
        if worker.alive:
            answer = await worker.call({"op": "running"})
            running[worker.executor_id] = set(answer.get("ok") or [])
    rows = await h.conn.fetch("select workflow_id, executor_id from asyncflow.workflows "
                              "where status = 'PENDING' order by workflow_id")
    return [f"{r['workflow_id']} on {r['executor_id']}" for r in rows
            if r["workflow_id"] not in running.get(r["executor_id"], set())]


async def owners_run_their_workflows(h: Harness) -> None:
    """Every PENDING workflow is run by its executor, a live worker (re-asked once after the
    self-repair age and a few sweeps, as recovery and repair are periodic)."""
    strays = await _strays(h)
    if strays:
        await asyncio.sleep(5)
        again = set(await _strays(h))
        persisting = [s for s in strays if s in again]
        if persisting:
            h.violate("stray-pending", "PENDING but not run by a live executor: "
                      + ", ".join(persisting[:10]))


async def release(h: Harness, parked: list[str]) -> None:
    """Send every parked workflow its message; then everything must end."""
    assert h.client is not None
    for wid in parked:
        try:
            await h.client.send(wid, "go", "never", idempotency_key="release")
        except asyncflow.WorkflowNotFoundError:
            pass
    await wait_quiet(h, 90.0, parked_ok=False)


# -- at the end ---------------------------------------------------------------------------------


def _ancestors(parents: dict[str, str | None], wid: str) -> list[str]:
    out = [wid]
    while (parent := parents.get(out[-1])) is not None and len(out) < 20:
        out.append(parent)
    return out


def _explained(h: Harness, chain: list[str], pid: int, at: Any, until: Any) -> bool:
    """An extra run of a step body that began at ``at`` (its checkpoint committed at ``until``)
    is explained by its process dying, a fault or a cancel in between, or a timeout."""
    if any(p == pid and at <= when <= until + SLACK for p, when in h.rec.kills):
        return True
    if any(at - SLACK <= when <= until + SLACK for _kind, when in h.rec.faults):
        return True
    if any(w in chain and when >= at - SLACK for w, _c, when in h.rec.cancels):
        return True
    return any(w in h.rec.timeouts for w in chain)


async def _effects(h: Harness, parents: dict[str, str | None]) -> None:
    assert h.conn is not None
    # An earlier run kept by continue_as_new holds its journal under its own id; its step
    # bodies wrote the workflow's id.
    entries = await h.conn.fetch(
        "select coalesce(w.run_of, o.workflow_id) as workflow_id, o.function_id, o.name, "
        "o.output, o.created_at, (select x.created_at from asyncflow.workflows x "
        "where x.workflow_id = coalesce(w.run_of, o.workflow_id)) as incarnation "
        "from asyncflow.operations o "
        "left join asyncflow.workflows w on w.workflow_id = o.workflow_id "
        "where o.name in ('effect', 'flaky', 'tx') and o.output is not null "
        "and o.error is null")
    rows: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for r in await h.conn.fetch("select * from torture_effects where ok order by id"):
        rows[(r["workflow_id"], r["tag"], r["kind"])].append(r)
    checkpointed: set[tuple[str, str, str]] = set()
    for entry in entries:
        wid, tag = entry["workflow_id"], orjson.loads(entry["output"])
        kind = "tx" if entry["name"] == "tx" else "step"
        checkpointed.add((wid, tag, kind))
        fork = h.rec.forks.get(wid)
        copied = fork is not None and entry["function_id"] < fork[1]
        runs = rows.get((wid, tag, kind), [])
        if wid in h.rec.backfilled and entry["incarnation"] is not None:
            # A tick's workflow that retention removed (with its journal) and a later backfill
            # (or the cron) started again is a new workflow of the same id: the runs before it
            # was created were the earlier one's.
            runs = [r for r in runs if r["at"] >= entry["incarnation"]]
        where = f"{entry['name']} {tag!r} of {wid!r} (#{entry['function_id']})"
        if copied:
            if runs:
                h.violate("effects", f"{where} was copied by a fork but its body ran there "
                          f"{len(runs)} times")
            continue
        if not runs:
            h.violate("effects", f"{where} is checkpointed but its body never ran")
            continue
        if kind == "tx":
            if len(runs) != 1:
                h.violate("effects", f"transaction {where} committed its body {len(runs)} times")
            continue
        chain = _ancestors(parents, wid)
        extra = [r for r in runs[:-1] if not _explained(h, chain, r["pid"], r["at"],
                                                        entry["created_at"])]
        late = [r for r in runs if r["at"] > entry["created_at"] + SLACK
                and not _explained(h, chain, r["pid"], r["at"], r["at"])]
        if extra or late:
            h.violate("effects", f"{where} checkpointed at {entry['created_at']} ran "
                      f"{len(runs)} times (pids/times "
                      f"{[(r['pid'], str(r['at'])) for r in runs]}), unexplained by any kill, "
                      f"fault or cancel")
    for r in await h.conn.fetch("select * from torture_effects where kind = 'tx'"):
        key = (r["workflow_id"], r["tag"], "tx")
        if key not in checkpointed and r["workflow_id"] in parents:
            h.violate("effects", f"transaction {r['tag']!r} of {r['workflow_id']!r} committed "
                      "its body without its checkpoint")


def _walk(actions: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    writes = [a[2] for a in actions if a[0] == "write"]
    events: dict[str, Any] = {}
    for a in actions:
        if a[0] == "event":
            events[a[1]] = a[2]
    return writes, events


async def _outcomes(h: Harness) -> None:
    """SUCCESS programs: their stream and events as written, and every error they caught an
    AsyncFlowError."""
    assert h.conn is not None
    for w in await h.conn.fetch("select workflow_id, inputs, output from asyncflow.workflows "
                                "where name = 'prog' and status = 'SUCCESS'"):
        wid = w["workflow_id"]
        actions = orjson.loads(w["inputs"])["args"][0]
        writes, events = _walk(actions)
        stream = [orjson.loads(r[0]) for r in await h.conn.fetch(
            "select value from asyncflow.streams where workflow_id = $1 and key = $2 "
            "order by \"offset\"", wid, STREAM)]
        if stream != writes:
            rows = await h.conn.fetch(
                "select \"offset\", value, writer_fid, writer_seq, created_at "
                "from asyncflow.streams where workflow_id = $1 order by \"offset\"", wid)
            journal = await h.conn.fetch(
                "select function_id, name, completed, created_at from asyncflow.operations "
                "where workflow_id = $1 order by function_id", wid)
            h.violate("stream", f"{wid!r} wrote {writes} to its stream, which holds {stream}; "
                      f"rows {[tuple(r) for r in rows]}; journal {[tuple(r) for r in journal]};"
                      f" faults {h.rec.faults[-6:]}; kills {h.rec.kills}")
        stored = {r[0]: orjson.loads(r[1]) for r in await h.conn.fetch(
            "select key, value from asyncflow.events where workflow_id = $1", wid)}
        for key in EVENT_KEYS:
            if stored.get(key) != events.get(key):
                h.violate("event", f"{wid!r} set {key}={events.get(key)!r}, stored "
                          f"{stored.get(key)!r}")
        for item in orjson.loads(w["output"]):
            if isinstance(item, list) and item[:1] == ["caught"] and not item[2]:
                h.violate("error-type", f"workflow {wid!r} caught {item[1]}, not an "
                          "AsyncFlowError")


def _windows(times: list[Any], per: float) -> int:
    times = sorted(times)
    peak = first = 0
    for last, t in enumerate(times):
        while times[first] <= t - dt.timedelta(seconds=per):
            first += 1
        peak = max(peak, last - first + 1)
    return peak


async def final(h: Harness) -> None:
    assert h.conn is not None
    from torture_ops import QUEUES

    await continuous(h)
    parents = {r[0]: r[1] for r in await h.conn.fetch(
        "select workflow_id, parent_workflow_id from asyncflow.workflows")}
    await _effects(h, parents)
    await _outcomes(h)
    for name, limits in QUEUES.items():
        if "rate_limit" in limits:
            count, per = limits["rate_limit"]
            rows = await h.conn.fetch(
                "select at, workflow_id from torture_dispatches where queue = $1 order by at",
                name)
            peak = _windows([r["at"] for r in rows], per)
            if peak > count:
                h.violate("queue-limit", f"{name}: {peak} starts within {per}s (limit {count}): "
                          + ", ".join(f"{r['workflow_id']} {r['at'].time()}" for r in rows))
    # A finished workflow's children are kept while it is (retention: a child goes with its
    # parent); only a delete operation may have taken one, and then its replay cannot work.
    spared: set[str] = set()
    for row in await h.conn.fetch(_MISSING_CHILDREN):
        if row["child_id"] in h.rec.deleted:
            spared.add(row["workflow_id"])
        else:
            h.violate("deleted-read", f"{row['workflow_id']!r} ({row['status']}) names child "
                      f"{row['child_id']!r} in its journal entry #{row['function_id']}, which "
                      "was deleted though it was kept")
    # A child resumed after its parent read its outcome gives a replay of the parent another
    # outcome (children's outcomes are read again, not journaled): a known limitation.
    for row in await h.conn.fetch(
            "select workflow_id, child_id from asyncflow.operations "
            "where child_id = any($1::text[])", sorted(h.rec.resumed)):
        spared.add(row["workflow_id"])
    await torture_features.check(h)
    worker = h.live_worker(0)
    assert worker is not None
    answer = await worker.call({"op": "replay"}, within=120)
    if "error" in answer:
        h.violate("replay", f"app.replay raised {answer['error']}")
    for wid, outcome, text in answer.get("ok") or []:
        if wid not in spared:
            h.violate("replay", f"{wid!r}: {outcome}: {text[:300]}")
