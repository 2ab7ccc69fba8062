"""The storage layer: the connection pool, schema migrations and the one error-mapping seam.

With the listener (``_notify``) this is the only module that imports asyncpg. Every statement
comes from ``_queries`` and every value is a bound parameter.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any, TypeAlias

import anyio
import asyncpg
import asyncpg.exceptions as pgerr

from . import _queries as Q
from ._errors import (
    AsyncFlowError,
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    NotLaunchedError,
    SchemaVersionError,
    TransactionStateError,
    WorkflowNotFoundError,
)

Row: TypeAlias = Any  # an asyncpg.Record: indexable by position and column name
Connection: TypeAlias = asyncpg.Connection

SCHEMA_VERSION = len(Q.MIGRATIONS)

#: Set by whoever runs code that must know when the database became unreachable under it (a
#: workflow execution): called whenever a DatabaseUnavailableError is raised in its context,
#: even if user code later swallows the exception.
on_unavailable: ContextVar[Callable[[], None] | None] = ContextVar(
    "asyncflow_on_unavailable", default=None
)
#: The connection the current task holds for an open transaction. Statements issued while it is
#: held run on it instead of waiting for a second pool connection (which could deadlock a full
#: pool: no two code paths wait on a pool connection while holding one).
_held: ContextVar[Connection | None] = ContextVar("asyncflow_held_connection", default=None)


#: Set while a history replay runs (asyncflow._replay): code running in it must not reach any
#: database. Called with what was attempted, it records that and returns the error to raise.
no_database: ContextVar[Callable[[str], BaseException] | None] = ContextVar(
    "asyncflow_no_database", default=None
)


def refuse_in_replay(what: str) -> None:
    """Raise if this code runs inside a history replay, which never touches a database."""
    refuse = no_database.get()
    if refuse is not None:
        raise refuse(what)


def report_unavailable() -> None:
    """Tell the code running in this context that the database became unreachable under it."""
    callback = on_unavailable.get()
    if callback is not None:
        callback()


def holds_connection() -> bool:
    """Whether this task holds a transaction's connection (statements then run on it)."""
    return _held.get() is not None


def _unavailable(message: str) -> DatabaseUnavailableError:
    report_unavailable()
    return DatabaseUnavailableError(message)


class UniqueViolation(Exception):
    """Internal: a unique constraint rejected an insert (the journal's duplicate detection)."""


class ReadOnlyDatabase(DatabaseUnavailableError):
    """Internal: a write was refused because the transaction is read-only. Outside a user
    transaction: the database is read-only (a standby). Inside one: the body replaced asyncflow's
    transaction (new transactions on that connection are read-only by default)."""


async def _roll_back(conn: Connection) -> None:
    if not conn.is_closed() and conn.is_in_transaction():
        with map_errors(conn):
            await conn.execute(Q.ROLLBACK)


def _replaced(exc: BaseException) -> bool:
    """Whether ``exc`` (raised in a guarded user transaction) shows the body replaced it."""
    return isinstance(exc, ReadOnlyDatabase | pgerr.ReadOnlySQLTransactionError)


class RetryableTransactionError(AsyncFlowError):
    """Internal: serialization failure or deadlock; the transaction may be retried."""


_CONNECTION_LOSS: tuple[type[BaseException], ...] = (
    pgerr.PostgresConnectionError,
    pgerr.AdminShutdownError,
    pgerr.CrashShutdownError,
    pgerr.CannotConnectNowError,
    pgerr.TooManyConnectionsError,
    OSError,
    TimeoutError,
)


