"""JSON encoding of every stored value (orjson), and validation of ids, names and timeouts.
No pickle, ever: typed values (dataclasses, datetimes, …) are stored as plain JSON
(:mod:`asyncflow._encode`) and read back by annotation (:mod:`asyncflow._decode`). Recorded
exceptions are encoded by :mod:`asyncflow._recorded`."""

from __future__ import annotations

import decimal
import hashlib
import json
import math
from json.encoder import encode_basestring as _encode_string
from typing import Any, NoReturn

import orjson

from . import _encode
from ._errors import (
    InvalidArgumentError,
    SerializationError,
    ValueTooLargeError,
)

#: The largest JSON encoding of a single value (argument list, result, message, event or stream
#: value) that asyncflow stores. Larger values raise :class:`ValueTooLargeError` before anything
#: is written.
MAX_VALUE_BYTES = 16 * 1024 * 1024

#: Longest accepted workflow id, topic, event or stream key and idempotency key, in bytes of
#: UTF-8 (characters, for ASCII). Ids travel in NOTIFY payloads (< 8000 bytes), and an id plus a
#: key must fit in one btree index entry (< 2704 bytes).
MAX_ID_LENGTH = 1000

#: Dataclasses, datetimes and subclasses of plain types are converted by ``_encode.default``.
_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


_PLAIN = (str, int, bool, type(None))


def _has_non_finite(value: Any) -> bool:
    """Whether ``value`` holds NaN or Infinity anywhere (orjson writes them as null); typed
    values are looked into as :func:`_encode.default` converts them."""
    kind = type(value)
    if kind is float:
        return not math.isfinite(value)
    if kind is dict:
        return any(_has_non_finite(v) for v in value.values())
    if kind is list or kind is tuple:
        return any(_has_non_finite(v) for v in value)
    if kind in _PLAIN:
        return False
    convert = _encode.converter(kind)
    try:
        converted = convert(value) if convert is not None else value
    except Exception:
        return True  # let the walk say what is wrong
    if type(converted) is kind:
        return type(converted) is float and not math.isfinite(converted)
    return _has_non_finite(converted)


def dumps(value: Any, what: str = "value", root: str = "value") -> str:
    """Encode ``value`` as JSON text, or raise :class:`SerializationError` naming ``what`` and
    the path (from ``root``) and type of the part that cannot be stored.

    orjson encodes plain JSON natively and typed values through :func:`_encode.default`. Only
    when it refuses a value is the value walked again in Python (:func:`_encode.to_plain`), to
    name what cannot be stored, or to hand integers outside 64 bits to an exact encoder, which
    writes them digit for digit. Its text starts with a space (still valid JSON) so that
    :func:`loads` knows to parse it exactly.
    """
    try:
        data = orjson.dumps(value, default=_encode.default, option=_OPTIONS)
    except TypeError:
        return _dumps_exact(plain(value, what, root), what)
    if len(data) > MAX_VALUE_BYTES:
        _too_large(what, len(data))
    # orjson writes NaN/Infinity as null; refuse instead of silently changing the value.
    if b"null" in data and value is not None and _has_non_finite(value):
        plain(value, what, root)  # raises, naming where the NaN is
    return data.decode()


def plain(value: Any, what: str = "value", root: str = "value") -> Any:
    """``value`` as plain JSON types (see :func:`_encode.to_plain`), or
    :class:`SerializationError` naming ``what``, the path from ``root`` and the type."""
    try:
        return _encode.to_plain(value, root)
    except _encode.Refused as exc:
        raise SerializationError(
            f"{what} is not JSON-serializable: {exc.path}: {exc.reason}. asyncflow stores "
            "plain JSON, dataclasses, pydantic models, datetime/date/time/timedelta, UUID, "
            "finite Decimal, bytes, Enum, tuple, set, frozenset, TypedDict and NamedTuple "
            "(docs/guide.md, Values)."
        ) from None


def loads(text: str) -> Any:
    """Decode JSON text written by :func:`dumps` (integers of any size come back exactly)."""
    if text.startswith(EXACT_MARK):
        return loads_exact(text)
    return orjson.loads(text)


def _too_large(what: str, size: int) -> NoReturn:
    raise ValueTooLargeError(
        f"{what} is {size} bytes as JSON; the limit is {MAX_VALUE_BYTES} bytes "
        "(asyncflow.MAX_VALUE_BYTES). Store large data elsewhere and pass a reference."
    )


def _non_finite(what: str) -> NoReturn:
    raise SerializationError(
        f"{what} contains NaN or Infinity, which JSON cannot represent; "
        "replace it (for example with None or a string) before storing it."
    )


def _not_json(what: str, reason: object) -> NoReturn:
    raise SerializationError(
        f"{what} is not JSON-serializable ({reason}); see docs/guide.md, Values, for what "
        "asyncflow stores."
    )


# -- integers past 64 bits ----------------------------------------------------------------------

#: Texts written by the exact encoder start with this (JSON allows leading whitespace).
EXACT_MARK = " "
_MAX_DEPTH = 254  # containers nested deeper are refused, as orjson refuses them
_DIGITS_LIMIT = 4000  # below Python's int/str conversion limit (4300 by default)
_DIGITS_BOUND = 10**_DIGITS_LIMIT  # computed once: the power costs tens of µs per call


