"""Messages: per-topic FIFO mailboxes with exactly-once receipt, woken by NOTIFY."""

from __future__ import annotations

import asyncio
import time

import pytest

import asyncflow


async def test_fifo_per_topic_and_null_topic(make_app):
    app = make_app()

    @app.workflow()
    async def receiver():
        got = []
        for topic in ["b", "a", None, "a", "b", None]:
            got.append([topic, await asyncflow.recv(topic, timeout_seconds=10)])
        return got

    async with app:
        handle = await app.start_workflow(receiver, workflow_id="r")
        for i in range(2):
            await app.send("r", f"a{i}", "a")
            await app.send("r", f"b{i}", "b")
            await app.send("r", f"n{i}")
        result = await handle.get_result()
    assert result == [["b", "b0"], ["a", "a0"], [None, "n0"], ["a", "a1"], ["b", "b1"],
                      [None, "n1"]]


async def test_message_sent_before_workflow_waits_is_kept(make_app, conn):
    app = make_app()
    gate = asyncio.Event()

    @app.step()
    async def wait_gate():
        await gate.wait()

    @app.workflow()
    async def wf():
        await wait_gate()
        return await asyncflow.recv(timeout_seconds=5)

    async with app:
        h = await app.start_workflow(wf)
        await app.send(h.workflow_id, {"early": True})
        assert await conn.fetchval("select count(*) from asyncflow.messages") == 1
        gate.set()
        assert await h.get_result() == {"early": True}
    assert await conn.fetchval("select count(*) from asyncflow.messages") == 0


async def test_recv_timeout_returns_none_after_about_the_timeout(make_app):
    app = make_app()

    @app.workflow()
    async def wf():
        t0 = time.monotonic()
        value = await asyncflow.recv("nothing", timeout_seconds=0.4)
        return [value, time.monotonic() - t0]

    async with app:
        value, elapsed = await wf()
    assert value is None
    assert 0.38 <= elapsed < 1.5


async def test_recv_deadline_is_durable_across_recovery(make_app, conn):
    app = make_app(app_version="v1")
    for wid, deadline in [("soon", time.time() + 0.5), ("past", time.time() - 10)]:
        await conn.execute(
            "insert into asyncflow.workflows (workflow_id, name, status, inputs, executor_id, "
            "app_version) values ($1, 'waiter', 'PENDING', '{\"args\":[],\"kwargs\":{}}', "
            "'gone', 'v1')", wid)
        await conn.execute(
            "insert into asyncflow.operations (workflow_id, function_id, name, completed, "
            "deadline) values ($1, 0, 'asyncflow.recv', false, $2)", wid, deadline)

    @app.workflow(name="waiter")
    async def waiter():
        value = await asyncflow.recv(timeout_seconds=3600)
        return [value, time.time()]

    start = time.time()
    async with app:
        soon = await (await app.retrieve_workflow("soon")).get_result(timeout_seconds=10)
        past = await (await app.retrieve_workflow("past")).get_result(timeout_seconds=10)
    assert soon[0] is None and start + 0.3 < soon[1] < start + 4
    assert past[0] is None and past[1] < start + 3


async def test_recovered_past_deadline_still_gets_waiting_message(make_app, conn):
    app = make_app(app_version="v1")
    await conn.execute(
        "insert into asyncflow.workflows (workflow_id, name, status, inputs, executor_id, "
        "app_version) values ('w', 'waiter', 'PENDING', '{\"args\":[],\"kwargs\":{}}', 'gone', "
        "'v1')")
    await conn.execute(
        "insert into asyncflow.operations (workflow_id, function_id, name, completed, deadline) "
        "values ('w', 0, 'asyncflow.recv', false, $1)", time.time() - 10)
    await conn.execute(
        "insert into asyncflow.messages (destination_id, topic, message) values ('w', null, '7')")

    @app.workflow(name="waiter")
    async def waiter():
        return await asyncflow.recv(timeout_seconds=3600)

    async with app:
        assert await (await app.retrieve_workflow("w")).get_result(timeout_seconds=10) == 7


async def test_idempotency_key_delivers_once_even_after_consumption(make_app, conn):
    app = make_app()

    @app.workflow()
    async def wf():
        first = await asyncflow.recv(timeout_seconds=10)
        second = await asyncflow.recv(timeout_seconds=0.2)
        return [first, second]

    async with app:
        h = await app.start_workflow(wf, workflow_id="idem")
        await app.send("idem", "once", idempotency_key="k1")
        await app.send("idem", "once", idempotency_key="k1")
        assert await h.get_result() == ["once", None]
        async with asyncflow.Client(app.storage.url) as client:
            await client.send("idem", "once", idempotency_key="k1")
    assert await conn.fetchval("select count(*) from asyncflow.messages") == 0


