"""Typed values: dataclasses, pydantic models, datetimes, UUID, Decimal, bytes, Enum, tuple, set,
TypedDict and NamedTuple are stored as plain JSON and read back by annotation — workflow
arguments and results, step results, and the waits' ``type=``. A replay gives the same types as
the first run, values stored as plain JSON before still decode, what cannot be stored names its
path, and what no longer fits its annotation raises ``DecodeError`` naming the field.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypedDict
from zoneinfo import ZoneInfo

import orjson
import pydantic
import pytest
from conftest import ROOT

import asyncflow
from asyncflow import _codec
from asyncflow._decode import decoder
from asyncflow._signature import Signature

PARIS = ZoneInfo("Europe/Paris")


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Size(enum.StrEnum):
    S = "s"
    L = "l"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Pair(enum.Enum):
    ONE_TWO = (1, 2)


class Point(NamedTuple):
    x: int
    y: float = 0.0


class Meta(TypedDict):
    source: str
    seen: datetime.date


@dataclasses.dataclass(frozen=True)
class Item:
    sku: str
    price: Decimal
    qty: int = 1


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: datetime.datetime
    items: list[Item]
    color: Color
    size: Size
    level: Level
    where: Point
    meta: Meta
    blob: bytes
    ttl: datetime.timedelta
    opens: datetime.time
    day: datetime.date
    tags: frozenset[str]
    codes: set[int]
    pair: tuple[int, str]
    by_level: dict[Level, Decimal]
    note: str | None = None
    parent: Order | None = None


class Customer(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True)  # JSON mode still reads ISO strings

    name: str
    since: datetime.datetime
    balance: Decimal
    tags: list[str] = []


def sample_order() -> Order:
    return Order(
        id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        placed=datetime.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=PARIS),
        items=[Item("a", Decimal("1.10")), Item("b", Decimal("1E+3"), 2)],
        color=Color.BLUE, size=Size.L, level=Level.HIGH, where=Point(3, 4.5),
        meta={"source": "web", "seen": datetime.date(2024, 1, 2)},
        blob=b"\x00\xffbin", ttl=datetime.timedelta(days=-1, microseconds=7),
        opens=datetime.time(9, 30, tzinfo=datetime.UTC),
        day=datetime.date(2024, 2, 29), tags=frozenset({"x", "y"}), codes={3, 1, 2},
        pair=(7, "seven"), by_level={Level.LOW: Decimal("0.5")}, note=None,
        parent=Order(
            id=uuid.UUID(int=1), placed=datetime.datetime(2020, 1, 1), items=[],
            color=Color.RED, size=Size.S, level=Level.LOW, where=Point(0),
            meta={"source": "x", "seen": datetime.date(2020, 1, 1)}, blob=b"",
            ttl=datetime.timedelta(0), opens=datetime.time(0), day=datetime.date(2020, 1, 1),
            tags=frozenset(), codes=set(), pair=(0, ""), by_level={}),
    )


def round_trip(value: Any, annotation: Any) -> Any:
    return decoder(annotation)(_codec.loads(_codec.dumps(value)), "value")


# -- the encoding, without a database ---------------------------------------------------------


def test_every_supported_type_round_trips_exactly_with_its_type():
    order = sample_order()
    back = round_trip(order, Order)
    assert back == order
    assert repr(back) == repr(order)  # the same types all the way down (Decimal('1E+3') too)
    assert back.placed.tzinfo == PARIS and back.placed.fold == 1  # the zone, not just an offset
    assert type(back.where) is Point and type(back.size) is Size and type(back.pair) is tuple
    customer = Customer(name="Ada", since=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
                        balance=Decimal("10.25"), tags=["vip"])
    assert round_trip([customer], list[Customer]) == [customer]
    assert round_trip({"a": customer}, dict[str, Customer | None])["a"] == customer


def test_the_stored_form_is_plain_readable_json():
    text = _codec.dumps(Item("a", Decimal("1.10")))
    assert orjson.loads(text) == {"sku": "a", "price": "1.10", "qty": 1}
    stored = orjson.loads(_codec.dumps([
        datetime.datetime(2024, 5, 1, 12, tzinfo=PARIS), datetime.timedelta(hours=1, seconds=1.5),
        uuid.UUID(int=255), b"hi", Color.RED, Level.HIGH, {2, 1}, Point(1, 2.0)]))
    assert stored == ["2024-05-01T12:00:00+02:00[Europe/Paris]", "PT1H1.5S",
                      "00000000-0000-0000-0000-0000000000ff", "aGk=", "red", 2, [1, 2], [1, 2.0]]


@pytest.mark.parametrize(("stored", "annotation", "expected"), [
    (9.99, Decimal, Decimal("9.99")),
    (12, Decimal, Decimal(12)),
    ("2024-05-01T12:00:00+02:00", datetime.datetime,
     datetime.datetime(2024, 5, 1, 10, tzinfo=datetime.UTC)),
    (90, datetime.timedelta, datetime.timedelta(seconds=90)),
    (1.5, datetime.timedelta, datetime.timedelta(seconds=1.5)),
    ({"x": 1}, Point, Point(1, 0.0)),
    ([1, 2], tuple[int, ...], (1, 2)),
    ([1, 2], tuple, (1, 2)),
    ([[1, 2]], list[Pair], [Pair.ONE_TWO]),
    (3, float, 3.0),
    ("red", Literal["red", "blue"], "red"),
    (None, Item | None, None),
], ids=lambda v: type(v).__name__)
def test_values_stored_as_plain_json_before_still_decode(stored, annotation, expected):
    value = decoder(annotation)(stored, "value")
    assert value == expected and type(value) is type(expected)


def test_an_unencodable_value_names_its_path_and_type():
    @dataclasses.dataclass
    class Holder:
        items: list[Item]

    order = Holder([Item("a", Decimal(1)), Item("b", Decimal(2)), Item("c", Decimal(3)),
                    Item("d", Decimal("NaN"))])
    with pytest.raises(asyncflow.SerializationError,
                       match=r"order\.items\[3\]\.price: Decimal\('NaN'\)"):
        _codec.dumps(order, "the order", "order")
    with pytest.raises(asyncflow.SerializationError, match=r"value\['a'\]\[1\]: <object"):
        _codec.dumps({"a": [1, object()]})
    with pytest.raises(asyncflow.SerializationError, match=r"value\.where\.y: nan"):
        _codec.dumps(dataclasses.replace(sample_order(), where=Point(1, float("nan"))))


def test_workflow_arguments_name_the_parameter():
    async def place(customer: str, order: Order) -> None: ...

    broken = dataclasses.replace(sample_order(), items=[Item("a", Decimal("Infinity"))])
    with pytest.raises(asyncflow.SerializationError, match=r"order\.items\[0\]\.price"):
        Signature(place, "workflow 'place'").encode_inputs(("ada",), {"order": broken})
    with pytest.raises(asyncflow.SerializationError, match=r"customer: <object"):
        Signature(place, "workflow 'place'").encode_inputs((object(), None), {})


@dataclasses.dataclass
class Watched:
    price: Decimal

    def __post_init__(self) -> None:
        if self.price < 0:
            raise ValueError("a price is never negative")


@dataclasses.dataclass
class Parent:
    children: list[Watched]
    when: datetime.datetime


def test_a_value_that_no_longer_fits_names_the_field_and_builds_nothing():
    read = decoder(Parent)
    cases = [
        ({"children": [{"price": "1"}, {"price": "abc"}], "when": "2024-01-01"},
         "parent.children[1].price", "expected Decimal"),
        ({"children": [{"price": "1"}]}, "parent.when", "missing"),
        ({"children": [{"price": "1"}], "when": "yesterday"}, "parent.when",
         "expected datetime"),
        ({"children": {"price": "1"}, "when": "2024-01-01"}, "parent.children", "expected list"),
        ({"children": [{"price": "-1"}], "when": "2024-01-01"}, "parent.children[0]",
         "Watched refused the stored values .ValueError: a price is never negative"),
    ]
    for stored, path, message in cases:
        with pytest.raises(asyncflow.DecodeError, match=message) as caught:
            read(stored, "parent")
        assert caught.value.path == path and str(caught.value).startswith(path)
        assert isinstance(caught.value, asyncflow.SerializationError)
    with pytest.raises(asyncflow.DecodeError, match=r"customer\.since"):
        decoder(Customer)({"name": "x", "since": "never", "balance": "1"}, "customer")
    # Extra keys (a field removed since) are ignored; defaults fill fields added since.
    assert decoder(Item)({"sku": "a", "price": "2", "gone": 1}, "v") == Item("a", Decimal(2))


def test_plain_json_functions_have_no_decoders_and_encode_natively(monkeypatch):
    """The hot path: a function annotated with plain JSON types only decodes nothing, and
    plain values never reach the typed encoder."""

    async def plain(a: int, b: str | None, c: list[dict[str, Any]], d, *rest: Any,
                    **more: float) -> dict[str, list[int]]: ...

    types = Signature(plain, "workflow 'plain'")
    assert not types.typed_inputs and types.result is None
    args, kwargs = [1, None, [], 4], {"x": 1.0}
    assert types.decode_inputs(args, kwargs) == (args, kwargs)

    def refuse(value: Any) -> Any:
        raise AssertionError(f"typed encoder called for {value!r}")

    monkeypatch.setattr(asyncflow._encode, "default", refuse)
    assert _codec.loads(_codec.dumps({"args": [1, "x", [{"k": 1.5}], None], "kwargs": {}}))


def test_typed_values_take_the_fast_path_unless_something_is_wrong(monkeypatch):
    """A typed value (None fields included) is encoded by orjson and the one-level hook; the
    path-naming walk runs only to report a value that cannot be stored (or for dict keys other
    than str, and integers past 64 bits)."""
    def refuse(value: Any, path: str = "value") -> Any:
        raise AssertionError("the walk ran")

    monkeypatch.setattr(asyncflow._encode, "to_plain", refuse)
    order = dataclasses.replace(sample_order(), by_level={})
    assert _codec.loads(_codec.dumps(order))["note"] is None
    with pytest.raises(AssertionError, match="the walk ran"):
        _codec.dumps(dataclasses.replace(order, where=Point(1, float("inf"))))


def test_annotations_naming_classes_defined_later_resolve_at_the_first_use():
    async def later(value: DefinedLater) -> DefinedLater: ...  # noqa: F821

    types = Signature(later, "workflow 'later'")
    assert not types.resolved  # DefinedLater does not exist yet at decoration
    globals()["DefinedLater"] = Item
    try:
        assert types.decode_inputs([{"sku": "a", "price": "1"}], {}) == (
            [Item("a", Decimal(1))], {})
        assert types.decode_result({"sku": "a", "price": "1"}) == Item("a", Decimal(1))
    finally:
        del globals()["DefinedLater"]


# -- in workflows ------------------------------------------------------------------------------


async def test_workflows_steps_and_waits_read_values_by_annotation(make_app, db_url):
    app = make_app()
    seen: dict[str, Any] = {}

    @app.step()
    async def price(order: Order) -> Decimal:
        seen["step_arg"] = order  # steps get the workflow's objects as they are
        return sum((item.price * item.qty for item in order.items), Decimal(0))

    @app.step()
    async def customer(name: str) -> Customer:
        return Customer(name=name, since=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
                        balance=Decimal("3.50"))

    @app.transaction()
    async def stamp(day: datetime.date) -> tuple[datetime.date, Size]:
        return day, Size.L

    @app.workflow()
    async def child(points: list[Point]) -> set[int]:
        return {p.x for p in points}

    @app.workflow()
    async def place(order: Order, *, when: datetime.date) -> tuple[Decimal, Customer, set[int]]:
        seen["order"], seen["when"] = order, when
        await asyncflow.set_event("order", order)
        await asyncflow.write_stream("items", order.items[0])
        await asyncflow.write_stream("items", order.items[1])
        await asyncflow.close_stream("items")
        total = await price(order)
        seen["total"] = total
        who = await customer("ada")
        seen["customer"] = who
        codes = await child([Point(5), Point(6, 1.0)])
        seen["stamp"] = await stamp(when)
        seen["message"] = await asyncflow.recv("item", type=Item)
        fired = await asyncflow.wait_first(asyncflow.message("item", type=Item),
                                           asyncflow.timer(60))
        seen["branch"] = fired.value
        seen["event"] = await asyncflow.get_event(asyncflow.workflow_id(), "order", type=Order)
        return total, who, codes

    order = sample_order()
    async with app, asyncflow.Client(db_url) as client:
        handle = await app.start_workflow(place, order, when=datetime.date(2025, 1, 1),
                                          workflow_id="place")
        assert await client.get_event("place", "order", type=Order) == order
        with pytest.raises(asyncflow.InvalidArgumentError, match="type= must be"):
            await client.get_event("place", "order", type="Order")
        assert await app.get_event("place", "order", timeout_seconds=5) == orjson.loads(
            _codec.dumps(order))  # without type=: plain JSON, as before
        read = [item async for item in client.read_stream("place", "items", type=Item)]
        assert read == order.items and all(type(i) is Item for i in read)
        watched = client.watch_event("place", "order", type=Order)
        assert await anext(watched) == order
        await watched.aclose()
        await client.send("place", Item("m", Decimal("0.1")), "item")
        await client.send("place", {"sku": "n", "price": "0.2"}, "item")  # plain JSON fits too
        total, who, codes = await handle.get_result(timeout_seconds=30)
        assert total == Decimal("2001.10") and type(total) is Decimal
        assert who.balance == Decimal("3.50") and isinstance(who, Customer)
        assert codes == {5, 6}
        assert seen["order"] == order and type(seen["when"]) is datetime.date
        assert seen["stamp"] == (datetime.date(2025, 1, 1), Size.L)
        assert type(seen["stamp"][1]) is Size
        assert seen["message"] == Item("m", Decimal("0.1"))
        assert seen["branch"] == Item("n", Decimal("0.2"))
        assert seen["event"] == order
        retrieved = await client.retrieve_workflow("place")
        assert await retrieved.get_result() == orjson.loads(
            _codec.dumps((total, who, codes)))  # no annotation known: plain JSON
        typed = await retrieved.get_result(type=tuple[Decimal, Customer, list[int]])
        assert typed == (total, who, [5, 6])
        fired = await client.wait_first(asyncflow.result(handle),
                                        asyncflow.event("place", "order", type=Order))
        assert fired.index == 0 and fired.value == (total, who, codes)  # the handle's type
        # A history replay decodes the same way and ends with the recorded result.
        seen.clear()
        [replayed] = await app.replay(["place"])
        assert replayed.outcome == "ok", replayed.detail
        assert seen["order"] == order and seen["message"] == Item("m", Decimal("0.1"))
        assert type(seen["total"]) is Decimal and isinstance(seen["customer"], Customer)
        # A queued workflow's handle is typed by its function too.
        queue = app.queue("values")
        queued = await queue.enqueue(child, [Point(9)])
        assert await queued.get_result(timeout_seconds=30) == {9}


async def test_arguments_that_do_not_fit_fail_at_the_start_and_write_nothing(make_app, conn):
    app = make_app()

    @app.workflow()
    async def takes(order: Order) -> None:
        return None

    @app.workflow()
    async def returns_bad() -> Item:
        return {"sku": "a"}  # type: ignore[return-value]  # no price: does not read back

    async with app:
        with pytest.raises(asyncflow.DecodeError, match=r"order\.id: missing"):
            await app.start_workflow(takes, {"placed": "2024-01-01"})
        assert await conn.fetchval("select count(*) from asyncflow.workflows") == 0
        handle = await app.start_workflow(returns_bad, workflow_id="bad")
        with pytest.raises(asyncflow.DecodeError, match=r"result\.price: missing"):
            await handle.get_result(timeout_seconds=30)
        assert (await handle.get_status()).status == "ERROR"


async def test_a_step_result_that_no_longer_fits_raises_decode_error_on_replay(make_app, db_url):
    """A journal written by plain-JSON code, replayed by code whose step now returns a
    dataclass: a field it lacks raises DecodeError in the workflow, naming it."""
    results: list[Any] = []
    stepped = asyncio.Event()

    def build(typed: bool) -> tuple[asyncflow.AsyncFlow, Any]:
        app = make_app(executor_id="fit", app_version="fit")

        if typed:
            @app.step(name="s")
            async def step() -> Item:
                raise AssertionError("replayed, never run")
        else:
            @app.step(name="s")
            async def step():  # type: ignore[no-untyped-def]
                return {"sku": "a", "price": None}

        @app.workflow(name="w")
        async def wf() -> str:
            try:
                results.append(await step())
            except asyncflow.DecodeError as exc:
                results.append(exc)
                return f"decode error at {exc.path}"
            stepped.set()
            await asyncflow.recv(timeout_seconds=3600)
            return "ok"

        return app, wf

    app, wf = build(typed=False)
    async with app:
        await app.start_workflow(wf, workflow_id="fit-1")
        async with asyncio.timeout(30):
            await stepped.wait()
    assert results == [{"sku": "a", "price": None}]
    app, wf = build(typed=True)
    async with app:
        handle = await app.retrieve_workflow("fit-1")
        assert await handle.get_result(timeout_seconds=30) == "decode error at result.price"
    assert isinstance(results[-1], asyncflow.DecodeError)
    assert "the result of step 's'" in str(results[-1])


# -- replay across a real crash ---------------------------------------------------------------


async def test_a_replayed_value_has_the_type_of_the_first_run(procs, db_url):
    async with asyncflow.Client(db_url) as client:
        first = await procs("values_worker.py", db_url, "values-exec", "typed")
        loaded = await first.expect("LOADED")
        await first.expect("WAITING pay")
        await client.send("checkout-1", {"amount": "12.30", "at": "2024-05-02T08:00:00+00:00"},
                          "pay")
        paid = await first.expect("PAID")
        await first.expect("WAITING finish")
        first.kill()
        await first.wait()
        assert first.lines.count("BODY") == 1
        assert "Order(id=UUID(" in loaded and "Decimal('9.99')" in loaded
        assert "<Status.NEW: 'new'>" in loaded and "datetime.date(2024, 6, 1)" in loaded
        assert "Payment(amount=Decimal('12.30')" in paid

        second = await procs("values_worker.py", db_url, "values-exec", "typed")
        assert await second.expect("LOADED") == loaded  # the step's result, replayed
        assert await second.expect("PAID") == paid  # the message, replayed
        await second.expect("WAITING finish")
        await client.send("checkout-1", None, "finish")
        result = await second.expect("RESULT")
        assert "BODY" not in second.lines
        order = loaded.removeprefix("LOADED ").removesuffix(" datetime.date(2024, 6, 1)")
        assert result == f"RESULT ({order}, {paid.removeprefix('PAID ')})"  # get_result typed


async def test_records_written_as_plain_json_decode_after_an_upgrade(procs, db_url):
    old = await procs("values_worker.py", db_url, "values-exec", "plain")
    loaded = await old.expect("LOADED")
    await old.expect("WAITING pay")
    old.kill()
    await old.wait()
    assert "{'id': '6f1c1c3e" in loaded and "'2024-06-01'" in loaded  # plain JSON then

    new = await procs("values_worker.py", db_url, "values-exec", "typed")
    upgraded = await new.expect("LOADED")
    assert "BODY" not in new.lines  # the step's plain record was decoded, not run again
    assert upgraded.startswith("LOADED Order(id=UUID('6f1c1c3e-2f5b-4c7e-9a53-0c4c1c0de001')")
    assert "lines=[Line(sku='a', price=Decimal('9.99'), qty=2)]" in upgraded
    assert "status=<Status.NEW: 'new'>, tags=frozenset({'gift'})" in upgraded
    assert "datetime.timezone(datetime.timedelta(seconds=7200))" in upgraded
    assert upgraded.endswith("datetime.date(2024, 6, 1)")


# -- typing ------------------------------------------------------------------------------------

TYPING = ROOT / "tests" / "typing"


def test_handles_are_typed_by_the_workflow_return_annotation(tmp_path: Path):
    """mypy --strict accepts tests/typing/check_handles.py (``assert_type`` on handles and
    waits) and rejects a copy that asserts the wrong type, so a typing regression fails."""
    wrong = tmp_path / "wrong_handles.py"
    wrong.write_text((TYPING / "check_handles.py").read_text().replace(
        "assert_type(result, Receipt)", "assert_type(result, int)"))
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
         str(tmp_path / "cache"), str(TYPING / "check_handles.py"), str(wrong)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert errors and all(line.startswith(str(wrong)) for line in errors), run.stdout
    assert len(errors) == 1 and "[assert-type]" in errors[0], run.stdout


def test_pydantic_is_not_needed():
    """Without pydantic installed, asyncflow imports and typed values work (pydantic is looked
    up only among modules already imported)."""
    code = (
        "import sys; sys.modules['pydantic'] = None\n"
        "import dataclasses, datetime\n"
        "from asyncflow import _codec\n"
        "from asyncflow._decode import decoder\n"
        "@dataclasses.dataclass\n"
        "class A:\n"
        "    when: datetime.date\n"
        "value = A(datetime.date(2024, 1, 2))\n"
        "assert decoder(A)(_codec.loads(_codec.dumps(value)), 'v') == value\n"
        "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.stdout.strip() == "ok", run.stderr
