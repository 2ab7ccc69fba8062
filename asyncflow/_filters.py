"""Which workflows an operation selects: the filters of ``list_workflows`` and of the bulk
operations, validated once, and the cursors of keyset pages.

Lists are ordered newest first: ``created_at`` descending, then ``workflow_id``. A page continues
after a place in that order — the last workflow of the previous page, its ``cursor`` text, or a
``(created_at, workflow_id)`` pair — so pages never skip or repeat a workflow, however many are
started meanwhile, and each costs the same on a table of any size.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from . import _codec
from ._errors import InvalidArgumentError
from ._status import (
    CANCELLED,
    ERROR,
    MAX_RECOVERY_ATTEMPTS_EXCEEDED,
    Status,
    WorkflowStatus,
)

ALL_STATUSES: tuple[str, ...] = tuple(str(status) for status in Status)
RESUMABLE: tuple[str, ...] = (CANCELLED, ERROR, MAX_RECOVERY_ATTEMPTS_EXCEEDED)

Cursor = tuple[datetime, str]


@dataclass(frozen=True, slots=True)
class WorkflowFilter:
    """Validated filters; ``None`` (and all statuses) selects everything."""

    statuses: tuple[str, ...] = ALL_STATUSES
    created_after: datetime | None = None
    created_before: datetime | None = None
    name: str | None = None
    app_version: str | None = None
    workflow_id_prefix: str | None = None
    parent_workflow_id: str | None = None
    queue_name: str | None = None  # (passed after each statement's own parameters, as $11)
    #: JSON of the attributes a listed workflow must have (``list_workflows`` only, as $12).
    attributes: str | None = None
    #: The first scalar attribute among them (key, JSON of the value): its index is walked.
    walk: tuple[str, str] | None = None

    def params(self) -> tuple[Any, ...]:
        """The filtered statements' parameters $1-$7 (statuses, time range, name, app version,
        id prefix, parent)."""
        return (list(self.statuses), self.created_after, self.created_before, self.name,
                self.app_version, self.workflow_id_prefix, self.parent_workflow_id)

    @property
    def narrowed(self) -> bool:
        """Whether anything but the statuses narrows the selection."""
        return any(value is not None for value in (
            self.created_after, self.created_before, self.name, self.app_version,
            self.workflow_id_prefix, self.parent_workflow_id, self.queue_name,
            self.attributes))


def check_statuses(status: object, allowed: tuple[str, ...] = ALL_STATUSES,
                   what: str = "status") -> tuple[str, ...]:
    """One status or an iterable of them (``None``: every allowed one), in ``allowed``."""
    if status is None:
        return allowed
    items: Iterable[object] = (status,) if isinstance(status, str) else _iterable(status, what)
    chosen: list[str] = []
    for item in items:
        if not isinstance(item, str) or item not in ALL_STATUSES:
            raise InvalidArgumentError(
                f"unknown {what} {item!r}; statuses are {', '.join(ALL_STATUSES)}")
        if item not in allowed:
            raise InvalidArgumentError(
                f"{what} {item!r} cannot be selected here; choose from {', '.join(allowed)}")
        if item not in chosen:
            chosen.append(str(item))
    if not chosen:
        raise InvalidArgumentError(f"{what} must name at least one status, not {status!r}")
    return tuple(chosen)


def _iterable(value: object, what: str) -> Iterable[object]:
    if isinstance(value, bytes | dict) or not isinstance(value, Iterable):
        raise InvalidArgumentError(
            f"{what} must be a status or an iterable of statuses, not {value!r}")
    return value


def check_time(value: object, what: str) -> datetime | None:
    """A timezone-aware datetime (or ``None``)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidArgumentError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError(
            f"{what} must be timezone-aware (e.g. datetime.now(timezone.utc)), not {value!r}")
    return value


def make_filter(
    *,
    status: object = None,
    allowed: tuple[str, ...] = ALL_STATUSES,
    created_after: object = None,
    created_before: object = None,
    name: object = None,
    app_version: object = None,
    workflow_id_prefix: object = None,
    parent_workflow_id: object = None,
    queue_name: object = None,
    attributes: object = None,
) -> WorkflowFilter:
    """Validate filters (bad input fails here, before anything is read or written)."""
    prefix = _codec.check_name(workflow_id_prefix, "workflow_id_prefix", optional=True)
    return WorkflowFilter(
        statuses=check_statuses(status, allowed),
        created_after=check_time(created_after, "created_after"),
        created_before=check_time(created_before, "created_before"),
        name=_codec.check_name(name, "name", optional=True),
        app_version=_codec.check_name(app_version, "app_version", optional=True),
        workflow_id_prefix=prefix or None,  # "" selects everything
        parent_workflow_id=None if parent_workflow_id is None else _codec.check_id(
            parent_workflow_id, "parent_workflow_id"),
        queue_name=_codec.check_name(queue_name, "queue_name", optional=True),
        attributes=None if attributes is None else check_attributes(attributes, empty=False),
        walk=None if attributes is None else _walked(attributes),
    )


