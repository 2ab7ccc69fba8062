"""What the app and the Client share: lifecycle, the listener, and operations from outside.

Every wait follows the same order: register interest in the waiter registry, check the database,
then wait for a wake-up (NOTIFY, a local commit, or a listener reconnect). A check that fails
because the database is unreachable is retried (woken early by the listener's reconnect) until
the wait's own deadline: a parked waiter outlives a Postgres restart.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import anyio.abc

from . import _codec, _notify
from . import _queries as Q
from ._context import current_workflow
from ._errors import (
    AsyncFlowTimeoutError,
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    MaxRecoveryAttemptsExceededError,
    NotLaunchedError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from ._handle import (
    CANCELLED,
    ERROR,
    MAX_RECOVERY_ATTEMPTS_EXCEEDED,
    PENDING,
    SUCCESS,
    StepInfo,
    WorkflowHandle,
    WorkflowStatus,
)
from ._storage import Storage

STREAM_BATCH = 500
T = TypeVar("T")


async def checked(
    event: asyncio.Event, deadline: float | None, check: Callable[[], Awaitable[T]]
) -> T:
    """Run a wait's read-only database check. While the database is unreachable, retry with
    backoff, at once when ``event`` is set (the listener's reconnect sets every waiter's event);
    once the wait's ``deadline`` (loop time) has passed, raise the DatabaseUnavailableError."""
    loop = asyncio.get_running_loop()
    delay = 0.05
    while True:
        try:
            return await check()
        except DatabaseUnavailableError:
            now = loop.time()
            if deadline is not None and now >= deadline:
                raise
            retry_at = now + delay if deadline is None else min(deadline, now + delay)
            await _notify.wait_until(event, retry_at)
            event.clear()
            delay = min(delay * 2, 2.0)


def check_stream_args(workflow_id: str, key: str, offset: int) -> None:
    _codec.check_id(workflow_id)
    _codec.check_name(key, "key")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidArgumentError(f"offset must be an int >= 0, not {offset!r}")


def stream_page(workflow_id: str, rows: list[Any]) -> tuple[list[tuple[int, Any]], bool]:
    """Decode one ``READ_STREAM`` result: its ``(offset, value)`` entries, and whether the stream
    has ended (closed, or its workflow finished) as of that snapshot."""
    if not rows:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
    entries = [
        (row["offset"], _codec.loads(row["value"])) for row in rows if row["offset"] is not None
    ]
    first = rows[0]
    return entries, bool(first["closed"]) or first["status"] != PENDING


