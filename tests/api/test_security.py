"""Security: every statement comes from the SQL modules with its values bound as parameters,
NOTIFY payloads carry only a kind and an id, and the runtime works under a plain role holding
only the documented privileges (no superuser, no DDL).

(tests/api/test_api.py pins the static rules on the SQL modules themselves,
asyncflow/_storage/sql/: no f-strings, %-formatting or .format(), only the ``{s}`` schema
placeholder, no pickle.)
"""

from __future__ import annotations

import ast
import asyncio
import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from faultlib import with_user
from test_api import sql_statements

import asyncflow
from asyncflow._core.wait import decode_payload
from asyncflow._storage import sql
from asyncflow._storage.sql import messages, testkit

PACKAGE = Path(asyncflow.__file__).parent
DRIVER_METHODS = {"execute", "executemany", "fetch", "fetchrow", "fetchval", "prepare", "cursor"}


def _statement_argument(call: ast.Call) -> ast.expr | None:
    return call.args[0] if call.args else None


def _sql_modules(tree: ast.Module) -> set[str]:
    """The names a module binds to SQL modules (``from .sql import journal, workflows``)."""
    return {alias.asname or alias.name for node in tree.body
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("sql")
            for alias in node.names}


def _is_constant(node: ast.expr, sql_modules: set[str]) -> bool:
    """``journal.NAME``: a statement constant of an SQL module."""
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in sql_modules and node.attr.isupper())


