"""A private PgBouncer (Debian's package) in front of the test server, started by the tests.

Each instance writes its own pgbouncer.ini in a temporary directory and listens on a free
loopback port; ``auth_type = any`` (every client logs in as the server URL's user). Tests that
need it skip with a reason when pgbouncer is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgBouncer:
    """``pgbouncer`` in ``mode`` (``transaction``, ``session``) in front of ``server_url``'s
    server; :meth:`url` gives a URL of one database through it."""

    def __init__(self, server_url: str, mode: str, *, pool_size: int = 20) -> None:
        assert PGBOUNCER is not None
        parts = urlsplit(server_url)
        query = parse_qs(parts.query)
        host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
        port = parts.port or int(query.get("port", ["5432"])[0])
        self.user = parts.username or "postgres"
        self.port = _free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="asyncflow-pgbouncer-"))
        # pgbouncer refuses to run as root: run it as the owner of the server's socket
        # directory (which can reach the socket), else as postgres.
        self._run_as: str | None = None
        if os.geteuid() == 0:
            owner = os.stat(host).st_uid if host.startswith("/") else 0
            self._run_as = pwd.getpwuid(owner).pw_name if owner else "postgres"
            shutil.chown(self.tmp, user=self._run_as)
        self.ini = self.tmp / "pgbouncer.ini"
        self.ini.write_text(f"""[databases]
* = host={host} port={port} user={self.user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = any
pool_mode = {mode}
default_pool_size = {pool_size}
max_client_conn = 500
admin_users = {self.user}
ignore_startup_parameters = extra_float_digits
logfile = {self.tmp / "pgbouncer.log"}
pidfile = {self.tmp / "pgbouncer.pid"}
server_check_delay = 0
""")
        self.process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Future[None] | None = None

    def url(self, database: str) -> str:
        """A URL of ``database`` through this pgbouncer."""
        return urlunsplit(("postgresql", f"{self.user}@127.0.0.1:{self.port}", "/" + database,
                           "", ""))

    async def start(self) -> None:
        """Start it and return once it listens (it logs "process up" to stderr then)."""
        args = [str(PGBOUNCER), str(self.ini)]
        if self._run_as is not None:
            args[1:1] = ["-u", self._run_as]
        self.process = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert self.process.stderr is not None
        lines: list[str] = []
        async with asyncio.timeout(30):
            while True:
                raw = await self.process.stderr.readline()
                if not raw:
                    raise RuntimeError("pgbouncer exited:\n" + "".join(lines))
                lines.append(raw.decode())
                if "process up" in lines[-1]:
                    break
        self._drain = asyncio.ensure_future(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while await self.process.stderr.readline():
            pass

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
        if self._drain is not None:
            await self._drain
        shutil.rmtree(self.tmp, ignore_errors=True)
