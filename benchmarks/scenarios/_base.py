"""What every scenario gets, and small helpers they share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

import asyncflow

from ..counts import Counted
from ..model import Figure
from ..progress import note
from ..sizes import Sizes

# The application_name of the suite's own observer connections, so that connection counts
# (waiters) leave them out.
OBSERVER = "asyncflow-bench-observer"

Measured: TypeAlias = tuple[list[Figure], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Context:
    """A scenario's fresh database, its sizes, and how to report progress."""

    name: str
    url: str
    sizes: Sizes

    def note(self, message: str) -> None:
        note(f"{self.name}: {message}")

    def counted(self) -> Counted:
        """Count round trips, write transactions and WAL bytes over a timed section:
        ``async with ctx.counted() as counts: ...``, then ``counts.figures(...)``."""
        return Counted(self.url)


Scenario: TypeAlias = Callable[[Context], Awaitable[Measured]]


def make_app(url: str, **kwargs: Any) -> asyncflow.AsyncFlow:
    """An app with asyncflow's defaults (pool of 10, recovery every second)."""
    return asyncflow.AsyncFlow(url, app_version="bench", **kwargs)


async def observer(url: str) -> asyncpg.Connection:
    """A connection of the suite's own (not the engine's), named so counts can skip it."""
    return await asyncpg.connect(url, server_settings={"application_name": OBSERVER})


class Arrivals:
    """Counts workflows reaching a point in their code; ``done`` is set when all have."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.done = asyncio.Event()
        if expected <= 0:
            self.done.set()

    def arrive(self) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


COUNT_PARKED = """
SELECT count(*) FROM asyncflow.operations WHERE name = 'asyncflow.recv' AND NOT completed"""


async def drain(app: asyncflow.AsyncFlow, parked: int = 0) -> None:
    """Wait for the statements already queued on the app's pool to run.

    With ``parked``: first until that many waiters are parked in the app's process (a wait
    parks once its first check has returned: statements that group commit holds back for the
    next batch are done too). Then two queries through the same pool, one after the other: the
    first queues behind every statement issued so far (e.g. the journal rows of recvs just
    entered), the second behind the statements those issued next (the recvs' first mailbox
    checks). After that the workflows are parked, waiting for a wake-up, and the pool is idle.
    """
    if parked:
        await app.runtime.waits.wait_for_count(parked)
    await app.list_workflows(limit=1)
    await app.list_workflows(limit=1)


async def wait_parked(app: asyncflow.AsyncFlow, url: str, expected: int) -> int:
    """After every workflow reached its ``recv``: wait until ``expected`` waiters are parked in
    the app's process, then drain the pool until the database shows ``expected`` recvs waiting
    (each round awaits queries, never a timer). Returns the count."""
    conn = await observer(url)
    try:
        parked = 0
        for _ in range(100):
            await drain(app, expected)
            parked = await conn.fetchval(COUNT_PARKED)
            if parked >= expected:
                break
        return int(parked)
    finally:
        await conn.close()
