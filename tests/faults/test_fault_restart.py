"""Postgres restarts (a private server: ``pg_ctl restart -m fast`` and ``-m immediate``) while
workflows run and waiters are parked: the app reconnects by itself, every workflow completes,
every message is received exactly once, parked waiters wake.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from faultlib import PrivateServer, size

import asyncflow

pytestmark = [pytest.mark.soak, pytest.mark.slow]


@pytest.fixture(scope="module")
def private_server() -> Iterator[PrivateServer]:
    server = PrivateServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def private_db(private_server: PrivateServer) -> AsyncIterator[str]:
    yield await private_server.new_database()


async def send_exactly_once(client: asyncflow.Client, workflow_id: str, message: Any,
                            topic: str, key: str) -> int:
    """Send with an idempotency key, retrying across a database outage: delivered once.

    Returns how many attempts failed with DatabaseUnavailableError.
    """
    failures = 0
    while True:
        before = client.listener.backend_pid
        try:
            await client.send(workflow_id, message, topic, idempotency_key=key)
            return failures
        except asyncflow.DatabaseUnavailableError:
            failures += 1
            # Retry once the client's own listener is back on a new backend (the server is up),
            # or after a second (the failure was one stale pooled connection: it is gone now).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await client.listener.wait_connected(not_pid=before)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restart_while_running_and_parked(
    private_server: PrivateServer, private_db: str, mode: str
) -> None:
    n = size(12, 60, "ASYNCFLOW_SOAK_RESTART_WORKFLOWS")
    rounds = 3
    restarts = size(1, 3)
    conn = await asyncpg.connect(private_db)
    await conn.execute("create table tx_effects (workflow_id text, round int, message text)")
    await conn.close()

    app = asyncflow.AsyncFlow(private_db, recovery_interval_seconds=0.2, app_version="restart")
    gate = asyncio.Event()  # holds even workflows inside their round-1 step
    in_step: set[str] = set()
    all_in_step = asyncio.Event()

    @app.step()
    async def work(i: int, r: int) -> int:
        if r == 1 and i % 2 == 0:
            in_step.add(asyncflow.workflow_id())
            if len(in_step) == (n + 1) // 2:
                all_in_step.set()
            await gate.wait()
        return i * 100 + r

    @app.transaction()
    async def note(r: int, message: str) -> None:
        await asyncflow.connection().execute(
            "insert into tx_effects values ($1, $2, $3)", asyncflow.workflow_id(), r, message)

    @app.workflow()
    async def pinger(i: int) -> list[Any]:
        got = []
        for r in range(rounds):
            await work(i, r)
            message = await asyncflow.recv("in", timeout_seconds=3600)
            await note(r, message)
            await asyncflow.set_event(f"r{r}", message)
            await asyncflow.write_stream("log", message)
            got.append(message)
        return got

    def message(i: int, r: int) -> str:
        return f"m-{i}-{r}"

    async with asyncio.timeout(120), app, asyncflow.Client(private_db) as client:
        ids = [f"w{i}" for i in range(n)]
        handles = [await app.start_workflow(pinger, i, workflow_id=wid)
                   for i, wid in enumerate(ids)]
        for i, wid in enumerate(ids):
            await send_exactly_once(client, wid, message(i, 0), "in", f"{wid}-0")
        # Outside waiters parked on round-1 events, in the app and in the client.
        outside = [asyncio.ensure_future(app.get_event(wid, "r1", timeout_seconds=3600))
                   for wid in ids]
        outside += [asyncio.ensure_future(client.get_event(wid, "r1", timeout_seconds=3600))
                    for wid in ids]
        results = [asyncio.ensure_future(h.get_result(timeout_seconds=3600)) for h in handles]
        # Stream readers parked at the tail (ended by the workflow's completion).
        readers = [asyncio.ensure_future(_read_all(client, wid)) for wid in ids]
        await all_in_step.wait()
        # Parked in the app: odd workflows in recv(round 1), event waiters, result waiters; in
        # the client: event waiters and stream readers.
        await app._waits.wait_for_count(n // 2 + 2 * n)
        await client._waits.wait_for_count(2 * n)

        lock_pid = app.listener.backend_pid
        for k in range(restarts):
            old_pid = app.listener.backend_pid
            # Senders racing the restart: some sends fail and are retried, none doubles.
            racing = [asyncio.ensure_future(
                send_exactly_once(client, wid, message(i, 1), "in", f"{wid}-1"))
                for i, wid in enumerate(ids) if i % 2 == 1 and k == 0]
            await private_server.restart(mode)
            await app.listener.wait_connected(not_pid=old_pid, lock=True)
            await asyncio.gather(*racing)
        assert app.listener.backend_pid != lock_pid
        assert app.listener.reconnects >= restarts
        gate.set()
        for i, wid in enumerate(ids):
            if i % 2 == 0:
                await send_exactly_once(client, wid, message(i, 1), "in", f"{wid}-1")
        for i, wid in enumerate(ids):
            await send_exactly_once(client, wid, message(i, 2), "in", f"{wid}-2")
        got = await asyncio.gather(*results)
        woken = await asyncio.gather(*outside)
        streamed = await asyncio.gather(*readers)

        # The executor lock came back with the listener: the id is still taken.
        twin = asyncflow.AsyncFlow(private_db, executor_id=app.executor_id)
        with pytest.raises(asyncflow.ExecutorIdInUseError):
            async with twin:
                pass
        # And the app keeps working.
        assert await pinger_done(app, client)

    assert got == [[message(i, r) for r in range(rounds)] for i in range(n)]
    assert woken == [message(i, 1) for i in range(n)] * 2
    assert streamed == got
    conn = await asyncpg.connect(private_db)
    try:
        assert await conn.fetchval("select count(*) from asyncflow.messages") == 0
        rows = await conn.fetch(
            "select workflow_id, round, count(*) as n from tx_effects group by 1, 2")
        assert len(rows) == n * rounds and all(r["n"] == 1 for r in rows)
        statuses = await conn.fetch("select status, count(*) from asyncflow.workflows group by 1")
        assert [tuple(r) for r in statuses] == [("SUCCESS", n + 1)]
    finally:
        await conn.close()


async def _read_all(client: asyncflow.Client, workflow_id: str) -> list[Any]:
    return [value async for value in client.read_stream(workflow_id, "log")]


async def pinger_done(app: asyncflow.AsyncFlow, client: asyncflow.Client) -> bool:
    @app.workflow(name="after-restart")
    async def after() -> str:
        return "ok"

    handle = await app.start_workflow(after, workflow_id="after")
    return bool(await handle.get_result(timeout_seconds=30) == "ok")
