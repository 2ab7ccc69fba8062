"""Bad input: each raises a typed, clear error at the call, writes nothing, and the app keeps
working afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import math
import random

import orjson
import pytest

import asyncflow

TABLES = ("workflows", "operations", "messages", "message_keys", "events", "streams")


async def counts(conn) -> dict[str, int]:
    return {t: await conn.fetchval(f"select count(*) from asyncflow.{t}") for t in TABLES}


@dataclasses.dataclass
class Point:
    x: object


# Values with no JSON form. (Sets, bytes, dataclasses, datetimes and int keys are stored:
# docs/guide.md, Values.)
NOT_JSON = [
    {1, object()},
    object(),
    decimal.Decimal("NaN"),
    [datetime.timedelta(1), decimal.Decimal("Infinity")],
    float("nan"),
    [1, float("inf")],
    {"deep": [{"x": -math.inf}]},
    {(1, 2): "tuple key"},
    Point(object()),
    Point(float("nan")),
    "lone \ud800 surrogate",
    lambda: None,
]


async def test_non_json_values_are_refused_everywhere(make_app, db_url, conn):
    app = make_app()
    seen: list[str] = []

    @app.step()
    async def step_offers(bad: int) -> None:
        for value in NOT_JSON:
            for call in (lambda v: asyncflow.set_event("k", v),
                         lambda v: asyncflow.write_stream("k", v),
                         lambda v: asyncflow.send(asyncflow.workflow_id(), v)):
                try:
                    await call(value)
                except asyncflow.SerializationError as exc:
                    seen.append(type(exc).__name__)

    @app.workflow()
    async def offers() -> str:
        for value in NOT_JSON:
            for call in (lambda v: asyncflow.set_event("k", v),
                         lambda v: asyncflow.write_stream("k", v),
                         lambda v: asyncflow.send(asyncflow.workflow_id(), v)):
                try:
                    await call(value)
                except asyncflow.SerializationError as exc:
                    assert "JSON" in str(exc) or "NaN" in str(exc)
                    seen.append(type(exc).__name__)
        await step_offers(0)
        # Nothing was reserved by the refused calls: this is operation #1 (after the step).
        await asyncflow.set_event("fine", True)
        return "still fine"

    @app.workflow()
    async def plain(x: object) -> object:
        return x

    async with app, asyncflow.Client(db_url) as client:
        target = await app.start_workflow(plain, 1, workflow_id="target")
        await target.get_result()
        before = await counts(conn)
        for value in NOT_JSON:
            with pytest.raises(asyncflow.SerializationError, match="JSON"):
                await app.start_workflow(plain, value)
            with pytest.raises(asyncflow.SerializationError, match="JSON"):
                await app.start_workflow(plain, x=value)
            for sender in (app, client):
                with pytest.raises(asyncflow.SerializationError):
                    await sender.send("target", value)
        assert await counts(conn) == before
        # Inside a workflow and a step: raised at the call, nothing journaled or written.
        h = await app.start_workflow(offers, workflow_id="offers")
        assert await h.get_result(timeout_seconds=30) == "still fine"
        assert seen == ["SerializationError"] * (2 * 3 * len(NOT_JSON))
        steps = await app.list_workflow_steps("offers")
        assert [(s.function_id, s.name) for s in steps] == [
            (0, "test_non_json_values_are_refused_everywhere.<locals>.step_offers"),
            (1, "asyncflow.set_event")]
        assert await app.get_all_events("offers") == {"fine": True}
        assert await conn.fetchval("select count(*) from asyncflow.messages") == 0
        assert await conn.fetchval("select count(*) from asyncflow.streams") == 0
        # Unicode that is valid round-trips exactly, including NUL inside JSON strings.
        odd = {"s": "ü🎉\x00'\";--\n", "n": [1.5, -0.0, 10**18], "e": ""}
        assert await (await app.start_workflow(plain, odd)).get_result() == odd


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({1, object()}, "not JSON-serializable"),
        (float("nan"), "NaN or Infinity"),
        (Point(decimal.Decimal("NaN")), "result.x: Decimal"),
        ("x" * (asyncflow.MAX_VALUE_BYTES + 1), "limit is"),
    ],
    ids=["set", "nan", "decimal-nan", "too-large"],
)
async def test_unserializable_result_marks_the_workflow_error(make_app, result, message):
    app = make_app()

    @app.workflow()
    async def returns() -> object:
        return result

    @app.workflow()
    async def ok() -> str:
        return "ok"

    async with app:
        handle = await app.start_workflow(returns, workflow_id="r")
        with pytest.raises(asyncflow.SerializationError, match=message):
            await handle.get_result(timeout_seconds=10)
        status = await handle.get_status()
        assert status.status == "ERROR"
        assert "the result of workflow" in status.error and message in status.error
        assert await ok() == "ok"


async def test_oversized_values_are_refused_without_a_memory_blow_up(db_url, conn, procs):
    """A 100 MB value offered as arguments, message, event, stream value and result: refused
    with ValueTooLargeError (the result: the workflow is ERROR), nothing stored, and the
    process's memory grows by about one encoding of the value, no more."""
    proc = await procs("fault_bigvalue.py", db_url)
    lines = [await proc.expect("REJECTED") for _ in range(6)]
    assert all("ValueTooLargeError" in line for line in lines), lines
    assert lines[-1].endswith("ERROR")
    growth = int((await proc.expect("PEAK_GROWTH_MB")).split()[1])
    assert growth < 160, f"peak memory grew by {growth} MB for a 100 MB value"
    assert await proc.wait() == 0
    assert await conn.fetchval(
        "select max(length(inputs) + coalesce(length(output), 0)) from asyncflow.workflows"
    ) < 1000
    for table in ("messages", "events", "streams"):
        assert await conn.fetchval(f"select count(*) from asyncflow.{table}") == 0


