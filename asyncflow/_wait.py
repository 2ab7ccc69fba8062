"""Waiting: the in-process waiter registry and the one wait primitive every blocking call uses.

A waiter registers interest in keys ``(kind, workflow_id)`` *before* it checks the database, then
parks. A NOTIFY (through the listener), a direct wake after a local commit, or the listener's
reconnect (which wakes everyone) sets its event, and it checks again — so no interleaving loses a
wake-up. Kinds: ``m`` message to a workflow, ``e`` event set on a workflow, ``s`` stream written
or closed, ``t`` workflow reached a terminal status (or was cancelled), ``r`` a workflow was
resumed or left unassigned (wakes recovery supervisors), ``q`` a workflow was enqueued in a
queue (or put back), ``f`` a workflow of a queue ended (a slot may be free): for these two the
key's id is the queue name, and they wake that queue's dispatchers; and, in-process only, ``j``
a journal entry was recorded and ``w`` a workflow was started (for observers such as the
dashboard).

:func:`wait` is the primitive: register → check → park until a wake-up or the deadline →
re-check. A new kind of wait is a check function, not a new loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, Generic, TypeVar

from ._errors import DatabaseUnavailableError

Key = tuple[str, str]
T = TypeVar("T")

MESSAGE: Final = "m"
EVENT: Final = "e"
STREAM: Final = "s"
TERMINAL: Final = "t"
RESUMED: Final = "r"
QUEUE: Final = "q"  # id: a queue name
SLOT_FREED: Final = "f"  # id: a queue name
# Local only (never sent as NOTIFY): for observers such as the dashboard.
JOURNAL: Final = "j"  # a journal entry (a step's checkpoint, …) was recorded in this process
STARTED: Final = "w"  # a workflow was started in this process


class _NotYet:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_YET"


#: What a wait's check returns when the awaited state is not there yet.
NOT_YET: Final = _NotYet()


class Waiter(asyncio.Event):
    """A waiter's event. A local wake-up may hand over the value behind one of its keys:
    ``handed`` maps that key to the value. ``deadline`` (event-loop time, ``None``: none) may be
    moved by the wait's check."""

    def __init__(self, deadline: float | None = None) -> None:
        super().__init__()
        self.handed: dict[Key, Any] = {}
        self.deadline = deadline


Observer = Callable[[str, str], None]


class WaitRegistry:
    """Maps ``(kind, workflow_id)`` to the waiters parked on it."""

    def __init__(self) -> None:
        self._waiters: dict[Key, set[Waiter]] = {}
        self._observers: list[Observer] = []
        self._count = 0
        self._target: tuple[int, asyncio.Event] | None = None
        #: Called with True as a waiter parks and False as it stops parking, in the parking
        #: task (``asyncflow.testing`` learns from it that a workflow waits); ``None`` normally.
        self.on_park: Callable[[bool], None] | None = None

    @contextmanager
    def watch(self, *keys: Key, deadline: float | None = None) -> Iterator[Waiter]:
        """Register one waiter under ``keys`` for the duration of the block."""
        event = Waiter(deadline)
        waiters = self._waiters
        for key in keys:
            waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            for key in keys:
                group = waiters.get(key)
                if group is not None:
                    group.discard(event)
                    if not group:
                        del waiters[key]

    def add_observer(self, callback: Observer) -> Callable[[], None]:
        """Call ``callback(kind, workflow_id)`` on every wake-up (local or by NOTIFY); returns
        the function that removes it. Observers must not block or raise."""
        self._observers.append(callback)

        def remove() -> None:
            if callback in self._observers:
                self._observers.remove(callback)

        return remove

    def wake(self, kind: str, workflow_id: str, value: Any = None) -> None:
        """Wake the waiters of a key; ``value`` (if given) is handed to each of them, so that a
        local commit's outcome need not be read back from the database."""
        group = self._waiters.get((kind, workflow_id))
        if group:
            for event in group:
                if value is not None:
                    event.handed[(kind, workflow_id)] = value
                event.set()
        for observer in self._observers:
            observer(kind, workflow_id)

    def wake_all(self) -> None:
        """Wake every waiter (after a reconnect anything may have happened)."""
        for group in self._waiters.values():
            for event in group:
                event.set()

    def dispatch(self, payload: str) -> list[Key]:
        """Wake the waiters named by a NOTIFY payload; returns the keys it named."""
        keys = decode_payload(payload)
        for kind, workflow_id in keys:
            self.wake(kind, workflow_id)
        return keys

    async def park(self, event: Waiter) -> None:
        """Wait for a registered ``event`` until its deadline, counted as parked."""
        self._count += 1
        if self._target is not None and self._count >= self._target[0]:
            self._target[1].set()
        observer = self.on_park
        if observer is not None:
            observer(True)
        try:
            await wait_until(event, event.deadline)
        finally:
            self._count -= 1
            if observer is not None:
                observer(False)

    def __len__(self) -> int:
        """The number of waiters parked right now."""
        return self._count

    async def wait_for_count(self, count: int) -> None:
        """Wait until at least ``count`` waiters are parked (for tests and benchmarks)."""
        if self._count >= count:
            return
        reached = asyncio.Event()
        self._target = (count, reached)
        try:
            await reached.wait()
        finally:
            self._target = None


