"""The ``asyncflow`` command line, run as a subprocess against a real database."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from clilib import cli, cli_json, read_line, start_cli
from conftest import with_database

import asyncflow

pytestmark = pytest.mark.slow  # every test runs the command in subprocesses


async def test_workflow_commands(make_app, db_url):
    app = make_app()

    @app.step()
    async def double(x: int) -> int:
        return 2 * x

    @app.workflow()
    async def finished(x: int) -> dict[str, int]:
        return {"doubled": await double(x)}

    @app.workflow()
    async def waiting() -> Any:
        return {"got": await asyncflow.recv("go", timeout_seconds=60)}

    @app.workflow()
    async def failing() -> None:
        raise ValueError("boom")

    async with app:
        await (await app.start_workflow(finished, 21, workflow_id="wf-done")).get_result()
        handle = await app.start_workflow(waiting, workflow_id="wf-wait")
        with pytest.raises(ValueError):
            await (await app.start_workflow(failing, workflow_id="wf-fail")).get_result()

        code, out, err = await cli(db_url, "workflow", "list")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split() == ["WORKFLOW", "ID", "NAME", "STATUS", "CREATED", "UPDATED",
                                    "EXECUTOR", "QUEUE"]
        assert {line.split()[0]: line.split()[2] for line in lines[1:]} == {
            "wf-done": "SUCCESS", "wf-wait": "PENDING", "wf-fail": "ERROR"}

        name = (await app.get_workflow_status("wf-done")).name
        pending, newest, named, info, steps = await asyncio.gather(
            cli_json(db_url, "workflow", "list", "--status", "pending"),
            cli_json(db_url, "workflow", "list", "--limit", "1"),
            cli_json(db_url, "workflow", "list", "--name", name),
            cli_json(db_url, "workflow", "get", "wf-done"),
            cli_json(db_url, "workflow", "operations", "wf-done"),
        )
        assert [w["workflow_id"] for w in pending] == ["wf-wait"]
        assert [w["workflow_id"] for w in newest] == ["wf-fail"]  # newest first
        assert [w["workflow_id"] for w in named] == ["wf-done"]
        assert (info["status"], info["output"]) == ("SUCCESS", {"doubled": 42})
        assert [(s["function_id"], s["output"], s["completed"]) for s in steps] == [(0, 42, True)]
        assert steps[0]["name"].endswith("double")
        (code, out, _), (code2, out2, _) = await asyncio.gather(
            cli(db_url, "workflow", "get", "wf-fail"), cli(db_url, "workflow", "steps", "wf-done"))
        assert code == 0 and "ValueError: boom" in out and "ERROR" in out
        assert code2 == 0 and out2.split()[:5] == [  # (`steps`: the older name of `operations`)
            "OPERATION", "NAME", "DONE", "CHILD", "OUTPUT"]

        code, out, _ = await cli(db_url, "workflow", "cancel", "wf-done")
        assert code == 0 and "nothing to cancel" in out
        assert await cli_json(db_url, "workflow", "cancel", "wf-wait") == {
            "workflow_id": "wf-wait", "status": "CANCELLED", "changed": True}
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await handle.get_result(timeout_seconds=10)
        resumed = await cli_json(db_url, "workflow", "resume", "wf-wait")
        assert resumed == {"workflow_id": "wf-wait", "status": "PENDING", "changed": True}
        code, out, err = await cli(db_url, "send", "wf-wait", '{"ok": true}', "--topic", "go",
                                   "--idempotency-key", "k1")
        assert code == 0, err
        assert out.strip() == "message delivered to workflow wf-wait on topic 'go'"
        assert await handle.get_result(timeout_seconds=30) == {"got": {"ok": True}}
        # The same key again: not delivered twice, and it says so; to an ended workflow too.
        code, out, err = await cli(db_url, "send", "wf-wait", '{"ok": true}', "--topic", "go",
                                   "--idempotency-key", "k1")
        assert code == 0 and out.startswith("not sent: idempotency key 'k1' was already"), err
        code, out, err = await cli(db_url, "send", "wf-wait", "2", "--topic", "go")
        assert code == 0 and "but it has ended (SUCCESS)" in out, err
        assert await cli_json(db_url, "send", "wf-wait", "3", "--idempotency-key", "k1") == {
            "workflow_id": "wf-wait", "topic": None, "sent": False, "delivery": "duplicate"}

        cases = (["workflow", "get", "nope"], ["workflow", "steps", "nope"],
                 ["workflow", "cancel", "nope"], ["workflow", "resume", "nope"])
        results = await asyncio.gather(*(cli(db_url, *args) for args in cases))
        for args, (code, out, err) in zip(cases, results, strict=True):
            assert (code, out) == (1, ""), args
            assert err.strip() == "asyncflow: error: no workflow with id 'nope'"


async def test_queued_workflows_are_listed_filtered_cancelled_and_resumed(make_app, db_url):
    app = make_app(queues=[])  # enqueues, runs nothing
    queue = app.queue("emails")

    @app.workflow(name="email")
    async def email(to: str) -> str:
        return to

    async with app:
        await queue.enqueue(email, "a", workflow_id="q-now")
        await queue.enqueue(email, "b", workflow_id="q-later", delay_seconds=3600)
        await app.start_workflow(email, "c", workflow_id="not-queued")
        code, out, err = await cli(db_url, "workflow", "list", "--queue", "emails")
        assert code == 0, err
        rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
        assert set(rows) == {"q-now", "q-later"}
        assert rows["q-now"][2] == "ENQUEUED" and rows["q-later"][2] == "DELAYED"
        assert rows["q-now"][-1] == "emails"
        enqueued, delayed = await asyncio.gather(
            cli_json(db_url, "workflow", "list", "--status", "enqueued"),
            cli_json(db_url, "workflow", "list", "--status", "DELAYED", "--queue", "emails"))
        assert [(w["workflow_id"], w["queue_name"]) for w in enqueued] == [("q-now", "emails")]
        assert [w["workflow_id"] for w in delayed] == ["q-later"]
        assert delayed[0]["delay_until"] is not None
        assert await cli_json(db_url, "workflow", "cancel", "q-now") == {
            "workflow_id": "q-now", "status": "CANCELLED", "changed": True}
        assert await cli_json(db_url, "workflow", "resume", "q-now") == {
            "workflow_id": "q-now", "status": "ENQUEUED", "changed": True}
        code, out, _ = await cli(db_url, "workflow", "resume", "q-later")
        assert code == 0 and "only CANCELLED" in out


async def test_events_messages_and_streams(make_app, db_url, conn):
    app = make_app()

    @app.workflow()
    async def talker() -> None:
        await asyncflow.set_event("status", {"phase": 1})
        await asyncflow.set_event("nothing", None)
        await asyncflow.write_stream("out", "first")
        await asyncflow.recv("go", timeout_seconds=60)
        await asyncflow.set_event("later", [1, 2])
        await asyncflow.write_stream("out", {"second": 2})
        await asyncflow.close_stream("out")

    async with app:
        handle = await app.start_workflow(talker, workflow_id="t1")
        assert await app.get_event("t1", "nothing", timeout_seconds=0) is None
        assert await app.get_event("t1", "status", timeout_seconds=10) == {"phase": 1}
        async for _value in app.read_stream("t1", "out"):  # "first" is written
            break

        assert await cli_json(db_url, "events", "t1") == {"nothing": None, "status": {"phase": 1}}
        code, out, _ = await cli(db_url, "events", "t1")
        assert out.splitlines() == ["KEY      VALUE", "nothing  null", 'status   {"phase":1}']
        code, out, _ = await cli(db_url, "event", "get", "t1", "status")
        assert (code, json.loads(out)) == (0, {"phase": 1})
        code, out, _ = await cli(db_url, "event", "get", "t1", "nothing")  # set, to null
        assert (code, out.strip()) == (0, "null")
        code, out, err = await cli(db_url, "event", "get", "t1", "missing", "--timeout", "0.1")
        assert code == 1 and out == ""
        assert "event 'missing' of workflow 't1' is not set" in err

        # Non-blocking snapshot, then a follower that prints values as they are written.
        code, out, _ = await cli(db_url, "stream", "read", "t1", "out")
        assert (code, out) == (0, '0: "first"\n')
        follower = await start_cli(db_url, "--json", "stream", "read", "t1", "out", "--follow")
        waiter = await start_cli(db_url, "event", "get", "t1", "later", "--timeout", "30")
        assert json.loads(await read_line(follower)) == {"offset": 0, "value": "first"}

        # Idempotent sends: the same key twice queues one message.
        for _ in range(2):
            code, _, err = await cli(db_url, "send", "t1", '"go!"', "--topic", "go",
                                     "--idempotency-key", "k1")
            assert code == 0, err
        await handle.get_result(timeout_seconds=30)
        assert await conn.fetchval(
            "select count(*) from asyncflow.messages where destination_id = 't1'") == 0

        assert json.loads(await read_line(follower)) == {"offset": 1, "value": {"second": 2}}
        assert await asyncio.wait_for(follower.wait(), 30) == 0
        out, _ = await asyncio.wait_for(waiter.communicate(), 30)
        assert (waiter.returncode, json.loads(out)) == (0, [1, 2])
        code, out, _ = await cli(db_url, "stream", "read", "t1", "out", "--offset", "1")
        assert out == '1: {"second":2}\n'

        # An unknown stream key is an error, not an empty stream.
        code, out, err = await cli(db_url, "stream", "read", "t1", "typo")
        assert code == 1 and out == "", err
        assert "no stream 'typo'" in err and "its streams: 'out'" in err, err

        code, out, err = await cli(db_url, "send", "t1", "{bad json")
        assert code == 2 and out == "" and "MESSAGE is not valid JSON" in err
        code, out, err = await cli(db_url, "send", "nope", "1")
        assert code == 1 and "no workflow with id 'nope'" in err
        cases = (["events", "nope"], ["event", "get", "nope", "k"],
                 ["stream", "read", "nope", "out"], ["stream", "read", "nope", "out", "--follow"])
        results = await asyncio.gather(*(cli(db_url, *args) for args in cases))
        for args, (code, out, err) in zip(cases, results, strict=True):
            assert (code, out, err.strip()) == (1, "", "asyncflow: error: no workflow with id "
                                                       "'nope'"), args


async def test_workflow_start_by_name_and_on_a_queue(make_app, db_url):
    app = make_app()
    app.queue("jobs")

    @app.workflow(name="greet")
    async def greet(who: str, punctuation: str = "!") -> str:
        return f"hello {who}{punctuation}"

    async with app:
        code, out, err = await cli(db_url, "workflow", "start", "greet", "--args", '["ann"]',
                                   "--id", "g-1")
        assert code == 0 and out.startswith("workflow g-1 (greet) started"), err
        assert await (await app.retrieve_workflow("g-1")).get_result(30) == "hello ann!"
        started = await cli_json(db_url, "workflow", "start", "greet", "--queue", "jobs",
                                 "--args", '{"who": "bob", "punctuation": "?"}')
        assert started["queue"] == "jobs" and started["name"] == "greet"
        handle = await app.retrieve_workflow(started["workflow_id"])
        assert await handle.get_result(30) == "hello bob?"
        assert (await handle.get_status()).queue_name == "jobs"
        # Again with an existing id: that workflow, not a second run.
        again = await cli_json(db_url, "workflow", "start", "greet", "--args", '["zed"]',
                               "--id", "g-1")
        assert (again["workflow_id"], again["status"]) == ("g-1", "SUCCESS")
        assert await (await app.retrieve_workflow("g-1")).get_result(30) == "hello ann!"
        code, out, err = await cli(db_url, "workflow", "start", "other", "--id", "g-1")
        assert code == 1 and "already used by workflow 'greet'" in err
        for bad in ("[1,", '"text"'):
            code, out, err = await cli(db_url, "workflow", "start", "greet", "--args", bad)
            assert code == 2 and out == "" and "--args" in err, err


async def test_db_migrate_and_connection_errors(empty_db_url, tmp_path):
    code, out, err = await cli(empty_db_url, "workflow", "list")
    assert code == 1 and "asyncflow db migrate" in err
    code, out, err = await cli(empty_db_url, "db", "migrate")
    assert code == 0 and out.startswith("schema 'asyncflow' is at version "), err
    assert await cli_json(empty_db_url, "db", "migrate") == {
        "schema": "asyncflow", "version": int(out.split()[-1])}
    code, out, _ = await cli(None, "--database-url", empty_db_url, "workflow", "list")
    assert (code, out) == (0, "no workflows\n")

    missing = with_database(empty_db_url, "no_such_database")
    code, out, err = await cli(missing, "workflow", "list")
    assert code == 1 and "no_such_database" in err
    # A port nobody listens on: it never connected, so it does not say the connection was lost.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = unused.getsockname()[1]
        code, out, err = await cli(f"postgresql://someone:secret@127.0.0.1:{port}/db",
                                   "workflow", "list")
    assert code == 1 and f"cannot connect to the database at 127.0.0.1:{port}" in err, err
    assert "connection lost" not in err and "secret" not in err
    # No URL and no embedded server running in the data directory: say what to do.
    code, out, err = await cli(None, "workflow", "list", cwd=tmp_path)
    assert code == 1 and "asyncflow postgres start" in err and "--database-url" in err


async def test_usage_errors(db_url):
    cases = (["workflow", "list", "--limit", "-1"], ["workflow", "list", "--status", "NOPE"],
             ["event", "get", "x", "k", "--timeout", "nan"], ["workflow"], ["stream", "read"],
             ["postgres", "restart"], [])
    results = await asyncio.gather(*(cli(db_url, *args) for args in cases))
    for args, (code, out, err) in zip(cases, results, strict=True):
        assert code == 2 and out == "", args
        assert "error" in err, args


async def test_bench_is_not_a_command_of_the_installed_cli():
    # The benchmarks live in the source checkout: `python -m benchmarks` runs them.
    code, _, err = await cli(None, "bench")
    assert code == 2 and "invalid choice" in err
