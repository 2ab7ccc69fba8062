"""What the app and the Client share: configuration, launch and shutdown, the runtime, health,
and the operations that work the same from both (outside any workflow)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, Self, TypeVar, overload

import anyio
import anyio.abc

from .. import _codec
from .._core.telemetry import Source, Telemetry, activate, check_option, detached
from .._core.wait import WaitRegistry
from .._engine.context import current_workflow, workflow_on
from .._engine.runtime import Runtime, not_launched
from .._errors import (
    AsyncFlowError,
    ConfigurationError,
    InvalidArgumentError,
    InvalidSettingError,
)
from .._operations.admin import Admin
from .._primitives.events import watch
from .._primitives.handle import WorkflowHandle
from .._primitives.streams import entries
from .._primitives.wait_first import (
    Branch,
    Fired,
    check_branches,
    wait_first_in_workflow,
    wait_first_outside,
)
from .._signature import Signature, decoded_items, reader
from .._status import Health, StepInfo, WorkflowStatus
from .._storage import sql
from .._storage.connect import connect_settings, resolve_listen_url
from .._storage.database import Storage
from .._storage.driver import refuse_in_replay
from .._storage.lease import Liveness
from .._storage.listener import Listener
from .._storage.pooler import check_paths
from .._storage.store import Store

MAX_BIGINT = 2**63 - 1
logger = logging.getLogger("asyncflow")
T = TypeVar("T")


def check_count(value: object, what: str) -> int:
    """An int in 0..2**63-1 (what Postgres's bigint holds)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BIGINT:
        raise InvalidArgumentError(f"{what} must be an int from 0 to 2**63-1, not {value!r}")
    return value


def setting(check: Callable[..., T], value: object, what: str, *args: Any) -> T:
    """Run a validator on a setting: its error becomes an :class:`InvalidSettingError`."""
    try:
        return check(value, what, *args)
    except InvalidArgumentError as exc:
        raise InvalidSettingError(str(exc)) from None


def check_seconds(value: object, what: str, minimum: float, why: str) -> float:
    """A number of seconds of at least ``minimum`` (``why``: the reason for the minimum)."""
    seconds = setting(_codec.check_timeout, value, what)
    if seconds < minimum:
        raise InvalidSettingError(f"{what} must be at least {minimum} ({why}), not {value!r}")
    return seconds


def check_positive_int(value: object, what: str, minimum: int = 1) -> int:
    """An int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidSettingError(f"{what} must be an int >= {minimum}, not {value!r}")
    return value


def check_stream_args(workflow_id: str, key: str, offset: int) -> None:
    _codec.check_id(workflow_id)
    _codec.check_name(key, "key")
    check_count(offset, "offset")


class Connected(Admin):
    """Lifecycle and the operations that work the same from an app and from a Client (those on
    workflows as a whole — listing, cancel, resume and delete in bulk, retention, send_many —
    come from :class:`asyncflow._operations.admin.Admin`)."""

    _executor_id: str | None = None
    #: Whether launching creates (migrates) the schema: an app does, a Client never does (so a
    #: Client does not start a new embedded server where there is none).
    _creates_schema = True
    #: An app's lease (``liveness_timeout_seconds``); unused by a client.
    _liveness_timeout: float = 10.0

    def __init__(
        self,
        database_url: str | None,
        *,
        schema: str,
        pool_size: int,
        data_dir: str | os.PathLike[str] | None,
        telemetry: bool | Telemetry | None = None,
        listen_url: str | None = None,
        connect_options: Mapping[str, Any] | None = None,
        migrate: bool = False,
    ) -> None:
        try:
            sql.quote_schema(schema)
        except ValueError as exc:
            raise InvalidSettingError(str(exc)) from None
        if schema.lower().startswith("pg_"):
            raise InvalidSettingError(
                f"schema {schema!r} is reserved: Postgres keeps names starting with pg_ for "
                "itself; choose another schema name"
            )
        check_positive_int(pool_size, "pool_size")
        check_option(telemetry)
        self._telemetry = telemetry
        self._unobserve: Callable[[], None] | None = None
        if database_url is not None and not isinstance(database_url, str):
            raise ConfigurationError(
                f"database_url must be a str, not {type(database_url).__name__}")
        self._database_url = database_url
        self._connect = connect_settings(listen_url, connect_options)
        if not isinstance(migrate, bool):
            raise InvalidSettingError(f"migrate must be a bool, not {migrate!r}")
        self._migrate = migrate  # an app's (a Client never migrates)
        self._schema = schema
        self._pool_size = pool_size
        self._data_dir = data_dir
        self._waits = WaitRegistry()
        self._runtime: Runtime | None = None
        self._storage: Storage | None = None
        #: Called with each new runtime before anything runs on it (``asyncflow.testing``
        #: carries its test clock and armed crashes across relaunches); ``None`` normally.
        self._prepare_runtime: Callable[[Runtime], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def runtime(self) -> Runtime:
        """The running runtime (internal; raises NotLaunchedError when not running)."""
        refuse_in_replay("an app's or client's connection")  # never in a history replay
        runtime = self._runtime
        if runtime is None or runtime.closing:
            raise not_launched(type(self).__name__)
        return runtime

    def _get_runtime(self) -> Runtime:
        return self.runtime

    @property
    def storage(self) -> Storage:
        """The connection pool (internal)."""
        return self.runtime.store.storage

    @property
    def listener(self) -> Listener:
        """The LISTEN connection (internal)."""
        return self.runtime.listener

    @property
    def database_url(self) -> str:
        """The URL in use (resolved at launch)."""
        return self.storage.url

    def health(self) -> Health:
        """The state of the background components (listener, supervisor): whether each works,
        and its last error while failing. They retry on their own; this only reports."""
        runtime = self._runtime
        if runtime is None:
            return Health(healthy=False, running=False, components={})
        return runtime.health()

    async def _prepare_schema(self, storage: Storage) -> None:
        """Create or upgrade the schema (an app, unless ``migrate=False``: then, as a Client
        does, only check its version)."""
        await (storage.migrate() if self._migrate else storage.check_schema())

    async def _start_background(self, runtime: Runtime) -> None:
        """Hook for the app: start the supervisor and recover workflows."""

    def _on_notify(self, kind: str, workflow_id: str) -> None:
        """Hook for the app: react to a notification (after waiters were woken)."""

    def _on_reconnect(self, server_changed: bool) -> None:
        """Hook for the app: the listener reconnected (to another server, if ``changed``)."""

    async def launch(self) -> None:
        """Connect, prepare the schema, and start the listener (and, for an app, recovery).

        Call :meth:`shutdown` from the same task (``async with`` does both).
        """
        if self._runtime is not None:
            return
        from .._storage.embedded import resolve_database_url

        url = await resolve_database_url(self._database_url, self._data_dir,
                                         create=self._creates_schema)
        settings = replace(self._connect, listen_url=resolve_listen_url(self._connect.listen_url))
        name = ("asyncflow-client" if self._executor_id is None
                else f"asyncflow:{self._executor_id}")
        storage = Storage(url, self._schema, pool_size=self._pool_size, settings=settings,
                          application_name=name)
        await storage.open()
        tg = anyio.create_task_group()
        entered = False
        try:
            await check_paths(storage)  # wake-ups must reach the listener
            await self._prepare_schema(storage)
            await tg.__aenter__()
            entered = True
            store = Store(storage)
            liveness = (None if self._executor_id is None
                        else Liveness(store, self._executor_id, self._liveness_timeout,
                                      self._executor_version()))
            listener = Listener(store, self._waits, liveness=liveness,
                                on_notify=self._on_notify, on_reconnect=self._on_reconnect)
            runtime = Runtime(store, self._waits, listener, tg, self._executor_id)
            self._observe(runtime)
            if self._prepare_runtime is not None:
                self._prepare_runtime(runtime)
            self._runtime = runtime
            # Background tasks (and what they spawn) start outside the caller's trace.
            with detached(runtime.telemetry):
                await tg.start(listener.run)
                await self._start_background(runtime)
        except BaseException as exc:
            self._runtime = None
            self._unobserved()
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
        await self._stop()

    async def _stop(self) -> None:
        runtime = self._runtime
        if runtime is None or runtime.closing:
            return
        runtime.closing = True
        runtime.tg.cancel_scope.cancel()
        try:
            # The body's own exception (if any) propagates unchanged: it is not handed to the
            # task group, which would wrap it in an ExceptionGroup.
            await runtime.tg.__aexit__(None, None, None)
        finally:
            self._runtime = None
            self._unobserved()
            self._stopped()
            # Waiters outside the task group (e.g. a web request reading a stream) re-check
            # and get NotLaunchedError instead of waiting forever.
            self._waits.wake_all()
            with anyio.CancelScope(shield=True):
                liveness = runtime.listener.liveness
                if liveness is not None:  # nothing runs any more: others may recover at once
                    try:
                        await liveness.retire()
                    except AsyncFlowError as exc:  # unreachable: others wait out the lease
                        logger.warning("asyncflow could not end executor %s's lease at "
                                       "shutdown (%s)", liveness.executor_id, exc)
                await runtime.store.storage.close()

    def _stopped(self) -> None:
        """Hook: forget per-launch state."""

    def _executor_version(self) -> str | None:
        """Hook for the app: the app version its executor runs (registered with its id)."""
        return None

    # -- telemetry ------------------------------------------------------------------------------

    def _observe(self, runtime: Runtime) -> None:
        """Turn telemetry on for this launch (if configured) and report this app or client
        through the observable metrics until it stops."""
        telemetry = runtime.telemetry = activate(self._telemetry)
        if telemetry is not None:
            listener = runtime.listener
            source = Source(self._executor_id, parked=self._waits.__len__,
                            reconnects=lambda: listener.reconnects, running=self._running_count)
            source.queue_depths = self._queue_depths
            self._unobserve = telemetry.observe(source)

    def _unobserved(self) -> None:
        if self._unobserve is not None:
            self._unobserve()
            self._unobserve = None

    def _running_count(self) -> int | None:
        """Hook for the app: how many workflows execute here (``None``: not reported)."""
        return None

    def _queue_depths(self) -> dict[str, int]:
        """Hook for the app: ``{queue: workflows waiting}`` as its dispatchers last counted."""
        return {}

    async def __aenter__(self) -> Self:
        await self.launch()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    # -- workflows ------------------------------------------------------------------------------

    def _handle(self, workflow_id: str, types: Signature | None = None) -> WorkflowHandle[Any]:
        return WorkflowHandle(self._get_runtime, workflow_id, types)

    async def retrieve_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle to an existing workflow; :class:`WorkflowNotFoundError` if there is none."""
        _codec.check_id(workflow_id)
        await self.runtime.store.workflow_status(workflow_id)
        return self._handle(workflow_id)

    async def get_workflow_status(self, workflow_id: str) -> WorkflowStatus:
        """The current status of a workflow (never blocks)."""
        _codec.check_id(workflow_id)
        return await self.runtime.store.workflow_status(workflow_id)

    async def list_workflow_operations(self, workflow_id: str) -> list[StepInfo]:
        """The journal of a workflow: every recorded operation (a step, transaction, send,
        recv, sleep, event, child start, …), in the order of their numbers (``function_id``:
        operation #0, #1, …)."""
        _codec.check_id(workflow_id)
        return await self.runtime.store.list_operations(workflow_id)

    async def list_workflow_steps(self, workflow_id: str) -> list[StepInfo]:
        """The older name of :meth:`list_workflow_operations` (the same journal)."""
        return await self.list_workflow_operations(workflow_id)

    # -- events and streams ---------------------------------------------------------------------

    async def get_all_events(self, workflow_id: str) -> dict[str, Any]:
        """A snapshot of every event of a workflow, ``{key: latest value}``; never blocks."""
        _codec.check_id(workflow_id)
        return await self.runtime.store.get_all_events(workflow_id)

    async def stream_entries(
        self, workflow_id: str, key: str, *, offset: int = 0, type: Any = None
    ) -> AsyncIterator[tuple[int, Any]]:
        """Like :meth:`read_stream` but yields ``(offset, value)`` pairs."""
        check_stream_args(workflow_id, key, offset)
        read = reader(type, f"a value of stream {key!r} of workflow {workflow_id!r}")
        runtime = self.runtime
        async for entry in entries(runtime, workflow_id, key, offset,
                                   current_workflow(runtime)):
            yield entry if read is None else (entry[0], read(entry[1]))

    @overload
    def watch_event(self, workflow_id: str, key: str) -> AsyncIterator[Any]: ...
    @overload
    def watch_event(self, workflow_id: str, key: str, *,
                    type: type[T]) -> AsyncIterator[T]: ...
    @overload
    def watch_event(self, workflow_id: str, key: str, *, type: Any) -> AsyncIterator[Any]: ...

    def watch_event(self, workflow_id: str, key: str, *, type: Any = None
                    ) -> AsyncIterator[Any]:
        """Yield the value of event ``key`` of a workflow now (if set) and after every change,
        until the workflow ends. Woken by NOTIFY; when several sets land between two reads the
        latest is yielded, and the value at the workflow's end is never lost. ``type``: the
        annotation to decode each value by (without it: plain JSON)."""
        _codec.check_id(workflow_id)
        _codec.check_name(key, "key")
        read = reader(type, f"event {key!r} of workflow {workflow_id!r}")
        values = watch(self.runtime, workflow_id, key)
        return values if read is None else decoded_items(values, read)

    def wait_first(self, *branches: Branch) -> Coroutine[Any, Any, Fired]:
        """Wait for the first ready branch (see :func:`asyncflow.wait_first`). Called inside a
        workflow of this app it is journaled; elsewhere it waits on events, workflow results and
        timers."""
        ctx = workflow_on(self._runtime)
        checked = check_branches(branches, in_workflow=ctx is not None)
        if ctx is not None:
            return wait_first_in_workflow(ctx, ctx.reserve(), checked)
        return wait_first_outside(self.runtime, checked)

    @overload
    def read_stream(self, workflow_id: str, key: str, *,
                    offset: int = 0) -> AsyncIterator[Any]: ...
    @overload
    def read_stream(self, workflow_id: str, key: str, *, offset: int = 0,
                    type: type[T]) -> AsyncIterator[T]: ...
    @overload
    def read_stream(self, workflow_id: str, key: str, *, offset: int = 0,
                    type: Any) -> AsyncIterator[Any]: ...

    async def read_stream(
        self, workflow_id: str, key: str, *, offset: int = 0, type: Any = None
    ) -> AsyncIterator[Any]:
        """Yield every value of a workflow's stream in order, from ``offset`` on.

        Parks at the tail until more is written (woken by NOTIFY); ends when the stream is
        closed or the writing workflow ends (success, error or cancellation). ``type``: the
        annotation to decode each value by (without it: plain JSON).
        """
        async for _offset, value in self.stream_entries(workflow_id, key, offset=offset,
                                                        type=type):
            yield value
