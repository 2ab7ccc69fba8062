"""The Postgres server the suite runs against, and the fresh databases each scenario gets.

The server is ``ASYNCFLOW_DATABASE_URL`` when set, else asyncflow's embedded Postgres (the one
an app without a URL would use, in ``ASYNCFLOW_DATA_DIR`` or ``./.asyncflow``). The suite only
ever creates and drops databases of its own, named ``asyncflow_bench_*``.
"""

from __future__ import annotations

import os
import platform
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import anyio.to_thread
import asyncpg

from asyncflow._storage.embedded import ENV_URL, data_directory, embedded_url, start_embedded_sync

from . import loop

SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "commit_delay",
    "full_page_writes",
    "shared_buffers",
    "max_connections",
    "wal_level",
)


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def redact(url: str) -> str:
    """The URL without its password, for the results file."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = user.split(":", 1)[0] + "@" + host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def transport(url: str) -> str:
    """``unix socket`` or ``tcp``, as the URL says."""
    parts = urlsplit(url)
    host = parse_qs(parts.query).get("host", [parts.hostname or ""])[0]
    return "unix socket" if not host or host.startswith("/") else "tcp"


@dataclass(frozen=True, slots=True)
class Server:
    """An admin URL on the server plus whether it is the embedded one."""

    url: str
    embedded: bool

    @classmethod
    async def resolve(cls) -> Server:
        env = os.environ.get(ENV_URL)
        if env:
            return cls(env, embedded=False)
        server = await anyio.to_thread.run_sync(start_embedded_sync, data_directory(None))
        return cls(embedded_url(server), embedded=True)

    async def admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    async def create_database(self, label: str) -> tuple[str, str]:
        """Create an empty database; returns ``(name, url)``."""
        name = f"asyncflow_bench_{label}_{os.getpid()}_{secrets.token_hex(3)}"
        await self.admin(f'CREATE DATABASE "{name}"')
        return name, with_database(self.url, name)

    async def drop_database(self, name: str) -> None:
        await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @asynccontextmanager
    async def fresh_database(self, label: str) -> AsyncIterator[str]:
        """A new empty database for the block, dropped afterwards; yields its URL."""
        name, url = await self.create_database(label)
        try:
            yield url
        finally:
            await self.drop_database(name)

    async def describe(self) -> dict[str, Any]:
        """Version and the settings that bound commit latency, for the results file."""
        conn = await asyncpg.connect(self.url)
        try:
            version = await conn.fetchval("SELECT version()")
            settings = {name: await conn.fetchval(f"SHOW {name}") for name in SETTINGS}
        finally:
            await conn.close()
        return {
            "version": version,
            "server_version": settings.pop("server_version"),
            "settings": settings,
            "url": redact(self.url),
            "embedded": self.embedded,
            "transport": transport(self.url),
        }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1024 * 1024), 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _asyncflow_revision() -> str | None:
    """The git commit of the asyncflow being measured (``+`` when the tree has changes)."""
    import asyncflow

    root = os.path.dirname(os.path.dirname(os.path.abspath(asyncflow.__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "asyncflow"],
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def describe_machine() -> dict[str, Any]:
    return {
        "asyncflow_revision": _asyncflow_revision(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": sys.version.split()[0],
        "event_loop": loop.describe(),
        "packages": {
            name: _version(name) for name in ("asyncflow", "asyncpg", "anyio", "orjson", "dbos")
        },
    }