@contextmanager
def map_errors(conn: Connection | None = None) -> Iterator[None]:
    """Translate asyncpg errors into asyncflow's, by class and SQLSTATE only."""
    try:
        yield
    except pgerr.UniqueViolationError as exc:
        raise UniqueViolation(str(exc)) from exc
    except pgerr.ForeignKeyViolationError as exc:
        raise WorkflowNotFoundError(
            "the destination workflow does not exist; start it first or check the id"
        ) from exc
    except pgerr.NumericValueOutOfRangeError as exc:
        raise InvalidArgumentError(f"a number is out of the range Postgres stores: {exc}") from exc
    except (pgerr.SerializationError, pgerr.DeadlockDetectedError) as exc:
        raise RetryableTransactionError(str(exc)) from exc
    except (pgerr.CharacterNotInRepertoireError, pgerr.UntranslatableCharacterError) as exc:
        raise InvalidArgumentError(f"text Postgres cannot store: {exc}") from exc
    except pgerr.DataError as exc:  # a malformed value (say, of an imported row)
        raise InvalidArgumentError(f"a value Postgres cannot store: {exc}") from exc
    except pgerr.UndefinedTableError as exc:
        raise SchemaVersionError(
            f"the asyncflow schema is missing from the database ({exc}); launch an AsyncFlow app "
            "(or run `asyncflow db migrate`) against it"
        ) from exc
    except (pgerr.ObjectNotInPrerequisiteStateError, pgerr.QueryCanceledError) as exc:
        # Connections refused (the database does not accept connections now), or a statement
        # cancelled by statement_timeout / lock_timeout: the database cannot serve us right now.
        raise _unavailable(f"the database cannot serve the request now: {exc}") from exc
    except pgerr.InFailedSQLTransactionError as exc:
        raise TransactionStateError(
            "the transaction was aborted by an error inside it (an error the transaction body "
            "caught and went on from); nothing of it was committed. Let errors of statements "
            "on asyncflow.connection() propagate, or use a savepoint (conn.transaction())"
        ) from exc
    except pgerr.ReadOnlySQLTransactionError as exc:
        raise ReadOnlyDatabase(
            f"the database is read-only now (a standby, or set read-only): {exc}"
        ) from exc
    except pgerr.InsufficientPrivilegeError as exc:
        raise ConfigurationError(
            f"the database role lacks a privilege asyncflow needs ({exc}); see the README's "
            "privileges section for the GRANTs a runtime role needs"
        ) from exc
    except _CONNECTION_LOSS as exc:
        raise _unavailable(f"database connection lost: {exc!r}") from exc
    except asyncpg.InterfaceError as exc:
        if conn is None or conn.is_closed():
            raise _unavailable(f"database connection lost: {exc!r}") from exc
        raise
    except asyncpg.InternalClientError as exc:
        # The connection's protocol is out of step, typically because the server's FATAL
        # (shutdown, pg_terminate_backend) arrived just before its socket closed: the statement
        # was never sent. Drop the connection so the pool opens a fresh one.
        if conn is not None and not conn.is_closed():
            conn.terminate()
        raise _unavailable(f"database connection lost: {exc!r}") from exc


_CONFIGURATION: tuple[type[BaseException], ...] = (
    pgerr.InvalidCatalogNameError,  # database does not exist
    pgerr.InvalidAuthorizationSpecificationError,  # role does not exist / not permitted
    pgerr.InvalidPasswordError,
    asyncpg.ClientConfigurationError,  # malformed URL or options
)


@contextmanager
def _configuration_errors(url: str) -> Iterator[None]:
    """Connection failures that retrying cannot fix become ConfigurationError."""
    try:
        yield
    except _CONFIGURATION as exc:
        raise ConfigurationError(
            f"cannot connect to the database ({type(exc).__name__}: {exc}); check the database "
            "URL (argument, ASYNCFLOW_DATABASE_URL), that the database exists and the role may "
            "log in"
        ) from exc


_SESSION_ENDED: tuple[type[BaseException], ...] = (
    pgerr.PostgresConnectionError,
    pgerr.AdminShutdownError,
    pgerr.CrashShutdownError,
    pgerr.CannotConnectNowError,
)


def _lost_by_user_code(conn: Connection, exc: BaseException) -> bool:
    """Whether ``exc``, raised by user code in a transaction on ``conn``, means the connection
    is gone (the transaction is then retried as an outage rather than recorded as a failure).

    Judged by the connection, not by the exception's type alone: a body's own OSError or
    TimeoutError (a missing file, a slow service) is a failure of the body.
    """
    if not isinstance(exc, Exception) or isinstance(
            exc, DatabaseUnavailableError | TransactionStateError):
        return False
    if isinstance(exc, asyncpg.InternalClientError):  # protocol out of step: unusable
        conn.terminate()
        return True
    return isinstance(exc, _SESSION_ENDED) or conn.is_closed()


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
    None: Q.BEGIN_READ_COMMITTED,
    "read_committed": Q.BEGIN_READ_COMMITTED,
    "repeatable_read": Q.BEGIN_REPEATABLE_READ,
    "serializable": Q.BEGIN_SERIALIZABLE,
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

    def check_intact(self, name: str) -> None:
        """Raise TransactionStateError if user code ended the transaction (or closed its
        connection: a body that returns normally did not lose it to an outage)."""
        conn = self.connection
        if self.guarded and (conn.is_closed() or not conn.is_in_transaction()):
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


