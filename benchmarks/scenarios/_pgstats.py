"""Server-side counts over a stretch of a scenario: transactions committed in the database, and
the server's WAL records and WAL flushes (PostgreSQL 16+: ``pg_stat_io``; else ``pg_stat_wal``).

Other backends report their counts when they go idle (at most once a second) or exit: read the
second snapshot once the processes measured have closed their connections.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

_COMMITS = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
_WAL_16 = """SELECT (SELECT wal_records FROM pg_stat_wal),
       (SELECT sum(fsyncs) FROM pg_stat_io WHERE object = 'wal')"""
_WAL_14 = "SELECT wal_records, wal_sync FROM pg_stat_wal"


@dataclass(frozen=True, slots=True)
class Counts:
    commits: int
    wal_records: int
    wal_flushes: int

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.commits - other.commits, self.wal_records - other.wal_records,
                      self.wal_flushes - other.wal_flushes)


async def counts(conn: asyncpg.Connection) -> Counts:
    """The counts now (the caller's own statements included: a few per snapshot)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    commits = await conn.fetchval(_COMMITS)
    version = int(await conn.fetchval("SHOW server_version_num"))
    row = await conn.fetchrow(_WAL_16 if version >= 160000 else _WAL_14)
    assert row is not None
    return Counts(int(commits), int(row[0] or 0), int(row[1] or 0))
