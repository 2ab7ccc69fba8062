"""The two-role deployment: the schema's owner migrates (without CREATE on the database), a
runtime role runs with ``migrate=False`` and refuses a schema behind the code with the fix.

Roles are cluster-wide: each test creates uniquely-named roles and drops them afterwards.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from urllib.parse import urlsplit

import asyncpg
import pytest
from conftest import ROOT, python_env
from faultlib import with_user

import asyncflow
from asyncflow._storage.database import SCHEMA_VERSION

GRANTS = [
    "GRANT CONNECT ON DATABASE {db} TO {role}",
    "GRANT USAGE ON SCHEMA asyncflow TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA asyncflow TO {role}",
    "GRANT USAGE ON ALL SEQUENCES IN SCHEMA asyncflow TO {role}",
]


async def _cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asyncflow", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=python_env(), cwd=ROOT)
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    return await process.wait(), out.decode()


async def test_owner_migrates_and_runtime_role_runs_with_migrate_false(empty_db_url):
    tag = uuid.uuid4().hex[:10]
    owner, runtime = f"asyncflow_own_{tag}", f"asyncflow_run_{tag}"
    db = '"' + urlsplit(empty_db_url).path.lstrip("/") + '"'
    admin = await asyncpg.connect(empty_db_url)
    try:
        for role in (owner, runtime):
            await admin.execute(
                f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT")
        # The owner may connect but not CREATE in the database; the DBA made its schema.
        await admin.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
        await admin.execute(f"GRANT CONNECT ON DATABASE {db} TO {owner}")
        await admin.execute(f"CREATE SCHEMA asyncflow AUTHORIZATION {owner}")
        owner_url = with_user(empty_db_url, owner, "x")
        runtime_url = with_user(empty_db_url, runtime, "x")

        code, out = await _cli("--database-url", owner_url, "db", "migrate")
        assert code == 0, out
        assert f"at version {SCHEMA_VERSION}" in out
        code, out = await _cli("--database-url", owner_url, "db", "migrate")  # idempotent
        assert code == 0, out

        for grant in GRANTS:
            await admin.execute(grant.format(db=db, role=runtime))
        app = asyncflow.AsyncFlow(runtime_url, migrate=False)

        @app.workflow()
        async def hello(name: str) -> str:
            return "hello " + name

        async with app:
            handle = await app.start_workflow(hello, "runtime")
            assert await handle.get_result() == "hello runtime"

        # The schema one version behind this code: the runtime role is told what to do.
        await admin.execute(
            "DELETE FROM asyncflow.schema_version WHERE version = $1", SCHEMA_VERSION)
        with pytest.raises(asyncflow.SchemaVersionError, match=(
                rf"at version {SCHEMA_VERSION - 1}, this code needs {SCHEMA_VERSION}: run "
                "`asyncflow db migrate` as its owner")):
            async with asyncflow.AsyncFlow(runtime_url, migrate=False):
                pass
    finally:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            f"WHERE usename IN ('{owner}', '{runtime}')")
        for role in (owner, runtime):
            await admin.execute(f"DROP OWNED BY {role} CASCADE")
            await admin.execute(f"DROP ROLE {role}")
        await admin.close()


def test_migrate_setting_is_checked():
    with pytest.raises(asyncflow.InvalidSettingError, match="migrate"):
        asyncflow.AsyncFlow("postgresql://x/y", migrate="no")  # type: ignore[arg-type]
