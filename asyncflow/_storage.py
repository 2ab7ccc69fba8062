"""The storage layer: the connection pool, schema migrations and the one error-mapping seam.

With the listener (``_notify``) this is the only module that imports asyncpg. Every statement
comes from ``_queries`` and every value is a bound parameter.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
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
    WorkflowNotFoundError,
)

Row: TypeAlias = Any  # an asyncpg.Record: indexable by position and column name
Connection: TypeAlias = asyncpg.Connection

SCHEMA_VERSION = len(Q.MIGRATIONS)


class UniqueViolation(Exception):
    """Internal: a unique constraint rejected an insert (the journal's duplicate detection)."""


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
    except (pgerr.SerializationError, pgerr.DeadlockDetectedError) as exc:
        raise RetryableTransactionError(str(exc)) from exc
    except (pgerr.CharacterNotInRepertoireError, pgerr.UntranslatableCharacterError) as exc:
        raise InvalidArgumentError(f"text Postgres cannot store: {exc}") from exc
    except _CONNECTION_LOSS as exc:
        raise DatabaseUnavailableError(f"database connection lost: {exc!r}") from exc
    except asyncpg.InterfaceError as exc:
        if conn is None or conn.is_closed():
            raise DatabaseUnavailableError(f"database connection lost: {exc!r}") from exc
        raise


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


def advisory_namespace(schema: str) -> int:
    """The first advisory-lock key for a schema (a signed int4), so schemas never collide."""
    value = zlib.crc32(("asyncflow:" + schema).encode())
    return value - (1 << 32) if value >= (1 << 31) else value


async def _keep_session(_conn: Connection) -> None:
    return None


class Tx:
    """An open transaction on one pooled connection."""

    def __init__(self, storage: Storage, conn: Connection) -> None:
        self._storage = storage
        self.connection = conn

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


class Storage:
    """A pool of connections to one database, with statements rendered for one schema."""

    def __init__(self, url: str, schema: str, *, pool_size: int = 10) -> None:
        Q.quote_schema(schema)  # validate early
        self.url = url
        self.schema = schema
        self.pool_size = pool_size
        self.channel = f"asyncflow_{schema}"
        self.namespace = advisory_namespace(schema)
        self._pool: asyncpg.Pool | None = None
        self._sql: dict[str, str] = {}

    def sql(self, template: str) -> str:
        text = self._sql.get(template)
        if text is None:
            text = self._sql[template] = Q.render(template, self.schema)
        return text

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise NotLaunchedError(
                "asyncflow is not running: use `async with app:` (or `await app.launch()`) first"
            )
        return self._pool

    async def open(self) -> None:
        with map_errors(), _configuration_errors(self.url):
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=min(2, self.pool_size),
                max_size=self.pool_size,
                max_inactive_connection_lifetime=60.0,
                # asyncflow's own statements leave no session state behind, so skip asyncpg's
                # reset round trip on every release; connections that ran user code (transaction
                # functions) are reset explicitly in transaction().
                reset=_keep_session,
            )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def connect(self) -> Connection:
        """A dedicated connection outside the pool (used by the listener)."""
        with map_errors(), _configuration_errors(self.url):
            conn: Connection = await asyncpg.connect(self.url)
            return conn

    @staticmethod
    def is_retryable(exc: BaseException) -> bool:
        """A raw asyncpg error from user code that a transaction retry may cure."""
        return isinstance(exc, pgerr.SerializationError | pgerr.DeadlockDetectedError)

    @staticmethod
    def is_connection_loss(exc: BaseException) -> bool:
        """A raw asyncpg/OS error meaning the connection is gone."""
        return isinstance(exc, _CONNECTION_LOSS)

    # -- single statements (autocommit) -----------------------------------------------------

    async def execute(self, template: str, *args: Any) -> str:
        async with self._acquire() as conn:
            with map_errors(conn):
                result: str = await conn.execute(self.sql(template), *args)
                return result

    async def fetch(self, template: str, *args: Any) -> list[Row]:
        async with self._acquire() as conn:
            with map_errors(conn):
                rows: list[Row] = await conn.fetch(self.sql(template), *args)
                return rows

    async def fetchrow(self, template: str, *args: Any) -> Row | None:
        async with self._acquire() as conn:
            with map_errors(conn):
                return await conn.fetchrow(self.sql(template), *args)

    async def fetchval(self, template: str, *args: Any) -> Any:
        async with self._acquire() as conn:
            with map_errors(conn):
                return await conn.fetchval(self.sql(template), *args)

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Connection]:
        pool = self.pool
        with map_errors():
            conn = await pool.acquire()
        try:
            yield conn
        finally:
            await pool.release(conn)

    @asynccontextmanager
    async def transaction(
        self, isolation: str | None = None, *, user_code: bool = False
    ) -> AsyncIterator[Tx]:
        """Run a block in one transaction; it commits when the block exits normally.

        With ``user_code`` the connection is reset (as a fresh pool connection would be) before
        it goes back to the pool, since user code may have changed session state.
        """
        async with self._acquire() as conn:
            try:
                tx = conn.transaction(isolation=isolation)
                with map_errors(conn):
                    await tx.start()
                try:
                    yield Tx(self, conn)
                except BaseException:
                    if not conn.is_closed():
                        with map_errors(conn):
                            await tx.rollback()
                    raise
                with map_errors(conn):
                    await tx.commit()
            finally:
                if user_code and not conn.is_closed():
                    with anyio.CancelScope(shield=True), map_errors(conn):
                        await conn.reset()

    # -- schema --------------------------------------------------------------------------------

    async def migrate(self) -> int:
        """Create or upgrade the schema; concurrent callers are serialized by an advisory lock."""
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
        table = Q.quote_schema(self.schema) + ".schema_version"
        if not await self.fetchval(Q.VERSION_TABLE_EXISTS, table):
            raise SchemaVersionError(
                f"the asyncflow schema {self.schema!r} does not exist in this database; launch an "
                "AsyncFlow app (or run `asyncflow db migrate`) against it first"
            )
        current = int(await self.fetchval(Q.GET_SCHEMA_VERSION))
        self._check_not_newer(current)
        if current < SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the asyncflow schema {self.schema!r} is at version {current}, older than "
                f"{SCHEMA_VERSION}; run `asyncflow db migrate` or launch an AsyncFlow app first"
            )

    def _check_not_newer(self, current: int) -> None:
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the asyncflow schema {self.schema!r} is at version {current}, but this version "
                f"of asyncflow only knows versions up to {SCHEMA_VERSION}; upgrade asyncflow"
            )
