"""connect_options and listen_url: checked at construction, before anything connects."""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import pytest
from faultlib import with_database

import asyncflow
from asyncflow._storage.connect import DEFAULT_COMMAND_TIMEOUT, check_connect_options

URL = "postgresql://nobody@127.0.0.1:1/none"


@pytest.mark.parametrize(("options", "match"), [
    ({"statment_cache_size": 0}, "unknown connect option 'statment_cache_size'"),
    ({"connection_class": object}, "unknown connect option"),
    ({"host": "db"}, "in the database URL"),
    ({"statement_cache_size": -1}, "int >= 0"),
    ({"statement_cache_size": True}, "int >= 0"),
    ({"command_timeout": 0}, "seconds > 0"),
    ({"command_timeout": float("nan")}, "seconds > 0"),
    ({"timeout": None}, "seconds > 0"),
    ({"server_settings": {"application_name": 1}}, "dict of str to str"),
    ({"ssl": "sometimes"}, "verify-full"),
    ({"target_session_attrs": "primary-ish"}, "read-write"),
    ({"direct_tls": "yes"}, "bool"),
    ("statement_cache_size=0", "must be a dict"),
])
def test_bad_connect_options_fail_at_construction(options, match):
    for cls in (asyncflow.AsyncFlow, asyncflow.Client):
        with pytest.raises(asyncflow.InvalidSettingError, match=match):
            cls(URL, connect_options=options)


def test_good_connect_options_pass_with_the_default_command_timeout():
    context = ssl.create_default_context()
    checked = check_connect_options({
        "statement_cache_size": 0, "server_settings": {"application_name": "orders"},
        "ssl": context, "target_session_attrs": "read-write", "timeout": 5})
    assert checked["command_timeout"] == DEFAULT_COMMAND_TIMEOUT
    assert checked["ssl"] is context
    assert check_connect_options({"command_timeout": None})["command_timeout"] is None
    assert check_connect_options({"ssl": "require"})["ssl"] == "require"


def test_listen_url_must_be_a_str():
    with pytest.raises(asyncflow.InvalidSettingError, match="listen_url"):
        asyncflow.AsyncFlow(URL, listen_url=5)  # type: ignore[arg-type]


async def test_listen_url_from_the_environment_is_used(db_url, monkeypatch):
    monkeypatch.setenv("ASYNCFLOW_LISTEN_URL", db_url)
    async with asyncflow.Client(db_url) as client:
        assert client.storage.settings.listen_url == db_url
    monkeypatch.delenv("ASYNCFLOW_LISTEN_URL")
    async with asyncflow.Client(db_url) as client:
        assert client.storage.settings.listen_url is None
        assert client.storage.listen_url == db_url


async def test_bad_listen_url_names_the_setting(db_url):
    bad = with_database(db_url, "no_such_database_here")
    with pytest.raises(asyncflow.ConfigurationError, match="listen_url"):
        async with asyncflow.Client(db_url, listen_url=bad):
            pass


async def test_read_only_database_names_target_session_attrs(db_url, conn):
    database = urlsplit(db_url).path.lstrip("/")
    await conn.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    with pytest.raises(asyncflow.ReadOnlyDatabaseError, match="target_session_attrs"):
        async with asyncflow.AsyncFlow(db_url):
            pass


async def test_a_statement_past_command_timeout_is_a_clear_error(db_url, conn):
    async with asyncflow.Client(db_url, connect_options={"command_timeout": 0.5}) as client:
        await conn.execute("BEGIN")
        await conn.execute("LOCK TABLE asyncflow.workflows IN ACCESS EXCLUSIVE MODE")
        try:
            with pytest.raises(asyncflow.DatabaseUnavailableError, match="command timeout"):
                await client.get_workflow_status("x")
        finally:
            await conn.execute("ROLLBACK")
        with pytest.raises(asyncflow.WorkflowNotFoundError):  # the connection still works
            await client.get_workflow_status("x")


async def test_command_timeout_bounds_each_statement_of_a_transaction_body(db_url, conn):
    """asyncflow's single statements are bounded by the pool's watch, a transaction's by the
    driver, statement by statement: a body may run longer than command_timeout in all, but
    not one statement; afterwards the connection serves single statements again."""
    app = asyncflow.AsyncFlow(db_url, connect_options={"command_timeout": 0.5})
    slow_statement = "SELECT count(*) FROM asyncflow.workflows"

    @app.transaction()
    async def many_quick_statements() -> int:
        conn = asyncflow.connection()
        for _ in range(6):  # 0.6 s in all, each statement well under the bound
            await conn.execute("SELECT pg_sleep(0.1)")
        return 6

    @app.transaction()
    async def one_slow_statement() -> int:
        return int(await asyncflow.connection().fetchval(slow_statement))

    async with app:
        assert await many_quick_statements() == 6
        await conn.execute("BEGIN")
        await conn.execute("LOCK TABLE asyncflow.workflows IN ACCESS EXCLUSIVE MODE")
        try:
            with pytest.raises(TimeoutError):  # the driver's, as user code's statements raise
                await one_slow_statement()
            with pytest.raises(asyncflow.DatabaseUnavailableError, match="command timeout"):
                await app.get_workflow_status("x")  # the watch: asyncflow's own statement
        finally:
            await conn.execute("ROLLBACK")
        assert await one_slow_statement() == 0
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await app.get_workflow_status("x")
        # Every connection back in the pool is bounded by the watch again, not the driver.
        pool = app.storage.pool
        assert all(idle._config.command_timeout is None for idle, _ in pool._idle)
