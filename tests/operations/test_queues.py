"""Queues in one process: enqueue and run, order, deduplication, delay, partitions, per-worker
concurrency, cancel and resume, transactional enqueue, journaled enqueue, Client enqueue by name.

Several apps in one process stand for several workers (each has its own executor id, pool and
LISTEN connection). Fleets of real worker processes are in test_queue_fleet.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from queuelib import order_app, parked

import asyncflow


class Gate:
    """Workflows check in (``arrive``) and wait for the test to ``open`` the gate."""

    def __init__(self) -> None:
        self.arrived: list[str] = []
        self.opened = asyncio.Event()
        self._targets: list[tuple[int, asyncio.Event]] = []

    def arrive(self, tag: str) -> None:
        self.arrived.append(tag)
        for count, event in self._targets:
            if len(self.arrived) >= count:
                event.set()

    async def reached(self, count: int) -> None:
        event = asyncio.Event()
        self._targets.append((count, event))
        if len(self.arrived) >= count:
            event.set()
        async with asyncio.timeout(30):
            await event.wait()


async def test_enqueue_runs_and_reports_queued_statuses(make_app):
    runs: list[str] = []
    app, queue, job = order_app(make_app, runs)
    async with app:
        handle = await queue.enqueue(job, "a")
        assert await handle.get_result(timeout_seconds=20) == "a"
        status = await handle.get_status()
        assert status.status == asyncflow.SUCCESS
        assert status.queue_name == "q"
        assert status.dispatched_at is not None
        assert status.executor_id == app.executor_id
        listed = await app.list_workflows(queue_name="q")
        assert [w.workflow_id for w in listed] == [handle.workflow_id]
        assert await app.list_workflows(queue_name="other") == []


async def test_enqueued_waits_for_a_worker_then_runs_in_priority_then_fifo_order(make_app):
    runs: list[str] = []
    producer, queue, job = order_app(make_app, runs, queues=[])  # serves no queue
    worker, _, _ = order_app(make_app, runs)
    async with producer:
        plan = [("low-1", 5), ("high-1", 1), ("mid-1", 3), ("high-2", 1), ("low-2", 5),
                ("mid-2", 3), ("top", -1)]
        handles = [await queue.enqueue(job, tag, priority=p) for tag, p in plan]
        statuses = {(await h.get_status()).status for h in handles}
        assert statuses == {asyncflow.ENQUEUED}
        assert len(await producer.list_workflows(status="ENQUEUED", queue_name="q")) == 7
        assert runs == []
        async with worker:
            for handle in handles:
                await handle.get_result(timeout_seconds=20)
    assert runs == ["top", "high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"]


async def test_deduplication_refuses_or_returns_the_holder_until_it_ends(make_app):
    app = make_app(queues=[])
    queue = app.queue("mail")

    @app.workflow(name="send_mail")
    async def send_mail(to: str) -> str:
        return to

    async with app:
        first = await queue.enqueue(send_mail, "a", deduplication_id="user-1")
        with pytest.raises(asyncflow.QueueDeduplicatedError) as info:
            await queue.enqueue(send_mail, "b", deduplication_id="user-1")
        assert info.value.existing_workflow_id == first.workflow_id
        assert first.workflow_id in str(info.value) and "user-1" in str(info.value)
        same = await queue.enqueue(send_mail, "c", deduplication_id="user-1",
                                   on_duplicate="return_existing")
        assert same == first
        other = await queue.enqueue(send_mail, "d", deduplication_id="user-2")
        assert other != first
        assert len(await app.list_workflows(queue_name="mail")) == 2
        # Once the holder has ended, the deduplication id is free again.
        await app.cancel_workflow(first.workflow_id)
        again = await queue.enqueue(send_mail, "e", deduplication_id="user-1")
        assert again != first
        # Resuming the cancelled one now would take the id twice: refused, typed.
        with pytest.raises(asyncflow.QueueDeduplicatedError, match=first.workflow_id):
            await app.resume_workflow(first.workflow_id)


async def test_delayed_workflow_is_delayed_then_runs(make_app, conn):
    runs: list[str] = []
    producer, queue, job = order_app(make_app, runs, queues=[])
    worker, _, _ = order_app(make_app, runs)
    async with producer:
        started = time.monotonic()
        handle = await queue.enqueue(job, "later", delay_seconds=0.5)
        # Nobody serves the queue yet: it stays DELAYED.
        assert (await handle.get_status()).status == asyncflow.DELAYED
        assert [w.workflow_id for w in await producer.list_workflows(status="DELAYED")] == [
            handle.workflow_id]
        async with worker:
            assert await handle.get_result(timeout_seconds=20) == "later"
        assert time.monotonic() - started >= 0.5
    row = await conn.fetchrow(
        "select dispatched_at >= delay_until as on_time, delay_until - created_at as delay "
        "from asyncflow.workflows where workflow_id = $1", handle.workflow_id)
    assert row["on_time"] and row["delay"].total_seconds() >= 0.5


def gated_app(make_app, gate, **queue_limits):
    app = make_app()
    queue = app.queue("gated", **queue_limits)

    @app.step(name="hold")
    async def hold(tag: str) -> None:
        gate.arrive(tag)
        await gate.opened.wait()

    @app.workflow(name="gated_job")
    async def gated_job(tag: str) -> str:
        await hold(tag)
        return tag

    return app, queue, gated_job


async def test_partition_concurrency_caps_each_partition(make_app, conn):
    gate = Gate()
    app, queue, job = gated_app(make_app, gate, partition_concurrency=1)
    async with app:
        handles = [await queue.enqueue(job, f"{key}{n}", partition_key=key)
                   for n in range(3) for key in "ab"]
        await gate.reached(2)  # one of each partition runs
        await parked(app)
        assert sorted(gate.arrived) == ["a0", "b0"]
        counts = await conn.fetch(
            "select partition_key, status, count(*) as n from asyncflow.workflows "
            "group by 1, 2 order by 1, 2")
        assert [tuple(r) for r in counts] == [("a", "ENQUEUED", 2), ("a", "PENDING", 1),
                                              ("b", "ENQUEUED", 2), ("b", "PENDING", 1)]
        gate.opened.set()
        for handle in handles:
            await handle.get_result(timeout_seconds=20)
    assert sorted(gate.arrived) == ["a0", "a1", "a2", "b0", "b1", "b2"]


async def test_worker_concurrency_caps_each_process(make_app, conn):
    gate = Gate()
    first, queue, job = gated_app(make_app, gate, worker_concurrency=2)
    second, _, _ = gated_app(make_app, gate, worker_concurrency=2)
    async with first, second:
        handles = [await queue.enqueue(job, f"t{n}") for n in range(7)]
        await gate.reached(4)
        await parked(first)
        await parked(second)
        per_executor = await conn.fetch(
            "select executor_id, count(*) as n from asyncflow.workflows "
            "where status = 'PENDING' group by 1 order by 1")
        assert sorted(r["executor_id"] for r in per_executor) == sorted(
            [first.executor_id, second.executor_id])
        assert [r["n"] for r in per_executor] == [2, 2]
        assert await conn.fetchval(
            "select count(*) from asyncflow.workflows where status = 'ENQUEUED'") == 3
        assert len(gate.arrived) == 4
        gate.opened.set()
        for handle in handles:
            await handle.get_result(timeout_seconds=20)


async def test_global_concurrency_holds_across_apps_and_slots_refill(make_app, conn):
    gate = Gate()
    apps = [gated_app(make_app, gate, concurrency=3) for _ in range(3)]
    queue, job = apps[0][1], apps[0][2]
    async with apps[0][0], apps[1][0], apps[2][0]:
        handles = [await queue.enqueue(job, f"t{n}") for n in range(8)]
        await gate.reached(3)
        for app, _, _ in apps:
            await parked(app)
        assert len(gate.arrived) == 3
        assert await conn.fetchval(
            "select count(*) from asyncflow.workflows where status = 'PENDING'") == 3
        gate.opened.set()
        for handle in handles:
            await handle.get_result(timeout_seconds=20)


async def test_cancel_removes_and_resume_puts_back(make_app):
    runs: list[str] = []
    producer, queue, job = order_app(make_app, runs, queues=[])
    worker, _, _ = order_app(make_app, runs)
    async with producer:
        handle = await queue.enqueue(job, "x")
        await producer.cancel_workflow(handle.workflow_id)
        assert (await handle.get_status()).status == asyncflow.CANCELLED
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await handle.get_result(timeout_seconds=5)
        async with worker:
            other = await queue.enqueue(job, "y")
            assert await other.get_result(timeout_seconds=20) == "y"
            assert runs == ["y"]
            resumed = await producer.resume_workflow(handle.workflow_id)
            assert await resumed.get_result(timeout_seconds=20) == "x"
    assert runs == ["y", "x"]


async def test_rate_limit_spaces_starts(make_app, conn):
    app = make_app()
    queue = app.queue("limited", rate_limit=(2, 0.5))

    @app.workflow(name="tick")
    async def tick(n: int) -> int:
        return n

    async with app:
        handles = [await queue.enqueue(tick, n) for n in range(6)]
        for handle in handles:
            await handle.get_result(timeout_seconds=20)
    starts = [r["dispatched_at"] for r in await conn.fetch(
        "select dispatched_at from asyncflow.workflows order by dispatched_at")]
    for index in range(2, len(starts)):
        assert (starts[index] - starts[index - 2]).total_seconds() >= 0.5


async def test_transactional_enqueue_commits_or_rolls_back_with_the_transaction(make_app, conn):
    await conn.execute("create table orders (id text primary key)")
    runs: list[str] = []
    app, queue, job = order_app(make_app, runs)

    @app.transaction(name="place_order")
    async def place_order(order_id: str, fail: bool) -> str:
        await asyncflow.connection().execute("insert into orders values ($1)", order_id)
        handle = await queue.enqueue(job, order_id, workflow_id=f"ship-{order_id}")
        if fail:
            raise RuntimeError("payment declined")
        return handle.workflow_id

    @app.workflow(name="checkout")
    async def checkout(order_id: str, fail: bool) -> str:
        return await place_order(order_id, fail)

    @app.transaction(name="place_and_fail")
    async def place_and_fail(order_id: str) -> None:
        await place_order(order_id, False)  # nested: a savepoint of this transaction
        raise RuntimeError("the outer transaction fails")

    async with app:
        # Outside any workflow: the transaction's own commit makes the workflow durable.
        shipped = await place_order("o1", False)
        assert await (await app.retrieve_workflow(shipped)).get_result(timeout_seconds=20) == "o1"
        with pytest.raises(RuntimeError, match="declined"):
            await place_order("o2", True)
        # Inside a workflow: the same, and the checkpoint commits with them.
        child = await checkout("o3", False)
        assert await (await app.retrieve_workflow(child)).get_result(timeout_seconds=20) == "o3"
        with pytest.raises(RuntimeError, match="declined"):
            await checkout("o4", True)
        with pytest.raises(RuntimeError, match="outer transaction fails"):
            await place_and_fail("o5")
    assert sorted(r["id"] for r in await conn.fetch("select id from orders")) == ["o1", "o3"]
    queued = await conn.fetch(
        "select workflow_id from asyncflow.workflows where queue_name = 'q' order by 1")
    assert [r["workflow_id"] for r in queued] == ["ship-o1", "ship-o3"]
    assert sorted(runs) == ["o1", "o3"]


async def test_enqueue_from_a_workflow_is_journaled_and_replays_once(make_app, conn):
    runs: list[str] = []
    app, queue, job = order_app(make_app, runs, queues=[])  # children stay ENQUEUED
    attempts: list[int] = []

    @app.workflow(name="parent")
    async def parent() -> list[str]:
        first = await queue.enqueue(job, "child")
        dup = await queue.enqueue(job, "dup", deduplication_id="D")
        try:
            await queue.enqueue(job, "dup again", deduplication_id="D")
            refused = ""
        except asyncflow.QueueDeduplicatedError as exc:
            refused = exc.existing_workflow_id or "?"
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first run fails")  # not journaled: the resumed run passes
        return [first.workflow_id, dup.workflow_id, refused]

    async with app:
        handle = await app.start_workflow(parent, workflow_id="p")
        with pytest.raises(RuntimeError, match="first run fails"):
            await handle.get_result(timeout_seconds=20)
        resumed = await app.resume_workflow("p")  # replays from the journal
        assert await resumed.get_result(timeout_seconds=20) == ["p-0", "p-1", "p-1"]
    assert len(attempts) == 2
    rows = await conn.fetch("select workflow_id, parent_workflow_id, status "
                            "from asyncflow.workflows where queue_name = 'q' order by 1")
    assert [tuple(r) for r in rows] == [("p-0", "p", "ENQUEUED"), ("p-1", "p", "ENQUEUED")]
    journal = await conn.fetch("select function_id, name, child_id, error is not null as failed "
                               "from asyncflow.operations where workflow_id = 'p' "
                               "order by function_id")
    assert [tuple(r) for r in journal[:3]] == [
        (0, "asyncflow.enqueue", "p-0", False), (1, "asyncflow.enqueue", "p-1", False),
        (2, "asyncflow.enqueue", None, True)]


async def test_client_enqueues_by_name_and_gets_the_result(make_app, db_url):
    runs: list[str] = []
    app, _queue, _job = order_app(make_app, runs, app_version="v-worker")
    async with app, asyncflow.Client(db_url) as client:
        handle = await client.enqueue("q", "job", "from-client", priority=2)
        assert await handle.get_result(timeout_seconds=20) == "from-client"
        status = await client.get_workflow_status(handle.workflow_id)
        assert status.app_version == "v-worker"  # stamped by the worker that ran it
        with pytest.raises(asyncflow.InvalidArgumentError):
            await client.enqueue("q", "job", priority="high")


async def test_bad_queue_arguments_fail_at_the_call(make_app):
    app = make_app()
    with pytest.raises(asyncflow.InvalidSettingError, match="concurrency"):
        app.queue("x", concurrency=0)
    with pytest.raises(asyncflow.InvalidSettingError, match="rate_limit"):
        app.queue("x", rate_limit=(5, 0))
    with pytest.raises(asyncflow.InvalidSettingError, match="queue name"):
        app.queue("")
    with pytest.raises(asyncflow.InvalidSettingError, match="queues"):
        make_app(queues="emails")
    queue = app.queue("x")
    with pytest.raises(asyncflow.ConfigurationError, match="already registered"):
        app.queue("x")

    @app.workflow(name="noop")
    async def noop() -> None:
        return None

    with pytest.raises(asyncflow.InvalidArgumentError, match="on_duplicate"):
        queue.enqueue(noop, on_duplicate="ignore")
    with pytest.raises(asyncflow.InvalidArgumentError, match="delay_seconds"):
        queue.enqueue(noop, delay_seconds=-1)
    with pytest.raises(asyncflow.SerializationError):
        queue.enqueue(noop, {1, object()})
    with pytest.raises(asyncflow.ConfigurationError, match="nope"):
        async with make_app(queues=["nope"]):
            pass


async def test_listener_reconnect_makes_dispatchers_check_again(make_app, conn):
    runs: list[str] = []
    app, _queue, _job = order_app(make_app, runs)
    async with app:
        old_pid = app.listener.backend_pid
        # A row whose NOTIFY never came (as if sent while the listener was away).
        await conn.execute(
            "insert into asyncflow.workflows (workflow_id, name, status, inputs, app_version, "
            "queue_name) values ('silent', 'job', 'ENQUEUED', "
            "'{\"args\": [\"silent\"], \"kwargs\": {}}', '', 'q')")
        await conn.execute("select pg_terminate_backend($1::int)", old_pid)
        await app.listener.wait_connected(not_pid=old_pid)
        handle = await app.retrieve_workflow("silent")
        assert await handle.get_result(timeout_seconds=20) == "silent"
    assert runs == ["silent"]


async def test_dispatchers_report_through_health(make_app):
    runs: list[str] = []
    app, _queue, _job = order_app(make_app, runs)
    async with app:
        health = app.health()
        assert health.healthy
        assert health.components["queue q"].healthy


@pytest.mark.parametrize("inputs", ["{not json", '{"args": 5, "kwargs": {}}', "[1, 2]"])
async def test_a_workflow_whose_inputs_cannot_be_decoded_ends_in_error(make_app, conn, inputs):
    """Issue 20, item 4. A queued workflow whose stored inputs are not the JSON of its
    arguments (an edited export, say) ends in ERROR with the reason when it is started; it
    does not stay PENDING holding its queue's only slot, so the queue goes on."""
    runs: list[str] = []
    app, queue, job = order_app(make_app, runs)
    gate = Gate()

    @app.workflow(name="blocker")
    async def blocker() -> str:
        gate.arrive("blocker")
        await gate.opened.wait()
        return "blocker"

    async with app:
        first = await queue.enqueue(blocker)
        await gate.reached(1)
        bad = await queue.enqueue(job, "bad")
        after = await queue.enqueue(job, "after")
        await conn.execute("UPDATE asyncflow.workflows SET inputs = $1 WHERE workflow_id = $2",
                           inputs, bad.workflow_id)
        gate.opened.set()
        assert await first.get_result(timeout_seconds=20) == "blocker"
        with pytest.raises(asyncflow.SerializationError, match="inputs of workflow"):
            await bad.get_result(timeout_seconds=20)
        assert (await bad.get_status()).status == "ERROR"
        assert await after.get_result(timeout_seconds=20) == "after"
        assert runs == ["after"]


