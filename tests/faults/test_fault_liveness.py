"""A live process is never taken for dead, and a stale one never finishes a workflow (issue 19).

Real worker processes on the test server, each step body counted in a side table written inside
the body (tests/bodycount.py). Nobody dies in the first three scenarios below, so every step
body must run exactly once, in the process that started its workflow:

- the listener connection of two workers killed 50 times (``pg_terminate_backend``);
- ``idle_session_timeout = 1s`` on the database (the listener and idle pool connections die);
- launches racing the executor prunes of three other processes, then a twin of every launched
  executor id refused.

And a takeover: a worker cut off from the database mid-step (its backends gone, new connections
refused) while another takes its workflow after the liveness timeout. Once back, the cut-off
worker's checkpoints are all refused: its step body ran, its result never appears.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest
from bodycount import (
    collect,
    completed,
    exactly_once,
    in_one_process,
    never_two_go_on,
    no_run_after_checkpoint,
    prepare_app_database,
    prepare_side,
)
from faultlib import FaultProxy, size
from liveprocs import expected_steps, results, start, start_worker, terminate_listener

pytestmark = [
    pytest.mark.soak,
    pytest.mark.not_on_citus("the checkpoint log is a row trigger on the journal: on Citus it "
                             "runs on the worker holding the shard, away from the log table"),
]

LIVENESS = "2"  # seconds: the workers' liveness timeout where the test does not need another
RUNNING = (3, 30, 40)  # per worker: 3 ungated workflows of 30 steps of 40 ms, running meanwhile


def _check(problems: list[str], evidence) -> None:
    assert not problems, (f"{len(problems)} violations ({evidence.summary()}):\n"
                          + "\n".join(problems[:30]))


async def _nobody_died(db_url: str, owners: dict[str, str], expected: dict[str, int]) -> None:
    """Every workflow succeeded, each step body ran exactly once, in its owner's process."""
    outcomes = await results(db_url, list(expected))
    evidence = await collect(db_url, db_url)
    problems = [f"{wid}: {value!r}" for wid, value in outcomes.items() if not isinstance(
        value, list)]
    problems += completed(evidence, expected) + exactly_once(evidence, expected)
    problems += in_one_process(evidence, owners) + no_run_after_checkpoint(evidence)
    _check(problems, evidence)
    print(evidence.summary())


async def _two_workers(procs, db_url: str, liveness: str, names: tuple[str, ...]):
    workers = {}
    expected: dict[str, int] = {}
    for executor in names:
        workers[executor] = await start_worker(procs, db_url, db_url, executor, liveness, 10, 4,
                                               2, RUNNING)
        expected.update(expected_steps(executor, 10, 4, RUNNING))
    for lines in workers.values():
        for _ in range(10):
            await lines.next("GATED")
    owners = {wid: wid.rsplit("-", 1)[0] for wid in expected}
    return workers, expected, owners


async def test_listener_killed_50_times_during_a_two_process_run(db_url, conn, procs):
    await prepare_side(db_url)
    await prepare_app_database(conn)
    workers, expected, owners = await _two_workers(procs, db_url, LIVENESS, ("kill-a", "kill-b"))
    pids = {executor: await lines.listener() for executor, lines in workers.items()}
    kills = 0
    # Both listeners at once, 25 times (50 kills), every kill while workflows run.
    while kills < size(50, 500, "ASYNCFLOW_SOAK_LISTENER_KILLS"):
        for executor, pid in pids.items():
            await terminate_listener(conn, executor, pid)
            kills += 1
        for executor, lines in workers.items():
            pids[executor] = await lines.listener(not_pid=pids[executor])
    for lines in workers.values():
        lines.open_gate()
    await _nobody_died(db_url, owners, expected)


async def test_idle_session_timeout_of_one_second(db_url, conn, procs):
    await prepare_side(db_url)
    await prepare_app_database(conn)
    database = urlsplit(db_url).path.lstrip("/")
    await conn.execute(f"alter database \"{database}\" set idle_session_timeout = '1s'")
    # The default liveness timeout (10 s): a listener that only renewed its lease would sit
    # idle for two seconds at a time, and its idle pool connections for longer.
    workers, expected, owners = await _two_workers(procs, db_url, "-", ("idle-a", "idle-b"))
    # Four idle timeouts with every gated workflow parked mid-step.
    await asyncio.gather(*(lines.watch(4.0) for lines in workers.values()))
    reconnects = {executor: len(lines.seen("LISTENER")) - 1 for executor, lines in workers.items()}
    print(f"listener reconnects during the run: {reconnects}")
    for lines in workers.values():
        lines.open_gate()
    await _nobody_died(db_url, owners, expected)


