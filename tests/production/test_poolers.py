"""asyncflow behind a real PgBouncer (Debian's package) in front of the test server.

Transaction mode with ``listen_url`` direct: a full workload completes with prompt wake-ups.
Transaction mode without it: a clear ConfigurationError at launch. Session mode: works as a
direct connection. A failed transaction leaves nothing on the shared server connection, and the
driver's prepared-statement error never reaches the caller.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest
from conftest import python_env
from pgbouncerlib import PGBOUNCER, PgBouncer

import asyncflow

pytestmark = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer)")

NO_CACHE = {"statement_cache_size": 0}


def _database(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


async def _reconnect(bouncer: PgBouncer) -> None:
    """pgbouncer replaces its server connections (its admin console's RECONNECT): prepared
    statements made on the old ones are gone."""
    console = await asyncpg.connect(bouncer.url("pgbouncer"), statement_cache_size=0)
    try:
        await console.execute("RECONNECT")
    finally:
        await console.close()


@pytest.fixture
async def transaction_bouncer(server_url: str) -> AsyncIterator[PgBouncer]:
    bouncer = PgBouncer(server_url, "transaction", pool_size=20)
    await bouncer.start()
    yield bouncer
    await bouncer.stop()


@pytest.fixture
async def session_bouncer(server_url: str) -> AsyncIterator[PgBouncer]:
    bouncer = PgBouncer(server_url, "session")
    await bouncer.start()
    yield bouncer
    await bouncer.stop()


async def test_transaction_pooler_without_listen_url_is_refused_at_launch(
        transaction_bouncer, db_url):
    pooled = transaction_bouncer.url(_database(db_url))
    for options in (NO_CACHE, None):  # with or without the driver's statement cache
        app = asyncflow.AsyncFlow(pooled, connect_options=options)
        with pytest.raises(asyncflow.ConfigurationError, match="listen_url"):
            async with app:
                pass
        with pytest.raises(asyncflow.ConfigurationError, match="listen_url"):
            async with asyncflow.Client(pooled, connect_options=options):
                pass


async def test_listen_url_on_the_pooler_is_refused_too(transaction_bouncer, db_url):
    pooled = transaction_bouncer.url(_database(db_url))
    app = asyncflow.AsyncFlow(pooled, listen_url=pooled, connect_options=NO_CACHE)
    with pytest.raises(asyncflow.ConfigurationError, match=r"listen_url .*must be a direct"):
        async with app:
            pass


async def test_transaction_pooler_with_direct_listen_url_runs_a_full_workload(
        transaction_bouncer, db_url, monkeypatch):
    pooled = transaction_bouncer.url(_database(db_url))
    monkeypatch.setenv("ASYNCFLOW_LISTEN_URL", db_url)  # the environment variable works too
    app = asyncflow.AsyncFlow(pooled, connect_options=NO_CACHE, recovery_interval_seconds=0.2)
    queue = app.queue("jobs")

    @app.step()
    async def double(x: int) -> int:
        return 2 * x

    @app.workflow()
    async def conversation() -> dict[str, object]:
        await asyncflow.set_event("ready", True)
        started = time.monotonic()
        got = await asyncflow.recv("go", timeout_seconds=60)
        waited = time.monotonic() - started
        for i in range(3):
            await asyncflow.write_stream("out", await double(i))
        await asyncflow.close_stream("out")
        return {"got": got, "waited": waited}

    @app.workflow(name="job")
    async def job(n: int) -> int:
        return await double(n)

    async with app, asyncflow.Client(pooled, listen_url=db_url,
                                     connect_options=NO_CACHE) as client:
        assert app.storage.settings.listen_url == db_url
        handle = await app.start_workflow(conversation, workflow_id="conv")
        # The client's wait is woken by the app's NOTIFY, through the pooler to the listener.
        started = time.monotonic()
        assert await client.get_event("conv", "ready", timeout_seconds=60) is True
        assert time.monotonic() - started < 10
        await client.send("conv", {"n": 1}, topic="go")  # wakes the app's recv by NOTIFY
        stream = [value async for value in client.read_stream("conv", "out")]
        assert stream == [0, 2, 4]
        result = await handle.get_result()
        assert result["got"] == {"n": 1}
        assert result["waited"] < 10, result  # woken by NOTIFY, not by its 60 s timeout
        queued = await client.enqueue("jobs", "job", 21)  # the app's dispatcher, woken
        assert await queued.get_result() == 42
        assert await (await queue.enqueue(job, 5)).get_result() == 10
        assert app.health().healthy


async def test_session_pooler_works_without_listen_url(session_bouncer, db_url):
    pooled = session_bouncer.url(_database(db_url))
    app = asyncflow.AsyncFlow(pooled, recovery_interval_seconds=0.2)

    @app.workflow()
    async def waiter() -> object:
        return await asyncflow.recv(timeout_seconds=60)

    async with app, asyncflow.Client(pooled) as client:
        handle = await app.start_workflow(waiter, workflow_id="w")
        started = time.monotonic()
        await client.send("w", "hello")
        assert await handle.get_result() == "hello"
        assert time.monotonic() - started < 10


async def test_failed_transaction_leaves_no_setting_on_the_shared_server_connection(
        server_url, db_url):
    # One server connection behind the pooler: whoever waits for it gets it the moment
    # asyncflow's transaction ends.
    bouncer = PgBouncer(server_url, "transaction", pool_size=1)
    await bouncer.start()
    try:
        pooled = bouncer.url(_database(db_url))
        app = asyncflow.AsyncFlow(pooled, listen_url=db_url, connect_options=NO_CACHE)
        other = await asyncpg.connect(pooled, statement_cache_size=0)
        console = await asyncpg.connect(bouncer.url("pgbouncer"), statement_cache_size=0)
        seen: list[asyncio.Task[str]] = []

        @app.transaction()
        async def failing() -> None:
            await asyncflow.connection().execute("SELECT 1")
            # Another application queues for the server connection this transaction holds.
            seen.append(asyncio.ensure_future(
                other.fetchval("SHOW default_transaction_read_only")))
            await asyncio.sleep(0)  # let it send its query
            await console.execute("SHOW POOLS")  # a round trip through pgbouncer's loop
            raise RuntimeError("the body fails")

        async with app:
            with pytest.raises(RuntimeError, match="the body fails"):
                await failing()
            assert await seen[0] == "off"
        await other.close()
        await console.close()
    finally:
        await bouncer.stop()


async def test_prepared_statement_error_becomes_a_configuration_error(
        transaction_bouncer, db_url):
    pooled = transaction_bouncer.url(_database(db_url))
    # The driver's statement cache left on: its prepared statements live on one server
    # connection, and the pooler runs the next use on another.
    async with asyncflow.Client(pooled, listen_url=db_url, pool_size=1) as client:
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await client.get_workflow_status("nope")  # prepared on the server used now
        await _reconnect(transaction_bouncer)
        with pytest.raises(asyncflow.ConfigurationError, match="statement_cache_size"):
            # Another server connection runs it: the prepared statement is missing there.
            await client.get_workflow_status("nope")


async def test_prepared_statement_error_in_a_transaction_body_is_translated_too(
        transaction_bouncer, db_url):
    pooled = transaction_bouncer.url(_database(db_url))
    # The driver's statement cache on: the body's statement is prepared once, by name, on the
    # server connection of its first transaction.
    app = asyncflow.AsyncFlow(pooled, listen_url=db_url, pool_size=1,
                              recovery_interval_seconds=60)

    @app.transaction()
    async def query() -> int:
        return int(await asyncflow.connection().fetchval("SELECT 1"))

    async with app:
        assert app.storage.pooled
        assert await query() == 1
        await _reconnect(transaction_bouncer)
        with pytest.raises(asyncflow.ConfigurationError, match="statement_cache_size"):
            await query()


async def test_cli_through_a_transaction_pooler_with_listen_url(transaction_bouncer, db_url):
    pooled = transaction_bouncer.url(_database(db_url))
    app = asyncflow.AsyncFlow(db_url)

    @app.workflow(name="job")
    async def job() -> int:
        return 1

    async with app:
        await (await app.start_workflow(job, workflow_id="cli-job")).get_result()
    for _ in range(3):  # the CLI keeps no prepared statements: nothing depends on which server
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "asyncflow", "--database-url", pooled, "--listen-url", db_url,
            "--json", "workflow", "list", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=python_env())
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        assert "cli-job" in out.decode()
        await _reconnect(transaction_bouncer)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asyncflow", "--database-url", pooled, "workflow", "list",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=python_env())
    _out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode != 0 and "listen_url" in err.decode()
    assert "Traceback" not in err.decode()
