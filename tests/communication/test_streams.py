"""Streams: ordered, offset-addressed, exactly-once writes, closed explicitly or by the end."""

from __future__ import annotations

import asyncio

import pytest

import asyncflow


async def _read(app, wid, key, offset=0):
    return [v async for v in app.read_stream(wid, key, offset=offset)]


async def test_order_offsets_keys_and_close(make_app):
    app = make_app()

    @app.workflow()
    async def writer():
        for i in range(5):
            await asyncflow.write_stream("numbers", i)
            await asyncflow.write_stream("letters", "abcde"[i])
        await asyncflow.close_stream("numbers")
        await asyncflow.recv(timeout_seconds=10)  # still running; "letters" stays open
        await app.write_stream("letters", "f")

    async with app:
        h = await app.start_workflow(writer, workflow_id="w")
        assert await _read(app, "w", "numbers") == [0, 1, 2, 3, 4]
        assert await _read(app, "w", "numbers", offset=3) == [3, 4]
        assert await _read(app, "w", "numbers", offset=10) == []
        entries = [e async for e in app.stream_entries("w", "numbers", offset=1)]
        assert entries == [(1, 1), (2, 2), (3, 3), (4, 4)]
        letters = []

        async def follow():
            async for v in app.read_stream("w", "letters"):
                letters.append(v)

        reader = asyncio.ensure_future(follow())
        await app._waits.wait_for_count(2)  # the writer's recv + the parked reader
        assert letters == list("abcde")
        await app.send("w", "finish")
        await h.get_result()
        await asyncio.wait_for(reader, 10)  # ends because the writer ended
        assert letters == list("abcdef")


@pytest.mark.parametrize("ending", ["success", "error", "cancel"])
async def test_streams_close_when_the_workflow_ends(make_app, ending):
    app = make_app()

    @app.workflow()
    async def writer():
        await asyncflow.write_stream("s", "first")
        await asyncflow.recv(timeout_seconds=10)
        if ending == "error":
            raise RuntimeError("writer failed")
        return "ok"

    async with app:
        await app.start_workflow(writer, workflow_id="w")
        got = []

        async def follow():
            async for v in app.read_stream("w", "s"):
                got.append(v)

        reader = asyncio.ensure_future(follow())
        await app._waits.wait_for_count(2)  # the writer's recv and the reader
        assert got == ["first"]
        if ending == "cancel":
            await app.cancel_workflow("w")
        else:
            await app.send("w", "go")
        await asyncio.wait_for(reader, 10)
        assert got == ["first"]


async def test_step_retry_does_not_duplicate_stream_values(make_app, conn):
    app = make_app()
    attempts = []

    @app.step(retries=3, retry_interval_seconds=0.01)
    async def produce():
        attempts.append(1)
        for i in range(3):
            await asyncflow.write_stream("out", f"v{i}-attempt{len(attempts)}")
        if len(attempts) < 3:
            raise RuntimeError("transient")

    @app.workflow()
    async def wf():
        await produce()
        await asyncflow.write_stream("out", "after")

    async with app:
        await (await app.start_workflow(wf, workflow_id="r")).get_result()
        values = await _read(app, "r", "out")
    assert values == ["v0-attempt3", "v1-attempt3", "v2-attempt3", "after"]
    assert await conn.fetchval("select count(*) from asyncflow.streams") == 4


async def test_concurrent_writers_get_distinct_offsets(make_app):
    app = make_app(pool_size=10)

    @app.step()
    async def burst(tag):
        for i in range(20):
            await asyncflow.write_stream("s", [tag, i])

    @app.workflow()
    async def wf():
        await asyncio.gather(*(burst(t) for t in range(5)))
        await asyncio.gather(*(asyncflow.write_stream("s", ["wf", i]) for i in range(5)))

    async with app:
        await (await app.start_workflow(wf, workflow_id="c")).get_result()
        entries = [e async for e in app.stream_entries("c", "s")]
    assert [off for off, _ in entries] == list(range(105))
    by_tag: dict = {}
    for _, (tag, i) in entries:
        by_tag.setdefault(tag, []).append(i)
    assert all(by_tag[t] == list(range(20)) for t in range(5))  # per-writer order kept
    assert sorted(by_tag["wf"]) == list(range(5))


async def test_stream_errors(make_app, conn):
    app = make_app()

    @app.workflow()
    async def wf():
        await asyncflow.close_stream("s")
        await asyncflow.write_stream("s", 1)

    async with app:
        with pytest.raises(asyncflow.StreamClosedError):
            await (await app.start_workflow(wf)).get_result()
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await _read(app, "missing", "s")
        with pytest.raises(asyncflow.NotInWorkflowError):
            await asyncflow.write_stream("s", 1)
        with pytest.raises(asyncflow.InvalidArgumentError):
            await _read(app, "x", "s", offset=-1)
    assert await conn.fetchval("select count(*) from asyncflow.streams") == 0


async def test_reader_parked_at_tail_wakes_per_write(make_app):
    app = make_app()

    @app.workflow()
    async def writer():
        for _ in range(3):
            value = await asyncflow.recv(timeout_seconds=10)
            await asyncflow.write_stream("s", value)
        await asyncflow.close_stream("s")
        await asyncflow.recv(timeout_seconds=10)

    async with app:
        h = await app.start_workflow(writer, workflow_id="w")
        stream = app.read_stream("w", "s").__aiter__()
        for i in range(3):
            nxt = asyncio.ensure_future(stream.__anext__())
            await app._waits.wait_for_count(2)
            assert not nxt.done()
            await app.send("w", i)
            assert await asyncio.wait_for(nxt, 10) == i
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(stream.__anext__(), 10)  # closed while writer still runs
        assert (await h.get_status()).status == "PENDING"
        await app.send("w", "end")
        await h.get_result()


async def test_cancel_wakes_workflow_parked_in_read_stream(make_app):
    app = make_app()

    @app.workflow()
    async def silent():
        await asyncflow.recv(timeout_seconds=3600)

    @app.workflow()
    async def follower():
        return [v async for v in asyncflow.read_stream("quiet", "s")]

    async with app:
        await app.start_workflow(silent, workflow_id="quiet")
        h = await app.start_workflow(follower, workflow_id="f")
        await app._waits.wait_for_count(2)
        await app.cancel_workflow("f")
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await h.get_result(timeout_seconds=5)
        await app.cancel_workflow("quiet")
