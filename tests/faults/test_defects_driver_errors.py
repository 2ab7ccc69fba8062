"""No driver exception ever reaches a caller (issue 20, item 9).

Every public entry point of ``Client`` and ``AsyncFlow`` is called against a database whose
every write fails with a chosen SQLSTATE (a statement trigger on each asyncflow table raises
it): a unique violation, a check violation, an error raised by a trigger of the database's own,
a serialization failure, a refused privilege. Whatever each call raises must be an
``AsyncFlowError`` — never asyncpg's exceptions, never the driver seam's internal classes
escaping untranslated. Every public method must appear in the table below (or be named as
touching no database), so a new entry point is scanned too.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

import asyncflow
from asyncflow._storage import driver as _driver

TABLES = ("workflows", "operations", "messages", "message_keys", "events", "stream_heads",
          "streams", "schedules", "queues", "executors")

#: Errors the failing writes raise: (SQLSTATE, what it stands for).
SQLSTATES = [
    ("23505", "unique violation"),
    ("23514", "check violation"),
    ("23503", "foreign key violation"),
    ("P0001", "an error raised by a trigger of the database's own"),
    ("40001", "serialization failure"),
    ("40P01", "deadlock"),
    ("42501", "insufficient privilege"),
    ("53100", "disk full"),
]

#: Public names that run no database statement when called (checked separately or trivially).
NO_DATABASE = {
    "launch", "shutdown", "health", "database_url", "listener", "runtime", "storage",
    "app_version", "runner", "running_workflows", "queue", "scheduled", "step", "transaction",
    "workflow", "debouncer",
}

EXPORT_HEADER = '{"type":"header","format":"asyncflow-export","version":1}\n'
IMPORTED = json.dumps({"type": "workflow", "row": {
    "workflow_id": "imported", "name": "done", "status": "SUCCESS",
    "inputs": '{"args": [], "kwargs": {}}', "output": "1", "app_version": "v",
    "recovery_attempts": 0, "created_at": "2024-01-01T00:00:00+00:00",
    "updated_at": "2024-01-01T00:00:00+00:00"}}) + "\n"


async def _first(iterator: Any) -> Any:
    async for item in iterator:
        return item
    return None


def _calls(app: asyncflow.AsyncFlow, flows: dict[str, Any]) -> dict[str, Callable[[Any], Any]]:
    """A call per public method (on the client or the app given), with arguments that make it
    write (or read) the database."""
    return {
        "apply_retention": lambda c: c.apply_retention(asyncflow.Retention(max_count=0)),
        "cancel_workflow": lambda c: c.cancel_workflow("failed"),
        "cancel_workflows": lambda c: c.cancel_workflows(workflow_id_prefix="f"),
        "delete_workflow": lambda c: c.delete_workflow("done"),
        "enqueue": lambda c: c.enqueue("q", "done", 1),
        "enqueue_many": lambda c: c.enqueue_many("q", "done", [(1,), (2,)]),
        "export_workflows": lambda c: c.export_workflows(None, io.StringIO()),
        "fork_workflow": lambda c: c.fork_workflow("done", 0, workflow_id="forked"),
        "get_all_events": lambda c: c.get_all_events("done"),
        "get_event": lambda c: c.get_event("done", "k", timeout_seconds=0.1),
        "get_workflow_status": lambda c: c.get_workflow_status("done"),
        "import_workflows": lambda c: c.import_workflows(
            io.StringIO(EXPORT_HEADER + IMPORTED)),
        "list_schedules": lambda c: c.list_schedules(),
        "list_workflow_steps": lambda c: c.list_workflow_steps("done"),
        "list_workflow_operations": lambda c: c.list_workflow_operations("done"),
        "list_workflow_runs": lambda c: c.list_workflow_runs("done"),
        "set_workflow_attributes": lambda c: c.set_workflow_attributes("done", {"k": 1}),
        "list_workflows": lambda c: c.list_workflows(),
        "pause_schedule": lambda c: c.pause_schedule("every"),
        "read_stream": lambda c: _first(c.read_stream("done", "s")),
        "resume_schedule": lambda c: c.resume_schedule("every"),
        "resume_workflow": lambda c: c.resume_workflow("failed"),
        "resume_workflows": lambda c: c.resume_workflows(status="ERROR"),
        "retrieve_workflow": lambda c: c.retrieve_workflow("done"),
        "send": lambda c: c.send("done", 1),
        "send_many": lambda c: c.send_many([("done", 1), ("failed", 2)]),
        "stream_entries": lambda c: _first(c.stream_entries("done", "s")),
        "trigger_schedule": lambda c: c.trigger_schedule("every"),
        "create_schedule": lambda c: c.create_schedule("made", "yearly", "0 0 1 1 *"),
        "delete_schedule": lambda c: c.delete_schedule("every"),
        "backfill_schedule": lambda c: c.backfill_schedule(
            "every", datetime(2020, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)),
        "set_workflow_delay": lambda c: c.set_workflow_delay("done", seconds=1),
        "wait_first": lambda c: c.wait_first(asyncflow.event("done", "k"),
                                             asyncflow.timer(0.1)),
        "watch_event": lambda c: _first(c.watch_event("done", "k")),
        # AsyncFlow only
        "start_workflow": lambda c: c.start_workflow(flows["done"], 2, workflow_id="new"),
        "replay": lambda c: c.replay(["done"]),
        "recv": lambda c: c.recv("t", 0.1),
        "set_event": lambda c: c.set_event("k", 1),
        "write_stream": lambda c: c.write_stream("s", 1),
        "close_stream": lambda c: c.close_stream("s"),
    }


def _public_methods(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def make_scanned_app(db_url: str) -> tuple[asyncflow.AsyncFlow, dict[str, Any]]:
    app = asyncflow.AsyncFlow(db_url, app_version="scan")
    app.queue("q")

    @app.workflow(name="done")
    async def done(x: int) -> int:
        await asyncflow.set_event("k", x)
        await asyncflow.write_stream("s", x)
        await asyncflow.close_stream("s")
        return x

    @app.workflow(name="failed")
    async def failed() -> None:
        raise RuntimeError("boom")

    @app.scheduled("0 0 1 1 *", name="every")
    @app.workflow(name="yearly")
    async def yearly(at: str) -> str:
        return at

    return app, {"done": done, "failed": failed}


async def _poison(conn: asyncpg.Connection, sqlstate: str) -> None:
    await conn.execute(f"""
        CREATE OR REPLACE FUNCTION asyncflow.scan_refuse() RETURNS trigger LANGUAGE plpgsql AS
        $fn$ BEGIN RAISE EXCEPTION 'refused by the scan' USING ERRCODE = '{sqlstate}'; END $fn$
    """)
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"):
        await conn.execute("SET citus.enable_unsafe_triggers = on")  # the shards' triggers
    for table in TABLES:
        await conn.execute(
            f"CREATE TRIGGER scan_refuse BEFORE INSERT OR UPDATE OR DELETE ON asyncflow.{table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION asyncflow.scan_refuse()")


def test_every_public_method_is_scanned():
    calls = _calls(*make_scanned_app("postgresql://unused/db"))
    for cls in (asyncflow.Client, asyncflow.AsyncFlow):
        missing = _public_methods(cls) - set(calls) - NO_DATABASE
        assert not missing, f"add {sorted(missing)} of {cls.__name__} to the scan's calls"


def test_the_driver_seam_s_internal_errors_are_asyncflow_errors():
    """The internal classes of the driver seam that statements raise are AsyncFlowErrors, so
    even one left untranslated reaches a caller as an AsyncFlowError."""
    internal = [obj for obj in vars(_driver).values()
                if isinstance(obj, type) and issubclass(obj, BaseException)
                and obj.__module__ == _driver.__name__]
    assert internal
    for cls in internal:
        assert issubclass(cls, asyncflow.AsyncFlowError), cls


@pytest.mark.parametrize(("sqlstate", "what"), SQLSTATES, ids=[s for s, _ in SQLSTATES])
async def test_no_driver_exception_reaches_a_caller(db_url, conn, sqlstate, what):
    app, flows = make_scanned_app(db_url)
    async with app:
        await (await app.start_workflow(flows["done"], 1, workflow_id="done")).get_result(30)
        failed = await app.start_workflow(flows["failed"], workflow_id="failed")
        with pytest.raises(RuntimeError):
            await failed.get_result(30)
    client = asyncflow.Client(db_url)
    app, flows = make_scanned_app(db_url)
    async with client, app:
        await _poison(conn, sqlstate)
        escaped: list[str] = []
        calls = _calls(app, flows)
        for target in (client, app):
            for name in sorted(_public_methods(type(target)) - NO_DATABASE):
                try:
                    async with asyncio.timeout(30):
                        await calls[name](target)
                except asyncflow.AsyncFlowError:
                    pass
                except Exception as exc:  # anything else escaped the public API
                    escaped.append(f"{type(target).__name__}.{name}: "
                                   f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
        await conn.execute(f"DROP TRIGGER IF EXISTS scan_refuse ON asyncflow.{TABLES[0]}")
        for table in TABLES[1:]:
            await conn.execute(f"DROP TRIGGER IF EXISTS scan_refuse ON asyncflow.{table}")
    assert not escaped, f"with every write failing with {what} ({sqlstate}):\n" + "\n".join(
        escaped)


def test_signatures_of_scanned_calls_exist():
    """Each scanned name is a real attribute of Client or AsyncFlow (no stale entries)."""
    calls = _calls(*make_scanned_app("postgresql://unused/db"))
    public = _public_methods(asyncflow.Client) | _public_methods(asyncflow.AsyncFlow)
    assert set(calls) <= public
    assert all(inspect.isfunction(getattr(asyncflow.AsyncFlow, name, None))
               or inspect.isfunction(getattr(asyncflow.Client, name, None)) for name in calls)
