"""Group commit: concurrent operations share statements, each keeps its own outcome, and the
batched NOTIFYs wake every key (also across processes, split below Postgres's payload limit)."""

from __future__ import annotations

import asyncio

import pytest

import asyncflow
from asyncflow._core.wait import decode_payload
from asyncflow._errors import _ExecutionConflict
from asyncflow._storage.batcher import Batcher


def test_batched_payloads_decode_any_id():
    ids = ["plain", "a:b", "12:x", "é-ü", "", "*weird*", "x" * 1000]
    payload = "*" + "".join(f"m{len(i)}:{i}" for i in ids)
    assert decode_payload(payload) == [("m", i) for i in ids]
    assert decode_payload("tabc") == [("t", "abc")]
    assert decode_payload("") == []
    assert decode_payload("*m5:ab") == [("m", "ab")]  # a truncated item is cut, never misread


async def test_settled_sees_each_success_before_any_caller_resumes():
    """The batcher's ``settled`` hook is told of each operation written successfully (the lone
    one, the batch's leader and the rest alike) as soon as its statement returned, before any
    caller of the batch resumes; a failed operation is not settled."""
    release = asyncio.Event()
    settled: list[int] = []

    async def many(ops: list[int]) -> list[int | BaseException]:
        await release.wait()
        return [ValueError(op) if op == 3 else op * 10 for op in ops]

    async def one(op: int) -> int:
        await release.wait()
        return op * 10

    batcher: Batcher[int, int] = Batcher(many, one, settled=lambda op, r: settled.append(op))

    async def call(op: int) -> tuple[int | str, list[int]]:
        try:
            result: int | str = await batcher.submit(op)
        except ValueError:
            result = "failed"
        return result, list(settled)  # what was settled when this caller resumed

    lone = asyncio.ensure_future(call(0))
    await asyncio.sleep(0)  # the lone op is in its statement: the next ones queue
    batch = [asyncio.ensure_future(call(op)) for op in range(1, 6)]
    await asyncio.sleep(0)
    release.set()
    assert await lone == (0, [0])
    results = await asyncio.gather(*batch)
    assert [r for r, _ in results] == [10, 20, "failed", 40, 50]
    assert settled == [0, 1, 2, 4, 5]
    assert all(seen == [0, 1, 2, 4, 5] for _, seen in results)  # the batch was settled first
    assert (batcher.batches, batcher.ops) == (2, 6)


