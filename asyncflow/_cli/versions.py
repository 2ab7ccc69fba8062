"""``asyncflow versions``: the app versions in a database -- the live executors running each and
its unfinished workflows per status -- and the workflows stranded on a version no live executor
runs (docs/deploying.md)."""

from __future__ import annotations

import argparse
from typing import Any

from .._front.client import Client
from .._status import DELAYED, ENQUEUED, PENDING
from .output import _count, _emit, _json, _table, _time

_STATES = (PENDING, ENQUEUED, DELAYED)


async def versions(client: Client, args: argparse.Namespace) -> int:
    store = client.runtime.store
    live = await store.live_executor_versions()
    counts = await store.version_counts()
    stranded = await store.stranded_ids(args.stranded) if args.stranded else []
    table: dict[str, dict[str, Any]] = {}

    def entry(version: str) -> dict[str, Any]:
        return table.setdefault(version, {"app_version": version, "live_executors": 0,
                                          **{s.lower(): 0 for s in _STATES}, "stranded": 0})

    for version, executors in live.items():
        if version is not None:
            entry(version)["live_executors"] = executors
    for count in counts:
        row = entry(count.app_version)
        row[count.status.lower()] = count.workflows
        row["stranded"] += count.stranded
    rows = sorted(table.values(), key=lambda r: (-r["live_executors"], r["app_version"]))
    older = live.get(None, 0)  # executors of a release that does not record its version
    if args.json:
        _emit(_json({"versions": rows, "live_executors_of_unknown_version": older,
                     "stranded": [{"workflow_id": s.workflow_id, "name": s.name,
                                   "status": s.status, "app_version": s.app_version}
                                  for s in stranded]}))
        return 0
    if not rows:
        _emit("no live executors and no unfinished workflows")
    else:
        _emit(_table(["VERSION", "LIVE EXECUTORS", *_STATES, "STRANDED"],
                     [[r["app_version"], str(r["live_executors"]),
                       *(str(r[s.lower()]) for s in _STATES), str(r["stranded"])]
                      for r in rows]))
    if older:
        _emit(f"{older} live executor(s) of an older release run an unknown version: no "
              "workflow counts as stranded while they live")
    total = sum(r["stranded"] for r in rows)
    if total:
        _emit(f"\n{total} workflow(s) stranded: no live executor runs their version. An app of "
              "another version adopts those whose history replays against its code "
              "(upgrade=\"replay\"); start a process of their version for the others.")
        if stranded:
            _emit(_table(["ID", "NAME", "STATUS", "VERSION", "CREATED"],
                         [[s.workflow_id, s.name, s.status, s.app_version, _time(s.created_at)]
                          for s in stranded]))
    return 0


def add_command(commands: Any, command: Any) -> None:
    """Register ``versions`` (``command`` makes one subcommand, as in ``_cli.main``)."""
    sub = command(commands, "versions", "list app versions with their live executors and "
                  "unfinished workflows, and the workflows stranded on a version no live "
                  "executor runs", versions)
    sub.add_argument("--stranded", type=_count, default=10, metavar="N",
                     help="list the first N stranded workflows (default 10; 0: none)")
