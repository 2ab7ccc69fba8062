"""Workflows, steps, transactions and the journal."""

from __future__ import annotations

import asyncio
import time

import pytest

import asyncflow


class InsufficientFunds(Exception):
    def __init__(self, account: str, missing: int) -> None:
        super().__init__(account, missing)
        self.account = account
        self.missing = missing


async def test_step_result_is_recorded_and_replayed(make_app, conn):
    app = make_app()
    runs: list[int] = []

    @app.step()
    async def double(x):
        runs.append(x)
        return (x * 2, {"x": x})

    @app.workflow()
    async def wf(x):
        a = await double(x)
        b = await double(a[0])
        return [a, b]

    async with app:
        h = await app.start_workflow(wf, 3, workflow_id="w1")
        assert await h.get_result() == [[6, {"x": 3}], [12, {"x": 6}]]
        assert runs == [3, 6]
        steps = await app.list_workflow_steps("w1")
        assert [(s.function_id, s.name, s.output) for s in steps] == [
            (0, double.__qualname__, [6, {"x": 3}]),
            (1, double.__qualname__, [12, {"x": 6}]),
        ]
        # Force a re-execution: the recorded steps are replayed, not re-run.
        await conn.execute(
            "update asyncflow.workflows set status='PENDING', output=null, executor_id=null "
            "where workflow_id='w1'"
        )
        await app.resume_workflow("w1")  # not resumable from PENDING: a no-op
        app._supervisor.poke()
        h2 = await app.retrieve_workflow("w1")
        assert await h2.get_result(timeout_seconds=10) == [[6, {"x": 3}], [12, {"x": 6}]]
        assert runs == [3, 6]
        status = await h2.get_status()
        assert status.recovery_attempts == 1


async def test_transaction_commits_checkpoint_in_same_transaction(make_app, conn):
    await conn.execute("create table accounts (id text primary key, balance int)")
    await conn.execute("insert into accounts values ('a', 100)")
    app = make_app()

    @app.transaction()
    async def withdraw(amount):
        c = asyncflow.connection()
        return await c.fetchval(
            "update accounts set balance = balance - $1 where id = 'a' returning balance", amount
        )

    @app.transaction()
    async def failing():
        c = asyncflow.connection()
        await c.execute("update accounts set balance = 0 where id = 'a'")
        raise InsufficientFunds("a", 5)

    @app.workflow()
    async def wf():
        first = await withdraw(10)
        try:
            await failing()
        except InsufficientFunds as exc:
            caught = [exc.account, exc.missing]
        return [first, await withdraw(5), caught]

    async with app:
        assert await wf() == [90, 85, ["a", 5]]
    # The failing transaction rolled back; its error was recorded.
    assert await conn.fetchval("select balance from accounts") == 85
    rows = await conn.fetch("select name, error is not null as failed from asyncflow.operations "
                            "order by function_id")
    assert [r["failed"] for r in rows] == [False, True, False]


@pytest.mark.parametrize("ending", ["commit", "error"])
async def test_session_state_left_by_a_transaction_body_is_reset(make_app, conn, ending):
    """Settings, advisory locks and held cursors a body leaves on its connection are gone
    before the pool's next user (a pool of one
    connection, so every call below runs on the same session)."""
    await conn.execute("create table seen (n int)")
    app = make_app(pool_size=1)

    @app.transaction()
    async def dirty():
        c = asyncflow.connection()
        await c.execute("select set_config('search_path', 'pg_catalog', false), "
                        "set_config('myapp.tag', 'dirty', false), pg_advisory_lock(4242)")
        await c.execute("declare held cursor with hold for select 1")
        await c.execute("insert into public.seen values (1)")
        if ending == "error":
            raise InsufficientFunds("a", 1)

    @app.transaction()
    async def inspect():
        c = asyncflow.connection()
        return dict(await c.fetchrow(
            "select current_setting('search_path') as path, "
            "coalesce(current_setting('myapp.tag', true), '') as tag, "
            "(select count(*) from pg_cursors where name = 'held') as cursors, "
            "(select count(*) from pg_locks where locktype = 'advisory' "
            " and pid = pg_backend_pid()) as locks"))

    async with app:
        try:
            await dirty()
        except InsufficientFunds:
            assert ending == "error"
        state = await inspect()
        assert state == {"path": '"$user", public', "tag": "", "cursors": 0, "locks": 0}
        assert await conn.fetchval("select pg_try_advisory_lock(4242)")  # free for others
        await conn.execute("select pg_advisory_unlock(4242)")
    assert await conn.fetchval("select count(*) from seen") == (1 if ending == "commit" else 0)


