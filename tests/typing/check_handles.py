"""Checked by ``mypy --strict`` in tests/api/test_values.py (never run): a handle from
``start_workflow(fn, ...)`` is a ``WorkflowHandle[R]`` for ``fn``'s return annotation ``R``, its
``get_result()`` returns an ``R``, and ``type=`` types the waits."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any, assert_type

import asyncflow

app = asyncflow.AsyncFlow("postgresql://localhost/never-connected")
queue = app.queue("typing")


@dataclasses.dataclass
class Order:
    sku: str
    price: Decimal


@dataclasses.dataclass
class Receipt:
    order: Order
    paid: bool


@app.workflow()
async def checkout(order: Order, *, express: bool = False) -> Receipt:
    event = await asyncflow.get_event("elsewhere", "order", type=Order)
    assert_type(event, Order | None)
    message = await asyncflow.recv("orders", type=Order)
    assert_type(message, Order | None)
    plain = await asyncflow.recv("orders")
    assert_type(plain, Any)
    async for streamed in asyncflow.read_stream("elsewhere", "orders", type=Order):
        assert_type(streamed, Order)
    return Receipt(order, paid=express)


async def main() -> None:
    handle = await app.start_workflow(checkout, Order("a", Decimal("1.50")), express=True)
    assert_type(handle, asyncflow.WorkflowHandle[Receipt])
    result = await handle.get_result()
    assert_type(result, Receipt)
    module_level = await asyncflow.start_workflow(checkout, Order("b", Decimal(2)))
    assert_type(await module_level.get_result(timeout_seconds=5), Receipt)
    queued = await queue.enqueue(checkout, Order("c", Decimal(3)))
    assert_type(await queued.get_result(), Receipt)
    assert_type(await checkout(Order("d", Decimal(4))), Receipt)
    retrieved = await app.retrieve_workflow("some-id")
    assert_type(await retrieved.get_result(type=Order), Order)
    assert_type(await retrieved.get_result(), Any)
    assert_type(await retrieved.get_result(type=list[Order]), list[Order])
    async with asyncflow.Client("postgresql://localhost/never-connected") as client:
        assert_type(await client.get_event("some-id", "order", type=Order), Order | None)
        async for value in client.read_stream("some-id", "orders", type=Order):
            assert_type(value, Order)
        async for watched in client.watch_event("some-id", "order", type=Receipt):
            assert_type(watched, Receipt)
