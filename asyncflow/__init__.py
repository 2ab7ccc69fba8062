"""asyncflow: asyncio-native durable workflows on Postgres.

Workflows are ``async def`` functions whose steps are checkpointed in Postgres; after a crash
they resume where they stopped. They talk to the world with messages, events and streams, and
every wait is woken by LISTEN/NOTIFY.
"""

from ._codec import MAX_ID_LENGTH, MAX_VALUE_BYTES
from ._core.telemetry import Telemetry
from ._engine.context import connection, workflow_id
from ._engine.observe import logging_filter
from ._errors import (
    AsyncFlowError,
    AsyncFlowTimeoutError,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DecodeError,
    DistributionError,
    ExecutorIdInUseError,
    ExportFormatError,
    InvalidArgumentError,
    InvalidSettingError,
    MaxRecoveryAttemptsExceededError,
    NonDeterministicWorkflowError,
    NotInWorkflowError,
    NotLaunchedError,
    QueueDeduplicatedError,
    ReadOnlyDatabaseError,
    RecordedError,
    ReplayError,
    ScheduleConflictError,
    ScheduleNotFoundError,
    SchemaVersionError,
    SerializationError,
    StepFailedError,
    StepTimeoutError,
    StreamClosedError,
    TransactionStateError,
    ValueTooLargeError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowNotQueuedError,
    WorkflowPendingError,
    WorkflowTimeoutError,
)
from ._front.api import (
    close_stream,
    continue_as_new,
    get_all_events,
    get_event,
    read_stream,
    recv,
    send,
    set_attributes,
    set_event,
    sleep,
    start_workflow,
    wait_first,
    write_stream,
)
from ._front.app import AsyncFlow
from ._front.client import Client
from ._front.history import ImportResult
from ._operations.debounce import Debouncer
from ._operations.queues import Queue
from ._operations.replay import ReplayResult
from ._operations.retention import Retention
from ._primitives.handle import WorkflowHandle
from ._primitives.patch import deprecate_patch, patched
from ._primitives.wait_first import Branch, Fired, event, message, result, timer
from ._status import (
    CANCELLED,
    CONTINUED_AS_NEW,
    DELAYED,
    ENQUEUED,
    ERROR,
    MAX_RECOVERY_ATTEMPTS_EXCEEDED,
    PENDING,
    SUCCESS,
    ComponentHealth,
    Delivery,
    Health,
    Status,
    StepInfo,
    WorkflowStatus,
)
from ._storage.schedules import ScheduleStatus

__version__ = "0.1.0"

__all__ = [
    "AsyncFlow",
    "AsyncFlowError",
    "AsyncFlowTimeoutError",
    "Branch",
    "CANCELLED",
    "CONTINUED_AS_NEW",
    "Client",
    "ComponentHealth",
    "ConfigurationError",
    "DELAYED",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DecodeError",
    "DistributionError",
    "Delivery",
    "ENQUEUED",
    "ERROR",
    "ExecutorIdInUseError",
    "ExportFormatError",
    "Fired",
    "Health",
    "ImportResult",
    "InvalidArgumentError",
    "InvalidSettingError",
    "MAX_ID_LENGTH",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
    "MAX_VALUE_BYTES",
    "MaxRecoveryAttemptsExceededError",
    "NonDeterministicWorkflowError",
    "NotInWorkflowError",
    "NotLaunchedError",
    "PENDING",
    "Queue",
    "QueueDeduplicatedError",
    "ReadOnlyDatabaseError",
    "RecordedError",
    "ReplayError",
    "ReplayResult",
    "Retention",
    "SUCCESS",
    "SchemaVersionError",
    "SerializationError",
    "Status",
    "StepFailedError",
    "StepInfo",
    "StepTimeoutError",
    "StreamClosedError",
    "Telemetry",
    "TransactionStateError",
    "ValueTooLargeError",
    "WorkflowCancelledError",
    "WorkflowTimeoutError",
    "ScheduleNotFoundError",
    "ScheduleStatus",
    # issue 26 part B: debounce, runtime schedules, delayed workflows
    "Debouncer",
    "ScheduleConflictError",
    "WorkflowNotQueuedError",
    "WorkflowConflictError",
    "WorkflowFailedError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowPendingError",
    "WorkflowStatus",
    "__version__",
    "close_stream",
    "connection",
    "continue_as_new",
    "deprecate_patch",
    "event",
    "get_all_events",
    "get_event",
    "logging_filter",
    "message",
    "patched",
    "read_stream",
    "recv",
    "result",
    "send",
    "set_attributes",
    "set_event",
    "sleep",
    "start_workflow",
    "timer",
    "wait_first",
    "workflow_id",
    "write_stream",
]


_WEB = frozenset({"EventStream", "StreamSnapshot", "lifespan", "sse_response", "stream_snapshot"})


def __getattr__(name: str) -> object:
    """The web helpers moved to :mod:`asyncflow.web`; the old names still resolve there."""
    if name in _WEB:
        from . import web

        return getattr(web, name)
    raise AttributeError(f"module 'asyncflow' has no attribute {name!r}")


def _publish() -> None:
    """Exported classes and functions report ``asyncflow`` as their module (not the private
    module that defines them), so reprs, docs and recorded error types use public names."""
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) or callable(obj):
            try:
                obj.__module__ = __name__
            except (AttributeError, TypeError):
                pass


_publish()