async def test_launches_racing_prunes_keep_their_row_and_lock(db_url, conn, procs):
    count = size(15, 40, "ASYNCFLOW_SOAK_LAUNCHES")
    await prepare_side(db_url)
    await prepare_app_database(conn)
    pruners = [await start(procs, "pruner.py", db_url, ready="PRUNING") for _ in range(3)]
    # A fourth process serving the same workflow: it would take any launched app for dead.
    sweeper = await start_worker(procs, db_url, db_url, "sweeper", LIVENESS, 0, 3, 1)
    launcher = await start(procs, "launcher.py", db_url, db_url, LIVENESS, "launch", count)
    for pruner in pruners:  # the prunes went on well after the last launch
        await pruner.next("PRUNED")
        await pruner.next("PRUNED")
    ids = [f"launch-{i}" for i in range(count)]
    rows = await conn.fetch("select executor_id, lock_key from asyncflow.executors "
                            "where executor_id = any($1::text[])", ids)
    locked = {r["executor_id"] for r in rows if await conn.fetchval(
        "select exists (select 1 from pg_locks where locktype = 'advisory' and granted "
        "and objsubid = 2 and objid = $1::int::oid and database = (select oid from pg_database "
        "where datname = current_database()))", r["lock_key"])}
    twin = await start(procs, "launcher.py", db_url, db_url, LIVENESS, "twin", count,
                       ready="DONE")
    refused = {line.split()[1] for line in twin.seen("REFUSED")}
    launcher.open_gate()
    sweeper.open_gate()
    problems = [f"{wid}: its executor row was deleted" for wid in ids
                if wid not in {r["executor_id"] for r in rows}]
    problems += [f"{wid}: its executor lock is not held" for wid in ids if wid not in locked]
    problems += [f"{wid}: a second process launched with this executor id" for wid in ids
                 if wid not in refused]
    outcomes = await results(db_url, ids)
    evidence = await collect(db_url, db_url)
    problems += [f"{wid}: {value!r}" for wid, value in outcomes.items()
                 if not isinstance(value, list)]
    expected = dict.fromkeys(ids, 3)
    problems += completed(evidence, expected) + exactly_once(evidence, expected)
    problems += in_one_process(evidence, {wid: wid for wid in ids})
    _check(problems, evidence)


async def test_takeover_refuses_every_checkpoint_of_the_cut_off_process(db_url, conn, procs):
    await prepare_side(db_url)
    await prepare_app_database(conn)
    proxy = FaultProxy(db_url)
    proxy_url = await proxy.start()
    try:
        taker = await start_worker(procs, db_url, db_url, "taker", "1", 0, 4, 2)
        victim = await start_worker(procs, proxy_url, db_url, "victim", "1", 1, 4, 2)
        workflow = "victim-g0"
        victim_run = (await victim.next("GATED")).split()[3]
        await victim.listener()
        proxy.cut_off()  # mid-step 2: its backends exit, its lock goes, it cannot reconnect
        cut_at = await conn.fetchval("select clock_timestamp()")
        # The taker claims it once the victim's liveness timeout has passed, and runs step 2.
        taker_line = await taker.next(f"GATED {workflow}", within=30)
        taker_run = taker_line.split()[3]
        proxy.restore()
        await victim.listener()  # back on the database
        victim.open_gate()  # its step 2 ends now: its checkpoint must be refused
        victim_exit = await victim.next(f"EXIT {workflow}")
        taker.open_gate()
        outcome = (await results(db_url, [workflow]))[workflow]
    finally:
        await proxy.close()
    evidence = await collect(db_url, db_url)
    problems = [] if isinstance(outcome, list) else [f"{workflow}: {outcome!r}"]
    problems += completed(evidence, {workflow: 4}) + never_two_go_on(evidence)
    problems += no_run_after_checkpoint(evidence)
    output = evidence.outputs[workflow][1] or []
    if victim_run in output:
        problems.append(f"the cut-off victim's run of step 2 is in the output: {output}")
    if taker_run not in output:
        problems.append(f"the taker's run of step 2 is not in the output: {output}")
    late = [r for r in evidence.runs if r.executor_id == "victim" and r.step > 2]
    problems += [f"the victim ran step {r.step} after losing the workflow" for r in late]
    victim_runs = {r.run_id for r in evidence.runs if r.executor_id == "victim"}
    for cp in evidence.checkpoints:
        if cp.at > cut_at and (cp.run_id in victim_runs or "victim" in cp.application_name):
            problems.append(f"the victim recorded function {cp.function_id} after the cut "
                            f"({cp.application_name!r}, {cp.run_id})")
    problems += [f"the victim's execution ended with {victim_exit!r}: it finished the workflow"
                 for _ in [0] if victim_exit.endswith(" ok")]
    _check(problems, evidence)
