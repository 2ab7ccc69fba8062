"""How asyncflow connects: the session URL of the listener (``listen_url``) and the options
handed to the driver for every connection (``connect_options``), checked at construction.

Statements may go through a transaction pooler (PgBouncer ``pool_mode=transaction``, the pooled
URLs of Supabase, Neon, …); what needs a session of its own — LISTEN, the executor's liveness
lock — uses ``listen_url`` when it is set. asyncflow's own statements are bounded by
``command_timeout`` (default :data:`DEFAULT_COMMAND_TIMEOUT` seconds), so a server that cannot
finish them (a synchronous standby that is down, a lock held for ever) ends in a clear error,
never a silent hang.
"""

from __future__ import annotations

import math
import os
import ssl as _ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import InvalidSettingError

ENV_LISTEN_URL = "ASYNCFLOW_LISTEN_URL"

#: Seconds any one of asyncflow's statements may take before it is cancelled and reported
#: (``connect_options={"command_timeout": None}`` lifts the bound).
DEFAULT_COMMAND_TIMEOUT = 60.0

_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
#: Set by asyncflow itself, or part of the URL: refused as options.
_IN_URL = ("host", "port", "user", "database", "dsn")
_OWN = ("connection_class", "record_class", "loop")


def _seconds(value: object, what: str, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value > 0):
        more = " or None" if allow_none else ""
        raise InvalidSettingError(
            f"connect_options[{what!r}] must be a number of seconds > 0{more}, not {value!r}")
    return float(value)


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidSettingError(f"connect_options[{what!r}] must be an int >= 0, not {value!r}")
    return value


def _text(value: object, what: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or (choices is not None and value not in choices):
        expected = f"one of {', '.join(choices)}" if choices else "a str"
        raise InvalidSettingError(f"connect_options[{what!r}] must be {expected}, not {value!r}")
    return value


def _server_settings(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidSettingError(
            "connect_options['server_settings'] must be a dict of str to str (Postgres "
            f"settings sent at connect, e.g. {{'application_name': 'orders'}}), not {value!r}")
    return dict(value)


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidSettingError(f"connect_options[{what!r}] must be a bool, not {value!r}")
    return value


def _ssl_option(value: object) -> object:
    if isinstance(value, bool | _ssl.SSLContext):
        return value
    return _text(value, "ssl", _SSL_MODES)


_CHECKS: dict[str, Any] = {
    "statement_cache_size": _count,
    "max_cached_statement_lifetime": _count,
    "max_cacheable_statement_size": _count,
    "command_timeout": lambda v, w: _seconds(v, w, allow_none=True),
    "timeout": lambda v, w: _seconds(v, w, allow_none=False),
    "server_settings": lambda v, _w: _server_settings(v),
    "ssl": lambda v, _w: _ssl_option(v),
    "direct_tls": lambda v, w: _flag(v, w),
    "target_session_attrs": lambda v, w: _text(v, w, _SESSION_ATTRS),
    "password": _text,
    "passfile": _text,
    "krbsrvname": _text,
    "gsslib": lambda v, w: _text(v, w, ("gssapi", "sspi")),
}


def check_connect_options(options: object = None) -> dict[str, Any]:
    """The driver options, validated (:class:`InvalidSettingError` for an unknown key or a bad
    value), with asyncflow's default ``command_timeout`` filled in."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise InvalidSettingError(f"connect_options must be a dict, not {options!r}")
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if key in _IN_URL:
            raise InvalidSettingError(
                f"connect_options[{key!r}]: give the {key} in the database URL instead")
        if key in _OWN or key not in _CHECKS:
            raise InvalidSettingError(
                f"unknown connect option {key!r}; asyncflow passes these to the driver: "
                f"{', '.join(sorted(_CHECKS))}")
        checked[key] = _CHECKS[key](value, key)
    checked.setdefault("command_timeout", DEFAULT_COMMAND_TIMEOUT)
    return checked


def check_url(value: object, what: str) -> str | None:
    """A URL setting: a str or ``None``."""
    if value is not None and not isinstance(value, str):
        raise InvalidSettingError(f"{what} must be a str, not {type(value).__name__}")
    return value or None


def resolve_listen_url(listen_url: str | None) -> str | None:
    """The listener's session URL: the argument, else ``ASYNCFLOW_LISTEN_URL``, else ``None``
    (the listener then uses the database URL)."""
    return listen_url or os.environ.get(ENV_LISTEN_URL) or None


@dataclass(frozen=True)
class ConnectSettings:
    """How every connection of one app or client is opened."""

    #: The session URL for the listener and the liveness lock (``None``: the database URL).
    listen_url: str | None = None
    #: Keyword arguments for ``asyncpg.connect`` (validated; ``command_timeout`` filled in).
    options: dict[str, Any] = field(default_factory=check_connect_options)

    @property
    def command_timeout(self) -> float | None:
        value: float | None = self.options.get("command_timeout")
        return value


def connect_settings(listen_url: object, connect_options: object) -> ConnectSettings:
    """Validate the connection settings of an ``AsyncFlow`` or ``Client`` at construction."""
    return ConnectSettings(check_url(listen_url, "listen_url"),
                           check_connect_options(connect_options))
