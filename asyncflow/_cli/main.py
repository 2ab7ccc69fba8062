"""The ``asyncflow`` command line: inspect and drive workflows, migrate, run the embedded server.

Every database command goes through :class:`asyncflow.Client` (the ``db migrate`` command uses
the storage layer directly). Output is a human-readable table by default and JSON with
``--json``. Exit codes: 0 success, 1 a failed operation (unknown workflow, unset event, database
error), 2 bad usage or input (unparsable JSON, bad options), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from .. import _codec
from .._errors import AsyncFlowError
from .._front.client import Client
from .._status import PENDING, SUCCESS, Delivery, WorkflowStatus
from .._storage.embedded import ENV_URL
from ..web._snapshot import stream_snapshot
from .embedded import _connection, _database_url, _schema_checked, postgres
from .history import add_commands as add_history_commands
from .lifecycle import add_commands as add_lifecycle_commands
from .output import PROG, CliError, _count, _emit, _json, _non_negative, _short, _table
from .versions import add_command as add_versions_command

STREAM_KEYS_SHOWN = 20  # stream keys an unknown key's error lists

# -- connecting ---------------------------------------------------------------------------------


async def _with_client(
    args: argparse.Namespace, action: Callable[[Client, argparse.Namespace], Awaitable[int]]
) -> int:
    async with Client(_database_url(args), schema=args.schema, pool_size=2,
                      **_connection(args)) as client:
        return await action(client, args)


async def _run_with_client(
    args: argparse.Namespace, action: Callable[[Client, argparse.Namespace], Awaitable[int]]
) -> int:
    return await _schema_checked(_with_client(args, action))


# -- workflow commands --------------------------------------------------------------------------


async def _describe(client: Client, status: WorkflowStatus) -> dict[str, Any]:
    info = status.to_dict()
    if status.status == SUCCESS:
        handle = await client.retrieve_workflow(status.workflow_id)
        info["output"] = await handle.get_result(timeout_seconds=0)
    return info


async def workflow_get(client: Client, args: argparse.Namespace) -> int:
    status = await client.get_workflow_status(args.workflow_id)
    info = await _describe(client, status)
    if args.json:
        _emit(_json(info))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key in ("output", "attributes"):
            shown = _json(value, indent=False)
        elif isinstance(value, str):
            shown = value
        else:
            shown = "-" if value is None else str(value)
        _emit(f"{key.ljust(width)}  {shown}")
    return 0


async def workflow_operations(client: Client, args: argparse.Namespace) -> int:
    steps = await client.list_workflow_operations(args.workflow_id)
    if args.json:
        _emit(_json([s.to_dict() for s in steps]))
    elif not steps:
        _emit(f"workflow {args.workflow_id!r} has no recorded operations yet")
    else:
        rows = [[str(s.function_id), s.name, "yes" if s.completed else "no",
                 s.child_workflow_id or "-",
                 ("error: " + s.error) if s.error else _short(s.output)] for s in steps]
        _emit(_table(["OPERATION", "NAME", "DONE", "CHILD", "OUTPUT"], rows))
    return 0


async def workflow_start(client: Client, args: argparse.Namespace) -> int:
    inputs = _parse_json(args.args, "--args")
    if isinstance(inputs, list):
        positional, named = inputs, {}
    elif isinstance(inputs, dict):
        positional, named = [], inputs
    else:
        raise CliError("--args is a JSON array of the arguments (or an object of keyword "
                       "arguments), e.g. '[\"o-1\", 2]'", 2)
    if args.queue is not None:
        handle = await client.enqueue(args.queue, args.name, *positional,
                                      workflow_id=args.workflow_id,
                                      on_duplicate="return_existing", **named)
        where = f"enqueued on queue {args.queue!r}"
    else:
        handle = await client.start_workflow(args.name, *positional,
                                             workflow_id=args.workflow_id, **named)
        where = "started (a live app that registers it runs it)"
    status = (await client.get_workflow_status(handle.workflow_id)).status
    if args.json:
        _emit(_json({"workflow_id": handle.workflow_id, "name": args.name,
                     "queue": args.queue, "status": status}))
    else:
        _emit(f"workflow {handle.workflow_id} ({args.name}) {where}: status {status}")
    return 0


# -- communication commands ---------------------------------------------------------------------


async def events(client: Client, args: argparse.Namespace) -> int:
    found = await client.get_all_events(args.workflow_id)
    if args.json:
        _emit(_json(found))
    elif not found:
        _emit(f"workflow {args.workflow_id!r} has no events")
    else:
        _emit(_table(["KEY", "VALUE"], [[k, _short(v)] for k, v in found.items()]))
    return 0


async def event_get(client: Client, args: argparse.Namespace) -> int:
    value = await client.get_event(args.workflow_id, args.key, timeout_seconds=args.timeout)
    if value is None and args.key not in await client.get_all_events(args.workflow_id):
        waited = f" after waiting {args.timeout:g} seconds" if args.timeout else ""
        raise CliError(f"event {args.key!r} of workflow {args.workflow_id!r} is not set{waited}")
    _emit(_json(value))
    return 0


async def send(client: Client, args: argparse.Namespace) -> int:
    message = _parse_json(args.message, "MESSAGE")
    delivery = await client.send(args.workflow_id, message, args.topic,
                                 idempotency_key=args.idempotency_key)
    if args.json:
        _emit(_json({"workflow_id": args.workflow_id, "topic": args.topic,
                     "sent": delivery is not Delivery.DUPLICATE, "delivery": str(delivery)}))
        return 0
    topic = "" if args.topic is None else f" on topic {args.topic!r}"
    if delivery is Delivery.DUPLICATE:
        _emit(f"not sent: idempotency key {args.idempotency_key!r} was already sent to workflow "
              f"{args.workflow_id} (delivered once)")
    elif delivery is Delivery.WORKFLOW_ENDED:
        status = (await client.get_workflow_status(args.workflow_id)).status
        _emit(f"message stored for workflow {args.workflow_id}{topic}, but it has ended "
              f"({status}): nothing receives it unless the workflow is resumed")
    else:
        _emit(f"message delivered to workflow {args.workflow_id}{topic}")
    return 0


def _parse_json(text: str, what: str) -> Any:
    try:
        # The exact parser of stored values: integers of any size are kept exactly.
        return _codec.loads_exact(text)
    except ValueError as exc:
        raise CliError(
            f"{what} is not valid JSON ({exc}); quote strings, e.g. '\"text\"' or "
            "'{\"approved\": true}'",
            2,
        ) from None


def _stream_line(args: argparse.Namespace, offset: int, value: Any) -> str:
    if args.json:
        return _json({"offset": offset, "value": value}, indent=False)
    return f"{offset}: {_json(value, indent=False)}"


async def stream_read(client: Client, args: argparse.Namespace) -> int:
    if args.follow:
        async for offset, value in client.stream_entries(
            args.workflow_id, args.key, offset=args.offset
        ):
            _emit(_stream_line(args, offset, value))
        return 0
    snapshot = await stream_snapshot(client, args.workflow_id, args.key, offset=args.offset)
    if not snapshot.entries:
        await _check_stream_key(client, args.workflow_id, args.key)
    for offset, value in snapshot.entries:
        _emit(_stream_line(args, offset, value))
    return 0


async def _check_stream_key(client: Client, workflow_id: str, key: str) -> None:
    """Fail (exit 1) if the workflow has no stream ``key``: an empty output would look like an
    empty stream."""
    keys = await client.runtime.store.stream_keys(workflow_id, key, STREAM_KEYS_SHOWN + 1)
    if keys and keys[0] == key:
        return
    shown = ", ".join(repr(one) for one in keys[:STREAM_KEYS_SHOWN]) or "none"
    more = ", …" if len(keys) > STREAM_KEYS_SHOWN else ""
    status = (await client.get_workflow_status(workflow_id)).status
    later = (" (yet: it is still running; --follow waits for it)" if status == PENDING else "")
    raise CliError(f"workflow {workflow_id!r} has no stream {key!r}{later}; its streams: "
                   f"{shown}{more}")


# -- database and embedded server ---------------------------------------------------------------


async def db_migrate(args: argparse.Namespace) -> int:
    from .._storage.database import Storage

    storage = Storage(_database_url(args), args.schema, pool_size=1)
    await storage.open()
    try:
        version = await storage.migrate()
    finally:
        await storage.close()
    if args.json:
        _emit(_json({"schema": args.schema, "version": version}))
    else:
        _emit(f"schema {args.schema!r} is at version {version}")
    return 0


async def db_distribute(args: argparse.Namespace) -> int:
    """Distribute the schema on the database's Citus cluster (docs/scaling.md)."""
    from .._storage.citus import distribute
    from .._storage.database import Storage

    storage = Storage(_database_url(args), args.schema, pool_size=1)
    await storage.open()
    try:
        done = await distribute(storage, shard_count=args.shard_count)
    finally:
        await storage.close()
    if args.json:
        _emit(_json({"schema": args.schema, "citus": done.citus_version,
                     "shard_nodes": done.shard_nodes, "distributed": list(done.distributed),
                     "already": list(done.already)}))
    else:
        now = ", ".join(done.distributed) or "nothing new (already distributed)"
        _emit(f"schema {args.schema!r} on Citus {done.citus_version}, {done.shard_nodes} "
              f"shard nodes: distributed {now}")
    return 0


