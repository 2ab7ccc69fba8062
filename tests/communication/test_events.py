"""Events: latest value per key, waiting until set, checkpointed reads inside workflows."""

from __future__ import annotations

import asyncio
import time

import pytest

import asyncflow


async def test_latest_value_wins_and_all_events(make_app):
    app = make_app()

    @app.step()
    async def from_step():
        await asyncflow.set_event("step", {"in": "step"})

    @app.workflow()
    async def wf():
        await asyncflow.set_event("progress", 0)
        await asyncflow.set_event("progress", 50)
        await app.set_event("progress", 100)
        await from_step()
        return await asyncflow.recv(timeout_seconds=10)

    async with app:
        h = await app.start_workflow(wf, workflow_id="ev")
        assert await app.get_event("ev", "step", timeout_seconds=10) == {"in": "step"}
        assert await app.get_event("ev", "progress", timeout_seconds=1) == 100
        assert await app.get_all_events("ev") == {"progress": 100, "step": {"in": "step"}}
        await app.send("ev", "done")
        await h.get_result()


async def test_get_event_waits_until_set_and_times_out(make_app):
    app = make_app()

    @app.workflow()
    async def wf():
        await asyncflow.recv("go", timeout_seconds=10)
        await asyncflow.set_event("ready", True)

    async with app:
        h = await app.start_workflow(wf, workflow_id="w")
        t0 = time.monotonic()
        assert await app.get_event("w", "ready", timeout_seconds=0.3) is None
        assert 0.28 <= time.monotonic() - t0 < 1.5
        waiter = asyncio.ensure_future(app.get_event("w", "ready", timeout_seconds=10))
        await app._waits.wait_for_count(2)  # the workflow's recv + our get_event
        assert not waiter.done()
        await app.send("w", "now", "go")
        assert await waiter is True
        await h.get_result()


async def test_get_event_inside_workflow_is_checkpointed(make_app, conn):
    app = make_app()

    @app.workflow()
    async def publisher():
        await asyncflow.set_event("config", "v1")
        await asyncflow.recv(timeout_seconds=10)
        await asyncflow.set_event("config", "v2")

    @app.workflow()
    async def reader():
        value = await asyncflow.get_event("pub", "config", timeout_seconds=10)
        missing = await asyncflow.get_event("pub", "never", timeout_seconds=0.1)
        return [value, missing]

    async with app:
        pub = await app.start_workflow(publisher, workflow_id="pub")
        assert await app.get_event("pub", "config") == "v1"
        assert await (await app.start_workflow(reader, workflow_id="rd")).get_result() == [
            "v1", None]
        await app.send("pub", "next")
        await pub.get_result()
        assert await app.get_event("pub", "config") == "v2"
        # Re-execute the reader: it replays the recorded "v1", not the current "v2".
        await conn.execute("update asyncflow.workflows set status='PENDING', output=null, "
                           "executor_id=null where workflow_id='rd'")
        app._supervisor.poke()
        again = await (await app.retrieve_workflow("rd")).get_result(timeout_seconds=10)
        assert again == ["v1", None]


async def test_event_errors(make_app, conn):
    app = make_app()

    @app.workflow()
    async def wf():
        await asyncflow.set_event("k", "v")

    async with app:
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await app.get_event("nope", "k", timeout_seconds=1)
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await app.get_all_events("nope")
        with pytest.raises(asyncflow.NotInWorkflowError):
            await asyncflow.set_event("k", "v")
        for bad in [float("nan"), -1, "soon"]:
            with pytest.raises(asyncflow.InvalidArgumentError):
                await app.get_event("nope", "k", timeout_seconds=bad)
        await wf()
        assert await conn.fetchval("select count(*) from asyncflow.events") == 1


async def test_cancel_wakes_workflow_parked_in_get_event(make_app):
    app = make_app()

    @app.workflow()
    async def target():
        await asyncflow.recv(timeout_seconds=3600)

    @app.workflow()
    async def waiter():
        return await asyncflow.get_event("t", "never", timeout_seconds=3600)

    async with app:
        await app.start_workflow(target, workflow_id="t")
        h = await app.start_workflow(waiter, workflow_id="w")
        await app._waits.wait_for_count(2)
        t0 = time.monotonic()
        await app.cancel_workflow("w")
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await h.get_result(timeout_seconds=5)
        assert time.monotonic() - t0 < 2
        await app.cancel_workflow("t")