class Core:
    """Lifecycle and the operations that work the same from an app and from a Client."""

    _executor_id: str | None = None

    def __init__(
        self,
        database_url: str | None,
        *,
        schema: str,
        pool_size: int,
        data_dir: str | os.PathLike[str] | None,
    ) -> None:
        try:
            Q.quote_schema(schema)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self._database_url = database_url
        self._schema = schema
        self._pool_size = pool_size
        self._data_dir = data_dir
        self._registry = _notify.WaitRegistry()
        self._storage: Storage | None = None
        self._listener: _notify.Listener | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = False

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def storage(self) -> Storage:
        if self._storage is None or self._tg is None:
            raise NotLaunchedError(
                f"{type(self).__name__} is not running: use `async with` (or `await launch()`) "
                "before calling it, and not after `shutdown()`"
            )
        return self._storage

    @property
    def database_url(self) -> str:
        """The URL in use (resolved at launch)."""
        return self.storage.url

    @property
    def listener(self) -> _notify.Listener:
        if self._listener is None:
            raise NotLaunchedError(f"{type(self).__name__} is not running")
        return self._listener

    async def _prepare_schema(self, storage: Storage) -> None:
        raise NotImplementedError

    async def _start_background(self, tg: anyio.abc.TaskGroup) -> None:
        """Hook for the app: start the supervisor and recover workflows."""

    def _on_notify(self, payload: str) -> None:
        """Hook for the app: react to a notification (after waiters were woken)."""

    async def launch(self) -> None:
        """Connect, prepare the schema, and start the listener (and, for an app, recovery).

        Call :meth:`shutdown` from the same task (``async with`` does both).
        """
        if self._tg is not None:
            return
        from ._embedded import resolve_database_url

        url = await resolve_database_url(self._database_url, self._data_dir)
        storage = Storage(url, self._schema, pool_size=self._pool_size)
        await storage.open()
        tg = anyio.create_task_group()
        entered = False
        try:
            await self._prepare_schema(storage)
            await tg.__aenter__()
            entered = True
            self._storage, self._tg = storage, tg
            self._listener = _notify.Listener(
                storage,
                self._registry,
                executor_id=self._executor_id,
                on_notify=self._on_notify,
            )
            await tg.start(self._listener.run)
            await self._start_background(tg)
        except BaseException as exc:
            self._storage = self._tg = None
            if entered:
                tg.cancel_scope.cancel()
                try:
                    await tg.__aexit__(type(exc), exc, exc.__traceback__)
                except BaseException:
                    pass
            await storage.close()
            raise

    async def shutdown(self) -> None:
        """Stop background work and close connections. Running workflows stay PENDING and are
        resumed by the next launch of this executor or by another executor's supervisor."""
        await self._stop(None, None, None)

    async def _stop(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, storage = self._tg, self._storage
        if tg is None or self._closing:
            return None
        self._closing = True
        tg.cancel_scope.cancel()
        try:
            # The body's own exception (if any) propagates unchanged: it is not handed to the
            # task group, which would wrap it in an ExceptionGroup.
            await tg.__aexit__(None, None, None)
            return None
        finally:
            self._tg = None
            self._closing = False
            self._storage = None
            self._listener = None
            # Waiters outside the task group (e.g. a web request reading a stream) re-check
            # and get NotLaunchedError instead of waiting forever.
            self._registry.wake_all()
            if storage is not None:
                with anyio.CancelScope(shield=True):
                    await storage.close()

    async def __aenter__(self) -> Self:
        await self.launch()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._stop(exc_type, exc, tb)

    # -- workflows ------------------------------------------------------------------------------

    def _handle(self, workflow_id: str) -> WorkflowHandle[Any]:
        return WorkflowHandle(self, workflow_id)

    async def retrieve_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle to an existing workflow; :class:`WorkflowNotFoundError` if there is none."""
        _codec.check_id(workflow_id)
        if not await self.storage.fetchval(Q.WORKFLOW_EXISTS, workflow_id):
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        return self._handle(workflow_id)

    async def get_workflow_status(self, workflow_id: str) -> WorkflowStatus:
        """The current status of a workflow (never blocks)."""
        _codec.check_id(workflow_id)
        row = await self.storage.fetchrow(Q.WORKFLOW_STATUS, workflow_id)
        if row is None:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        return WorkflowStatus.from_row(row)

    async def list_workflows(
        self, status: str | None = None, name: str | None = None, limit: int = 100
    ) -> list[WorkflowStatus]:
        """Workflows, newest first, optionally filtered by status and/or name."""
        _codec.check_name(status, "status", optional=True)
        _codec.check_name(name, "name", optional=True)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidArgumentError(f"limit must be an int >= 0, not {limit!r}")
        rows = await self.storage.fetch(Q.LIST_WORKFLOWS, status, name, limit)
        return [WorkflowStatus.from_row(row) for row in rows]

    async def list_workflow_steps(self, workflow_id: str) -> list[StepInfo]:
        """The journal of a workflow: every recorded operation, in function-id order."""
        _codec.check_id(workflow_id)
        storage = self.storage
        rows = await storage.fetch(Q.LIST_OPERATIONS, workflow_id)
        if not rows and not await storage.fetchval(Q.WORKFLOW_EXISTS, workflow_id):
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        return [StepInfo.from_row(row) for row in rows]

    async def wait_result(self, workflow_id: str, timeout_seconds: float | None) -> Any:
        """Wait for a workflow's terminal status and return (or raise) its outcome."""
        _codec.check_id(workflow_id)
        loop = asyncio.get_running_loop()
        deadline = None
        if timeout_seconds is not None:
            deadline = loop.time() + _codec.check_timeout(timeout_seconds)
        keys = [(_notify.TERMINAL, workflow_id)]
        waiter = current_workflow()
        if waiter is not None:  # a workflow awaiting a child: its own cancellation wakes it
            keys.append((_notify.TERMINAL, waiter.workflow_id))
        storage = self.storage
        with self._registry.watch(*keys) as event:
            while True:
                handed = event.handed.get((_notify.TERMINAL, workflow_id))
                if handed is not None:  # finished in this process: its outcome was handed over
                    return self._outcome(workflow_id, *handed)
                event.clear()
                row = await checked(
                    event, deadline, partial(storage.fetchrow, Q.WORKFLOW_RESULT, workflow_id)
                )
                if row is None:
                    raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
                status = row["status"]
                if status != PENDING:
                    return self._outcome(workflow_id, status, row["output"], row["error"])
                if waiter is not None:
                    await self._ensure_waiter_running(waiter.workflow_id)
                if deadline is not None and loop.time() >= deadline:
                    raise AsyncFlowTimeoutError(
                        f"workflow {workflow_id!r} did not finish within {timeout_seconds} seconds"
                    )
                await self._registry.park(event, deadline)

    async def _ensure_waiter_running(self, workflow_id: str) -> None:
        """Hook for the app: raise if the waiting workflow itself was cancelled."""

    @staticmethod
    def _outcome(workflow_id: str, status: str, output: str | None, error: str | None) -> Any:
        if status == SUCCESS:
            return None if output is None else _codec.loads(output)
        if status == ERROR and error is not None:
            raise _codec.decode_error(error, WorkflowFailedError)
        if status == CANCELLED:
            raise WorkflowCancelledError(f"workflow {workflow_id!r} was cancelled")
        if status == MAX_RECOVERY_ATTEMPTS_EXCEEDED:
            raise MaxRecoveryAttemptsExceededError(
                f"workflow {workflow_id!r} exceeded its maximum recovery attempts and was moved "
                "to MAX_RECOVERY_ATTEMPTS_EXCEEDED; fix the cause, then resume_workflow() it"
            )
        raise WorkflowFailedError("unknown", f"workflow ended with status {status}", "")

    async def cancel_workflow(self, workflow_id: str) -> None:
        """Cancel a PENDING workflow: it stops at its next durable operation, and a wait it is
        parked in (recv, sleep, get_event, child result) wakes at once. Finished workflows are
        left as they are."""
        _codec.check_id(workflow_id)
        row = await self.storage.fetchrow(Q.CANCEL_WORKFLOW, workflow_id, self.storage.channel)
        assert row is not None
        if not row["found"]:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        if row["cancelled"]:
            self._after_cancel(workflow_id)

    def _after_cancel(self, workflow_id: str) -> None:
        self._registry.wake(_notify.TERMINAL, workflow_id)

    async def _resume(self, workflow_id: str, executor_id: str | None) -> Any:
        _codec.check_id(workflow_id)
        row = await self.storage.fetchrow(
            Q.RESUME_WORKFLOW, workflow_id, executor_id, self.storage.channel
        )
        assert row is not None
        if not row["found"]:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        return row

    # -- messages -------------------------------------------------------------------------------

    async def _send_outside(
        self, destination_id: str, message: Any, topic: str | None, idempotency_key: str | None
    ) -> None:
        _codec.check_id(destination_id, "destination_id")
        _codec.check_name(topic, "topic", optional=True)
        _codec.check_name(idempotency_key, "idempotency_key", optional=True)
        text = _codec.dumps(message, "message")
        storage = self.storage
        if idempotency_key is None:
            await storage.execute(Q.SEND_MESSAGE, destination_id, topic, text, storage.channel)
        else:
            await storage.execute(
                Q.SEND_MESSAGE_ONCE, destination_id, topic, text, storage.channel, idempotency_key
            )
        self._registry.wake(_notify.MESSAGE, destination_id)

    # -- events ---------------------------------------------------------------------------------

    async def _get_event_outside(
        self, workflow_id: str, key: str, timeout_seconds: float
    ) -> Any:
        _codec.check_id(workflow_id)
        _codec.check_name(key, "key")
        timeout = _codec.check_timeout(timeout_seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        storage = self.storage
        with self._registry.watch((_notify.EVENT, workflow_id)) as event:
            while True:
                event.clear()
                row = await checked(
                    event, deadline, partial(storage.fetchrow, Q.GET_EVENT, workflow_id, key, None)
                )
                assert row is not None
                if not row["found"]:
                    raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
                if row["value"] is not None:
                    return _codec.loads(row["value"])
                if loop.time() >= deadline:
                    return None
                await self._registry.park(event, deadline)

    async def get_all_events(self, workflow_id: str) -> dict[str, Any]:
        """A snapshot of every event of a workflow, ``{key: latest value}``; never blocks."""
        _codec.check_id(workflow_id)
        storage = self.storage
        rows = await storage.fetch(Q.GET_ALL_EVENTS, workflow_id)
        if not rows and not await storage.fetchval(Q.WORKFLOW_EXISTS, workflow_id):
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        return {row["key"]: _codec.loads(row["value"]) for row in rows}

    # -- streams --------------------------------------------------------------------------------

    async def stream_entries(
        self, workflow_id: str, key: str, *, offset: int = 0
    ) -> AsyncIterator[tuple[int, Any]]:
        """Like :meth:`read_stream` but yields ``(offset, value)`` pairs."""
        check_stream_args(workflow_id, key, offset)
        storage = self.storage
        keys = [(_notify.STREAM, workflow_id), (_notify.TERMINAL, workflow_id)]
        waiter = current_workflow()
        if waiter is not None:  # read inside a workflow: its own cancellation wakes it
            keys.append((_notify.TERMINAL, waiter.workflow_id))
        with self._registry.watch(*keys) as event:
            while True:
                event.clear()
                if waiter is not None:
                    await self._ensure_waiter_running(waiter.workflow_id)
                rows = await checked(event, None, partial(
                    storage.fetch, Q.READ_STREAM, workflow_id, key, offset, STREAM_BATCH
                ))
                entries, ended = stream_page(workflow_id, rows)
                for entry in entries:
                    offset = entry[0] + 1
                    yield entry
                if len(entries) == STREAM_BATCH:
                    continue
                if ended:
                    return
                await self._registry.park(event)

    async def read_stream(
        self, workflow_id: str, key: str, *, offset: int = 0
    ) -> AsyncIterator[Any]:
        """Yield every value of a workflow's stream in order, from ``offset`` on.

        Parks at the tail until more is written (woken by NOTIFY); ends when the stream is
        closed or the writing workflow ends (success, error or cancellation).
        """
        async for _offset, value in self.stream_entries(workflow_id, key, offset=offset):
            yield value
