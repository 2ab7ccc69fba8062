"""The export format: workflows with their journals, events, streams and pending messages, as
JSON lines.

The first line is a header (``{"type": "header", "format": "asyncflow-export", "version": 1,
…}``); then each workflow is one ``workflow`` line followed by one line per row it owns
(``operation``, ``event``, ``stream_head``, ``stream_entry``, ``message``, ``message_key``), each
``{"type": kind, "row": {column: value}}`` with the row exactly as stored: values the workflow
stored (inputs, outputs, messages, …) stay JSON *text* inside the row, so nothing about them
changes on the way (integers of any size included). Timestamps are ISO 8601 strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from .. import _codec
from .._errors import ExportFormatError, InvalidArgumentError
from .._status import Status
from .._storage.store import EXPORT_KINDS, JournalEntry, Outcome

FORMAT = "asyncflow-export"
VERSION = 1
ROW_KINDS = EXPORT_KINDS[1:]  # the rows a workflow owns, in the order they are written

# The columns a row must carry (NOT NULL in the schema, no default a missing key could use).
_REQUIRED = {
    "workflow": ("workflow_id", "name", "status", "inputs", "app_version", "recovery_attempts",
                 "created_at", "updated_at"),
    "operation": ("workflow_id", "function_id", "name", "completed", "created_at"),
    "event": ("workflow_id", "key", "value", "version", "updated_at"),
    "stream_head": ("workflow_id", "key", "next_offset", "closed"),
    "stream_entry": ("workflow_id", "key", "offset", "value", "writer_fid", "writer_seq",
                     "created_at"),
    "message": ("destination_id", "message"),
    "message_key": ("destination_id", "idempotency_key"),
}


@dataclass(slots=True)
class WorkflowHistory:
    """One exported workflow: its row, and the rows it owns by kind (all as stored)."""

    row: dict[str, Any]
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def workflow_id(self) -> str:
        value: str = self.row["workflow_id"]
        return value

    @property
    def name(self) -> str:
        value: str = self.row["name"]
        return value

    @property
    def status(self) -> str:
        value: str = self.row["status"]
        return value

    @property
    def inputs(self) -> str:
        value: str = self.row["inputs"]
        return value

    def outcome(self) -> Outcome:
        return Outcome(self.status, self.row.get("output"), self.row.get("error"))

    def journal(self) -> dict[int, JournalEntry]:
        """The journal as a replay loads it."""
        return {
            op["function_id"]: JournalEntry(
                op["name"], op.get("output"), op.get("error"), op.get("child_id"),
                bool(op["completed"]), op.get("deadline"))
            for op in self.rows.get("operation", [])
        }

    def child_ids(self) -> set[str]:
        """The children this workflow's journal started."""
        return {op["child_id"] for op in self.rows.get("operation", [])
                if op.get("child_id") is not None}


# -- writing ------------------------------------------------------------------------------------


def header(schema_version: int) -> str:
    """The first line of an export."""
    return orjson.dumps({
        "type": "header", "format": FORMAT, "version": VERSION,
        "schema_version": schema_version, "exported_at": datetime.now(UTC).isoformat(),
    }).decode() + "\n"


def lines(history: WorkflowHistory) -> Iterator[str]:
    """The lines of one workflow (each ending in a newline)."""
    yield orjson.dumps({"type": "workflow", "row": history.row}).decode() + "\n"
    for kind in ROW_KINDS:
        for row in history.rows.get(kind, ()):
            yield orjson.dumps({"type": kind, "row": row}).decode() + "\n"


def from_rows(exported: dict[str, list[tuple[str, str]]],
              order: list[str] | None = None) -> list[WorkflowHistory]:
    """Group rows read from the database (``Store.export_rows``) into histories, in the
    ``order`` of their ids (default: of their workflow rows)."""
    histories: dict[str, WorkflowHistory] = {}
    for workflow_id, text in exported.get("workflow", []):
        histories[workflow_id] = WorkflowHistory(orjson.loads(text))
    for kind in ROW_KINDS:
        for workflow_id, text in exported.get(kind, []):
            owner = histories.get(workflow_id)
            if owner is not None:
                owner.rows.setdefault(kind, []).append(orjson.loads(text))
    if order is None:
        return list(histories.values())
    return [histories[w] for w in order if w in histories]


# -- reading ------------------------------------------------------------------------------------


def _owner_key(kind: str) -> str:
    return "destination_id" if kind in ("message", "message_key") else "workflow_id"