async def test_transaction_outside_workflow_runs_plain(make_app, conn):
    await conn.execute("create table t (v int)")
    app = make_app()

    @app.transaction(isolation="serializable")
    async def insert(v):
        await asyncflow.connection().execute("insert into t values ($1)", v)
        return v

    async with app:
        assert await insert(7) == 7
    assert await conn.fetchval("select sum(v) from t") == 7
    assert await conn.fetchval("select count(*) from asyncflow.operations") == 0


async def test_serialization_failures_are_retried(make_app, conn):
    await conn.execute("create table counter (id int primary key, n int)")
    await conn.execute("insert into counter values (1, 0)")
    app = make_app(pool_size=12)

    @app.transaction(isolation="serializable")
    async def bump():
        c = asyncflow.connection()
        n = await c.fetchval("select n from counter where id = 1")
        await c.execute("update counter set n = $1 where id = 1", n + 1)
        return n + 1

    @app.workflow()
    async def wf():
        return await bump()

    async with app:
        handles = [await app.start_workflow(wf) for _ in range(10)]
        results = [await h.get_result(timeout_seconds=30) for h in handles]
    assert sorted(results) == list(range(1, 11))
    assert await conn.fetchval("select n from counter") == 10


async def test_gather_of_50_steps_replays_deterministically(make_app, conn):
    app = make_app()
    executed: list[int] = []

    @app.step()
    async def item(i):
        executed.append(i)
        await asyncio.sleep(0.001 * ((i * 7) % 5))  # finish out of order
        return i * i

    @app.workflow()
    async def wf():
        return await asyncio.gather(*(item(i) for i in range(50)))

    async with app:
        h = await app.start_workflow(wf, workflow_id="g")
        expected = [i * i for i in range(50)]
        assert await h.get_result() == expected
        rows = await conn.fetch(
            "select function_id, output from asyncflow.operations where workflow_id='g' "
            "order by function_id"
        )
        assert [(r["function_id"], int(r["output"])) for r in rows] == [
            (i, i * i) for i in range(50)
        ]
        # Drop half the journal and re-run: recorded ones replay, the rest run at their ids.
        await conn.execute(
            "delete from asyncflow.operations where workflow_id='g' and function_id % 2 = 1"
        )
        await conn.execute(
            "update asyncflow.workflows set status='PENDING', output=null, executor_id=null "
            "where workflow_id='g'"
        )
        executed.clear()
        app._supervisor.poke()
        assert await (await app.retrieve_workflow("g")).get_result(timeout_seconds=10) == expected
        assert sorted(executed) == list(range(1, 50, 2))


async def test_nondeterminism_is_detected(make_app, conn):
    app = make_app()

    @app.step()
    async def a():
        return "a"

    @app.step()
    async def b():
        return "b"

    flip = {"value": False}

    @app.workflow()
    async def wf():
        if flip["value"]:
            return await b()
        return await a()

    async with app:
        assert await app.start_workflow(wf, workflow_id="nd") is not None
        assert await (await app.retrieve_workflow("nd")).get_result() == "a"
        flip["value"] = True
        await conn.execute(
            "update asyncflow.workflows set status='PENDING', output=null, executor_id=null "
            "where workflow_id='nd'"
        )
        app._supervisor.poke()
        with pytest.raises(asyncflow.NonDeterministicWorkflowError) as info:
            await (await app.retrieve_workflow("nd")).get_result(timeout_seconds=10)
    assert a.__qualname__ in str(info.value) and b.__qualname__ in str(info.value)


async def test_idempotent_start_never_runs_twice(make_app):
    app = make_app()
    runs = []

    @app.workflow()
    async def wf(x):
        runs.append(x)
        return x

    async with app:
        h1 = await app.start_workflow(wf, 1, workflow_id="same")
        h2 = await app.start_workflow(wf, 2, workflow_id="same")
        assert await h1.get_result() == 1
        assert await h2.get_result() == 1
        h3 = await app.start_workflow(wf, 3, workflow_id="same")
        assert await h3.get_result() == 1
    assert runs == [1]


async def test_conflicting_name_for_existing_id(make_app):
    app = make_app()

    @app.workflow()
    async def one():
        return 1

    @app.workflow()
    async def two():
        return 2

    async with app:
        await (await app.start_workflow(one, workflow_id="x")).get_result()
        with pytest.raises(asyncflow.WorkflowConflictError):
            await app.start_workflow(two, workflow_id="x")