def parse_attribute(text: str) -> tuple[str, Any]:
    """One attribute filter written as text (the CLI's ``--attr``, the dashboard's box):
    ``KEY=TEXT`` (the value is the string TEXT) or ``KEY:=JSON`` (``count:=3``, ``vip:=true``).
    """
    key, sep, value = text.strip().partition("=")
    key = key.strip()
    if not sep or not key or key == ":":
        raise InvalidArgumentError(
            f"not an attribute: {text!r} (use KEY=TEXT, or KEY:=JSON for a number, true, …)")
    if not key.endswith(":"):
        return key, value.strip()
    try:
        return key[:-1].strip(), orjson.loads(value)
    except orjson.JSONDecodeError:
        raise InvalidArgumentError(
            f"not JSON: {value!r} in {text!r} (KEY:=JSON; use KEY=TEXT for a string)") from None


def _walked(attributes: object) -> tuple[str, str] | None:
    """The attribute whose index a listing walks: the first with a scalar value."""
    assert isinstance(attributes, dict)
    for key, value in attributes.items():
        if not isinstance(value, list | dict):
            return key, _codec.dumps(value, f"attributes[{key!r}]")
    return None


#: JSON types an attribute value may have (nested lists and objects of them too).
_SCALARS = (str, int, float, bool, type(None))


def check_attributes(value: object, what: str = "attributes", *, empty: bool = True) -> str:
    """Workflow attributes: a dict of str keys (each a valid name) to plain JSON values (str,
    int, float, bool, None, and lists and dicts of them); their JSON text. Anything else raises
    :class:`InvalidArgumentError` naming the key; a too large object, ValueTooLargeError."""
    if not isinstance(value, dict):
        raise InvalidArgumentError(
            f"{what} must be a dict of str keys to JSON values, not {type(value).__name__}")
    if not value and not empty:
        raise InvalidArgumentError(f"{what} must name at least one attribute, not {{}}")
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(f"{what}: keys must be non-empty str, not {key!r}")
        _codec.check_name(key, f"{what} key")
        _check_plain(item, f"{what}[{key!r}]")
    return _codec.dumps(value, what)


def _check_plain(value: object, where: str) -> None:
    if isinstance(value, _SCALARS):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgumentError(f"{where} is {value!r}, which JSON cannot hold")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgumentError(f"{where}: keys must be str, not {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise InvalidArgumentError(
        f"{where} is a {type(value).__name__}, not a JSON value; attributes hold str, int, "
        "float, bool, None, and lists and dicts of them")


def parse_after(after: object) -> Cursor | None:
    """Where a page starts: after a :class:`WorkflowStatus`, a cursor text, or a
    ``(created_at, workflow_id)`` pair; ``None``: the first page."""
    if after is None:
        return None
    if isinstance(after, WorkflowStatus):
        return after.created_at, after.workflow_id
    if isinstance(after, str):
        return decode_cursor(after)
    if isinstance(after, tuple) and len(after) == 2:
        created_at = check_time(after[0], "after[0] (created_at)")
        if created_at is None:
            raise InvalidArgumentError("after[0] (created_at) must be a datetime, not None")
        return created_at, _codec.check_id(after[1], "after[1] (workflow_id)")
    raise InvalidArgumentError(
        "after must be a WorkflowStatus (the last of the previous page), its .cursor text, or "
        f"a (created_at, workflow_id) pair, not {after!r}")


def decode_cursor(text: str) -> Cursor:
    """The place named by a cursor text (``WorkflowStatus.cursor``)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created, workflow_id = orjson.loads(raw)
        created_at = datetime.fromisoformat(created)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidArgumentError(
            f"after={text!r} is not a cursor; pass the .cursor of a listed workflow") from None
    if created_at.tzinfo is None or not isinstance(workflow_id, str) or not workflow_id:
        raise InvalidArgumentError(
            f"after={text!r} is not a cursor; pass the .cursor of a listed workflow")
    _codec.check_id(workflow_id, "the cursor's workflow id")
    return created_at, workflow_id

