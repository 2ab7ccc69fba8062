"""Counting step-body executions in the liveness fault tests (tests/faults/test_fault_liveness.py,
tests/faults/test_fault_failover.py).

Two records, both written by the database, never inferred from the workers' output:

- ``step_runs``, a side table that every step body of ``tests/procs/stepcount.py`` writes first
  thing, on its own connection: one row per body execution (workflow, step, executor, os pid,
  a run id, the time). A step returns its run id, so a workflow's output names the run whose
  result was checkpointed for each step.
- ``checkpoint_log`` in the app's database, filled by a trigger on ``asyncflow.operations``:
  every committed journal entry with its time and the ``application_name`` of the connection
  that wrote it (rolled-back or lost writes leave no row, like the entry itself).

The checks return a list of problems (empty: fine), so a failing test names every violation.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

RUNS_TABLE = """
create table if not exists step_runs (
    workflow_id text not null,
    step        int not null,
    executor_id text not null,
    pid         int not null,
    run_id      text primary key,
    started_at  timestamptz not null default clock_timestamp()
)"""

CHECKPOINT_LOG = (
    """create table checkpoint_log (
        workflow_id text, function_id int, output text, application_name text,
        at timestamptz)""",
    """create function log_checkpoint() returns trigger language plpgsql as $$
    begin
        insert into checkpoint_log values (new.workflow_id, new.function_id, new.output,
            current_setting('application_name'), clock_timestamp());
        return null;
    end $$""",
    "create trigger log_checkpoint after insert on asyncflow.operations "
    "for each row execute function log_checkpoint()",
)


async def prepare_side(url: str) -> None:
    """Create the side table (on the server that outlives the faults)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(RUNS_TABLE)
    finally:
        await conn.close()


async def prepare_app_database(conn: asyncpg.Connection) -> None:
    """Log every journal entry of the (migrated) app database ``conn`` is on."""
    for statement in CHECKPOINT_LOG:
        await conn.execute(statement)


@dataclass(frozen=True)
class Run:
    workflow_id: str
    step: int
    executor_id: str
    pid: int
    run_id: str
    started_at: datetime


@dataclass(frozen=True)
class Checkpoint:
    workflow_id: str
    function_id: int
    run_id: str | None  # the step's recorded result
    application_name: str
    at: datetime


@dataclass
class Evidence:
    runs: list[Run]
    outputs: dict[str, tuple[str, list[str] | None]]  # workflow -> (status, run ids)
    checkpoints: list[Checkpoint]

    def runs_of(self, workflow_id: str, step: int) -> list[Run]:
        return [r for r in self.runs if r.workflow_id == workflow_id and r.step == step]

    @property
    def by_id(self) -> dict[str, Run]:
        return {r.run_id: r for r in self.runs}

    def summary(self) -> str:
        steps: dict[tuple[str, int], int] = defaultdict(int)
        for run in self.runs:
            steps[run.workflow_id, run.step] += 1
        twice = sum(1 for n in steps.values() if n > 1)
        return (f"{len(self.runs)} step-body runs for {len(steps)} steps ({twice} steps ran "
                f"more than once), {len(self.checkpoints)} checkpoints")


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


async def collect(side_url: str, app_url: str) -> Evidence:
    side = await asyncpg.connect(side_url)
    try:
        runs = [Run(**dict(r)) for r in await side.fetch(
            "select workflow_id, step, executor_id, pid, run_id, started_at from step_runs "
            "order by started_at")]
    finally:
        await side.close()
    app = await asyncpg.connect(app_url)
    try:
        outputs = {r["workflow_id"]: (r["status"], _decode(r["output"])) for r in await app.fetch(
            "select workflow_id, status, output from asyncflow.workflows")}
        checkpoints = []
        for r in await app.fetch("select * from checkpoint_log order by at"):
            value = _decode(r["output"])
            checkpoints.append(Checkpoint(r["workflow_id"], r["function_id"],
                                          value if isinstance(value, str) else None,
                                          r["application_name"], r["at"]))
    finally:
        await app.close()
    return Evidence(runs, outputs, checkpoints)


