"""Issue 9, items 7, 8, 9, 10, 11 and 13: values and identities the engine must get right.

Item 7: schema names of 54-63 characters work end to end (notification channels fit).
Item 8: a child of a parent with a 1,000-byte id gets a valid, deterministic id.
Item 9: resuming a workflow on an app that does not register it still gets it run elsewhere.
Item 10: executor liveness is exact (two ids with the same ``hashtext`` are two executors).
Item 11: bad configuration and out-of-range arguments raise typed errors at construction or at
the call; a cancelled wait returns its pooled connection usable.
Item 13: sending to an unknown workflow names the id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import traceback
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

import asyncflow
from asyncflow._storage.database import Storage
from asyncflow._storage.driver import PoolConnection
from asyncflow._storage.pool import ConnectionPool

WITHIN = 10  # seconds: bound on waits that hang while a bug is present


def colliding_schema_names() -> tuple[str, str]:
    """Two schema names whose advisory-lock namespaces collide TODAY.

    Internal detail, isolated here: asyncflow derives a schema's advisory-lock namespace from
    ``zlib.crc32("asyncflow:" + schema)`` (``_storage.database.advisory_namespace``). If that
    derivation changes, the pair may stop colliding and the test that uses it passes trivially.
    """
    seen: dict[int, str] = {}
    for i in range(2_000_000):
        # (CRC-32 never maps two equal-length names that differ in a short burst to one value:
        # spread the differences.)
        name = "ns_" + hashlib.sha256(str(i).encode()).hexdigest()[:16]
        value = zlib.crc32(("asyncflow:" + name).encode())
        if value in seen:
            return seen[value], name
        seen[value] = name
    raise AssertionError("no crc32 collision found")


async def colliding_executor_ids(conn: Any) -> tuple[str, str]:
    """Two executor ids that Postgres's 32-bit ``hashtext`` maps to the same value."""
    row = await conn.fetchrow(
        "select min(id) as a, max(id) as b from ("
        "  select 'exec-' || g as id, hashtext('exec-' || g) as h"
        "  from generate_series(1, 400000) g) t "
        "group by h having count(*) > 1 limit 1")
    assert row is not None, "no hashtext collision among 400,000 ids"
    a, b = row["a"], row["b"]
    assert a != b and await conn.fetchval("select hashtext($1) = hashtext($2)", a, b)
    return a, b


# ---------------------------------------------------------------------------------------------
# Item 7: long schema names.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [54, 63])
async def test_item7_long_schema_names_work_end_to_end(db_url, length):
    schema = "s" * length
    app = asyncflow.AsyncFlow(db_url, schema=schema, recovery_interval_seconds=0.2)

    @app.workflow()
    async def echo() -> Any:
        message = await asyncflow.recv(timeout_seconds=3600)
        await asyncflow.set_event("got", message)
        return message

    async with asyncio.timeout(WITHIN), app, asyncflow.Client(db_url, schema=schema) as client:
        from_client = await app.start_workflow(echo, workflow_id="from-client")
        from_app = await app.start_workflow(echo, workflow_id="from-app")
        await client.send("from-client", "hi")
        await app.send("from-app", "hello")
        assert await client.get_event("from-client", "got") == "hi"
        assert await (await client.retrieve_workflow("from-app")).get_result() == "hello"
        assert await from_client.get_result() == "hi"
        assert await from_app.get_result() == "hello"


# ---------------------------------------------------------------------------------------------
# Item 8: child ids stay valid.
# ---------------------------------------------------------------------------------------------


def _register_tree(app: asyncflow.AsyncFlow) -> Any:
    @app.workflow(name="leaf")
    async def leaf(x: int) -> int:
        return x * 10

    @app.workflow(name="child")
    async def child(x: int) -> list[int]:
        return [await leaf(x), await leaf(x + 1)]

    @app.workflow(name="parent")
    async def parent() -> list[Any]:
        return [await child(1), await child(2)]

    return parent


async def _tree(app: asyncflow.AsyncFlow, root: str) -> dict[str, list[str]]:
    """Each workflow id of the tree under ``root`` -> its children's ids (from the journal)."""
    tree: dict[str, list[str]] = {}
    todo = [root]
    while todo:
        wid = todo.pop()
        kids = [s.child_workflow_id for s in await app.list_workflow_steps(wid)
                if s.child_workflow_id is not None]
        tree[wid] = kids
        todo.extend(kids)
    return tree


