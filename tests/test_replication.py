"""asyncflow against a private primary and streaming standby (Debian's PostgreSQL 15): launch
on a standby names the fix, a multi-host URL with ``target_session_attrs=read-write`` finds the
primary, and synchronous replication with its standby down ends launch and statements within
the command timeout instead of hanging."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from clusterlib import AVAILABLE, BIN, Cluster, new_root
from faultlib import admin

import asyncflow

pytestmark = pytest.mark.skipif(
    not AVAILABLE, reason=f"PostgreSQL 15 binaries not found in {BIN}")


@dataclass
class Pair:
    primary: Cluster
    standby: Cluster

    def failover_url(self, database: str) -> str:
        """Both hosts, the standby first: only the primary accepts read-write sessions."""
        return (f"postgresql://postgres@127.0.0.1:{self.standby.port},127.0.0.1:"
                f"{self.primary.port}/{database}?target_session_attrs=read-write")


async def _migrated(url: str) -> None:
    async with asyncflow.AsyncFlow(url):
        pass


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    root: Path = new_root()
    primary, standby = Cluster(root, "primary"), Cluster(root, "standby")
    try:
        primary.init_primary()
        primary.start()
        asyncio.run(admin(primary.url(), "CREATE DATABASE app"))
        asyncio.run(_migrated(primary.url("app")))  # the standby gets a migrated schema
        standby.init_standby(primary)
        standby.start()
        yield Pair(primary, standby)
    finally:
        standby.stop()
        primary.stop()
        shutil.rmtree(root, ignore_errors=True)


def _app(url: str, **kwargs: object) -> tuple[asyncflow.AsyncFlow, Callable[..., Any]]:
    app = asyncflow.AsyncFlow(url, recovery_interval_seconds=0.2, **kwargs)  # type: ignore[arg-type]

    @app.workflow(name="greet")
    async def greet(name: str) -> str:
        await asyncflow.set_event("seen", name)
        return "hello " + name

    return app, greet


async def test_launch_on_a_standby_is_a_public_error_with_the_fix(pair):
    with pytest.raises(asyncflow.ReadOnlyDatabaseError, match="target_session_attrs") as info:
        async with _app(pair.standby.url("app"))[0]:
            pass
    assert isinstance(info.value, asyncflow.DatabaseUnavailableError)
    assert type(info.value).__module__ == "asyncflow"


async def test_multi_host_url_with_read_write_runs_on_the_primary(pair):
    app, greet = _app(pair.failover_url("app"))
    async with app:
        handle = await app.start_workflow(greet, "primary")
        assert await handle.get_result() == "hello primary"
        server = await app.storage.fetchval("SELECT pg_is_in_recovery()")
        assert server is False


async def test_synchronous_standby_down_ends_in_a_clear_error_not_a_hang(pair):
    # The primary names a synchronous standby that does not exist: with synchronous_commit on,
    # every commit waits for it.
    waits = {"command_timeout": 2, "server_settings": {"synchronous_commit": "on"}}
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


async def test_smoke_on_postgres_15(pair):
    """The core paths on PostgreSQL 15 (the suite itself runs on the embedded 18)."""
    conn = await asyncpg.connect(pair.primary.url())
    try:
        assert (await conn.fetchval("SHOW server_version_num")).startswith("15")
        await conn.execute("CREATE DATABASE smoke")
    finally:
        await conn.close()
    app = asyncflow.AsyncFlow(pair.primary.url("smoke"), recovery_interval_seconds=0.2)
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

    async with app, asyncflow.Client(pair.primary.url("smoke")) as client:
        handle = await queue.enqueue(flow, 4)
        await client.send(handle.workflow_id, "msg")
        assert await handle.get_result() == [8, 1, "msg"]
        assert [v async for v in client.read_stream(handle.workflow_id, "s")] == ["msg"]
