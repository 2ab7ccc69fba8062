"""The Client, from another process and in-process."""

from __future__ import annotations

import asyncio

import orjson
import pytest

import asyncflow


async def test_client_in_a_separate_process(make_app, db_url, procs):
    app = make_app()

    @app.workflow()
    async def worker():
        await asyncflow.set_event("ready", {"hello": "client"})
        job = await asyncflow.recv("work", timeout_seconds=30)
        for i in range(job["n"]):
            await asyncflow.write_stream("out", i * i)
        await asyncflow.close_stream("out")
        await asyncflow.set_event("done", True)
        return {"squares": job["n"]}

    async with app:
        await app.start_workflow(worker, workflow_id="job-1")
        proc = await procs("client_proc.py", db_url, "job-1")
        assert (await proc.expect("STATUS")).split()[1] in {"PENDING", "SUCCESS"}
        assert orjson.loads((await proc.expect("READY")).split(" ", 1)[1]) == {"hello": "client"}
        assert orjson.loads((await proc.expect("STREAM")).split(" ", 1)[1]) == [0, 1, 4]
        events = orjson.loads((await proc.expect("EVENTS")).split(" ", 1)[1])
        assert events["ready"] == {"hello": "client"}
        assert orjson.loads((await proc.expect("RESULT")).split(" ", 1)[1]) == {"squares": 3}
        assert orjson.loads((await proc.expect("LISTED")).split(" ", 1)[1]) == ["job-1"]
        assert await proc.wait() == 0


async def test_client_never_migrates(empty_db_url):
    with pytest.raises(asyncflow.SchemaVersionError, match="does not exist"):
        async with asyncflow.Client(empty_db_url):
            pass


async def test_newer_schema_version_is_refused(db_url, conn):
    await conn.execute("insert into asyncflow.schema_version (version) values (999)")
    with pytest.raises(asyncflow.SchemaVersionError, match="upgrade asyncflow"):
        async with asyncflow.AsyncFlow(db_url):
            pass
    with pytest.raises(asyncflow.SchemaVersionError):
        async with asyncflow.Client(db_url):
            pass


async def test_concurrent_launches_migrate_once(empty_db_url):
    apps = [asyncflow.AsyncFlow(empty_db_url) for _ in range(4)]
    await asyncio.gather(*(_launch_and_stop(app) for app in apps))
    async with asyncflow.Client(empty_db_url) as client:
        assert await client.list_workflows() == []


async def _launch_and_stop(app):
    async with app:
        return app.executor_id


async def test_client_cancel_resume_and_steps(make_app, db_url):
    app = make_app()

    @app.step()
    async def one():
        return 1

    @app.workflow()
    async def wf():
        await one()
        await asyncflow.recv(timeout_seconds=3600)
        return "end"

    async with app:
        h = await app.start_workflow(wf, workflow_id="cw")
        await app._waits.wait_for_count(1)
        async with asyncflow.Client(db_url) as client:
            steps = await client.list_workflow_steps("cw")
            assert [(s.name, s.output, s.completed) for s in steps] == [
                (one.__qualname__, 1, True), ("asyncflow.recv", None, False)]
            await client.cancel_workflow("cw")
            with pytest.raises(asyncflow.WorkflowCancelledError):
                await h.get_result(timeout_seconds=10)
            with pytest.raises(asyncflow.WorkflowNotFoundError):
                await client.cancel_workflow("nope")
            await client.resume_workflow("cw")
            await client.send("cw", "x")
            assert await h.get_result(timeout_seconds=10) == "end"


async def test_a_workflow_started_by_name_from_a_client_runs_on_an_app_that_has_it(
        make_app, db_url):
    app = make_app(app_version="v-app")

    @app.workflow(name="double")
    async def double(x: int) -> int:
        return 2 * x

    async with asyncflow.Client(db_url) as client:
        # No app runs yet: it waits unassigned, of no version, for one that registers the name.
        handle = await client.start_workflow("double", 21, workflow_id="by-name")
        status = await handle.get_status()
        assert (status.status, status.executor_id, status.app_version) == ("PENDING", None, "")
        again = await client.start_workflow("double", 99, workflow_id="by-name")
        assert again.workflow_id == "by-name"  # the same workflow: never started twice
        with pytest.raises(asyncflow.WorkflowConflictError, match="'double'"):
            await client.start_workflow("triple", workflow_id="by-name")
        with pytest.raises(asyncflow.InvalidArgumentError):
            await client.start_workflow("double", workflow_id="bad\x00id")
        async with app:  # its launch claims it and stamps its version
            assert await handle.get_result(timeout_seconds=30) == 42
        status = await handle.get_status()
        assert (status.app_version, status.executor_id) == ("v-app", app.executor_id)
