"""Integers of any size round-trip exactly through every stored value, and the common path is
untouched (orjson's text, no marker)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from clilib import cli, cli_json

import asyncflow
from asyncflow import _codec

BIG = 2**64  # the first integer orjson refuses
HUGE = -(3**200)
ENORMOUS = 7 * 10**5000 + 1  # past Python's default int/str conversion limit (4300 digits)
NESTED = {"a": [1, BIG, {"b": [HUGE, 2.5, "x", None, True]}], "c": (BIG + 1, -BIG)}
NESTED_BACK = {"a": [1, BIG, {"b": [HUGE, 2.5, "x", None, True]}], "c": [BIG + 1, -BIG]}


def test_codec_round_trips_and_marks_only_big_values():
    for value in (BIG, -(2**63) - 1, HUGE, ENORMOUS, [ENORMOUS, -ENORMOUS], NESTED):
        text = _codec.dumps(value)
        assert text.startswith(" ") and json.loads(text, parse_int=len) is not None  # valid JSON
        back = _codec.loads(text)
        assert back == (NESTED_BACK if value is NESTED else value)
        assert _codec.loads(_codec.dumps(back)) == back
    # The largest integers orjson writes itself keep orjson's text: no marker.
    for value in (2**64 - 1, -(2**63), {"n": [2**63, 1.5]}):
        text = _codec.dumps(value)
        assert not text.startswith(" ") and _codec.loads(text) == value
    # orjson alone would lose precision silently: the marker is what prevents it.
    assert _codec.loads(_codec.dumps(BIG + 1)) == BIG + 1
    assert int(json.loads(_codec.dumps(BIG + 1).strip())) == BIG + 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([BIG, {1, object()}], "not JSON-serializable"),
        ({"n": BIG, (1, 2): "tuple key"}, "Dict key must be str"),
        ([BIG, float("nan")], "NaN or Infinity"),
        ([BIG, "lone \ud800"], "surrogates"),
        ([BIG, Decimal("NaN")], "NaN or Infinity"),
    ],
    ids=["set-of-object", "tuple-key", "nan", "surrogate", "decimal-nan"],
)
def test_big_integers_do_not_let_other_bad_values_through(value, message):
    with pytest.raises(asyncflow.SerializationError, match=message):
        _codec.dumps(value)


def test_big_values_are_nested_no_deeper_than_orjson_allows():
    value: object = BIG
    for _ in range(254):
        value = [value]
    assert _codec.loads(_codec.dumps(value)) == value
    with pytest.raises(asyncflow.SerializationError, match="Recursion"):
        _codec.dumps([value])


@pytest.mark.slow  # encodes a list of the size limit: CPU-bound
def test_big_values_obey_the_size_limit():
    too_big = [BIG] * (asyncflow.MAX_VALUE_BYTES // 20 + 1)
    with pytest.raises(asyncflow.ValueTooLargeError, match="limit is"):
        _codec.dumps(too_big, "the list")


async def test_big_integers_through_the_engine(make_app, db_url, conn):
    app = make_app(executor_id="big-ints")

    @app.step()
    async def square(n: int) -> int:
        return n * n

    @app.workflow()
    async def child(n: int) -> dict[str, object]:
        return {"child": n + 1}

    @app.workflow()
    async def big(n: int, *, nested: dict[str, object]) -> dict[str, object]:
        squared = await square(n)
        await asyncflow.set_event("squared", squared)
        await asyncflow.write_stream("numbers", n)
        await asyncflow.write_stream("numbers", nested)
        message = await asyncflow.recv("in", timeout_seconds=60)
        await asyncflow.send(asyncflow.workflow_id(), [message, -message], "self")
        echoed = await asyncflow.recv("self", timeout_seconds=60)
        got = await asyncflow.get_event(asyncflow.workflow_id(), "squared")
        await asyncflow.write_stream("numbers", echoed)
        await asyncflow.close_stream("numbers")
        return {"n": n, "squared": got, "message": message, "child": await child(HUGE),
                "nested": nested}

    async with app:
        handle = await app.start_workflow(big, BIG, nested=NESTED, workflow_id="big")
        assert await app.get_event("big", "squared", timeout_seconds=30) == BIG * BIG
        await app._waits.wait_for_count(1)  # parked in recv("in")
    # The workflow stays PENDING; the next launch replays its journal (the step's big result
    # comes back from its checkpoint) and continues.
    assert await conn.fetchval("select status from asyncflow.workflows where workflow_id='big'"
                               ) == "PENDING"
    async with app, asyncflow.Client(db_url) as client:
        await client.send("big", ENORMOUS, "in")
        result = await handle.get_result(timeout_seconds=60)
        assert result == {"n": BIG, "squared": BIG * BIG, "message": ENORMOUS,
                          "child": {"child": HUGE + 1}, "nested": NESTED_BACK}
        assert await (await client.retrieve_workflow("big")).get_result() == result
        assert await client.get_event("big", "squared") == BIG * BIG
        assert await app.get_all_events("big") == {"squared": BIG * BIG}
        expected = [BIG, NESTED_BACK, [ENORMOUS, -ENORMOUS]]
        assert [v async for v in app.read_stream("big", "numbers")] == expected
        assert [v async for _, v in client.stream_entries("big", "numbers")] == expected
        assert (await asyncflow.stream_snapshot(client, "big", "numbers")).values == expected
    # What was stored: marked texts for big values only; the square step ran once.
    steps = await conn.fetch("select name, output from asyncflow.operations "
                             "where workflow_id='big' order by function_id")
    assert [s["name"] for s in steps].count(square.__qualname__) == 1
    inputs = await conn.fetchval("select inputs from asyncflow.workflows where workflow_id='big'")
    assert inputs.startswith(" ")
    small = await conn.fetchval(
        "select value from asyncflow.streams where workflow_id='big' and \"offset\" = 0")
    assert small.startswith(" ")  # BIG itself


async def test_small_values_keep_the_fast_path(make_app, conn):
    app = make_app()

    @app.workflow()
    async def small(n: int) -> list[int]:
        await asyncflow.set_event("e", {"n": n})
        return [n, 2**63]

    async with app:
        assert await small(5) == [5, 2**63]
    texts = [await conn.fetchval("select inputs from asyncflow.workflows"),
             await conn.fetchval("select output from asyncflow.workflows"),
             await conn.fetchval("select value from asyncflow.events")]
    assert texts == ['{"args":[5],"kwargs":{}}', "[5,9223372036854775808]", '{"n":5}']


@pytest.mark.slow
async def test_cli_sends_and_shows_big_integers_exactly(make_app, db_url):
    app = make_app()

    @app.workflow()
    async def echo() -> object:
        message = await asyncflow.recv("go", timeout_seconds=60)
        await asyncflow.set_event("got", message)
        return message

    async with app:
        handle = await app.start_workflow(echo, workflow_id="echo")
        text = json.dumps({"n": HUGE, "list": [BIG, 1]})
        code, _, err = await cli(db_url, "send", "echo", text, "--topic", "go")
        assert code == 0, err
        assert await handle.get_result(timeout_seconds=30) == {"n": HUGE, "list": [BIG, 1]}
        assert (await cli_json(db_url, "workflow", "get", "echo"))["output"] == {
            "n": HUGE, "list": [BIG, 1]}
        code, out, err = await cli(db_url, "event", "get", "echo", "got")
        assert code == 0 and json.loads(out) == {"n": HUGE, "list": [BIG, 1]}, err
        code, out, _ = await cli(db_url, "workflow", "get", "echo")
        assert str(HUGE) in out
        # Not JSON: NaN is refused at the command line like any malformed message.
        code, _, err = await cli(db_url, "send", "echo", "NaN")
        assert code == 2 and "not valid JSON" in err
