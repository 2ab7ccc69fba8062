"""The runtime's tasks (workflow executions, dispatchers) as plain asyncio tasks held by one host.

A task group's ``start_soon`` costs 13-16 µs of CPU per task here (anyio makes a task handle,
a cancel scope and an event for each, every one asking sniffio which library runs); a queue
worker starting 20,000 workflows a second spends a third of its CPU there. Here a task costs an
``asyncio`` task and one cancel scope of its own (~5 µs), with the task group's guarantees kept:

* **cancellation** — the host is one task in the runtime's task group. When the group is
  cancelled (shutdown) the host cancels every task's scope: level-triggered, as the group's
  scope would (every await in the task raises until it leaves the scope; shielded scopes
  inside, such as a workflow's terminal write, are respected), then waits for all of them
  before it ends, so the group's exit still waits for every task;
* **failures** — a task ending with an exception (anything but its own cancellation) makes the
  host raise it in the task group, which cancels the group, as a failed task of the group does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.abc


class _Task:
    __slots__ = ("cancelled", "scope")

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


class Executions:
    """Runs coroutines as tasks that the runtime's task group cancels and waits for."""

    __slots__ = ("_failed", "_host_started", "_stopping", "_tasks", "_tg", "_wake")

    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg
        self._tasks: dict[asyncio.Task[None], _Task] = {}
        self._host_started = False
        self._stopping = False
        self._failed: BaseException | None = None
        self._wake: asyncio.Future[None] | None = None

    def start(self, fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...],
              name: str) -> None:
        """Run ``fn(*args)`` as a task of the runtime (in the caller's context, like
        ``start_soon``)."""
        if not self._host_started:
            self._host_started = True
            self._tg.start_soon(self._host, name="asyncflow executions")
        state = _Task()
        if self._stopping:
            state.cancelled = True  # started during shutdown: cancelled from its first await
        task = asyncio.get_running_loop().create_task(self._run(state, fn, args), name=name)
        self._tasks[task] = state
        task.add_done_callback(self._done)

    @staticmethod
    async def _run(state: _Task, fn: Callable[..., Coroutine[Any, Any, Any]],
                   args: tuple[Any, ...]) -> None:
        with anyio.CancelScope() as scope:
            state.scope = scope
            if state.cancelled:
                scope.cancel()
            await fn(*args)

    def _done(self, task: asyncio.Task[None]) -> None:
        del self._tasks[task]
        if not task.cancelled():
            exc = task.exception()
            if exc is not None and self._failed is None:
                self._failed = exc
        if self._wake is not None and not self._wake.done() and (
                self._failed is not None or (self._stopping and not self._tasks)):
            self._wake.set_result(None)

    async def _host(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._failed is None:
                self._wake = loop.create_future()
                await self._wake  # a task failed; or the group is cancelled (shutdown)
            failed, self._failed = self._failed, None
            raise failed
        finally:
            self._stopping = True
            with anyio.CancelScope(shield=True):
                while self._tasks:
                    for state in self._tasks.values():
                        state.cancel()
                    self._wake = loop.create_future()
                    await self._wake
