"""Deleting workflows, and retention: only what should go goes, while workflows run."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

import asyncflow

TABLES = ("workflows", "operations", "messages", "message_keys", "events", "stream_heads",
          "streams")


async def rows_of(conn, workflow_id: str) -> dict[str, int]:
    """Rows each table holds for one workflow."""
    counts = {}
    for table in TABLES:
        column = "destination_id" if table in ("messages", "message_keys") else "workflow_id"
        counts[table] = await conn.fetchval(
            f"SELECT count(*) FROM asyncflow.{table} WHERE {column} = $1", workflow_id)
    return counts


def busy_app(make_app, **kwargs):
    """An app whose ``busy`` workflow leaves a row in every table."""
    app = make_app(**kwargs)

    @app.step()
    async def double(x: int) -> int:
        return 2 * x

    @app.workflow(name="busy")
    async def busy(x: int) -> int:
        await asyncflow.set_event("seen", x)
        await asyncflow.write_stream("out", x)
        await asyncflow.close_stream("out")
        return await double(x)

    @app.workflow(name="parked")
    async def parked() -> str:
        await asyncflow.set_event("parked", True)
        return await asyncflow.recv(timeout_seconds=3600)

    return app, busy, parked


async def test_delete_workflow_deletes_everything_of_it_and_nothing_else(make_app, conn):
    app, busy, _parked = busy_app(make_app)
    async with app:
        for workflow_id in ("gone", "kept"):
            assert await (await app.start_workflow(busy, 4, workflow_id=workflow_id)
                          ).get_result(10) == 8
            # A message waiting in the finished workflow's mailbox, and an idempotency key.
            await app.send(workflow_id, "late", idempotency_key="k")
        before = await rows_of(conn, "kept")
        assert all(before.values()), before
        assert await app.delete_workflow("gone") == ["gone"]
        assert await rows_of(conn, "gone") == dict.fromkeys(TABLES, 0)
        assert await rows_of(conn, "kept") == before
        with pytest.raises(asyncflow.WorkflowNotFoundError, match="gone"):
            await app.delete_workflow("gone")
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await app.get_workflow_status("gone")
        # The id is free again: a new workflow with it runs from scratch.
        assert await (await app.start_workflow(busy, 5, workflow_id="gone")).get_result(10) == 10


async def test_delete_refuses_pending_workflows_and_pending_descendants(make_app, conn):
    app, busy, parked = busy_app(make_app)

    @app.workflow()
    async def parent() -> str:
        child = await asyncflow.start_workflow(parked, workflow_id="child")
        await asyncflow.start_workflow(busy, 1, workflow_id="done-child")
        return child.workflow_id

    async with app:
        waiting = await app.start_workflow(parked, workflow_id="waiting")
        await app.get_event("waiting", "parked", 10)
        with pytest.raises(asyncflow.WorkflowPendingError, match="'waiting' is PENDING"):
            await app.delete_workflow("waiting")
        assert (await rows_of(conn, "waiting"))["workflows"] == 1

        assert await (await app.start_workflow(parent, workflow_id="p")).get_result(10)
        await app.get_event("child", "parked", 10)
        await (await app.retrieve_workflow("done-child")).get_result(10)
        with pytest.raises(asyncflow.WorkflowPendingError, match="descendant 'child'"):
            await app.delete_workflow("p", children=True)
        assert [(await rows_of(conn, i))["workflows"] for i in ("p", "child", "done-child")] == [
            1, 1, 1]
        # Without children only the finished parent goes; its children keep their parent id.
        assert await app.delete_workflow("p") == ["p"]
        assert (await app.get_workflow_status("child")).parent_workflow_id == "p"

        await app.cancel_workflow("waiting")
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await waiting.get_result(10)
        assert await app.delete_workflow("waiting") == ["waiting"]
        with pytest.raises(asyncflow.InvalidArgumentError):
            await app.delete_workflow("child", children="yes")


async def test_delete_with_children_deletes_the_tree(make_app, conn):
    app, busy, _parked = busy_app(make_app)

    @app.workflow()
    async def tree(depth: int) -> int:
        if depth == 0:
            return await busy(depth)
        return await tree(depth - 1) + await tree(depth - 1)

    async with app:
        assert await (await app.start_workflow(tree, 2, workflow_id="t")).get_result(20) == 0
        deleted = await app.delete_workflow("t", children=True)
        # t, 2 children, 4 grandchildren and their 4 busy children; the root first
        assert deleted[0] == "t" and len(deleted) == 11
        assert await conn.fetchval("SELECT count(*) FROM asyncflow.workflows") == 0
        assert await conn.fetchval("SELECT count(*) FROM asyncflow.operations") == 0
        assert await conn.fetchval("SELECT count(*) FROM asyncflow.streams") == 0


async def test_retention_deletes_only_what_it_should_while_workflows_run(make_app, conn):
    app, busy, parked = busy_app(make_app)
    go = asyncio.Event()
    started = asyncio.Event()

    @app.step()
    async def work(i: int) -> int:
        return i

    @app.workflow(name="looping")
    async def looping(n: int) -> int:
        started.set()
        total = 0
        for i in range(n):
            total += await work(i)
            if i == 5:
                await go.wait()  # (not durable: keeps the workflows running during the passes)
        return total

    @app.workflow(name="keeps-child")
    async def keeps_child() -> str:
        child = await asyncflow.start_workflow(busy, 3, workflow_id="finished-child")
        await child.get_result()
        await asyncflow.set_event("child done", True)
        await asyncflow.recv(timeout_seconds=3600)
        return await child.get_result()  # its result must still be there

    async with app:
        for n in range(5):
            await (await app.start_workflow(busy, n, workflow_id=f"old-{n}")).get_result(10)
        cancelled = await app.start_workflow(parked, workflow_id="cancelled")
        await app.get_event("cancelled", "parked", 10)
        await app.cancel_workflow("cancelled")
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await cancelled.get_result(10)
        waiting = await app.start_workflow(parked, workflow_id="waiting")
        keeper = await app.start_workflow(keeps_child, workflow_id="keeper")
        await app.get_event("keeper", "child done", 10)
        loops = [await app.start_workflow(looping, 40, workflow_id=f"loop-{i}")
                 for i in range(10)]
        await started.wait()

        keep_everything = asyncflow.Retention(max_age_seconds=3600)
        assert await app.apply_retention(keep_everything) == 0
        delete_finished = asyncflow.Retention(max_age_seconds=0, batch_size=2)
        assert await app.apply_retention(delete_finished, dry_run=True) == 6
        # A pass while every loop is held mid-run (batches of 2: several statements), then
        # passes while the loops record their remaining steps.
        deleted = await app.apply_retention(delete_finished)
        assert deleted == 6
        passes = [asyncio.ensure_future(app.apply_retention(delete_finished))
                  for _ in range(3)]
        go.set()
        deleted += sum(await asyncio.gather(*passes))
        gone = {f"old-{n}" for n in range(5)} | {"cancelled"}
        for workflow_id in gone:
            assert await rows_of(conn, workflow_id) == dict.fromkeys(TABLES, 0), workflow_id
        # Running workflows and the finished child of a running parent are all still there.
        for workflow_id in ("waiting", "keeper", "finished-child"):
            assert (await rows_of(conn, workflow_id))["workflows"] == 1, workflow_id
        assert [await h.get_result(30) for h in loops] == [sum(range(40))] * 10
        await app.send("keeper", "go")
        assert await keeper.get_result(10) == 6
        await app.send("waiting", "done")
        assert await waiting.get_result(10) == "done"

        # Once finished, they go too (the child with its parent): 19 finished in all.
        assert deleted + await app.apply_retention(delete_finished) == 19
        assert await conn.fetchval("SELECT count(*) FROM asyncflow.workflows") == 0
        for table in TABLES:
            assert await conn.fetchval(f"SELECT count(*) FROM asyncflow.{table}") == 0, table


async def test_retention_by_count_keeps_the_most_recently_finished(make_app, conn):
    app, busy, parked = busy_app(make_app)
    async with app:
        waiting = await app.start_workflow(parked, workflow_id="waiting")
        for n in range(8):
            await (await app.start_workflow(busy, n, workflow_id=f"w-{n}")).get_result(10)
        assert await app.apply_retention(asyncflow.Retention(max_count=3), dry_run=True) == 5
        assert await app.apply_retention(asyncflow.Retention(max_count=3)) == 5
        left = await conn.fetch("SELECT workflow_id FROM asyncflow.workflows ORDER BY 1")
        assert [r["workflow_id"] for r in left] == ["w-5", "w-6", "w-7", "waiting"]
        assert await app.apply_retention(asyncflow.Retention(max_count=3)) == 0
        assert await app.apply_retention(asyncflow.Retention(max_count=0)) == 3
        assert [w.workflow_id for w in await app.list_workflows()] == ["waiting"]
        await app.send("waiting", "x")
        assert await waiting.get_result(10) == "x"


async def test_the_app_applies_its_retention_setting_in_the_background(make_app):
    retention = asyncflow.Retention(max_age_seconds=0, interval_seconds=3600)
    app, busy, parked = busy_app(make_app, retention=retention)
    async with app:
        worker = app._retention_worker
        assert worker is not None
        await worker.wait_for_passes(1)  # the first pass runs right after launch
        assert app.health().components["retention"].healthy
        await (await app.start_workflow(busy, 1, workflow_id="a")).get_result(10)
        waiting = await app.start_workflow(parked, workflow_id="waiting")
        await app.get_event("waiting", "parked", 10)
        worker.poke()
        await worker.wait_for_passes(2)
        assert [w.workflow_id for w in await app.list_workflows()] == ["waiting"]
        assert worker.deleted == 1
        assert await app.apply_retention(dry_run=True) == 0  # the app's own setting
        await app.send("waiting", "x")
        assert await waiting.get_result(10) == "x"


async def test_retention_and_delete_check_their_input(make_app, db_url):
    for bad in ({}, {"max_age_seconds": -1}, {"max_age_seconds": float("nan")},
                {"max_age_seconds": 1e20},
                {"max_count": -1}, {"max_count": 1.5}, {"max_count": True},
                {"max_count": 1, "interval_seconds": 0}, {"max_count": 1, "batch_size": 0},
                {"max_count": 1, "batch_size": 10_001}):
        with pytest.raises(asyncflow.InvalidArgumentError):
            asyncflow.Retention(**bad)
    with pytest.raises(asyncflow.ConfigurationError):
        make_app(retention={"max_count": 1})
    async with asyncflow.Client(db_url) as client:
        with pytest.raises(asyncflow.InvalidArgumentError, match="needs a Retention"):
            await client.apply_retention()
        with pytest.raises(asyncflow.InvalidArgumentError):
            await client.delete_workflow("")
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await client.delete_workflow("nope")


async def test_sends_racing_with_deletes_fail_alone(make_app, conn):
    """Group commit: a batch of sends whose destination is deleted meanwhile fails as a whole
    on the foreign key; its sends are written again one by one, so only the sends to the
    deleted workflows fail."""
    app, busy, _parked = busy_app(make_app)
    async with app:
        for n in range(40):
            await (await app.start_workflow(busy, n, workflow_id=f"d-{n}")).get_result(10)

        async def send(n: int) -> bool:
            try:
                await app.send(f"d-{n % 40}", n)
                return True
            except asyncflow.WorkflowNotFoundError:
                return False

        async def delete_half() -> None:
            for n in range(0, 40, 2):
                await app.delete_workflow(f"d-{n}")

        results = await asyncio.gather(*(send(n) for n in range(2000)), delete_half())
        sent = results[:-1]
        assert all(sent[n] for n in range(2000) if n % 40 % 2 == 1)  # survivors got all
        for n in range(1, 40, 2):
            assert await conn.fetchval(
                "SELECT count(*) FROM asyncflow.messages WHERE destination_id = $1",
                f"d-{n}") == 50
        assert await conn.fetchval(
            "SELECT count(*) FROM asyncflow.messages WHERE destination_id NOT IN "
            "(SELECT workflow_id FROM asyncflow.workflows)") == 0


@pytest.mark.parametrize("delayed", [False, True], ids=["enqueued", "delayed"])
async def test_retention_keeps_the_children_of_a_queued_parent(make_app, conn, delayed):
    """Issue 20, item 2. A queued parent resumed back into its queue (ENQUEUED, or DELAYED)
    is not finished: the finished child it will read once it runs again is never deleted, by
    retention or by ``asyncflow gc``, so it gets the child's result."""
    app, busy, parked = busy_app(make_app)
    queue = app.queue("one", concurrency=1)

    @app.workflow()
    async def parent() -> int:
        child = await asyncflow.start_workflow(busy, 3, workflow_id="child")
        await asyncflow.set_event("started", True)
        await asyncflow.recv("go", timeout_seconds=3600)
        return await child.get_result()

    async with app:
        handle = await queue.enqueue(parent, workflow_id="p")
        await app.get_event("p", "started", 10)
        assert await (await app.retrieve_workflow("child")).get_result(10) == 6
        await app.cancel_workflow("p")
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await handle.get_result(10)
        # The queue's one slot is taken: the resumed parent waits in it.
        blocker = await queue.enqueue(parked, workflow_id="blocker")
        await app.get_event("blocker", "parked", 10)
        await app.resume_workflow("p")
        if delayed:  # (as a resumed queued workflow delayed in its queue; an hour: a delay
            # already over may be promoted to ENQUEUED before the status is read)
            await app.set_workflow_delay("p", seconds=3600)
        expected = "DELAYED" if delayed else "ENQUEUED"
        assert (await app.get_workflow_status("p")).status == expected
        retention = asyncflow.Retention(max_count=0)
        assert await app.apply_retention(retention, dry_run=True) == 0
        assert await app.apply_retention(retention) == 0
        assert (await rows_of(conn, "child"))["workflows"] == 1
        if delayed:
            await app.set_workflow_delay("p", seconds=0)  # its dispatchers are woken
        await app.send("blocker", "done")
        assert await blocker.get_result(10) == "done"
        await app.send("p", "now", topic="go")
        assert await handle.get_result(20) == 6


