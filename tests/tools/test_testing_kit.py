"""asyncflow.testing, the users' test kit, tested against real Postgres: its fixtures (a fresh
database per test, a module-level app relaunched across tests), simulated crashes and recovery,
the test clock, and the example test file run through the plugin's entry point and through
``-p asyncflow.testing``, on a given server and on the kit's own embedded one.

Here the kit's session fixture ``asyncflow_databases`` uses this suite's server (conftest.py);
the example runs in subprocesses exercise the kit's own server choices.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import math
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import ROOT, python_env

import asyncflow
from asyncflow.testing import (
    Crash,
    TestDatabases,
    _server,
    crash_and_recover,
    crash_at,
    launched,
    relaunch,
    reset,
    skip_timers,
    step_runs,
    until_waiting,
)

DAY = 86400.0
app = asyncflow.AsyncFlow()  # module level, no URL: as users write it
ran: list[str] = []
gates: list[asyncio.Event] = []


@pytest.fixture(autouse=True)
def _fresh_module_state() -> None:
    ran.clear()
    gates.clear()


@app.step()
async def first(x: int) -> int:
    ran.append("first")
    return x + 1


@app.step()
async def second(x: int) -> int:
    ran.append("second")
    await asyncflow.set_event("second", x)  # staged: commits with the checkpoint
    await asyncflow.write_stream("log", x)
    return x * 10


@app.transaction()
async def record_row(x: int) -> int:
    ran.append("record_row")
    await asyncflow.connection().execute("INSERT INTO kit_rows (x) VALUES ($1)", x)
    return x


@app.workflow()
async def pipeline(x: int) -> int:
    a = await first(x)  # 0
    b = await second(a)  # 1
    await record_row(b)  # 2
    await asyncflow.set_event("done", b)  # 3
    return b


@app.workflow()
async def stubborn() -> str:
    try:
        await first(1)  # 0
        await first(2)  # 1
    finally:
        await asyncflow.set_event("cleanup", True)  # a dead process runs no finally: nor here
    return "ok"


@app.workflow()
async def sleeper(days: float) -> str:
    await asyncflow.sleep(days * DAY)  # 0
    return "awake"


@app.workflow()
async def nap_then_step() -> int:
    await asyncflow.sleep(DAY)  # 0
    return await first(1)  # 1


@app.workflow()
async def monthly(months: int) -> int:
    for _ in range(months):
        await asyncflow.sleep(30 * DAY)  # one operation per month
    return months


@app.workflow()
async def receiver() -> Any:
    return await asyncflow.recv("topic", timeout_seconds=DAY)


@app.workflow()
async def event_reader(target: str) -> Any:
    return await asyncflow.get_event(target, "never", timeout_seconds=DAY)


@app.workflow()
async def first_of() -> int:
    fired = await asyncflow.wait_first(asyncflow.message("topic"), asyncflow.timer(2 * DAY))
    return fired.index


@app.workflow()
async def quick() -> int:
    return await first(1)


@app.step()
async def held() -> int:
    await gates[0].wait()  # not a durable wait: the workflow is busy in a step, not waiting
    return 1


@app.workflow()
async def busy() -> int:
    return await held()


@pytest.fixture
async def rows(asyncflow_database_url) -> AsyncIterator[asyncpg.Connection]:
    """The table record_row writes to, in this test's database; a connection to read it."""
    conn = await asyncpg.connect(asyncflow_database_url)
    await conn.execute("CREATE TABLE kit_rows (x bigint)")
    yield conn
    await conn.close()


async def _names(a: asyncflow.AsyncFlow, workflow_id: str) -> list[str]:
    return [step.name for step in await a.list_workflow_steps(workflow_id)]


# -- the fixtures ---------------------------------------------------------------------------------


async def test_each_test_gets_a_fresh_migrated_database(asyncflow_database_url):
    assert os.environ["ASYNCFLOW_DATABASE_URL"] == asyncflow_database_url
    conn = await asyncpg.connect(asyncflow_database_url)
    try:
        assert await conn.fetchval("select count(*) from asyncflow.workflows") == 0
    finally:
        await conn.close()


@pytest.mark.parametrize("round_", [1, 2])
async def test_a_module_level_app_runs_on_each_tests_database(asyncflow_app, round_):
    async with asyncflow_app(app) as a:
        assert a is app
        assert a.database_url == asyncflow_app.database_url
        assert await a.list_workflows() == []  # nothing left from the other round
        handle = await a.start_workflow(quick, workflow_id="same-id")
        assert await handle.get_result() == 2
    assert app._database_url is None  # its own URL back
    assert ran == ["first"]


