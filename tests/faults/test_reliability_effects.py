"""Issue 9, items 2, 3 and 12: what a step or transaction leaves behind.

Item 2: a step's durable effects (``write_stream``, ``close_stream``, ``send``, ``set_event``
called inside the step) are staged and take effect atomically with the step's checkpoint: a
failed (retried) attempt, or one interrupted by a shutdown, leaves none of them, and every reader
sees one history.

Item 3: no combination of user calls may deadlock the connection pool: a transaction's own
operations (its checkpoint, its effects, a cancel refusing its checkpoint) never wait for a
second pooled connection while holding one.

Item 12: a transaction body that ends or replaces its transaction (``COMMIT``, ``ROLLBACK``,
``COMMIT; BEGIN``…) fails with ``asyncflow.TransactionStateError``; nothing it did is committed
and no success is journaled.

Waits that hang while a bug is present are bounded by ``asyncio.timeout`` so that a wedge fails
the test quickly.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

import asyncflow

WEDGE = 10  # seconds: far above what these tests need when nothing is wedged


async def read_all(source: Any, workflow_id: str, key: str) -> list[Any]:
    return [value async for value in source.read_stream(workflow_id, key)]


# ---------------------------------------------------------------------------------------------
# Item 2: a failed attempt's effects are never visible.
# ---------------------------------------------------------------------------------------------


async def test_item2_retried_step_stream_writes_one_history(make_app):
    app = make_app()
    attempts: list[int] = []

    @app.step(retries=1, retry_interval_seconds=0.01)
    async def produce() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            await asyncflow.write_stream("s", "first-1")
            await asyncflow.write_stream("s", "first-2")
            raise RuntimeError("flaky")
        await asyncflow.write_stream("s", "second-1")
        return "ok"

    @app.workflow()
    async def wf() -> str:
        await asyncflow.write_stream("s", "start")
        await asyncflow.recv("go", timeout_seconds=3600)  # until the live reader is attached
        result = await produce()
        await asyncflow.close_stream("s")
        return result

    live: list[Any] = []
    attached = asyncio.Event()

    async def follow(source: Any) -> None:
        async for value in source.read_stream("rs", "s"):
            live.append(value)
            attached.set()

    async with asyncio.timeout(WEDGE), app:
        handle = await app.start_workflow(wf, workflow_id="rs")
        reader = asyncio.ensure_future(follow(app))
        await attached.wait()  # it has read "start" and parks at the tail
        await app.send("rs", None, topic="go")
        assert await handle.get_result() == "ok"
        await reader
        later = await read_all(app, "rs", "s")
    assert len(attempts) == 2
    assert later == ["start", "second-1"]
    assert live == later


async def test_item2_retried_step_send_delivers_only_the_retry_message(make_app):
    app = make_app()
    attempts: list[int] = []

    @app.step(retries=1, retry_interval_seconds=0.01)
    async def notify(target: str) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            await asyncflow.send(target, "first")
            raise RuntimeError("flaky")
        await asyncflow.send(target, "second")

    @app.workflow()
    async def sender(target: str) -> None:
        await notify(target)

    @app.workflow()
    async def receiver() -> list[Any]:
        first = await asyncflow.recv(timeout_seconds=3600)
        return [first, await asyncflow.recv(timeout_seconds=0)]

    async with asyncio.timeout(WEDGE), app:
        rx = await app.start_workflow(receiver, workflow_id="rx")
        await (await app.start_workflow(sender, "rx", workflow_id="tx")).get_result()
        assert await rx.get_result() == ["second", None]


async def test_item2_retried_step_event_from_failed_attempt_is_never_set(make_app):
    app = make_app()
    attempts: list[int] = []

    @app.step(retries=1, retry_interval_seconds=0.01)
    async def publish() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            await asyncflow.set_event("failed-attempt", "first")
            raise RuntimeError("flaky")
        await asyncflow.set_event("retry", "second")

    @app.workflow()
    async def wf() -> None:
        await publish()

    async with asyncio.timeout(WEDGE), app:
        handle = await app.start_workflow(wf, workflow_id="ev")
        retry_value = asyncio.ensure_future(app.get_event("ev", "retry", timeout_seconds=WEDGE))
        await handle.get_result()
        assert await retry_value == "second"
        assert await app.get_event("ev", "failed-attempt", timeout_seconds=0) is None
        assert await app.get_all_events("ev") == {"retry": "second"}


async def test_item2_retried_step_close_stream_from_failed_attempt_is_undone(make_app):
    app = make_app()
    attempts: list[int] = []

    @app.step(retries=1, retry_interval_seconds=0.01)
    async def maybe_close() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            await asyncflow.close_stream("s")
            raise RuntimeError("flaky")

    @app.workflow()
    async def wf() -> str:
        await maybe_close()
        await asyncflow.write_stream("s", "after")
        await asyncflow.close_stream("s")
        return "ok"

    async with asyncio.timeout(WEDGE), app:
        assert await (await app.start_workflow(wf, workflow_id="cl")).get_result() == "ok"
        assert await read_all(app, "cl", "s") == ["after"]


async def test_item2_interrupted_step_leaves_no_effects(db_url):
    """The step's first attempt writes, sends and sets, then the app shuts down mid-step (as a
    crash would interrupt it); the relaunched app runs the step again, which does less. Readers
    (a Client attached throughout, and a later one) see only the completed attempt."""
    in_step = asyncio.Event()

    def build(run: str) -> tuple[asyncflow.AsyncFlow, Any, Any]:
        app = asyncflow.AsyncFlow(db_url, executor_id="rel-effects", app_version="rel-effects",
                                  recovery_interval_seconds=0.2)

        @app.step(name="effects")
        async def effects() -> str:
            if run == "first":
                await asyncflow.write_stream("s", "first-1")
                await asyncflow.write_stream("s", "first-2")
                await asyncflow.send("rx", "first")
                await asyncflow.set_event("first", True)
                in_step.set()
                await asyncio.Event().wait()  # interrupted here by the shutdown
            await asyncflow.write_stream("s", "second-1")
            await asyncflow.send("rx", "second")
            await asyncflow.set_event("second", True)
            return run

        @app.workflow(name="wf")
        async def wf() -> str:
            await asyncflow.write_stream("s", "start")
            result = await effects()
            await asyncflow.close_stream("s")
            return result

        @app.workflow(name="receiver")
        async def receiver() -> list[Any]:
            first = await asyncflow.recv(timeout_seconds=3600)
            return [first, await asyncflow.recv(timeout_seconds=0)]

        return app, wf, receiver

    live: list[Any] = []
    attached = asyncio.Event()

    async def follow(client: asyncflow.Client) -> None:
        async for value in client.read_stream("w", "s"):
            live.append(value)
            attached.set()

    async with asyncio.timeout(WEDGE), asyncflow.Client(db_url) as client:
        app, wf, receiver = build("first")
        async with app:
            await app.start_workflow(receiver, workflow_id="rx")
            await app.start_workflow(wf, workflow_id="w")
            reader = asyncio.ensure_future(follow(client))
            await in_step.wait()
            await attached.wait()
            # Shut down with the step in flight.
        app2, _, _ = build("second")
        async with app2:
            assert await (await app2.retrieve_workflow("w")).get_result() == "second"
            assert await (await app2.retrieve_workflow("rx")).get_result() == ["second", None]
            await reader
            later = await read_all(client, "w", "s")
            events = await app2.get_all_events("w")
    assert later == ["start", "second-1"]
    assert live == later
    assert events == {"second": True}


# ---------------------------------------------------------------------------------------------
# Item 3: no pool deadlock.
# ---------------------------------------------------------------------------------------------


class Barrier:
    """All ``count`` transaction bodies are inside (each holding a pooled connection)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.arrived = 0
        self.all_in = asyncio.Event()
        self.release = asyncio.Event()

    async def arrive(self) -> None:
        self.arrived += 1
        if self.arrived == self.count:
            self.all_in.set()
        await self.release.wait()