async def test_concurrent_sends_batch_and_fail_alone(make_app):
    app = make_app()

    @app.workflow()
    async def sink(n: int) -> list:
        return [await asyncflow.recv("t", timeout_seconds=30) for _ in range(n)]

    async with app:
        handles = [await app.start_workflow(sink, 5) for _ in range(40)]
        store = app.runtime.store
        before = (store.sends.batches, store.sends.ops)
        calls = [app.send(h.workflow_id, i, topic="t") for i in range(5) for h in handles]
        calls += [app.send(f"missing-{k}", 1) for k in range(5)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        batches, ops = store.sends.batches - before[0], store.sends.ops - before[1]
        assert ops == 205 and batches < ops  # they shared statements
        good, bad = outcomes[:200], outcomes[200:]
        assert all(o is asyncflow.Delivery.DELIVERED for o in good)  # each its own answer
        for k, error in enumerate(bad):
            assert isinstance(error, asyncflow.WorkflowNotFoundError)
            assert f"missing-{k}" in str(error)
        for h in handles:  # per-destination FIFO held inside batches
            assert await h.get_result(timeout_seconds=30) == [0, 1, 2, 3, 4]


async def test_concurrent_closes_batch_and_each_keeps_its_outcome(make_app):
    """Stream closes of many workflows share statements: each stream is closed (its reader
    ends, a later write fails as closed), one workflow closing two streams at once closes both,
    and a close refused as not owned, or as journaled by another execution, is answered so
    alone."""
    app = make_app()
    go = asyncio.Event()

    @app.step()
    async def ready() -> None:
        await go.wait()

    @app.workflow()
    async def closer(index: int) -> str:
        await asyncflow.write_stream("s", index)
        await ready()
        if index == 0:  # two streams closed at once by one workflow
            await asyncio.gather(asyncflow.close_stream("s"), asyncflow.close_stream("t"))
        else:
            await asyncflow.close_stream("s")
        try:
            await asyncflow.write_stream("s", "late")
        except asyncflow.StreamClosedError:
            return "closed"
        return "open"

    @app.workflow()
    async def closes_and_waits() -> None:
        await asyncflow.close_stream("s")
        await asyncflow.recv("go", timeout_seconds=30)

    async with app:
        handles = [await app.start_workflow(closer, i) for i in range(40)]
        store = app.runtime.store
        before = (store.closes.batches, store.closes.ops)
        go.set()
        assert [await h.get_result(timeout_seconds=30) for h in handles] == ["closed"] * 40
        batches, ops = store.closes.batches - before[0], store.closes.ops - before[1]
        assert ops == 41 and batches < ops  # they shared statements
        for index, handle in enumerate(handles):
            assert [v async for v in app.read_stream(handle.workflow_id, "s")] == [index]
        assert [v async for v in app.read_stream(handles[0].workflow_id, "t")] == []
        # Each head names the operation that closed it (what a fork copies by).
        heads = await store.storage.fetch(
            "SELECT h.closed_by, o.function_id FROM {s}.stream_heads h"
            " JOIN {s}.operations o ON o.workflow_id = h.workflow_id"
            "  AND o.name = 'asyncflow.close_stream' AND o.output::jsonb ->> 'key' = h.key"
            " WHERE h.workflow_id = ANY ($1::text[])", [h.workflow_id for h in handles])
        assert len(heads) == 41 and all(r["closed_by"] == r["function_id"] for r in heads)
        # A running workflow's close journaled already (by "another execution"), and a close at
        # a stale epoch (not owned), in one batch.
        parked = await app.start_workflow(closes_and_waits)
        await app.runtime.waits.wait_for_count(1)
        function_id = await store.storage.fetchval(
            "SELECT function_id FROM {s}.operations WHERE workflow_id = $1 AND name = $2",
            parked.workflow_id, "asyncflow.close_stream")
        results = await store._close_many([
            (parked.workflow_id, function_id, "asyncflow.close_stream", "s", 1),
            (parked.workflow_id, 900, "asyncflow.close_stream", "u", 0)])
        assert isinstance(results[0], _ExecutionConflict) and results[1] is None
        await app.send(parked.workflow_id, None, "go")
        await parked.get_result(timeout_seconds=30)


async def test_idempotency_keys_inside_one_batch(make_app):
    app = make_app()

    @app.workflow()
    async def sink() -> list:
        first = await asyncflow.recv(timeout_seconds=30)
        rest = await asyncflow.recv(timeout_seconds=0.2)
        return [first, rest]

    async with app:
        handle = await app.start_workflow(sink)
        await asyncio.gather(*(app.send(handle.workflow_id, i, idempotency_key="once")
                               for i in range(20)))
        first, rest = await handle.get_result(timeout_seconds=30)
        assert rest is None and first in range(20)


async def test_concurrent_stream_writers_stay_gapless(make_app):
    app = make_app()

    @app.workflow()
    async def writer(n: int) -> int:
        for i in range(n):
            await asyncflow.write_stream("s", i)
        await asyncflow.close_stream("s")
        return n

    async with app:
        handles = await asyncio.gather(*(app.start_workflow(writer, 30) for _ in range(30)))
        await asyncio.gather(*(h.get_result(timeout_seconds=60) for h in handles))
        store = app.runtime.store
        assert store.writes.batches < store.writes.ops
        for h in handles:
            entries = [e async for e in app.stream_entries(h.workflow_id, "s")]
            assert entries == [(i, i) for i in range(30)]


async def test_journal_batch_reports_each_outcome(make_app):
    app = make_app()
    @app.workflow()
    async def idle() -> None:
        await asyncflow.recv("never", timeout_seconds=60)

    @app.workflow()
    async def done() -> int:
        return 1

    async with app:
        live = [await app.start_workflow(idle) for _ in range(30)]
        finished = await app.start_workflow(done)
        await finished.get_result(timeout_seconds=30)
        store = app.runtime.store
        # An entry that exists already: recv #0 of the first idle workflow.
        await app._waits.wait_for_count(30)
        calls = [store.record_operation(h.workflow_id, 100, "x", 1, output="1") for h in live]
        calls.append(store.record_operation(live[0].workflow_id, 0, "asyncflow.recv", 1))
        calls.append(store.record_operation(finished.workflow_id, 100, "x", 1))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert outcomes[:30] == [True] * 30
        assert isinstance(outcomes[30], _ExecutionConflict)
        assert outcomes[31] is False


async def test_big_batches_wake_another_process_through_split_notifies(make_app, db_url):
    """300 workflows with 900-byte ids are parked in recv; a Client sends to all of them at
    once. Its batched NOTIFYs must be split below 8000 bytes and wake every one."""
    app = make_app()

    @app.workflow()
    async def parked() -> int:
        return await asyncflow.recv(timeout_seconds=60)

    async with app:
        ids = [f"{k:04d}" + "x" * 896 for k in range(300)]
        for wid in ids:
            await app.start_workflow(parked, workflow_id=wid)
        await app._waits.wait_for_count(300)
        async with asyncflow.Client(db_url) as client:
            await asyncio.gather(*(client.send(wid, k) for k, wid in enumerate(ids)))
            assert client.runtime.store.sends.batches < 300
        results = [await (await app.retrieve_workflow(w)).get_result(timeout_seconds=60)
                   for w in ids]
        assert results == list(range(300))


@pytest.mark.parametrize("count", [1, 2])
async def test_a_lone_operation_is_written_at_once(make_app, count):
    app = make_app()

    @app.step()
    async def noop() -> None:
        return None

    @app.workflow()
    async def one() -> None:
        for _ in range(count):
            await noop()

    async with app:
        store = app.runtime.store
        await (await app.start_workflow(one)).get_result(timeout_seconds=30)
        assert store.records.batches == store.records.ops  # nothing waited for company


async def test_a_stream_write_colliding_with_a_concurrent_writer_fails_nobody(make_app):
    """Issue 20, item 1. A step's stream writes commit with its checkpoint (holding the stream
    head's lock) while the workflow body writes to the same stream through group commit: a
    batch whose offsets were read before such a commit collides with it (the streams primary
    key). The batch is written again one by one (each write then takes the head's lock and its
    next offset), so every workflow succeeds and each stream holds every write once, in
    offsets without gaps."""
    app = make_app()

    @app.step()
    async def step_writes(n: int) -> None:
        for i in range(n):
            await asyncflow.write_stream("s", ["step", i])

    @app.workflow()
    async def both(n: int) -> int:
        async def body_writes() -> None:
            for i in range(n):
                await asyncflow.write_stream("s", ["body", i])

        await asyncio.gather(step_writes(n), body_writes(), step_writes(n))
        await asyncflow.close_stream("s")
        return n

    async with app:
        n = 20
        handles = await asyncio.gather(*(app.start_workflow(both, n) for _ in range(50)))
        outcomes = await asyncio.gather(*(h.get_result(timeout_seconds=60) for h in handles),
                                        return_exceptions=True)
        assert outcomes == [n] * 50
        for h in handles:
            entries = [e async for e in app.stream_entries(h.workflow_id, "s")]
            assert [offset for offset, _ in entries] == list(range(3 * n))
            values = sorted(tuple(v) for _, v in entries)
            assert values == sorted([("body", i) for i in range(n)]
                                    + [("step", i) for i in range(n)] * 2)