class _Refused(Exception):
    """A value the JSON encoding cannot hold; the reason says why."""


def _int_text(number: int) -> str:
    if -_DIGITS_BOUND < number < _DIGITS_BOUND:
        return int.__repr__(number)
    # Past Python's int-to-text limit (sys.get_int_max_str_digits): decimal converts exactly.
    return str(decimal.Decimal(number))


def _write_exact(value: Any, out: list[str], depth: int) -> None:
    kind = type(value)
    if kind is str:
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _Refused("str is not valid UTF-8: surrogates not allowed") from None
        out.append(_encode_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif kind is int:
        out.append(_int_text(value))
    elif kind is float:
        if not math.isfinite(value):
            raise _Refused("NaN")
        out.append(float.__repr__(value))
    elif kind is list or kind is tuple or kind is dict:
        if depth >= _MAX_DEPTH:
            raise _Refused("Recursion limit reached")
        if kind is dict:
            out.append("{")
            for index, (key, item) in enumerate(value.items()):
                if type(key) is not str:
                    raise _Refused("Dict key must be str")
                if index:
                    out.append(",")
                _write_exact(key, out, depth + 1)
                out.append(":")
                _write_exact(item, out, depth + 1)
            out.append("}")
        else:
            out.append("[")
            for index, item in enumerate(value):
                if index:
                    out.append(",")
                _write_exact(item, out, depth + 1)
            out.append("]")
    else:
        raise _Refused(f"Type is not JSON serializable: {kind.__name__}")


def _dumps_exact(value: Any, what: str) -> str:
    """The exact encoding of a plain value (from :func:`plain`) that orjson refused: integers
    outside 64 bits."""
    out = [EXACT_MARK]
    try:
        _write_exact(value, out, 0)
    except _Refused as exc:
        if str(exc) == "NaN":
            _non_finite(what)
        _not_json(what, exc)
    text = "".join(out)
    size = len(text) if text.isascii() else len(text.encode())
    if size > MAX_VALUE_BYTES:
        _too_large(what, size)
    return text


def _parse_int(digits: str) -> int:
    if len(digits) < _DIGITS_LIMIT:
        return int(digits)
    return int(decimal.Decimal(digits))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_exact(text: str) -> Any:
    """Parse JSON keeping integers of any size exact (slower than orjson; NaN is refused)."""
    return json.loads(text, parse_int=_parse_int, parse_constant=_refuse_constant)


def _check_text(value: str, what: str) -> None:
    """Text Postgres stores and indexes exactly: no NUL, valid UTF-8, MAX_ID_LENGTH bytes."""
    if value.isascii():
        size = len(value)
    else:
        try:
            size = len(value.encode())
        except UnicodeEncodeError:
            raise InvalidArgumentError(
                f"{what} is not valid Unicode text (it contains a lone surrogate)"
            ) from None
    if size > MAX_ID_LENGTH:
        raise InvalidArgumentError(
            f"{what} is {size} bytes long as UTF-8; the limit is {MAX_ID_LENGTH} "
            "(asyncflow.MAX_ID_LENGTH)"
        )
    if "\x00" in value:
        raise InvalidArgumentError(f"{what} must not contain NUL characters (Postgres text)")


def derived_id(owner: str, suffix: str) -> str:
    """An id made from another id (a parent's, a schedule's name) and a suffix, always a valid
    id: ``owner + suffix``, or, when that passes MAX_ID_LENGTH bytes, the SHA-256 (hex) of
    ``owner`` + ``suffix`` (deterministic, so every process derives the same id)."""
    candidate = owner + suffix
    if len(candidate.encode("utf-8", "surrogatepass")) <= MAX_ID_LENGTH:
        return candidate
    return hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest() + suffix


def check_id(value: object, what: str = "workflow id") -> str:
    """Validate an id: a non-empty str without NUL, at most MAX_ID_LENGTH bytes of UTF-8."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidArgumentError(f"{what} must not be empty")
    _check_text(value, what)
    return value


def check_name(value: object, what: str, *, optional: bool = False) -> str | None:
    """Validate a topic or key: a str without NUL, at most MAX_ID_LENGTH bytes of UTF-8
    (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a str, not {type(value).__name__}")
    _check_text(value, what)
    return value


def check_timeout(value: object, what: str = "timeout_seconds") -> float:
    """Validate a timeout in seconds: a finite number >= 0 (huge values are capped at a year)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{what} must be a number of seconds, not {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0:
        raise InvalidArgumentError(f"{what} must be >= 0, not {value!r}")
    return min(seconds, 365 * 24 * 3600.0)


def check_workflow_timeout(value: object, what: str = "timeout_seconds") -> float | None:
    """Validate a workflow's timeout: ``None`` (none) or a number of seconds > 0 (capped at a
    year, like every timeout)."""
    if value is None:
        return None
    seconds = check_timeout(value, what)
    if seconds <= 0:
        raise InvalidArgumentError(f"{what} must be None or a number of seconds > 0, not "
                                   f"{value!r}")
    return seconds


def check_message(
    destination_id: object, message: Any, topic: object, idempotency_key: object
) -> str:
    """Validate a send's arguments; returns the message encoded."""
    check_id(destination_id, "destination_id")
    check_name(topic, "topic", optional=True)
    check_name(idempotency_key, "idempotency_key", optional=True)
    return dumps(message, "message")
