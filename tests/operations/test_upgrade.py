"""Deploying new code: workflows of a version no live process runs are adopted by another
version when their history replays cleanly against its code (``upgrade="replay"``), left for
their own version otherwise, exactly once across processes."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter

import pytest
from clilib import cli, cli_json

import asyncflow
from asyncflow.testing import step_runs, until_waiting

#: Each test app's ``job`` workflow (as decorated).
JOBS: dict[int, object] = {}


def _register(app, version: str, ran: Counter[str], variant: str) -> None:
    """The workflow ``job`` (and its steps) of one version on ``app``; ``ran`` counts step
    bodies. ``variant``: ``"same"`` path as v1, ``"divergent"`` (sleeps where v1 receives) or
    ``"touches_database"`` (reads the database from its body: it cannot be replayed)."""

    @app.step(name="prepare")
    async def prepare(n: int) -> int:
        ran[f"prepare {asyncflow.workflow_id()}"] += 1
        return n * 10

    @app.step(name="finish")
    async def finish(n: int) -> str:
        ran[f"finish {asyncflow.workflow_id()}"] += 1
        return version

    if variant == "divergent":
        @app.workflow(name="job")
        async def job(n: int) -> list:
            value = await prepare(n)
            await asyncflow.set_event("ready", True)
            await asyncflow.sleep(0.01)
            return [value, await finish(n)]
    elif variant == "touches_database":
        @app.workflow(name="job")
        async def job(n: int) -> list:
            value = await prepare(n)
            await app.get_workflow_status(asyncflow.workflow_id())
            await asyncflow.set_event("ready", True)
            return [value, await asyncflow.recv("go", 60), await finish(n)]
    else:
        @app.workflow(name="job")
        async def job(n: int) -> list:
            value = await prepare(n)
            await asyncflow.set_event("ready", True)
            message = await asyncflow.recv("go", 60)
            return [value, message, await finish(n)]
    JOBS[id(app)] = job


def _apps(make_app, *, divergent: bool = False, touches_database: bool = False,
          upgrade: str = "replay", executor: str = "new", queue: bool = False):
    """A v1 app (executor ``old``) and a v2 app with a workflow ``job`` of the same name, the
    step bodies both ran, and their queues ``jobs`` (with ``queue``)."""
    ran: Counter[str] = Counter()
    v1 = make_app(app_version="v1", executor_id="old")
    v2 = make_app(app_version="v2", executor_id=executor, upgrade=upgrade)
    variant = ("divergent" if divergent else "touches_database" if touches_database
               else "same")
    _register(v1, "v1", ran, "same")
    _register(v2, "v2", ran, variant)
    queues = {"v1": v1.queue("jobs"), "v2": v2.queue("jobs")} if queue else {}
    return v1, v2, ran, queues


async def _park(v1, ids, queue=None):
    """Start (or enqueue) workflows on v1 and return once each waits in its recv (journaled)."""
    job = JOBS[id(v1)]
    step_runs(v1)  # attaches the test kit, which tells when a workflow parks
    for wid in ids:
        n = int(wid.rsplit("-", 1)[-1])
        if queue is None:
            await v1.start_workflow(job, n, workflow_id=wid)
        else:
            await queue.enqueue(job, n, workflow_id=wid)
    for wid in ids:
        await until_waiting(v1, wid, timeout_seconds=30)


async def test_upgrade_setting_is_checked(make_app):
    for bad in ("sometimes", "", None, 1, "REPLAY"):
        with pytest.raises(asyncflow.InvalidSettingError, match="upgrade must be"):
            make_app(upgrade=bad)
    assert make_app().upgrade == "replay"
    assert make_app(upgrade="never").upgrade == "never"


async def _versions(conn, ids):
    rows = await conn.fetch("select workflow_id, app_version, status, epoch, executor_id "
                            "from asyncflow.workflows where workflow_id = any($1::text[])", ids)
    return {r["workflow_id"]: r for r in rows}


async def test_a_compatible_workflow_is_adopted_replayed_and_finished_once(
        make_app, conn, caplog):
    v1, v2, ran, _ = _apps(make_app)
    ids = ["wf-1", "wf-2"]
    async with v1:
        await _park(v1, ids)
    before = await _versions(conn, ids)
    caplog.set_level(logging.WARNING, logger="asyncflow")
    async with v2:  # the launch's sweep adopts them (their version has no live process)
        after = await _versions(conn, ids)
        for wid in ids:
            assert after[wid]["app_version"] == "v2"
            assert after[wid]["executor_id"] == "new"
            assert after[wid]["epoch"] == before[wid]["epoch"] + 1
            await v2.send(wid, "go!", "go")
        results = [await (await v2.retrieve_workflow(w)).get_result(timeout_seconds=30)
                   for w in ids]
        assert v2.health().components["adoption"].detail is None
    assert results == [[10, "go!", "v2"], [20, "go!", "v2"]]
    assert set(ran.values()) == {1} and len(ran) == 4  # each step body ran exactly once
    changes = await conn.fetch("select workflow_id, from_version, to_version, executor_id, "
                               "replayed from asyncflow.version_changes order by workflow_id")
    # The adoption is journaled: the 3 recorded operations were replayed (the step, the event
    # and the recv, still open).
    assert [tuple(r) for r in changes] == [(w, "v1", "v2", "new", 3) for w in ids]
    assert any("adopted 2 workflows" in r.getMessage() for r in caplog.records)


async def test_a_divergent_workflow_is_left_for_its_version_and_explained(
        make_app, conn, caplog):
    v1, v2, ran, _ = _apps(make_app, divergent=True)
    async with v1:
        await _park(v1, ["wf-1"])
    caplog.set_level(logging.WARNING, logger="asyncflow")
    async with v2:
        row = (await _versions(conn, ["wf-1"]))["wf-1"]
        assert (row["app_version"], row["executor_id"]) == ("v1", "old")
        detail = v2.health().components["adoption"].detail
        assert v2.health().healthy  # a workflow left for its version is reported, not a fault
    assert detail is not None and detail.startswith("1 workflow(s) left for their own app")
    # The divergence point: operation 2 is a sleep in the new code, a recv in the history.
    assert "wf-1 left for version v1: diverges at operation 2 (asyncflow.sleep vs " \
           "asyncflow.recv recorded)" in detail
    warnings = [r.getMessage() for r in caplog.records if "left 1 workflow" in r.getMessage()]
    assert len(warnings) == 1 and "diverges at operation 2" in warnings[0]
    assert await conn.fetchval("select count(*) from asyncflow.version_changes") == 0
    # Its own version finishes it once a process of it runs again.
    async with v1:
        await v1.send("wf-1", "late", "go")
        result = await (await v1.retrieve_workflow("wf-1")).get_result(timeout_seconds=30)
    assert result == [10, "late", "v1"]
    assert ran == Counter({"prepare wf-1": 1, "finish wf-1": 1})


async def test_a_replay_that_cannot_run_never_adopts(make_app, conn):
    v1, v2, _ran, _ = _apps(make_app, touches_database=True)
    async with v1:
        await _park(v1, ["wf-1"])
    async with v2:
        detail = v2.health().components["adoption"].detail
    assert detail is not None
    assert "wf-1 left for version v1: cannot be replayed (failed)" in detail
    assert "used an app's or client's connection while being replayed" in detail
    assert (await _versions(conn, ["wf-1"]))["wf-1"]["app_version"] == "v1"


async def test_never_adopts_nothing_and_always_adopts_without_replay(make_app, conn):
    v1, v2, _ran, _ = _apps(make_app, divergent=True, upgrade="never")
    async with v1:
        await _park(v1, ["wf-1"])
    async with v2:
        assert "adoption" not in v2.health().components
        assert (await _versions(conn, ["wf-1"]))["wf-1"]["app_version"] == "v1"
    _v1, v3, _ran, _ = _apps(make_app, upgrade="always", executor="newer")
    async with v3:
        assert (await _versions(conn, ["wf-1"]))["wf-1"]["app_version"] == "v2"
        await v3.send("wf-1", "go!", "go")
        result = await (await v3.retrieve_workflow("wf-1")).get_result(timeout_seconds=30)
    assert result == [10, "go!", "v2"]
    replayed = await conn.fetchval("select replayed from asyncflow.version_changes")
    assert replayed is None  # adopted without replay


async def test_nothing_is_adopted_while_a_process_of_its_version_lives(make_app, conn):
    v1, v2, ran, _ = _apps(make_app)
    v2_up, v1_gone = asyncio.Event(), asyncio.Event()

    async def run_v2() -> list:
        async with v2:
            v2_up.set()
            await v1_gone.wait()  # v1's lease ended at its shutdown: v2's next sweep adopts
            await v2.send("wf-1", "go!", "go")
            return await (await v2.retrieve_workflow("wf-1")).get_result(timeout_seconds=30)

    async with v1:
        await _park(v1, ["wf-1"])
        task = asyncio.create_task(run_v2())
        await v2_up.wait()
        # v2's launch sweep ran while v1 lives: the workflow stays with v1.
        assert (await _versions(conn, ["wf-1"]))["wf-1"]["app_version"] == "v1"
    v1_gone.set()
    assert await task == [10, "go!", "v2"]
    assert ran == Counter({"prepare wf-1": 1, "finish wf-1": 1})


async def test_two_new_processes_never_both_adopt_one_workflow(make_app, conn, db_url):
    v1, v2, ran, _ = _apps(make_app)
    ids = [f"wf-{n}" for n in range(40)]
    async with v1:
        await _park(v1, ids)
    _v1, v2b, ran_b, _ = _apps(make_app, executor="new-b")
    done = asyncio.Event()

    async def run(app) -> None:
        async with app:  # both launch at once: their launch sweeps compete
            await done.wait()

    tasks = [asyncio.create_task(run(app)) for app in (v2, v2b)]
    async with asyncflow.Client(db_url) as client:
        for wid in ids:
            await client.send(wid, "go!", "go")
        for wid in ids:
            await (await client.retrieve_workflow(wid)).get_result(timeout_seconds=30)
    done.set()
    await asyncio.gather(*tasks)
    counts = await conn.fetch("select workflow_id, count(*) as n from asyncflow.version_changes "
                              "group by workflow_id")
    assert len(counts) == len(ids) and {r["n"] for r in counts} == {1}
    # Each step body ran once: ``prepare`` on v1, ``finish`` on whichever adopted it.
    assert ran + ran_b == Counter({f"{step} {w}": 1 for w in ids
                                   for step in ("prepare", "finish")})
    by = await conn.fetch("select executor_id, count(*) from asyncflow.version_changes "
                          "group by executor_id")
    assert sum(r["count"] for r in by) == len(ids)


async def test_a_queued_workflow_of_a_gone_version_is_adopted_in_its_queue(make_app, conn):
    v1, v2, ran, queues = _apps(make_app, queue=True)
    async with v1:
        await _park(v1, ["wf-1"], queues["v1"])
    async with v2:  # requeued (its executor is gone), adopted, dispatched on v2
        await v2.send("wf-1", "go!", "go")
        result = await (await v2.retrieve_workflow("wf-1")).get_result(timeout_seconds=30)
    assert result == [10, "go!", "v2"]
    assert ran == Counter({"prepare wf-1": 1, "finish wf-1": 1})
    row = await conn.fetchrow("select from_version, to_version, executor_id "
                              "from asyncflow.version_changes")
    assert tuple(row) == ("v1", "v2", "new")


async def test_versions_view_lists_live_executors_counts_and_stranded_workflows(
        make_app, db_url):
    v1, v2, _ran, queues = _apps(make_app, divergent=True, queue=True)
    async with v1:
        await _park(v1, ["wf-1", "wf-2"])
        await _park(v1, ["q-3"], queues["v1"])
        view = await cli_json(db_url, "versions")
        assert view["versions"] == [{"app_version": "v1", "live_executors": 1, "pending": 3,
                                     "enqueued": 0, "delayed": 0, "stranded": 0}]
        assert view["stranded"] == []
    async with v2:  # none replays against v2: all three stay stranded on v1
        code, out, err = await cli(db_url, "versions")
        view = await cli_json(db_url, "versions", "--stranded", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["VERSION", "LIVE", "EXECUTORS", "PENDING", "ENQUEUED",
                                "DELAYED", "STRANDED"]
    assert lines[1].split() == ["v2", "1", "0", "0", "0", "0"]
    assert lines[2].split() == ["v1", "0", "2", "1", "0", "3"]
    assert "3 workflow(s) stranded: no live executor runs their version" in out
    assert [s["workflow_id"] for s in view["stranded"]] == ["wf-1", "wf-2"]
    assert view["stranded"][0] == {"workflow_id": "wf-1", "name": "job", "status": "PENDING",
                                   "app_version": "v1"}


async def test_dashboard_shows_the_version_a_workflow_waits_for_and_its_adoption(make_app):
    from dashlib import client_for

    from asyncflow._dashboard import dashboard

    v1, v2, _ran, _ = _apps(make_app, divergent=True)
    async with v1:
        await _park(v1, ["wf-1"])
        async with client_for(dashboard(v1)) as http:
            page = (await http.get("/workflow", params={"id": "wf-1"})).text
        assert "App version</dt><dd>v1</dd>" in page  # its version runs: nothing to say
    async with v2, client_for(dashboard(v2)) as http:
        page = (await http.get("/workflow", params={"id": "wf-1"})).text
    assert 'App version</dt><dd>v1 <span class="stranded" data-stranded="yes">waiting for an ' \
           "executor of this version: none is live" in page
    _v1, v3, _ran, _ = _apps(make_app, executor="newer")  # replays cleanly: adopted
    async with v3, client_for(dashboard(v3)) as http:
        page = (await http.get("/workflow", params={"id": "wf-1"})).text
    assert "App version</dt><dd>v2</dd>" in page and 'data-stranded' not in page
    assert re.search(r'Adopted</dt><dd><span data-adopted="v2">from version v1 to v2 by '
                     r"executor newer, after replaying 3 operations, ", page), page


async def test_a_live_process_of_an_unknown_version_blocks_every_adoption(make_app, conn,
                                                                          db_url):
    """A live executor that recorded no version (a process of a release before versions were
    recorded) may run any version: nothing is adopted on a guess while it lives."""
    v1, v2, _ran, _ = _apps(make_app)
    async with v1:
        await _park(v1, ["wf-1"])
    await conn.execute("insert into asyncflow.executors (executor_id, instance, beat_at, "
                       "lease_seconds) values ('older', 'i', clock_timestamp(), 600)")
    async with v2:
        assert (await _versions(conn, ["wf-1"]))["wf-1"]["app_version"] == "v1"
        view = await cli_json(db_url, "versions")
        assert view["live_executors_of_unknown_version"] == 1
        assert view["stranded"] == []
        await conn.execute("update asyncflow.executors set beat_at = '-infinity' "
                           "where executor_id = 'older'")  # that process is gone now
        await v2.send("wf-1", "go!", "go")
        result = await (await v2.retrieve_workflow("wf-1")).get_result(timeout_seconds=30)
    assert result == [10, "go!", "v2"]
