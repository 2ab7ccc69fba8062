"""What the dashboard shows of a workflow's journal: its entries a page at a time, each with its
key, topic and value, its state and timing, and the workflow's last activity, read through the
read-only ``DASHBOARD_JOURNAL_SPAN``, ``DASHBOARD_OPERATIONS`` and ``DASHBOARD_LAST_ACTIVITY``
queries.

The journal records when each entry was written (``created_at``), not when the operation
started: a step's start is taken as the end of the entry before it (≈), a wait ends when the
next entry was written (≈). A sleep's end is exact (its wake-up time is recorded).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .._front.lifecycle import Connected
from .._status import PENDING, WorkflowStatus
from ._data import ENTRY_CHARS, Value, decode_error

#: Journal entries per timeline page.
JOURNAL_PAGE = 100

# Journal names of the built-in operations (as recorded in the operations table).
_KINDS = {
    "asyncflow.send": "send",
    "asyncflow.recv": "recv",
    "asyncflow.set_event": "set_event",
    "asyncflow.get_event": "get_event",
    "asyncflow.write_stream": "write_stream",
    "asyncflow.close_stream": "close_stream",
    "asyncflow.sleep": "sleep",
    "asyncflow.start_workflow": "child",
    "asyncflow.wait_first": "wait_first",
    "asyncflow.set_attributes": "set_attributes",
    "asyncflow.continue_as_new": "continue_as_new",
}
WAITS = ("recv", "get_event", "wait_first")  # when such a wait ended is not recorded
#: Kinds whose value is shown (the attributes set; the next run's arguments).
_SHOWN = ("step", "send", "set_event", "write_stream", "set_attributes", "continue_as_new",
          *WAITS)


@dataclass(frozen=True, slots=True)
class Entry:
    """One operation of the timeline.

    ``kind`` is ``step`` (steps and transactions), ``send``, ``recv``, ``get_event``,
    ``wait_first``, ``set_event``, ``write_stream``, ``close_stream``, ``sleep``, ``child``,
    ``set_attributes`` or ``continue_as_new`` (the last entry of a kept earlier run).
    ``state`` is ``done``, ``failed``, ``waiting`` (a wait in progress), ``sleeping`` or
    ``interrupted`` (a wait the workflow ended in). ``key`` is an event's or a stream's key,
    ``topic`` and ``target`` a send's; ``value`` the step's or wait's result, the event's value,
    the message sent or the stream entry written. ``duration`` is in seconds: exact for a sleep,
    and for a step the time since the previous operation ended (``approximate``), when that is
    known. ``start`` and ``end`` place the entry on the waterfall (``end`` None: an instant).
    """

    function_id: int
    kind: str
    name: str
    state: str
    created_at: datetime
    value: Value | None
    error: str | None
    child_id: str | None
    duration: float | None
    approximate: bool
    until: datetime | None
    key: str | None = None
    topic: str | None = None
    target: str | None = None
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True, slots=True)
class JournalPage:
    """One page of the timeline: ``entries`` (function ids from ``first``), the journal's
    ``start`` and ``last`` function ids (None: empty), and the page size."""

    entries: list[Entry]
    first: int
    start: int | None
    last: int | None
    size: int = JOURNAL_PAGE

    @property
    def earlier(self) -> int | None:
        """The first function id of the page before this one (None: this is the first)."""
        if not self.entries or self.start is None or self.first <= self.start:
            return None
        return max(self.start, self.first - self.size)

    @property
    def later(self) -> int | None:
        """The first function id of the page after this one (None: this is the last)."""
        end = self.first + self.size
        return end if self.last is not None and self.last >= end else None


def _until(value: Value | None) -> datetime | None:
    try:
        return None if value is None else datetime.fromtimestamp(float(value.text), UTC)
    except (ValueError, OverflowError):
        return None


def _error_text(text: str | None) -> str | None:
    if text is None:
        return None
    error = decode_error(text)
    return f"{error.type_name}: {error.message}"


def build(rows: list[Any], status: WorkflowStatus, now: datetime,
          previous_end: datetime | None) -> list[Entry]:
    """Timeline entries from ``DASHBOARD_OPERATIONS`` rows (function-id order). ``previous_end``:
    when the entry before the first row ended (the workflow's creation for the first entry)."""
    entries: list[Entry] = []
    pending = status.status == PENDING
    for r in rows:
        name = str(r["name"])
        kind = _KINDS.get(name, "step")
        created_at: datetime = r["created_at"]
        error = _error_text(r["error"])
        completed = bool(r["completed"])
        value = Value.stored(r["value"], r["length"], ENTRY_CHARS)
        duration: float | None = None
        approximate = False
        until: datetime | None = None
        state = "failed" if error is not None else "done"
        start: datetime | None = created_at
        end: datetime | None = None
        if kind == "step":
            if previous_end is not None and previous_end <= created_at:
                duration, approximate = (created_at - previous_end).total_seconds(), True
                start = previous_end
            end = created_at
        elif kind == "sleep":
            until = _until(value)
            if until is not None:
                duration = max(0.0, (until - created_at).total_seconds())
                end = until
                if until > now:
                    state = "sleeping" if pending else "interrupted"
                    end = now if pending else status.completed_at
        elif kind in WAITS:
            if not completed:
                state = "waiting" if pending else "interrupted"
                end = now if pending else status.completed_at
            else:
                end = None  # set from the next entry (below), else the workflow's end
        entries.append(Entry(
            r["function_id"], kind, name, state, created_at,
            value if kind in _SHOWN and completed and error is None else None, error,
            r["child_id"], duration, approximate, until,
            r["key"], r["topic"], r["target"], start, end,
        ))
        previous_end = (until if kind == "sleep" else
                        None if kind in (*WAITS, "child") else created_at)
    # A completed wait ended about when the next entry was written (the workflow went on).
    for index, entry in enumerate(entries):
        if entry.kind in WAITS and entry.state == "done":
            following = entries[index + 1].created_at if index + 1 < len(entries) else (
                status.completed_at or (now if pending else None))
            if following is not None and following >= entry.created_at:
                entries[index] = replace(entry, end=following)
    return entries


async def journal_page(core: Connected, status: WorkflowStatus, first: int | None) -> JournalPage:
    """The timeline page starting at function id ``first`` (None: the latest page)."""
    store = core.runtime.store
    span = await store.dashboard_journal_span(status.workflow_id)
    if span is None:
        return JournalPage([], 0, None, None)
    start, last = int(span["first"]), int(span["last"])
    if first is None:
        first = last - JOURNAL_PAGE + 1
    first = max(start, min(first, last))
    # One entry more before the page: when it ended is where the page's first step began.
    rows = await store.dashboard_operations(status.workflow_id, max(0, first - 1),
                                            first + JOURNAL_PAGE, ENTRY_CHARS)
    before = [row for row in rows if row["function_id"] < first]
    shown = [row for row in rows if row["function_id"] >= first]
    now = datetime.now(UTC)
    previous_end: datetime | None = status.created_at
    if before:
        head = build(before, status, now, None)[-1]
        previous_end = head.until if head.kind == "sleep" else (
            None if head.kind in (*WAITS, "child") else head.created_at)
    return JournalPage(build(shown, status, now, previous_end), first, start, last)
