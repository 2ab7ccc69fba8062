"""The exception hierarchy. Every error asyncflow raises derives from :class:`AsyncFlowError`."""

from __future__ import annotations


class AsyncFlowError(Exception):
    """Base class of every error raised by asyncflow."""


class ConfigurationError(AsyncFlowError):
    """The app or client is configured in a way that cannot work (bad URL, schema name, …)."""


class SchemaVersionError(AsyncFlowError):
    """The database schema is missing, or newer than this version of asyncflow understands."""


class DistributionError(ConfigurationError):
    """``asyncflow db distribute`` cannot distribute the schema here: the database does not run
    Citus (plain Postgres is left untouched), or no node of the cluster holds shards."""


class NotLaunchedError(AsyncFlowError):
    """The app or client is used before ``launch()`` / ``async with`` or after ``shutdown()``."""


class ExecutorIdInUseError(AsyncFlowError):
    """Another live process already runs with this executor id."""


class InvalidArgumentError(AsyncFlowError, ValueError):
    """An argument is out of range or malformed (an id with NUL, a NaN timeout, …)."""


class InvalidSettingError(ConfigurationError, InvalidArgumentError):
    """A setting given to ``AsyncFlow``, ``Client`` or a decorator is out of range or malformed
    (a pool size of 0, a NaN retry interval, a name with NUL, …). Raised at construction or
    decoration, before anything runs."""


class SerializationError(AsyncFlowError, TypeError):
    """A value cannot be stored as JSON. Nothing was written."""


class DecodeError(SerializationError):
    """A stored value does not fit the annotation it is read by (the type changed since it was
    written, or it was stored by other code). ``path`` names the field
    (``order.items[3].price``). No half-built object is returned."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class ValueTooLargeError(SerializationError):
    """A value's JSON encoding exceeds the size limit. Nothing was written."""


class WorkflowNotFoundError(AsyncFlowError, LookupError):
    """No workflow with this id exists (or no workflow function is registered by this name)."""


class NotInWorkflowError(AsyncFlowError):
    """A workflow-only operation (``recv``, ``sleep``, …) was called outside a workflow."""


