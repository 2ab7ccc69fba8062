"""The history commands of ``asyncflow``: ``replay``, and ``workflow export``, ``import`` and
``fork``.

``replay`` imports the user's app (``--app module:attribute``) for its registered workflow
functions but never launches it: the histories are read through a :class:`Client` (or from an
export file, with no database at all), and replaying writes nothing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from .._front.app import AsyncFlow
from .._front.client import Client
from .._front.history import ImportResult
from .._operations.replay import DIVERGED, FAILED, OK, SKIPPED, ReplayResult
from .._status import Status
from .embedded import _connection, _database_url, _schema_checked
from .lifecycle import _add_filters, _filters, _statuses
from .output import PROG, CliError, _count, _emit, _json, _non_negative, _table

Command = Callable[[Any, str, str, Any], argparse.ArgumentParser]


def load_app(target: str) -> AsyncFlow:
    """The AsyncFlow of ``module:attribute`` (or the one AsyncFlow a module defines), imported
    with the current directory on the import path."""
    module_name, _, attribute = target.partition(":")
    if not module_name:
        raise CliError(f"--app must be MODULE or MODULE:ATTRIBUTE, not {target!r}", 2)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r} for --app: {exc}", 2) from None
    if attribute:
        app = getattr(module, attribute, None)
        if not isinstance(app, AsyncFlow):
            raise CliError(f"{target!r} is not an asyncflow.AsyncFlow app", 2)
        return app
    found = [v for v in vars(module).values() if isinstance(v, AsyncFlow)]
    if len(found) != 1:
        raise CliError(f"module {module_name!r} defines {len(found)} AsyncFlow apps; name one "
                       f"with --app {module_name}:ATTRIBUTE", 2)
    return found[0]


# -- replay ---------------------------------------------------------------------------------------


def _print_results(args: argparse.Namespace, results: list[ReplayResult]) -> None:
    if args.json:
        _emit(_json([r.to_dict() for r in results]))
        return
    if results:
        rows = [[r.workflow_id, r.name, r.status, r.outcome, r.detail] for r in results]
        _emit(_table(["WORKFLOW ID", "NAME", "STATUS", "REPLAY", "DETAIL"], rows))
    counts = {o: sum(r.outcome == o for r in results) for o in (OK, DIVERGED, FAILED, SKIPPED)}
    _emit(f"replayed {len(results)} workflows: " + ", ".join(
        f"{n} {outcome}" for outcome, n in counts.items()))


async def replay(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    options: dict[str, Any] = {
        "status": _statuses(args.status), "limit": args.limit, "timeout_seconds": args.timeout,
        **_filters(args)}
    ids = args.workflow_ids or None
    results: list[ReplayResult] = []
    if args.file is not None:
        source = sys.stdin if args.file == "-" else args.file
        try:
            results = await app.replay(ids, file=source, **options)
        except OSError as exc:
            raise CliError(f"cannot read {args.file}: {exc}", 2) from None
    else:
        async def from_database() -> int:
            async with Client(_database_url(args), schema=args.schema, pool_size=2,
                              **_connection(args)) as client:
                results.extend(await app.replay(ids, client=client, **options))
            return 0

        await _schema_checked(from_database())
    _print_results(args, results)
    return 0 if all(r.ok for r in results) else 1


# -- export, import, fork -------------------------------------------------------------------------


async def workflow_export(client: Client, args: argparse.Namespace) -> int:
    ids = args.workflow_ids or None
    options: dict[str, Any] = {"status": _statuses(args.status), "limit": args.limit,
                               "include_children": not args.no_children, **_filters(args)}
    if args.output == "-":
        exported = await client.export_workflows(ids, sys.stdout, **options)
        print(f"{PROG}: exported {len(exported)} workflows", file=sys.stderr)
        return 0
    exported = await client.export_workflows(ids, args.output, **options)
    if args.json:
        _emit(_json({"file": args.output, "workflow_ids": exported}))
    else:
        _emit(f"exported {len(exported)} workflows to {args.output}")
    return 0


async def workflow_import(client: Client, args: argparse.Namespace) -> int:
    try:
        result: ImportResult = await client.import_workflows(
            sys.stdin if args.file == "-" else args.file)
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc}", 2) from None
    if args.json:
        _emit(_json({"imported": result.imported, "skipped": result.skipped}))
    else:
        skipped = "" if not result.skipped else (
            f"; skipped {len(result.skipped)} whose id exists already: "
            + ", ".join(result.skipped))
        _emit(f"imported {len(result.imported)} workflows{skipped}")
    return 0


async def workflow_fork(client: Client, args: argparse.Namespace) -> int:
    handle = await client.fork_workflow(args.workflow_id, args.from_operation,
                                        workflow_id=args.new_id, app_version=args.app_version)
    if args.json:  # from_step: the older name of from_operation, kept for scripts
        _emit(_json({"workflow_id": handle.workflow_id, "forked_from": args.workflow_id,
                     "from_operation": args.from_operation, "from_step": args.from_operation}))
    else:
        _emit(f"forked {args.workflow_id} from operation #{args.from_operation} as "
              f"{handle.workflow_id} (a running app that registers it picks it up)")
    return 0


# -- argument parsing -----------------------------------------------------------------------------


def _selection(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("workflow_ids", metavar="ID", nargs="*",
                     help="these workflows (default: those the filters choose)")
    sub.add_argument("--status", action="append", metavar="S",
                     help="only this status (repeat it or separate with commas): "
                     + ", ".join(Status.__members__))
    sub.add_argument("--limit", type=_count, default=None, help="at most this many, newest first")
    _add_filters(sub)


def add_commands(commands: Any, workflow: Any, command: Command) -> None:
    """Register the history commands (``command`` makes one subcommand, as in ``_cli.main``)."""
    sub = command(commands, "replay", "replay recorded workflows against the current code "
                  "and report every one that takes another path (exit 1 if any)", replay)
    sub.set_defaults(raw=True)
    sub.add_argument("--app", required=True, metavar="MODULE:APP",
                     help="the app whose registered workflows to replay against (imported "
                     "from the current directory; never launched)")
    sub.add_argument("--file", metavar="FILE", help="replay an export file (- for stdin) "
                     "instead of the database")
    _selection(sub)
    sub.add_argument("--timeout", type=_non_negative, default=10.0, metavar="S",
                     help="seconds one workflow's replay may take (default 10)")

    sub = command(workflow, "export", "write workflows with their journals, events, streams "
                  "and messages as JSON lines", workflow_export)
    _selection(sub)
    sub.add_argument("--output", "-o", default="-", metavar="FILE",
                     help="file to write (default: standard output)")
    sub.add_argument("--no-children", action="store_true",
                     help="do not add the child workflows of those exported")

    sub = command(workflow, "import", "insert the workflows of an export file (existing ids "
                  "are skipped)", workflow_import)
    sub.add_argument("file", metavar="FILE", help="the export file (- for stdin)")

    sub = command(workflow, "fork", "start a copy of a workflow that runs again from one of "
                  "its operations", workflow_fork)
    sub.add_argument("workflow_id", metavar="ID")
    sub.add_argument("--from-operation", "--from-step", dest="from_operation", type=_count,
                     required=True, metavar="N",
                     help="the operation number to run again from (see `workflow operations`; "
                     "--from-step is its older name)")
    sub.add_argument("--workflow-id", dest="new_id", metavar="NEW_ID",
                     help="the fork's id (default: a generated one)")
    sub.add_argument("--app-version", metavar="V",
                     help="the app version that may run it (default: the source's)")

