"""The LISTEN connection: losing it must not lose a wake-up."""

from __future__ import annotations

import asyncio
import time

import asyncflow


async def test_listener_killed_while_waiters_are_parked(make_app, db_url, conn):
    app = make_app()
    n = 50

    @app.workflow()
    async def parked(i):
        got = await asyncflow.recv(timeout_seconds=3600)
        await asyncflow.set_event("got", got)
        return got

    async with app:
        handles = [await app.start_workflow(parked, i, workflow_id=f"p{i}") for i in range(n)]
        await app._waits.wait_for_count(n)
        async with asyncflow.Client(db_url) as client:
            # Outside waiters parked in this app too.
            event_waiters = [asyncio.ensure_future(app.get_event(f"p{i}", "got", 3600))
                             for i in range(0, n, 5)]
            await app._waits.wait_for_count(n + len(event_waiters))
            started = time.monotonic()
            listener = app.listener
            killed = None
            for i in range(n):
                if i % 10 == 0:  # kill the app's LISTEN connection again and again
                    await listener.wait_connected(not_pid=killed)
                    killed = listener.backend_pid
                    assert await conn.fetchval("select pg_terminate_backend($1::int)", killed)
                await client.send(f"p{i}", i)  # from another connection: only NOTIFY wakes
            results = [await h.get_result(timeout_seconds=30) for h in handles]
            events = await asyncio.wait_for(asyncio.gather(*event_waiters), 30)
            # The last kill's reconnect: the wake-ups it would bring may have been delivered by
            # the dying connection already, so the results can be in before it.
            await asyncio.wait_for(listener.wait_connected(not_pid=killed), 30)
    assert results == list(range(n))
    assert events == list(range(0, n, 5))
    assert time.monotonic() - started < 20  # nobody waited for a 3600 s timeout
    assert listener.reconnects >= 5


async def test_listener_reconnects_and_keeps_executor_lock(make_app, conn):
    app = make_app(executor_id="lock-holder")
    async with app:
        listener = app.listener
        old = listener.backend_pid
        await conn.execute("select pg_terminate_backend($1::int)", old)
        # The executor's advisory lock comes back with the new connection.
        async with asyncio.timeout(20):
            await listener.wait_connected(not_pid=old, lock=True)
        assert listener.reconnects >= 1
        clash = make_app(executor_id="lock-holder")
        try:
            async with clash:
                raise AssertionError("a second process took a live executor id")
        except asyncflow.ExecutorIdInUseError:
            pass
