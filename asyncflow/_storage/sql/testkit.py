"""The test kit's databases (asyncflow.testing)."""

from __future__ import annotations

from . import quote_schema

# ---------------------------------------------------------------------------------------------
# The test kit (asyncflow.testing): databases made and dropped on a test server. {db} and
# {template} are database names the kit generates, quoted by database_statement().
# ---------------------------------------------------------------------------------------------

CREATE_DATABASE = "CREATE DATABASE {db}"
CREATE_DATABASE_FROM_TEMPLATE = "CREATE DATABASE {db} TEMPLATE {template}"
# Before DROP DATABASE (which waits a few seconds for terminated sessions to end); works on every
# supported Postgres, unlike DROP DATABASE ... WITH (FORCE) (13+). $1 is the database name.
TERMINATE_SESSIONS = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = $1 AND pid <> pg_backend_pid()"""
DROP_DATABASE = "DROP DATABASE IF EXISTS {db}"


def database_statement(statement: str, **names: str) -> str:
    """One of the statements above with its database names quoted (plain identifiers only)."""
    for key, name in names.items():
        statement = statement.replace("{" + key + "}", quote_schema(name))
    return statement
