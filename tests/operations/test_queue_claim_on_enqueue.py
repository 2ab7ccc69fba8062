"""An enqueue in an app that serves the queue claims in its own statement: the workflow runs
here after one commit and the queue is not notified. A queue without limits inserts it as this
process's own unless another workflow waits first; a limited one claims under the queue's lock
(migration 17), never waiting for a claim in progress elsewhere. Limits and order hold
(docs/guide.md, "Queues").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
from queuelib import parked

import asyncflow

pytestmark = pytest.mark.not_on_citus(
    "on Citus an enqueue does not claim (the dispatcher claims after the NOTIFY)")

CHANNEL = "asyncflow_asyncflow"


@asynccontextmanager
async def notifications(db_url: str) -> AsyncIterator[list[str]]:
    """The payloads NOTIFYed on the app's channel while the block runs, up to a marker sent
    at its end (delivered in commit order: every earlier payload is in by then)."""
    payloads: list[str] = []
    marker = asyncio.Event()

    def hear(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == "marker":
            marker.set()
        else:
            payloads.append(payload)

    listener = await asyncpg.connect(db_url)
    try:
        await listener.add_listener(CHANNEL, hear)
        yield payloads
        await listener.execute(f"NOTIFY {CHANNEL}, 'marker'")
        async with asyncio.timeout(30):
            await marker.wait()
    finally:
        await listener.close()


def gated(make_app, **limits):
    app = make_app()
    queue = app.queue("q", **limits)
    started: dict[str, asyncio.Event] = {}
    order: list[str] = []
    gate = asyncio.Event()

    @app.workflow(name="job")
    async def job(tag: str) -> str:
        order.append(tag)
        started.setdefault(tag, asyncio.Event()).set()
        await gate.wait()
        return tag

    async def running(tag: str) -> None:
        async with asyncio.timeout(30):
            await started.setdefault(tag, asyncio.Event()).wait()

    return app, queue, job, gate, running, order


@pytest.mark.parametrize("limits", [{}, {"concurrency": 5}], ids=["no-limits", "limited"])
async def test_an_enqueue_here_claims_with_its_insert_and_notifies_nobody(make_app, db_url,
                                                                          conn, limits):
    app, queue, job, gate, running, _order = gated(make_app, **limits)
    async with app:
        warm = await queue.enqueue(job, "warm")  # (its queue's row exists then)
        await running("warm")
        await parked(app)  # no claim of the dispatcher in flight (nothing ends meanwhile)
        async with notifications(db_url) as payloads:
            handle = await queue.enqueue(job, "a")
            # Claimed by the enqueue's own statement: PENDING here when the call returns.
            row = await conn.fetchrow("select status, executor_id, dispatched_at "
                                      "from asyncflow.workflows where workflow_id = $1",
                                      handle.workflow_id)
            assert (row["status"], row["executor_id"]) == ("PENDING", app.executor_id)
            assert row["dispatched_at"] is not None
            await running("a")
        assert "qq" not in payloads  # no other process was woken for it
        gate.set()
        assert await handle.get_result(timeout_seconds=30) == "a"
        assert await warm.get_result(timeout_seconds=30) == "warm"


async def test_the_limits_and_the_order_hold(make_app, conn):
    app, queue, job, gate, running, order = gated(make_app, concurrency=1)
    async with app:
        handles = [await queue.enqueue(job, tag) for tag in "abc"]
        await running("a")
        assert await conn.fetchval(
            "select count(*) from asyncflow.workflows where status = 'ENQUEUED'") == 2
        gate.set()
        assert [await h.get_result(timeout_seconds=30) for h in handles] == ["a", "b", "c"]
        assert order == ["a", "b", "c"]


async def test_a_claim_in_progress_is_not_waited_for(make_app, db_url, conn):
    app, queue, job, gate, _running, _order = gated(make_app, concurrency=5)
    gate.set()
    async with app:
        await (await queue.enqueue(job, "warm")).get_result(timeout_seconds=30)
        await parked(app)
        holder = await asyncpg.connect(db_url)
        try:
            tx = holder.transaction()
            await tx.start()
            # What a claim holds while it runs (elsewhere, or this app's dispatcher).
            await holder.execute(
                "select 1 from asyncflow.queues where queue_name = 'q' for update")
            async with notifications(db_url) as payloads:
                async with asyncio.timeout(10):
                    handle = await queue.enqueue(job, "b")  # returns: nothing waited
                assert await conn.fetchval(
                    "select status from asyncflow.workflows where workflow_id = $1",
                    handle.workflow_id) == "ENQUEUED"
            assert "qq" in payloads  # left in the queue: its dispatchers are told
            await tx.rollback()
        finally:
            await holder.close()
        assert await handle.get_result(timeout_seconds=30) == "b"


async def test_an_existing_id_or_a_held_deduplication_id_claims_nothing(make_app, conn):
    app, queue, job, gate, running, _order = gated(make_app)
    async with app:
        first = await queue.enqueue(job, "a", workflow_id="same", deduplication_id="d")
        await running("a")
        again = await queue.enqueue(job, "a", workflow_id="same")
        assert again.workflow_id == "same"
        with pytest.raises(asyncflow.QueueDeduplicatedError):
            await queue.enqueue(job, "x", deduplication_id="d")
        holder = await queue.enqueue(job, "x", deduplication_id="d",
                                     on_duplicate="return_existing")
        assert holder.workflow_id == "same"
        assert await conn.fetchval("select count(*) from asyncflow.workflows") == 1
        gate.set()
        assert await first.get_result(timeout_seconds=30) == "a"


async def test_a_waiting_workflow_goes_first(make_app, db_url):
    app, queue, job, gate, running, _order = gated(make_app)
    gate.set()
    async with app:
        async with asyncflow.Client(db_url) as client:  # a workflow no process here runs
            other = await client.enqueue("q", "elsewhere")
        async with notifications(db_url) as payloads:
            handle = await queue.enqueue(job, "b")
            await running("b")
        assert "qq" in payloads  # not taken past the waiting one: queued, and notified
        assert await handle.get_result(timeout_seconds=30) == "b"
        assert (await (await app.retrieve_workflow(other.workflow_id)).get_status()).status \
            == asyncflow.ENQUEUED


async def test_a_lost_claim_is_put_back_only_once_the_enqueue_started_its_own(make_app, conn,
                                                                               monkeypatch):
    """A claim of the dispatcher failing (outcome unknown) while an enqueue here holds claimed
    workflows it has not started yet: the put-back (this executor's PENDING workflows not
    running) waits for the enqueue, so the workflow it claimed is not taken from it."""
    app, queue, job, gate, _running, _order = gated(make_app)
    gate.set()
    async with app:
        await (await queue.enqueue(job, "warm")).get_result(timeout_seconds=30)
        await parked(app)
        dispatcher = app._dispatchers["q"]
        store = app.runtime.store
        held, resume, checked = asyncio.Event(), asyncio.Event(), asyncio.Event()
        start = dispatcher._start

        async def slow_start(claim):
            held.set()
            await resume.wait()
            await start(claim)

        claim_queued = type(store).claim_queued

        async def claim_and_tell(self, *args, **kwargs):
            try:
                return await claim_queued(self, *args, **kwargs)
            finally:
                checked.set()

        dispatcher._start = slow_start
        monkeypatch.setattr(type(store), "claim_queued", claim_and_tell)
        enqueuing = asyncio.ensure_future(queue.enqueue(job, "b"))
        async with asyncio.timeout(30):
            await held.wait()  # claimed by the enqueue's statement, not started yet
        dispatcher._uncertain = True  # as after a claim whose outcome was lost
        app.runtime.waits.wake("q", "q")
        async with asyncio.timeout(30):
            await checked.wait()  # the dispatcher checked meanwhile
        [row] = await conn.fetch("select status, epoch, executor_id from asyncflow.workflows "
                                 "where inputs like '%\"b\"%'")
        assert (row["status"], row["epoch"], row["executor_id"]) == (
            "PENDING", 1, app.executor_id)  # still the enqueue's
        checked.clear()
        resume.set()
        handle = await enqueuing
        async with asyncio.timeout(30):
            await checked.wait()  # woken by the enqueue once done: the put-back ran then
        assert dispatcher._uncertain is False
        assert await handle.get_result(timeout_seconds=30) == "b"