async def test_child_workflows_have_deterministic_ids(make_app):
    app = make_app()

    @app.workflow()
    async def child(n):
        return n + 1

    @app.workflow()
    async def parent():
        direct = await child(1)
        handle = await asyncflow.start_workflow(child, 10)
        named = await app.start_workflow(child, 20, workflow_id="named-child")
        return [direct, await handle.get_result(), await named.get_result(), handle.workflow_id]

    async with app:
        h = await app.start_workflow(parent, workflow_id="p")
        assert await h.get_result() == [2, 11, 21, "p-1"]
        kids = {s.workflow_id: s for s in await app.list_workflows(name=child.__qualname__)}
        assert set(kids) == {"p-0", "p-1", "named-child"}
        assert all(s.parent_workflow_id == "p" for s in kids.values())
        steps = await app.list_workflow_steps("p")
        assert [s.child_workflow_id for s in steps] == ["p-0", "p-1", "named-child"]


async def test_durable_sleep_records_wake_time(make_app, conn):
    app = make_app()

    @app.workflow()
    async def sleeper():
        t0 = time.monotonic()
        await asyncflow.sleep(0.3)
        return time.monotonic() - t0

    async with app:
        elapsed = await sleeper()
        assert 0.28 <= elapsed < 2
    wake_at = float(await conn.fetchval(
        "select output from asyncflow.operations where name = 'asyncflow.sleep'"))
    assert abs(wake_at - time.time()) < 60


async def test_cancel_wakes_sleeping_workflow_and_resume_continues(make_app):
    app = make_app()
    after = []

    @app.step()
    async def mark(v):
        after.append(v)
        return v

    @app.workflow()
    async def wf():
        await mark("before")
        await asyncflow.sleep(3600)
        await mark("after")
        return "done"

    async with app:
        h = await app.start_workflow(wf, workflow_id="c1")
        started = time.monotonic()
        await app.cancel_workflow("c1")
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await h.get_result(timeout_seconds=10)
        assert (await h.get_status()).status == "CANCELLED"
        assert time.monotonic() - started < 5
        await app.cancel_workflow("c1")  # cancelling a cancelled workflow is a no-op
        assert after.count("before") == 1


async def test_cancel_then_resume_runs_remaining_steps(make_app):
    app = make_app()
    gate = asyncio.Event()
    entered = asyncio.Event()
    seen = []

    @app.step()
    async def first():
        seen.append("first")
        entered.set()
        await gate.wait()
        return 1

    @app.step()
    async def second():
        seen.append("second")
        return 2

    @app.workflow()
    async def wf():
        return await first() + await second()

    async with app:
        h = await app.start_workflow(wf, workflow_id="cr")
        await entered.wait()
        await app.cancel_workflow("cr")
        gate.set()
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await h.get_result(timeout_seconds=10)
        # The in-flight step finished; second never ran while cancelled.
        await app.resume_workflow("cr")
        assert await h.get_result(timeout_seconds=10) == 3
        assert (await h.get_status()).status == "SUCCESS"
    # "first" ran again only if its checkpoint was refused (the cancel was still in force when
    # it finished); "second" ran exactly once, after the resume.
    assert seen in (["first", "first", "second"], ["first", "second"])


async def test_errors_round_trip_with_their_type(make_app):
    app = make_app()

    @app.step()
    async def boom():
        raise InsufficientFunds("acct-1", 42)

    class Unbuildable(Exception):
        def __init__(self) -> None:
            super().__init__("needs no args but takes none")

    @app.workflow()
    async def wf():
        await boom()

    @app.workflow()
    async def wf2():
        raise Unbuildable()

    async with app:
        with pytest.raises(InsufficientFunds) as info:
            await (await app.start_workflow(wf, workflow_id="err")).get_result()
        assert (info.value.account, info.value.missing) == ("acct-1", 42)
        status = await app.get_workflow_status("err")
        assert status.status == "ERROR"
        assert "InsufficientFunds" in status.error
        # Rebuilt from the database by a fresh handle: same type, traceback attached.
        with pytest.raises(InsufficientFunds) as info2:
            await (await app.retrieve_workflow("err")).get_result()
        assert any("boom" in note for note in info2.value.__notes__)
        with pytest.raises(asyncflow.WorkflowFailedError) as info3:
            await (await app.start_workflow(wf2)).get_result()
        assert "Unbuildable" in info3.value.type_name
        assert "wf2" in info3.value.traceback