async def test_databases_are_created_and_dropped(asyncflow_databases, server_url):
    url = asyncflow_databases.create()
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(server_url)
    try:
        conn = await asyncpg.connect(url)  # a session still open is ended by drop()
        assert await conn.fetchval("select count(*) from asyncflow.schema_version") > 0
        await asyncio.to_thread(asyncflow_databases.drop, url)
        conn.terminate()
        assert not await admin.fetchval("select 1 from pg_database where datname = $1", name)
        with pytest.raises(asyncflow.InvalidArgumentError, match="not created"):
            asyncflow_databases.drop(server_url)
    finally:
        await admin.close()


@pytest.fixture
async def running(asyncflow_app) -> AsyncIterator[asyncflow.AsyncFlow]:
    """Launched in a fixture: pytest-asyncio sets it up and tears it down in two other tasks."""
    async with asyncflow_app(app) as a:
        yield a


async def test_an_app_launched_in_a_fixture_relaunches_from_the_test(running):
    handle = await crash_and_recover(running, quick, before=0)
    assert await handle.get_result(timeout_seconds=60) == 2
    assert ran == ["first"]


async def test_an_app_the_test_launched_itself_relaunches_in_its_task(asyncflow_database_url):
    mine = asyncflow.AsyncFlow(asyncflow_database_url)

    @mine.workflow()
    async def local() -> int:
        return await first(5)

    async with mine:
        handle = await crash_and_recover(mine, local, before=0)
        assert await handle.get_result(timeout_seconds=60) == 6


async def test_a_running_app_is_refused(asyncflow_app, asyncflow_database_url):
    mine = asyncflow.AsyncFlow(asyncflow_database_url)
    async with mine:
        with pytest.raises(asyncflow.ConfigurationError, match="already running"):
            async with asyncflow_app(mine):
                pass
    with pytest.raises(asyncflow.InvalidArgumentError, match="AsyncFlow app"):
        async with launched(asyncflow.Client(asyncflow_database_url)):  # type: ignore[arg-type]
            pass


# -- crashes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("before", [0, 1, 2, 3])
async def test_crash_before_a_step_recovers_without_rerunning_checkpoints(
    asyncflow_app, rows, before
):
    async with asyncflow_app(app) as a:
        runs = step_runs(a)
        handle = await crash_and_recover(a, pipeline, 1, before=before)
        assert await handle.get_result(timeout_seconds=60) == 20
        # Every body ran exactly once: the ones before the crash were checkpointed, the crash
        # came before the others started.
        assert runs == {"first": 1, "second": 1, "record_row": 1}
        assert ran == ["first", "second", "record_row"]
        assert await rows.fetchval("select count(*) from kit_rows") == 1
        status = await handle.get_status()
        assert (status.status, status.recovery_attempts) == ("SUCCESS", 1)
        assert status.executor_id == a.executor_id
        assert await _names(a, handle.workflow_id) == [
            "first", "second", "record_row", "asyncflow.set_event"]


async def test_crash_during_a_step_runs_its_body_again_and_its_effects_once(
    asyncflow_app, rows
):
    async with asyncflow_app(app) as a:
        runs = step_runs(a, "p-1")
        crash = crash_at(a, "p-1", during="second")
        handle = await a.start_workflow(pipeline, 1, workflow_id="p-1")
        assert await crash.wait() is crash
        assert (crash.workflow_id, crash.operation, crash.name) == ("p-1", 1, "second")
        assert crash.step == 1  # the older name
        # As after a kill between the body and its checkpoint: the step's event and stream value
        # were staged with the checkpoint, so none of them is there.
        assert await _names(a, "p-1") == ["first"]
        assert await a.get_all_events("p-1") == {}
        assert (await handle.get_status()).status == asyncflow.PENDING
        await relaunch(a)
        assert await handle.get_result(timeout_seconds=60) == 20
        assert runs == {"first": 1, "second": 2, "record_row": 1}
        assert [v async for v in a.read_stream("p-1", "log")] == [2]
        assert await a.get_all_events("p-1") == {"second": 2, "done": 20}
        assert await rows.fetchval("select count(*) from kit_rows") == 1


