"""Recorded exceptions: encoding an exception as JSON (which never fails) and rebuilding it as
the same class with the same args and attributes, so that a replay raises what the first run
raised. No pickle, ever: nothing is imported on behalf of stored data."""

from __future__ import annotations

import math
import sys
import traceback
from typing import Any

import orjson

from ._codec import MAX_VALUE_BYTES
from ._errors import RecordedError

# -- recorded exceptions -----------------------------------------------------------------------
#
# A record is JSON: {"v": 2, "module", "type", "message", "args", "attrs", "traceback"}. ``args``
# and ``attrs`` hold *packed* values (see ``_pack``) so that a replay rebuilds the exception with
# the same type, the same args and the same JSON-able attributes as the first run raised.
# Records without "v" (written by older versions) carry plain JSON args and no attributes.

_RECORD_VERSION = 2
#: Attributes kept in C slots rather than ``__dict__`` by built-in exception types.
_SLOT_ATTRS: tuple[tuple[type[BaseException], tuple[str, ...]], ...] = (
    (OSError, ("errno", "strerror", "filename", "filename2")),
    (ImportError, ("name", "path")),
    (AttributeError, ("name",)),
    (NameError, ("name",)),
)
_SKIP_ATTRS = frozenset({"__notes__"})  # the notes are in the recorded traceback text
_MAX_PACK_DEPTH = 32
_MAX_TEXT = 64 * 1024  # message and traceback kept when a record would be too large


class _Unpackable(Exception):
    """A value that cannot be recorded exactly."""


def _safe_text(text: str) -> str:
    """``text`` as valid Unicode: lone surrogates become backslash escapes."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def _pack(value: Any, depth: int = 0) -> Any:
    """A JSON-able form of ``value`` that ``_unpack`` turns back into an equal value of the same
    built-in type (tuples, bytes, non-finite floats, big ints, lone surrogates included).
    JSON objects only ever appear as tags."""
    if depth > _MAX_PACK_DEPTH:
        raise _Unpackable("nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return {"$surrogates": value.encode("utf-8", "surrogatepass").decode("latin-1")}
        return str(value)
    if isinstance(value, int):
        value = int(value)
        return value if -(2**63) <= value < 2**64 else {"$int": str(value)}
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else {"$float": repr(float(value))}
    if isinstance(value, bytes):
        return {"$bytes": value.decode("latin-1")}
    if type(value) is tuple:
        return {"$tuple": [_pack(item, depth + 1) for item in value]}
    if type(value) is list:
        return [_pack(item, depth + 1) for item in value]
    if type(value) is dict:
        return {"$dict": [[_pack(k, depth + 1), _pack(v, depth + 1)] for k, v in value.items()]}
    raise _Unpackable(type(value).__name__)


def _unpack(value: Any) -> Any:
    if isinstance(value, list):
        return [_unpack(item) for item in value]
    if not isinstance(value, dict):
        return value
    ((tag, inner),) = value.items()
    if tag == "$tuple":
        return tuple(_unpack(item) for item in inner)
    if tag == "$dict":
        return {_unpack(k): _unpack(v) for k, v in inner}
    if tag == "$bytes":
        return inner.encode("latin-1")
    if tag == "$surrogates":
        return inner.encode("latin-1").decode("utf-8", "surrogatepass")
    if tag == "$int":
        return int(inner)
    if tag == "$float":
        return float(inner)
    raise ValueError(f"unknown tag {tag!r}")


def _message(exc: BaseException) -> str:
    """``str(exc)``, never failing, as valid Unicode."""
    try:
        text = str(exc)
    except Exception as failure:
        return f"<str() of {type(exc).__qualname__} failed: {type(failure).__name__}>"
    return _safe_text(text)


def _attributes(exc: BaseException) -> dict[str, Any]:
    """The exception's recordable attributes: its ``__dict__`` and known C-slot attributes."""
    found: dict[str, Any] = {}
    try:
        found.update(vars(exc))
    except TypeError:
        pass
    for base, names in _SLOT_ATTRS:
        if isinstance(exc, base):
            for name in names:
                value = getattr(exc, name, None)
                if value is not None:
                    found[name] = value
    packed: dict[str, Any] = {}
    for name, value in found.items():
        if not isinstance(name, str) or name in _SKIP_ATTRS:
            continue
        try:
            packed[_safe_text(name)] = _pack(value)
        except _Unpackable:
            continue
    return packed


def _traceback_text(exc: BaseException) -> str:
    try:
        return _safe_text("".join(traceback.format_exception(exc)))
    except Exception:
        return ""


def _record_json(record: dict[str, Any]) -> str:
    text = orjson.dumps(record).decode()
    if len(text) <= MAX_VALUE_BYTES:
        return text
    # Too large to store: keep the type, and the head of the message and traceback.
    record["args"] = None
    record["attrs"] = {}
    record["message"] = record["message"][:_MAX_TEXT]
    record["traceback"] = record["traceback"][-_MAX_TEXT:]
    return orjson.dumps(record).decode()


