"""The app of the queue scenarios, built the same way by the runner (which enqueues) and by the
worker processes (which serve the queues): same workflow names, same ``app_version``."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncflow

APP_VERSION = "bench-queue"
LATENCY_QUEUE = "bench.latency"
FLEET_QUEUE = "bench.fleet"
PING = "bench.queue.ping"
STEPS = 3
#: The fleet's workflow bodies by their count of no-op steps: 0 is a claim and the terminal
#: write (what a pgqueuer job is: a dequeue and its completion); 3 is the historical body.
FLEET_STEPS = (0, 1, 3)


@dataclass(slots=True)
class QueueApp:
    """The app and what the scenarios call on it."""

    app: asyncflow.AsyncFlow
    latency: asyncflow.Queue
    fleet: asyncflow.Queue
    ping: Callable[[], Coroutine[Any, Any, None]]
    three_steps: Callable[[], Coroutine[Any, Any, None]]
    #: ``enqueue_all(prefix, count, steps)``: ``count`` workflows of ``steps`` no-op steps in one
    #: transaction, by one ``enqueue_many``.
    enqueue_all: Callable[[str, int, int], Coroutine[Any, Any, None]]
    #: The same, one ``enqueue`` after the other (still one transaction).
    enqueue_each: Callable[[str, int, int], Coroutine[Any, Any, None]]


def build(url: str, serve: list[str], on_first_step: Callable[[str, float], None]) -> QueueApp:
    """An app serving the queues in ``serve``. The ``ping`` workflow's first step calls
    ``on_first_step(workflow id, time.monotonic())`` (a clock shared by all processes)."""
    app = asyncflow.AsyncFlow(url, app_version=APP_VERSION, queues=serve)
    latency = app.queue(LATENCY_QUEUE)
    fleet = app.queue(FLEET_QUEUE)

    @app.step(name="bench.queue.first")
    async def first() -> None:
        on_first_step(asyncflow.workflow_id(), time.monotonic())

    @app.workflow(name=PING)
    async def ping() -> None:
        await first()

    @app.step(name="bench.queue.noop")
    async def noop() -> None:
        return None

    @app.workflow(name="bench.queue.no_steps")
    async def no_steps() -> None:
        return None

    @app.workflow(name="bench.queue.one_step")
    async def one_step() -> None:
        await noop()

    @app.workflow(name="bench.queue.three_steps")
    async def three_steps() -> None:
        for _ in range(STEPS):
            await noop()

    bodies = {0: no_steps, 1: one_step, STEPS: three_steps}

    @app.transaction(name="bench.queue.enqueue_all")
    async def enqueue_all(prefix: str, count: int, steps: int) -> None:
        # One transaction: every workflow becomes ENQUEUED at its commit, at once.
        await fleet.enqueue_many(bodies[steps], [()] * count,
                                 workflow_ids=[f"{prefix}{index}" for index in range(count)])

    @app.transaction(name="bench.queue.enqueue_each")
    async def enqueue_each(prefix: str, count: int, steps: int) -> None:
        for index in range(count):
            await fleet.enqueue(bodies[steps], workflow_id=f"{prefix}{index}")

    return QueueApp(app, latency, fleet, ping, three_steps, enqueue_all, enqueue_each)
