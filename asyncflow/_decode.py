"""Plain JSON to typed values, by annotation: the type says how to read the JSON that
:mod:`asyncflow._encode` wrote (no type tag is stored, so values written as plain JSON before
read the same way).

:func:`decoder` builds, once per annotation, a function ``(json value, path) -> value``. A plain
JSON annotation (``str``, ``int``, ``list[str]``, ``dict[str, Any]``, ``Any``, none…) needs no
decoder at the top level: :func:`needs_decoding` says so, and the value is used as stored (what
asyncflow always did). Inside a typed value every field is checked: a stored value that no longer
fits raises :class:`DecodeError` naming the field, and nothing half-built is returned.
"""

from __future__ import annotations

import base64
import binascii
import collections.abc as abc
import dataclasses
import enum
import functools
import json
import re
import sys
import types
import typing
import uuid
import zoneinfo
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, NoReturn, Union

import orjson

from ._errors import DecodeError

#: ``(stored JSON value, path) -> typed value``; raises :class:`DecodeError`.
Decoder = Callable[[Any, str], Any]

_PLAIN_TYPES: tuple[Any, ...] = (str, int, float, bool, type(None), Any, object)


def _name(tp: Any) -> str:
    if isinstance(tp, type) and not isinstance(tp, types.GenericAlias):
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def mismatch(path: str, tp: Any, value: Any, detail: str = "") -> NoReturn:
    raise DecodeError(
        f"{path}: expected {_name(tp)}, got {_short(value)}" + (f" ({detail})" if detail else ""),
        path=path,
    )


def needs_decoding(tp: Any) -> bool:
    """Whether values of annotation ``tp`` need converting (``False``: plain JSON as stored)."""
    if tp in _PLAIN_TYPES or tp is list or tp is dict or isinstance(tp, typing.TypeVar):
        return False
    if tp is tuple or tp is set or tp is frozenset:
        return True
    if _scalar(tp) is not None or isinstance(tp, typing.NewType):
        return _scalar(tp) is not None or needs_decoding(tp.__supertype__)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return False
    if origin is typing.Annotated:
        return needs_decoding(args[0])
    if origin in (Union, types.UnionType):
        return any(needs_decoding(arg) for arg in args)
    if origin in (list, abc.Sequence, abc.MutableSequence):
        return bool(args) and needs_decoding(args[0])
    if origin in (dict, abc.Mapping, abc.MutableMapping):
        return bool(args) and (args[0] not in (str, Any) or needs_decoding(args[1]))
    if isinstance(tp, type) and _decoder_of_class(tp) is None:
        return False  # a class asyncflow does not convert (a protocol, an app object)
    return True


# -- scalars -----------------------------------------------------------------------------------


def _str(value: Any, path: str) -> Any:
    if type(value) is not str:
        mismatch(path, str, value)
    return value


def _int(value: Any, path: str) -> Any:
    if type(value) is not int:
        mismatch(path, int, value)
    return value


def _float(value: Any, path: str) -> Any:
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            mismatch(path, float, value, "too large for a float")
    mismatch(path, float, value)


def _bool(value: Any, path: str) -> Any:
    if type(value) is not bool:
        mismatch(path, bool, value)
    return value


def _none(value: Any, path: str) -> Any:
    if value is not None:
        mismatch(path, None, value)
    return None


def _any(value: Any, path: str) -> Any:
    return value


def _parsed(tp: Any, parse: Callable[[Any], Any], accepts: type | tuple[type, ...]) -> Decoder:
    def decode(value: Any, path: str) -> Any:
        if not isinstance(value, accepts) or isinstance(value, bool):
            mismatch(path, tp, value)
        try:
            return parse(value)
        except (ValueError, TypeError, ArithmeticError, KeyError) as exc:
            mismatch(path, tp, value, str(exc) or type(exc).__name__)
    return decode