async def test_forks_of_a_queued_workflow_go_through_its_queue(make_app):
    """Issue 20, item 7. A fork of a queued workflow waits in that workflow's queue (ENQUEUED)
    and runs within its limits — four forks on a concurrency=1 queue run one at a time — and
    continues from its copied journal (its step is not run again)."""
    app = make_app()
    queue = app.queue("serial", concurrency=1)
    gate = Gate()
    steps: list[str] = []

    @app.step()
    async def prepare(tag: str) -> str:
        steps.append(tag)
        return tag.upper()

    @app.workflow(name="forkable")
    async def forkable(tag: str) -> str:
        prepared = await prepare(tag)
        if asyncflow.workflow_id() != "src":
            gate.arrive(asyncflow.workflow_id())
            await gate.opened.wait()
        return prepared

    async with app:
        source = await queue.enqueue(forkable, "a", workflow_id="src")
        assert await source.get_result(timeout_seconds=20) == "A"
        forks = [await app.fork_workflow("src", 1, workflow_id=f"fork-{i}") for i in range(4)]
        await gate.reached(1)
        statuses = sorted([(await f.get_status()).status for f in forks])
        assert statuses == ["ENQUEUED", "ENQUEUED", "ENQUEUED", "PENDING"]
        assert {(await f.get_status()).queue_name for f in forks} == {"serial"}
        assert len(gate.arrived) == 1
        gate.opened.set()
        assert [await f.get_result(timeout_seconds=20) for f in forks] == ["A"] * 4
        assert steps == ["a"]  # the forks continued from their journals