def dashboard(args: argparse.Namespace) -> int:
    """Serve the web dashboard against the database until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise CliError(f"`{PROG} dashboard` needs uvicorn: `pip install 'asyncflow-pg[web]'` "
                       "(or `pip install -e '.[web]'` in a clone)", 2) from None
    url = _database_url(args)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        sock = socket.create_server((args.host, args.port), family=family)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host} port {args.port}: {exc}") from None
    with sock:
        return asyncio.run(_serve_dashboard(args, url, sock, uvicorn))


def _allow_every_action(_scope: Any) -> bool:
    return True


def _served_hosts(host: str, port: int, extra: list[str] | None) -> list[str] | None:
    """The Host names a dashboard listening on ``host:port`` serves: on a loopback address its
    own address and port (and ``localhost``), so no other site's page reaches it through DNS
    rebinding; on another address any name, unless ``--allow-host`` names some."""
    names = list(extra or [])
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not names:
        return None
    shown = f"[{host}]" if ":" in host else host
    names.append(f"{shown}:{port}")
    if loopback:
        names.append(f"localhost:{port}")
    return names


async def _serve_dashboard(
    args: argparse.Namespace, url: str, sock: socket.socket, uvicorn: Any
) -> int:
    from .._dashboard import dashboard as make_dashboard

    host, port = sock.getsockname()[:2]
    async with Client(url, schema=args.schema, pool_size=4,
                      **_connection(args)) as client:
        app = make_dashboard(client, auth=_allow_every_action if args.allow_actions else None,
                             allowed_hosts=_served_hosts(host, port, args.allow_host))
        if not args.allow_actions:  # its pages and refusals say how to get the actions
            app.actions_hint = "restart with <code>--allow-actions</code>"
        loop = asyncio.get_running_loop()

        class Server(uvicorn.Server):  # type: ignore[misc]
            def handle_exit(self, sig: int, frame: Any) -> None:
                super().handle_exit(sig, frame)
                loop.call_soon_threadsafe(app.close)  # end live pages: they would hold it open

        config = uvicorn.Config(app, lifespan="off", log_level="warning",
                                timeout_graceful_shutdown=5)
        shown = f"[{host}]" if ":" in host else host
        actions = ("actions ALLOWED to anyone who can reach it" if args.allow_actions
                   else "read-only; --allow-actions enables cancel, resume, send and fork")
        _emit(f"asyncflow dashboard: http://{shown}:{port}/ ({actions})")
        await Server(config).serve(sockets=[sock])
    return 0


# -- argument parsing ---------------------------------------------------------------------------


def _common_options(*, suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command (``--json`` anywhere)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection and output")
    group.add_argument("--database-url", default=default(None), metavar="URL",
                       help=f"Postgres URL (default: ${ENV_URL}, else the running embedded server)")
    group.add_argument("--listen-url", default=default(None), metavar="URL",
                       help="a direct or session-mode URL for LISTEN when --database-url is a "
                       "transaction pooler (default: $ASYNCFLOW_LISTEN_URL)")
    group.add_argument("--schema", default=default("asyncflow"),
                       help="asyncflow schema name (default: asyncflow)")
    group.add_argument("--data-dir", default=default(None), metavar="DIR",
                       help="embedded Postgres data directory (default: $ASYNCFLOW_DATA_DIR or "
                       "./.asyncflow)")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print JSON instead of tables")
    return parser




def _port(text: str) -> int:
    value = _count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _common_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[_common_options(suppress=False)],
        description="Inspect and drive asyncflow workflows.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(group: Any, name: str, help_text: str, run: Any) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(
            name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(run=run)
        return sub

    workflow = commands.add_parser(
        "workflow",
        help="start, list, inspect, cancel, resume, delete, fork, export and import workflows")
    wf = workflow.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    command(wf, "get", "show a workflow's status (and result once it succeeded)",
            workflow_get).add_argument("workflow_id", metavar="ID")
    journal = "show a workflow's journal: its numbered operations (steps, sends, waits, …)"
    sub = wf.add_parser("operations", aliases=["steps"], parents=[common], help=journal,
                        description=journal + " (`steps` is its older name)")
    sub.set_defaults(run=workflow_operations)
    sub.add_argument("workflow_id", metavar="ID")
    add_lifecycle_commands(wf, commands, command)  # list, cancel, resume, delete; gc
    sub = command(wf, "start", "start a workflow by its registered name (or enqueue it with "
                  "--queue); a live app that registers it runs it", workflow_start)
    sub.add_argument("name", metavar="NAME", help="the workflow's registered name")
    sub.add_argument("--args", default="[]", metavar="JSON",
                     help="its arguments: a JSON array (or an object of keyword arguments); "
                     "default []")
    sub.add_argument("--queue", metavar="Q", help="enqueue it on queue Q instead")
    sub.add_argument("--id", dest="workflow_id", metavar="ID",
                     help="its workflow id (default: a new random id); an existing id returns "
                     "that workflow")

    # history (issue 14): replay, workflow export / import / fork
    add_history_commands(commands, wf, command)
    add_versions_command(commands, command)  # deploying new code: versions and stranded ones

    command(commands, "events", "show all events of a workflow", events).add_argument(
        "workflow_id", metavar="ID")
    event = commands.add_parser("event", help="read one event")
    ev = event.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    sub = command(ev, "get", "print an event's value (waiting up to --timeout)", event_get)
    sub.add_argument("workflow_id", metavar="ID")
    sub.add_argument("key", metavar="KEY")
    sub.add_argument("--timeout", type=_non_negative, default=0.0, metavar="S",
                     help="seconds to wait for the event to be set (default 0)")

    sub = command(commands, "send", "send a JSON message to a workflow", send)
    sub.add_argument("workflow_id", metavar="ID")
    sub.add_argument("message", metavar="JSON", help="the message, as JSON")
    sub.add_argument("--topic", help="message topic (default: none)")
    sub.add_argument("--idempotency-key", metavar="K",
                     help="deliver once however many times this key is sent")

    stream = commands.add_parser("stream", help="read a workflow's stream")
    st = stream.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    sub = command(st, "read", "print a stream's values, one per line", stream_read)
    sub.add_argument("workflow_id", metavar="ID")
    sub.add_argument("key", metavar="KEY")
    sub.add_argument("--follow", "-f", action="store_true",
                     help="keep printing values as they are written, until the stream closes")
    sub.add_argument("--offset", type=_count, default=0, help="start at this offset")

    db = commands.add_parser("db", help="database schema")
    dbs = db.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    command(dbs, "migrate", "create or upgrade the asyncflow schema", db_migrate).set_defaults(
        raw=True)
    sub = command(dbs, "distribute", "distribute the schema by workflow id on a Citus cluster",
                  db_distribute)
    sub.add_argument("--shard-count", type=_count, default=32,
                     help="shards per distributed table (default 32; set once, at the first run)")
    sub.set_defaults(raw=True)

    sub = command(commands, "postgres", "start, stop or locate the embedded Postgres server",
                  postgres)
    sub.add_argument("action", choices=["start", "stop", "url"],
                     help="start: start it (it keeps running until `stop`); stop: stop it, "
                     "unless processes use it; url: print its URL")
    sub.add_argument("--force", action="store_true",
                     help="stop: stop it even while processes use it")
    sub.set_defaults(sync=True)

    sub = command(commands, "dashboard", "serve the web dashboard of the database's workflows",
                  dashboard)
    sub.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0: any)")
    sub.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only)")
    sub.add_argument("--allow-actions", action="store_true",
                     help="let visitors cancel, resume and fork workflows and send messages")
    sub.add_argument("--allow-host", action="append", metavar="NAME",
                     help="also serve requests for this Host name (NAME or NAME:PORT; "
                     "repeatable). On a loopback address only its own address and port and "
                     "localhost are served otherwise (no DNS rebinding)")
    sub.set_defaults(sync=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``asyncflow`` console script; returns the exit code."""
    args_list = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(args_list)
        if getattr(args, "sync", False):
            return int(args.run(args))
        if getattr(args, "raw", False):
            return int(asyncio.run(args.run(args)))
        return asyncio.run(_run_with_client(args, args.run))
    except CliError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    except AsyncFlowError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and friends: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # a driver or OS error: a message, not a traceback
        print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