async def test_item8_children_of_a_1000_byte_parent_id_are_valid_and_deterministic(make_app):
    root = "p" * asyncflow.MAX_ID_LENGTH
    twin = "p" * (asyncflow.MAX_ID_LENGTH - 1) + "q"  # shares the first 999 bytes
    trees = []
    for schema in ("asyncflow", "again"):
        app = make_app(schema=schema)
        parent = _register_tree(app)
        async with asyncio.timeout(WITHIN), app:
            for wid in (root, twin):
                handle = await app.start_workflow(parent, workflow_id=wid)
                assert await handle.get_result() == [[10, 20], [20, 30]]
            trees.append((await _tree(app, root), await _tree(app, twin)))
            for status in await app.list_workflows():
                assert status.status == "SUCCESS"
    (tree, twin_tree), (again, twin_again) = trees
    ids = set(tree) | set(twin_tree)
    assert len(tree) == len(twin_tree) == 7 and len(ids) == 14  # all distinct
    assert all(0 < len(wid.encode()) <= asyncflow.MAX_ID_LENGTH for wid in ids)
    assert (tree, twin_tree) == (again, twin_again)  # the same ids in another schema


# ---------------------------------------------------------------------------------------------
# Item 9: resume where the workflow can run.
# ---------------------------------------------------------------------------------------------


async def test_item9_resume_on_an_app_that_does_not_register_the_workflow(db_url):
    app_a = asyncflow.AsyncFlow(db_url, executor_id="only-a", recovery_interval_seconds=0.2)
    app_b = asyncflow.AsyncFlow(db_url, executor_id="runs-b", recovery_interval_seconds=0.2)

    @app_a.workflow(name="unrelated")
    async def unrelated() -> None:
        return None

    @app_b.workflow(name="only-on-b")
    async def only_on_b() -> Any:
        return await asyncflow.recv(timeout_seconds=3600)

    async with asyncio.timeout(WITHIN), app_a, app_b:
        first = await app_b.start_workflow(only_on_b, workflow_id="r")
        await app_b.cancel_workflow("r")
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await first.get_result()
        handle = await app_a.resume_workflow("r")
        await app_a.send("r", "resumed")
        assert await handle.get_result() == "resumed"
        assert (await app_a.get_workflow_status("r")).executor_id == "runs-b"


async def test_item9_sibling_live_executor_without_the_function_releases_its_workflows(db_url):
    def build(executor_id: str, register: bool) -> tuple[asyncflow.AsyncFlow, Any]:
        app = asyncflow.AsyncFlow(db_url, executor_id=executor_id, app_version="v9",
                                  recovery_interval_seconds=0.2)

        async def job() -> Any:
            return await asyncflow.recv(timeout_seconds=3600)

        @app.workflow(name="other")
        async def other() -> None:
            return None

        return app, (app.workflow(name="job")(job) if register else None)

    first, job = build("exec-x", register=True)
    async with asyncio.timeout(WITHIN):
        async with first:
            await first.start_workflow(job, workflow_id="j")
        # exec-x comes back without "job"; exec-y has it.
        again, _ = build("exec-x", register=False)
        runner, _ = build("exec-y", register=True)
        async with again, runner:
            await runner.send("j", "done")
            assert await (await runner.retrieve_workflow("j")).get_result() == "done"


# ---------------------------------------------------------------------------------------------
# Item 10: exact executor liveness.
# ---------------------------------------------------------------------------------------------


async def test_item10_colliding_executor_ids_both_launch(make_app, conn):
    a, b = await colliding_executor_ids(conn)
    async with asyncio.timeout(WITHIN), make_app(executor_id=a), make_app(executor_id=b):
        pass


async def test_item10_dead_executor_recovered_while_a_colliding_one_lives(db_url, conn):
    a, b = await colliding_executor_ids(conn)

    def build(executor_id: str) -> tuple[asyncflow.AsyncFlow, Any]:
        app = asyncflow.AsyncFlow(db_url, executor_id=executor_id, app_version="v10",
                                  recovery_interval_seconds=0.2)

        @app.workflow(name="job")
        async def job() -> Any:
            return await asyncflow.recv(timeout_seconds=3600)

        return app, job

    dead, job = build(a)
    async with asyncio.timeout(WITHIN):
        async with dead:
            await dead.start_workflow(job, workflow_id="orphan")
        live, _ = build(b)  # a is gone; b lives with the same hashtext
        async with live:
            await live.send("orphan", "recovered")
            assert await (await live.retrieve_workflow("orphan")).get_result() == "recovered"
            assert (await live.get_workflow_status("orphan")).executor_id == b


