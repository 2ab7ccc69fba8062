"""An order workflow, as a user's application defines it; examples/test_order_workflow.py tests
it with asyncflow.testing.

The order reserves stock, waits up to a day for the payment to be approved (a message), charges
the card, waits out a three-day withdrawal period (a durable sleep) and ships. ``payments`` stands
in for an external payment service: the charge is made idempotent by its key, so a charge retried
after a crash is not made twice.
"""

from __future__ import annotations

import asyncflow

DAY = 86400.0
app = asyncflow.AsyncFlow()  # tests run it on a database of their own (asyncflow.testing)


class PaymentService:
    """A stand-in for a payment provider's API with idempotency keys."""

    def __init__(self) -> None:
        self.requests = 0  # every call, repeated ones included
        self.charged: dict[str, int] = {}  # idempotency key -> amount actually charged

    async def charge(self, idempotency_key: str, amount: int) -> str:
        self.requests += 1
        self.charged.setdefault(idempotency_key, amount)  # a repeated key charges nothing more
        return f"receipt-{idempotency_key}"


payments = PaymentService()
stock: dict[str, int] = {"book": 3}


@app.step()
async def reserve_stock(order_id: str, item: str) -> None:
    stock[item] -= 1


@app.step()
async def release_stock(order_id: str, item: str) -> None:
    stock[item] += 1


@app.step()
async def charge_card(order_id: str, amount: int) -> str:
    # A step runs at least once: after a crash in it, it runs again. The key makes that safe.
    return await payments.charge(f"order-{order_id}", amount)


@app.step()
async def ship(order_id: str, item: str) -> str:
    return f"shipped {item} for order {order_id}"


@app.workflow()
async def place_order(order_id: str, item: str, amount: int) -> str:
    await reserve_stock(order_id, item)
    approved = await asyncflow.recv("payment-approved", timeout_seconds=DAY)
    if not approved:  # None: no answer within a day
        await release_stock(order_id, item)
        return f"order {order_id} expired"
    receipt = await charge_card(order_id, amount)
    await asyncflow.set_event("receipt", receipt)
    await asyncflow.sleep(3 * DAY)  # the withdrawal period
    return await ship(order_id, item)