def _is_database_statement(node: ast.expr, sql_modules: set[str]) -> bool:
    """``testkit.database_statement(testkit.NAME, db=…)``: a constant with database names
    quoted in."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "database_statement" and isinstance(node.func.value, ast.Name)
            and node.func.value.id in sql_modules and len(node.args) == 1
            and _is_constant(node.args[0], sql_modules))


def test_every_statement_is_a_constant_of_the_sql_module():
    """Every call that runs SQL passes a constant of an SQL module (``journal.NAME``) or a
    template name handed through unchanged; nothing builds statement text from values at run
    time."""
    offenders = []
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        sql_modules = _sql_modules(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in DRIVER_METHODS):
                continue
            arg = _statement_argument(node)
            if arg is None:
                continue
            checked += 1
            ok = (
                # journal.SOME_STATEMENT
                _is_constant(arg, sql_modules)
                # migrations.MIGRATIONS[version - 1]
                or (isinstance(arg, ast.Subscript) and _is_constant(arg.value, sql_modules))
                # the test kit's CREATE/DROP DATABASE, with the database names it generates
                # quoted as identifiers: testkit.database_statement(testkit.NAME, db=name)
                or _is_database_statement(arg, sql_modules)
                # a template parameter passed through, or rendered: self.sql(template)
                or isinstance(arg, ast.Name)
                or (isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute)
                    and arg.func.attr == "sql" and len(arg.args) == 1
                    and isinstance(arg.args[0], ast.Name | ast.Attribute))
            )
            if not ok:
                offenders.append(f"{path.name}:{node.lineno}: {ast.unparse(arg)[:80]}")
    assert checked > 100  # the walk reaches the store's modules
    assert not offenders, offenders


def test_statement_templates_bind_every_value():
    """No statement contains a literal that looks like spliced-in data: the only text ever
    substituted is the schema identifier, and values are ``$n`` parameters."""
    statements = {n: v for n, v in sql_statements().items()
                  if "{s}" in v and not n.split(".")[1].startswith("_")}  # not the fragments
    assert len(statements) > 20
    for name, text in statements.items():
        assert "%(" not in text and "%s" not in text, name
        numbers = sorted({int(m) for m in re.findall(r"\$(\d+)", text)})
        assert numbers == list(range(1, len(numbers) + 1)), (name, numbers)
    rendered = sql.render(messages.SEND_MESSAGE, "asyncflow")
    assert "{s}" not in rendered and '"asyncflow".messages' in rendered
    for bad in ['a"; drop table x; --', "a b", "1abc", "", "x" * 64, "é"]:
        with pytest.raises(ValueError):
            sql.quote_schema(bad)
        with pytest.raises(ValueError):
            testkit.database_statement(testkit.DROP_DATABASE, db=bad)
    clone = testkit.database_statement(testkit.CREATE_DATABASE_FROM_TEMPLATE, db="a",
                                       template="b")
    assert clone == 'CREATE DATABASE "a" TEMPLATE "b"'


def test_no_pickle_or_eval_on_stored_data():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec"}, (path.name, node.lineno)
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                assert not any(n.split(".")[0] in {"pickle", "marshal", "shelve", "dill"}
                               for n in names), path.name


async def test_notify_payloads_carry_only_a_kind_and_an_id(make_app, db_url):
    """Listen on the app's channel while workflows send secrets around: every payload is one
    kind letter plus a workflow id, and no value ever appears in one."""
    secret = f"SECRET-{uuid.uuid4().hex}"
    payloads: list[str] = []
    listener = await asyncpg.connect(db_url)
    await listener.add_listener("asyncflow_asyncflow", lambda *a: payloads.append(a[3]))
    app = make_app()

    @app.step()
    async def in_step() -> None:
        await asyncflow.set_event("from-step", secret)
        await asyncflow.write_stream("s", secret)

    @app.workflow()
    async def talker(peer: str) -> str:
        await asyncflow.recv("go", timeout_seconds=30)  # once the peer exists
        await asyncflow.send(peer, secret, topic=secret)
        got = await asyncflow.recv(topic=secret, timeout_seconds=30)
        await asyncflow.set_event(secret, got)
        await asyncflow.write_stream(secret, got)
        await in_step()
        await asyncflow.close_stream(secret)
        return str(got)

    try:
        async with app, asyncflow.Client(db_url) as client:
            a = await app.start_workflow(talker, "w-b", workflow_id="w-a")
            b = await app.start_workflow(talker, "w-a", workflow_id="w-b")
            await client.send("w-a", 1, "go")
            await client.send("w-b", 1, "go")
            await client.send("w-a", secret, secret, idempotency_key=secret)
            assert await a.get_result(30) == secret
            assert await b.get_result(30) == secret
            # Cancel and resume (from the Client: its NOTIFYs are not echoes of the app's).
            c = await app.start_workflow(talker, "w-a", workflow_id="w-c")
            await client.send("w-c", 1, "go")
            await client.cancel_workflow("w-c")
            await client.resume_workflow("w-c")
            await client.send("w-c", secret, secret)
            assert await c.get_result(30) == secret
            # Wait for our own probe notification: every earlier one has arrived by then.
            seen = asyncio.Event()
            await listener.add_listener("probe", lambda *a: seen.set())
            await listener.execute("notify probe")
            await seen.wait()
    finally:
        await listener.close()
    assert payloads
    kinds = set()
    for payload in payloads:
        assert secret not in payload
        keys = decode_payload(payload)  # one key, or several from a group commit
        assert keys, payload
        if keys[0][0] == "h":  # a listener's probe of its own wake-ups: a random token
            assert len(keys) == 1 and len(keys[0][1]) == 16, payload
            continue
        for kind, workflow_id in keys:
            assert kind in "mestr" and workflow_id in ("w-a", "w-b", "w-c"), payload
            kinds.add(kind)
    assert {"m", "e", "s", "t", "r"} <= kinds


# -- privileges ------------------------------------------------------------------------------------

RUNTIME_GRANTS = [
    "GRANT CONNECT ON DATABASE {db} TO {role}",
    "GRANT USAGE ON SCHEMA asyncflow TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA asyncflow TO {role}",
    "GRANT USAGE ON ALL SEQUENCES IN SCHEMA asyncflow TO {role}",
]


async def test_runtime_works_under_a_plain_role_with_only_documented_grants(db_url, conn):
    """The schema is migrated by its owner; the app, its recovery supervisor and a Client then
    run under a role that is not superuser, cannot create anything and holds only the GRANTs
    documented in the README."""
    role = f"asyncflow_rt_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    db = urlsplit(db_url).path.lstrip("/")
    await conn.execute(
        f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT "
        f"PASSWORD '{password}'")
    try:
        # Nothing through PUBLIC either: only what is granted below.
        await conn.execute(f'REVOKE ALL ON DATABASE "{db}" FROM PUBLIC')
        await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        url = with_user(db_url, role, password)
        await conn.execute(RUNTIME_GRANTS[0].format(db=f'"{db}"', role=role))
        # Connecting alone is not enough: a missing privilege is a clear ConfigurationError.
        with pytest.raises(asyncflow.ConfigurationError, match="privilege"):
            async with asyncflow.AsyncFlow(url):
                pass
        for grant in RUNTIME_GRANTS[1:]:
            await conn.execute(grant.format(db=f'"{db}"', role=role))
        await conn.execute("create table public.effects (workflow_id text)")
        await _run_as_runtime_role(url)
    finally:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")


async def _run_as_runtime_role(url: str) -> None:
    raw = await asyncpg.connect(url)
    try:
        assert await raw.fetchval(
            "select rolsuper or rolcreatedb or rolcreaterole from pg_roles "
            "where rolname = current_user") is False
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await raw.execute("create table asyncflow.intruder (x int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await raw.execute("create schema intruder")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await raw.execute("insert into public.effects values ('x')")
    finally:
        await raw.close()

    first = asyncflow.AsyncFlow(url, executor_id="rt-first", app_version="rt")
    second = asyncflow.AsyncFlow(url, executor_id="rt-second", app_version="rt",
                                 recovery_interval_seconds=0.1)
    fns = register_runtime_workflows(first)
    register_runtime_workflows(second)

    async with first:  # launch checks the schema version without any DDL
        h = await first.start_workflow(fns["chat"], workflow_id="chat")
        await first.send("chat", "hello", "in")
        assert await h.get_result(timeout_seconds=30) == ["hello", "pong"]
        assert await first.get_all_events("chat") == {"said": "hello"}
        assert [v async for v in first.read_stream("chat", "out")] == ["hello"]
        await first.start_workflow(fns["blocked"], workflow_id="blocked")
        await first._waits.wait_for_count(1)
    # "first" stopped with "blocked" pending: another executor claims it (pg_locks, advisory
    # locks, SKIP LOCKED claims) under the same plain role.
    async with second, asyncflow.Client(url) as client:
        await client.send("blocked", "go", "go", idempotency_key="once")
        handle = await client.retrieve_workflow("blocked")
        assert await handle.get_result(timeout_seconds=30) == "recovered go"
        assert (await handle.get_status()).executor_id == "rt-second"
        await client.cancel_workflow("chat")  # a finished workflow: no-op, but allowed
        assert len(await client.list_workflows()) == 3


def register_runtime_workflows(app: asyncflow.AsyncFlow) -> dict[str, object]:
    @app.workflow(name="chat")
    async def chat() -> list[str]:
        got = await asyncflow.recv("in", timeout_seconds=30)
        await asyncflow.set_event("said", got)
        await asyncflow.write_stream("out", got)
        await asyncflow.close_stream("out")
        child = await asyncflow.start_workflow(pong)
        return [got, await child.get_result()]

    @app.workflow(name="pong")
    async def pong() -> str:
        await asyncflow.sleep(0.01)
        return "pong"

    @app.workflow(name="blocked")
    async def blocked() -> str:
        return "recovered " + await asyncflow.recv("go", timeout_seconds=3600)

    return {"chat": chat, "blocked": blocked}
