"""Operating workflows from outside them — the same from an app and from a Client: filtered,
paged listing; cancelling (down the tree of children) and resuming, one or in bulk by filter;
deleting; retention passes; a queued workflow's delay; and sending to many workflows at once
(schedules: ``_operations.schedule_ops``, a base of :class:`Admin`).

Bulk operations work in batches of :data:`BULK_BATCH` rows, each one short statement, and are
bounded by the database's clock when they start: a bulk cancel takes the workflows created by
then, a bulk resume those that had ended by then, so neither chases work that keeps arriving.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine, Iterable, Mapping
from datetime import datetime
from typing import Any

from .. import _codec
from .._core.wait import QUEUE, TERMINAL
from .._engine.cancel import cancel_with_descendants, mark_cancelled
from .._engine.context import current_step, current_workflow
from .._engine.runtime import Runtime
from .._errors import (
    InvalidArgumentError,
    NotInWorkflowError,
    WorkflowNotQueuedError,
    WorkflowPendingError,
)
from .._filters import RESUMABLE, WorkflowFilter, make_filter, parse_after
from .._primitives.attributes import check_outside
from .._primitives.messages import send_many_from_workflow, send_many_outside
from .._status import DELAYED, ENQUEUED, PENDING, WorkflowStatus
from .._storage.database import RetryableTransactionError
from .._storage.store import Send, deduplicated_resume, not_found
from .retention import Retention, retention_pass
from .schedule_ops import ScheduleOps

logger = logging.getLogger("asyncflow")

BULK_BATCH = 500
#: Statuses of a workflow not finished yet: never deleted (cancel it first).
_UNFINISHED = (PENDING, ENQUEUED, DELAYED)
MAX_BIGINT = 2**63 - 1


def _check_limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BIGINT:
        raise InvalidArgumentError(f"limit must be an int from 0 to 2**63-1, not {value!r}")
    return value


def _check_flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be True or False, not {value!r}")
    return value


def _require_narrowed(selected: WorkflowFilter, operation: str, extra: str = "") -> None:
    if not selected.narrowed:
        raise InvalidArgumentError(
            f"{operation} needs at least one filter (name, created_after, created_before, "
            f"workflow_id_prefix, app_version, parent_workflow_id, queue_name{extra}); to select "
            "every "
            "workflow, pass created_before=datetime.now(timezone.utc)")


def _check_messages(messages: object) -> list[Send]:
    if isinstance(messages, str | bytes | dict) or not isinstance(messages, Iterable):
        raise InvalidArgumentError(
            "send_many takes a list of (destination_id, message[, topic[, idempotency_key]]) "
            f"tuples, not {type(messages).__name__}")
    ops: list[Send] = []
    for index, item in enumerate(messages):
        if not isinstance(item, tuple | list) or not 2 <= len(item) <= 4:
            raise InvalidArgumentError(
                f"send_many: item {index} must be a tuple (destination_id, message[, topic[, "
                f"idempotency_key]]), not {item!r}")
        destination_id, message, topic, key = (*item, None, None)[:4]
        text = _codec.check_message(destination_id, message, topic, key)
        ops.append((destination_id, topic, text, key))
    return ops


class Admin(ScheduleOps):
    """Operations on workflows as a whole (the base of ``AsyncFlow`` and ``Client``)."""

    @property
    def runtime(self) -> Runtime:
        """The running runtime (given by the subclass)."""
        raise NotImplementedError

    def _after_cancel(self, workflow_id: str) -> None:
        """Hook for the app: mark its running execution cancelled."""

    def _after_resume(self) -> None:
        """Hook for the app: workflows were left unassigned for a supervisor to claim."""

    def _retention_setting(self) -> Retention | None:
        """Hook for the app: its ``retention=`` setting."""
        return None

    # -- listing ----------------------------------------------------------------------------

    async def list_workflows(
        self,
        status: str | Iterable[str] | None = None,
        name: str | None = None,
        limit: int = 100,
        *,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        workflow_id_prefix: str | None = None,
        app_version: str | None = None,
        parent_workflow_id: str | None = None,
        queue_name: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        after: WorkflowStatus | str | tuple[datetime, str] | None = None,
    ) -> list[WorkflowStatus]:
        """One page of workflows, newest first (``created_at`` descending, then id).

        Every filter is optional: ``status`` (one or several), ``name``, ``created_after``
        (inclusive) and ``created_before`` (exclusive; timezone-aware datetimes),
        ``workflow_id_prefix``, ``app_version``, ``parent_workflow_id``, ``queue_name``
        (statuses include ``ENQUEUED`` and ``DELAYED`` for queued workflows), ``attributes``
        (workflows whose attributes contain all of these; found through their index; an
        earlier run kept by ``continue_as_new`` keeps the attributes it had). ``after`` continues
        after a place in that order — the last workflow of the previous page, its ``.cursor``
        text, or a ``(created_at, workflow_id)`` pair — so paging never skips or repeats a
        workflow while others start, and every page costs the same however deep it is.
        """
        selected = make_filter(
            status=status, name=name, created_after=created_after,
            created_before=created_before, workflow_id_prefix=workflow_id_prefix,
            app_version=app_version, parent_workflow_id=parent_workflow_id,
            queue_name=queue_name, attributes=attributes)
        cursor = parse_after(after)
        return await self.runtime.store.list_page(selected, cursor, _check_limit(limit))

    async def list_workflow_runs(self, workflow_id: str) -> list[WorkflowStatus]:
        """The earlier runs kept of a workflow that continued as new (``continue_as_new``),
        newest first: rows of status ``CONTINUED_AS_NEW`` whose ``run_of`` is ``workflow_id``,
        each with its journal (``list_workflow_operations``), exportable and deleted by retention
        like any finished workflow. The current run is the workflow itself."""
        _codec.check_id(workflow_id)
        return await self.runtime.store.list_runs(workflow_id)

    async def set_workflow_attributes(self, workflow_id: str, attributes: Mapping[str, Any],
                                      *, merge: bool = True) -> dict[str, Any]:
        """Set a workflow's attributes from outside it (any status): merged into those it has
        (``merge=False``: replacing them). Keys are str, values plain JSON (str, int, float,
        bool, None, lists and dicts of them); anything else raises
        :class:`InvalidArgumentError` and writes nothing. Returns the attributes now. Inside a
        workflow's own body, use ``asyncflow.set_attributes`` (journaled)."""
        text, merge = check_outside(workflow_id, attributes, merge)
        now = await self.runtime.store.set_attributes(workflow_id, text, merge)
        value: dict[str, Any] = _codec.loads(now)
        return value

    # -- cancelling and resuming ------------------------------------------------------------

    async def cancel_workflow(self, workflow_id: str, *, children: bool = True) -> None:
        """Cancel a PENDING workflow: it stops at its next durable operation, and a wait it is
        parked in (recv, sleep, get_event, child result) wakes at once. With ``children`` (the
        default) every PENDING descendant — children, their children, … — is cancelled too,
        also when the workflow itself had already ended. Finished workflows are left as they
        are."""
        _codec.check_id(workflow_id)
        _check_flag(children, "children")
        runtime = self.runtime
        store = runtime.store
        if children:  # the workflow and its descendants in one transaction
            (cancelled, queue_name), _descendants = await cancel_with_descendants(
                runtime, lambda: store.cancel_workflow(workflow_id),
                lambda _row: [workflow_id], self._after_cancel)
        else:
            cancelled, queue_name = await store.cancel_workflow(workflow_id)
        if cancelled:
            mark_cancelled(runtime, [workflow_id], self._after_cancel)
            if queue_name is not None:  # a queued workflow left its queue: a slot may be free
                runtime.waits.wake(QUEUE, queue_name)

    async def cancel_workflows(
        self,
        *,
        name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        workflow_id_prefix: str | None = None,
        app_version: str | None = None,
        parent_workflow_id: str | None = None,
        queue_name: str | None = None,
        children: bool = True,
    ) -> list[str]:
        """Cancel every PENDING (or queued: ENQUEUED, DELAYED) workflow matching the filters
        (at least one; the same as :meth:`list_workflows`'), created by the time of the call;
        with ``children`` their PENDING descendants too. Returns the ids cancelled (the matches,
        then descendants)."""
        selected = make_filter(
            status=(PENDING, ENQUEUED, DELAYED), allowed=(PENDING, ENQUEUED, DELAYED),
            name=name, created_after=created_after,
            created_before=created_before, workflow_id_prefix=workflow_id_prefix,
            app_version=app_version, parent_workflow_id=parent_workflow_id,
            queue_name=queue_name)
        _require_narrowed(selected, "cancel_workflows")
        _check_flag(children, "children")
        runtime = self.runtime
        store = runtime.store
        started = await store.database_now()
        cancelled: list[str] = []
        descendants: list[str] = []

        async def cancel_batch() -> list[str]:
            # Each batch with its descendants (children) in one transaction.
            if not children:
                return await store.cancel_matching(selected, started, BULK_BATCH)
            batch, below = await cancel_with_descendants(
                runtime, lambda: store.cancel_matching(selected, started, BULK_BATCH),
                lambda ids: ids, self._after_cancel)
            descendants.extend(below)
            return batch

        while True:
            batch = await _retrying(cancel_batch)
            mark_cancelled(runtime, batch, self._after_cancel)
            cancelled.extend(batch)
            if not batch:
                break
        matched = set(cancelled)
        return cancelled + [d for d in descendants if d not in matched]

    async def resume_workflows(
        self,
        *,
        status: str | Iterable[str] | None = None,
        name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        workflow_id_prefix: str | None = None,
        app_version: str | None = None,
        parent_workflow_id: str | None = None,
        queue_name: str | None = None,
    ) -> list[str]:
        """Resume every CANCELLED, ERROR or MAX_RECOVERY_ATTEMPTS_EXCEEDED workflow matching
        the filters (at least one; ``status`` narrows to some of those three) that had ended by
        the time of the call. They become PENDING and unassigned, and a live app registering
        their workflow (and app version) claims and continues each from its checkpoints; a
        queued workflow goes back to its queue (ENQUEUED). Returns the ids resumed.

        A queued workflow whose ``deduplication_id`` another workflow of its queue holds is
        not resumed (the others are): it is left as it is and reported by a warning on the
        ``asyncflow`` logger — the :class:`QueueDeduplicatedError` message ``resume_workflow``
        would raise for it, naming the holder."""
        selected = make_filter(
            status=status, allowed=RESUMABLE, name=name, created_after=created_after,
            created_before=created_before, workflow_id_prefix=workflow_id_prefix,
            app_version=app_version, parent_workflow_id=parent_workflow_id,
            queue_name=queue_name)
        if status is None:
            _require_narrowed(selected, "resume_workflows", ", status")
        store = self.runtime.store
        started = await store.database_now()
        resumed: list[str] = []
        while True:
            batch = await _retrying(lambda: store.resume_matching(selected, started, BULK_BATCH))
            resumed.extend(batch)
            if not batch:
                break
        if resumed:
            self._after_resume()
        for workflow_id, deduplication_id, holder in await store.resume_conflicts(
                selected, started):
            logger.warning("%s", deduplicated_resume(workflow_id, deduplication_id, holder))
        return resumed

    # -- deleting ---------------------------------------------------------------------------

    async def delete_workflow(self, workflow_id: str, *, children: bool = False) -> list[str]:
        """Delete a finished workflow with its journal, messages, events and streams; with
        ``children``, all its descendants too. Returns the ids deleted.

        An unfinished workflow (PENDING, or queued: ENQUEUED, DELAYED) is never deleted:
        :class:`WorkflowPendingError` (cancel it first — ``cancel_workflow`` cancels its
        descendants too). With ``children``, one unfinished descendant refuses the whole
        delete, and so does an unfinished parent (it may still read the workflow's result).
        Nothing is deleted when it raises. Children left behind keep their
        ``parent_workflow_id``.
        """
        _codec.check_id(workflow_id)
        _check_flag(children, "children")
        runtime = self.runtime
        store = runtime.store
        async with store.storage.transaction():
            tree = await store.lock_workflow_tree(workflow_id, children)
            if not tree:
                raise not_found(workflow_id)
            for found, status in tree:
                if status in _UNFINISHED:
                    raise WorkflowPendingError(_pending_message(workflow_id, found, status),
                                               found, status)
            parent = await store.lock_parent(workflow_id)
            if parent is not None and parent[1] in _UNFINISHED:
                raise WorkflowPendingError(
                    f"workflow {workflow_id!r} is a child of {parent[0]!r}, which is "
                    f"{parent[1]} and may still read its result, so nothing was deleted; "
                    "try again once its parent has finished (or then delete "
                    f"{parent[0]!r} with children=True)", parent[0], parent[1])
            ids = [workflow_id] + [found for found, _ in tree if found != workflow_id]
            readers = await store.lock_readers(ids)
            if readers:
                reader, status, child = readers[0]
                raise WorkflowPendingError(
                    f"workflow {child!r} is read by {reader!r} (a fork, whose journal names "
                    f"it), which is {status}, so nothing was deleted; try again once "
                    f"{reader!r} has finished", reader, status)
            gone_now = set(await store.delete_workflows(ids))
        deleted = [found for found in ids if found in gone_now]
        for gone in deleted:
            runtime.waits.wake(TERMINAL, gone)  # local waiters look again: not found
        return deleted

    async def apply_retention(
        self, retention: Retention | None = None, *, dry_run: bool = False
    ) -> int:
        """Run one retention pass now: delete the finished workflows ``retention`` (default:
        the app's ``retention=`` setting) does not keep. Returns how many were deleted — with
        ``dry_run``, how many would be, deleting nothing."""
        chosen = retention if retention is not None else self._retention_setting()
        if not isinstance(chosen, Retention):
            raise InvalidArgumentError(
                "apply_retention needs a Retention (this has no retention= setting), not "
                f"{chosen!r}")
        _check_flag(dry_run, "dry_run")
        return await retention_pass(self.runtime.store, chosen, dry_run=dry_run)

    # -- queued workflows ---------------------------------------------------------------------

    async def set_workflow_delay(
        self, workflow_id: str, *, seconds: float | None = None, until: datetime | None = None
    ) -> datetime:
        """Change when a queued workflow may start: ``seconds`` from now, or ``until`` a
        timezone-aware datetime (one of the two). An ``ENQUEUED`` or ``DELAYED`` workflow
        becomes ``DELAYED`` until then (``ENQUEUED`` at once if that time has passed), and
        its queue's dispatchers in every process are woken by NOTIFY to move their timers —
        earlier or later. Returns the new time (the database's clock).

        :class:`WorkflowNotFoundError` for an unknown id, :class:`WorkflowNotQueuedError` for
        a workflow that has started or ended (or was never queued), bad arguments
        :class:`InvalidArgumentError`; nothing is changed then."""
        _codec.check_id(workflow_id)
        if (seconds is None) == (until is None):
            raise InvalidArgumentError(
                "set_workflow_delay takes exactly one of seconds= (from now) or until= (a "
                f"timezone-aware datetime), not seconds={seconds!r}, until={until!r}")
        delay = 0.0 if seconds is None else _codec.check_timeout(seconds, "seconds")
        if until is not None and (not isinstance(until, datetime) or until.tzinfo is None):
            raise InvalidArgumentError(
                f"until must be a timezone-aware datetime, not {until!r}")
        runtime = self.runtime
        changed = await runtime.store.set_workflow_delay(workflow_id, delay, until)
        if changed is None:
            status = await runtime.store.workflow_status(workflow_id)  # raises: not found
            raise WorkflowNotQueuedError(
                f"workflow {workflow_id!r} is {status.status}, not ENQUEUED or DELAYED: only a "
                "workflow waiting in its queue can be delayed")
        queue_name, at, _status = changed
        runtime.waits.wake(QUEUE, queue_name)  # this process's dispatcher (NOTIFY: others)
        return at

    # -- sending ----------------------------------------------------------------------------

    def send_many(self, messages: Iterable[Any]) -> Coroutine[Any, Any, list[bool]]:
        """Send messages to many workflows in one call: ``messages`` is a list of
        ``(destination_id, message)``, ``(destination_id, message, topic)`` or
        ``(destination_id, message, topic, idempotency_key)`` tuples, written in one statement
        per 1,000. Returns, per message in order, whether it was delivered (``False``: no
        workflow has that id; the others are delivered all the same).

        Inside a workflow it is journaled (the messages and the journal entry commit together,
        once); inside a step it is refused — send from the workflow, or ``send`` each message.
        """
        ops = _check_messages(messages)
        replayed = current_workflow()
        if replayed is not None and replayed.replaying:  # a history replay: no database
            return send_many_from_workflow(replayed, replayed.reserve(), ops)
        runtime = self.runtime
        if current_step(runtime) is not None:
            raise NotInWorkflowError(
                "send_many cannot be called inside a step or transaction; call it from the "
                "workflow function (where it is journaled), or send each message with send")
        ctx = current_workflow(runtime)
        if ctx is not None:
            return send_many_from_workflow(ctx, ctx.reserve(), ops)
        return send_many_outside(runtime, ops)


def _pending_message(root: str, found: str, status: str) -> str:
    if found == root:
        return (f"workflow {root!r} is {status} and cannot be deleted; cancel it first "
                "(cancel_workflow), then delete it")
    return (f"workflow {root!r} has a {status} descendant {found!r}, so nothing was deleted; "
            f"cancel_workflow({root!r}) cancels its descendants too, then delete it")


async def _retrying(run: Any) -> list[str]:
    """A bulk batch that lost a deadlock with a concurrent batch is run again."""
    for _attempt in range(9):
        try:
            result: list[str] = await run()
            return result
        except RetryableTransactionError:
            continue
    result = await run()
    return result