# Stored and matched exactly (as ids, topics, event keys, stream keys, idempotency keys).
ODD_NAMES = [
    "plain",
    "'; DROP TABLE asyncflow.workflows; --",
    '"double" and \'single\' quotes',
    "semi;colon -- comment /* block */",
    "new\nline\r\nand\ttab",
    "$1 %s {s} {} %(x)s \\x00 \\",
    "ü🎉 日本語 \u202e right-to-left",
    " leading and trailing ",
    "%",
    "_",
    "x" * asyncflow.MAX_ID_LENGTH,
    "🎉" * (asyncflow.MAX_ID_LENGTH // 4),
]

# Refused with InvalidArgumentError, before anything is written.
BAD_NAMES = [
    "nul\x00inside",
    "x" * (asyncflow.MAX_ID_LENGTH + 1),
    "é" * (asyncflow.MAX_ID_LENGTH // 2 + 1),  # 1002 bytes of UTF-8
    "".join(chr(random.Random(1).randint(0x4E00, 0x9FFF)) for _ in range(3400)),  # ~10 kB
    "lone \udc80 surrogate",
]


async def test_odd_ids_topics_and_keys_round_trip_exactly(make_app, db_url, conn):
    app = make_app()

    @app.workflow()
    async def echo(names: list[str]) -> list[object]:
        got = []
        for name in names:
            got.append(await asyncflow.recv(name, timeout_seconds=30))
            await asyncflow.set_event(name, name)
            await asyncflow.write_stream(name, name)
        return got

    async with app, asyncflow.Client(db_url) as client:
        for wid in ODD_NAMES:
            handle = await app.start_workflow(echo, ODD_NAMES, workflow_id=wid)
            for name in reversed(ODD_NAMES):  # out of order: each recv matches its own topic
                await client.send(wid, name, name, idempotency_key=name)
                await client.send(wid, name, name, idempotency_key=name)  # deduplicated
            assert await handle.get_result(timeout_seconds=30) == ODD_NAMES
            assert (await client.retrieve_workflow(wid)).workflow_id == wid
            events = await client.get_all_events(wid)
            assert events == {name: name for name in ODD_NAMES}
            for name in ODD_NAMES:
                assert await client.get_event(wid, name, 0) == name
                assert [v async for v in client.read_stream(wid, name)] == [name]
        stored = [r["workflow_id"] for r in await conn.fetch(
            "select workflow_id from asyncflow.workflows order by created_at")]
        assert stored == ODD_NAMES
        # Near misses never match: no pattern matching, no case folding, no trimming.
        assert await client.get_event(ODD_NAMES[0], "PLAIN", 0) is None
        assert await client.get_event(ODD_NAMES[0], "plain ", 0) is None
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await client.retrieve_workflow("pla%")
        assert await conn.fetchval("select count(*) from asyncflow.messages") == 0


def id_calls(core, bad):
    """Every call taking a workflow id, with ``bad`` as the id."""
    return [
        lambda: core.send(bad, 1),
        lambda: core.retrieve_workflow(bad),
        lambda: core.get_workflow_status(bad),
        lambda: core.list_workflow_steps(bad),
        lambda: core.get_all_events(bad),
        lambda: core.get_event(bad, "k", 0),
        lambda: core.cancel_workflow(bad),
        lambda: core.resume_workflow(bad),
        lambda: core._handle(bad).get_result(1),
        lambda: core._handle(bad).get_status(),
        lambda: anext(core.read_stream(bad, "k")),
    ]


def key_calls(core, bad):
    """Every call taking a topic or key (of workflow "t"), with ``bad`` as the topic or key."""
    return [
        lambda: core.send("t", 1, bad),
        lambda: core.send("t", 1, "topic", idempotency_key=bad),
        lambda: core.get_event("t", bad, 0),
        lambda: anext(core.read_stream("t", bad)),
    ]


async def test_bad_ids_topics_and_keys_are_refused(make_app, db_url, conn):
    bad_ids = [*BAD_NAMES, "", 42, b"bytes", None, ["list"]]
    bad_keys = [*BAD_NAMES, 42, b"bytes", ["list"]]  # ("" and None are valid topics)
    app = make_app()

    @app.workflow()
    async def target() -> str:
        return "target"

    @app.workflow()
    async def inside(i: int) -> str:
        # Raised at the call, inside the workflow, before an operation is reserved.
        bad = BAD_NAMES[i]
        for call in (lambda: asyncflow.recv(bad),
                     lambda: asyncflow.set_event(bad, 1),
                     lambda: asyncflow.write_stream(bad, 1),
                     lambda: asyncflow.close_stream(bad),
                     lambda: asyncflow.send(bad, 1),
                     lambda: asyncflow.send("t", 1, bad),
                     lambda: asyncflow.get_event(bad, "k"),
                     lambda: asyncflow.get_event("t", bad)):
            with pytest.raises(asyncflow.InvalidArgumentError):
                call()
        return "ok"

    async with app, asyncflow.Client(db_url) as client:
        await (await app.start_workflow(target, workflow_id="t")).get_result()
        before = await counts(conn)
        for core in (app, client):
            for bad in bad_ids:
                for call in id_calls(core, bad):
                    with pytest.raises(asyncflow.InvalidArgumentError):
                        await call()
            for bad in bad_keys:
                for call in key_calls(core, bad):
                    with pytest.raises(asyncflow.InvalidArgumentError):
                        await call()
        for bad in bad_ids:
            if bad is not None:  # None: a generated id
                with pytest.raises(asyncflow.InvalidArgumentError):
                    await app.start_workflow(target, workflow_id=bad)
        with pytest.raises(asyncflow.InvalidArgumentError):
            asyncflow.AsyncFlow(db_url, executor_id="bad\x00executor")
        assert await counts(conn) == before
        for i in range(len(BAD_NAMES)):
            assert await (await app.start_workflow(inside, i)).get_result(10) == "ok"
        assert await conn.fetchval("select count(*) from asyncflow.operations") == 0


@pytest.mark.parametrize("bad", [-1, -0.001, float("nan"), "soon", True, None, [1]])
async def test_bad_timeouts_are_refused_at_the_call(make_app, db_url, conn, bad):
    app = make_app()

    @app.workflow()
    async def waits(kind: str) -> str:
        with pytest.raises(asyncflow.InvalidArgumentError):
            if kind == "recv":
                asyncflow.recv("t", timeout_seconds=bad)
            elif kind == "get_event":
                asyncflow.get_event("w", "k", timeout_seconds=bad)
            else:
                asyncflow.sleep(bad)
        return kind

    async with app, asyncflow.Client(db_url) as client:
        w = await app.start_workflow(waits, "recv", workflow_id="w")
        assert await w.get_result(10) == "recv"
        before = await counts(conn)
        for core in (app, client):
            with pytest.raises(asyncflow.InvalidArgumentError):
                await core.get_event("w", "k", timeout_seconds=bad)
            if bad is not None:  # None: no timeout
                with pytest.raises(asyncflow.InvalidArgumentError):
                    await (await core.retrieve_workflow("w")).get_result(timeout_seconds=bad)
        for kind in ("get_event", "sleep"):
            assert await (await app.start_workflow(waits, kind)).get_result(10) == kind
        after = await counts(conn)
        assert after["operations"] == before["operations"]
        assert after["events"] == before["events"] == 0
    with pytest.raises(asyncflow.InvalidArgumentError):
        asyncflow.AsyncFlow(db_url, recovery_interval_seconds=bad)


async def test_huge_timeouts_are_capped_and_still_woken(make_app, db_url):
    app = make_app()

    @app.workflow()
    async def patient() -> list[object]:
        got = await asyncflow.recv("t", timeout_seconds=math.inf)
        await asyncflow.set_event("got", got)
        return [got, await asyncflow.recv("u", timeout_seconds=1e300)]

    async with app, asyncflow.Client(db_url) as client:
        handle = await app.start_workflow(patient, workflow_id="p")
        waiter = asyncio.ensure_future(client.get_event("p", "got", timeout_seconds=1e308))
        await client.send("p", 1, "t")
        assert await waiter == 1
        await client.send("p", 2, "u")
        assert await handle.get_result(timeout_seconds=math.inf) == [1, 2]
        steps = await app.list_workflow_steps("p")
        assert all(s.completed for s in steps)


async def test_workflow_only_calls_outside_a_workflow(make_app):
    app = make_app()

    @app.step()
    async def in_step() -> str:
        for topic in (None, "t"):
            with pytest.raises(asyncflow.NotInWorkflowError, match="not from inside a step"):
                asyncflow.recv(topic)
        return "step ok"

    @app.workflow()
    async def wf() -> str:
        return await in_step()

    async with app:
        for call in (
            lambda: asyncflow.recv(),
            lambda: asyncflow.set_event("k", 1),
            lambda: asyncflow.write_stream("k", 1),
            lambda: asyncflow.close_stream("k"),
            lambda: asyncflow.send("x", 1),
            lambda: asyncflow.get_event("x", "k"),
            lambda: asyncflow.get_all_events("x"),
            lambda: asyncflow.read_stream("x", "k"),
            asyncflow.workflow_id,
            asyncflow.connection,
        ):
            with pytest.raises(asyncflow.NotInWorkflowError):
                result = call()
                if asyncio.iscoroutine(result):
                    await result
        assert await wf() == "step ok"


async def test_unknown_workflow_ids_everywhere(make_app, db_url, conn):
    app = make_app()

    @app.workflow()
    async def asks() -> list[str]:
        caught = []
        for call in (lambda: asyncflow.send("ghost", 1),
                     lambda: asyncflow.send("ghost", 1, idempotency_key="k"),
                     lambda: asyncflow.get_event("ghost", "k", timeout_seconds=1),
                     lambda: asyncflow.get_all_events("ghost")):
            try:
                await call()
            except asyncflow.WorkflowNotFoundError as exc:
                caught.append(str(exc))
        return caught

    async with app, asyncflow.Client(db_url) as client:
        for core in (app, client):
            calls = [*id_calls(core, "ghost"),
                     lambda: core.send("ghost", 1, idempotency_key="k"),  # noqa: B023
                     lambda: core.get_event("ghost", "k", 5)]  # noqa: B023
            for call in calls:
                with pytest.raises(asyncflow.WorkflowNotFoundError, match=r"ghost|destination"):
                    await call()
        assert await counts(conn) == dict.fromkeys(TABLES, 0)
        caught = await (await app.start_workflow(asks, workflow_id="asks")).get_result(10)
        assert len(caught) == 4
        assert await conn.fetchval("select count(*) from asyncflow.messages") == 0


async def test_calls_before_launch_and_after_shutdown(make_app, db_url):
    app = make_app()

    @app.workflow()
    async def wf() -> str:
        return await asyncflow.recv(timeout_seconds=3600)

    def every_call(core: asyncflow.Client | asyncflow.AsyncFlow):
        calls = [*id_calls(core, "x"), *key_calls(core, "k"), core.list_workflows]
        if isinstance(core, asyncflow.AsyncFlow):
            calls.append(lambda: core.start_workflow(wf))
        return calls

    client = asyncflow.Client(db_url)
    for core in (app, client):
        for call in every_call(core):
            with pytest.raises(asyncflow.NotLaunchedError, match=r"not running"):
                await call()
        with pytest.raises(asyncflow.NotLaunchedError):
            core.listener  # noqa: B018
    async with app:
        handle = await app.start_workflow(wf, workflow_id="w")
        async with client:
            # Waiters parked outside the task group when shutdown comes are told so.
            parked = asyncio.ensure_future(client.get_event("w", "never", 3600))
            await client._waits.wait_for_count(1)
        with pytest.raises(asyncflow.NotLaunchedError):
            await parked
    for core in (app, client):
        for call in every_call(core):
            with pytest.raises(asyncflow.NotLaunchedError):
                await call()
    with pytest.raises(asyncflow.NotLaunchedError):
        await handle.get_result(1)
    # Both launch again and carry on where they were.
    async with app, client:
        await client.send("w", "again")
        assert await handle.get_result(10) == "again"
        assert orjson.loads(orjson.dumps((await handle.get_status()).status)) == "SUCCESS"