async def test_send_from_workflow_is_exactly_once_across_reexecution(make_app, conn):
    app = make_app()
    gate = asyncio.Event()

    @app.workflow()
    async def sink():
        return [await asyncflow.recv(timeout_seconds=10) for _ in range(3)]

    @app.step()
    async def block():
        await gate.wait()

    @app.workflow()
    async def sender(dest):
        await asyncflow.send(dest, "one")
        await app.send(dest, "two")
        await block()
        await asyncflow.send(dest, "three")

    async with app:
        sink_handle = await app.start_workflow(sink, workflow_id="sink")
        await app.start_workflow(sender, "sink", workflow_id="sender")
        # Make the journal be replayed by a second execution while the first is blocked.
        await conn.execute(
            "update asyncflow.workflows set executor_id = null where workflow_id = 'sender'")
        app.runner.running.pop("sender")  # forget the in-flight execution, as a crash would
        await app._supervisor.sweep(include_own=False)
        gate.set()
        assert await sink_handle.get_result() == ["one", "two", "three"]
        await (await app.retrieve_workflow("sender")).get_result(timeout_seconds=10)
    assert await conn.fetchval(
        "select count(*) from asyncflow.operations where workflow_id='sender'") == 4


async def test_send_from_step_is_not_duplicated_by_retries(make_app):
    app = make_app()
    attempts = []

    @app.step(retries=2, retry_interval_seconds=0.01)
    async def send_then_fail(dest):
        await asyncflow.send(dest, "from-step")
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("retry me")

    @app.workflow()
    async def sink():
        first = await asyncflow.recv(timeout_seconds=10)
        return [first, await asyncflow.recv(timeout_seconds=0.3)]

    @app.workflow()
    async def sender():
        await send_then_fail("sink2")

    async with app:
        h = await app.start_workflow(sink, workflow_id="sink2")
        await sender()
        assert await h.get_result() == ["from-step", None]
    assert len(attempts) == 3


async def test_bad_message_calls_fail_and_write_nothing(make_app, conn):
    app = make_app()

    @app.workflow()
    async def wf():
        return await asyncflow.recv(timeout_seconds=5)

    async with app:
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await app.send("no-such-workflow", "hi")
        h = await app.start_workflow(wf, workflow_id="target")
        with pytest.raises(asyncflow.SerializationError):
            await app.send("target", {1, object()})
        with pytest.raises(asyncflow.InvalidArgumentError):
            await app.send("target", "x", "bad\x00topic")
        assert await conn.fetchval("select count(*) from asyncflow.messages") == 0
        with pytest.raises(asyncflow.NotInWorkflowError):
            await asyncflow.recv()
        with pytest.raises(asyncflow.NotInWorkflowError):
            await asyncflow.send("target", "x")
        await app.send("target", "fine")
        assert await h.get_result() == "fine"


@pytest.mark.slow
async def test_thousand_parked_receivers_each_get_their_message(make_app, conn):
    app = make_app()
    n = 1000

    @app.workflow()
    async def parked(i):
        message = await asyncflow.recv(timeout_seconds=120)
        return [i, message]

    async with app:
        handles = [await app.start_workflow(parked, i, workflow_id=f"p{i}") for i in range(n)]
        # Wait (event-driven) until every receiver has checkpointed its deadline and parked.
        async with asyncio.timeout(60):
            await app._waits.wait_for_count(n)
        for i in range(n):
            await app.send(f"p{i}", f"m{i}")
        results = [await h.get_result(timeout_seconds=60) for h in handles]
    assert results == [[i, f"m{i}"] for i in range(n)]
    assert await conn.fetchval("select count(*) from asyncflow.messages") == 0


async def test_a_send_says_what_became_of_the_message(make_app, db_url, conn):
    app = make_app()
    Delivery = asyncflow.Delivery

    @app.workflow()
    async def taker(n: int) -> list[object]:
        return [await asyncflow.recv("t", timeout_seconds=60) for _ in range(n)]

    async with app, asyncflow.Client(db_url) as client:
        handle = await app.start_workflow(taker, 3, workflow_id="d-1")
        assert await app.send("d-1", 1, "t") is Delivery.DELIVERED
        assert await client.send("d-1", 2, "t", idempotency_key="k") is Delivery.DELIVERED
        assert await client.send("d-1", 2, "t", idempotency_key="k") is Delivery.DUPLICATE
        assert await app.send("d-1", 2, "t", idempotency_key="k") == "duplicate"  # a str
        # Concurrent sends share a statement (group commit): each still gets its own answer.
        keys = ["a", "b", "a", "c", "b", "a"]
        answers = await asyncio.gather(*(app.send("d-1", key, "k", idempotency_key=key)
                                         for key in keys))
        assert sorted(str(a) for a in answers) == ["delivered"] * 3 + ["duplicate"] * 3
        assert await client.send("d-1", 3, "t") is Delivery.DELIVERED
        assert await handle.get_result(timeout_seconds=30) == [1, 2, 3]
        # The workflow ended: stored, but nobody receives it (and the send says so).
        assert await client.send("d-1", 4, "t") is Delivery.WORKFLOW_ENDED
        answers = await asyncio.gather(*(app.send("d-1", n) for n in range(5)))
        assert set(answers) == {Delivery.WORKFLOW_ENDED}
        assert await app.send("d-1", 5, idempotency_key="k") is Delivery.DUPLICATE
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await client.send("no-such", 1)
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await client.send("no-such", 1, idempotency_key="k")
