"""The ``asyncflow`` commands that operate on workflows as a whole: ``workflow list`` with its
filters and pages, ``workflow cancel`` / ``workflow resume`` of one workflow or of every match,
``workflow delete``, and ``gc`` (retention). See docs/operating-lifecycle.md."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .._errors import InvalidArgumentError, WorkflowPendingError
from .._filters import RESUMABLE, parse_attribute
from .._front.client import Client
from .._operations.retention import Retention
from .._status import DELAYED, ENQUEUED, PENDING, SUCCESS, Status
from .output import CliError, _count, _emit, _json, _table, _time

ACTIVE = (PENDING, ENQUEUED, DELAYED)

STATUSES = tuple(str(status) for status in Status)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SHOWN_IDS = 20  # ids a bulk command prints (all of them with --json)


# -- option types ------------------------------------------------------------------------------


def duration(text: str) -> float:
    """Seconds from ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` or a plain number of seconds."""
    match = _DURATION.fullmatch(text.strip())
    try:
        seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (use e.g. 90s, 15m, 12h, 7d, 2w or seconds)")
    return seconds


def moment(text: str) -> datetime:
    """A time: ISO 8601 (UTC when no offset is given), or a duration ago (``7d``: 7 days ago)."""
    if _DURATION.fullmatch(text.strip()):
        return datetime.now(UTC) - timedelta(seconds=duration(text))
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use ISO 8601 like 2025-01-31T14:00, or a duration ago like "
            "7d)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _statuses(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    chosen: list[str] = []
    for value in values:
        for item in value.split(","):
            status = item.strip().upper()
            if status not in STATUSES:
                raise CliError(f"unknown status {item.strip()!r}; choose from "
                               f"{', '.join(STATUSES)}", 2)
            chosen.append(status)
    return chosen


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": args.name, "created_after": args.created_after,
        "created_before": args.created_before, "workflow_id_prefix": args.prefix,
        "app_version": args.app_version, "parent_workflow_id": args.parent,
        "queue_name": args.queue,
    }


def _narrowed(args: argparse.Namespace) -> bool:
    return any(value is not None for value in _filters(args).values())


# -- commands ----------------------------------------------------------------------------------


def attribute(text: str) -> tuple[str, Any]:
    """One ``--attr``: ``KEY=TEXT`` (the value is the string TEXT) or ``KEY:=JSON``."""
    try:
        return parse_attribute(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def workflow_list(client: Client, args: argparse.Namespace) -> int:
    attributes = dict(args.attr) if args.attr else None
    found = await client.list_workflows(_statuses(args.status), limit=args.limit,
                                        after=args.after, attributes=attributes,
                                        **_filters(args))
    if args.json:
        _emit(_json([{**w.to_dict(), "cursor": w.cursor} for w in found]))
        return 0
    if not found:
        _emit("no workflows")
        return 0
    rows = [[w.workflow_id, w.name, w.status, _time(w.created_at), _time(w.updated_at),
             w.executor_id or "-", w.queue_name or "-"] for w in found]
    _emit(_table(["WORKFLOW ID", "NAME", "STATUS", "CREATED", "UPDATED", "EXECUTOR", "QUEUE"],
                 rows))
    if len(found) == args.limit:
        _emit(f"(more may follow: --after {found[-1].cursor})")
    return 0


def _report(args: argparse.Namespace, status: str, text: str, changed: bool) -> int:
    if args.json:
        _emit(_json({"workflow_id": args.workflow_id, "status": status, "changed": changed}))
    else:
        _emit(text)
    return 0


def _report_many(args: argparse.Namespace, verb: str, ids: list[str], note: str = "") -> int:
    if args.json:
        _emit(_json({verb: ids}))
        return 0
    _emit(f"{verb} {len(ids)} workflow{'s' if len(ids) != 1 else ''}{note}")
    for workflow_id in ids[:SHOWN_IDS]:
        _emit(f"  {workflow_id}")
    if len(ids) > SHOWN_IDS:
        _emit(f"  … and {len(ids) - SHOWN_IDS} more (--json lists them all)")
    return 0


def _one_or_filters(args: argparse.Namespace, command: str) -> None:
    if args.workflow_id is not None and (_narrowed(args) or getattr(args, "status", None)):
        raise CliError(f"`workflow {command}` takes a workflow ID or filters, not both", 2)
    if args.workflow_id is None and not _narrowed(args) and not getattr(args, "status", None):
        raise CliError(
            f"`workflow {command}` needs a workflow ID or at least one filter (--name, "
            "--created-before, --prefix, …); `--created-before 0s` selects every workflow", 2)


async def workflow_cancel(client: Client, args: argparse.Namespace) -> int:
    _one_or_filters(args, "cancel")
    children = not args.no_children
    if args.workflow_id is None:
        ids = await client.cancel_workflows(children=children, **_filters(args))
        return _report_many(args, "cancelled", ids)
    before = (await client.get_workflow_status(args.workflow_id)).status
    await client.cancel_workflow(args.workflow_id, children=children)
    if before not in ACTIVE:
        return _report(args, before, f"workflow {args.workflow_id} already ended with status "
                       f"{before}; nothing to cancel", False)
    after = (await client.get_workflow_status(args.workflow_id)).status
    return _report(args, after, f"workflow {args.workflow_id}: status {after}", after != before)


async def workflow_resume(client: Client, args: argparse.Namespace) -> int:
    _one_or_filters(args, "resume")
    if args.workflow_id is None:
        ids = await client.resume_workflows(status=_statuses(args.status), **_filters(args))
        return _report_many(args, "resumed", ids, " (running apps pick them up and continue "
                            "from their checkpoints)")
    before = (await client.get_workflow_status(args.workflow_id)).status
    if before == SUCCESS:  # nothing to resume: a failed operation, not a no-op
        raise CliError(f"workflow {args.workflow_id} succeeded; only CANCELLED, ERROR and "
                       "MAX_RECOVERY_ATTEMPTS_EXCEEDED workflows are resumed (to run it again "
                       f"from an operation: `asyncflow workflow fork {args.workflow_id} "
                       "--from-operation N`)")
    if before in ACTIVE:
        return _report(args, before, f"workflow {args.workflow_id} is {before}; only CANCELLED, "
                       "ERROR and MAX_RECOVERY_ATTEMPTS_EXCEEDED workflows are resumed", False)
    await client.resume_workflow(args.workflow_id)
    after = (await client.get_workflow_status(args.workflow_id)).status
    return _report(args, after, f"workflow {args.workflow_id}: status {after} (a running app "
                   "picks it up and continues from its checkpoints)", after != before)


