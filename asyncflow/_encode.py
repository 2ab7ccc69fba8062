"""Typed values to plain JSON: what a dataclass, a pydantic model, a datetime, a UUID, a Decimal,
bytes, an Enum, a tuple or a set is stored as. No type tag is written: the JSON is what a reader
without the type would expect (an object, an ISO 8601 string, a list…), and the reader's
annotation says how to read it back (:mod:`asyncflow._decode`).

:func:`default` is orjson's ``default=`` hook (one level; orjson recurses), so values of plain
JSON types never reach Python code. :func:`to_plain` converts a whole value the same way, walking
it in Python; it runs only when orjson refused something, to name the path of what cannot be
stored (``order.items[3].price: Decimal('NaN')``) or to hand integers past 64 bits to the exact
encoder.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import math
import sys
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

#: Containers nested deeper than this are refused (as orjson refuses them).
MAX_DEPTH = 254


class Refused(Exception):
    """A value that has no JSON form; ``path`` says where it is, the message why."""

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


# -- one value, one level --------------------------------------------------------------------


def datetime_text(value: datetime) -> str:
    """ISO 8601 with the UTC offset; a ``zoneinfo`` zone's name follows in brackets (RFC 9557:
    ``2024-03-31T02:30:00+02:00[Europe/Paris]``), so it comes back in the same zone."""
    text = value.isoformat()
    key = getattr(value.tzinfo, "key", None)
    if key is not None and value.utcoffset() is not None and type(key) is str:
        return f"{text}[{key}]"
    return text


def duration_text(value: timedelta) -> str:
    """ISO 8601 duration, exact to the microsecond: ``P1DT2H3M4.000005S``, ``-PT1S``."""
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}P{value.days}D" if value.days else f"{sign}P"
    clock = ""
    if hours:
        clock += f"{hours}H"
    if minutes:
        clock += f"{minutes}M"
    if seconds or value.microseconds or not (hours or minutes or value.days):
        clock += (f"{seconds}.{value.microseconds:06d}".rstrip("0") + "S" if value.microseconds
                  else f"{seconds}S")
    return text + ("T" + clock if clock else "")


def _decimal(value: Decimal) -> str:
    if not value.is_finite():
        raise Refused("NaN or Infinity has no exact JSON form")
    return str(value)


def _bytes(value: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(value).decode("ascii")


def _set(value: set[Any] | frozenset[Any]) -> list[Any]:
    try:  # the same order on every run, when the items can be ordered
        return sorted(value)
    except TypeError:
        return list(value)


def _pydantic_model(kind: type) -> bool:
    pydantic = sys.modules.get("pydantic")  # no model exists unless pydantic was imported
    return pydantic is not None and issubclass(kind, pydantic.BaseModel)


def _dump_model(value: Any) -> Any:
    return value.model_dump(mode="json", by_alias=True)


def _converter(kind: type) -> Callable[[Any], Any] | None:
    """How a value of ``kind`` is converted (one level), or ``None``: it has no JSON form."""
    if issubclass(kind, enum.Enum):
        return _enum_value
    if issubclass(kind, datetime):
        return datetime_text
    if issubclass(kind, date | time):
        return kind.isoformat
    if issubclass(kind, timedelta):
        return duration_text
    if issubclass(kind, Decimal):
        return _decimal
    if issubclass(kind, uuid.UUID):
        return str
    if issubclass(kind, bytes | bytearray | memoryview):
        return _bytes
    if issubclass(kind, set | frozenset):
        return _set
    if dataclasses.is_dataclass(kind):
        names = tuple(field.name for field in dataclasses.fields(kind))
        return lambda value: {name: getattr(value, name) for name in names}
    if issubclass(kind, tuple):  # a NamedTuple (plain tuples are native): a list, like tuples
        return list
    if _pydantic_model(kind):
        return _dump_model
    for base in (str, int, float, dict, list):  # other subclasses of plain types: as the base
        if issubclass(kind, base):
            return base
    return None


def _enum_value(value: enum.Enum) -> Any:
    return value.value


_CONVERTERS: dict[type, Callable[[Any], Any]] = {}


def converter(kind: type) -> Callable[[Any], Any] | None:
    """The (cached) conversion of ``kind``; ``None`` if it has no JSON form."""
    found = _CONVERTERS.get(kind)
    if found is None:
        found = _converter(kind)
        if found is not None:
            _CONVERTERS[kind] = found
    return found


def default(value: Any) -> Any:
    """orjson's ``default=``: the value one level down, or ``TypeError``."""
    convert = converter(type(value))
    if convert is None:
        raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
    try:
        return convert(value)
    except Refused as exc:
        raise TypeError(exc.reason) from None


# -- a whole value, walked in Python -----------------------------------------------------------

_PLAIN_SCALARS = (str, int, float, bool, type(None))


def to_plain(value: Any, path: str = "value") -> Any:
    """``value`` converted to plain JSON types (dict with str keys, list, str, int, float, bool,
    None), as :func:`default` converts it; raises :class:`Refused` naming the path and the
    type of the first part that has no JSON form."""
    return _walk(value, path, 0)


def _key(key: Any, path: str) -> str:
    kind = type(key)
    if kind is str:
        text: str = key
        return text
    if kind is int or (isinstance(key, int) and not isinstance(key, bool)):
        return str(int(key))
    convert = converter(kind) if kind is not bool and key is not None else None
    if convert is not None and not issubclass(kind, tuple | set | frozenset | dict | list):
        try:
            converted = convert(key)
        except Refused as exc:
            raise Refused(f"dict key {_short(key)}: {exc.reason}", path) from None
        if type(converted) is str:
            return converted
        if type(converted) is int:
            return str(converted)
    raise Refused(f"dict key {_short(key)} ({kind.__name__}): Dict key must be str, int, or "
                  "a UUID, Enum, date or Decimal", path)


def _walk(value: Any, path: str, depth: int) -> Any:
    kind = type(value)
    if kind is str:
        try:
            value.encode()
        except UnicodeEncodeError:
            raise Refused("str is not valid UTF-8: surrogates not allowed",
                          path) from None
        return value
    if kind is float:
        if not math.isfinite(value):
            raise Refused(f"{_short(value)}: NaN or Infinity has no JSON form", path)
        return value
    if kind in _PLAIN_SCALARS:
        return value
    if depth >= MAX_DEPTH:
        raise Refused(f"Recursion limit reached: nested more than {MAX_DEPTH} levels deep "
                      "(a cycle?)", path)
    if kind is dict:
        return {(k := _key(key, path)): _walk(item, f"{path}[{k!r}]", depth + 1)
                for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_walk(item, f"{path}[{index}]", depth + 1)
                for index, item in enumerate(value)]
    convert = converter(kind)
    if convert is None:
        raise Refused(f"{_short(value)}: {kind.__qualname__} has no JSON form", path)
    try:
        converted = convert(value)
    except Refused as exc:
        raise Refused(f"{_short(value)}: {exc.reason}", path) from None
    except Exception as exc:  # a pydantic model that cannot dump itself, a broken property
        raise Refused(f"{_short(value)}: {type(exc).__name__}: {exc}", path) from None
    if dataclasses.is_dataclass(kind) or (type(converted) is dict and _pydantic_model(kind)):
        return {name: _walk(item, f"{path}.{name}", depth + 1)
                for name, item in converted.items()}
    names = getattr(kind, "_fields", None) if issubclass(kind, tuple) else None
    if names is not None:  # a NamedTuple: its fields by name
        return [_walk(item, f"{path}.{name}", depth + 1) for name, item in zip(
            names, converted, strict=False)]
    return _walk(converted, path, depth + 1)
