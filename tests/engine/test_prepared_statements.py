"""asyncflow's single statements run as statements prepared on each pool connection, through
the driver's protocol (``driver.run_prepared``): what they return and raise is what the driver's
public path returns and raises, a schema change under a prepared statement is survived, and
nothing is kept where the driver keeps no statements (a transaction pooler)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from asyncflow import DatabaseError, InvalidArgumentError
from asyncflow._storage import driver
from asyncflow._storage.connect import ConnectSettings, check_connect_options
from asyncflow._storage.database import Storage
from asyncflow._storage.driver import UniqueViolation

pytestmark = pytest.mark.asyncio


async def _storage(url: str, **options: object) -> Storage:
    storage = Storage(url, "asyncflow", pool_size=1,
                      settings=ConnectSettings(None, check_connect_options(options)))
    await storage.open()
    return storage


@pytest.fixture
async def storage(db_url: str) -> AsyncIterator[Storage]:
    storage = await _storage(db_url)
    try:
        yield storage
    finally:
        await storage.close()


def _kept(storage: Storage) -> dict[str, object]:
    conn = storage.pool.take_idle()
    assert conn is not None
    try:
        return dict(conn.statements)
    finally:
        storage.pool.release(conn)


async def test_the_installed_driver_has_what_the_prepared_path_uses() -> None:
    # Without it every statement would take the driver's slower public path, silently.
    assert driver._DIRECT


async def test_each_method_returns_what_the_driver_returns(storage: Storage,
                                                           conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE t (a int PRIMARY KEY, b text)")
    insert, select = "INSERT INTO t VALUES ($1, $2)", "SELECT a, b FROM t WHERE a >= $1 ORDER BY a"
    for a in (1, 2):  # the first run prepares, the second runs what was kept
        assert await storage.execute(insert, a, f"v{a}") == "INSERT 0 1"
    assert insert in _kept(storage)
    for _ in range(2):
        rows = await storage.fetch(select, 1)
        assert rows == await conn.fetch(select, 1)
        assert [tuple(row) for row in rows] == [(1, "v1"), (2, "v2")]
        assert tuple(await storage.fetchrow(select, 2)) == (2, "v2")
        assert await storage.fetchrow(select, 3) is None
        assert await storage.fetchval(select, 2) == 2
        assert await storage.fetchval(select, 3) is None
        assert await storage.fetch(select, 3) == []
    assert select in _kept(storage)
    # A script of several statements (no parameters) is not prepared: the driver runs it.
    assert await storage.execute("UPDATE t SET b = 'x'; DELETE FROM t WHERE a = 2") == "DELETE 1"
    assert await storage.fetchval("SELECT count(*) FROM t") == 1


async def test_errors_on_the_prepared_path_are_asyncflows(storage: Storage,
                                                          conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE t (a int PRIMARY KEY)")
    insert = "INSERT INTO t VALUES ($1)"
    await storage.execute(insert, 1)
    with pytest.raises(UniqueViolation):
        await storage.execute(insert, 1)  # kept, and refused
    with pytest.raises(InvalidArgumentError):
        await storage.fetchval("SELECT 1 / 0 + $1::int", 1)  # a data error, on preparing runs
    with pytest.raises(InvalidArgumentError):
        await storage.fetchval("SELECT 1 / 0 + $1::int", 2)
    with pytest.raises(DatabaseError):
        await storage.fetchval("SELECT no_such_function($1)", 1)
    # The connection is still good after each.
    assert await storage.fetchval("SELECT count(*) FROM t WHERE a = $1", 1) == 1


async def test_a_schema_change_under_a_kept_statement_is_survived(
        storage: Storage, conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE t (a int)")
    await conn.execute("INSERT INTO t VALUES (1)")
    select = "SELECT * FROM t WHERE a = $1"
    assert [tuple(row) for row in await storage.fetch(select, 1)] == [(1,)]
    assert select in _kept(storage)
    # Its result type changes: the server refuses the kept plan; the statement runs again.
    await conn.execute("ALTER TABLE t ADD COLUMN b int DEFAULT 7")
    assert [tuple(row) for row in await storage.fetch(select, 1)] == [(1, 7)]
    assert [tuple(row) for row in await storage.fetch(select, 1)] == [(1, 7)]


async def test_nothing_is_kept_when_the_driver_keeps_no_statements(db_url: str) -> None:
    storage = await _storage(db_url, statement_cache_size=0)  # what a transaction pooler needs
    try:
        for _ in range(2):
            assert await storage.fetchval("SELECT $1::int + 1", 1) == 2
        assert _kept(storage) == {}
    finally:
        await storage.close()


async def test_at_most_max_prepared_statements_are_kept(storage: Storage,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver.PoolConnection, "MAX_PREPARED", 2)
    for n in range(4):
        assert await storage.fetchval(f"SELECT $1::int + {n}", 1) == 1 + n
    assert len(_kept(storage)) == 2
    assert await storage.fetchval("SELECT $1::int + 3", 1) == 4  # still run, by the driver
