"""The storage layer: statements on the pool, transactions (guarded when they run user code,
savepoints when nested), and schema migrations. The driver's errors are translated in
``_storage.driver`` and connections pooled by ``_storage.pool``.

With those two and the listener this is the only module that imports asyncpg. Every statement
comes from ``_storage.sql`` and every value is a bound parameter.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import zlib
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import anyio
import asyncpg
import asyncpg.exceptions as pgerr

from .._errors import (
    AsyncFlowError,
    NotLaunchedError,
    ReadOnlyDatabaseError,
    SchemaVersionError,
    TransactionStateError,
)
from . import sql
from .connect import ConnectSettings
from .driver import (
    _PREPARED_STATEMENTS,
    DRIVER_ERRORS,
    Connection,
    RetryableTransactionError,
    Row,
    UniqueViolation,
    _configuration_errors,
    _lost_by_user_code,
    _unavailable,
    map_errors,
    on_unavailable,
    prepare_kept,
    raise_mapped,
    refuse_in_replay,
    report_unavailable,
    run_prepared,
    shaped,
)
from .pool import ConnectionPool
from .sql import citus, distribute, migrations, sessions

SCHEMA_VERSION = len(migrations.MIGRATIONS)

#: The connection the current task holds for an open transaction. Statements issued while it is
#: held run on it instead of waiting for a second pool connection (which could deadlock a full
#: pool: no two code paths wait on a pool connection while holding one).
_held: ContextVar[Connection | None] = ContextVar("asyncflow_held_connection", default=None)

def holds_connection() -> bool:
    """Whether this task holds a transaction's connection (statements then run on it)."""
    return _held.get() is not None

async def _roll_back(conn: Connection) -> bool:
    """Roll a user transaction back and reset its session in the same round trip; whether the
    reset went out (the transaction was still open)."""
    if not conn.is_closed() and conn.is_in_transaction():
        with map_errors(conn):
            await conn.execute(sessions.ROLLBACK_USER_TRANSACTION)
        return True
    return False


def _replaced(exc: BaseException) -> bool:
    """Whether ``exc`` (raised in a guarded user transaction) shows the body replaced it."""
    return isinstance(exc, ReadOnlyDatabaseError | pgerr.ReadOnlySQLTransactionError)

def channel_name(schema: str) -> str:
    """The NOTIFY channel of a schema; always within Postgres's 63-byte identifier limit."""
    name = "asyncflow_" + schema
    if len(name) <= 63:
        return name
    return "asyncflow_" + hashlib.sha256(schema.encode()).hexdigest()[:40]


def advisory_namespace(schema: str) -> int:
    """The first advisory-lock key for a schema (a signed int4), so schemas never collide."""
    value = zlib.crc32(("asyncflow:" + schema).encode())
    return value - (1 << 32) if value >= (1 << 31) else value


_BEGIN = {
    None: sessions.BEGIN_READ_COMMITTED,
    "read_committed": sessions.BEGIN_READ_COMMITTED,
    "repeatable_read": sessions.BEGIN_REPEATABLE_READ,
    "serializable": sessions.BEGIN_SERIALIZABLE,
}


def _body_ended(name: str) -> TransactionStateError:
    return TransactionStateError(
        f"the body of transaction {name!r} ended or replaced its transaction (COMMIT, ROLLBACK "
        "or BEGIN); nothing of it was committed. Run only statements on "
        "asyncflow.connection(): asyncflow begins and commits the transaction"
    )


class Tx:
    """An open transaction on one pooled connection."""

    def __init__(self, storage: Storage, conn: Connection, *, guarded: bool = False) -> None:
        self._storage = storage
        self.connection = conn
        self.guarded = guarded
        self.began = time.monotonic()

    async def check_intact(self, name: str) -> None:
        """Raise TransactionStateError if user code ended the transaction (or closed its
        connection: a body that returns normally did not lose it to an outage), naming
        idle_in_transaction_session_timeout when the server closed it for that."""
        conn = self.connection
        if self.guarded and (conn.is_closed() or not conn.is_in_transaction()):
            if conn.is_closed():
                idle = await self._storage.idle_timeout_ended(name, self.began)
                if idle is not None:
                    raise idle
            raise _body_ended(name)

    async def execute(self, template: str, *args: Any) -> str:
        with map_errors(self.connection):
            result: str = await self.connection.execute(self._storage.sql(template), *args)
            return result

    async def fetch(self, template: str, *args: Any) -> list[Row]:
        with map_errors(self.connection):
            rows: list[Row] = await self.connection.fetch(self._storage.sql(template), *args)
            return rows

    async def fetchrow(self, template: str, *args: Any) -> Row | None:
        with map_errors(self.connection):
            return await self.connection.fetchrow(self._storage.sql(template), *args)

    async def fetchval(self, template: str, *args: Any) -> Any:
        with map_errors(self.connection):
            return await self.connection.fetchval(self._storage.sql(template), *args)