def decode_payload(payload: str) -> list[Key]:
    """The keys of a NOTIFY payload: a kind letter plus an id, or — from a batch — ``*``
    followed by items ``kind length ':' id``."""
    if not payload:
        return []
    if payload[0] != "*":
        return [(payload[0], payload[1:])]
    keys: list[Key] = []
    index, end = 1, len(payload)
    try:
        while index < end:
            colon = payload.index(":", index + 1)
            length = int(payload[index + 1:colon])
            keys.append((payload[index], payload[colon + 1:colon + 1 + length]))
            index = colon + 1 + length
    except ValueError:  # not ours: ignore what cannot be read
        pass
    return keys


async def wait_until(event: asyncio.Event, deadline: float | None) -> None:
    """Wait for ``event`` until ``deadline`` (event-loop time) passes; never raises on timeout."""
    if deadline is None:
        await event.wait()
        return
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        return
    try:
        async with asyncio.timeout(remaining):
            await event.wait()
    except TimeoutError:
        pass


class Wait(Generic[T]):
    """One blocking wait: the keys that wake it, its check, its deadline and what to do when
    the database is unreachable.

    ``check(waiter)`` reads the state and returns the result, or :data:`NOT_YET`; it may move
    ``waiter.deadline``. ``retry_unavailable``: while the database is unreachable the check is
    retried with backoff (at once on the listener's reconnect) until the deadline, instead of
    raising :class:`DatabaseUnavailableError` at once.
    """

    __slots__ = ("check", "deadline", "keys", "registry", "retry_unavailable")

    def __init__(
        self,
        registry: WaitRegistry,
        keys: tuple[Key, ...],
        check: Callable[[Waiter], Awaitable[T | _NotYet]],
        *,
        deadline: float | None = None,
        retry_unavailable: bool = False,
    ) -> None:
        self.registry = registry
        self.keys = keys
        self.check = check
        self.deadline = deadline
        self.retry_unavailable = retry_unavailable


async def wait(
    spec: Wait[T], waiter: Waiter | None = None, *, park_first: bool = False
) -> T | _NotYet:
    """Run a wait: register → check → park until woken or the deadline → re-check.

    Returns the check's result, or :data:`NOT_YET` when the deadline passed first (after one
    last check). ``waiter``: one already registered under ``spec.keys`` (by
    ``registry.watch``), for a caller that waits again and again, such as a stream reader;
    with ``park_first`` it parks before its first check unless already woken (it has just
    seen the state, and a wake-up since then is recorded in the waiter).
    """
    if waiter is not None:
        return await _run(spec, waiter, park_first)
    with spec.registry.watch(*spec.keys, deadline=spec.deadline) as registered:
        return await _run(spec, registered, park_first)


async def _run(spec: Wait[T], waiter: Waiter, park_first: bool) -> T | _NotYet:
    loop = asyncio.get_running_loop()
    delay = 0.05
    if park_first and not waiter.is_set():
        await spec.registry.park(waiter)
    while True:
        waiter.clear()
        try:
            result = await spec.check(waiter)
        except DatabaseUnavailableError:
            if not spec.retry_unavailable:
                raise
            now = loop.time()
            if waiter.deadline is not None and now >= waiter.deadline:
                raise
            # Retry backoff; the listener's reconnect wakes every waiter, ending it early.
            retry_at = now + delay
            if waiter.deadline is not None:
                retry_at = min(waiter.deadline, retry_at)
            await wait_until(waiter, retry_at)
            delay = min(delay * 2, 2.0)
            continue
        delay = 0.05
        if not isinstance(result, _NotYet):
            return result
        if waiter.deadline is not None and loop.time() >= waiter.deadline:
            return NOT_YET
        if not waiter.is_set():
            await spec.registry.park(waiter)
