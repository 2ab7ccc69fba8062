"""The driver seam: asyncpg's errors translated into asyncflow's (by class and SQLSTATE, never
by message text), and how the code running in a context learns the database went away."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NoReturn, TypeAlias
from urllib.parse import urlsplit

import asyncpg
import asyncpg.exceptions as pgerr

from .._errors import (
    AsyncFlowError,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    ReadOnlyDatabaseError,
    SchemaVersionError,
    TransactionStateError,
    WorkflowNotFoundError,
)

Row: TypeAlias = Any  # an asyncpg.Record: indexable by position and column name
Connection: TypeAlias = asyncpg.Connection


class PoolConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection of asyncflow's pool. Its ``reset()`` clears what the driver holds (listener
    callbacks, an open transaction) but sends no reset statement of its own: the storage layer
    sends ``RESET_SESSION`` itself, with a user transaction's commit when it can (one round trip
    less per ``@app.transaction``)."""

    #: Set by the pool's watch (``ConnectionPool``) when it closed this connection because
    #: asyncflow's code held it past ``command_timeout``: the error then names the timeout.
    timed_out = False
    _config: Any  # the driver's ConnectionConfiguration (a named tuple; annotation only)

    #: At most this many statements are kept prepared (:attr:`statements`) per connection.
    MAX_PREPARED = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: asyncflow's single statements prepared on this connection, by SQL text: the storage
        #: runs them as prepared statements, a shorter path through the driver than its own
        #: statement cache (about a fifth of a statement's CPU). Not kept when the driver
        #: caches no statements (``statement_cache_size=0``: a transaction pooler).
        self.statements: dict[str, asyncpg.prepared_stmt.PreparedStatement] = {}
        self.prepares = _DIRECT and self._config.statement_cache_size > 0

    def get_reset_query(self) -> str:
        return ""

    def bound_each_statement(self, seconds: float | None) -> None:
        """Let the driver bound every statement of this connection by ``seconds`` (with a
        timer per statement: while it runs a transaction), or not (``None``: while it runs
        single statements, which the pool's watch bounds)."""
        self._config = self._config._replace(command_timeout=seconds)


#: Whether the driver has what :func:`run_prepared` uses (asyncpg 0.29 to 0.32 have, with the
#: same ``bind_execute``; a test pins it); without it every statement takes the public path.
_DIRECT = (hasattr(asyncpg.Connection, "_protocol")
           and hasattr(asyncpg.prepared_stmt.PreparedStatement, "_state")
           and hasattr(asyncpg.protocol.Protocol, "bind_execute"))

#: The row limit of each statement method (``fetchrow`` and ``fetchval`` read one row).
_LIMITS = {"execute": 0, "fetch": 0, "fetchrow": 1, "fetchval": 1}


def run_prepared(conn: PoolConnection, statement: Any, args: tuple[Any, ...],
                 method: str) -> Coroutine[Any, Any, tuple[list[Row], bytes, bool]]:
    """Run a statement prepared on ``conn`` (kept in ``conn.statements``) with ``args``: its
    rows, command status and whether the row limit was reached, for :func:`shaped`.

    It binds and executes through the driver's protocol itself, as the driver's prepared
    statements do, without their three coroutines and checks: on the path of nearly every
    statement, that is about a fifth of a statement's CPU. Statement timeouts, cancellation
    and errors are the driver's own, as on its public path."""
    return conn._protocol.bind_execute(  # type: ignore[no-any-return]
        statement._state, args, "", _LIMITS[method], True, None)


async def prepare_kept(conn: PoolConnection, text: str, args: tuple[Any, ...]) -> Any:
    """Statement ``text`` prepared on pool connection ``conn`` and kept there
    (``PoolConnection.statements``); ``None`` when it is run by the driver instead: it has no
    parameters (a script of several statements has none), or the connection keeps no
    statements."""
    statements = conn.statements
    if not args or not conn.prepares or len(statements) >= conn.MAX_PREPARED:
        return None
    statement = statements[text] = await conn.prepare(text)
    return statement


