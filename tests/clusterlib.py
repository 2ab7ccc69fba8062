"""Private Postgres clusters from Debian's PostgreSQL 15 binaries: a primary on a free loopback
port and streaming standbys made with ``pg_basebackup``. Never the shared server.

As root the binaries run as ``postgres`` (initdb refuses root). Tests skip with a reason when
the binaries are missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN = Path(os.environ.get("ASYNCFLOW_PG15_BIN", "/usr/lib/postgresql/15/bin"))


def _can_run() -> bool:
    if not (BIN / "initdb").exists():
        return False
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True


AVAILABLE = _can_run()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One private server: ``initdb`` (or ``pg_basebackup`` of a primary), then ``pg_ctl``."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.pgdata = root / name
        self.port = _free_port()
        self._user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        subprocess.run([str(BIN / args[0]), *args[1:]], check=True, user=self._user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init_primary(self) -> None:
        self._run("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                  "--encoding=utf8", "--no-sync")
        # A synchronous standby that never connects is named, but commits wait for it only in
        # sessions that ask (synchronous_commit = on): the tests choose per connection.
        self._configure("wal_level = replica", "max_wal_senders = 4", "fsync = off",
                        "synchronous_standby_names = 'nobody'", "synchronous_commit = local")

    def init_standby(self, primary: Cluster) -> None:
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U",
                  "postgres", "-D", str(self.pgdata), "-R", "-X", "stream", "--no-sync",
                  "--checkpoint=fast")
        self._configure()

    def _configure(self, *lines: str) -> None:
        with open(self.pgdata / "postgresql.auto.conf", "a") as conf:
            conf.write("\n".join((
                f"port = {self.port}", "listen_addresses = '127.0.0.1'",
                f"unix_socket_directories = '{self.root}'", *lines)) + "\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.pgdata / "log"), "-w",
                  "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass


def new_root() -> Path:
    """A temporary directory the clusters' user owns."""
    root = Path(tempfile.mkdtemp(prefix="asyncflow-pg15-"))
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres", group="postgres")
    return root
