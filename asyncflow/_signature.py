"""A workflow's or step's annotations as decoders, built once per function (at decoration, or at
the first call if an annotation names a class defined later).

A function whose annotations are all plain JSON (or absent, or ``Any``) has no decoders: its
arguments and results are used as stored, at no cost beyond what asyncflow always did.
"""

from __future__ import annotations

import inspect
import logging
import types
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from . import _codec
from ._decode import Decoder, decoder, needs_decoding
from ._errors import DecodeError, InvalidArgumentError, SerializationError, ValueTooLargeError

logger = logging.getLogger("asyncflow")

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def resolve_hints(fn: Callable[..., Any], *, final: bool) -> dict[str, Any] | None:
    """``fn``'s annotations as types; ``None`` if one names something not defined yet (unless
    ``final``: then each one that cannot be resolved is left out, as if absent, with a warning)."""
    try:
        return typing.get_type_hints(fn)
    except Exception:
        if not final:
            return None
    hints: dict[str, Any] = {}
    globalns = getattr(fn, "__globals__", {})
    for name, annotation in getattr(fn, "__annotations__", {}).items():
        try:
            holder = types.SimpleNamespace(__annotations__={name: annotation})
            hints.update(typing.get_type_hints(holder, globalns=globalns))
        except Exception as exc:
            logger.warning(
                "asyncflow cannot resolve the annotation %r of %r (%s: %s); that value is "
                "used as plain JSON. Define the type at module level to have it decoded.",
                annotation, getattr(fn, "__qualname__", fn), type(exc).__name__, exc)
    return hints


def _typed(hint: Any) -> Decoder | None:
    return decoder(hint) if needs_decoding(hint) else None


class Signature:
    """Decoders of one function's parameters and return value (``None`` where the stored JSON
    is used as it is)."""

    __slots__ = (
        "fn",
        "keywords",
        "positional",
        "resolved",
        "result",
        "typed_inputs",
        "var_keyword",
        "var_positional",
        "what",
    )

    def __init__(self, fn: Callable[..., Any], what: str) -> None:
        self.fn = fn
        self.what = what
        self.resolved = False
        self.positional: list[tuple[str, Decoder | None]] = []
        self.var_positional: tuple[str, Decoder | None] = ("args", None)
        self.keywords: dict[str, Decoder | None] = {}
        self.var_keyword: Decoder | None = None
        self.result: Decoder | None = None
        self.typed_inputs = False
        self.resolve(final=False)

    def resolve(self, *, final: bool = True) -> None:
        """Build the decoders (at decoration; again at the first use if that was too early)."""
        if self.resolved:
            return
        hints = resolve_hints(self.fn, final=final)
        if hints is None:
            return
        self.resolved = True
        self.result = _typed(hints["return"]) if "return" in hints else None
        try:
            parameters = inspect.signature(self.fn).parameters.values()
        except (TypeError, ValueError):
            return
        for param in parameters:
            typed = _typed(hints[param.name]) if param.name in hints else None
            self.typed_inputs = self.typed_inputs or typed is not None
            if param.kind in _POSITIONAL:
                self.positional.append((param.name, typed))
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                self.var_positional = (param.name, typed)
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                self.var_keyword = typed
            elif param.kind is not inspect.Parameter.POSITIONAL_ONLY:
                self.keywords[param.name] = typed

    def decode_inputs(self, args: list[Any], kwargs: dict[str, Any]
                      ) -> tuple[list[Any], dict[str, Any]]:
        """The stored arguments decoded by the parameters' annotations (``DecodeError`` naming
        the parameter and field when one no longer fits)."""
        self.resolve()
        if not self.typed_inputs:
            return args, kwargs
        try:
            return self._decode_inputs(args, kwargs)
        except DecodeError as exc:
            raise in_context(exc, f"the arguments of {self.what}") from None

    def _decode_inputs(self, args: list[Any], kwargs: dict[str, Any]
                       ) -> tuple[list[Any], dict[str, Any]]:
        count = len(self.positional)
        star, star_decoder = self.var_positional
        decoded = []
        for index, value in enumerate(args):
            name, decode = (self.positional[index] if index < count
                            else (f"{star}[{index - count}]", star_decoder))
            decoded.append(value if decode is None else decode(value, name))
        named = {}
        for name, value in kwargs.items():
            decode = self.keywords.get(name, self.var_keyword)
            named[name] = value if decode is None else decode(value, name)
        return decoded, named

    def decode_result(self, value: Any) -> Any:
        """A stored return value decoded by the return annotation."""
        self.resolve()
        decode = self.result
        if decode is None:
            return value
        try:
            return decode(value, "result")
        except DecodeError as exc:
            raise in_context(exc, f"the result of {self.what}") from None

    def check_result(self, text: str) -> None:
        """Raise :class:`DecodeError` if a result just stored would not read back by the return
        annotation (so the run fails now, not every reader later)."""
        self.resolve()
        if self.result is not None:
            self.decode_result(_codec.loads(text))

    def encode_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The arguments as stored (``{"args": [...], "kwargs": {...}}``); what cannot be
        stored raises :class:`SerializationError` naming the parameter. With typed parameters
        the stored arguments are decoded once here, so arguments that do not fit fail at the
        call (``DecodeError``) and nothing is written."""
        what = f"the arguments of {self.what}"
        try:
            text = _codec.dumps({"args": list(args), "kwargs": kwargs}, what)
        except ValueTooLargeError:
            raise
        except SerializationError:
            for index, value in enumerate(args):  # again, one by one, to name the parameter
                root = self.positional[index][0] if index < len(self.positional) else \
                    f"{self.var_positional[0]}[{index - len(self.positional)}]"
                _codec.plain(value, what, root)
            for name, value in kwargs.items():
                _codec.plain(value, what, name)
            raise
        self.resolve()
        if self.typed_inputs:
            stored = _codec.loads(text)
            self.decode_inputs(stored["args"], stored["kwargs"])
        return text


def in_context(exc: DecodeError, what: str) -> DecodeError:
    """``exc`` with ``what`` (``the result of step 'x'``) in front of its message."""
    return DecodeError(f"{what}: {exc}", exc.path)


def reader(tp: Any, what: str) -> Callable[[Any], Any] | None:
    """The decoder of a wait's ``type=`` (``None``: none given, the value stays plain JSON).
    ``None`` (a timeout, a timer branch) is passed through."""
    if tp is None:
        return None
    if not (isinstance(tp, type | typing.TypeVar | typing.NewType) or tp is Any
            or typing.get_origin(tp) is not None):
        raise InvalidArgumentError(
            f"type= must be a class or an annotation such as list[Order] or Order | None, not "
            f"{tp!r}")
    decode = decoder(tp)

    def read(value: Any) -> Any:
        if value is None:
            return None
        try:
            return decode(value, "value")
        except DecodeError as exc:
            raise in_context(exc, what) from None
    return read


async def decoded(awaitable: Awaitable[Any], read: Callable[[Any], Any]) -> Any:
    """The awaited value, decoded by ``read``."""
    return read(await awaitable)


async def decoded_items(items: AsyncIterator[Any], read: Callable[[Any], Any]
                        ) -> AsyncIterator[Any]:
    """Each value of ``items``, decoded by ``read``."""
    try:
        async for value in items:
            yield read(value)
    finally:
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()