async def workflow_delete(client: Client, args: argparse.Namespace) -> int:
    try:
        deleted = await client.delete_workflow(args.workflow_id, children=args.children)
    except WorkflowPendingError as exc:  # its message names the Python call: say the command
        root = args.workflow_id
        cancel = f"`asyncflow workflow cancel {root}`"
        status = exc.status or "PENDING"
        if exc.pending_id in (None, root):
            raise CliError(f"workflow {root} is {status} and cannot be deleted; cancel it first "
                           f"({cancel}), then delete it") from None
        raise CliError(f"workflow {root} has a {status} descendant {exc.pending_id}, so "
                       f"nothing was deleted; {cancel} cancels its descendants too, then delete "
                       "it") from None
    return _report_many(args, "deleted", deleted)


async def gc(client: Client, args: argparse.Namespace) -> int:
    if args.older_than is None and args.keep is None:
        raise CliError("`gc` needs --older-than, --keep or both (what to delete)", 2)
    retention = Retention(max_age_seconds=args.older_than, max_count=args.keep,
                          batch_size=args.batch_size)
    count = await client.apply_retention(retention, dry_run=args.dry_run)
    if args.json:
        _emit(_json({"deleted": 0 if args.dry_run else count,
                     "would_delete": count if args.dry_run else None, "dry_run": args.dry_run}))
    elif args.dry_run:
        _emit(f"would delete {count} finished workflow{'s' if count != 1 else ''} (dry run: "
              "nothing deleted)")
    else:
        _emit(f"deleted {count} finished workflow{'s' if count != 1 else ''}")
    return 0


# -- schedules ---------------------------------------------------------------------------------