async def test_item10_sibling_same_executor_id_on_schemas_with_colliding_namespaces(make_app):
    first, second = colliding_schema_names()
    async with asyncio.timeout(WITHIN), make_app(schema=first, executor_id="same"), make_app(
            schema=second, executor_id="same"):
        pass


# ---------------------------------------------------------------------------------------------
# Item 11: typed errors for bad configuration and arguments.
# ---------------------------------------------------------------------------------------------

URL = "postgresql://nobody@127.0.0.1:1/never"  # never connected to: errors come first

BAD_CONFIG: dict[str, Callable[[], Any]] = {
    "pool_size=0": lambda: asyncflow.AsyncFlow(URL, pool_size=0),
    "pool_size=-1": lambda: asyncflow.AsyncFlow(URL, pool_size=-1),
    "client pool_size=0": lambda: asyncflow.Client(URL, pool_size=0),
    "schema=pg_x": lambda: asyncflow.AsyncFlow(URL, schema="pg_x"),
    "client schema=pg_x": lambda: asyncflow.Client(URL, schema="pg_x"),
    "app_version lone surrogate": lambda: asyncflow.AsyncFlow(URL, app_version="v\ud800"),
    "recovery_interval_seconds=0": lambda: asyncflow.AsyncFlow(URL, recovery_interval_seconds=0),
    "recovery_interval_seconds=0.01": lambda: asyncflow.AsyncFlow(
        URL, recovery_interval_seconds=0.01),
}

BAD_CONFIG_SIBLINGS: dict[str, Callable[[], Any]] = {
    "pool_size=1.5": lambda: asyncflow.AsyncFlow(URL, pool_size=1.5),  # type: ignore[arg-type]
    "pool_size=True": lambda: asyncflow.AsyncFlow(URL, pool_size=True),
    "pool_size='10'": lambda: asyncflow.AsyncFlow(URL, pool_size="10"),  # type: ignore[arg-type]
    "app_version NUL": lambda: asyncflow.AsyncFlow(URL, app_version="v\x00"),
    "app_version int": lambda: asyncflow.AsyncFlow(URL, app_version=3),  # type: ignore[arg-type]
    "recovery_interval_seconds=nan": lambda: asyncflow.AsyncFlow(
        URL, recovery_interval_seconds=math.nan),
}


def _decorate(kind: str, **options: Any) -> Callable[[], Any]:
    def make() -> Any:
        app = asyncflow.AsyncFlow(URL)

        async def fn() -> None:
            return None

        return getattr(app, kind)(**options)(fn)

    return make


BAD_REGISTRATION: dict[str, Callable[[], Any]] = {
    "workflow name NUL": _decorate("workflow", name="a\x00b"),
    "workflow name lone surrogate": _decorate("workflow", name="a\ud800"),
    "step name lone surrogate": _decorate("step", name="a\ud800"),
    "transaction name NUL": _decorate("transaction", name="a\x00b"),
    "max_recovery_attempts=-1": _decorate("workflow", max_recovery_attempts=-1),
    "retries=-1": _decorate("step", retries=-1),
    "retries=1.5": _decorate("step", retries=1.5),
    "retry_interval_seconds=nan": _decorate("step", retry_interval_seconds=math.nan),
    "retry_interval_seconds=-1": _decorate("step", retry_interval_seconds=-1),
    "retry_interval_seconds=inf": _decorate("step", retry_interval_seconds=math.inf),
    "backoff_rate=nan": _decorate("step", backoff_rate=math.nan),
    "backoff_rate=inf": _decorate("step", backoff_rate=math.inf),
    "backoff_rate=-1": _decorate("step", backoff_rate=-1),
}


@pytest.mark.parametrize("case", list(BAD_CONFIG))
def test_item11_bad_configuration_fails_at_construction(case):
    with pytest.raises(asyncflow.ConfigurationError):
        BAD_CONFIG[case]()