def parse_datetime(text: str) -> datetime:
    """An ISO 8601 datetime, with an optional ``[zone]`` suffix (RFC 9557)."""
    if text.endswith("]") and "[" in text:
        stamp, _, key = text[:-1].partition("[")
        moment = datetime.fromisoformat(stamp)
        try:
            zone = zoneinfo.ZoneInfo(key)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return moment  # an unknown zone: the recorded offset still gives the instant
        return moment.astimezone(zone) if moment.tzinfo is not None else moment
    return datetime.fromisoformat(text)


_DURATION = re.compile(
    r"([-+]?)P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")


def parse_duration(value: str | int | float) -> timedelta:
    """An ISO 8601 duration (as written by ``_encode.duration_text``), or seconds."""
    if not isinstance(value, str):
        return timedelta(seconds=value)
    match = _DURATION.fullmatch(value)
    if match is None or value.endswith(("P", "T")):
        raise ValueError("not an ISO 8601 duration such as P1DT2H3M4.5S")
    sign, weeks, days, hours, minutes, seconds = match.groups()
    exact = Decimal(seconds or 0)
    delta = timedelta(weeks=int(weeks or 0), days=int(days or 0), hours=int(hours or 0),
                      minutes=int(minutes or 0), seconds=int(exact),
                      microseconds=int((exact % 1) * 1_000_000))
    return -delta if sign == "-" else delta


def _decimal(value: str | int | float) -> Decimal:
    try:
        number = Decimal(value if isinstance(value, str | int) else repr(value))
    except InvalidOperation:
        raise ValueError("not a decimal number") from None
    if not number.is_finite():
        raise ValueError("NaN and Infinity are not stored")
    return number


