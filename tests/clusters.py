"""Private Postgres clusters for the failover test (tests/faults/test_fault_failover.py): a primary
made with the Debian binaries (``initdb`` on a free loopback port) and a streaming replica made
with ``pg_basebackup -R``, which the test promotes after stopping the primary.

Never the shared server: each pair lives in its own temporary directory, with its own sockets,
and :meth:`ReplicatedPair.close` stops every server it started (``-m immediate``) and deletes
the directory whatever state the test left them in. Running as root (CI), the servers run as
the ``postgres`` system user that the Debian packages create.

``ASYNCFLOW_PG_BIN`` names another directory of the same binaries (default
``/usr/lib/postgresql/15/bin``); :func:`missing` says why a pair cannot be made here.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path

from asyncflow.testing._server import scratch_directory

DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")
TOOLS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
SUPERUSER = "postgres"


def bindir() -> Path:
    return Path(os.environ.get("ASYNCFLOW_PG_BIN") or DEBIAN_BIN)


def _system_user() -> pwd.struct_passwd | None:
    """Who runs the servers: ourselves, or (as root, which Postgres refuses) ``postgres``."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam("postgres")


def missing() -> str | None:
    """Why no private cluster can be made here (``None``: it can)."""
    absent = [tool for tool in TOOLS if not (bindir() / tool).exists()]
    if absent:
        return (f"the PostgreSQL server binaries are not installed ({', '.join(absent)} missing "
                f"in {bindir()}; apt-get install postgresql-15, or set ASYNCFLOW_PG_BIN)")
    if os.geteuid() == 0:
        try:
            _system_user()
        except KeyError:
            return "running as root and there is no 'postgres' system user to run Postgres as"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One data directory and the server running on it (``127.0.0.1:port``)."""

    def __init__(self, root: Path, name: str, port: int) -> None:
        self.root = root
        self.data = root / name
        self.log = root / f"{name}.log"
        self.port = port

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, *settings: str) -> None:
        options = [f"-c port={self.port}", "-c listen_addresses=127.0.0.1",
                   f"-c unix_socket_directories={self.root}", "-c fsync=off",
                   *(f"-c {s}" for s in settings)]
        run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", " ".join(options), "start")

    def stop(self, mode: str = "fast") -> None:
        run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def promote(self) -> None:
        run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "promote")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


class ReplicatedPair:
    """A primary and its streaming replica (asynchronous for every session that does not ask
    otherwise; ``synchronous_standby_names = '*'`` lets a session wait with
    ``synchronous_commit = remote_apply`` until the replica has applied everything)."""

    def __init__(self) -> None:
        reason = missing()
        if reason is not None:
            raise RuntimeError(reason)
        self.root = scratch_directory("asyncflow-failover-")
        user = _system_user()
        if user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.primary = Cluster(self.root, "primary", free_port())
        self.replica = Cluster(self.root, "replica", free_port())
        atexit.register(self.close)  # also if the test run ends without the fixture's teardown
        try:
            run("initdb", "-D", str(self.primary.data), "-U", SUPERUSER, "--auth=trust",
                "-E", "UTF8", "--no-sync")
            self.primary.start("synchronous_standby_names='*'", "wal_level=replica")
            run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port),
                "-U", SUPERUSER, "-D", str(self.replica.data), "-R", "-X", "stream",
                "-c", "fast", "--no-sync")
            self.replica.start("hot_standby=on")
        except BaseException:
            self.close()
            raise

    def url(self, database: str) -> str:
        """Both hosts, read-write only: a client follows the primary through a failover."""
        return (f"postgresql://{SUPERUSER}@127.0.0.1:{self.primary.port},"
                f"127.0.0.1:{self.replica.port}/{database}?target_session_attrs=read-write")

    async def fail_over(self) -> None:
        """Crash the primary (``-m immediate``), then promote the replica."""
        await asyncio.to_thread(self.primary.stop, "immediate")
        await asyncio.to_thread(self.replica.promote)

    def close(self) -> None:
        atexit.unregister(self.close)
        for cluster in (self.replica, self.primary):
            if cluster.running():
                try:
                    cluster.stop("immediate")
                except subprocess.CalledProcessError:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(f"--- {c.log.name}\n" + (c.log.read_text() if c.log.exists() else "")
                         for c in (self.primary, self.replica))


def run(tool: str, *args: str) -> None:
    """Run one of the server binaries (as the ``postgres`` user when we are root); a failure
    raises with the tool's output."""
    user = _system_user()
    extra = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid,
                                     "extra_groups": []}
    done = subprocess.run([str(bindir() / tool), *args], capture_output=True, text=True,
                          cwd="/", timeout=120, check=False, **extra)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, [tool, *args],
                                            done.stdout, done.stderr)
