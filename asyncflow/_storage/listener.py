"""The LISTEN connection of an app or client: it feeds NOTIFYs to the waiter registry, and for
an app it holds the executor's liveness lock and renews its lease (``lease``). It reconnects
with backoff after any failure and never lets a database error end it; its state is reported
through health.

The connection is never idle for long: an app renews its lease on it every fifth of the lease,
and any listener sends a statement more often than the server's ``idle_session_timeout`` (read
at connect), so managed servers that end idle sessions never end this one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from .._core.health import Monitor
from .._core.wait import PROBE, WaitRegistry, wait_until
from .._errors import AsyncFlowError, DatabaseUnavailableError
from .database import Connection, Storage, map_errors
from .lease import Liveness
from .store import Store

logger = logging.getLogger("asyncflow")

#: A client's listener sends a keepalive at least this often (seconds), idle timeout or not.
CLIENT_KEEPALIVE = 30.0
#: How often the listener checks that a NOTIFY sent through the pool reaches it, and how long
#: the probe may take before wake-ups are reported lost (seconds).
PROBE_EVERY = 30.0
PROBE_WITHIN = 5.0


class Listener:
    """Owns the one LISTEN connection of an app or client and reconnects it with backoff.

    For an app it also holds the executor's session-level advisory lock and renews its lease:
    that is how other processes' recovery supervisors know this executor is alive.
    """

    def __init__(
        self,
        store: Store,
        registry: WaitRegistry,
        *,
        liveness: Liveness | None = None,
        on_notify: Callable[[str, str], None] | None = None,
        on_reconnect: Callable[[bool], None] | None = None,
    ) -> None:
        self._store = store
        self._storage: Storage = store.storage
        self._registry = registry
        self.liveness = liveness
        self._on_notify = on_notify
        #: Called after each reconnect with whether the server changed meanwhile.
        self._on_reconnect = on_reconnect
        self._own_pids = self._storage.pool.pids
        self.monitor = Monitor("listener")
        #: Whether NOTIFYs committed through the pool reach this connection (health "wakeups").
        self.wakeups = Monitor("wakeups")
        self.wakeups.ok()
        self._probe: tuple[str, float] | None = None  # (token, loop time sent) outstanding
        self._probed_at: float | None = None
        self.connected = False
        self.holds_lock = False  # the executor's liveness lock (apps only)
        self.reconnects = 0
        self.backend_pid: int | None = None
        #: Loop time of the last reconnect after a loss (``None``: never lost).
        self.reconnected_at: float | None = None
        #: What identified the server at the last connect (cluster, timeline, start time).
        self.server: str | None = None
        self._server_changed = False
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
        if payload[:1] == PROBE:
            probe = self._probe
            if probe is not None and payload[1:] == probe[0]:
                self._probe = None
                self.wakeups.ok()
            return
        if pid in self._own_pids:
            return  # an echo of our own commit: its waiters were woken in-process already
        keys = self._registry.dispatch(payload)
        if self._on_notify is not None:
            for kind, workflow_id in keys:
                self._on_notify(kind, workflow_id)

    async def _open(self, first: bool) -> tuple[Connection, asyncio.Event, float]:
        conn = await self._storage.connect(listener=True)
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _c: lost.set())
            with map_errors(conn):
                await conn.add_listener(self._storage.channel, self._callback)
            liveness = self.liveness
            if liveness is not None:
                if first:
                    await liveness.register(conn)  # the id with its lock, or refused
                    self.holds_lock = True
                else:  # renew at once, and take the lock back if it is free
                    self.holds_lock = await self._beat(conn, liveness)
            server = await self._store.server_identity(conn)
            changed = self.server is not None and server != self.server
            if changed:
                logger.warning(
                    "asyncflow reconnected to a different database server (%s, before: %s): a "
                    "failover or restart; commits acknowledged before it may have been lost if "
                    "replication was asynchronous. Re-examining every workflow this process "
                    "owns", server, self.server)
            self.server = server
            idle = await self._store.idle_session_timeout(conn)
            # Pool connections idle for half the server's idle timeout are not reused.
            self._storage.pool.max_idle = None if idle is None else idle / 2
            self.backend_pid = conn.get_server_pid()
        except BaseException:
            conn.terminate()
            raise
        interval = liveness.interval if liveness is not None else CLIENT_KEEPALIVE
        if idle is not None:
            interval = min(interval, idle / 3)
        self._server_changed = changed
        return conn, lost, max(interval, 0.01)

    async def _hold(self, conn: Connection, lost: asyncio.Event, interval: float) -> None:
        """Until the connection is lost: renew the lease (an app) or keep the session from
        being idle (a client) every ``interval`` seconds. A reconnect may find the executor
        lock still held by this process's previous backend (the server has not noticed it is
        gone yet): each renewal takes it as soon as it is free."""
        loop = asyncio.get_running_loop()
        liveness = self.liveness
        self._probe = None
        await self._check_wakeups(loop.time())
        while not lost.is_set():
            await wait_until(lost, loop.time() + min(
                interval if self.holds_lock or liveness is None else 0.2,
                PROBE_WITHIN if self._probe is not None else PROBE_EVERY))
            if lost.is_set():
                return
            await self._check_wakeups(loop.time())
            if liveness is None:
                await self._store.keepalive(conn)
                continue
            held = await self._beat(conn, liveness)
            if held and not self.holds_lock:
                self.holds_lock = True
                self._transition(True)  # wakes wait_connected(lock=True)
            self.holds_lock = held

    async def _beat(self, conn: Connection, liveness: Liveness) -> bool:
        """Renew the lease on the listener's connection: whether the lock is held. A failure
        that leaves the connection open (a read-only server, a statement timeout) is reported
        through health and does not drop the LISTEN (nor the lock, if it is held)."""
        try:
            return bool(await liveness.beat(conn))
        except AsyncFlowError as exc:
            if conn.is_closed():
                raise
            liveness.monitor.failed(exc)
            return self.holds_lock

    async def _check_wakeups(self, now: float) -> None:
        """Send a probe NOTIFY through the pool every PROBE_EVERY seconds; one not received
        within PROBE_WITHIN marks wake-ups lost (say, a transaction pooler between the listener
        and the server): health turns unhealthy instead of every wait silently timing out."""
        probe = self._probe
        if probe is not None:
            if now - probe[1] >= PROBE_WITHIN:
                self._probe = None
                self.wakeups.failed(DatabaseUnavailableError(
                    "a NOTIFY committed through the connection pool did not reach the LISTEN "
                    "connection: wake-ups are lost (a transaction pooler in front of the "
                    "server? give the listener a direct connection with listen_url)"))
            return
        if self._probed_at is not None and now - self._probed_at < PROBE_EVERY:
            return
        if self._storage.pool.busy:
            return  # never hold up the heartbeats for a pool connection: probe next time
        token = secrets.token_hex(8)
        self._probe, self._probed_at = (token, now), now
        try:
            await self._store.probe_wakeups(token)
        except Exception as exc:  # the pool is away: other components report it
            self._probe = None
            logger.debug("asyncflow wake-up probe not sent: %r", exc)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        delay = 0.05
        loop = asyncio.get_running_loop()
        while True:
            conn: Connection | None = None
            try:
                conn, lost, interval = await self._open(first=not started)
                self._transition(True)
                self.monitor.ok()
                if started:
                    self.reconnects += 1
                    self.reconnected_at = loop.time()
                    logger.info("asyncflow listener reconnected")
                # Anything may have happened while we were not listening: everyone re-checks.
                self._registry.wake_all()
                if not started:
                    started = True
                    task_status.started()
                elif self._on_reconnect is not None:
                    self._on_reconnect(self._server_changed)
                delay = 0.05
                await self._hold(conn, lost, interval)
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
            # While the listener is down, the lease is renewed through the pool if it answers.
            if self.liveness is not None and not self._storage.pool.busy:
                try:
                    with anyio.move_on_after(self.liveness.interval):
                        await self.liveness.beat(None)
                except Exception as exc:  # the database is away: the listener reports it
                    logger.debug("asyncflow heartbeat through the pool failed: %r", exc)
            # Reconnect backoff (not a wait for database state).
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