def _check_row(kind: str, row: Any, number: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ExportFormatError(f"line {number}: a {kind!r} line needs a \"row\" object")
    missing = [key for key in _REQUIRED[kind] if row.get(key) is None]
    if missing:
        raise ExportFormatError(
            f"line {number}: the {kind} row lacks {', '.join(missing)}")
    return row


_INT4 = 2**31 - 1
_INT8 = 2**63 - 1
_QUEUED = (Status.ENQUEUED, Status.DELAYED)


def _json_text(value: object, what: str) -> Any:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be JSON text (a str), not {value!r}")
    try:
        return _codec.loads(value)
    except ValueError as exc:  # orjson's and json's decode errors are ValueErrors
        raise InvalidArgumentError(f"{what} is not JSON text ({exc})") from None


def _inputs(value: object) -> None:
    decoded = _json_text(value, "inputs")
    if not isinstance(decoded, dict) or not isinstance(decoded.get("args"), list) \
            or not isinstance(decoded.get("kwargs"), dict):
        raise InvalidArgumentError(
            'inputs must be the JSON of {"args": [...], "kwargs": {...}}, not '
            f"{str(value)[:80]!r}")


def _optional_json(value: object, what: str) -> None:
    if value is not None:
        _json_text(value, what)


def _integer(value: object, what: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgumentError(f"{what} must be an integer from {low} to {high}, "
                                   f"not {value!r}")


def _timestamp(value: object, what: str, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgumentError(
            f"{what} must be an ISO 8601 timestamp, not {value!r}") from None


def _seconds(value: object, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value \
            or value in (float("inf"), float("-inf")):
        raise InvalidArgumentError(f"{what} must be a finite number of seconds, not {value!r}")


def _check_workflow_fields(row: dict[str, Any]) -> None:
    """Every column of a workflow row a workflow could have stored (InvalidArgumentError)."""
    _codec.check_id(row["workflow_id"])
    _codec.check_name(row["name"], "workflow name")
    status = row["status"]
    if status not in Status.__members__:
        raise InvalidArgumentError(f"unknown workflow status {status!r}")
    _inputs(row["inputs"])
    _optional_json(row.get("output"), "output")
    _optional_json(row.get("error"), "error")
    _codec.check_name(row["app_version"], "app_version")
    _integer(row["recovery_attempts"], "recovery_attempts", 0, _INT4)
    _integer(row.get("priority", 0), "priority", -_INT4 - 1, _INT4)
    _integer(row.get("epoch", 0), "epoch", 0, _INT8)
    for key in ("executor_id", "deduplication_id", "partition_key", "traceparent"):
        _codec.check_name(row.get(key), key, optional=True)
    for key in ("parent_workflow_id", "queue_name"):
        if row.get(key) is not None:
            _codec.check_id(row[key], key)
    if status in _QUEUED and row.get("queue_name") is None:
        raise InvalidArgumentError(f"a {status} workflow needs its queue_name")
    _timestamp(row["created_at"], "created_at", optional=False)
    _timestamp(row["updated_at"], "updated_at", optional=False)
    for key in ("completed_at", "delay_until", "dispatched_at"):
        _timestamp(row.get(key), key)
    _seconds(row.get("timeout_seconds"), "timeout_seconds")
    _seconds(row.get("deadline"), "deadline")


#: Per kind of owned row: its integer columns (with their bounds), boolean and JSON columns.
_OWNED_INTEGERS = {
    "operation": {"function_id": _INT4},
    "event": {"version": _INT8},
    "stream_head": {"next_offset": _INT8},
    "stream_entry": {"offset": _INT8, "writer_fid": _INT4, "writer_seq": _INT4},
}
_OWNED_BOOLEANS = {"operation": ("completed",), "stream_head": ("closed",)}
_OWNED_JSON = {"operation": ("output", "error"), "event": ("value",),
               "stream_entry": ("value",), "message": ("message",)}


def _check_owned(kind: str, row: dict[str, Any], number: int) -> None:
    """The columns of an owned row that a workflow could have stored."""
    try:
        for key, high in _OWNED_INTEGERS.get(kind, {}).items():
            _integer(row[key], key, -high - 1, high)
        for key in _OWNED_BOOLEANS.get(kind, ()):
            if not isinstance(row[key], bool):
                raise InvalidArgumentError(f"{key} must be true or false, not {row[key]!r}")
        for key in _OWNED_JSON.get(kind, ()):
            _optional_json(row.get(key), key)
    except InvalidArgumentError as exc:
        raise ExportFormatError(f"line {number}: the {kind} row: {exc}") from None


def _check_workflow(row: dict[str, Any], number: int) -> None:
    try:
        _check_workflow_fields(row)
    except InvalidArgumentError as exc:
        raise ExportFormatError(
            f"line {number}: workflow {row['workflow_id']!r}: {exc}") from None


def _check_header(record: Any, number: int) -> None:
    if not isinstance(record, dict) or record.get("type") != "header" \
            or record.get("format") != FORMAT:
        raise ExportFormatError(
            f"line {number}: not an asyncflow export (its first line must be the header "
            "written by export_workflows / `asyncflow workflow export`)")
    version = record.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ExportFormatError(
            f"line {number}: export format version {version!r} is newer than this asyncflow "
            f"reads ({VERSION}); upgrade asyncflow")


def parse(text_lines: Iterable[str]) -> Iterator[WorkflowHistory]:
    """Read an export: yield each workflow once all its lines are read.

    Raises :class:`ExportFormatError` naming the line for anything that is not an export.
    """
    current: WorkflowHistory | None = None
    seen_header = False
    for number, line in enumerate(text_lines, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ExportFormatError(f"line {number}: not JSON ({exc})") from None
        if not seen_header:
            _check_header(record, number)
            seen_header = True
            continue
        kind = record.get("type") if isinstance(record, dict) else None
        if kind == "workflow":
            row = _check_row(kind, record.get("row"), number)
            _check_workflow(row, number)
            if current is not None:
                yield current
            current = WorkflowHistory(row)
        elif kind in _REQUIRED:
            row = _check_row(kind, record.get("row"), number)
            if current is None or row[_owner_key(kind)] != current.workflow_id:
                raise ExportFormatError(
                    f"line {number}: a {kind} row must follow the line of its workflow")
            _check_owned(kind, row, number)
            current.rows.setdefault(kind, []).append(row)
        elif kind == "header":
            raise ExportFormatError(f"line {number}: a second header (concatenate exports "
                                    "without their headers, or import them one by one)")
        else:
            raise ExportFormatError(f"line {number}: unknown line type {kind!r}")
    if not seen_header:
        raise ExportFormatError("the file is empty: not an asyncflow export")
    if current is not None:
        yield current
