"""Workflow timeouts: a durable deadline, enforced by whichever live app notices it first (one
guarded UPDATE: exactly one wins), across restarts, down the tree of children, for queued
workflows from their dispatch, and by the test clock."""

from __future__ import annotations

import asyncio
import math

import pytest

import asyncflow
from asyncflow import testing

WAIT = 3600.0


def _register(app: asyncflow.AsyncFlow) -> dict[str, object]:
    @app.workflow(name="child")
    async def child() -> str:
        return str(await asyncflow.recv("go", timeout_seconds=WAIT))

    @app.workflow(name="parent")
    async def parent() -> str:
        handle = await app.start_workflow(child)
        await asyncflow.set_event("child", handle.workflow_id)
        return str(await handle.get_result())

    @app.workflow(name="waits")
    async def waits() -> str:
        return str(await asyncflow.recv("go", timeout_seconds=WAIT))

    @app.workflow(name="quick", timeout_seconds=WAIT)
    async def quick(x: int) -> int:
        return x + 1

    return {"child": child, "parent": parent, "waits": waits, "quick": quick}


async def test_a_workflow_past_its_deadline_is_cancelled_and_get_result_says_so(make_app):
    app = make_app()
    fns = _register(app)
    async with app:
        handle = await app.start_workflow(fns["waits"], timeout_seconds=0.3)
        with pytest.raises(asyncflow.WorkflowTimeoutError) as caught:
            await handle.get_result(timeout_seconds=30)
        assert isinstance(caught.value, asyncflow.WorkflowCancelledError)
        assert handle.workflow_id in str(caught.value)
        status = await handle.get_status()
        assert status.status == asyncflow.CANCELLED
        assert status.timeout_seconds == 0.3
        assert status.deadline is not None
        assert status.error is not None and "WorkflowTimeoutError" in status.error
        # A workflow that finishes in time keeps its result; the deadline never fires.
        assert await app.start_workflow(fns["quick"], 1) is not None
        done = await app.start_workflow(fns["quick"], 2, timeout_seconds=30)
        assert await done.get_result() == 3


async def test_children_are_cancelled_with_a_timed_out_parent(make_app):
    app = make_app()
    fns = _register(app)
    async with app:
        parent = await app.start_workflow(fns["parent"], timeout_seconds=0.5)
        child_id = await app.get_event(parent.workflow_id, "child", timeout_seconds=30)
        assert child_id is not None
        with pytest.raises(asyncflow.WorkflowTimeoutError):
            await parent.get_result(timeout_seconds=30)
        child = await app.retrieve_workflow(child_id)
        with pytest.raises(asyncflow.WorkflowCancelledError) as caught:
            await child.get_result(timeout_seconds=30)
        assert not isinstance(caught.value, asyncflow.WorkflowTimeoutError)  # its parent's
        assert (await child.get_status()).status == asyncflow.CANCELLED


async def test_the_deadline_is_enforced_after_the_starting_process_died(db_url, procs,
                                                                         make_app):
    worker = await procs("timeout_worker.py", db_url, "doomed", "timed-1", "1.5")
    child_line = await worker.expect("CHILD")  # the parent runs: its row and deadline exist
    worker.kill()
    await worker.wait()
    child_id = child_line.split()[1]
    # Another process (a fresh launch: the relaunch of the deployment) enforces the deadline,
    # whether or not it runs the workflow: this one does not even register it.
    async with make_app(app_version="other") as app:
        handle = await app.retrieve_workflow("timed-1")
        with pytest.raises(asyncflow.WorkflowTimeoutError):
            await handle.get_result(timeout_seconds=60)
        child = await app.retrieve_workflow(child_id)
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await child.get_result(timeout_seconds=30)


async def test_a_deadline_survives_a_restart_of_the_app(make_app):
    first = make_app(executor_id="same", app_version="v1")
    fns = _register(first)
    async with first:
        handle = await first.start_workflow(fns["waits"], workflow_id="restarted",
                                            timeout_seconds=1.0)
        await testing.until_waiting(first, handle)
    assert (await _status_of(make_app, "restarted")).status == asyncflow.PENDING
    second = make_app(executor_id="same", app_version="v1")
    _register(second)
    async with second:
        handle = await second.retrieve_workflow("restarted")
        with pytest.raises(asyncflow.WorkflowTimeoutError):
            await handle.get_result(timeout_seconds=30)


