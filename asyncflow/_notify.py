"""Wake-ups: the in-process waiter registry and the LISTEN connection that feeds it.

A waiter registers interest in keys ``(kind, workflow_id)`` *before* it checks the database, then
waits. A NOTIFY (or a direct local wake after a local commit) sets its event and it checks again,
so no interleaving loses a wake-up. Kinds: ``m`` message to a workflow, ``e`` event set on a
workflow, ``s`` stream written or closed, ``t`` workflow reached a terminal status (completed,
failed, cancelled), ``r`` a workflow was resumed or left unassigned (wakes recovery supervisors).

Observers (:meth:`WaitRegistry.add_observer`) see every wake-up, local or from a NOTIFY, as
``(kind, workflow_id)``: the dashboard turns them into live page updates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.abc

from ._errors import DatabaseUnavailableError, ExecutorIdInUseError
from ._queries import TRY_EXECUTOR_LOCK
from ._storage import Connection, Storage, map_errors

logger = logging.getLogger("asyncflow")

Key = tuple[str, str]

MESSAGE = "m"
EVENT = "e"
STREAM = "s"
TERMINAL = "t"
RESUMED = "r"


class Waiter(asyncio.Event):
    """A waiter's event. A local wake-up may hand over the value behind one of its keys:
    ``handed`` maps that key to the value."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: dict[Key, Any] = {}


class WaitRegistry:
    """Maps ``(kind, workflow_id)`` to the events of the waiters parked on it."""

    def __init__(self) -> None:
        self._waiters: dict[Key, set[Waiter]] = {}
        self._count = 0
        self._target: tuple[int, asyncio.Event] | None = None
        self._observers: dict[object, Callable[[str, str], None]] = {}

    def add_observer(self, callback: Callable[[str, str], None]) -> Callable[[], None]:
        """Call ``callback(kind, workflow_id)`` on every wake-up (a local one after a commit, or
        a dispatched NOTIFY) until the returned function is called. ``kind`` is one of the
        one-letter constants of this module. The callback runs synchronously inside
        :meth:`wake`: it must be quick and must not raise (an exception is logged and dropped).
        """
        token = object()
        self._observers[token] = callback

        def remove() -> None:
            self._observers.pop(token, None)

        return remove

    @contextmanager
    def watch(self, *keys: Key) -> Iterator[Waiter]:
        """Register one waiter under ``keys`` for the duration of the block."""
        event = Waiter()
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

    def wake(self, kind: str, workflow_id: str, value: Any = None) -> None:
        """Wake the waiters of a key; ``value`` (if given) is handed to each of them, so that a
        local commit's outcome need not be read back from the database."""
        if self._observers:
            for observer in tuple(self._observers.values()):
                try:
                    observer(kind, workflow_id)
                except Exception:
                    logger.exception("asyncflow wake-up observer failed")
        group = self._waiters.get((kind, workflow_id))
        if group:
            for event in group:
                if value is not None:
                    event.handed[(kind, workflow_id)] = value
                event.set()

    def wake_all(self) -> None:
        for group in self._waiters.values():
            for event in group:
                event.set()

    def dispatch(self, payload: str) -> None:
        if payload:
            self.wake(payload[0], payload[1:])

    async def park(self, event: asyncio.Event, deadline: float | None = None) -> None:
        """Wait for a registered ``event`` until ``deadline`` (loop time), counted as parked."""
        self._count += 1
        if self._target is not None and self._count >= self._target[0]:
            self._target[1].set()
        try:
            await wait_until(event, deadline)
        finally:
            self._count -= 1

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


class Listener:
    """Owns the one LISTEN connection of an app or client and reconnects it with backoff.

    For an app it also holds the executor's session-level advisory lock, which is how other
    processes' recovery supervisors know this executor is alive.
    """

    def __init__(
        self,
        storage: Storage,
        registry: WaitRegistry,
        *,
        executor_id: str | None = None,
        on_notify: Callable[[str], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self._storage = storage
        self._registry = registry
        self._executor_id = executor_id
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._own_pids = storage.pool.pids
        self.connected = False
        self.holds_lock = False  # the executor's liveness lock (apps only)
        self.reconnects = 0
        self.backend_pid: int | None = None
        self._changed = asyncio.Event()

    def _transition(self, connected: bool) -> None:
        self.connected = connected
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_connected(self, not_pid: int | None = None, *, lock: bool = False) -> None:
        """Wait until the listener is connected (on a backend other than ``not_pid``) and, with
        ``lock``, holds the executor's liveness lock."""
        while not (self.connected and self.backend_pid != not_pid
                   and (self.holds_lock or not lock)):
            await self._changed.wait()

    def _callback(self, _conn: Any, pid: int, _channel: str, payload: str) -> None:
        if pid in self._own_pids:
            return  # an echo of our own commit: its waiters were woken in-process already
        self._registry.dispatch(payload)
        if self._on_notify is not None:
            self._on_notify(payload)

    async def _try_lock(self, conn: Connection) -> bool:
        with map_errors(conn):
            got: bool = await conn.fetchval(
                self._storage.sql(TRY_EXECUTOR_LOCK), self._storage.namespace, self._executor_id
            )
        self.holds_lock = got
        return got

    async def _open(self, first: bool) -> tuple[Connection, asyncio.Event]:
        conn = await self._storage.connect()
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _c: lost.set())
            with map_errors(conn):
                await conn.add_listener(self._storage.channel, self._callback)
            if self._executor_id is not None and not await self._try_lock(conn) and first:
                raise ExecutorIdInUseError(
                    f"executor id {self._executor_id!r} is already in use by another live "
                    "process on this database; give each process its own executor_id "
                    "(or leave it unset for a generated one)"
                )
            self.backend_pid = conn.get_server_pid()
        except BaseException:
            conn.terminate()
            raise
        return conn, lost

    async def _hold(self, conn: Connection, lost: asyncio.Event) -> None:
        """Until the connection is lost. On a reconnect the executor lock may still be held by
        this process's previous backend (the server has not noticed it is gone yet): listen
        anyway, and take the lock as soon as it is free."""
        if self._executor_id is not None and not self.holds_lock:
            logger.warning("asyncflow executor lock still held by a previous connection; "
                           "listening without it and retrying")
            retry = 0.05  # short at first: usually the old backend is just exiting
            while not lost.is_set() and not await self._try_lock(conn):
                await wait_until(lost, asyncio.get_running_loop().time() + retry)
                retry = min(retry * 2, 1.0)
            if self.holds_lock:
                self._transition(True)  # wakes wait_connected(lock=True)
        await lost.wait()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        delay = 0.05
        while True:
            conn: Connection | None = None
            try:
                conn, lost = await self._open(first=not started)
                self._transition(True)
                if started:
                    self.reconnects += 1
                    logger.info("asyncflow listener reconnected")
                # Anything may have happened while we were not listening: everyone re-checks.
                self._registry.wake_all()
                if self._on_reconnect is not None:
                    self._on_reconnect()
                if not started:
                    started = True
                    task_status.started()
                delay = 0.05
                await self._hold(conn, lost)
                logger.warning("asyncflow listener connection lost; reconnecting")
            except (DatabaseUnavailableError, ExecutorIdInUseError) as exc:
                if not started:
                    raise
                logger.warning("asyncflow listener cannot reconnect yet: %s", exc)
            finally:
                self.holds_lock = False
                self._transition(False)
                if conn is not None:
                    conn.terminate()
            # Reconnect backoff (not a wait for database state).
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
