"""Cancelling down the tree of children, and cancelling or resuming in bulk by filter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import citus_cluster
import pytest
from faultlib import FaultProxy

import asyncflow


def tree_app(make_app):
    """An app whose ``root`` starts ``middle`` (which starts a parked ``leaf``) and a ``quick``
    child that finishes at once, then waits for ``middle``."""
    app = make_app()

    @app.workflow(name="leaf")
    async def leaf() -> str:
        return await asyncflow.recv("go", timeout_seconds=3600)

    @app.workflow(name="middle")
    async def middle() -> str:
        handle = await asyncflow.start_workflow(leaf)
        return await handle.get_result()

    @app.workflow(name="quick")
    async def quick() -> str:
        return "quick"

    @app.workflow(name="root")
    async def root() -> str:
        waiting = await asyncflow.start_workflow(middle)
        assert await (await asyncflow.start_workflow(quick)).get_result() == "quick"
        return await waiting.get_result()

    return app, root


async def statuses(app, *ids):
    return [(await app.get_workflow_status(i)).status for i in ids]


async def test_cancel_cascades_to_pending_descendants(make_app):
    app, root = tree_app(make_app)
    async with app:
        handle = await app.start_workflow(root, workflow_id="r")
        await app._waits.wait_for_count(3)  # leaf in recv, middle and root awaiting results
        # root parks first on quick (r-1), then on middle: let quick's result be in.
        assert await (await app.retrieve_workflow("r-1")).get_result(10) == "quick"
        assert await statuses(app, "r", "r-0", "r-0-0", "r-1") == [
            "PENDING", "PENDING", "PENDING", "SUCCESS"]
        await app.cancel_workflow("r")
        for workflow_id in ("r", "r-0", "r-0-0"):
            with pytest.raises(asyncflow.WorkflowCancelledError):
                await (await app.retrieve_workflow(workflow_id)).get_result(10)
        assert await statuses(app, "r-1") == ["SUCCESS"]  # finished children stay as they are
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await handle.get_result(1)


async def test_cancel_without_children_leaves_them_running(make_app):
    app, root = tree_app(make_app)
    async with app:
        await app.start_workflow(root, workflow_id="r")
        await app._waits.wait_for_count(3)
        await app.cancel_workflow("r", children=False)
        assert await statuses(app, "r", "r-0", "r-0-0") == ["CANCELLED", "PENDING", "PENDING"]
        await app.send("r-0-0", "went", "go")
        assert await (await app.retrieve_workflow("r-0")).get_result(10) == "went"


async def test_cancelling_a_finished_parent_cancels_its_pending_children(make_app):
    app = make_app()

    @app.workflow()
    async def parked() -> None:
        await asyncflow.recv(timeout_seconds=3600)

    @app.workflow()
    async def starter() -> str:
        handle = await asyncflow.start_workflow(parked)
        return handle.workflow_id

    async with app:
        child = await starter()
        await app._waits.wait_for_count(1)
        parent = (await app.get_workflow_status(child)).parent_workflow_id
        assert parent is not None
        await app.cancel_workflow(parent)
        assert await statuses(app, parent, child) == ["SUCCESS", "CANCELLED"]


async def test_a_child_started_by_an_already_cancelled_parent_is_never_started(make_app, conn):
    """The parent was cancelled (here by another party, without a notification reaching it)
    just before it started a child: the child's insert is fenced by the parent's ownership, so
    no child is started at all (none left running with no journal knowing of it)."""
    app = make_app()
    entered, go = asyncio.Event(), asyncio.Event()

    @app.workflow()
    async def parked() -> None:
        await asyncflow.recv(timeout_seconds=3600)

    @app.workflow()
    async def parent() -> None:
        entered.set()
        await go.wait()  # (not durable: the test holds the parent between two operations)
        await asyncflow.start_workflow(parked, workflow_id="orphan")

    async with app:
        handle = await app.start_workflow(parent, workflow_id="p")
        await entered.wait()
        await conn.execute("UPDATE asyncflow.workflows SET status = 'CANCELLED' "
                           "WHERE workflow_id = 'p'")
        go.set()
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await handle.get_result(10)
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await app.retrieve_workflow("orphan")
        assert await conn.fetchval("select count(*) from asyncflow.operations "
                                   "where workflow_id = 'p'") == 0


async def test_cancel_and_resume_in_bulk_by_filter(make_app, db_url):
    app = make_app()
    broken = {"now": True}

    @app.workflow(name="parked")
    async def parked(n: int) -> int:
        return n + await asyncflow.recv(timeout_seconds=3600)

    @app.workflow(name="other")
    async def other() -> str:
        return await asyncflow.recv(timeout_seconds=3600)

    @app.workflow(name="fails-once")
    async def fails_once(n: int) -> int:
        if broken["now"]:  # a bug in the workflow's code, fixed before the resume
            raise ValueError(f"broken {n}")
        return n

    async with app:
        for n in range(6):
            await app.start_workflow(parked, n, workflow_id=f"bulk-{n}")
        await app.start_workflow(other, workflow_id="other")
        await app._waits.wait_for_count(7)
        with pytest.raises(asyncflow.InvalidArgumentError, match="at least one filter"):
            await app.cancel_workflows()
        cancelled = await app.cancel_workflows(name="parked", workflow_id_prefix="bulk-")
        assert sorted(cancelled) == [f"bulk-{n}" for n in range(6)]
        for n in range(6):
            with pytest.raises(asyncflow.WorkflowCancelledError):
                await (await app.retrieve_workflow(f"bulk-{n}")).get_result(10)
        assert await statuses(app, "other") == ["PENDING"]
        assert await app.cancel_workflows(name="parked") == []  # nothing PENDING is left

        # Resume from a Client (another connection): the app's supervisor claims them.
        failed = [await app.start_workflow(fails_once, n, workflow_id=f"f-{n}")
                  for n in range(3)]
        for handle in failed:
            with pytest.raises(ValueError, match="broken"):
                await handle.get_result(10)
        broken["now"] = False
        async with asyncflow.Client(db_url) as client:
            with pytest.raises(asyncflow.InvalidArgumentError, match="cannot be selected"):
                await client.resume_workflows(status="SUCCESS")
            only_cancelled = await client.resume_workflows(
                status="CANCELLED", created_before=datetime.now(UTC))
            assert sorted(only_cancelled) == [f"bulk-{n}" for n in range(6)]
            resumed = await client.resume_workflows(name="fails-once")
        assert sorted(resumed) == ["f-0", "f-1", "f-2"]
        assert [await h.get_result(30) for h in failed] == [0, 1, 2]
        await app.send_many([(f"bulk-{n}", 10) for n in range(6)])
        assert [await (await app.retrieve_workflow(f"bulk-{n}")).get_result(30)
                for n in range(6)] == [10, 11, 12, 13, 14, 15]
        # The app resumed them itself too (woken at once, not at the next sweep).
        broken["now"] = True
        again = await app.start_workflow(fails_once, 7, workflow_id="f-7")
        with pytest.raises(ValueError):
            await again.get_result(10)
        broken["now"] = False
        assert await app.resume_workflows(workflow_id_prefix="f-7") == ["f-7"]
        assert await again.get_result(30) == 7


async def test_bulk_cancel_cascades_and_opts_out(make_app):
    app, root = tree_app(make_app)
    async with app:
        await app.start_workflow(root, workflow_id="a")
        await app.start_workflow(root, workflow_id="b")
        await app._waits.wait_for_count(6)
        cancelled = await app.cancel_workflows(name="root", children=False,
                                               workflow_id_prefix="a")
        assert cancelled == ["a"]
        assert await statuses(app, "a-0", "a-0-0") == ["PENDING", "PENDING"]
        cancelled = await app.cancel_workflows(name="root")
        assert cancelled[0] == "b"  # the matches first, then their descendants
        assert sorted(cancelled) == ["b", "b-0", "b-0-0"]
        assert await statuses(app, "a-0", "a-0-0") == ["PENDING", "PENDING"]
        await app.cancel_workflow("a")  # cancelled already: its descendants still are
        assert await statuses(app, "a-0", "a-0-0") == ["CANCELLED", "CANCELLED"]


# -- issue 20, item 3: a parent and its descendants are cancelled in one transaction -----------

#: Text of the statement that cancels descendants (sent when first used on a connection).
#: What the statement cancelling descendants sends (on Citus its form calls the coordinator's
#: tree walk instead of a recursive CTE).
DESCENDANTS = b"descendants(" if citus_cluster.ENABLED else b"c.parent_workflow_id = ANY"


@pytest.fixture
async def cutter(db_url):
    proxy = FaultProxy(db_url)
    url = await proxy.start()
    yield proxy, url
    await proxy.close()


def parent_and_child(app, timeout_seconds=None):
    @app.workflow(name="child")
    async def child() -> str:
        return await asyncflow.recv("go", timeout_seconds=3600)

    @app.workflow(name="parent", timeout_seconds=timeout_seconds)
    async def parent() -> str:
        handle = await asyncflow.start_workflow(child, workflow_id="c")
        return await handle.get_result()

    return parent


async def test_a_timed_out_parent_and_its_children_are_cancelled_together(cutter):
    """The deadline watcher cancels the parent and its descendants in one transaction: the
    connection cut while it cancels the descendants rolls the parent's cancel back too, so the
    next try (the parent is still due) cancels both. (Two transactions would leave the child
    running forever: the parent would no longer be due.)"""
    proxy, url = cutter
    app = asyncflow.AsyncFlow(url)
    parent = parent_and_child(app, timeout_seconds=1.5)
    async with asyncio.timeout(60), app:
        fired = proxy.arm(DESCENDANTS, after=False)
        handle = await app.start_workflow(parent, workflow_id="p")
        with pytest.raises(asyncflow.WorkflowTimeoutError):
            await handle.get_result(20)
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await (await app.retrieve_workflow("c")).get_result(20)
        assert fired.is_set()


@pytest.mark.parametrize("bulk", [False, True], ids=["one", "bulk"])
async def test_a_cancel_cut_midway_leaves_nothing_half_cancelled(cutter, bulk):
    """cancel_workflow and cancel_workflows cancel workflows and their descendants in one
    transaction: cut while cancelling the descendants, they cancel nothing (the caller gets
    DatabaseUnavailableError and may call again), never the parent alone."""
    proxy, url = cutter
    app = asyncflow.AsyncFlow(url)
    parent = parent_and_child(app)
    async with asyncio.timeout(60), app:
        handle = await app.start_workflow(parent, workflow_id="p")
        await app._waits.wait_for_count(2)  # the child in recv, the parent on its result
        fired = proxy.arm(DESCENDANTS, after=False)
        cancel = (app.cancel_workflows(workflow_id_prefix="p") if bulk
                  else app.cancel_workflow("p"))
        with pytest.raises(asyncflow.DatabaseUnavailableError):
            await cancel
        assert fired.is_set()
        assert await statuses(app, "p", "c") == ["PENDING", "PENDING"]
        await (app.cancel_workflows(workflow_id_prefix="p") if bulk
               else app.cancel_workflow("p"))
        assert await statuses(app, "p", "c") == ["CANCELLED", "CANCELLED"]
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await handle.get_result(20)
