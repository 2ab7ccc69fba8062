"""The ``asyncflow`` command and the embedded server: which database a command uses, what it
says when that database has no schema, and the ``asyncflow postgres`` command."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Awaitable
from typing import Any

from .._errors import SchemaVersionError
from .._storage.embedded import (
    ENV_URL,
    _import_embedded,
    data_directory,
    data_directory_origin,
    describe_embedded,
    join_running_sync,
    running_url,
    start_embedded_sync,
    stop_embedded_sync,
)
from .output import PROG, CliError, _emit, _json


def _embedded() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        return _import_embedded()


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    """How a command's Client connects: ``--listen-url`` (the Client falls back to
    ``ASYNCFLOW_LISTEN_URL`` itself), and no driver statement cache — a command runs a few
    statements, and without the cache it works through a transaction pooler too."""
    return {"listen_url": getattr(args, "listen_url", None),
            "connect_options": {"statement_cache_size": 0}}


def _database_url(args: argparse.Namespace) -> str:
    url: str | None = args.database_url or os.environ.get(ENV_URL)
    if url:
        return url
    _embedded()
    data_dir = data_directory(args.data_dir)
    origin = data_directory_origin(args.data_dir, option="--data-dir")
    server = join_running_sync(data_dir)  # this command is one of its users while it runs
    if server is None:
        raise CliError(
            f"no database: pass --database-url, set {ENV_URL}, or start the embedded server "
            f"with `{PROG} postgres start` (data directory {data_dir}, {origin}; pass "
            "--data-dir or set ASYNCFLOW_DATA_DIR to use another one)"
        )
    _used_embedded.append(describe_embedded(
        data_dir, origin, False, data_dir_option="--data-dir DIR", url_option="--database-url URL"))
    return server.url


_used_embedded: list[str] = []  # what the embedded server in use is, for a missing schema


async def _schema_checked(run: Awaitable[int]) -> int:
    """Run a command; a missing schema on the embedded server says which server that is."""
    try:
        return await run
    except SchemaVersionError as exc:
        if not _used_embedded:
            raise
        raise CliError(f"{exc}\n{_used_embedded[-1]}") from None


def postgres(args: argparse.Namespace) -> int:
    _embedded()
    data_dir = data_directory(args.data_dir)
    where = f"the embedded Postgres of {data_dir}"
    if args.action == "url":
        url = running_url(data_dir)
        if url is None:
            raise CliError(f"{where} is not running; start it with `{PROG} postgres start`")
        _emit(url)
    elif args.action == "start":
        server = start_embedded_sync(data_dir, keep=True, user=False)
        if server.created:
            print(f"{PROG}: created a new embedded Postgres data directory {data_dir} ("
                  f"{data_directory_origin(args.data_dir, option='--data-dir')})",
                  file=sys.stderr)
        _emit(server.url if not args.json else _json({"url": server.url,
                                                      "data_dir": str(data_dir)}))
    else:
        outcome = stop_embedded_sync(data_dir, force=args.force)
        users = "; ".join(str(user) for user in outcome.users)
        if outcome.deferred:
            raise CliError(
                f"{where} is in use by {len(outcome.users)} process(es): {users}. It was not "
                "stopped; it stops by itself when the last of them exits. "
                f"`{PROG} postgres stop --force` stops it now (their connections fail).")
        if not outcome.stopped:
            _emit(f"{where} is not running")
        else:
            if outcome.users:
                print(f"{PROG}: warning: stopped while in use by: {users}", file=sys.stderr)
            _emit(f"stopped {where}")
    return 0
