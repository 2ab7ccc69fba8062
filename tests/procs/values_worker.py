"""The worker of tests/api/test_values.py: workflow ``checkout`` with typed values, killed and
relaunched by the test.

    values_worker.py URL EXECUTOR_ID MODE

``MODE`` is ``typed`` (the step and the workflow are annotated: dataclasses, Decimal, UUID,
datetime, date, Enum, frozenset) or ``plain`` (an older version of the same code, without
annotations, that stores plain JSON). Both versions share names and app version, so a
workflow started by one is recovered by the other.

Output lines (the test's clock): ``LAUNCHED``; ``BODY`` each time the step's body runs;
``LOADED <repr>`` after the step returns, ``PAID <repr>`` after the first message (both printed
again by every replay); ``WAITING <topic>`` before each receive; ``RESULT <repr>`` at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import sys
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncflow

URL, EXECUTOR, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
ORDER_ID = "6f1c1c3e-2f5b-4c7e-9a53-0c4c1c0de001"

app = asyncflow.AsyncFlow(URL, executor_id=EXECUTOR, app_version="values",
                          recovery_interval_seconds=0.2)


class Status(enum.StrEnum):
    NEW = "new"
    PAID = "paid"


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    price: Decimal
    qty: int = 1


@dataclasses.dataclass(frozen=True)
class Order:
    id: uuid.UUID
    placed: datetime.datetime
    lines: list[Line]
    status: Status
    tags: frozenset[str]


@dataclasses.dataclass(frozen=True)
class Payment:
    amount: Decimal
    at: datetime.datetime


if MODE == "typed":
    @app.step(name="load")
    async def load(order_id: str) -> Order:
        print("BODY", flush=True)
        return Order(uuid.UUID(order_id),
                     datetime.datetime(2024, 5, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris")),
                     [Line("a", Decimal("9.99"), 2)], Status.NEW, frozenset({"gift"}))

    @app.workflow(name="checkout")
    async def checkout(order_id: str, due: datetime.date) -> tuple[Order, Payment]:
        order = await load(order_id)
        print("LOADED", repr(order), repr(due), flush=True)
        print("WAITING pay", flush=True)
        payment = await asyncflow.recv("pay", type=Payment)
        print("PAID", repr(payment), flush=True)
        print("WAITING finish", flush=True)
        await asyncflow.recv("finish")
        assert payment is not None
        return order, payment
else:  # the same workflow as written before typed values: plain JSON in and out
    @app.step(name="load")
    async def load(order_id):  # type: ignore[no-untyped-def]
        print("BODY", flush=True)
        return {"id": order_id, "placed": "2024-05-01T12:00:00+02:00",
                "lines": [{"sku": "a", "price": 9.99, "qty": 2}], "status": "new",
                "tags": ["gift"]}

    @app.workflow(name="checkout")
    async def checkout(order_id, due):  # type: ignore[no-untyped-def]
        order = await load(order_id)
        print("LOADED", repr(order), repr(due), flush=True)
        print("WAITING pay", flush=True)
        payment = await asyncflow.recv("pay")
        print("PAID", repr(payment), flush=True)
        print("WAITING finish", flush=True)
        await asyncflow.recv("finish")
        return order, payment


async def main() -> None:
    async with app:
        print("LAUNCHED", flush=True)
        due: Any = datetime.date(2024, 6, 1) if MODE == "typed" else "2024-06-01"
        # Idempotent: after the first incarnation this only returns the handle.
        handle = await app.start_workflow(checkout, ORDER_ID, due, workflow_id="checkout-1")
        print("RESULT", repr(await handle.get_result()), flush=True)


asyncio.run(main())
