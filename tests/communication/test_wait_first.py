"""Durable wait-for-any: each branch winning, replay after SIGKILL, cancellation, outside use."""

from __future__ import annotations

import asyncio

import pytest

import asyncflow


async def test_each_branch_can_win_and_losing_messages_stay(make_app):
    app = make_app()

    @app.workflow()
    async def target() -> str:
        await asyncflow.set_event("ready", "yes")
        return "done"

    @app.workflow()
    async def chooser(mode: str) -> list:
        if mode == "event":
            await asyncflow.recv("start", timeout_seconds=30)
            # The message is already waiting, but the event branch is listed first: it wins,
            # and the message stays in the mailbox.
            fired = await asyncflow.wait_first(
                asyncflow.event("t1", "ready"), asyncflow.message("m"), asyncflow.timer(30))
        elif mode == "result":
            child = await asyncflow.start_workflow(target, workflow_id="t2")
            fired = await asyncflow.wait_first(
                asyncflow.message("m"), asyncflow.result(child), asyncflow.timer(30))
        elif mode == "timer":
            fired = await asyncflow.wait_first(asyncflow.message("m"), asyncflow.timer(0.05))
        else:
            fired = await asyncflow.wait_first(asyncflow.timer(30), asyncflow.message("m"))
        # The message not taken (if any) is still in the mailbox afterwards.
        leftover = await asyncflow.recv("m", timeout_seconds=0)
        return [fired.index, fired.branch.kind, fired.value, leftover]

    async with app:
        await (await app.start_workflow(target, workflow_id="t1")).get_result(30)
        await app.start_workflow(chooser, "event", workflow_id="c-event")
        await app.send("c-event", "kept", topic="m")
        await app.send("c-event", "go", topic="start")
        handles = {mode: await app.start_workflow(chooser, mode, workflow_id=f"c-{mode}")
                   for mode in ("result", "timer", "message")}
        await app.send("c-message", {"hello": 1}, topic="m")
        got = {mode: await h.get_result(timeout_seconds=30) for mode, h in handles.items()}
        event_result = await (await app.retrieve_workflow("c-event")).get_result(30)
    assert event_result == [0, "event", "yes", "kept"]
    assert got["result"] == [1, "result", "done", None]
    assert got["timer"] == [1, "timer", None, None]
    assert got["message"] == [1, "message", {"hello": 1}, None]


async def test_result_branch_raises_the_workflows_error(make_app):
    app = make_app()

    @app.workflow()
    async def failing() -> None:
        raise ValueError("child broke")

    @app.workflow()
    async def parent() -> str:
        child = await asyncflow.start_workflow(failing)
        try:
            await asyncflow.wait_first(asyncflow.result(child), asyncflow.timer(30))
        except ValueError as exc:
            return f"caught {exc}"
        return "no error"

    async with app:
        assert await (await app.start_workflow(parent)).get_result(30) == "caught child broke"


async def test_replay_after_sigkill_takes_the_same_branch(db_url, procs):
    a = await procs("wait_first_worker.py", db_url, "exec-wf", "start")
    await a.expect("READY")
    async with asyncflow.Client(db_url) as client:
        await client.send("wf", "first", topic="go")
        await a.expect("FIRED 0 first")
        # While the first run is blocked after its choice, more arrives: a second message and
        # the event. On replay the first wait_first must still say "message, 'first'".
        await client.send("wf", "second", topic="go")
        a.kill()
        await a.wait()
        b = await procs("wait_first_worker.py", db_url, "exec-wf", "serve")
        await b.expect("FIRED 0 first")
        handle = await client.retrieve_workflow("wf")
        assert await handle.get_result(timeout_seconds=30) == [0, "first", 0, "second"]
        steps = await client.list_workflow_steps("wf")
    names = [s.name for s in steps]
    assert names.count("asyncflow.wait_first") == 2


async def test_cancel_wakes_a_parked_wait_first(make_app):
    app = make_app()
    parked = asyncio.Event()

    @app.step()
    async def mark() -> None:
        parked.set()

    @app.workflow()
    async def waiting() -> None:
        await mark()
        await asyncflow.wait_first(asyncflow.message("x"), asyncflow.timer(300))

    async with app:
        handle = await app.start_workflow(waiting)
        await parked.wait()
        await app._waits.wait_for_count(1)
        await app.cancel_workflow(handle.workflow_id)
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await handle.get_result(timeout_seconds=10)
        assert (await handle.get_status()).status == asyncflow.Status.CANCELLED


async def test_outside_a_workflow_events_results_and_timers(make_app, db_url):
    app = make_app()

    @app.workflow()
    async def slow() -> int:
        await asyncflow.recv("go", timeout_seconds=30)
        await asyncflow.set_event("e", 7)
        return 42

    async with app:
        handle = await app.start_workflow(slow)
        timer = await app.wait_first(asyncflow.result(handle), asyncflow.timer(0.05))
        assert (timer.index, timer.value) == (1, None)
        async with asyncflow.Client(db_url) as client:
            waiter = asyncio.ensure_future(client.wait_first(
                asyncflow.event(handle.workflow_id, "e"), asyncflow.timer(30)))
            await app.send(handle.workflow_id, 1, topic="go")
            fired = await asyncio.wait_for(waiter, 30)
        assert (fired.index, fired.value) == (0, 7)
        done = await app.wait_first(asyncflow.result(handle.workflow_id))
        assert done.value == 42
        with pytest.raises(asyncflow.NotInWorkflowError):
            app.wait_first(asyncflow.message("m"))
        with pytest.raises(asyncflow.InvalidArgumentError):
            app.wait_first()
        with pytest.raises(asyncflow.InvalidArgumentError):
            asyncflow.timer(-1)
