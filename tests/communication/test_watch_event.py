"""Watchable events: every change (at least the latest), the final value, listener loss."""

from __future__ import annotations

import asyncio

import asyncpg

import asyncflow


async def test_many_rapid_sets_end_with_the_final_value(make_app, db_url):
    app = make_app()

    @app.workflow()
    async def counter(n: int) -> int:
        await asyncflow.recv("go", timeout_seconds=30)
        for i in range(1, n + 1):
            await asyncflow.set_event("count", i)
        return n

    async with app:
        handle = await app.start_workflow(counter, 200)
        seen_app: list[int] = []
        seen_client: list[int] = []

        async def watch(source, into) -> None:
            async for value in source.watch_event(handle.workflow_id, "count"):
                into.append(value)

        async with asyncflow.Client(db_url) as client:
            watchers = [asyncio.ensure_future(watch(app, seen_app)),
                        asyncio.ensure_future(watch(client, seen_client))]
            await app._waits.wait_for_count(2)  # the workflow's recv + the app's watcher
            await app.send(handle.workflow_id, 1, topic="go")
            await asyncio.wait_for(asyncio.gather(*watchers), 30)
    for seen in (seen_app, seen_client):
        assert seen and seen[-1] == 200
        assert seen == sorted(set(seen))  # in order, no repeats


async def test_same_value_set_twice_is_seen_twice_and_current_value_first(make_app):
    app = make_app()

    @app.workflow()
    async def flipper() -> None:
        await asyncflow.set_event("k", "a")
        for _ in range(2):
            await asyncflow.recv("next", timeout_seconds=30)
            await asyncflow.set_event("k", "a")

    async with app:
        handle = await app.start_workflow(flipper)
        seen = []
        async for value in app.watch_event(handle.workflow_id, "k"):
            seen.append(value)
            if len(seen) < 3:
                await app.send(handle.workflow_id, 1, topic="next")
        assert seen == ["a", "a", "a"]


async def test_watch_survives_the_listener_being_killed(make_app, db_url):
    app = make_app()

    @app.workflow()
    async def stepper() -> None:
        for i in range(3):
            await asyncflow.recv("go", timeout_seconds=30)
            await asyncflow.set_event("k", i)

    async with app, asyncflow.Client(db_url) as client:
        handle = await app.start_workflow(stepper)
        seen = []

        async def watch() -> None:
            async for value in client.watch_event(handle.workflow_id, "k"):
                seen.append(value)
                if value < 2:
                    if value == 1:
                        # Kill the client's LISTEN connection mid-watch; it reconnects, and
                        # the reconnect wakes the watcher, which re-reads.
                        old = client.listener.backend_pid
                        admin = await asyncpg.connect(db_url)
                        await admin.execute("select pg_terminate_backend($1::int)", old)
                        await admin.close()
                        await client.listener.wait_connected(not_pid=old)
                    await app.send(handle.workflow_id, 1, topic="go")

        task = asyncio.ensure_future(watch())
        await client._waits.wait_for_count(1)
        await app.send(handle.workflow_id, 1, topic="go")
        await asyncio.wait_for(task, 30)
        assert seen[-1] == 2 and seen == sorted(set(seen))