def encode_error(exc: BaseException) -> str:
    """Record an exception as JSON: type, message, args and attributes (packed when they can be
    recorded exactly) and traceback text. Never fails: what cannot be recorded is left out,
    a message that cannot be computed or encoded is replaced by a readable description."""
    try:
        if isinstance(exc, RecordedError):
            # A rebuilt-failed error passes through: keep the original type and traceback.
            record: dict[str, Any] = {
                "v": _RECORD_VERSION,
                "module": "",
                "type": _safe_text(str(exc.type_name)),
                "message": _safe_text(str(exc.message)),
                "args": None,
                "attrs": {},
                "traceback": _safe_text(str(exc.traceback)),
            }
        else:
            cls = type(exc)
            args: list[Any] | None
            try:
                args = [_pack(arg) for arg in exc.args]
            except _Unpackable:
                args = None
            record = {
                "v": _RECORD_VERSION,
                "module": _safe_text(str(cls.__module__)),
                "type": _safe_text(str(cls.__qualname__)),
                "message": _message(exc),
                "args": args,
                "attrs": _attributes(exc),
                "traceback": _traceback_text(exc),
            }
        return _record_json(record)
    except Exception:  # a last resort: this function must never fail
        return orjson.dumps({
            "v": _RECORD_VERSION,
            "module": "",
            "type": _safe_text(type(exc).__qualname__),
            "message": "<the exception could not be recorded>",
            "args": None,
            "attrs": {},
            "traceback": "",
        }).decode()


def _restore(obj: Exception, args: tuple[Any, ...], attrs: dict[str, Any]) -> None:
    if obj.args != args:
        obj.args = args
    slot_names = {n for base, names in _SLOT_ATTRS if isinstance(obj, base) for n in names}
    for name, value in attrs.items():
        if name in slot_names:
            setattr(obj, name, value)
        else:
            vars(obj)[name] = value


def _str_or_none(obj: BaseException) -> str | None:
    try:
        return _safe_text(str(obj))
    except Exception:
        return None


def _rebuild(
    cls: type[Exception], args: list[Any] | None, attrs: dict[str, Any], message: str
) -> Exception | None:
    """An instance of ``cls`` with the recorded args and attributes whose message is the
    recorded one, or ``None``. Tried in order: ``cls(*args)`` (how pickle rebuilds exceptions),
    then ``cls.__new__`` without ``__init__`` (for an ``__init__`` with another signature), then,
    when the args could not be recorded, the message as the only arg."""
    attempts: list[tuple[tuple[Any, ...], bool]] = []
    if args is not None:
        attempts += [(tuple(args), True), (tuple(args), False)]
    else:
        attempts.append(((message,), False))
    for call_args, call_init in attempts:
        try:
            obj = cls(*call_args) if call_init else cls.__new__(cls, *call_args)
            if not isinstance(obj, cls):
                continue
            _restore(obj, call_args, attrs)
        except Exception:
            continue
        if _str_or_none(obj) == message:
            return obj
    return None


def _find_class(module_name: str, qualname: str) -> type[Exception] | None:
    """The recorded class, if its module is already imported (nothing is imported on behalf of
    stored data) and it is an ``Exception`` subclass (never a bare ``BaseException``)."""
    module = sys.modules.get(module_name) if module_name else None
    if module is None:
        return None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None


def decode_error(text: str, fallback: type[RecordedError]) -> Exception:
    """Rebuild a recorded exception.

    The original class is used when its module is already imported in this process, it is an
    ``Exception`` subclass, and an instance with the recorded args and attributes has the
    recorded message (see ``_rebuild``). Otherwise ``fallback(type_name, message, traceback)``
    is returned. The recorded traceback is attached as a note either way.
    """
    try:
        record = orjson.loads(text)
        module_name = str(record.get("module") or "")
        qualname = str(record["type"])
        message = str(record.get("message", ""))
        tb = str(record.get("traceback", ""))
    except Exception:
        return fallback("unknown", "an error was recorded that cannot be read", "")
    type_name = f"{module_name}.{qualname}" if module_name else qualname
    rebuilt: Exception | None = None
    try:
        cls = _find_class(module_name, qualname)
        if cls is not None:
            if record.get("v") == _RECORD_VERSION:
                raw_args = record.get("args")
                args = None if raw_args is None else list(_unpack(raw_args))
                attrs = {str(k): _unpack(v) for k, v in (record.get("attrs") or {}).items()}
            else:  # an older record: plain JSON args, no attributes, never rebuilt without args
                args = record.get("args")
                attrs = {}
            if args is not None or record.get("v") == _RECORD_VERSION:
                rebuilt = _rebuild(cls, args, attrs, message)
    except Exception:
        rebuilt = None
    if rebuilt is None:
        return fallback(type_name, message, tb)
    if tb:
        rebuilt.add_note("Recorded traceback of the original failure:\n" + tb.rstrip())
    return rebuilt
