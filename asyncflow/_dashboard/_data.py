"""What the dashboard shows: list filters, and a workflow's details, journal, events, streams and
mailbox, read through the app's (or client's) calls and the read-only ``DASHBOARD_*`` queries.

Every value is shown from its stored JSON: decoded and indented when it is short enough, else its
first characters with its full length. Nothing here renders HTML.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from .. import _codec
from .._errors import InvalidArgumentError, WorkflowNotFoundError
from .._filters import check_attributes, parse_attribute
from .._front.lifecycle import Connected
from .._status import (
    CANCELLED,
    DELAYED,
    ENQUEUED,
    ERROR,
    MAX_RECOVERY_ATTEMPTS_EXCEEDED,
    PENDING,
    SUCCESS,
    TERMINAL_STATUSES,
    WorkflowStatus,
)
from .._storage.store import VersionChange

STATUSES = (PENDING, ENQUEUED, DELAYED, SUCCESS, ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED)
RESUMABLE = frozenset({CANCELLED, ERROR, MAX_RECOVERY_ATTEMPTS_EXCEEDED})
CANCELLABLE = frozenset({PENDING, ENQUEUED, DELAYED})
#: The status filter's pseudo-status selecting every finished workflow.
FINISHED = "FINISHED"
#: What the status filter accepts: a status, or FINISHED.
STATUS_CHOICES = (*STATUSES, FINISHED)
_FINISHED_STATUSES = tuple(s for s in STATUSES if s in TERMINAL_STATUSES)

VALUE_CHARS = 64_000  # inputs, result, error, event values: shown up to this many characters
ENTRY_CHARS = 2_000  # one stream entry or pending message
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
STREAM_KEYS = 50
STREAM_TAIL = 50
MESSAGES = 100

# Relative time windows of the list filter ("created in the last ...").
SINCE: dict[str, tuple[str, timedelta]] = {
    "15m": ("15 minutes", timedelta(minutes=15)),
    "1h": ("hour", timedelta(hours=1)),
    "24h": ("24 hours", timedelta(hours=24)),
    "7d": ("7 days", timedelta(days=7)),
    "30d": ("30 days", timedelta(days=30)),
}

# -- values -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Value:
    """A stored JSON value ready to show: ``text`` is indented JSON, or the first characters of
    the stored text when ``cut`` (the value is ``length`` characters long)."""

    text: str
    length: int
    cut: bool

    @classmethod
    def stored(cls, text: str | None, length: int | None, limit: int) -> Value | None:
        """From stored JSON text, possibly cut by the query to ``limit`` characters."""
        if text is None:
            return None
        full = len(text) if length is None else length
        if full > len(text) or full > limit:
            return cls(text[:limit], full, True)
        try:
            decoded = orjson.loads(text)
        except orjson.JSONDecodeError:
            return cls(text, full, False)
        return cls.of(decoded, limit)

    @classmethod
    def of(cls, value: Any, limit: int) -> Value:
        """From a decoded value."""
        pretty = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
        if len(pretty) > limit:
            compact = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
            return cls(compact[:limit], len(compact), len(compact) > limit)
        return cls(pretty, len(pretty), False)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A recorded exception: its qualified type, message and traceback text."""

    type_name: str
    message: str
    traceback: str