def shaped(method: str, rows: list[Row], status: bytes) -> Any:
    """What the driver's ``method`` (``execute``, ``fetch``, ``fetchrow``, ``fetchval``)
    returns, from what :func:`run_prepared` returned."""
    if method == "execute":
        return status.decode()
    if method == "fetch":
        return rows
    if not rows:
        return None
    return rows[0] if method == "fetchrow" else rows[0][0]


#: Set by whoever runs code that must know when the database became unreachable under it (a
#: workflow execution): called whenever a DatabaseUnavailableError is raised in its context,
#: even if user code later swallows the exception.
on_unavailable: ContextVar[Callable[[], None] | None] = ContextVar(
    "asyncflow_on_unavailable", default=None
)

#: Set while a history replay runs (asyncflow._operations.replay): code running in it must not
#: reach any database. Called with what was attempted, it records that and returns the error to
#: raise.
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

def _unavailable(message: str) -> DatabaseUnavailableError:
    report_unavailable()
    return DatabaseUnavailableError(message)


class UniqueViolation(DatabaseError):
    """Internal: a unique constraint rejected an insert (the journal's duplicate detection).
    The store translates it where a violation means something; one it did not expect reaches
    the caller as the :class:`DatabaseError` it is."""


class RetryableTransactionError(DatabaseError):
    """Internal: serialization failure or deadlock; the transaction may be retried."""


#: What a transaction pooler does to the driver's named prepared statements.
_PREPARED_STATEMENTS: tuple[type[BaseException], ...] = (
    pgerr.InvalidSQLStatementNameError,  # 26000: prepared statement "…" does not exist
    pgerr.DuplicatePreparedStatementError,  # 42P05: prepared statement "…" already exists
)

_CONNECTION_LOSS: tuple[type[BaseException], ...] = (
    pgerr.PostgresConnectionError,
    pgerr.AdminShutdownError,
    pgerr.CrashShutdownError,
    pgerr.CannotConnectNowError,
    pgerr.TooManyConnectionsError,
    OSError,
    TimeoutError,
)


#: What the driver raises and :func:`raise_mapped` translates (every ``except`` clause there).
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    pgerr.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    *_CONNECTION_LOSS,
)