def completed(ev: Evidence, expected: dict[str, int]) -> list[str]:
    """Every workflow (id -> its step count) ended SUCCESS, its output naming one recorded run
    of each of its steps."""
    problems = []
    runs = ev.by_id
    for wid, steps in expected.items():
        status, output = ev.outputs.get(wid, ("MISSING", None))
        if status != "SUCCESS" or not isinstance(output, list) or len(output) != steps:
            problems.append(f"{wid}: {status} with output {output!r}")
            continue
        for step, run_id in enumerate(output):
            run = runs.get(run_id)
            if run is None or run.workflow_id != wid or run.step != step:
                problems.append(f"{wid} step {step}: output names run {run_id}, not a run of it")
    # The run whose result was checkpointed is the one in the output (one entry per step).
    for cp in ev.checkpoints:
        run = runs.get(cp.run_id) if cp.run_id is not None else None
        output = ev.outputs.get(cp.workflow_id, ("", None))[1]
        if cp.workflow_id not in expected or run is None or not isinstance(output, list):
            continue
        if run.step >= len(output) or output[run.step] != cp.run_id:
            problems.append(f"{cp.workflow_id} step {run.step}: checkpointed run {cp.run_id} "
                            f"({run.executor_id}) is not the one in the output")
    return problems


def exactly_once(ev: Evidence, expected: dict[str, int]) -> list[str]:
    """Every step body ran exactly once."""
    problems = []
    for wid, steps in expected.items():
        for step in range(steps):
            runs = ev.runs_of(wid, step)
            if len(runs) != 1:
                problems.append(f"{wid} step {step} ran {len(runs)} times: " + ", ".join(
                    f"{r.executor_id} (pid {r.pid}) at {r.started_at.time()}" for r in runs))
    return problems


def in_one_process(ev: Evidence, owners: dict[str, str]) -> list[str]:
    """Every step body of a workflow ran in its owner's process (executor id), only there."""
    problems = []
    for run in ev.runs:
        owner = owners.get(run.workflow_id)
        if owner is not None and run.executor_id != owner:
            problems.append(f"{run.workflow_id} step {run.step} ran in {run.executor_id} "
                            f"(pid {run.pid}) while its owner {owner} was alive")
    return problems


def no_run_after_checkpoint(ev: Evidence) -> list[str]:
    """No step body started after that step's checkpoint was written (a second live run)."""
    problems = []
    written = {(c.workflow_id, c.function_id): c for c in ev.checkpoints}
    runs = ev.by_id
    for cp in written.values():
        recorded = runs.get(cp.run_id) if cp.run_id is not None else None
        if recorded is None:
            continue
        for run in ev.runs_of(recorded.workflow_id, recorded.step):
            if run.started_at > cp.at:
                problems.append(
                    f"{run.workflow_id} step {run.step} ran in {run.executor_id} (pid {run.pid})"
                    f" at {run.started_at.time()}, after {recorded.executor_id}'s run was "
                    f"checkpointed at {cp.at.time()} by {cp.application_name!r}")
    return problems


def never_two_go_on(ev: Evidence) -> list[str]:
    """Of the processes that ran one step, at most one went on: its run is the recorded one or
    it ran a later step of the workflow."""
    problems = []
    recorded = {run_id for _, out in ev.outputs.values() if isinstance(out, list)
                for run_id in out}
    recorded |= {c.run_id for c in ev.checkpoints if c.run_id is not None}
    by_workflow: dict[str, list[Run]] = defaultdict(list)
    for run in ev.runs:
        by_workflow[run.workflow_id].append(run)
    for wid, runs in by_workflow.items():
        for step in sorted({r.step for r in runs}):
            here = [r for r in runs if r.step == step]
            went_on = {r.pid for r in here
                       if r.run_id in recorded
                       or any(o.pid == r.pid and o.step > step for o in runs)}
            if len(went_on) > 1:
                problems.append(f"{wid} step {step}: processes {sorted(went_on)} all ran it and "
                                "went on past it")
    return problems