async def schedule_list(client: Client, args: argparse.Namespace) -> int:
    schedules = await client.list_schedules()
    if args.json:
        _emit(_json([schedule.to_dict() for schedule in schedules]))
        return 0
    _emit(_table(
        ("NAME", "CRON", "TIMEZONE", "CATCH_UP", "WORKFLOW", "QUEUE", "STATE", "LAST_TICK"),
        [(s.name, s.cron, s.timezone, s.catch_up, s.workflow_name, s.queue_name or "-",
          "paused" if s.paused else "active", _time(s.last_tick)) for s in schedules]))
    return 0


async def schedule_pause(client: Client, args: argparse.Namespace) -> int:
    await client.pause_schedule(args.name)
    _emit(_json({"paused": args.name}) if args.json else f"paused schedule {args.name}")
    return 0


async def schedule_resume(client: Client, args: argparse.Namespace) -> int:
    await client.resume_schedule(args.name)
    _emit(_json({"resumed": args.name}) if args.json else f"resumed schedule {args.name}")
    return 0


async def schedule_trigger(client: Client, args: argparse.Namespace) -> int:
    workflow_id = await client.trigger_schedule(args.name)
    _emit(_json({"triggered": args.name, "workflow_id": workflow_id}) if args.json
          else f"triggered schedule {args.name}: workflow {workflow_id}")
    return 0


async def schedule_create(client: Client, args: argparse.Namespace) -> int:
    info = await client.create_schedule(
        args.name, args.workflow, args.cron, timezone=args.timezone, catch_up=args.catch_up,
        queue=args.queue, grace_seconds=args.grace_seconds)
    _emit(_json(info.to_dict()) if args.json
          else f"created schedule {info.name}: {info.workflow_name} at {info.cron!r}")
    return 0


async def schedule_delete(client: Client, args: argparse.Namespace) -> int:
    await client.delete_schedule(args.name)
    _emit(_json({"deleted": args.name}) if args.json else f"deleted schedule {args.name}")
    return 0


async def schedule_backfill(client: Client, args: argparse.Namespace) -> int:
    ids = await client.backfill_schedule(args.name, args.start, args.end)
    if args.json:
        _emit(_json({"backfilled": args.name, "workflow_ids": ids}))
    else:
        _emit(f"backfilled {len(ids)} tick{'s' if len(ids) != 1 else ''} of schedule "
              f"{args.name} (ticks that already ran are skipped)")
        for workflow_id in ids:
            _emit(workflow_id)
    return 0


async def workflow_delay(client: Client, args: argparse.Namespace) -> int:
    at = await client.set_workflow_delay(args.workflow_id, seconds=args.seconds,
                                         until=args.until)
    _emit(_json({"workflow_id": args.workflow_id, "delay_until": at.isoformat()}) if args.json
          else f"workflow {args.workflow_id} starts at {_time(at)} at the earliest")
    return 0


# -- parsers -----------------------------------------------------------------------------------


def _add_filters(sub: argparse.ArgumentParser) -> None:
    group = sub.add_argument_group("filters")
    group.add_argument("--name", help="only workflows of this function name")
    group.add_argument("--created-after", type=moment, metavar="TIME",
                       help="created at or after TIME (ISO 8601, UTC unless an offset is given; "
                       "or a duration ago: 90s, 15m, 12h, 7d)")
    group.add_argument("--created-before", type=moment, metavar="TIME",
                       help="created before TIME (same forms)")
    group.add_argument("--prefix", metavar="TEXT", help="only workflow ids starting with TEXT")
    group.add_argument("--app-version", metavar="V", help="only workflows of this app version")
    group.add_argument("--parent", metavar="ID", help="only children of workflow ID")
    group.add_argument("--queue", metavar="NAME", help="only workflows of queue NAME")



def _batch(text: str) -> int:
    value = _count(text)
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"must be from 1 to 10000, not {text!r}")
    return value


