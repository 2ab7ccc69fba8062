"""A lean connection pool for asyncflow's own statements."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import asyncpg

from .._errors import NotLaunchedError
from .driver import Connection, PoolConnection, _configuration_errors, map_errors


class ConnectionPool:
    """A lean connection pool: at most ``size`` connections, reused last-in first-out.

    Release is synchronous (no reset round trip, no task per release): asyncflow's statements
    leave no session state, and connections that ran user code are reset by ``transaction()``.
    A closed connection is dropped on release and its slot handed to a waiter.

    ``command_timeout`` bounds each statement. A connection taken for one statement (what the
    storage's ``execute``/``fetch*`` do: nearly all of asyncflow's statements) is watched by
    one timer for the whole pool, set for the connection out longest, which closes a
    connection held longer (its statement then fails with the command-timeout error): the
    driver's own bound arms and cancels a timer per statement, about a sixth of a statement's
    CPU. A connection that runs a transaction (``exempt``: several statements, with other
    awaits between them) is bounded by the driver instead, statement by statement.
    """

    def __init__(self, url: str, size: int, options: dict[str, Any] | None = None) -> None:
        self._url = url
        options = dict(options or {})
        #: Seconds asyncflow's code may hold a connection (``None``: no bound).
        self.command_timeout: float | None = options.pop("command_timeout", None)
        self._options = {**options, "command_timeout": None}
        #: Connections out, in the order taken (so the first is the oldest): when each was.
        self._out: dict[Connection, float] = {}
        self._exempt: set[Connection] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._size = size
        self._idle: list[tuple[Connection, float]] = []  # with the loop time it became idle
        #: Idle connections older than this (seconds) are closed rather than reused: set below
        #: the server's idle_session_timeout, which would otherwise end them under a statement.
        self.max_idle: float | None = None
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._open = 0  # open or opening
        self._closed = False
        #: Backend pids of this pool's connections: NOTIFYs they send are echoes of local
        #: commits whose waiters were already woken in-process.
        self.pids: set[int] = set()
        # The pid of each open connection, kept here: a terminated connection cannot tell it.
        self._pid_of: dict[Connection, int] = {}
        #: Connections being opened, by tasks of the pool's own (see ``acquire``).
        self._opening: set[asyncio.Future[Connection]] = set()

    @property
    def size(self) -> int:
        return self._size

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def busy(self) -> bool:
        """Whether an acquire now would wait: no idle connection, and no room to open one."""
        return not self._idle and self._open >= self._size

    def take_idle(self) -> Connection | None:
        """An idle connection, taken without waiting; ``None`` when none is idle (then
        ``acquire``). The hot path of single statements: no coroutine of its own."""
        idle = self._idle
        while idle and not self._closed:
            conn, since = idle.pop()
            if not conn.is_closed():
                if self.max_idle is None or time.monotonic() - since < self.max_idle:
                    return self._watched(conn)
                conn.terminate()  # about to be ended by the server: open a fresh one
            self._open -= 1
            self.pids.discard(self._pid_of.pop(conn, 0))
        return None

    def _watched(self, conn: Connection) -> Connection:
        """``conn``, now out: under the watch when statements are bounded."""
        if self.command_timeout is not None:
            taken = self._out[conn] = time.monotonic()  # (the loop's clock: loop.time())
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_at(
                    taken + self.command_timeout, self._expire)
        return conn

    def exempt(self, conn: Connection) -> None:
        """``conn`` runs a transaction (for as long as it is out): the driver bounds each of
        its statements, the watch leaves it alone."""
        self._out.pop(conn, None)
        self._exempt.add(conn)
        conn.bound_each_statement(self.command_timeout)

    def _expire(self) -> None:
        """The watch: close every connection held past ``command_timeout``, then wait for the
        oldest one still out."""
        self._timer = None
        assert self.command_timeout is not None
        now = time.monotonic()
        for conn, taken in list(self._out.items()):
            if now - taken < self.command_timeout:
                self._timer = asyncio.get_running_loop().call_at(
                    taken + self.command_timeout, self._expire)
                return
            del self._out[conn]
            conn.timed_out = True
            conn.terminate()  # the statement under way fails with the command-timeout error

    async def acquire(self) -> Connection:
        """A connection: an idle one (see :meth:`take_idle`), a new one while there is room,
        else the next one released."""
        while True:
            if self._closed:
                raise NotLaunchedError("the connection pool is closed")
            idle = self.take_idle()
            if idle is not None:
                return idle
            if self._open < self._size:
                self._open += 1
                # Opened by a task of the pool's: a caller cancelled while it connects (a
                # client's deadline) leaves the connection to the pool rather than abandoning
                # a session the server has already started (a storm of short deadlines would
                # otherwise open sessions without end, none of them ever used).
                opening = asyncio.ensure_future(self._connect())
                self._opening.add(opening)
                opening.add_done_callback(self._opening.discard)
                try:
                    new = await asyncio.shield(opening)
                except asyncio.CancelledError:
                    if not opening.cancelled():  # the caller was, not the connect
                        opening.add_done_callback(self._opened_for_none)
                    elif self._closed and not _cancelling():  # the connect was, by close()
                        raise NotLaunchedError("the connection pool is closed") from None
                    raise
                return self._watched(new)
            waiter: asyncio.Future[Connection | None] = (
                asyncio.get_running_loop().create_future()
            )
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    got = waiter.result()
                    if got is not None:
                        self.release(got)
                    else:
                        self._hand(None)
                raise
            if handed is not None:
                return self._watched(handed)
            # None: a slot was freed (a connection was dropped): open one on the next turn.

    def release(self, conn: Connection) -> None:
        self._out.pop(conn, None)
        if conn in self._exempt:
            self._exempt.discard(conn)
            if not conn.is_closed():
                conn.bound_each_statement(None)
        if self._closed or conn.is_closed():
            if not conn.is_closed():
                conn.terminate()
            self._open -= 1
            self.pids.discard(self._pid_of.pop(conn, 0))
            self._hand(None)
        else:
            self._hand(conn)

    def _hand(self, conn: Connection | None) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append((conn, time.monotonic()))

    async def _connect(self) -> Connection:
        """Open a connection for a slot already counted in ``_open``; on failure the slot is
        freed (and handed to a waiter, which then opens one itself)."""
        try:
            with map_errors(), _configuration_errors(self._url):
                new: Connection = await asyncpg.connect(
                    self._url, connection_class=PoolConnection, **self._options)
            pid = self._pid_of[new] = new.get_server_pid()
            self.pids.add(pid)
            # Forget the pid the moment the connection is gone, so a backend that later gets
            # the same pid is never mistaken for ours.
            new.add_termination_listener(lambda _c, pid=pid: self.pids.discard(pid))
            return new
        except BaseException:
            self._open -= 1
            self._hand(None)
            raise

    def _opened_for_none(self, opening: asyncio.Future[Connection]) -> None:
        """A connection opened for a caller that was cancelled meanwhile: the pool's (idle, or
        to a waiter); a failure was already accounted for by ``_connect``."""
        if opening.cancelled() or opening.exception() is not None:
            return
        self.release(opening.result())

    async def close(self) -> None:
        self._closed = True
        opening = list(self._opening)
        for task in opening:
            task.cancel()
        await asyncio.gather(*opening, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(NotLaunchedError("the connection pool is closed"))
        self._waiters.clear()
        idle, self._idle = self._idle, []
        self.pids.clear()
        self._pid_of.clear()
        for conn, _since in idle:
            self._open -= 1
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:
                conn.terminate()


def _cancelling() -> bool:
    """Whether the current task is being cancelled."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