class Storage:
    """A pool of connections to one database, with statements rendered for one schema."""

    def __init__(self, url: str, schema: str, *, pool_size: int = 10,
                 settings: ConnectSettings | None = None,
                 application_name: str = "asyncflow") -> None:
        sql.quote_schema(schema)  # validate early
        self.url = url
        #: How connections are opened: the listener's session URL, the driver's options.
        self.settings = settings if settings is not None else ConnectSettings()
        #: What pool connections show as ``application_name`` (``pg_stat_activity``); the
        #: listener's is the same with ``-listener``.
        self.application_name = application_name
        #: Whether a pooler stands between the pool and the server (found at launch).
        self.pooled = False
        self.schema = schema
        self.pool_size = pool_size
        self.channel = channel_name(schema)
        self.namespace = advisory_namespace(schema)  # the migration lock's namespace
        #: The executors' liveness locks' namespace: the schema's OID (known after launch).
        self.lock_namespace: int | None = None
        self._pool: ConnectionPool | None = None
        self._sql: dict[str, str] = {}
        #: Whether Citus distributes the schema (``asyncflow db distribute``; found at open):
        #: statements then take their Citus forms (``sql.citus``), plain Postgres keeps its own.
        self.distributed = False

    def sql(self, template: str) -> str:
        text = self._sql.get(template)
        if text is None:
            form = citus.citus_form(template) if self.distributed else template
            text = self._sql[template] = sql.render(form, self.schema)
        return text

    async def detect_distribution(self) -> None:
        """Find out (one statement) whether Citus distributes the schema, and render statements
        accordingly from now on."""
        anchor = sql.quote_schema(self.schema) + ".coordinator"
        self.distributed = bool(await self.fetchval(distribute.IS_DISTRIBUTED, anchor))
        self._sql.clear()

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            raise NotLaunchedError(
                "asyncflow is not running: use `async with app:` (or `await app.launch()`) first"
            )
        return self._pool

    async def open(self) -> None:
        pool = ConnectionPool(self.url, self.pool_size, self._options(self.application_name))
        pool.release(await pool.acquire())  # fail now on a bad URL or an unreachable server
        self._pool = pool
        await self.detect_distribution()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _options(self, application_name: str) -> dict[str, Any]:
        """The driver's options for a connection shown as ``application_name`` (unless the
        ``server_settings`` of ``connect_options`` name one)."""
        options = dict(self.settings.options)
        options["server_settings"] = {"application_name": application_name[:63],
                                      **options.get("server_settings", {})}
        return options

    @property
    def listen_url(self) -> str:
        """The URL of session connections (the listener's): ``listen_url``, else the URL."""
        return self.settings.listen_url or self.url

    async def connect(self, url: str | None = None, *, listener: bool = False) -> Connection:
        """A dedicated session connection outside the pool (``listener``: the listener's), to
        ``listen_url`` when it is set (statements may go through a transaction pooler; LISTEN
        and session locks may not), else to the database URL."""
        refuse_in_replay("a database connection")
        name = self.application_name
        if listener:
            head, _, tail = name.partition(":")
            name = f"{head}-listener:{tail}" if tail else f"{head}-listener"
        target = url or self.listen_url
        what = "listen URL (listen_url, ASYNCFLOW_LISTEN_URL)" if (
            target != self.url) else None
        with map_errors(), _configuration_errors(target, what):
            conn: Connection = await asyncpg.connect(target, **self._options(name))
            return conn

    async def pool_is_direct(self) -> bool:
        """Whether the pool's connections are sessions of the server itself: the server process
        of a statement is the one the connection was opened with (a pooler in between answers
        the connection with a key of its own)."""
        pool = self.pool
        conn = await pool.acquire()
        try:
            with map_errors(conn):
                pid = await conn.fetchval(self.sql(sessions.BACKEND_PID))
        finally:
            pool.release(conn)
        return bool(pid == conn.get_server_pid())

    def probe_notify(self, channel: str, token: str) -> Coroutine[Any, Any, str]:
        """Commit a test NOTIFY through the pool (the launch check of the listener's path)."""
        return self.execute(sessions.PROBE_NOTIFY, channel, token)

    async def idle_timeout_ended(self, name: str, began: float) -> TransactionStateError | None:
        """The error naming ``idle_in_transaction_session_timeout`` if it explains why the
        session of user transaction ``name`` (begun at ``began``) was closed under its body;
        ``None`` if it does not (no such timeout, or the body was shorter) or cannot be read."""
        try:
            # A connection of its own: the transaction still holds its (closed) pool slot, and
            # waiting for another one could wait for ever on a full pool.
            conn = await self.connect(self.url)
            try:
                with map_errors(conn):
                    limit = int(await conn.fetchval(self.sql(sessions.IDLE_IN_TRANSACTION_TIMEOUT)))
            finally:
                conn.terminate()
        except AsyncFlowError:
            return None
        if limit <= 0 or (time.monotonic() - began) * 1000 < limit:
            return None
        return TransactionStateError(
            f"the server closed the session of transaction {name!r}: its body kept the "
            f"transaction open without a statement for longer than the server's "
            f"idle_in_transaction_session_timeout ({limit} ms), awaiting something other than "
            "the database; nothing of it was committed. Do slow work outside the transaction "
            "(in a step before or after it), or raise idle_in_transaction_session_timeout for "
            "this role or database"
        )

    @staticmethod
    def is_retryable(exc: BaseException) -> bool:
        """A raw asyncpg error from user code that a transaction retry may cure."""
        return isinstance(exc, pgerr.SerializationError | pgerr.DeadlockDetectedError)

    # -- single statements (autocommit) -----------------------------------------------------

    # Plain functions returning the statement's coroutine: no coroutine frame of their own per
    # statement (they are on every path; thousands may be pending at once).

    def execute(self, template: str, *args: Any) -> Coroutine[Any, Any, str]:
        return self._query("execute", template, args)

    def fetch(self, template: str, *args: Any) -> Coroutine[Any, Any, list[Row]]:
        return self._query("fetch", template, args)

    def fetchrow(self, template: str, *args: Any) -> Coroutine[Any, Any, Row | None]:
        return self._query("fetchrow", template, args)

    def fetchval(self, template: str, *args: Any) -> Coroutine[Any, Any, Any]:
        return self._query("fetchval", template, args)

    async def _query(self, method: str, template: str, args: tuple[Any, ...]) -> Any:
        # Nearly every statement's path: no coroutine or context manager but this one.
        refuse_in_replay("a database statement")
        held = _held.get()
        if held is None:
            pool = self.pool
            conn = pool.take_idle() or await pool.acquire()
        else:  # inside a transaction of this task: its connection
            pool, conn = None, held
        try:
            text = self.sql(template)
            statement = conn.statements.get(text)
            if statement is None:
                statement = await prepare_kept(conn, text, args)
                if statement is None:
                    return await getattr(conn, method)(text, *args)
            rows, status, _ = await run_prepared(conn, statement, args, method)
            return shaped(method, rows, status)
        except pgerr.InvalidCachedStatementError as exc:
            # Prepared before a schema change (it did nothing): run again, unless in a transaction.
            conn.statements.pop(text, None)
            if held is not None:
                raise_mapped(exc, conn)
            with map_errors(conn):
                return await getattr(conn, method)(text, *args)
        except DRIVER_ERRORS as exc:
            raise_mapped(exc, conn)  # (as map_errors does)
        finally:
            # Also when cancelled mid-statement: asyncpg cancels the statement on the server and
            # the connection's next statement waits for that, so it stays usable.
            if pool is not None:
                pool.release(conn)

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Connection]:
        refuse_in_replay("a database transaction")
        pool = self.pool
        conn = await pool.acquire()
        # A transaction's statements (its own and user code's in an @app.transaction body,
        # with the body's other awaits between them) are bounded one by one, by the driver.
        pool.exempt(conn)
        try:
            yield conn
        except asyncio.CancelledError:
            conn.terminate()
            raise
        finally:
            pool.release(conn)

    @asynccontextmanager
    async def transaction(
        self, isolation: str | None = None, *, user_code: bool = False, name: str = ""
    ) -> AsyncIterator[Tx]:
        """Run a block in one transaction; it commits when the block exits normally.

        With ``user_code`` the connection is reset (as a fresh pool connection would be) before
        it goes back to the pool, since user code may have changed session state.
        """
        held = _held.get()
        if held is not None:  # nested in this task's transaction: a savepoint on its connection
            async with self._savepoint(held) as nested:
                yield nested
            return
        async with self._acquire() as conn:
            session_reset = False  # whether RESET_SESSION went with the commit
            try:
                if user_code:
                    # Guarded (see sql.sessions.BEGIN_USER_TRANSACTION): the body cannot commit.
                    with map_errors(conn):
                        begin = _BEGIN[isolation]
                        await conn.execute(self.sql(begin))
                    tx = None
                else:
                    tx = conn.transaction(isolation=isolation)
                    with map_errors(conn):
                        await tx.start()
                token = _held.set(conn)
                began = time.monotonic()
                try:
                    yield Tx(self, conn, guarded=user_code)
                except BaseException as exc:
                    if _lost_by_user_code(conn, exc):
                        idle = await self.idle_timeout_ended(name, began) if user_code else None
                        if idle is not None:
                            raise idle from exc
                        raise _unavailable(f"database connection lost: {exc!r}") from exc
                    if user_code and _replaced(exc):
                        session_reset = await _roll_back(conn)
                        raise _body_ended(name) from exc
                    if not conn.is_closed():
                        if tx is not None:
                            with map_errors(conn):
                                await tx.rollback()
                        elif not await _roll_back(conn):  # the body ended the transaction
                            raise _body_ended(name) from exc
                        else:
                            session_reset = True
                    if self.pooled and isinstance(exc, _PREPARED_STATEMENTS):
                        with map_errors(conn):  # the body's statements on the pooler
                            raise exc
                    raise
                finally:
                    _held.reset(token)
                try:
                    with map_errors(conn):
                        if tx is not None:
                            await tx.commit()
                        else:  # commit and reset the session in one round trip
                            await conn.execute(self.sql(sessions.COMMIT_USER_TRANSACTION))
                            session_reset = True
                except ReadOnlyDatabaseError as exc:  # the transaction committed is not ours
                    if not user_code:
                        raise
                    session_reset = await _roll_back(conn)
                    raise _body_ended(name) from exc
            finally:
                if user_code and not conn.is_closed():
                    with anyio.CancelScope(shield=True), map_errors(conn):
                        await conn.reset()  # the driver's side (and a rollback, if still open)
                        if not session_reset:
                            await conn.execute(sessions.RESET_SESSION)

    @asynccontextmanager
    async def _savepoint(self, conn: Connection) -> AsyncIterator[Tx]:
        with map_errors(conn):
            await conn.execute(sessions.SAVEPOINT)
        try:
            yield Tx(self, conn)
        except BaseException:
            if not conn.is_closed() and conn.is_in_transaction():
                with map_errors(conn):
                    await conn.execute(sessions.ROLLBACK_TO_SAVEPOINT)
            raise
        with map_errors(conn):
            await conn.execute(sessions.RELEASE_SAVEPOINT)

    # -- schema --------------------------------------------------------------------------------

    async def migrate(self) -> int:
        """Create or upgrade the schema; concurrent callers are serialized by an advisory lock.

        An up-to-date schema is only read, never locked or altered: a runtime role needs no
        CREATE privilege once the schema is migrated.
        """
        current = await self._installed_version()
        self._check_not_newer(current)
        if current == SCHEMA_VERSION:
            return SCHEMA_VERSION
        async with self.transaction() as tx:
            await tx.execute(migrations.MIGRATION_LOCK, self.namespace)
            # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema
            # exists: its owner migrates without that privilege.
            if not await tx.fetchval(migrations.SCHEMA_EXISTS, self.schema):
                await tx.execute(migrations.CREATE_SCHEMA)
            await tx.execute(migrations.CREATE_VERSION_TABLE)
            row = await tx.fetchrow(migrations.GET_SCHEMA_VERSION)
            current = int(row[0]) if row is not None else 0
            self._check_not_newer(current)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                await tx.execute(migrations.MIGRATIONS[version - 1])
                await tx.execute(migrations.SET_SCHEMA_VERSION, version)
            return SCHEMA_VERSION

    async def check_schema(self) -> None:
        """Fail clearly if the schema is missing or newer than this code (clients never migrate)."""
        current = await self._installed_version()
        if current == 0:
            raise SchemaVersionError(
                f"the asyncflow schema {self.schema!r} does not exist in this database; launch an "
                "AsyncFlow app (or run `asyncflow db migrate`) against it first"
            )
        self._check_not_newer(current)
        if current < SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the asyncflow schema {self.schema!r} is at version {current}, this code needs "
                f"{SCHEMA_VERSION}: run `asyncflow db migrate` as its owner (or launch an "
                "AsyncFlow app that migrates)"
            )

    async def _installed_version(self) -> int:
        """The schema version in the database (0: no asyncflow schema yet); read-only."""
        table = sql.quote_schema(self.schema) + ".schema_version"
        if not await self.fetchval(migrations.VERSION_TABLE_EXISTS, table):
            return 0
        return int(await self.fetchval(migrations.GET_SCHEMA_VERSION))

    def _check_not_newer(self, current: int) -> None:
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the asyncflow schema {self.schema!r} is at version {current}, but this version "
                f"of asyncflow only knows versions up to {SCHEMA_VERSION}; upgrade asyncflow"
            )


__all__ = [
    "Connection", "ConnectionPool", "RetryableTransactionError", "Row", "Storage", "Tx",
    "UniqueViolation", "holds_connection", "map_errors", "on_unavailable", "report_unavailable",
]