async def test_crash_during_a_transaction_rolls_its_writes_back(asyncflow_app, rows):
    async with asyncflow_app(app) as a:
        runs = step_runs(a)
        crash = crash_at(a, "p-2", during=record_row)  # the function: its default name
        await a.start_workflow(pipeline, 1, workflow_id="p-2")
        await crash.wait()
        assert crash.name == "record_row"
        assert await rows.fetchval("select count(*) from kit_rows") == 0
        await relaunch(a)
        assert await (await a.retrieve_workflow("p-2")).get_result(timeout_seconds=60) == 20
        assert runs["record_row"] == 2
        assert await rows.fetchval("select count(*) from kit_rows") == 1  # exactly once


async def test_crash_during_a_step_chosen_by_number(asyncflow_app):
    async with asyncflow_app(app) as a:
        runs = step_runs(a)
        handle = await crash_and_recover(a, quick, during=0)
        assert await handle.get_result(timeout_seconds=60) == 2
        assert runs == {"first": 2}


async def test_a_crashed_execution_does_nothing_more(asyncflow_app):
    async with asyncflow_app(app) as a:
        crash = crash_at(a, "s-1", before=1)
        handle = await a.start_workflow(stubborn, workflow_id="s-1")
        await crash.wait()
        # Its `finally` tried a durable operation: a dead process would not have, nor did it.
        assert await a.get_all_events("s-1") == {}
        assert await _names(a, "s-1") == ["first"]
        await relaunch(a)
        assert await handle.get_result(timeout_seconds=60) == "ok"
        assert await a.get_all_events("s-1") == {"cleanup": True}


async def test_a_recovery_can_crash_again(asyncflow_app, rows):
    async with asyncflow_app(app) as a:
        runs = step_runs(a)
        first_crash = crash_at(a, "p-3", before=1)
        handle = await a.start_workflow(pipeline, 1, workflow_id="p-3")
        await first_crash.wait()
        again = crash_at(a, "p-3", during="record_row")  # armed before the relaunch
        await relaunch(a)
        await again.wait()
        await relaunch(a)
        assert await handle.get_result(timeout_seconds=60) == 20
        assert (await handle.get_status()).recovery_attempts == 2
        assert runs == {"first": 1, "second": 1, "record_row": 2}


async def test_a_crash_for_any_workflow_takes_the_first_to_get_there(asyncflow_app, rows):
    async with asyncflow_app(app) as a:
        crash = crash_at(a, before=1)
        assert not crash.happened and "armed" in repr(crash)
        handle = await a.start_workflow(pipeline, 1)
        await crash.wait()
        assert crash.workflow_id == handle.workflow_id and crash.step == 1
        assert crash.name is None  # before=: the operation had not said what it is
        other = await a.start_workflow(quick)  # disarmed: fired once
        assert await other.get_result(timeout_seconds=60) == 2
        await relaunch(a)
        assert await handle.get_result(timeout_seconds=60) == 20


async def test_a_crash_point_never_reached_fails_with_the_journal(asyncflow_app):
    async with asyncflow_app(app) as a:
        with pytest.raises(AssertionError, match=r"ended \(SUCCESS\).*\n  #0 first"):
            await crash_and_recover(a, quick, before=5)
        with pytest.raises(asyncflow.InvalidArgumentError, match=r"during='nope'.*'first'"):
            await crash_and_recover(a, quick, during="nope")


async def test_an_unknown_step_name_is_refused_when_armed(asyncflow_app):
    async with asyncflow_app(app) as a:
        with pytest.raises(asyncflow.InvalidArgumentError, match="no_such_step"):
            crash_at(a, before=None, during="no_such_step")
        assert not a._step_names.isdisjoint({"first", "record_row"})  # steps, transactions
        crash_at(a, "x-1", during="record_row")  # registered names are fine
        crash_at(a, "x-2", during="asyncflow.sleep")  # and the engine's own operations


# -- the clock ------------------------------------------------------------------------------------


async def test_skip_timers_ends_a_long_sleep(asyncflow_app):
    async with asyncflow_app(app) as a:
        handle = await a.start_workflow(sleeper, 3)
        await skip_timers(a, days=3, once_waiting=handle)
        assert await handle.get_result(timeout_seconds=60) == "awake"


async def test_skip_timers_times_out_recv_get_event_and_wait_first(asyncflow_app):
    async with asyncflow_app(app) as a:
        recv = await a.start_workflow(receiver)
        event = await a.start_workflow(event_reader, recv.workflow_id)
        first = await a.start_workflow(first_of)
        for handle in (recv, event, first):
            await until_waiting(a, handle)
        await skip_timers(a, hours=23)
        await skip_timers(a, minutes=60)
        assert await recv.get_result(timeout_seconds=60) is None  # timed out
        assert await event.get_result(timeout_seconds=60) is None
        assert (await first.get_status()).status == asyncflow.PENDING  # due in 2 days
        await skip_timers(a, DAY)
        assert await first.get_result(timeout_seconds=60) == 1  # the timer branch