async def test_delete_refuses_queued_workflows_like_pending_ones(make_app, conn):
    """Issue 20, item 8. ENQUEUED and DELAYED workflows are unfinished: deleting them (or a
    tree holding one) is refused like deleting a PENDING one — cancel it first."""
    app, busy, parked = busy_app(make_app)
    queue = app.queue("one", concurrency=1)

    @app.workflow()
    async def parent() -> None:
        await queue.enqueue(busy, 1, workflow_id="queued-child", delay_seconds=3600)

    async with app:
        blocker = await queue.enqueue(parked, workflow_id="blocker")
        await app.get_event("blocker", "parked", 10)
        await queue.enqueue(busy, 2, workflow_id="enqueued")
        await queue.enqueue(busy, 3, workflow_id="delayed", delay_seconds=3600)
        await (await app.start_workflow(parent, workflow_id="p")).get_result(10)
        for workflow_id, status in (("enqueued", "ENQUEUED"), ("delayed", "DELAYED")):
            assert (await app.get_workflow_status(workflow_id)).status == status
            with pytest.raises(asyncflow.WorkflowPendingError,
                               match=f"'{workflow_id}' is {status}.*cancel it first"):
                await app.delete_workflow(workflow_id)
            assert (await rows_of(conn, workflow_id))["workflows"] == 1
        with pytest.raises(asyncflow.WorkflowPendingError, match="DELAYED descendant"):
            await app.delete_workflow("p", children=True)
        assert (await rows_of(conn, "p"))["workflows"] == 1
        await app.cancel_workflow("enqueued")
        assert await app.delete_workflow("enqueued") == ["enqueued"]
        await app.send("blocker", "done")
        assert await blocker.get_result(10) == "done"


