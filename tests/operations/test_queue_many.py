"""``Queue.enqueue_many``: one statement for many workflows of one function, in each place an
enqueue can be made (outside workflows, a transaction, a step, a workflow body); and
``Client.enqueue_many``, by name."""

from __future__ import annotations

import itertools

import pytest
from queuelib import order_app

import asyncflow


def jobs_app(make_app, runs, **kwargs):
    """The queue tests' app (queue ``q``, workflow ``job``) and workflow ``other``."""
    app, queue, job = order_app(make_app, runs, **kwargs)

    @app.workflow(name="other")
    async def other() -> None:
        return None

    return app, queue, job, other


async def test_enqueue_many_is_one_statement_and_runs_in_the_order_given(make_app, conn):
    runs: list[str] = []
    producer, queue, job, other = jobs_app(make_app, runs, queues=[])  # serves no queue
    worker, _, _, _ = jobs_app(make_app, runs)
    tags = [f"t{index}" for index in range(12)]  # ids in another order than the tags'
    ids = [f"w{(index * 7) % 12:02d}" for index in range(12)]
    async with producer:
        assert await queue.enqueue_many(job, []) == []
        before = await conn.fetchval("select count(*) from asyncflow.workflows")
        handles = await queue.enqueue_many(job, [(tag,) for tag in tags], workflow_ids=ids,
                                           priority=2)
        assert [h.workflow_id for h in handles] == ids
        assert await conn.fetchval("select count(*) from asyncflow.workflows") == before + 12
        rows = await conn.fetch("select status, priority, queue_name from asyncflow.workflows "
                                "where workflow_id = any($1::text[])", ids)
        assert {tuple(r) for r in rows} == {("ENQUEUED", 2, "q")}
        # An id that exists is that workflow (same function), or a conflict (another one):
        # the rest of the call is enqueued.
        again = await queue.enqueue_many(job, [("x",), ("y",)], workflow_ids=[ids[0], "w-new"],
                                         priority=2)
        assert [h.workflow_id for h in again] == [ids[0], "w-new"]
        await producer.start_workflow(other, workflow_id="taken")
        with pytest.raises(asyncflow.WorkflowConflictError, match="taken"):
            await queue.enqueue_many(job, [("z",), ("u",)], workflow_ids=["taken", "w-u"],
                                     priority=2)
        assert await conn.fetchval(
            "select status from asyncflow.workflows where workflow_id = 'w-u'") == "ENQUEUED"
        # The same id twice in one call: one workflow, both handles refer to it.
        twice = await queue.enqueue_many(job, [("d1",), ("d2",)], workflow_ids=["w-d", "w-d"],
                                         priority=2)
        assert [h.workflow_id for h in twice] == ["w-d", "w-d"]
        assert await conn.fetchval(
            "select inputs from asyncflow.workflows where workflow_id = 'w-d'") == \
            '{"args":["d1"],"kwargs":{}}'
        async with worker:
            results = [await h.get_result(timeout_seconds=20) for h in handles]
            await (await producer.retrieve_workflow("w-u")).get_result(timeout_seconds=20)
            await twice[0].get_result(timeout_seconds=20)
    assert results == tags
    assert runs[:12] == tags  # first-in first-out in the order given, not the ids' order
    assert sorted(runs[12:]) == ["d1", "u", "y"]


async def test_enqueue_many_with_a_delay_and_new_ids(make_app, conn):
    runs: list[str] = []
    app, queue, job, _ = jobs_app(make_app, runs, queues=[])
    async with app:
        handles = await queue.enqueue_many(job, [("a",), ("b",)], delay_seconds=3600,
                                           partition_key="p")
        assert len({h.workflow_id for h in handles}) == 2
        rows = await conn.fetch(
            "select status, partition_key, delay_until > now() + interval '59 minutes' as later "
            "from asyncflow.workflows where workflow_id = any($1::text[])",
            [h.workflow_id for h in handles])
        assert [tuple(r) for r in rows] == [("DELAYED", "p", True)] * 2


async def test_enqueue_many_in_a_transaction_commits_or_rolls_back_with_it(make_app, conn):
    runs: list[str] = []
    app, queue, job, _ = jobs_app(make_app, runs)

    @app.transaction(name="place")
    async def place(prefix: str, fail: bool) -> list[str]:
        handles = await queue.enqueue_many(job, [(f"{prefix}{i}",) for i in range(3)],
                                           workflow_ids=[f"{prefix}{i}" for i in range(3)])
        if fail:
            raise RuntimeError("declined")
        return [h.workflow_id for h in handles]

    async with app:
        ids = await place("ok", False)
        with pytest.raises(RuntimeError, match="declined"):
            await place("no", True)
        for workflow_id in ids:
            await (await app.retrieve_workflow(workflow_id)).get_result(timeout_seconds=20)
    queued = await conn.fetch(
        "select workflow_id from asyncflow.workflows where queue_name = 'q' order by 1")
    assert [r["workflow_id"] for r in queued] == ["ok0", "ok1", "ok2"]
    assert runs == ["ok0", "ok1", "ok2"]