async def test_a_fork_of_a_queued_workflow_that_never_ran_runs(make_app, db_url):
    """A queued workflow enqueued by a Client (no app version yet) and forked before any
    dispatcher ran it: its fork has no journal and waits in the queue like a fresh enqueue,
    so any app serving the queue runs it. (Found by the torture test: the fork was marked as
    dispatched, so only apps of the source's version -- none, for a Client's enqueue -- could
    claim it, and it stayed ENQUEUED forever.)"""
    async with asyncflow.Client(db_url) as client:
        await client.enqueue("later", "plain", "x", workflow_id="src", delay_seconds=3600)
        await client.fork_workflow("src", 0, workflow_id="copy")
    worker = make_app()
    worker.queue("later")

    @worker.workflow(name="plain")
    async def plain_again(tag: str) -> str:
        return tag.upper()

    async with worker:
        handle = await worker.retrieve_workflow("copy")
        assert await handle.get_result(timeout_seconds=20) == "X"


async def test_bulk_resume_resumes_the_others_and_reports_each_deduplication_conflict(
        make_app, caplog):
    """Issue 20, item 9. A bulk resume that would give a deduplication id to two workflows of
    a queue at once resumes everything else; each workflow it cannot resume is left as it is
    and reported (a warning naming it, as resume_workflow's QueueDeduplicatedError does) —
    never the driver's unique violation."""
    app = make_app(queues=[])
    queue = app.queue("mail")

    @app.workflow(name="send_mail")
    async def send_mail(to: str) -> str:
        return to

    async with app:
        held = await queue.enqueue(send_mail, "a", deduplication_id="user-1")
        free = await queue.enqueue(send_mail, "b", deduplication_id="user-2")
        plain = await queue.enqueue(send_mail, "c")
        twin_1 = await queue.enqueue(send_mail, "x", deduplication_id="user-3")
        await app.cancel_workflows(queue_name="mail")
        twin_2 = await queue.enqueue(send_mail, "y", deduplication_id="user-3")
        await app.cancel_workflow(twin_2.workflow_id)
        holder = await queue.enqueue(send_mail, "e", deduplication_id="user-1")
        with caplog.at_level("WARNING", logger="asyncflow"):
            resumed = await app.resume_workflows(queue_name="mail", status="CANCELLED")
        twins = {twin_1.workflow_id, twin_2.workflow_id}
        assert held.workflow_id not in resumed
        assert {free.workflow_id, plain.workflow_id} <= set(resumed)
        assert len(set(resumed) & twins) == 1 and len(resumed) == 3
        [left_twin] = twins - set(resumed)
        for workflow_id in (held.workflow_id, left_twin):
            assert (await app.get_workflow_status(workflow_id)).status == "CANCELLED"
            [record] = [r for r in caplog.records if workflow_id in r.getMessage()]
            assert "deduplication_id" in record.getMessage()
        assert holder.workflow_id in caplog.text
        assert await app.resume_workflows(queue_name="mail", status="CANCELLED") == []