async def _status_of(make_app, workflow_id: str) -> asyncflow.WorkflowStatus:
    async with asyncflow.Client(make_app()._database_url) as client:
        return await client.get_workflow_status(workflow_id)


async def test_exactly_one_enforcer_cancels_each_workflow(make_app):
    apps = [make_app() for _ in range(3)]
    fns = [_register(app) for app in apps]
    async with apps[0], apps[1], apps[2]:
        handles = [await apps[0].start_workflow(fns[0]["waits"], timeout_seconds=0.5)
                   for _ in range(20)]
        for handle in handles:
            with pytest.raises(asyncflow.WorkflowTimeoutError):
                await handle.get_result(timeout_seconds=30)
        watchers = [app._deadlines for app in apps if app._deadlines is not None]
    # Counted once the apps stopped: a waiter can be woken (by the NOTIFY, on another app's
    # listener) before the enforcing app has read its statement's reply.
    assert len(watchers) == 3
    assert sum(watcher.enforced for watcher in watchers) == 20


async def test_a_queued_workflow_s_clock_starts_at_dispatch(make_app, db_url):
    app = make_app()
    fns = _register(app)
    single = app.queue("single", concurrency=1)
    async with app:
        first = await single.enqueue(fns["waits"], timeout_seconds=1.0)
        second = await single.enqueue(fns["waits"], timeout_seconds=1.0)
        assert (await second.get_status()).deadline is None  # waiting: no clock yet
        with pytest.raises(asyncflow.WorkflowTimeoutError):
            await first.get_result(timeout_seconds=30)
        with pytest.raises(asyncflow.WorkflowTimeoutError):
            await second.get_result(timeout_seconds=30)
        status = await second.get_status()
        assert status.dispatched_at is not None and status.deadline is not None
        # Its deadline is a second after its dispatch (which came after the first timed out).
        first_end = (await first.get_status()).completed_at
        assert status.dispatched_at >= first_end
        gap = (status.deadline - status.dispatched_at).total_seconds()
        assert math.isclose(gap, 1.0, abs_tol=0.5)
        # Enqueued by name from a Client: the function's default timeout applies at dispatch.
        async with asyncflow.Client(db_url) as client:
            byname = await client.enqueue("single", "quick", 5)
            assert await byname.get_result(timeout_seconds=30) == 6
        assert (await app.get_workflow_status(byname.workflow_id)).timeout_seconds == WAIT


async def test_the_test_clock_moves_deadlines(make_app):
    app = make_app()

    @app.workflow(name="waits_a_week")
    async def waits_a_week() -> str:  # its own wait outlasts the two-day deadline
        return str(await asyncflow.recv("go", timeout_seconds=7 * 86400))

    async with app:
        handle = await app.start_workflow(waits_a_week, timeout_seconds=2 * 86400)
        await testing.skip_timers(app, days=1, once_waiting=handle)
        assert (await handle.get_status()).status == asyncflow.PENDING
        await testing.skip_timers(app, days=1)
        with pytest.raises(asyncflow.WorkflowTimeoutError):
            await handle.get_result(timeout_seconds=30)


async def test_resume_runs_a_timed_out_workflow_again_without_a_deadline(make_app):
    app = make_app()
    fns = _register(app)
    async with app:
        handle = await app.start_workflow(fns["waits"], timeout_seconds=0.3)
        with pytest.raises(asyncflow.WorkflowTimeoutError):
            await handle.get_result(timeout_seconds=30)
        await app.resume_workflow(handle.workflow_id)
        status = await handle.get_status()
        assert status.deadline is None and status.timeout_seconds is None
        await app.send(handle.workflow_id, "late", "go")
        assert await handle.get_result(timeout_seconds=30) == "late"


@pytest.mark.parametrize("bad", [0, -1, math.nan, "5", True])
async def test_bad_timeouts_fail_at_the_call(make_app, bad):
    app = make_app()
    fns = _register(app)
    with pytest.raises(asyncflow.InvalidSettingError):
        app.workflow(name="x", timeout_seconds=bad)
    queue = app.queue("q")
    async with app:
        with pytest.raises(asyncflow.InvalidArgumentError):
            app.start_workflow(fns["waits"], timeout_seconds=bad)
        with pytest.raises(asyncflow.InvalidArgumentError):
            queue.enqueue(fns["waits"], timeout_seconds=bad)
        assert await app.list_workflows() == []
        await asyncio.sleep(0)