class map_errors:  # (named as a function: ``with map_errors(conn):``)
    """Translate asyncpg errors raised in its block into asyncflow's, by class and SQLSTATE
    only (see :func:`raise_mapped`); anything else passes through as it is.

    A class rather than a generator-based context manager: it is around every statement."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection | None = None) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if isinstance(exc, DRIVER_ERRORS) and not isinstance(exc, AsyncFlowError):
            raise_mapped(exc, self._conn)


def raise_mapped(exc: BaseException, conn: Connection | None = None) -> NoReturn:
    """Raise asyncflow's error for ``exc``, one of :data:`DRIVER_ERRORS` raised by a statement
    on ``conn`` (the one exception-mapping seam: :class:`map_errors` and the storage's hot path
    call it)."""
    try:
        raise exc
    except AsyncFlowError:  # already ours (a ConnectionError among them): as it is
        raise
    except pgerr.UniqueViolationError as exc:
        raise UniqueViolation(str(exc), exc.sqlstate) from exc
    except pgerr.ForeignKeyViolationError as exc:
        raise WorkflowNotFoundError(
            "the destination workflow does not exist; start it first or check the id"
        ) from exc
    except pgerr.NumericValueOutOfRangeError as exc:
        raise InvalidArgumentError(f"a number is out of the range Postgres stores: {exc}") from exc
    except (pgerr.SerializationError, pgerr.DeadlockDetectedError) as exc:
        raise RetryableTransactionError(str(exc), exc.sqlstate) from exc
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
        raise ReadOnlyDatabaseError(
            f"the database is read-only ({exc}): it is a standby (after a failover, the old "
            "primary), or default_transaction_read_only is on for the role or database. Connect "
            "to the primary: with several hosts in the URL add target_session_attrs=read-write "
            "(postgresql://host1,host2/db?target_session_attrs=read-write)"
        ) from exc
    except _PREPARED_STATEMENTS as exc:
        raise ConfigurationError(
            f"the database URL goes through a transaction pooler (PgBouncer pool_mode="
            "transaction, a provider's pooled URL), which loses prepared statements between "
            f"transactions ({type(exc).__name__}: {exc}). Set connect_options="
            "{'statement_cache_size': 0} (or use a session-mode or direct URL), and give "
            "listen_url= (ASYNCFLOW_LISTEN_URL) a direct or session-mode URL for the listener"
        ) from exc
    except TimeoutError as exc:
        if conn is None or conn.is_closed():
            raise _lost(conn, exc) from exc
        raise _command_timeout() from exc
    except pgerr.InsufficientPrivilegeError as exc:
        raise ConfigurationError(
            f"the database role lacks a privilege asyncflow needs ({exc}); see the README's "
            "privileges section for the GRANTs a runtime role needs"
        ) from exc
    except _CONNECTION_LOSS as exc:
        raise _lost(conn, exc) from exc
    except pgerr.InsufficientResourcesError as exc:  # disk full, out of memory (53xxx)
        raise _unavailable(f"the database cannot serve the request now: {exc}") from exc
    except pgerr.PostgresError as exc:  # anything else: never the driver's own class
        raise DatabaseError(
            f"the database refused a statement of asyncflow ({exc.sqlstate}: {exc}); a "
            "constraint, trigger or rule of the database's own may refuse it", exc.sqlstate
        ) from exc
    except asyncpg.InterfaceError as exc:
        if conn is None or conn.is_closed():
            raise _lost(conn, exc) from exc
        raise DatabaseError(f"the database driver refused a statement: {exc}") from exc
    except asyncpg.InternalClientError as exc:
        # The connection's protocol is out of step, typically because the server's FATAL
        # (shutdown, pg_terminate_backend) arrived just before its socket closed: the statement
        # was never sent. Drop the connection so the pool opens a fresh one.
        if conn is not None and not conn.is_closed():
            conn.terminate()
        raise _lost(conn, exc) from exc


def _lost(conn: Connection | None, exc: BaseException) -> DatabaseUnavailableError:
    """The connection under a statement is gone: the command-timeout error when the pool's
    watch closed it (held past ``command_timeout``), else "connection lost"."""
    if conn is not None and getattr(conn, "timed_out", False):
        return _command_timeout()
    return _unavailable(f"database connection lost: {exc!r}")


def _command_timeout() -> DatabaseUnavailableError:
    return _unavailable(
        "a statement did not finish within the command timeout (connect_options"
        "['command_timeout'], default 60 s): the server is overloaded, a lock is held, or "
        "synchronous replication waits for a standby that is down (synchronous_standby_"
        "names). A write may have taken effect all the same (a commit waiting for a "
        "synchronous standby is already durable on the primary): retry it idempotently")


_CONFIGURATION: tuple[type[BaseException], ...] = (
    pgerr.InvalidCatalogNameError,  # database does not exist
    pgerr.InvalidAuthorizationSpecificationError,  # role does not exist / not permitted
    pgerr.InvalidPasswordError,
    asyncpg.ClientConfigurationError,  # malformed URL or options
)


def _server_of(url: str) -> str:
    """Where a URL points (host and port, never its password), for connection errors."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "the URL's server"
    if not host:
        return "the default server (a local socket)"
    return f"{host}:{port or 5432}"


@contextmanager
def _configuration_errors(url: str, what: str | None = None) -> Iterator[None]:
    """Around opening a connection: failures that retrying cannot fix become
    ConfigurationError, and a server that cannot be reached says so (it is not a lost
    connection: none was made). ``what``: the setting that names ``url``."""
    what = what or "database URL (argument, ASYNCFLOW_DATABASE_URL)"
    try:
        yield
    except _CONNECTION_LOSS as exc:
        raise _unavailable(
            f"cannot connect to the database at {_server_of(url)} ({type(exc).__name__}: "
            f"{exc}); check that Postgres is running there and accepts connections, and the "
            "database URL (argument, ASYNCFLOW_DATABASE_URL)") from exc
    except _CONFIGURATION as exc:
        raise ConfigurationError(
            f"cannot connect to the database ({type(exc).__name__}: {exc}); check the {what}, "
            "the connect_options, that the database exists and the role may log in"
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
