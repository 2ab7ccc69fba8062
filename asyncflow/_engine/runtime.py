"""The runtime: what a launched app or client shares with the code that runs under it.

Made at launch, dropped at shutdown. Workflow contexts, the supervisor, the web helpers and the
client reach the database, the waiter registry and the task group only through it; nothing
below the app reaches into the app.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio.abc

from .._core.health import Monitor
from .._core.inflight import InFlight
from .._core.telemetry import Instruments
from .._core.wait import STREAM, WaitRegistry
from .._errors import NotLaunchedError
from .._status import Health
from .._storage.listener import Listener
from .._storage.store import Store
from .executions import Executions


class Runtime:
    """The store, the waiter registry, the listener and the task group of one running app or
    client, plus its executor id (``None`` for a client)."""

    __slots__ = ("clock_offset", "closing", "executions", "executor_id", "listener", "monitors",
                 "on_checkpoint", "on_operation", "opening", "sends", "store", "telemetry", "tg",
                 "waits")

    def __init__(
        self,
        store: Store,
        waits: WaitRegistry,
        listener: Listener,
        tg: anyio.abc.TaskGroup,
        executor_id: str | None,
    ) -> None:
        self.store = store
        self.waits = waits
        #: Sends of this process in flight, by destination (a recv starting meanwhile waits for
        #: them, and takes the message in its first statement).
        self.sends = InFlight()
        self.opening = InFlight()  # recvs journaling their first attempt, by workflow id
        # A journaled stream write or close is handed to local readers as soon as it committed.
        store.on_stream_committed = self._stream_committed
        self.listener = listener
        self.tg = tg
        #: Where ``spawn`` runs tasks: plain asyncio tasks the task group cancels and waits for.
        self.executions = Executions(tg)
        self.executor_id = executor_id
        self.closing = False
        self.monitors: dict[str, Monitor] = {"listener": listener.monitor,
                                             "wakeups": listener.wakeups}
        if listener.liveness is not None:
            self.monitors["liveness"] = listener.liveness.monitor
        #: Seconds added to the wall clock of durable timers (``asyncflow.testing`` moves it).
        self.clock_offset = 0.0
        #: Called with (workflow id, function id) as each durable operation of a workflow is
        #: reserved (``asyncflow.testing`` uses it to simulate crashes); ``None`` normally.
        self.on_operation: Callable[[str, int], None] | None = None
        #: Called with (workflow id, function id, operation name) just before an operation's
        #: journal entry is written through ``_engine.journal.record`` -- after a step's body ran,
        #: before its checkpoint (``asyncflow.testing`` simulates crashes there); ``None``
        #: normally.
        self.on_checkpoint: Callable[[str, int, str], None] | None = None
        #: OpenTelemetry instruments while telemetry is on, else ``None`` (set at launch).
        self.telemetry: Instruments | None = None

    def _stream_committed(self, workflow_id: str, key: str, offset: int,
                          text: str | None) -> None:
        self.waits.wake(STREAM, workflow_id, (key, offset, text))

    def now(self) -> float:
        """The wall-clock time durable timers (sleep, recv/get_event deadlines) go by."""
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move durable timers' clock forward and let every waiter look again."""
        self.clock_offset += seconds
        self.waits.wake_all()

    def health(self) -> Health:
        components = {name: m.snapshot() for name, m in self.monitors.items()}
        healthy = not self.closing and all(c.healthy for c in components.values())
        return Health(healthy=healthy, running=not self.closing, components=components)

    def spawn(self, fn: Any, *args: Any, name: str) -> bool:
        """Run ``fn(*args)`` as a task the task group cancels and waits for (see
        :mod:`.executions`); False once shutting down."""
        if self.closing:
            return False
        self.executions.start(fn, args, name)
        return True


def not_launched(what: str) -> NotLaunchedError:
    return NotLaunchedError(
        f"{what} is not running: use `async with` (or `await launch()`) before calling it, and "
        "not after `shutdown()`"
    )