async def test_skips_in_a_row_each_wait_for_the_next_timer(asyncflow_app):
    # Right after a skip the workflow still counts as parked in the sleep that just fired: the
    # next skip must wait for the next sleep, or it moves the clock before that sleep is set.
    async with asyncflow_app(app) as a:
        handle = await a.start_workflow(monthly, 3)
        for _ in range(3):
            await skip_timers(a, days=30, once_waiting=handle)
        assert await handle.get_result(timeout_seconds=20) == 3
        assert a.runtime.clock_offset == 90 * DAY


async def test_a_timer_skipped_in_part_parks_until_its_new_time(asyncflow_app):
    async with asyncflow_app(app) as a:
        handle = await a.start_workflow(sleeper, 1)
        await skip_timers(a, DAY - 1, once_waiting=handle)
        # One second of the day is left: it ends in about a second, not a day.
        assert await handle.get_result(timeout_seconds=60) == "awake"


async def test_the_clock_carries_over_a_relaunch(asyncflow_app):
    async with asyncflow_app(app) as a:
        crash = crash_at(a, "n-1", before=1)
        handle = await a.start_workflow(nap_then_step, workflow_id="n-1")
        await skip_timers(a, DAY, once_waiting=handle)
        await crash.wait()
        await relaunch(a)
        # The recovered sleep replays its recorded wake-up time against the same test clock.
        assert a.runtime.clock_offset == DAY
        assert await handle.get_result(timeout_seconds=60) == 2


async def test_until_waiting_fails_for_a_workflow_that_does_not_wait(asyncflow_app):
    async with asyncflow_app(app) as a:
        handle = await a.start_workflow(quick)
        with pytest.raises(AssertionError, match=r"ended \(SUCCESS\) before .* waited"):
            await until_waiting(a, handle)
        gates.append(asyncio.Event())
        handle = await a.start_workflow(busy)
        try:
            with pytest.raises(asyncflow.AsyncFlowTimeoutError):
                await until_waiting(a, handle.workflow_id, timeout_seconds=0.2)
        finally:
            gates[0].set()
        assert await handle.get_result(timeout_seconds=60) == 1


async def test_reset_forgets_the_clock_and_the_hooks(asyncflow_app):
    async with asyncflow_app(app) as a:
        await skip_timers(a, DAY)
        crash_at(a, before=0)
        assert a.runtime.clock_offset == DAY and a.runtime.on_operation is not None
        reset(a)
        assert a.runtime.clock_offset == 0 and a.runtime.on_operation is None
        assert a._prepare_runtime is None and a._waits.on_park is None
        assert await (await a.start_workflow(quick)).get_result(timeout_seconds=60) == 2


async def test_bad_arguments_fail_at_the_call(asyncflow_app):
    async with asyncflow_app(app) as a:
        for kwargs in ({}, {"before": 1, "during": "x"}, {"before": -1}, {"before": True},
                       {"before": "first"}, {"during": -2}, {"during": 1.5}):
            with pytest.raises(asyncflow.InvalidArgumentError):
                crash_at(a, **kwargs)
        for value in (-1, math.nan, math.inf, True, "1"):
            with pytest.raises(asyncflow.InvalidArgumentError):
                await skip_timers(a, value)
        with pytest.raises(asyncflow.InvalidArgumentError):
            await until_waiting(a, 42)  # type: ignore[arg-type]
        with pytest.raises(asyncflow.InvalidArgumentError):
            crash_at(a, "bad\x00id", before=0)
        assert a.runtime.clock_offset == 0  # nothing moved
    assert isinstance(crash_at(app, before=0), Crash)
    with pytest.raises(asyncflow.InvalidArgumentError, match="schema"):
        TestDatabases(schema="not-plain")
    with pytest.raises(asyncflow.InvalidArgumentError, match="admin_url"):
        TestDatabases(5)  # type: ignore[arg-type]


# -- installation and the example -----------------------------------------------------------------