async def test_enqueue_many_in_a_step_is_keyed_by_the_steps_position(make_app, conn):
    runs: list[str] = []
    app, queue, job, _ = jobs_app(make_app, runs, queues=[])  # children stay ENQUEUED
    attempts: list[int] = []

    @app.step(name="fan", retries=1, retry_interval_seconds=0.01)
    async def fan() -> list[str]:
        handles = await queue.enqueue_many(job, [("a",), ("b",)])
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("retry me")
        return [h.workflow_id for h in handles]

    @app.workflow(name="parent")
    async def parent() -> list[str]:
        return await fan()

    async with app:
        handle = await app.start_workflow(parent, workflow_id="p")
        children = await handle.get_result(timeout_seconds=20)
    assert len(attempts) == 2
    rows = await conn.fetch("select workflow_id from asyncflow.workflows "
                            "where parent_workflow_id = 'p' order by created_at")
    assert [r["workflow_id"] for r in rows] == children  # the retry enqueued the same two


async def test_enqueue_many_in_a_workflow_is_journaled_and_replays_once(make_app, conn):
    runs: list[str] = []
    app, queue, job, _ = jobs_app(make_app, runs, queues=[])
    attempts: list[int] = []

    @app.workflow(name="parent")
    async def parent() -> list[str]:
        handles = await queue.enqueue_many(job, [("a",), ("b",)])
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first run fails")
        return [h.workflow_id for h in handles]

    async with app:
        handle = await app.start_workflow(parent, workflow_id="p")
        with pytest.raises(RuntimeError, match="first run fails"):
            await handle.get_result(timeout_seconds=20)
        resumed = await app.resume_workflow("p")
        assert await resumed.get_result(timeout_seconds=20) == ["p-0", "p-1"]
    rows = await conn.fetch("select workflow_id from asyncflow.workflows "
                            "where queue_name = 'q' order by 1")
    assert [r["workflow_id"] for r in rows] == ["p-0", "p-1"]
    journal = await conn.fetch("select function_id, name, child_id from asyncflow.operations "
                               "where workflow_id = 'p' order by function_id")
    assert [tuple(r) for r in journal] == [(0, "asyncflow.enqueue", "p-0"),
                                           (1, "asyncflow.enqueue", "p-1")]


async def test_enqueue_many_checks_its_arguments_before_writing(make_app, conn):
    runs: list[str] = []
    app, queue, job, _ = jobs_app(make_app, runs, queues=[])
    async with app:
        with pytest.raises(asyncflow.InvalidArgumentError, match="tuple"):
            queue.enqueue_many(job, ["a"])  # type: ignore[list-item]
        with pytest.raises(asyncflow.InvalidArgumentError, match="one workflow id per call"):
            queue.enqueue_many(job, [("a",), ("b",)], workflow_ids=["x"])
        with pytest.raises(asyncflow.InvalidArgumentError, match="one workflow id per call"):
            queue.enqueue_many(job, [("a",)], workflow_ids="x")
        with pytest.raises(asyncflow.InvalidArgumentError, match="priority"):
            queue.enqueue_many(job, [("a",)], priority="high")  # type: ignore[arg-type]
    assert await conn.fetchval("select count(*) from asyncflow.workflows") == 0


@pytest.mark.not_on_citus("on Citus enqueue_many enqueues one at a time (docs/scaling.md)")
async def test_a_client_enqueues_many_by_name_in_one_statement(make_app, db_url, conn):
    runs: list[str] = []
    worker, _, _, _ = jobs_app(make_app, runs)
    async with asyncflow.Client(db_url) as client:
        assert await client.enqueue_many("q", "job", []) == []
        with pytest.raises(asyncflow.InvalidArgumentError, match="tuple"):
            await client.enqueue_many("q", "job", ["a"])  # type: ignore[list-item]
        with pytest.raises(asyncflow.InvalidArgumentError, match="one workflow id per call"):
            await client.enqueue_many("q", "job", [("a",)], workflow_ids=["x", "y"])
        with pytest.raises(asyncflow.InvalidArgumentError, match="queue name"):
            await client.enqueue_many("", "job", [("a",)])
        assert await conn.fetchval("select count(*) from asyncflow.workflows") == 0
        handles = await client.enqueue_many("q", "job", [(f"c{n}",) for n in range(5)],
                                            workflow_ids=[f"c{n}" for n in range(5)])
        assert [h.workflow_id for h in handles] == [f"c{n}" for n in range(5)]
        # One statement: its rows' times are its own time, a microsecond apart in call order.
        times = [r[0] for r in await conn.fetch(
            "select created_at from asyncflow.workflows order by workflow_id")]
        assert [(b - a).total_seconds() for a, b in itertools.pairwise(times)] == [1e-6] * 4
        rows = await conn.fetch("select status, app_version from asyncflow.workflows")
        assert {tuple(r) for r in rows} == {("ENQUEUED", "")}  # any version's worker runs them
        again = await client.enqueue_many("q", "job", [("x",)], workflow_ids=["c0"])
        assert [h.workflow_id for h in again] == ["c0"]  # an id that exists is that workflow
        async with worker:
            assert [await h.get_result(timeout_seconds=20) for h in handles] == [
                f"c{n}" for n in range(5)]
        assert runs == [f"c{n}" for n in range(5)]  # first-in first-out, in the order given
