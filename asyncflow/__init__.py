"""asyncflow: asyncio-native durable workflows on Postgres.

Workflows are ``async def`` functions whose steps are checkpointed in Postgres; after a crash
they resume where they stopped. They talk to the world with messages, events and streams, and
every wait is woken by LISTEN/NOTIFY.
"""

from ._api import (
    close_stream,
    get_all_events,
    get_event,
    read_stream,
    recv,
    send,
    set_event,
    sleep,
    start_workflow,
    write_stream,
)
from ._client import Client
from ._codec import MAX_ID_LENGTH, MAX_VALUE_BYTES
from ._context import connection, workflow_id
from ._engine import AsyncFlow
from ._errors import (
    AsyncFlowError,
    AsyncFlowTimeoutError,
    ConfigurationError,
    DatabaseUnavailableError,
    ExecutorIdInUseError,
    InvalidArgumentError,
    MaxRecoveryAttemptsExceededError,
    NonDeterministicWorkflowError,
    NotInWorkflowError,
    NotLaunchedError,
    RecordedError,
    SchemaVersionError,
    SerializationError,
    StepFailedError,
    StreamClosedError,
    ValueTooLargeError,
    WorkflowCancelledError,
    WorkflowConflictError,
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
from .web import EventStream, StreamSnapshot, lifespan, sse_response, stream_snapshot

__version__ = "0.1.0"

__all__ = [
    "AsyncFlow",
    "AsyncFlowError",
    "AsyncFlowTimeoutError",
    "CANCELLED",
    "Client",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "ERROR",
    "EventStream",
    "ExecutorIdInUseError",
    "InvalidArgumentError",
    "MAX_ID_LENGTH",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
    "MAX_VALUE_BYTES",
    "MaxRecoveryAttemptsExceededError",
    "NonDeterministicWorkflowError",
    "NotInWorkflowError",
    "NotLaunchedError",
    "PENDING",
    "RecordedError",
    "SUCCESS",
    "SchemaVersionError",
    "SerializationError",
    "StepFailedError",
    "StepInfo",
    "StreamClosedError",
    "StreamSnapshot",
    "ValueTooLargeError",
    "WorkflowCancelledError",
    "WorkflowConflictError",
    "WorkflowFailedError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowStatus",
    "__version__",
    "close_stream",
    "connection",
    "get_all_events",
    "get_event",
    "lifespan",
    "read_stream",
    "recv",
    "send",
    "set_event",
    "sleep",
    "sse_response",
    "start_workflow",
    "stream_snapshot",
    "workflow_id",
    "write_stream",
]