def _bytes(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from None


_SCALARS: dict[Any, Decoder] = {
    str: _str, int: _int, float: _float, bool: _bool, type(None): _none, None: _none,
    Any: _any, object: _any,
    datetime: _parsed(datetime, parse_datetime, str),
    date: _parsed(date, date.fromisoformat, str),
    time: _parsed(time, time.fromisoformat, str),
    timedelta: _parsed(timedelta, parse_duration, (str, int, float)),
    Decimal: _parsed(Decimal, _decimal, (str, int, float)),
    uuid.UUID: _parsed(uuid.UUID, uuid.UUID, str),
    bytes: _parsed(bytes, _bytes, str),
    bytearray: _parsed(bytearray, lambda text: bytearray(_bytes(text)), str),
}


# -- building decoders -------------------------------------------------------------------------

_CACHE: dict[Any, Decoder] = {}


def decoder(tp: Any) -> Decoder:
    """The decoder of annotation ``tp`` (cached); it checks every part of the value."""
    try:
        return _CACHE[tp]
    except KeyError:
        pass
    except TypeError:  # an unhashable annotation (an Annotated extra): built each time
        return _build(tp)
    built = _CACHE[tp] = _build(tp)
    return built


def _scalar(tp: Any) -> Decoder | None:
    try:
        return _SCALARS.get(tp)
    except TypeError:  # unhashable
        return None


def _build(tp: Any) -> Decoder:
    found = _scalar(tp)
    if found is not None:
        return found
    if isinstance(tp, typing.TypeVar):
        return _any
    if isinstance(tp, typing.NewType):
        return decoder(tp.__supertype__)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return decoder(args[0])
    if origin in (Union, types.UnionType):
        return _union(tp, args)
    if origin is Literal:
        return _literal(tp, args)
    if tp in (list, tuple, set, frozenset, dict) or origin in (
            list, tuple, set, frozenset, dict, abc.Sequence, abc.MutableSequence, abc.Set,
            abc.MutableSet, abc.Mapping, abc.MutableMapping):
        return _container(tp, origin or tp, args)
    if isinstance(tp, type):
        built = _decoder_of_class(tp)
        if built is not None:
            return built
    return _any  # an annotation asyncflow does not convert: the stored JSON as it is


def _union(tp: Any, args: tuple[Any, ...]) -> Decoder:
    optional = type(None) in args
    members = [decoder(arg) for arg in args if arg is not type(None)]
    if len(members) == 1:
        only = members[0]

        def decode_optional(value: Any, path: str) -> Any:
            return None if value is None else only(value, path)
        return decode_optional

    def decode(value: Any, path: str) -> Any:
        if value is None and optional:
            return None
        first: DecodeError | None = None
        for member in members:  # the first member the value fits, in the order written
            try:
                return member(value, path)
            except DecodeError as exc:
                first = first or exc
        mismatch(path, tp, value, f"fits none of its types; first: {first}")
    return decode


def _literal(tp: Any, args: tuple[Any, ...]) -> Decoder:
    allowed = [(type(arg.value if isinstance(arg, enum.Enum) else arg),
                arg.value if isinstance(arg, enum.Enum) else arg, arg) for arg in args]

    def decode(value: Any, path: str) -> Any:
        for kind, stored, arg in allowed:
            if type(value) is kind and value == stored:
                return arg
        mismatch(path, tp, value)
    return decode


def _container(tp: Any, origin: Any, args: tuple[Any, ...]) -> Decoder:
    if origin in (dict, abc.Mapping, abc.MutableMapping):
        key = _key_decoder(args[0]) if args else None
        item = decoder(args[1]) if len(args) > 1 else _any

        def decode_dict(value: Any, path: str) -> Any:
            if type(value) is not dict:
                mismatch(path, tp, value)
            if key is None:
                return {k: item(v, f"{path}[{k!r}]") for k, v in value.items()}
            return {key(k, path): item(v, f"{path}[{k!r}]") for k, v in value.items()}
        return decode_dict
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if args == ((),):
            args = ()
        fixed = [decoder(arg) for arg in args]

        def decode_tuple(value: Any, path: str) -> Any:
            if type(value) is not list or len(value) != len(fixed):
                mismatch(path, tp, value, f"{len(fixed)} items")
            return tuple(decode(item, f"{path}[{index}]")
                         for index, (decode, item) in enumerate(zip(fixed, value, strict=True)))
        return decode_tuple
    item = decoder(args[0]) if args else _any
    make: Callable[[Any], Any] = {tuple: tuple, set: set, frozenset: frozenset,
                                  abc.Set: frozenset, abc.MutableSet: set}.get(origin, list)

    def decode_items(value: Any, path: str) -> Any:
        if type(value) is not list:
            mismatch(path, tp, value)
        return make([item(v, f"{path}[{i}]") for i, v in enumerate(value)])
    return decode_items


def _key_decoder(tp: Any) -> Decoder | None:
    """Dict keys are stored as strings: ``None`` for ``str`` keys, else their reader."""
    if tp in (str, Any, object) or isinstance(tp, typing.TypeVar):
        return None
    if tp is int or (isinstance(tp, type) and issubclass(tp, int) and not issubclass(tp, bool)
                     and not issubclass(tp, enum.Enum)):
        return _parsed(tp, int, str)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = {str(m.value): m for m in tp}
        return _parsed(tp, members.__getitem__, str)
    return decoder(tp)


def _decoder_of_class(cls: type) -> Decoder | None:
    if issubclass(cls, enum.Enum):
        return _parsed(cls, functools.partial(_member, cls), (str, int, float, list, type(None)))
    if dataclasses.is_dataclass(cls):
        return _dataclass(cls)
    if typing.is_typeddict(cls):
        return _typeddict(cls)
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return _namedtuple(cls)
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and issubclass(cls, pydantic.BaseModel):
        return _pydantic(cls, pydantic.ValidationError)
    for base, check in ((str, _str), (int, _int), (float, _float)):
        if issubclass(cls, base) and not issubclass(cls, bool):
            return _subclass(cls, check)
    return None


def _member(cls: type[enum.Enum], value: Any) -> enum.Enum:
    try:
        return cls(value)
    except ValueError:
        if type(value) is list:  # a member whose value is a tuple (stored as a list)
            return cls(_tuples(value))
        raise


def _tuples(value: Any) -> Any:
    return tuple(_tuples(item) for item in value) if type(value) is list else value


def _subclass(cls: type, check: Decoder) -> Decoder:
    def decode(value: Any, path: str) -> Any:
        return cls(check(value, path))
    return decode


class _Fields:
    """A class's field decoders, resolved at the first decode (so a class may refer to classes
    defined after it)."""

    __slots__ = ("cls", "resolved")

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.resolved: dict[str, Decoder] | None = None

    def get(self) -> dict[str, Decoder]:
        if self.resolved is None:
            try:
                hints = typing.get_type_hints(self.cls)
            except Exception as exc:  # a name the class's module cannot resolve
                raise DecodeError(f"the annotations of {self.cls.__qualname__} cannot be "
                                  f"resolved ({type(exc).__name__}: {exc}); define the types "
                                  "they name at module level", path="") from None
            self.resolved = {name: decoder(hint) for name, hint in hints.items()}
        return self.resolved


def _build_object(cls: type, path: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except DecodeError:
        raise
    except Exception as exc:  # the class's own checks (__post_init__) refused the values
        raise DecodeError(f"{path}: {cls.__qualname__} refused the stored values "
                          f"({type(exc).__name__}: {exc})", path=path) from None


def _dataclass(cls: type) -> Decoder:
    fields = _Fields(cls)
    init = [(f.name, f.default is dataclasses.MISSING
             and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls) if f.init]

    def decode(value: Any, path: str) -> Any:
        if type(value) is not dict:
            mismatch(path, cls, value)
        hints = fields.get()
        kwargs = {}
        for name, required in init:
            if name in value:
                kwargs[name] = hints.get(name, _any)(value[name], f"{path}.{name}")
            elif required:
                raise DecodeError(f"{path}.{name}: missing (required by {cls.__qualname__})",
                                  path=f"{path}.{name}")
        return _build_object(cls, path, lambda: cls(**kwargs))
    return decode


def _typeddict(cls: type) -> Decoder:
    fields = _Fields(cls)
    required: frozenset[str] = getattr(cls, "__required_keys__", frozenset())

    def decode(value: Any, path: str) -> Any:
        if type(value) is not dict:
            mismatch(path, cls, value)
        hints = fields.get()
        for name in required:
            if name not in value:
                raise DecodeError(f"{path}.{name}: missing (required by {cls.__qualname__})",
                                  path=f"{path}.{name}")
        return {k: hints[k](v, f"{path}.{k}") if k in hints else v for k, v in value.items()}
    return decode


def _namedtuple(cls: Any) -> Decoder:
    fields = _Fields(cls)
    names: tuple[str, ...] = cls._fields
    defaults: dict[str, Any] = cls._field_defaults

    def decode(value: Any, path: str) -> Any:
        if type(value) is dict:  # also read as an object of its fields
            value = [value[n] if n in value else defaults.get(n, dataclasses.MISSING)
                     for n in names]
        if type(value) is not list or len(value) > len(names):
            mismatch(path, cls, value)
        hints = fields.get()
        items = []
        for index, name in enumerate(names):
            if index < len(value) and value[index] is not dataclasses.MISSING:
                items.append(hints.get(name, _any)(value[index], f"{path}.{name}"))
            elif name in defaults:
                items.append(defaults[name])
            else:
                raise DecodeError(f"{path}.{name}: missing (required by {cls.__qualname__})",
                                  path=f"{path}.{name}")
        return _build_object(cls, path, lambda: cls(*items))
    return decode


def _pydantic(cls: Any, validation_error: type[Exception]) -> Decoder:
    def decode(value: Any, path: str) -> Any:
        try:  # JSON mode: what model_dump(mode="json") wrote reads back, strict models too
            try:
                text: bytes | str = orjson.dumps(value)
            except TypeError:  # integers past 64 bits
                text = json.dumps(value)
            return cls.model_validate_json(text)
        except validation_error as exc:
            errors = exc.errors()  # type: ignore[attr-defined]
            first = errors[0] if errors else {}
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                            for p in first.get("loc", ()))
            raise DecodeError(f"{path}{where}: {first.get('msg', exc)} (as "
                              f"{cls.__qualname__}: {len(errors)} error(s))",
                              path=path + where) from None
    return decode