async def test_retention_keeps_the_children_of_a_kept_finished_parent(make_app, conn):
    """A finished parent that retention keeps (newer than its bound) keeps its children, which
    its resume or replay reads again; they go with it, in the same pass. (Found by the torture
    test: the older child was deleted, so resuming the parent failed on its result and
    app.replay of the parent failed.)"""
    app = make_app()
    fail = {"now": True}

    @app.workflow(name="kid")
    async def kid(n: int) -> int:
        return n + 1

    @app.workflow(name="parent")
    async def parent() -> int:
        child = await asyncflow.start_workflow(kid, 1)
        value = await child.get_result()
        if fail["now"]:
            raise RuntimeError("first run fails after its child finished")
        return value

    async with app:
        handle = await app.start_workflow(parent, workflow_id="parent")
        with pytest.raises(RuntimeError):
            await handle.get_result(timeout_seconds=30)
        # Keep the newest finished one (the parent, which finished after its child).
        assert await app.apply_retention(asyncflow.Retention(max_count=1)) == 0
        assert await conn.fetchval("SELECT count(*) FROM asyncflow.workflows") == 2
        reports = await app.replay(["parent"])
        assert [r.outcome for r in reports] == ["ok"], reports
        fail["now"] = False
        await app.resume_workflow("parent")
        assert await handle.get_result(timeout_seconds=30) == 2
        # Both past the bound: the child goes with its parent.
        assert await app.apply_retention(asyncflow.Retention(max_count=0)) == 2
        assert await conn.fetchval("SELECT count(*) FROM asyncflow.workflows") == 0