class NonDeterministicWorkflowError(AsyncFlowError):
    """On replay, a workflow called a different operation than the one recorded at that position.

    ``function_id`` is the position (operation number) where the paths part, ``recorded_name``
    the operation the journal holds there (``None``: the recorded history ended before it) and
    ``called_name`` the operation the code called (``None``: the code ended without calling
    it). All three are ``None`` when the paths agree but the results differ (history replay).
    """

    def __init__(
        self,
        message: str,
        *,
        function_id: int | None = None,
        recorded_name: str | None = None,
        called_name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.function_id = function_id
        self.recorded_name = recorded_name
        self.called_name = called_name


class WorkflowConflictError(AsyncFlowError):
    """A workflow id is already used by a workflow of another name."""


class QueueDeduplicatedError(AsyncFlowError):
    """An enqueue named a ``deduplication_id`` that a workflow of the same queue still holds
    (it is ENQUEUED, DELAYED or PENDING). Nothing was enqueued. ``existing_workflow_id`` is the
    holder's id; pass ``on_duplicate="return_existing"`` to get its handle instead."""

    def __init__(self, message: str, existing_workflow_id: str | None = None) -> None:
        super().__init__(message, existing_workflow_id)
        self.message = message
        self.existing_workflow_id = existing_workflow_id

    def __str__(self) -> str:
        return self.message


class WorkflowCancelledError(AsyncFlowError):
    """The workflow was cancelled."""


class WorkflowTimeoutError(WorkflowCancelledError):
    """The workflow ran past its ``timeout_seconds`` deadline and was cancelled (status
    ``CANCELLED``), with its descendants. Raised by ``get_result``; a subclass of
    :class:`WorkflowCancelledError`, so code that handles cancellation handles it too.
    ``resume_workflow`` runs it again, without a deadline."""


class ScheduleNotFoundError(AsyncFlowError, LookupError):
    """No schedule of this name is registered (``pause_schedule``, ``trigger_schedule``, …)
    or stored in the database (``asyncflow schedule ...``)."""


class ScheduleConflictError(InvalidArgumentError):
    """A runtime schedule operation (``create_schedule``, ``delete_schedule``) named a schedule
    that ``@app.scheduled`` registers: that one is defined by the decorator (change or remove
    it there), so nothing was written. (An :class:`InvalidArgumentError`: the name given is
    not one these operations may change.)"""


class WorkflowNotQueuedError(AsyncFlowError):
    """The operation (``set_workflow_delay``) needs a workflow waiting in its queue
    (``ENQUEUED`` or ``DELAYED``), but this one has started or ended; nothing was changed."""


class MaxRecoveryAttemptsExceededError(AsyncFlowError):
    """The workflow was recovered more times than its ``max_recovery_attempts`` allows."""


class AsyncFlowTimeoutError(AsyncFlowError, TimeoutError):
    """A wait (for example ``get_result(timeout_seconds=…)``) ran out of time."""


class StreamClosedError(AsyncFlowError):
    """A value was written to a stream that is already closed."""


class StepTimeoutError(AsyncFlowTimeoutError):
    """An attempt of a step ran longer than its ``timeout_seconds``: it was cancelled, and counts
    as a failed attempt (retried like any other failure, if retries remain)."""


class WorkflowPendingError(AsyncFlowError):
    """The operation needs a finished workflow, but this one is still ``PENDING`` (running or
    waiting to run) or queued (``ENQUEUED``, ``DELAYED``). ``delete_workflow`` refuses it:
    cancel it first, then delete it.

    ``pending_id``: the unfinished workflow that stopped it (the one asked for, one of its
    descendants, or its parent), and ``status`` its status, when known."""

    def __init__(
        self, message: str, pending_id: str | None = None, status: str | None = None
    ) -> None:
        super().__init__(message)
        self.pending_id = pending_id
        self.status = status


class TransactionStateError(AsyncFlowError):
    """An ``@app.transaction`` body ended or replaced its own transaction (``COMMIT``,
    ``ROLLBACK``, ``BEGIN``). Nothing of it was committed and no success was recorded: use the
    connection only for statements inside the transaction asyncflow opened."""


class DatabaseUnavailableError(AsyncFlowError, ConnectionError):
    """The database connection was lost or could not be opened."""


class ReadOnlyDatabaseError(DatabaseUnavailableError):
    """The server refused a write because it is read-only: a standby (say, the old primary
    after a failover), or a role or database set ``default_transaction_read_only``. With
    several hosts in the URL, add ``target_session_attrs=read-write`` so asyncflow always
    connects to the primary."""


class DatabaseError(AsyncFlowError):
    """The database refused one of asyncflow's statements for a reason asyncflow does not
    expect: a constraint, trigger or rule of the database's own (or a bug). ``sqlstate`` is
    the Postgres error code (``None``: not a Postgres error). The statement did nothing; what
    the message says decides whether calling again can help."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message, sqlstate)
        self.message = message
        self.sqlstate = sqlstate

    def __str__(self) -> str:
        return self.message


class RecordedError(AsyncFlowError):
    """An exception recorded in the journal whose original type could not be rebuilt.

    Attributes carry what was recorded: ``type_name`` (``module.QualName``), ``message`` and
    ``traceback`` (the formatted traceback text of the original failure).
    """

    def __init__(self, type_name: str, message: str, traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback


class WorkflowFailedError(RecordedError):
    """A workflow failed with an exception that cannot be rebuilt in this process."""


class StepFailedError(RecordedError):
    """A step failed with an exception that cannot be rebuilt in this process."""


class ReplayError(AsyncFlowError):
    """A history replay could not run a workflow to the end: its code used the database outside
    its journal (an app or client method, a read not journaled) or did not finish in time."""


class ExportFormatError(AsyncFlowError, ValueError):
    """A file given to ``import_workflows`` or ``replay`` is not an asyncflow export (or comes
    from a newer version of asyncflow); the message names the line."""


class _ExecutionConflict(BaseException):
    """Another execution of the same workflow recorded this operation first; stop quietly.

    A ``BaseException`` so that user code catching ``Exception`` cannot swallow it.
    """


class _OwnershipLost(_ExecutionConflict):
    """This execution's workflow was claimed by another execution (its epoch moved on): the
    write that found out was refused, and the execution stops without recording anything."""


class _ContinuedAsNew(BaseException):
    """The workflow continued as new (``asyncflow.continue_as_new``): its current run ended and
    the next one, with ``inputs`` (JSON), owned at ``epoch`` and numbering its operations from
    ``first_function_id``, starts in its place. A ``BaseException`` so that user code catching
    ``Exception`` cannot swallow it."""

    def __init__(self, inputs: str, epoch: int, first_function_id: int) -> None:
        super().__init__("the workflow continued as new")
        self.inputs = inputs
        self.epoch = epoch
        self.first_function_id = first_function_id
