"""``python -m benchmarks.citus_model``: the measurements behind docs/scaling.md's Citus model.

Starts a private Citus cluster on this machine (a coordinator and two workers, the harness of
tests/citus_cluster.py: Debian's PostgreSQL 15 with Citus from ``../shared/citus/build.sh``) and
runs the same workload twice -- on a database whose schema stays on the coordinator, and on one
distributed by workflow id (``asyncflow db distribute``) -- reporting per workflow operation:

- client statements (transactions committed on the coordinator, less the idle baseline);
- the transactions each worker ran, and the two-phase commits (``pg_dist_transaction``);
- each node's CPU (its postmaster's own and reaped children's time plus its live backends');
- the throughput of one app process.

The workload: ``--workflows`` workflows of ``--steps`` steps each, started from one app with
``--concurrency`` running at once. All nodes share this machine's cores, so the throughput is
not a scaling result; the per-operation costs are what the model in docs/scaling.md uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from citus_cluster import CitusCluster, citus_missing

import asyncflow
from asyncflow._storage.citus import distribute
from asyncflow._storage.database import Storage

from . import loop

TICK = os.sysconf("SC_CLK_TCK")


def node_cpu(data: Path) -> float:
    """CPU seconds a node has used: its postmaster's, its reaped children's and its live
    children's."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        if pid == postmaster:
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / TICK


async def counters(cluster: CitusCluster, database: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for i, node in enumerate(cluster.nodes):
        name = "coordinator" if i == 0 else f"worker{i}"
        conn = await asyncpg.connect(node.url(database))
        try:
            found[f"{name}_xacts"] = float(await conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
            if i == 0:
                found["two_phase"] = float(await conn.fetchval(
                    "SELECT count(*) FROM pg_dist_transaction"))
        finally:
            await conn.close()
        found[f"{name}_cpu"] = node_cpu(node.data)
    return found


@dataclass
class Result:
    layout: str
    workflows: int
    steps: int
    seconds: float
    workflows_per_second: float
    operations_per_second: float
    per_operation: dict[str, float]


async def workload(url: str, workflows: int, steps: int, concurrency: int) -> float:
    app = asyncflow.AsyncFlow(url, recovery_interval_seconds=1)

    @app.step()
    async def step(i: int) -> int:
        return i + 1

    @app.workflow()
    async def flow(n: int) -> int:
        total = 0
        for i in range(n):
            total += await step(i)
        return total

    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            handle = await app.start_workflow(flow, steps, workflow_id=f"w{i}")
            await handle.get_result(timeout_seconds=300)

    async with app:
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(workflows)))
        return time.perf_counter() - started


async def measure(cluster: CitusCluster, layout: str, args: argparse.Namespace) -> Result:
    database = f"bench_{layout}"
    await cluster.create_database(database)
    storage = Storage(cluster.url(database), "asyncflow", pool_size=2)
    await storage.open()
    try:
        await storage.migrate()
        if layout == "distributed":
            await distribute(storage, shard_count=args.shards)
    finally:
        await storage.close()
    await workload(cluster.url(database), 20, args.steps, args.concurrency)  # warm up
    before = await counters(cluster, database)
    seconds = await workload(cluster.url(database), args.workflows, args.steps,
                             args.concurrency)
    after = await counters(cluster, database)
    # One operation: a workflow start, each step, and its finish.
    operations = args.workflows * (args.steps + 2)
    per = {key: round((after[key] - before[key]) / operations, 6) for key in after}
    return Result(layout, args.workflows, args.steps, round(seconds, 3),
                  round(args.workflows / seconds, 1), round(operations / seconds, 1), per)


async def main(args: argparse.Namespace) -> None:
    reason = citus_missing()
    if reason is not None:
        raise SystemExit(reason)
    cluster = CitusCluster()
    try:
        results = [await measure(cluster, layout, args)
                   for layout in ("coordinator", "distributed")]
    finally:
        cluster.close()
    print(json.dumps([asdict(r) for r in results], indent=2))


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="python -m benchmarks.citus_model",
                                     description=__doc__.split("\n\n")[0])
    result.add_argument("--workflows", type=int, default=400)
    result.add_argument("--steps", type=int, default=3)
    result.add_argument("--concurrency", type=int, default=50)
    result.add_argument("--shards", type=int, default=32)
    return result


if __name__ == "__main__":
    loop.run(main(parser().parse_args()))
