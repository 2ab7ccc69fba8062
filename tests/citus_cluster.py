"""A private Citus cluster for the distributed runs (``ASYNCFLOW_TEST_CITUS=1``, ``.ci/citus``):
a coordinator and two workers made with the Debian PostgreSQL 15 binaries (``initdb`` once, the
data directory copied for the others), each loading ``citus``, on free loopback ports.

A database exists on every node: :meth:`CitusCluster.create_database` makes it on each node
(``CREATE EXTENSION citus`` on each), registers the coordinator and the workers in it, and
:meth:`CitusCluster.clone_database` copies a prepared one (schema migrated and distributed) on
every node at once with ``CREATE DATABASE … TEMPLATE``: the shards on the workers and the
metadata on the coordinator are copied together, so a test's database costs three file copies
instead of a distribution. :meth:`CitusCluster.close` stops every server (``-m immediate``) and
deletes the directory, whatever state a test left them in.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import subprocess
from pathlib import Path

import asyncpg
from clusters import Cluster, _system_user, bindir, free_port, missing, run

from asyncflow._storage.citus import distribute
from asyncflow._storage.database import Storage
from asyncflow.testing._server import scratch_directory

#: Whether the suites run on a Citus cluster (``.ci/citus``).
ENABLED = os.environ.get("ASYNCFLOW_TEST_CITUS", "") not in ("", "0")

#: Shards per distributed table in test databases: enough to spread workflows over both
#: workers, few enough that distributing and copying a database stays fast.
SHARD_COUNT = 4

SETTINGS = (
    "shared_preload_libraries=citus", "max_connections=300",
    "full_page_writes=off", "citus.max_adaptive_executor_pool_size=4",
    "citus.max_shared_pool_size=200", "citus.log_remote_commands=off",
    "citus.background_task_queue_interval=-1", "citus.node_conninfo=sslmode=disable",
    "wal_level=minimal", "max_wal_senders=0",
)


def citus_missing() -> str | None:
    """Why no Citus cluster can be made here (``None``: it can)."""
    reason = missing()
    if reason is not None:
        return reason
    lib = bindir().parent / "lib" / "citus.so"
    if not lib.exists():
        return f"Citus is not installed ({lib} missing: run ../shared/citus/build.sh as root)"
    return None


class CitusCluster:
    """A coordinator and two workers on loopback ports (``127.0.0.1``), trust authentication."""

    def __init__(self, workers: int = 2) -> None:
        reason = citus_missing()
        if reason is not None:
            raise RuntimeError(reason)
        self.root = scratch_directory("asyncflow-citus-")
        user = _system_user()
        if user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.coordinator = Cluster(self.root, "coordinator", free_port())
        self.workers = [Cluster(self.root, f"worker{i}", free_port()) for i in range(workers)]
        atexit.register(self.close)
        try:
            run("initdb", "-D", str(self.coordinator.data), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--no-sync")
            for worker in self.workers:
                run_copy(self.coordinator.data, worker.data)
            for node in self.nodes:
                node.start(*SETTINGS)
        except BaseException:
            self.close()
            raise

    @property
    def nodes(self) -> list[Cluster]:
        return [self.coordinator, *self.workers]

    def url(self, database: str = "postgres") -> str:
        """The coordinator's URL: where the app connects."""
        return self.coordinator.url(database)

    async def create_database(self, name: str) -> None:
        """``name`` on every node, with ``citus`` in it and the nodes registered."""
        for node in self.nodes:
            await _execute(node.url(), f'CREATE DATABASE "{name}"')
            await _execute(node.url(name), "CREATE EXTENSION citus")
        await _execute(self.url(name), "SELECT citus_set_coordinator_host('127.0.0.1', $1)",
                       self.coordinator.port)
        for worker in self.workers:
            await _execute(self.url(name), "SELECT citus_add_node('127.0.0.1', $1)", worker.port)

    async def freeze_template(self, template: str) -> None:
        """Make ``template`` copyable: no new connections to it on any node, and none left (the
        coordinator's cached connections to the workers, Citus's maintenance daemon)."""
        for node in self.nodes:
            await _execute(node.url(), f'ALTER DATABASE "{template}" WITH ALLOW_CONNECTIONS false')
            await _execute(node.url(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE datname = $1 AND pid <> pg_backend_pid()", template)

    async def clone_database(self, template: str, name: str) -> None:
        """A copy of ``template`` (shards and metadata; see :meth:`freeze_template`) as ``name``
        on every node."""
        for node in self.nodes:
            await _execute(node.url(), f'CREATE DATABASE "{name}" TEMPLATE "{template}"')

    async def drop_database(self, name: str) -> None:
        """Drop ``name`` on every node, after rolling back the prepared (two-phase) transactions
        a test left in it: an interrupted commit's, which Citus would recover later."""
        for node in self.nodes:
            try:
                conn = await asyncpg.connect(node.url(name))
            except asyncpg.InvalidCatalogNameError:
                continue
            try:
                for row in await conn.fetch("SELECT gid FROM pg_prepared_xacts "
                                            "WHERE database = current_database()"):
                    await conn.execute(f"ROLLBACK PREPARED '{row[0]}'")
            finally:
                await conn.close()
            await _drop(node, name)

    def restart_worker(self, index: int = 0, mode: str = "immediate") -> None:
        """Stop a worker (``-m immediate``: a crash) and start it again."""
        worker = self.workers[index]
        worker.stop(mode)
        worker.start(*SETTINGS)

    def close(self) -> None:
        atexit.unregister(self.close)
        for node in reversed(self.nodes):
            if node.running():
                try:
                    node.stop("immediate")
                except subprocess.CalledProcessError:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(f"--- {n.log.name}\n" + (n.log.read_text() if n.log.exists() else "")
                         for n in self.nodes)


async def prepare_template(cluster: CitusCluster, name: str, schema: str = "asyncflow") -> None:
    """``name`` on every node: migrated and distributed by workflow id (``asyncflow db
    distribute``'s plan), then frozen for copying."""
    await cluster.create_database(name)
    storage = Storage(cluster.url(name), schema, pool_size=2)
    await storage.open()
    try:
        await distribute(storage, shard_count=SHARD_COUNT)
    finally:
        await storage.close()
    await cluster.freeze_template(name)


def run_copy(source: Path, target: Path) -> None:
    """Copy a stopped data directory (as the servers' user, keeping its modes)."""
    user = _system_user()
    extra = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid,
                                     "extra_groups": []}
    subprocess.run(["cp", "-a", str(source), str(target)], check=True, timeout=60, **extra)


async def _drop(node: Cluster, name: str) -> None:
    """Drop ``name`` on ``node``: no new connections, every session ended (FORCE does not end
    Citus's maintenance daemon, which may still be connected: then try again)."""
    for attempt in range(50):
        try:
            await _execute(node.url(), f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            await _execute(node.url(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
            await _execute(node.url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except asyncpg.InvalidCatalogNameError:
            return
        except asyncpg.ObjectInUseError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.1)


async def _execute(url: str, statement: str, *args: object) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement, *args)
    finally:
        await conn.close()


def main() -> None:  # pragma: no cover - a manual check: python tests/citus_cluster.py
    import time

    started = time.monotonic()
    cluster = CitusCluster()
    try:
        asyncio.run(cluster.create_database("probe"))
        print(f"up in {time.monotonic() - started:.1f} s: {cluster.url('probe')}")
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
