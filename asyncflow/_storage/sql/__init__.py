"""Every SQL statement asyncflow runs, as named constants, one module per part of the store.

``{s}`` stands for the (validated, quoted) schema identifier and is substituted once per app by
:func:`render`; it is the only text ever spliced into SQL, but for the database names of the test
kit's CREATE/DROP DATABASE (identifiers cannot be parameters), validated and quoted the same way
by :func:`database_statement`. Every value travels as a ``$n``
parameter. ``pg_notify`` payloads are a one-letter kind plus a workflow id, never user data.
"""

from __future__ import annotations

import re

_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def quote_schema(schema: str) -> str:
    """Return the quoted identifier for a schema name, or raise ValueError if it is not plain."""
    if not isinstance(schema, str) or not _SCHEMA_RE.fullmatch(schema):
        raise ValueError(
            "schema must be a plain identifier (letters, digits, underscore; at most 63 "
            "characters, not starting with a digit), not " + repr(schema)
        )
    return '"' + schema + '"'


def render(template: str, schema: str) -> str:
    """Substitute the quoted schema identifier into one statement template."""
    return template.replace("{s}", quote_schema(schema))
