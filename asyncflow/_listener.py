"""The LISTEN connection of an app or client: it feeds NOTIFYs to the waiter registry, and for
an app it holds the executor's liveness lock. It reconnects with backoff after any failure and
never lets a database error end it; its state is reported through health."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from ._errors import DatabaseUnavailableError, ExecutorIdInUseError
from ._health import Monitor
from ._storage import Connection, Storage, map_errors
from ._store import Store
from ._wait import WaitRegistry, wait_until

logger = logging.getLogger("asyncflow")


class Listener:
    """Owns the one LISTEN connection of an app or client and reconnects it with backoff.

    For an app it also holds the executor's session-level advisory lock, which is how other
    processes' recovery supervisors know this executor is alive.
    """

    def __init__(
        self,
        store: Store,
        registry: WaitRegistry,
        *,
        executor_id: str | None = None,
        on_notify: Callable[[str, str], None] | None = None,
    ) -> None:
        self._store = store
        self._storage: Storage = store.storage
        self._registry = registry
        self._executor_id = executor_id
        self._on_notify = on_notify
        self._own_pids = self._storage.pool.pids
        self.monitor = Monitor("listener")
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
        keys = self._registry.dispatch(payload)
        if self._on_notify is not None:
            for kind, workflow_id in keys:
                self._on_notify(kind, workflow_id)

    async def _try_lock(self, conn: Connection) -> bool:
        assert self._executor_id is not None
        with map_errors(conn):
            got = await self._store.try_executor_lock(conn, self._executor_id)
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
                self.monitor.ok()
                if started:
                    self.reconnects += 1
                    logger.info("asyncflow listener reconnected")
                # Anything may have happened while we were not listening: everyone re-checks.
                self._registry.wake_all()
                if not started:
                    started = True
                    task_status.started()
                delay = 0.05
                await self._hold(conn, lost)
                self.monitor.failed(DatabaseUnavailableError("the LISTEN connection was lost"))
            except Exception as exc:
                if not started:
                    raise  # at launch: a bad URL or a taken executor id is the caller's error
                # Any failure (refused connections, a dropped database, a driver error) is
                # retried: the listener must outlive outages.
                self.monitor.failed(exc)
            finally:
                self.holds_lock = False
                self._transition(False)
                if conn is not None:
                    conn.terminate()
            # Reconnect backoff (not a wait for database state).
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
