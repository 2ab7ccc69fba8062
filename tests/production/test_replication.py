"""asyncflow against a private primary and streaming standby (Debian's PostgreSQL 15): launch
on a standby names the fix, a multi-host URL with ``target_session_attrs=read-write`` finds the
primary, and synchronous replication with its standby down ends launch and statements within
the command timeout instead of hanging."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest
from clusters import SUPERUSER, ReplicatedPair, missing
from faultlib import admin

import asyncflow

pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")

#: Sessions whose commits wait for the replica (the primary names every standby synchronous).
WAIT_FOR_REPLICA = {"synchronous_commit": "on"}
#: Sessions whose commits do not (the default of these tests).
ASYNC = {"server_settings": {"synchronous_commit": "local"}}


async def _migrated(url: str) -> None:
    async with asyncflow.AsyncFlow(url, connect_options=ASYNC):
        pass


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicatedPair]:
    replicated = ReplicatedPair()
    try:
        asyncio.run(admin(replicated.primary.url(), "CREATE DATABASE app"))
        asyncio.run(_migrated(replicated.primary.url("app")))
        # The replica has the migrated schema once it has applied the primary's WAL: a session
        # that waits for remote_apply makes sure of it.
        asyncio.run(_applied(replicated.primary.url()))
        yield replicated
    finally:
        replicated.close()


async def _applied(url: str) -> None:
    conn = await asyncpg.connect(url, server_settings={"synchronous_commit": "remote_apply"})
    try:
        await conn.execute("CREATE TABLE applied_marker (x int); DROP TABLE applied_marker")
    finally:
        await conn.close()


def _standby_first(pair: ReplicatedPair, database: str) -> str:
    """Both hosts, the standby first: only the primary accepts read-write sessions."""
    return (f"postgresql://{SUPERUSER}@127.0.0.1:{pair.replica.port},127.0.0.1:"
            f"{pair.primary.port}/{database}?target_session_attrs=read-write")


def _app(url: str, **kwargs: Any) -> tuple[asyncflow.AsyncFlow, Callable[..., Any]]:
    kwargs.setdefault("connect_options", ASYNC)
    app = asyncflow.AsyncFlow(url, recovery_interval_seconds=0.2, **kwargs)

    @app.workflow(name="greet")
    async def greet(name: str) -> str:
        await asyncflow.set_event("seen", name)
        return "hello " + name

    return app, greet


async def test_launch_on_a_standby_is_a_public_error_with_the_fix(pair):
    with pytest.raises(asyncflow.ReadOnlyDatabaseError, match="target_session_attrs") as info:
        async with _app(pair.replica.url("app"))[0]:
            pass
    assert isinstance(info.value, asyncflow.DatabaseUnavailableError)
    assert type(info.value).__module__ == "asyncflow"


async def test_multi_host_url_with_read_write_runs_on_the_primary(pair):
    app, greet = _app(_standby_first(pair, "app"))
    async with app:
        handle = await app.start_workflow(greet, "primary")
        assert await handle.get_result() == "hello primary"
        server = await app.storage.fetchval("SELECT pg_is_in_recovery()")
        assert server is False


async def test_smoke_on_postgres_15(pair):
    """The core paths on PostgreSQL 15 (the suite itself runs on the embedded 18)."""
    conn = await asyncpg.connect(pair.primary.url())
    try:
        assert (await conn.fetchval("SHOW server_version_num")).startswith("15")
        await conn.execute("CREATE DATABASE smoke")
    finally:
        await conn.close()
    app = asyncflow.AsyncFlow(pair.primary.url("smoke"), recovery_interval_seconds=0.2,
                              connect_options=ASYNC)
    queue = app.queue("q")

    @app.step()
    async def double(x: int) -> int:
        return 2 * x

    @app.transaction()
    async def count() -> int:
        return int(await asyncflow.connection().fetchval("SELECT 1"))

    @app.workflow(name="flow")
    async def flow(x: int) -> list[object]:
        got = await asyncflow.recv(timeout_seconds=60)
        await asyncflow.write_stream("s", got)
        await asyncflow.close_stream("s")
        return [await double(x), await count(), got]

    async with app, asyncflow.Client(pair.primary.url("smoke"), connect_options=ASYNC) as client:
        handle = await queue.enqueue(flow, 4)
        await client.send(handle.workflow_id, "msg")
        assert await handle.get_result() == [8, 1, "msg"]
        assert [v async for v in client.read_stream(handle.workflow_id, "s")] == ["msg"]


async def test_synchronous_standby_down_ends_in_a_clear_error_not_a_hang(pair):
    """The last test of the module: it stops the replica."""
    await asyncio.to_thread(pair.replica.stop, "immediate")
    # Every standby is synchronous and none is connected: a commit that waits never returns.
    waits = {"command_timeout": 2, "server_settings": WAIT_FOR_REPLICA}
    started = time.monotonic()
    with pytest.raises(asyncflow.DatabaseUnavailableError, match="synchronous"):
        async with _app(pair.primary.url("app"), connect_options=waits)[0]:
            pass
    assert time.monotonic() - started < 30
    app, greet = _app(pair.primary.url("app"))
    async with app:  # launched; then a process whose commits wait sends to a workflow
        handle = await app.start_workflow(greet, "sync", workflow_id="sync")
        assert await handle.get_result() == "hello sync"
        async with asyncflow.Client(pair.primary.url("app"), connect_options=waits) as client:
            started = time.monotonic()
            with pytest.raises(asyncflow.DatabaseUnavailableError, match="synchronous"):
                await client.send("sync", "hello")
            assert time.monotonic() - started < 20