@pytest.mark.parametrize("case", list(BAD_CONFIG_SIBLINGS))
def test_item11_sibling_bad_configuration_fails_at_construction(case):
    with pytest.raises(asyncflow.ConfigurationError):
        BAD_CONFIG_SIBLINGS[case]()


@pytest.mark.parametrize("case", list(BAD_REGISTRATION))
def test_item11_sibling_bad_registration_fails_at_decoration(case):
    with pytest.raises(asyncflow.ConfigurationError):
        BAD_REGISTRATION[case]()


def test_item11_smallest_recovery_interval_is_accepted():
    asyncflow.AsyncFlow(URL, recovery_interval_seconds=0.05)


async def _drain(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


@pytest.mark.parametrize("call", ["read_stream", "list_workflows"])
async def test_item11_out_of_range_offset_and_limit(make_app, call):
    app = make_app()

    @app.workflow()
    async def wf() -> None:
        await asyncflow.write_stream("s", 1)

    async with asyncio.timeout(WITHIN), app:
        await (await app.start_workflow(wf, workflow_id="w")).get_result()
        with pytest.raises(asyncflow.InvalidArgumentError):
            if call == "read_stream":
                await _drain(app.read_stream("w", "s", offset=2**63))
            else:
                await app.list_workflows(limit=2**63)


@pytest.mark.parametrize("call", ["stream_entries", "stream_snapshot", "EventStream",
                                  "client read_stream", "client list_workflows"])
async def test_item11_sibling_out_of_range_offsets(make_app, db_url, call):
    app = make_app()

    @app.workflow()
    async def wf() -> None:
        await asyncflow.write_stream("s", 1)

    async with asyncio.timeout(WITHIN), app, asyncflow.Client(db_url) as client:
        await (await app.start_workflow(wf, workflow_id="w")).get_result()
        with pytest.raises(asyncflow.InvalidArgumentError):
            if call == "stream_entries":
                await _drain(app.stream_entries("w", "s", offset=2**63))
            elif call == "stream_snapshot":
                await asyncflow.stream_snapshot(app, "w", "s", offset=2**63)
            elif call == "EventStream":
                asyncflow.EventStream(app, "w", "s", offset=2**63)
            elif call == "client read_stream":
                await _drain(client.read_stream("w", "s", offset=2**63))
            else:
                await client.list_workflows(limit=2**63)


async def sessions_opened(conn: Any) -> int:
    """Sessions ever opened to this test's database (Postgres 14+ statistics)."""
    value = await conn.fetchval(
        "select sessions from pg_stat_database where datname = current_database()")
    return int(value)


async def _cancelled_waits(app: asyncflow.AsyncFlow, handle: Any, call: str, count: int,
                           too_many: Callable[[], Awaitable[bool]]) -> None:
    make: Callable[[], Awaitable[Any]]
    if call == "get_event":
        def make() -> Awaitable[Any]:
            return app.get_event("q", "never", timeout_seconds=60)
    elif call == "get_result":
        def make() -> Awaitable[Any]:
            return handle.get_result()
    else:
        def make() -> Awaitable[Any]:
            return app.list_workflows()
    for i in range(count):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(make(), 0.002)
        # Stop at the first evidence: each dropped connection leaves a backend blocked on the
        # lock until it is released, and a shared server must not run out of connections.
        if i % 10 == 9 and await too_many():
            return


class _Openings:
    """The connections the app opens, by who opened them, and why pool connections ended."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pool = 0
        self.other = 0
        self.ended: list[str] = []
        connect, session = ConnectionPool._connect, Storage.connect
        terminate = PoolConnection.terminate

        async def pool_connect(pool: ConnectionPool) -> Any:
            self.pool += 1
            return await connect(pool)

        async def session_connect(storage: Storage, *args: Any, **kwargs: Any) -> Any:
            self.other += 1
            return await session(storage, *args, **kwargs)

        def ended(conn: PoolConnection) -> None:
            frames = traceback.extract_stack(limit=6)[:-1]
            self.ended.append(" < ".join(f"{f.name}:{f.lineno}" for f in reversed(frames)))
            terminate(conn)

        monkeypatch.setattr(ConnectionPool, "_connect", pool_connect)
        monkeypatch.setattr(Storage, "connect", session_connect)
        monkeypatch.setattr(PoolConnection, "terminate", ended)

    def __str__(self) -> str:
        return (f"the pool opened {self.pool}, other sessions {self.other}; pool connections "
                f"terminated: {self.ended}")


async def _run_cancelled_waits(make_app: Any, conn: Any, db_url: str, call: str,
                               count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``count`` calls, each cancelled while its statement runs: the statement waits for a lock
    held by another session, so every cancellation lands mid-statement."""
    if await conn.fetchval("select current_setting('server_version_num')::int") < 140000:
        pytest.skip("pg_stat_database.sessions needs Postgres 14")
    pool_size = 4
    app = make_app(pool_size=pool_size)

    @app.workflow()
    async def quiet() -> Any:
        return await asyncflow.recv(timeout_seconds=3600)

    monitor = await asyncpg.connect(db_url)  # outside the lock's transaction: fresh statistics
    before = await sessions_opened(monitor)
    openings = _Openings(monkeypatch)

    async def too_many() -> bool:
        return openings.pool > pool_size + 2

    async with asyncio.timeout(120), app:
        handle = await app.start_workflow(quiet, workflow_id="q")
        table = "events" if call == "get_event" else "workflows"
        blocker = conn.transaction()
        await blocker.start()
        try:
            await conn.execute(f"LOCK TABLE asyncflow.{table} IN ACCESS EXCLUSIVE MODE")
            await _cancelled_waits(app, handle, call, count, too_many)
        finally:
            await blocker.rollback()
        await app.send("q", "still works")
        assert await handle.get_result() == "still works"
    opened = await sessions_opened(monitor) - before
    await monitor.close()
    # A cancellation racing the statement's end can (rarely, under load) leave asyncpg's
    # connection unusable, and the pool replaces it: a couple, never one per cancelled call.
    assert openings.pool <= pool_size + 2, f"{opened} sessions opened: {openings}"
    # And the server saw no session the app did not open. Its statistics lag: a backend
    # reports its session when it first goes idle, and defers that under contention, so the
    # test's own two sessions (``conn``, ``monitor``) may land after ``before``.
    assert opened <= openings.pool + openings.other + 2, f"{opened} sessions opened: {openings}"


async def test_item11_cancelled_get_event_waits_keep_their_connections(make_app, conn, db_url,
                                                                      monkeypatch):
    await _run_cancelled_waits(make_app, conn, db_url, "get_event", 1000, monkeypatch)


@pytest.mark.parametrize("call", ["get_result", "list_workflows"])
async def test_item11_sibling_cancelled_calls_keep_their_connections(make_app, conn, db_url,
                                                                   call, monkeypatch):
    await _run_cancelled_waits(make_app, conn, db_url, call, 200, monkeypatch)


# ---------------------------------------------------------------------------------------------
# Item 13: not-found errors name the id.
# ---------------------------------------------------------------------------------------------


async def test_item13_send_to_unknown_workflow_names_the_id(make_app):
    async with asyncio.timeout(WITHIN), make_app() as app:
        with pytest.raises(asyncflow.WorkflowNotFoundError, match="no-such-id"):
            await app.send("no-such-id", 1)


@pytest.mark.parametrize("how", ["app idempotent", "client", "client idempotent", "workflow",
                                 "workflow idempotent", "step"])
async def test_item13_sibling_every_send_path_names_the_id(make_app, db_url, how):
    app = make_app()

    @app.step()
    async def send_from_step() -> str:
        try:
            await asyncflow.send("no-such-id", 1)
        except asyncflow.WorkflowNotFoundError as exc:
            return str(exc)
        return "sent"

    @app.workflow()
    async def sender(key: str | None) -> str:
        if how == "step":
            return await send_from_step()
        try:
            await asyncflow.send("no-such-id", 1, idempotency_key=key)
        except asyncflow.WorkflowNotFoundError as exc:
            return str(exc)
        return "sent"

    async with asyncio.timeout(WITHIN), app, asyncflow.Client(db_url) as client:
        key = "k" if how.endswith("idempotent") else None
        if how.startswith("workflow") or how == "step":
            message = await (await app.start_workflow(sender, key)).get_result()
        else:
            source: Any = client if how.startswith("client") else app
            with pytest.raises(asyncflow.WorkflowNotFoundError) as info:
                await source.send("no-such-id", 1, idempotency_key=key)
            message = str(info.value)
    assert "no-such-id" in message