async def test_delete_refuses_a_finished_child_of_an_unfinished_parent(make_app, conn):
    """The finished child of a running parent is not deleted (the parent may still read its
    result, again after a crash): WorkflowPendingError names the parent, nothing is deleted;
    once the parent has finished, the child may go. (Found by the torture test: a running
    workflow's journal named a child that had been deleted.)"""
    app, busy, _parked = busy_app(make_app)

    @app.workflow(name="waits-then-reads")
    async def waits_then_reads() -> int:
        child = await asyncflow.start_workflow(busy, 2, workflow_id="kid")
        await child.get_result()
        await asyncflow.set_event("child finished", True)
        await asyncflow.recv("go", timeout_seconds=60)
        return await child.get_result()

    async with app:
        handle = await app.start_workflow(waits_then_reads, workflow_id="reader")
        assert await app.get_event("reader", "child finished", 30)
        with pytest.raises(asyncflow.WorkflowPendingError, match="child of 'reader'"):
            await app.delete_workflow("kid")
        assert (await rows_of(conn, "kid"))["workflows"] == 1
        await app.send("reader", "now", "go")
        assert await handle.get_result(timeout_seconds=30) == 4
        assert await app.delete_workflow("kid") == ["kid"]


async def test_retention_keeps_the_children_of_a_parent_it_skips(make_app, conn, db_url):
    """A finished parent whose row is busy (locked elsewhere: being resumed, or a cancelled
    execution's last write) is left for the next pass, and so are its children: a child goes
    only once its parent is gone. (Found by the torture test: the child was deleted, the parent
    kept and resumed, and its re-run failed on the child's result.)"""
    app = make_app()

    @app.workflow(name="kid")
    async def kid() -> int:
        return 1

    @app.workflow(name="parent")
    async def parent() -> int:
        return await (await asyncflow.start_workflow(kid)).get_result()

    async with app:
        assert await (await app.start_workflow(parent, workflow_id="busy")).get_result(30) == 1
        locker = await asyncpg.connect(db_url)
        try:
            async with locker.transaction():
                await locker.execute("SELECT 1 FROM asyncflow.workflows "
                                     "WHERE workflow_id = 'busy' FOR SHARE")
                everything = asyncflow.Retention(max_age_seconds=0)
                assert await app.apply_retention(everything) == 0
                assert await conn.fetchval("SELECT count(*) FROM asyncflow.workflows") == 2
        finally:
            await locker.close()
        assert await app.apply_retention(everything) == 2
        assert await conn.fetchval("SELECT count(*) FROM asyncflow.workflows") == 0


