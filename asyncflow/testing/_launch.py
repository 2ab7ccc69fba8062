"""Running an app for a test: on the test's database, in a task of its own, relaunchable.

An app's launch and shutdown must happen in the same task (its task group lives there).
:func:`launched` runs them in a host task of their own, so the ``async with`` block may be entered
in a fixture and left in another task (pytest-asyncio runs a fixture's set-up and tear-down in
different tasks), and :func:`relaunch` can stop and start the app from anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator

from .._errors import ConfigurationError, ExecutorIdInUseError
from .._front.app import AsyncFlow
from ._control import check_app, control_of

#: Relaunching with the same executor id right after a shutdown may find the executor's lock
#: still held for a moment, by the old connection's backend on its way out: retry a few times.
RELAUNCH_ATTEMPTS = 8


class _Host:
    """The task an app runs in between its launch and its shutdown."""

    def __init__(self, app: AsyncFlow) -> None:
        self.app = app
        self.task: asyncio.Task[None] | None = None
        self.stop_event = asyncio.Event()

    async def start(self, *, retry: bool) -> None:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stop_event = asyncio.Event()
        self.task = asyncio.create_task(self._run(started, retry),
                                        name=f"asyncflow app {self.app.executor_id}")
        await started

    async def _run(self, started: asyncio.Future[None], retry: bool) -> None:
        try:
            await launch(self.app, retry=retry)
        except BaseException as exc:
            if not started.done():
                if isinstance(exc, asyncio.CancelledError):
                    started.cancel()
                else:
                    started.set_exception(exc)
            return
        started.set_result(None)
        try:
            await self.stop_event.wait()
        finally:
            await self.app.shutdown()

    async def stop(self) -> None:
        task = self.task
        if task is None:
            return
        self.task = None
        self.stop_event.set()
        await asyncio.shield(task)


_hosts: weakref.WeakKeyDictionary[AsyncFlow, _Host] = weakref.WeakKeyDictionary()


async def launch(app: AsyncFlow, *, retry: bool) -> None:
    """``app.launch()``; with ``retry``, wait out our own previous executor lock (backoff)."""
    delay = 0.05
    for attempt in range(RELAUNCH_ATTEMPTS):
        try:
            await app.launch()
            return
        except ExecutorIdInUseError:
            if not retry or attempt == RELAUNCH_ATTEMPTS - 1:
                raise
        await asyncio.sleep(delay)  # retry backoff
        delay *= 2


async def relaunch(app: AsyncFlow) -> None:
    """Shut ``app`` down and launch it again, with the same executor id: the launch recovers
    this executor's ``PENDING`` workflows from their journals, as a restarted process would.

    Returns once the app runs again (the recovered workflows started). An app from
    :func:`launched` (or the ``asyncflow_app`` fixture) is relaunched in its own task; an app you
    launched yourself is relaunched in the calling task, which must be the one that launched it.
    """
    control_of(check_app(app))  # the test clock and the hooks carry over to the new runtime
    host = _hosts.get(app)
    if host is not None and host.task is not None:
        await host.stop()
        await host.start(retry=True)
        return
    await app.shutdown()
    await launch(app, retry=True)


@contextlib.asynccontextmanager
async def launched(app: AsyncFlow, database_url: str | None = None) -> AsyncIterator[AsyncFlow]:
    """Run ``app`` for the block: launched in a task of its own, shut down at the end.

    With ``database_url``, the app uses that database for the block (it must not be running),
    then gets back the URL it was made with. The block may be left from another task than the
    one that entered it (a pytest-asyncio fixture's tear-down), and :func:`relaunch` works from
    any task. The ``asyncflow_app`` fixture is this, on the test's own database.
    """
    check_app(app)
    if app._runtime is not None:
        raise ConfigurationError(
            "this app is already running: asyncflow.testing launches it itself (leave out your "
            "own `async with app:` / `launch()`)")
    if _hosts.get(app) is not None:
        raise ConfigurationError("this app is already running in another `launched` block")
    original = app._database_url
    if database_url is not None:
        app._database_url = database_url
    host = _hosts[app] = _Host(app)
    try:
        control_of(app)
        await host.start(retry=False)
        yield app
    finally:
        try:
            await host.stop()
        finally:
            _hosts.pop(app, None)
            app._database_url = original
