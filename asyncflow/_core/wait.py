"""Waiting: the in-process waiter registry and the one wait primitive every blocking call uses.

A waiter registers interest in keys ``(kind, workflow_id)`` *before* it checks the database, then
parks. A NOTIFY (through the listener), a direct wake after a local commit, or the listener's
reconnect (which wakes everyone) sets its event, and it checks again — so no interleaving loses a
wake-up. Kinds: ``m`` message to a workflow, ``e`` event set on a workflow, ``s`` stream written
or closed, ``t`` workflow reached a terminal status (or was cancelled), ``r`` a workflow was
resumed or left unassigned (wakes recovery supervisors), ``q`` a workflow was enqueued in a
queue (or put back), ``f`` a workflow of a queue ended (a slot may be free): for these two the
key's id is the queue name, and they wake that queue's dispatchers; ``d`` a workflow deadline
was set (id empty: wakes the deadline enforcers); ``c`` a schedule was paused or resumed (id:
the schedule's name); and, in-process only, ``j``
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

from .._errors import DatabaseUnavailableError

Key = tuple[str, str]
T = TypeVar("T")

MESSAGE: Final = "m"
EVENT: Final = "e"
STREAM: Final = "s"
TERMINAL: Final = "t"
RESUMED: Final = "r"
QUEUE: Final = "q"  # id: a queue name
SLOT_FREED: Final = "f"  # id: a queue name
DEADLINE: Final = "d"  # id: "" (a workflow's deadline was set)
SCHEDULE: Final = "c"  # id: a schedule name (paused or resumed)
PROBE: Final = "h"  # id: a random token (a listener's probe of its own wake-ups)
# Local only (never sent as NOTIFY): for observers such as the dashboard.
JOURNAL: Final = "j"  # a journal entry (a step's checkpoint, …) was recorded in this process
STARTED: Final = "w"  # a workflow was started in this process


class _NotYet:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_YET"


#: What a wait's check returns when the awaited state is not there yet.
NOT_YET: Final = _NotYet()


class Waiter:
    """The flag one waiting task parks on (an ``asyncio.Event`` for a single task, without its
    deque of futures: thousands are parked at once). A local wake-up may hand over the value
    behind one of its keys: ``handed`` maps that key to the value. ``deadline`` (event-loop
    time, ``None``: none) may be moved by the wait's check."""

    __slots__ = ("_future", "_set", "deadline", "handed")

    def __init__(self, deadline: float | None = None) -> None:
        self._set = False
        self._future: asyncio.Future[None] | None = None
        self.handed: dict[Key, Any] = {}
        self.deadline = deadline

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait_until(self, deadline: float | None) -> None:
        """Wait until set or ``deadline`` (event-loop time) passes; never raises on timeout.
        One task at a time waits on a waiter."""
        if self._set:
            return
        if self._future is not None:
            raise RuntimeError("a Waiter is waited on by one task at a time")
        loop = asyncio.get_running_loop()
        if deadline is not None and deadline <= loop.time():
            return
        future: asyncio.Future[None] = loop.create_future()
        timer = None if deadline is None else loop.call_at(deadline, _resolve, future)
        self._future = future
        try:
            await future
        finally:
            self._future = None
            if timer is not None:
                timer.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
        waiter = Waiter(deadline)
        self.register(keys, waiter)
        try:
            yield waiter
        finally:
            self.unregister(keys, waiter)

    def register(self, keys: tuple[Key, ...], waiter: Waiter) -> None:
        """Register ``waiter`` under ``keys`` (until :meth:`unregister`)."""
        waiters = self._waiters
        for key in keys:
            group = waiters.get(key)
            if group is None:
                waiters[key] = {waiter}
            else:
                group.add(waiter)

    def unregister(self, keys: tuple[Key, ...], waiter: Waiter) -> None:
        waiters = self._waiters
        for key in keys:
            group = waiters.get(key)
            if group is not None:
                group.discard(waiter)
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

    def wake(self, kind: str, workflow_id: str, value: Any = None) -> bool:
        """Wake the waiters of a key; ``value`` (if given) is handed to each of them, so that a
        local commit's outcome need not be read back from the database. Returns whether a
        waiter of this process was woken."""
        group = self._waiters.get((kind, workflow_id))
        if group:
            for event in group:
                if value is not None:
                    event.handed[(kind, workflow_id)] = value
                event.set()
        for observer in self._observers:
            observer(kind, workflow_id)
        return bool(group)

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

    def parked(self, delta: int) -> None:
        """Count a waiter that starts (``+1``) or stops (``-1``) parking, in the parking task
        (``on_park`` is told, and :meth:`wait_for_count` woken)."""
        self._count += delta
        if delta > 0 and self._target is not None and self._count >= self._target[0]:
            self._target[1].set()
        observer = self.on_park
        if observer is not None:
            observer(delta > 0)

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


async def hand_over() -> None:
    """Let the tasks a local wake-up just woke run before the waking task goes on: the woken
    side of an exchange (a workflow in ``recv`` woken by a ``send``) is on its critical path.
    (A ``set_event`` does not yield: its workflow's next ``recv`` journals itself first, so
    that the woken caller's ``send`` hands its message to it; see ``_core.inflight``.)"""
    await asyncio.sleep(0)


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
    """Wait for ``event`` until ``deadline`` (event-loop time) passes; never raises on timeout.
    (A :class:`Waiter` has its own ``wait_until``.)"""
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
    raising :class:`DatabaseUnavailableError` at once. ``background``: the wait of a background
    task that parks between its own deadlines (deadline watcher, scheduler): its parking is not
    counted (see :meth:`WaitRegistry.park`).
    """

    __slots__ = ("background", "check", "deadline", "keys", "registry", "retry_unavailable")

    def __init__(
        self,
        registry: WaitRegistry,
        keys: tuple[Key, ...],
        check: Callable[[Waiter], Awaitable[T | _NotYet]],
        *,
        deadline: float | None = None,
        retry_unavailable: bool = False,
        background: bool = False,
    ) -> None:
        self.background = background
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

    One coroutine (no nested ones while parked): thousands of workflows park here at once.
    """
    registry = spec.registry
    owned = waiter is None
    if waiter is None:
        waiter = Waiter(spec.deadline)
        registry.register(spec.keys, waiter)
    loop = asyncio.get_running_loop()
    delay = 0.05
    counted = not spec.background
    park = park_first
    try:
        while True:
            if park and not waiter.is_set():
                # Parked until woken or the deadline; counted unless a background task's wait
                # (always parked, such as the deadline watcher: not counted by wait_for_count
                # nor reported to on_park).
                if counted:
                    registry.parked(1)
                try:
                    await waiter.wait_until(waiter.deadline)
                finally:
                    if counted:
                        registry.parked(-1)
            park = True
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
                await waiter.wait_until(retry_at)
                delay = min(delay * 2, 2.0)
                park = False
                continue
            delay = 0.05
            if not isinstance(result, _NotYet):
                return result
            if waiter.deadline is not None and loop.time() >= waiter.deadline:
                return NOT_YET
    finally:
        if owned:
            registry.unregister(spec.keys, waiter)