def _run_python(code: str) -> str:
    import subprocess

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=python_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_asyncflow_does_not_import_pytest_and_the_helpers_need_none():
    assert _run_python("import sys, asyncflow; print('pytest' in sys.modules)").strip() == "False"
    out = _run_python(
        "import sys; sys.modules['pytest'] = None\n"
        "import asyncflow.testing as t\n"
        "print(callable(t.crash_and_recover), hasattr(t, 'asyncflow_app'))")
    assert out.strip() == "True False"


def test_the_plugin_is_registered_by_entry_point():
    points = importlib.metadata.entry_points(group="pytest11")
    assert {(p.name, p.value) for p in points} >= {("asyncflow.testing", "asyncflow.testing")}


async def _pytest_example(env: dict[str, str], *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "examples/test_order_workflow.py", "-q",
        "-p", "no:cacheprovider", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 240)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = out.decode()
    assert process.returncode == 0, text
    assert "4 passed" in text, text
    return text


@pytest.mark.slow
async def test_the_example_runs_by_entry_point_on_the_kits_embedded_server():
    # Where the kit puts its embedded server (short: a Unix socket's path has a length limit).
    tmp = tempfile.mkdtemp(prefix="afk-")
    try:
        env = python_env()
        env.pop("ASYNCFLOW_TEST_DATABASE_URL", None)
        env.pop("ASYNCFLOW_DATABASE_URL", None)
        env["TMPDIR"] = tmp
        await _pytest_example(env)
        left = [name for name in os.listdir(tmp) if name.startswith("asyncflow-testing-pg-")]
        assert left == []  # its embedded server stopped and deleted
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
async def test_the_example_runs_with_p_on_a_given_server(server_url: str):
    admin = await asyncpg.connect(server_url)
    query = ("select datname from pg_database where datname like 'asyncflow\\_test\\_%' "
             "or datname like 'asyncflow\\_template\\_%'")
    try:
        before = {row[0] for row in await admin.fetch(query)}
        env = python_env()
        env["ASYNCFLOW_TEST_DATABASE_URL"] = server_url
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only what -p names: not the entry point
        await _pytest_example(env, "-p", "asyncflow.testing", "-p", "pytest_asyncio.plugin")
        assert {row[0] for row in await admin.fetch(query)} <= before  # all dropped
    finally:
        await admin.close()


@pytest.mark.slow
def test_test_databases_on_a_private_embedded_server(monkeypatch):
    monkeypatch.delenv("ASYNCFLOW_TEST_DATABASE_URL", raising=False)
    with TestDatabases() as databases:
        url = databases.create()
        assert databases.embedded
        data_dir = databases._data_dir
        assert data_dir is not None and (data_dir / "pgdata").is_dir()
        if _server.RAM_DIRECTORY.is_dir() and os.access(_server.RAM_DIRECTORY, os.W_OK):
            assert data_dir.parent == _server.RAM_DIRECTORY  # this machine's memory has room
        admin_url = databases.admin_url
        databases.drop(url)
    assert not data_dir.exists()
    with pytest.raises(OSError):  # the server was stopped
        asyncio.run(asyncpg.connect(admin_url, timeout=30))


def test_a_scratch_directory_is_in_memory_only_where_there_is_room(monkeypatch, tmp_path):
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    monkeypatch.setattr(_server, "RAM_DIRECTORY", roomy)
    made = _server.scratch_directory("kit-")
    assert made.parent == roomy and made.name.startswith("kit-") and made.is_dir()
    monkeypatch.setattr(_server, "RAM_NEEDED", shutil.disk_usage(roomy).free + (1 << 40))
    full = _server.scratch_directory("kit-")  # too little room: the usual temporary directory
    assert full.parent == Path(tempfile.gettempdir()) and full.is_dir()
    monkeypatch.setattr(_server, "RAM_DIRECTORY", tmp_path / "missing")
    absent = _server.scratch_directory("kit-")
    assert absent.parent == Path(tempfile.gettempdir())
    full.rmdir()
    absent.rmdir()


def test_the_testing_extra_has_the_plugins_the_pytest_configuration_uses() -> None:
    # pyproject's pytest options of plugins: a user who installed only the `testing` extra
    # must not get "Unknown config option" for any of them.
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    options = project["tool"]["pytest"]["ini_options"]
    plugin_of = {"timeout": "pytest-timeout", "asyncio_mode": "pytest-asyncio"}
    testing = {req.split(">")[0].split("[")[0].strip()
               for req in project["project"]["optional-dependencies"]["testing"]}
    for option, plugin in plugin_of.items():
        if option in options:
            assert plugin in testing, f"pyproject sets {option}: add {plugin} to `testing`"