async def test_step_retries_with_backoff(make_app):
    app = make_app()
    attempts = []

    @app.step(retries=3, retry_interval_seconds=0.01, backoff_rate=2)
    async def flaky():
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    @app.step(retries=1, retry_interval_seconds=0.01)
    async def hopeless():
        raise ValueError("never")

    @app.workflow()
    async def wf():
        result = await flaky()
        try:
            await hopeless()
        except ValueError as exc:
            return [result, str(exc)]

    async with app:
        assert await wf() == ["ok", "never"]
    assert len(attempts) == 3


async def test_serialization_errors_write_nothing(make_app, conn):
    app = make_app()

    @app.workflow()
    async def wf(x):
        return x

    @app.workflow()
    async def bad_result():
        return {1, object()}

    async with app:
        for bad in [{1, object()}, object(), float("nan"), {(1, 2): "tuple key"}]:
            with pytest.raises(asyncflow.SerializationError):
                await app.start_workflow(wf, bad)
        assert await conn.fetchval("select count(*) from asyncflow.workflows") == 0
        h = await app.start_workflow(bad_result, workflow_id="br")
        with pytest.raises(asyncflow.SerializationError):
            await h.get_result()
        assert (await h.get_status()).status == "ERROR"


async def test_value_size_limit(make_app, conn):
    app = make_app()

    @app.workflow()
    async def wf(x):
        return len(x)

    async with app:
        with pytest.raises(asyncflow.ValueTooLargeError):
            await app.start_workflow(wf, "x" * (asyncflow.MAX_VALUE_BYTES + 1))
    assert await conn.fetchval("select count(*) from asyncflow.workflows") == 0


async def test_status_and_list(make_app):
    app = make_app()

    @app.workflow()
    async def ok(i):
        return i

    @app.workflow()
    async def bad():
        raise RuntimeError("nope")

    async with app:
        for i in range(3):
            await (await app.start_workflow(ok, i, workflow_id=f"ok{i}")).get_result()
        with pytest.raises(RuntimeError):
            await bad()
        everything = await app.list_workflows()
        assert len(everything) == 4
        assert [s.workflow_id for s in await app.list_workflows(status="SUCCESS", limit=2)] == [
            "ok2", "ok1"]
        errors = await app.list_workflows(status="ERROR")
        assert len(errors) == 1 and errors[0].error.endswith("RuntimeError: nope")
        s = await app.get_workflow_status("ok0")
        assert s.executor_id == app.executor_id and s.app_version == app.app_version
        assert s.completed_at is not None and s.created_at <= s.completed_at
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await app.retrieve_workflow("missing")
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await app.get_workflow_status("missing")


async def test_get_result_timeout(make_app):
    app = make_app()

    @app.workflow()
    async def waits():
        return await asyncflow.recv(timeout_seconds=30)

    async with app:
        h = await app.start_workflow(waits)
        with pytest.raises(asyncflow.AsyncFlowTimeoutError):
            await h.get_result(timeout_seconds=0.1)
        await app.send(h.workflow_id, "go")
        assert await h.get_result(timeout_seconds=10) == "go"


async def test_workflow_id_and_context_errors(make_app):
    app = make_app()

    @app.step()
    async def inner():
        return asyncflow.workflow_id()

    @app.workflow()
    async def wf():
        return [asyncflow.workflow_id(), await inner()]

    async with app:
        assert await (await app.start_workflow(wf, workflow_id="ctx")).get_result() == [
            "ctx", "ctx"]
    with pytest.raises(asyncflow.NotInWorkflowError):
        asyncflow.workflow_id()
    with pytest.raises(asyncflow.NotInWorkflowError):
        asyncflow.connection()


async def test_not_launched(make_app):
    app = make_app()

    @app.workflow()
    async def wf():
        return 1

    with pytest.raises(asyncflow.NotLaunchedError):
        await app.start_workflow(wf)
    async with app:
        pass
    with pytest.raises(asyncflow.NotLaunchedError):
        await app.list_workflows()


async def test_multiple_apps_in_one_process(db_url):
    a = asyncflow.AsyncFlow(db_url, schema="app_a")
    b = asyncflow.AsyncFlow(db_url, schema="app_b")

    @a.workflow(name="wf")
    async def wf_a():
        return "a"

    @b.workflow(name="wf")
    async def wf_b():
        return "b"

    async with a, b:
        assert await wf_a() == "a"
        assert await wf_b() == "b"
        assert len(await a.list_workflows()) == 1
        assert len(await b.list_workflows()) == 1
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await a.start_workflow(wf_b)