async def test_retention_and_delete_keep_the_children_a_fork_reads(make_app, conn):
    """A fork's journal names the children its source started before the fork's operation (they
    keep the source as their parent). While the fork runs, retention keeps such a child though
    its parent goes, and deleting the source with its children is refused (found by the torture
    test: the fork's get_result then raised WorkflowNotFoundError)."""
    app = make_app()

    @app.workflow(name="kid")
    async def kid() -> int:
        return 7

    @app.workflow(name="source")
    async def source() -> int:
        got = await (await app.start_workflow(kid, workflow_id="src-kid")).get_result()
        await asyncflow.recv("go", timeout_seconds=3600)
        return got

    async with app:
        src = await app.start_workflow(source, workflow_id="src")
        await app._waits.wait_for_count(1)  # parked in its recv: the child's entry is journaled
        await app.send("src", 1, topic="go")
        assert await src.get_result(timeout_seconds=30) == 7
        steps = await app.list_workflow_steps("src")
        recv_at = next(step.function_id for step in steps if step.name == "asyncflow.recv")
        fork = await app.fork_workflow("src", recv_at, workflow_id="src-fork")
        with pytest.raises(asyncflow.WorkflowPendingError, match="src-fork"):
            await app.delete_workflow("src", children=True)
        assert await app.apply_retention(asyncflow.Retention(max_age_seconds=0)) == 1
        assert await rows_of(conn, "src") == {t: 0 for t in await rows_of(conn, "src")}
        assert (await app.get_workflow_status("src-kid")).status == "SUCCESS"  # kept
        await app.send("src-fork", 2, topic="go")
        assert await fork.get_result(timeout_seconds=30) == 7  # its child's result, read again
        # Once the fork has finished, retention may take the child too.
        assert await app.apply_retention(asyncflow.Retention(max_age_seconds=0)) == 2