class ConnectionPool:
    """A lean connection pool: at most ``size`` connections, reused last-in first-out.

    Release is synchronous (no reset round trip, no task per release): asyncflow's statements
    leave no session state, and connections that ran user code are reset by ``transaction()``.
    A closed connection is dropped on release and its slot handed to a waiter.
    """

    def __init__(self, url: str, size: int) -> None:
        self._url = url
        self._size = size
        self._idle: list[Connection] = []
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._open = 0  # open or opening
        self._closed = False
        #: Backend pids of this pool's connections: NOTIFYs they send are echoes of local
        #: commits whose waiters were already woken in-process.
        self.pids: set[int] = set()
        # The pid of each open connection, kept here: a terminated connection cannot tell it.
        self._pid_of: dict[Connection, int] = {}

    @property
    def size(self) -> int:
        return self._size

    @property
    def open_connections(self) -> int:
        return self._open

    async def acquire(self) -> Connection:
        while True:
            if self._closed:
                raise NotLaunchedError("the connection pool is closed")
            while self._idle:
                conn = self._idle.pop()
                if not conn.is_closed():
                    return conn
                self._open -= 1
                self.pids.discard(self._pid_of.pop(conn, 0))
            if self._open < self._size:
                self._open += 1
                try:
                    with map_errors(), _configuration_errors(self._url):
                        new: Connection = await asyncpg.connect(self._url)
                    pid = self._pid_of[new] = new.get_server_pid()
                    self.pids.add(pid)
                    # Forget the pid the moment the connection is gone, so a backend that later
                    # gets the same pid is never mistaken for ours.
                    new.add_termination_listener(lambda _c, pid=pid: self.pids.discard(pid))
                    return new
                except BaseException:
                    self._open -= 1
                    self._hand(None)
                    raise
            waiter: asyncio.Future[Connection | None] = (
                asyncio.get_running_loop().create_future()
            )
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    got = waiter.result()
                    if got is not None:
                        self.release(got)
                    else:
                        self._hand(None)
                raise
            if handed is not None:
                return handed
            # None: a slot was freed (a connection was dropped): open one on the next turn.

    def release(self, conn: Connection) -> None:
        if self._closed or conn.is_closed():
            if not conn.is_closed():
                conn.terminate()
            self._open -= 1
            self.pids.discard(self._pid_of.pop(conn, 0))
            self._hand(None)
        else:
            self._hand(conn)

    def _hand(self, conn: Connection | None) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)

    async def close(self) -> None:
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(NotLaunchedError("the connection pool is closed"))
        self._waiters.clear()
        idle, self._idle = self._idle, []
        self.pids.clear()
        self._pid_of.clear()
        for conn in idle:
            self._open -= 1
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:
                conn.terminate()


