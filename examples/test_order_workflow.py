"""Testing a workflow with asyncflow.testing: what a user's test file looks like.

Run it with ``python -m pytest examples/test_order_workflow.py`` (the plugin is loaded by its
entry point once asyncflow-pg is installed; ``-p asyncflow.testing`` loads it otherwise). Each
test runs the app of examples/order_workflow.py on a fresh database of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import order_workflow
import pytest
from order_workflow import DAY, app, place_order

from asyncflow.testing import crash_and_recover, crash_at, relaunch, skip_timers, step_runs

pytestmark = pytest.mark.asyncio  # (not needed with asyncio_mode = "auto")


@pytest.fixture(autouse=True)
def fresh_services() -> Iterator[None]:
    """The fake payment service and the stock, as new, for every test."""
    order_workflow.payments = order_workflow.PaymentService()
    order_workflow.stock = {"book": 3}
    yield


async def test_an_approved_order_ships_after_the_withdrawal_period(asyncflow_app):
    async with asyncflow_app(app) as app_:
        handle = await app_.start_workflow(place_order, "o-1", "book", 30, workflow_id="o-1")
        await app_.send("o-1", True, topic="payment-approved")
        # The workflow sleeps three days: move its clock instead of waiting.
        # The receipt is set just before the sleep: once it is there, the next wait is the sleep
        # (skipping earlier could move the clock while the workflow still waits in its recv).
        await app_.get_event(handle.workflow_id, "receipt", timeout_seconds=30)
        await skip_timers(app_, days=3, once_waiting=handle)
        assert await handle.get_result() == "shipped book for order o-1"
        assert order_workflow.payments.charged == {"order-o-1": 30}
        assert order_workflow.stock == {"book": 2}


async def test_an_order_without_approval_expires_after_a_day(asyncflow_app):
    async with asyncflow_app(app) as app_:
        handle = await app_.start_workflow(place_order, "o-2", "book", 30)
        await skip_timers(app_, seconds=DAY, once_waiting=handle)  # recv's timeout passes
        assert await handle.get_result() == "order o-2 expired"
        assert order_workflow.stock == {"book": 3}  # released again
        assert order_workflow.payments.requests == 0


async def test_a_crash_while_charging_charges_once(asyncflow_app):
    async with asyncflow_app(app) as app_:
        runs = step_runs(app_)
        # The process will die inside charge_card: after the payment request, before the step's
        # checkpoint. Arm the crash, then run the workflow up to it.
        crash = crash_at(app_, "o-3", during=order_workflow.charge_card)
        handle = await app_.start_workflow(place_order, "o-3", "book", 30, workflow_id="o-3")
        await app_.send("o-3", True, topic="payment-approved")
        await crash.wait()
        # Restart: the relaunched app recovers the workflow from its journal.
        await relaunch(app_)
        # The receipt is set just before the sleep: once it is there, the next wait is the sleep
        # (skipping earlier could move the clock while the workflow still waits in its recv).
        await app_.get_event(handle.workflow_id, "receipt", timeout_seconds=30)
        await skip_timers(app_, days=3, once_waiting=handle)
        assert await handle.get_result() == "shipped book for order o-3"
        # charge_card ran twice (a step runs at least once); the card was charged once.
        assert runs == {"reserve_stock": 1, "charge_card": 2, "ship": 1}
        assert order_workflow.payments.requests == 2
        assert order_workflow.payments.charged == {"order-o-3": 30}
        assert order_workflow.stock == {"book": 2}  # reserved once: it was checkpointed
        steps = [step.name for step in await app_.list_workflow_steps("o-3")]
        assert steps == ["reserve_stock", "asyncflow.recv", "charge_card", "asyncflow.set_event",
                         "asyncflow.sleep", "ship"]


async def test_a_crash_before_waiting_for_approval_does_not_reserve_twice(asyncflow_app):
    async with asyncflow_app(app) as app_:
        runs = step_runs(app_)
        # Operation #0 is reserve_stock, #1 the recv: crash just before the recv starts, relaunch.
        handle = await crash_and_recover(app_, place_order, "o-4", "book", 30, before=1)
        await app_.send(handle.workflow_id, True, topic="payment-approved")
        # The receipt is set just before the sleep: once it is there, the next wait is the sleep
        # (skipping earlier could move the clock while the workflow still waits in its recv).
        await app_.get_event(handle.workflow_id, "receipt", timeout_seconds=30)
        await skip_timers(app_, days=3, once_waiting=handle)
        assert await handle.get_result() == "shipped book for order o-4"
        assert runs == {"reserve_stock": 1, "charge_card": 1, "ship": 1}
        assert order_workflow.stock == {"book": 2}
        assert (await handle.get_status()).recovery_attempts == 1
