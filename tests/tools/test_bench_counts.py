"""The benchmark suite's exact counts (``benchmarks.counts``): round trips, write transactions
and WAL per operation over a section."""

from __future__ import annotations

import asyncpg

from asyncflow._storage.database import Storage
from benchmarks.counts import Counted


async def test_counts_round_trips_write_transactions_and_wal(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("CREATE TABLE counted (id integer PRIMARY KEY)")
        async with Counted(db_url) as counts:
            for index in range(3):  # three write transactions, a round trip each
                await conn.execute("INSERT INTO counted VALUES ($1)", index)
            assert await conn.fetchval("SELECT count(*) FROM counted") == 3  # reads: no xid
            await conn.execute("BEGIN; INSERT INTO counted VALUES (10); INSERT INTO counted "
                               "VALUES (11); COMMIT")  # one round trip, one transaction
            await conn.executemany("INSERT INTO counted VALUES ($1)", [(20,), (21,)])
        assert counts.round_trips == 6
        assert counts.write_transactions == 5  # executemany: its rows in one transaction
        assert counts.wal_bytes > 0
        figures = {figure.key: figure.value for figure in counts.figures("op", "op", 2)}
        assert figures == {"op_round_trips": 3.0, "op_write_transactions": 2.5,
                           "op_wal_bytes": counts.wal_bytes / 2}
        # Outside the section nothing is counted any more.
        await conn.execute("INSERT INTO counted VALUES (30)")
        assert counts.round_trips == 6
    finally:
        await conn.close()


async def test_counts_the_statements_asyncflow_runs_prepared(db_url: str) -> None:
    # asyncflow's storage runs statements it keeps prepared through the driver's protocol, past
    # the driver's methods: they are counted all the same.
    storage = Storage(db_url, "asyncflow", pool_size=1)
    await storage.open()
    try:
        await storage.execute("CREATE TABLE counted (id integer PRIMARY KEY)")
        async with Counted(db_url) as counts:
            for index in range(3):  # prepared by the first, then run as kept
                await storage.execute("INSERT INTO counted VALUES ($1)", index)
            assert await storage.fetchval("SELECT count(*) FROM counted WHERE id < $1", 9) == 3
        assert counts.round_trips == 4
        assert counts.write_transactions == 3
        await storage.execute("INSERT INTO counted VALUES ($1)", 30)
        assert counts.round_trips == 4  # outside the section
    finally:
        await storage.close()