async def _create_rows_table(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("create table rows (workflow_id text, what text)")
    finally:
        await conn.close()


async def _rows(db_url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(db_url)
    try:
        return [tuple(r) for r in await conn.fetch("select * from rows order by 1, 2")]
    finally:
        await conn.close()


@pytest.mark.parametrize("pool_size", [2, 10])
async def test_item3_transactions_calling_set_event_with_a_cancel_do_not_deadlock(
        db_url, pool_size):
    app = asyncflow.AsyncFlow(db_url, pool_size=pool_size, recovery_interval_seconds=0.2)
    barrier = Barrier(pool_size)

    @app.transaction()
    async def tx(i: int) -> int:
        await barrier.arrive()
        await asyncflow.set_event("k", i)
        return i

    @app.workflow()
    async def wf(i: int) -> int:
        return await tx(i)

    async with app, asyncflow.Client(db_url, pool_size=1) as client:
        handles = [await app.start_workflow(wf, i, workflow_id=f"t{i}") for i in range(pool_size)]
        async with asyncio.timeout(WEDGE):
            await barrier.all_in.wait()
        # Cancelled while inside its transaction (through the client's own pool).
        await client.cancel_workflow("t0")
        barrier.release.set()
        async with asyncio.timeout(WEDGE):
            with pytest.raises(asyncflow.WorkflowCancelledError):
                await handles[0].get_result()
            results = [await h.get_result() for h in handles[1:]]
            listed = await app.list_workflows()
            events = [await app.get_all_events(f"t{i}") for i in range(pool_size)]
    assert results == list(range(1, pool_size))
    assert sorted((s.workflow_id, s.status) for s in listed) == sorted(
        [("t0", "CANCELLED")] + [(f"t{i}", "SUCCESS") for i in range(1, pool_size)])
    # The cancelled transaction rolled back, its event with it (item 2: staged effects).
    assert events == [{}] + [{"k": i} for i in range(1, pool_size)]


async def test_item3_transactions_cancelled_while_inside_do_not_deadlock(db_url):
    pool_size = 3
    await _create_rows_table(db_url)
    app = asyncflow.AsyncFlow(db_url, pool_size=pool_size, recovery_interval_seconds=0.2)
    barrier = Barrier(pool_size)

    @app.transaction()
    async def tx() -> None:
        await asyncflow.connection().execute(
            "insert into rows values ($1, 'body')", asyncflow.workflow_id())
        await barrier.arrive()

    @app.workflow()
    async def wf() -> None:
        await tx()

    async with app, asyncflow.Client(db_url, pool_size=1) as client:
        handles = [await app.start_workflow(wf, workflow_id=f"c{i}") for i in range(pool_size)]
        async with asyncio.timeout(WEDGE):
            await barrier.all_in.wait()
        for h in handles:
            await client.cancel_workflow(h.workflow_id)
        barrier.release.set()
        async with asyncio.timeout(WEDGE):
            for h in handles:
                with pytest.raises(asyncflow.WorkflowCancelledError):
                    await h.get_result()
            statuses = {s.status for s in await app.list_workflows()}
    assert statuses == {"CANCELLED"}
    assert await _rows(db_url) == []  # refused checkpoints roll their transactions back


async def test_item3_sibling_transaction_effects_do_not_deadlock(db_url):
    pool_size = 2
    app = asyncflow.AsyncFlow(db_url, pool_size=pool_size, recovery_interval_seconds=0.2)
    barrier = Barrier(pool_size)
    done: dict[str, list[str]] = {}

    @app.transaction()
    async def tx() -> None:
        wid = asyncflow.workflow_id()
        progress = done.setdefault(wid, [])
        await barrier.arrive()
        await asyncflow.send("inbox", wid)
        progress.append("send")
        await asyncflow.write_stream("s", wid)
        progress.append("write_stream")
        await asyncflow.close_stream("s")
        progress.append("close_stream")

    @app.workflow()
    async def wf() -> None:
        await tx()

    @app.workflow()
    async def inbox() -> list[Any]:
        return sorted([await asyncflow.recv(timeout_seconds=3600) for _ in range(pool_size)])

    async with app:
        box = await app.start_workflow(inbox, workflow_id="inbox")
        handles = [await app.start_workflow(wf, workflow_id=f"e{i}") for i in range(pool_size)]
        async with asyncio.timeout(WEDGE):
            await barrier.all_in.wait()
        barrier.release.set()
        try:
            async with asyncio.timeout(WEDGE):
                for h in handles:
                    await h.get_result()
                assert await box.get_result() == [f"e{i}" for i in range(pool_size)]
                streams = [await read_all(app, h.workflow_id, "s") for h in handles]
        except TimeoutError:
            pytest.fail(f"wedged; operations done inside each transaction: {done}")
    assert streams == [[f"e{i}"] for i in range(pool_size)]


async def test_item3_sibling_nested_transaction_and_reads_do_not_deadlock(db_url):
    pool_size = 2
    await _create_rows_table(db_url)
    app = asyncflow.AsyncFlow(db_url, pool_size=pool_size, recovery_interval_seconds=0.2)
    barrier = Barrier(pool_size)
    done: dict[str, list[str]] = {}

    @app.transaction()
    async def inner(wid: str) -> None:
        await asyncflow.connection().execute("insert into rows values ($1, 'inner')", wid)

    @app.transaction()
    async def outer() -> str:
        wid = asyncflow.workflow_id()
        progress = done.setdefault(wid, [])
        await barrier.arrive()
        await inner(wid)
        progress.append("nested transaction")
        status = await app.get_workflow_status(wid)
        progress.append("get_workflow_status")
        await asyncflow.get_event("ready", "k", timeout_seconds=0)
        progress.append("get_event")
        return status.status

    @app.workflow()
    async def wf() -> str:
        return await outer()

    @app.workflow()
    async def ready() -> None:
        await asyncflow.set_event("k", 1)

    async with app:
        await (await app.start_workflow(ready, workflow_id="ready")).get_result()
        handles = [await app.start_workflow(wf, workflow_id=f"n{i}") for i in range(pool_size)]
        async with asyncio.timeout(WEDGE):
            await barrier.all_in.wait()
        barrier.release.set()
        try:
            async with asyncio.timeout(WEDGE):
                results = [await h.get_result() for h in handles]
        except TimeoutError:
            pytest.fail(f"wedged; operations done inside each transaction: {done}")
    assert results == ["PENDING"] * pool_size
    assert await _rows(db_url) == [(f"n{i}", "inner") for i in range(pool_size)]


# ---------------------------------------------------------------------------------------------
# Item 12: a transaction body cannot break its own atomicity.
# ---------------------------------------------------------------------------------------------


async def _commit_then_raise(conn: Any) -> None:
    await conn.execute("COMMIT")
    raise RuntimeError("failed after its own COMMIT")


async def _commit(conn: Any) -> None:
    await conn.execute("COMMIT")


async def _rollback(conn: Any) -> None:
    await conn.execute("ROLLBACK")


async def _commit_begin(conn: Any) -> None:
    await conn.execute("COMMIT; BEGIN")


async def _commit_and_chain(conn: Any) -> None:
    await conn.execute("COMMIT AND CHAIN")


async def _end(conn: Any) -> None:
    await conn.execute("END")


async def _swallowed_error(conn: Any) -> None:
    try:
        await conn.execute("select 1 / 0")
    except asyncpg.DivisionByZeroError:
        pass  # the transaction is aborted now; the body returns as if all went well


async def _close(conn: Any) -> None:
    await conn.close()


BREAKERS = {
    "commit-then-raise": _commit_then_raise,
    "commit-and-return": _commit,
    "rollback-and-return": _rollback,
    "commit-begin-and-return": _commit_begin,
}
SIBLING_BREAKERS = {
    "commit-and-chain": _commit_and_chain,
    "end": _end,
    "aborted-by-swallowed-error": _swallowed_error,
    "connection-closed": _close,
}


async def _run_breaker(db_url: str, breaker: Any) -> None:
    await _create_rows_table(db_url)
    app = asyncflow.AsyncFlow(db_url, recovery_interval_seconds=0.2)

    @app.transaction(name="breaks")
    async def breaks() -> str:
        conn = asyncflow.connection()
        await conn.execute("insert into rows values ($1, 'body')", asyncflow.workflow_id())
        await breaker(conn)
        return "returned"

    @app.workflow()
    async def wf() -> str:
        try:
            return await breaks()
        except Exception as exc:
            return f"{type(exc).__module__}.{type(exc).__name__}"

    async with asyncio.timeout(WEDGE), app:
        outcome = await (await app.start_workflow(wf, workflow_id="b")).get_result()
        steps = await app.list_workflow_steps("b")
    assert await _rows(db_url) == [], "the body's row was committed"
    assert not [s for s in steps if s.name == "breaks" and s.error is None], (
        "the journal records a success")
    assert outcome.startswith("asyncflow") and outcome.endswith(".TransactionStateError"), outcome
    error = getattr(asyncflow, "TransactionStateError", None)
    assert error is not None and issubclass(error, asyncflow.AsyncFlowError)


@pytest.mark.parametrize("case", list(BREAKERS))
async def test_item12_transaction_body_breaking_its_transaction_fails_cleanly(db_url, case):
    await _run_breaker(db_url, BREAKERS[case])


@pytest.mark.parametrize("case", list(SIBLING_BREAKERS))
async def test_item12_sibling_transaction_body_breaking_its_transaction_fails_cleanly(
        db_url, case):
    await _run_breaker(db_url, SIBLING_BREAKERS[case])
