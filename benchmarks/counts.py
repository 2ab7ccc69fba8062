"""Exact counts per operation over a scenario's timed section: the round trips this process
made, the write transactions the server committed and the WAL it wrote.

* **round trips**: every statement this process sent (``fetch*``, ``execute`` with or without
  arguments, ``executemany``), counted in the driver's ``Connection`` while the section runs,
  and the statements asyncflow's storage runs prepared (``run_prepared``, past those methods).
  A multi-statement simple query counts once: it is one round trip.
* **write transactions**: transaction ids assigned on the whole server (``pg_current_xact_id``
  before and after, less the one the second read takes). A read-only statement assigns none;
  on the benchmark's server nothing else writes. With ``synchronous_commit`` on, each of them
  waits for its commit record's WAL flush (one flush may serve several that commit together);
  asyncflow's only asynchronous commit is a ``recv``'s first attempt that found no message.
* **WAL bytes**: ``pg_current_wal_insert_lsn`` before and after.

(WAL syncs are not counted here: server processes publish their I/O statistics up to ten
seconds late, so ``pg_stat_io`` cannot be read exactly at the end of a section in a running app.)

``counts()`` reads the server's statistics instead — transactions committed in the database, WAL
records and WAL flushes (PostgreSQL 16+: ``pg_stat_io``; else ``pg_stat_wal``) — for a stretch
whose processes have closed their connections by its end (a backend publishes its counts when it
exits): the queue fleet's worker processes, and pgqueuer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import asyncpg

from asyncflow._storage import database

from .model import Figure

XACT_ID = "SELECT pg_current_xact_id()::text::bigint"
WAL_LSN = "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"


class _Trips:
    """Counts the round trips of every asyncpg connection of this process while installed."""

    def __init__(self) -> None:
        self.count = 0
        self._saved: dict[str, Any] = {}
        self._prepared: Any = None

    def install(self) -> None:
        cls = asyncpg.Connection
        execute, internal, many = cls.execute, cls._execute, cls.executemany
        self._saved = {"execute": execute, "_execute": internal, "executemany": many}
        trips = self

        async def counted_execute(conn: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            if not args:  # a simple query (with arguments it goes through _execute)
                trips.count += 1
            return await execute(conn, query, *args, **kwargs)

        async def counted_internal(conn: Any, *args: Any, **kwargs: Any) -> Any:
            trips.count += 1
            return await internal(conn, *args, **kwargs)

        async def counted_many(conn: Any, *args: Any, **kwargs: Any) -> Any:
            trips.count += 1
            return await many(conn, *args, **kwargs)

        cls.execute = counted_execute
        cls._execute = counted_internal
        cls.executemany = counted_many
        # asyncflow's storage runs the statements it keeps prepared through the driver's
        # protocol (asyncflow._storage.driver.run_prepared), past the methods above.
        prepared = self._prepared = getattr(database, "run_prepared")  # noqa: B009

        def counted_prepared(*args: Any) -> Any:
            trips.count += 1
            return prepared(*args)

        setattr(database, "run_prepared", counted_prepared)  # noqa: B010

    def remove(self) -> None:
        for name, method in self._saved.items():
            setattr(asyncpg.Connection, name, method)
        setattr(database, "run_prepared", self._prepared)  # noqa: B010


class Counted:
    """``async with Counted(url) as counts:`` around a timed section; afterwards
    ``counts.figures(prefix, what, operations)``."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._trips = _Trips()
        self._conn: asyncpg.Connection | None = None
        self._before: tuple[int, int] = (0, 0)
        self.round_trips = 0
        self.write_transactions = 0
        self.wal_bytes = 0

    async def _read(self) -> tuple[int, int]:
        conn = self._conn
        assert conn is not None
        return int(await conn.fetchval(XACT_ID)), int(await conn.fetchval(WAL_LSN))

    async def __aenter__(self) -> Counted:
        self._conn = await asyncpg.connect(self._url)
        self._before = await self._read()
        self._trips.install()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._trips.remove()
        self.round_trips = self._trips.count
        try:
            if exc_type is None:
                xid, lsn = await self._read()
                # The first read's xid is consumed by that read itself: the section's own
                # transactions are the ones between the two.
                self.write_transactions = xid - self._before[0] - 1
                self.wal_bytes = lsn - self._before[1]
        finally:
            assert self._conn is not None
            await self._conn.close()

    def figures(self, prefix: str, what: str, operations: int) -> list[Figure]:
        """Per-operation figures (keys ``<prefix>_round_trips`` and so on)."""
        per = max(operations, 1)
        return [
            Figure(f"{prefix}_round_trips", f"round trips per {what}", self.round_trips / per,
                   "trips"),
            Figure(f"{prefix}_write_transactions", f"write transactions per {what}",
                   self.write_transactions / per, "xacts"),
            Figure(f"{prefix}_wal_bytes", f"WAL bytes per {what}", self.wal_bytes / per, "B"),
        ]


# -- the server's statistics, for stretches whose processes exit ---------------------------------

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