def decode_error(text: str) -> ErrorInfo:
    """Decode a recorded exception (``_recorded.encode_error``'s JSON); tolerant of cut text."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ErrorInfo("(recorded error)", text, "")
    if not isinstance(record, dict):
        return ErrorInfo("(recorded error)", text, "")
    module = record.get("module") or ""
    if module == "builtins":
        module = ""
    type_name = str(record.get("type", "Exception"))
    return ErrorInfo(
        f"{module}.{type_name}" if module else type_name,
        str(record.get("message", "")),
        str(record.get("traceback", "")),
    )


# -- the workflow list --------------------------------------------------------------------------


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 date or date-time; without a UTC offset it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidArgumentError(
            f"{what} must be a date or date-time like 2025-01-31 or 2025-01-31T14:00 (UTC), "
            f"not {text!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def attributes_of(text: str) -> dict[str, Any]:
    """The attributes typed in the filter box: ``KEY=TEXT`` or ``KEY:=JSON`` pairs separated
    by commas (:class:`InvalidArgumentError` names what is wrong)."""
    pairs = [parse_attribute(part) for part in text.split(",") if part.strip()]
    attributes = dict(pairs)
    check_attributes(attributes, empty=False)
    return attributes


@dataclass(frozen=True, slots=True)
class Filters:
    """The list page's filters. Every field is optional; ``status`` is a status or
    :data:`FINISHED`; ``after`` is the paging cursor (created_at, workflow id) of the last row of
    the previous page."""

    status: str | None = None
    name: str | None = None
    queue: str | None = None
    id_prefix: str | None = None
    since: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    #: Attributes the workflows must have, as typed in the box (``customer=c-42, n:=3``).
    attrs: str | None = None
    limit: int = PAGE_SIZE
    after: tuple[datetime, str] | None = None

    @classmethod
    def parse(cls, get: Callable[[str], str | None]) -> tuple[Filters, list[str]]:
        """Filters from query parameters, and what was wrong with the others (ignored)."""
        problems: list[str] = []
        values: dict[str, Any] = {}

        def text(name: str) -> str | None:
            raw = get(name)
            if raw is None or not raw.strip():
                return None
            return raw.strip()

        status = text("status")
        if status is not None:
            if status.upper() in STATUS_CHOICES:
                values["status"] = status.upper()
            else:
                problems.append(
                    f"unknown status {status!r}; choose one of {', '.join(STATUS_CHOICES)}")
        for field, param, what in (("name", "name", "name"), ("id_prefix", "id", "id prefix")):
            raw = text(param)
            if raw is not None:
                try:
                    values[field] = _codec.check_name(raw, what)
                except InvalidArgumentError as exc:
                    problems.append(str(exc))
        queue = text("queue")
        if queue is not None:
            try:
                values["queue"] = _codec.check_id(queue, "queue name")
            except InvalidArgumentError as exc:
                problems.append(str(exc))
        attrs = text("attr")
        if attrs is not None:
            try:
                attributes_of(attrs)
                values["attrs"] = attrs
            except InvalidArgumentError as exc:
                problems.append(str(exc))
        since = text("since")
        if since is not None:
            if since in SINCE:
                values["since"] = since
            else:
                problems.append(f"unknown time window {since!r}")
        for field, param, what in (("created_from", "from", "from"), ("created_to", "to", "to")):
            raw = text(param)
            if raw is not None:
                try:
                    values[field] = parse_time(raw, what)
                except InvalidArgumentError as exc:
                    problems.append(str(exc))
        limit = text("limit")
        if limit is not None:
            if limit.isdigit() and 1 <= int(limit) <= MAX_PAGE_SIZE:
                values["limit"] = int(limit)
            else:
                problems.append(f"limit must be a number from 1 to {MAX_PAGE_SIZE}")
        after, after_id = text("after"), get("after_id")
        if after is not None and after_id:
            try:
                values["after"] = (parse_time(after, "after"), after_id)
            except InvalidArgumentError as exc:
                problems.append(str(exc))
        return cls(**values), problems

    def params(self, *, page: bool = True) -> list[tuple[str, str]]:
        """Query parameters that give these filters back (with the paging cursor if ``page``)."""
        out: list[tuple[str, str]] = []
        for name, value in (("status", self.status), ("name", self.name),
                            ("queue", self.queue), ("id", self.id_prefix),
                            ("attr", self.attrs), ("since", self.since)):
            if value is not None:
                out.append((name, value))
        for name, moment in (("from", self.created_from), ("to", self.created_to)):
            if moment is not None:
                out.append((name, moment.isoformat()))
        if self.limit != PAGE_SIZE:
            out.append(("limit", str(self.limit)))
        if page and self.after is not None:
            out.extend((("after", self.after[0].isoformat()), ("after_id", self.after[1])))
        return out

    def window(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        """The created_at range ``[lower, upper)`` of these filters at time ``now``."""
        lower = self.created_from
        if self.since is not None:
            start = now - SINCE[self.since][1]
            lower = start if lower is None else max(lower, start)
        return lower, self.created_to

    def next_page(self, last: WorkflowStatus) -> Filters:
        """The same filters, for the page after ``last``."""
        return replace(self, after=(last.created_at, last.workflow_id))

    @property
    def active(self) -> bool:
        """Whether any filter (not counting the page size and cursor) is set."""
        return any(value is not None for value in (
            self.status, self.name, self.queue, self.id_prefix, self.since, self.created_from,
            self.created_to, self.attrs,
        ))

    @property
    def statuses(self) -> tuple[str, ...] | None:
        """The statuses selected (``None``: all of them)."""
        if self.status is None:
            return None
        return _FINISHED_STATUSES if self.status == FINISHED else (self.status,)


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of the workflow list; ``more`` when another page follows."""

    workflows: list[WorkflowStatus]
    more: bool
    #: When each workflow last changed (:func:`last_activities`), by id.
    activity: dict[str, datetime] = dataclasses.field(default_factory=dict)