class Storage:
    """A pool of connections to one database, with statements rendered for one schema."""

    def __init__(self, url: str, schema: str, *, pool_size: int = 10) -> None:
        Q.quote_schema(schema)  # validate early
        self.url = url
        self.schema = schema
        self.pool_size = pool_size
        self.channel = channel_name(schema)
        self.namespace = advisory_namespace(schema)  # the migration lock's namespace
        #: The executors' liveness locks' namespace: the schema's OID (known after launch).
        self.lock_namespace: int | None = None
        self._pool: ConnectionPool | None = None
        self._sql: dict[str, str] = {}

    def sql(self, template: str) -> str:
        text = self._sql.get(template)
        if text is None:
            text = self._sql[template] = Q.render(template, self.schema)
        return text

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            raise NotLaunchedError(
                "asyncflow is not running: use `async with app:` (or `await app.launch()`) first"
            )
        return self._pool

    async def open(self) -> None:
        pool = ConnectionPool(self.url, self.pool_size)
        pool.release(await pool.acquire())  # fail now on a bad URL or an unreachable server
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def connect(self) -> Connection:
        """A dedicated connection outside the pool (used by the listener)."""
        refuse_in_replay("a database connection")
        with map_errors(), _configuration_errors(self.url):
            conn: Connection = await asyncpg.connect(self.url)
            return conn

    @staticmethod
    def is_retryable(exc: BaseException) -> bool:
        """A raw asyncpg error from user code that a transaction retry may cure."""
        return isinstance(exc, pgerr.SerializationError | pgerr.DeadlockDetectedError)

    # -- single statements (autocommit) -----------------------------------------------------

    async def execute(self, template: str, *args: Any) -> str:
        result: str = await self._query("execute", template, args)
        return result

    async def fetch(self, template: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self._query("fetch", template, args)
        return rows

    async def fetchrow(self, template: str, *args: Any) -> Row | None:
        return await self._query("fetchrow", template, args)

    async def fetchval(self, template: str, *args: Any) -> Any:
        return await self._query("fetchval", template, args)

    async def _query(self, method: str, template: str, args: tuple[Any, ...]) -> Any:
        refuse_in_replay("a database statement")
        held = _held.get()
        if held is not None:  # inside a transaction of this task: use its connection
            with map_errors(held):
                return await getattr(held, method)(self.sql(template), *args)
        pool = self.pool
        conn = await pool.acquire()
        try:
            with map_errors(conn):
                return await getattr(conn, method)(self.sql(template), *args)
        finally:
            # Also when cancelled mid-statement: asyncpg cancels the statement on the server and
            # the connection's next statement waits for that, so it stays usable.
            pool.release(conn)

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Connection]:
        refuse_in_replay("a database transaction")
        pool = self.pool
        conn = await pool.acquire()
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
            try:
                if user_code:
                    # Guarded (see _queries.BEGIN_USER_TRANSACTION): the body cannot commit.
                    with map_errors(conn):
                        await conn.execute(Q.READ_ONLY_BY_DEFAULT)
                        begin = _BEGIN[isolation]
                        await conn.execute(self.sql(begin))
                    tx = None
                else:
                    tx = conn.transaction(isolation=isolation)
                    with map_errors(conn):
                        await tx.start()
                token = _held.set(conn)
                try:
                    yield Tx(self, conn, guarded=user_code)
                except BaseException as exc:
                    if _lost_by_user_code(conn, exc):
                        raise _unavailable(f"database connection lost: {exc!r}") from exc
                    if user_code and _replaced(exc):
                        await _roll_back(conn)
                        raise _body_ended(name) from exc
                    if not conn.is_closed():
                        with map_errors(conn):
                            if tx is not None:
                                await tx.rollback()
                            elif conn.is_in_transaction():
                                await conn.execute(Q.ROLLBACK)
                            else:  # the body ended the transaction itself
                                raise _body_ended(name) from exc
                    raise
                finally:
                    _held.reset(token)
                try:
                    with map_errors(conn):
                        if tx is not None:
                            await tx.commit()
                        else:
                            await conn.execute(self.sql(Q.COMMIT_USER_TRANSACTION))
                except ReadOnlyDatabase as exc:  # the transaction committed is not ours
                    if not user_code:
                        raise
                    await _roll_back(conn)
                    raise _body_ended(name) from exc
            finally:
                if user_code and not conn.is_closed():
                    with anyio.CancelScope(shield=True), map_errors(conn):
                        await conn.reset()

    @asynccontextmanager
    async def _savepoint(self, conn: Connection) -> AsyncIterator[Tx]:
        with map_errors(conn):
            await conn.execute(Q.SAVEPOINT)
        try:
            yield Tx(self, conn)
        except BaseException:
            if not conn.is_closed() and conn.is_in_transaction():
                with map_errors(conn):
                    await conn.execute(Q.ROLLBACK_TO_SAVEPOINT)
            raise
        with map_errors(conn):
            await conn.execute(Q.RELEASE_SAVEPOINT)

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
            await tx.execute(Q.MIGRATION_LOCK, self.namespace)
            await tx.execute(Q.CREATE_SCHEMA)
            await tx.execute(Q.CREATE_VERSION_TABLE)
            row = await tx.fetchrow(Q.GET_SCHEMA_VERSION)
            current = int(row[0]) if row is not None else 0
            self._check_not_newer(current)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                await tx.execute(Q.MIGRATIONS[version - 1])
                await tx.execute(Q.SET_SCHEMA_VERSION, version)
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
                f"the asyncflow schema {self.schema!r} is at version {current}, older than "
                f"{SCHEMA_VERSION}; run `asyncflow db migrate` or launch an AsyncFlow app first"
            )

    async def _installed_version(self) -> int:
        """The schema version in the database (0: no asyncflow schema yet); read-only."""
        table = Q.quote_schema(self.schema) + ".schema_version"
        if not await self.fetchval(Q.VERSION_TABLE_EXISTS, table):
            return 0
        return int(await self.fetchval(Q.GET_SCHEMA_VERSION))

    def _check_not_newer(self, current: int) -> None:
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the asyncflow schema {self.schema!r} is at version {current}, but this version "
                f"of asyncflow only knows versions up to {SCHEMA_VERSION}; upgrade asyncflow"
            )
