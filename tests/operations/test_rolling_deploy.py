"""A rolling deploy with real processes: a v1 fleet of two workers runs 200 workflows (100
started, 100 queued) parked at two points; v2 is deployed one process at a time and the v1
processes are SIGKILLed. Every workflow whose history replays cleanly against v2 finishes on v2
with no step run twice; every other one is reported and finishes once a v1 process runs again."""

from __future__ import annotations

import asyncio
from collections import Counter

from clilib import cli_json

import asyncflow

COUNT = 100  # of each kind: started (wf-n) and queued (q-n)
IDS = [f"{kind}-{n}" for kind in ("wf", "q") for n in range(COUNT)]


def _n(workflow_id: str) -> int:
    return int(workflow_id.rsplit("-", 1)[1])


def _compatible(workflow_id: str) -> bool:
    return _n(workflow_id) % 4 != 0


async def _events(client, ids, key):
    await asyncio.gather(*(client.get_event(w, key, timeout_seconds=60) for w in ids))


async def _results(client, ids, within=60):
    handles = [await client.retrieve_workflow(w) for w in ids]
    values = await asyncio.gather(*(h.get_result(timeout_seconds=within) for h in handles))
    return dict(zip(ids, values, strict=True))


async def _worker(procs, db_url, name, version, *role):
    worker = await procs("upgrade_worker.py", db_url, name, version, *role)
    await worker.expect("READY")
    return worker


async def _kill(worker):
    worker.kill()
    await worker.wait()


async def test_rolling_deploy_adopts_compatible_workflows_and_leaves_the_rest(
        db_url, conn, procs):
    await conn.execute("create table effects (workflow_id text, step text, version text)")
    v1 = [await _worker(procs, db_url, "v1-0", "v1", "start", str(COUNT)),
          await _worker(procs, db_url, "v1-1", "v1", "enqueue", str(COUNT))]
    async with asyncflow.Client(db_url) as client:
        # Park the workflows at two points: odd ones past their first message.
        await _events(client, IDS, "at_a")
        odd = [w for w in IDS if _n(w) % 2]
        for wid in odd:
            await client.send(wid, "one", "go1")
        await _events(client, odd, "at_b")
        # Deploy v2 one process at a time; while a v1 process lives, v1's workflows stay v1.
        v2 = [await _worker(procs, db_url, "v2-0", "v2")]
        await _kill(v1[0])
        v2.append(await _worker(procs, db_url, "v2-1", "v2"))
        assert await conn.fetchval("select count(*) from asyncflow.version_changes") == 0
        await _kill(v1[1])  # no v1 process left: v2 adopts what replays cleanly
        for wid in IDS:
            if _n(wid) % 2 == 0:
                await client.send(wid, "one", "go1")
            await client.send(wid, "two", "go2")
        compatible = [w for w in IDS if _compatible(w)]
        finished = await _results(client, compatible)
        assert finished == {w: [_n(w), "one", "two", "v2"] for w in compatible}
        # The others are reported by the v2 processes, and wait for v1.
        line = await _first_of(v2, "asyncflow left ")
        assert "for their own app version" in line and "diverges at operation 1 " \
               "(new vs asyncflow.set_event recorded)" in line
        left = [w for w in IDS if not _compatible(w)]
        rows = await conn.fetch("select workflow_id, app_version, status from asyncflow.workflows "
                                "where workflow_id = any($1::text[])", left)
        assert {r["app_version"] for r in rows} == {"v1"}
        assert {r["status"] for r in rows} <= {"PENDING", "ENQUEUED"}
        view = await cli_json(db_url, "versions", "--stranded", "0")
        assert {r["app_version"]: (r["live_executors"], r["stranded"])
                for r in view["versions"]} == {"v1": (0, len(left)), "v2": (2, 0)}
        # A v1 process again: it finishes them.
        await _worker(procs, db_url, "v1-2", "v1")
        assert await _results(client, left) == {w: [_n(w), "one", "two", "v1"] for w in left}
    effects = await conn.fetch("select workflow_id, step, version from effects")
    runs = Counter((r["workflow_id"], r["step"]) for r in effects)
    assert set(runs) == {(w, s) for w in IDS for s in "abc"}  # v2's new step never ran
    assert max(runs.values()) == 1  # no step ran twice
    version_of = {(r["workflow_id"], r["step"]): r["version"] for r in effects}
    assert all(version_of[w, "c"] == ("v2" if _compatible(w) else "v1") for w in IDS)
    adopted = await conn.fetch("select workflow_id, count(*) as n from asyncflow.version_changes "
                               "group by workflow_id")
    assert {r["workflow_id"] for r in adopted} == set(compatible)
    assert {r["n"] for r in adopted} == {1}


async def _first_of(workers, prefix: str) -> str:
    """The first line starting with ``prefix`` that any of ``workers`` prints (or printed)."""
    for worker in workers:
        for line in worker.lines:
            if line.startswith(prefix):
                return line
    tasks = [asyncio.create_task(worker.expect(prefix)) for worker in workers]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return done.pop().result()
    finally:
        for task in tasks:
            task.cancel()
