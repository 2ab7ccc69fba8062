import asyncflow


async def test_steps_and_result(make_app, conn):
    app = make_app()
    calls = []

    @app.step()
    async def add(a, b):
        calls.append((a, b))
        return a + b

    @app.workflow()
    async def wf(x):
        y = await add(x, 1)
        z = await add(y, 2)
        return {"z": z}

    async with app:
        handle = await app.start_workflow(wf, 5)
        assert await handle.get_result(timeout_seconds=10) == {"z": 8}
        status = await handle.get_status()
        assert status.status == "SUCCESS"
        assert await wf(1) == {"z": 4}
    assert calls == [(5, 1), (6, 2), (1, 1), (2, 2)]
    assert await conn.fetchval("select count(*) from asyncflow.operations") == 4


async def test_messages_roundtrip(make_app):
    app = make_app()

    @app.workflow()
    async def echo():
        msg = await asyncflow.recv("in", timeout_seconds=10)
        await asyncflow.set_event("out", msg)
        await asyncflow.write_stream("s", msg)
        return msg

    async with app:
        h = await app.start_workflow(echo, workflow_id="e1")
        await app.send("e1", {"hi": 1}, "in")
        assert await app.get_event("e1", "out", timeout_seconds=5) == {"hi": 1}
        assert [v async for v in app.read_stream("e1", "s")] == [{"hi": 1}]
        assert await h.get_result() == {"hi": 1}