def add_commands(
    workflow: Any, commands: Any,
    command: Callable[[Any, str, str, Any], argparse.ArgumentParser],
) -> None:
    """Add ``workflow list|cancel|resume|delete|delay``, ``gc`` and ``schedule
    list|pause|resume|trigger|create|delete|backfill`` to the parser."""
    schedule = commands.add_parser("schedule", help="list, pause, resume, trigger, create, "
                                   "delete and backfill schedules")
    sched = schedule.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    command(sched, "list", "list the schedules, their state and last tick", schedule_list)
    for name, help_text, run in (
        ("pause", "pause a schedule in every process", schedule_pause),
        ("resume", "resume a paused schedule from its next tick", schedule_resume),
        ("trigger", "start a run of a schedule now (a live app serving it starts it)",
         schedule_trigger),
    ):
        command(sched, name, help_text, run).add_argument("name", metavar="NAME")
    sub = command(sched, "create", "create (or redefine) a schedule at runtime: every live app "
                  "registering WORKFLOW serves it, one run per tick", schedule_create)
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("workflow", metavar="WORKFLOW", help="the registered workflow name")
    sub.add_argument("cron", metavar="CRON", help="5 fields, or 6 with seconds first")
    sub.add_argument("--timezone", default="UTC", help="IANA time zone (default UTC)")
    sub.add_argument("--catch-up", default="skip", choices=("skip", "all", "latest"))
    sub.add_argument("--queue", metavar="NAME", help="enqueue each run on this queue")
    sub.add_argument("--grace-seconds", type=float, default=10.0, metavar="S",
                     help="how late a tick may still start under --catch-up skip")
    command(sched, "delete", "delete a schedule made at runtime",
            schedule_delete).add_argument("name", metavar="NAME")
    sub = command(sched, "backfill", "run every tick of a schedule from START (inclusive) to "
                  "END (exclusive); ticks that already ran are skipped", schedule_backfill)
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("start", type=moment, metavar="START",
                     help="ISO 8601 (UTC unless an offset is given), or a duration ago")
    sub.add_argument("end", type=moment, metavar="END", help="the same forms")

    sub = command(workflow, "list", "list workflows, newest first (a page at a time)",
                  workflow_list)
    sub.add_argument("--status", action="append", metavar="S",
                     help="only these statuses (repeat, or comma-separated): "
                     + ", ".join(STATUSES))
    _add_filters(sub)
    sub.add_argument("--attr", action="append", type=attribute, metavar="K=V",
                     help="only workflows with attribute K equal to the string V (K:=JSON for "
                     "another JSON value: n:=3, vip:=true); repeat for several")
    sub.add_argument("--limit", type=_count, default=100, help="at most this many (default 100)")
    sub.add_argument("--after", metavar="CURSOR",
                     help="the page after this cursor (printed under a full page)")

    sub = command(workflow, "cancel", "cancel a pending workflow, or every pending workflow "
                  "matching the filters, with their pending descendants", workflow_cancel)
    sub.add_argument("workflow_id", metavar="ID", nargs="?")
    _add_filters(sub)
    sub.add_argument("--no-children", action="store_true",
                     help="leave the workflows' children running")

    sub = command(workflow, "resume", "resume a cancelled or failed workflow (or every one "
                  "matching the filters) from its checkpoints", workflow_resume)
    sub.add_argument("workflow_id", metavar="ID", nargs="?")
    sub.add_argument("--status", action="append", metavar="S",
                     help="only these statuses: " + ", ".join(RESUMABLE))
    _add_filters(sub)

    sub = command(workflow, "delete", "delete a finished workflow with its journal, messages, "
                  "events and streams", workflow_delete)
    sub.add_argument("workflow_id", metavar="ID")
    sub.add_argument("--children", action="store_true", help="delete its descendants too")

    sub = command(workflow, "delay", "change when an ENQUEUED or DELAYED workflow may start",
                  workflow_delay)
    sub.add_argument("workflow_id", metavar="ID")
    when = sub.add_mutually_exclusive_group(required=True)
    when.add_argument("--seconds", type=float, metavar="S", help="S seconds from now")
    when.add_argument("--until", type=moment, metavar="TIME",
                      help="at TIME (ISO 8601, UTC unless an offset is given)")

    sub = command(commands, "gc", "delete finished workflows older, or more, than you keep",
                  gc)
    sub.add_argument("--older-than", type=duration, metavar="AGE",
                     help="delete workflows finished longer ago than AGE (90s, 15m, 12h, 7d)")
    sub.add_argument("--keep", type=_count, metavar="N",
                     help="keep only the N most recently finished workflows")
    sub.add_argument("--dry-run", action="store_true",
                     help="count what would be deleted; delete nothing")
    sub.add_argument("--batch-size", type=_batch, default=500, metavar="N",
                     help="workflows deleted per statement (default 500)")
