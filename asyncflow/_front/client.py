"""The Client: talk to workflows from code outside the app's process."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

from .. import _codec
from .._core.telemetry import Telemetry
from .._core.wait import QUEUE
from .._errors import SchemaVersionError, WorkflowConflictError
from .._operations.enqueue_args import NO_VERSION, enqueue_request, many_requests
from .._operations.queues import enqueue_many_with_ids, enqueue_with_id
from .._primitives.events import get_event_outside
from .._primitives.handle import WorkflowHandle
from .._primitives.messages import send_outside
from .._signature import reader
from .._status import Delivery
from .._storage.database import Storage
from .._storage.embedded import schema_hint
from .history import HistoryOps

T = TypeVar("T")


class Client(HistoryOps):
    """Connects to an asyncflow database from another process (a web tier, a script, a CLI).

    Use as ``async with Client(database_url) as client:``. It has its own LISTEN connection, so
    its waits (``get_event``, ``read_stream``, ``get_result``) are woken by NOTIFY as well. It
    never creates or migrates the schema; it checks the schema version when it connects.
    ``telemetry``: as for :class:`AsyncFlow` (its sends carry the caller's trace context);
    ``listen_url`` (default ``ASYNCFLOW_LISTEN_URL``): a direct or session-mode URL of the same
    database for the LISTEN connection when ``database_url`` is a transaction pooler;
    ``connect_options``: keyword arguments for ``asyncpg.connect`` (``ssl``,
    ``statement_cache_size``, ``command_timeout`` — default 60 s —, ``server_settings``, …).
    See docs/operations.md, "Deploying on managed Postgres".
    """

    _creates_schema = False

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str = "asyncflow",
        pool_size: int = 4,
        data_dir: str | os.PathLike[str] | None = None,
        telemetry: bool | Telemetry | None = None,
        listen_url: str | None = None,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(database_url, schema=schema, pool_size=pool_size, data_dir=data_dir,
                         telemetry=telemetry, listen_url=listen_url,
                         connect_options=connect_options)

    async def _prepare_schema(self, storage: Storage) -> None:
        try:
            await storage.check_schema()
        except SchemaVersionError as exc:
            hint = schema_hint(storage.url)  # which embedded server this is, if it is one
            if hint is None:
                raise
            raise SchemaVersionError(f"{exc}. {hint}") from None

    async def send(
        self,
        destination_id: str,
        message: Any,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Delivery:
        """Send a message to a workflow. With ``idempotency_key``, repeated sends with the same
        key deliver once, even after the first was consumed. Never blocks on the receiver.

        Returns what became of it (:class:`Delivery`): ``DELIVERED`` to a workflow that has not
        ended, ``DUPLICATE`` (the key was sent before: nothing delivered), or ``WORKFLOW_ENDED``
        (stored, but nothing receives it unless the workflow is resumed). An unknown workflow id
        raises :class:`WorkflowNotFoundError`."""
        text = _codec.check_message(destination_id, message, topic, idempotency_key)
        return await send_outside(self.runtime, destination_id, text, topic, idempotency_key)

    @overload
    async def get_event(self, workflow_id: str, key: str,
                        timeout_seconds: float = 60) -> Any: ...
    @overload
    async def get_event(self, workflow_id: str, key: str, timeout_seconds: float = 60, *,
                        type: type[T]) -> T | None: ...
    @overload
    async def get_event(self, workflow_id: str, key: str, timeout_seconds: float = 60, *,
                        type: Any) -> Any: ...

    async def get_event(self, workflow_id: str, key: str, timeout_seconds: float = 60, *,
                        type: Any = None) -> Any:
        """Wait until the workflow sets event ``key``; its value, or ``None`` on timeout.
        ``type``: the annotation to decode the value by (without it: plain JSON)."""
        _codec.check_id(workflow_id)
        _codec.check_name(key, "key")
        timeout_seconds = _codec.check_timeout(timeout_seconds)
        read = reader(type, f"event {key!r} of workflow {workflow_id!r}")
        value = await get_event_outside(self.runtime, workflow_id, key, timeout_seconds)
        return value if read is None else read(value)

    async def resume_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Resume a CANCELLED, ERROR or MAX_RECOVERY_ATTEMPTS_EXCEEDED workflow. It is left
        unassigned and a live app's recovery supervisor (woken by NOTIFY) claims and runs it."""
        _codec.check_id(workflow_id)
        runtime = self.runtime
        resumed = await runtime.store.resume_workflow(workflow_id, None)
        if resumed is not None and resumed.queue_name is not None:
            runtime.waits.wake(QUEUE, resumed.queue_name)
        return self._handle(workflow_id)

    async def start_workflow(
        self, workflow_name: str, *args: Any, workflow_id: str | None = None, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """Start workflow ``workflow_name`` (its registered name) with ``args`` and ``kwargs``
        from a process that does not have the function; returns its handle once it is durable.

        The workflow is left unassigned, and the recovery supervisor of a live app that
        registers that name (woken by NOTIFY) claims and runs it, on that app's version. Starting
        an id that exists returns that workflow (it never runs twice); under another workflow's
        name it raises :class:`WorkflowConflictError`. To start it on a queue, use
        :meth:`enqueue`.
        """
        _codec.check_id(workflow_name, "workflow_name")
        new_id = secrets.token_hex(16) if workflow_id is None else _codec.check_id(workflow_id)
        inputs = _codec.dumps({"args": list(args), "kwargs": kwargs},
                              f"the arguments of workflow {workflow_name!r}")
        created, name = await self.runtime.store.insert_unassigned_workflow(
            new_id, workflow_name, inputs)
        if not created and name != workflow_name:
            raise WorkflowConflictError(
                f"workflow id {new_id!r} is already used by workflow {name!r}, not "
                f"{workflow_name!r}; choose another id")
        return self._handle(new_id)

    async def enqueue(
        self,
        queue_name: str,
        workflow_name: str,
        *args: Any,
        workflow_id: str | None = None,
        priority: int = 0,
        deduplication_id: str | None = None,
        delay_seconds: float = 0,
        partition_key: str | None = None,
        on_duplicate: str = "raise",
        timeout_seconds: float | None = None,
        **kwargs: Any,
    ) -> WorkflowHandle[Any]:
        """Enqueue workflow ``workflow_name`` (its registered name: ``name=`` of
        ``@app.workflow``, else the function's ``__qualname__``) on queue ``queue_name``, from a
        process that does not have the function; returns its handle once it is durable.

        Any app that registers the queue and a workflow of that name runs it, whatever its app
        version (a queued workflow that never ran has no journal yet). The options are those of
        :meth:`Queue.enqueue` (without ``timeout_seconds``, the default timeout of the workflow
        function, if it has one, applies when a worker dispatches it).
        """
        _codec.check_id(queue_name, "queue name")
        _codec.check_id(workflow_name, "workflow_name")
        req = enqueue_request(
            queue_name, workflow_name, args, kwargs, workflow_id=workflow_id,
            priority=priority, deduplication_id=deduplication_id, delay_seconds=delay_seconds,
            partition_key=partition_key, on_duplicate=on_duplicate,
            timeout_seconds=timeout_seconds)
        runtime = self.runtime
        got = await enqueue_with_id(runtime, req, req.workflow_id or secrets.token_hex(16),
                                    NO_VERSION, None)
        return self._handle(got)

    async def enqueue_many(
        self,
        queue_name: str,
        workflow_name: str,
        calls: Iterable[tuple[Any, ...]],
        *,
        workflow_ids: Sequence[str] | None = None,
        priority: int = 0,
        delay_seconds: float = 0,
        partition_key: str | None = None,
        timeout_seconds: float | None = None,
    ) -> list[WorkflowHandle[Any]]:
        """Enqueue workflow ``workflow_name(*call)`` on queue ``queue_name`` for each tuple of
        positional arguments in ``calls``, in one statement (one round trip, one NOTIFY);
        returns their handles in the same order once every workflow is durable. They run
        first-in first-out in that order within their priority.

        The options are those of :meth:`Queue.enqueue_many` (``workflow_ids``: one id per call,
        an id that exists is that workflow's handle; no deduplication ids) and, as for
        :meth:`enqueue`, any app registering the queue and a workflow of that name runs them.
        """
        _codec.check_id(queue_name, "queue name")
        _codec.check_id(workflow_name, "workflow_name")
        reqs = many_requests(
            queue_name, workflow_name, calls, workflow_ids=workflow_ids, priority=priority,
            delay_seconds=delay_seconds, partition_key=partition_key,
            timeout_seconds=timeout_seconds)
        runtime = self.runtime
        if not reqs:
            return []
        ids = [req.workflow_id or secrets.token_hex(16) for req in reqs]
        got = await enqueue_many_with_ids(runtime, reqs, ids, NO_VERSION, None)
        return [self._handle(workflow_id) for workflow_id in got]