async def list_workflows(core: Connected, filters: Filters) -> ListPage:
    """The workflows matching ``filters``, newest first."""
    lower, upper = filters.window(datetime.now(UTC))
    found = await core.list_workflows(
        filters.statuses, filters.name, filters.limit + 1, created_after=lower,
        created_before=upper, workflow_id_prefix=filters.id_prefix, queue_name=filters.queue,
        attributes=None if filters.attrs is None else attributes_of(filters.attrs),
        after=filters.after)
    shown = found[: filters.limit]
    return ListPage(shown, len(found) > filters.limit, await last_activities(core, shown))


async def last_activities(core: Connected,
                          workflows: list[WorkflowStatus]) -> dict[str, datetime]:
    """When each of ``workflows`` last changed: its row's ``updated_at`` (claims, finishes) or
    its last journal entry, whichever is later. Checkpoints only insert journal entries (no
    write to the workflow's row on their hot path), so this is read, not stored."""
    if not workflows:
        return {}
    rows = await core.runtime.store.dashboard_last_activity([w.workflow_id for w in workflows])
    last = {row["workflow_id"]: row["last_at"] for row in rows}
    out = {}
    for w in workflows:
        at = last.get(w.workflow_id)
        out[w.workflow_id] = max(w.updated_at, at) if at is not None else w.updated_at
    return out


# -- one workflow -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Detail:
    """A workflow's status row, inputs, result and recorded error; when it last changed
    (:func:`last_activities`) and whether it has a journal (``has_history``); whether it waits
    for an executor of its app version that no live process runs (``stranded``), and its
    adoptions by other versions (``version_changes``, oldest first)."""

    status: WorkflowStatus
    inputs: Value | None
    output: Value | None
    error: ErrorInfo | None
    last_activity: datetime
    has_history: bool
    stranded: bool = False
    version_changes: tuple[VersionChange, ...] = ()


async def workflow_detail(core: Connected, workflow_id: str) -> Detail:
    """The status and data of one workflow; :class:`WorkflowNotFoundError` if unknown."""
    status = await core.get_workflow_status(workflow_id)
    row = await core.runtime.store.dashboard_workflow_data(workflow_id, VALUE_CHARS)
    if row is None:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
    error = None
    if row["error"] is not None:
        error = decode_error(row["error"])
    store = core.runtime.store
    stranded = status.status in CANCELLABLE and await store.workflow_stranded(workflow_id)
    span = await store.dashboard_journal_span(workflow_id)
    return Detail(
        status,
        Value.stored(row["inputs"], row["inputs_length"], VALUE_CHARS),
        Value.stored(row["output"], row["output_length"], VALUE_CHARS),
        error,
        max(status.updated_at, span["last_at"]) if span is not None else status.updated_at,
        span is not None,
        stranded,
        tuple(await store.version_changes(workflow_id)),
    )


async def workflow_events(core: Connected, workflow_id: str) -> list[tuple[str, Value]]:
    """The workflow's events, ``(key, value)`` by key."""
    found = await core.get_all_events(workflow_id)
    return [(key, Value.of(value, ENTRY_CHARS * 4)) for key, value in found.items()]


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A message waiting in a workflow's mailbox."""

    message_id: int
    topic: str | None
    value: Value
    created_at: datetime


async def pending_messages(core: Connected, workflow_id: str) -> tuple[list[PendingMessage], int]:
    """The oldest ``MESSAGES`` waiting messages (every topic) and how many wait in all."""
    rows = await core.runtime.store.dashboard_pending_messages(workflow_id, MESSAGES,
                                                               ENTRY_CHARS)
    found = []
    for row in rows:
        value = Value.stored(row["message"], row["length"], ENTRY_CHARS)
        assert value is not None
        found.append(PendingMessage(row["message_id"], row["topic"], value, row["created_at"]))
    return found, (rows[0]["total"] if rows else 0)


@dataclass(frozen=True, slots=True)
class StreamView:
    """A stream's last entries ``(offset, value)``; ``count`` entries in all; ``ended`` when
    nothing more can be written (closed, or its workflow finished)."""

    key: str
    count: int
    closed: bool
    ended: bool
    entries: list[tuple[int, Value]]


async def workflow_streams(
    core: Connected, status: WorkflowStatus
) -> tuple[list[StreamView], bool]:
    """The workflow's streams (the first ``STREAM_KEYS`` keys) and whether there may be more."""
    rows = await core.runtime.store.dashboard_streams(status.workflow_id, STREAM_KEYS,
                                                      STREAM_TAIL, ENTRY_CHARS)
    views: dict[str, StreamView] = {}
    for row in rows:
        key = row["key"]
        view = views.get(key)
        if view is None:
            view = views[key] = StreamView(
                key, row["next_offset"], row["closed"],
                row["closed"] or status.status != PENDING, [],
            )
        if row["offset"] is not None:
            value = Value.stored(row["value"], row["length"], ENTRY_CHARS)
            assert value is not None
            view.entries.append((row["offset"], value))
    return list(views.values()), len(views) >= STREAM_KEYS

