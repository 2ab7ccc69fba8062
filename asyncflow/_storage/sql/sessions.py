"""User transactions (@app.transaction) and the launch checks of the connection paths."""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# User transactions (@app.transaction): one simple-query round trip to open, one to commit.
# New transactions on the session are read-only until asyncflow's own ends (the connection is
# reset afterwards), so a body that ends the transaction cannot write outside it either.
# ---------------------------------------------------------------------------------------------

# One round trip: the SET is committed on its own first (COMMIT ends the simple query's implicit
# transaction), so it outlives a failed or replaced user transaction; then asyncflow's own.
BEGIN_USER_TRANSACTION = """SET default_transaction_read_only = on; COMMIT;
BEGIN ISOLATION LEVEL %LEVEL% READ WRITE;
INSERT INTO {s}.transaction_guard VALUES (pg_backend_pid())"""
BEGIN_READ_COMMITTED = BEGIN_USER_TRANSACTION.replace("%LEVEL%", "READ COMMITTED")
BEGIN_REPEATABLE_READ = BEGIN_USER_TRANSACTION.replace("%LEVEL%", "REPEATABLE READ")
BEGIN_SERIALIZABLE = BEGIN_USER_TRANSACTION.replace("%LEVEL%", "SERIALIZABLE")
# What a connection that ran user code needs before it goes back to the pool (what asyncpg's
# reset sends): advisory locks released, cursors closed, LISTENs removed, settings reset.
RESET_SESSION = """SELECT pg_advisory_unlock_all();
CLOSE ALL;
UNLISTEN *;
RESET ALL"""
# The commit and the session's reset in one round trip. A failed COMMIT stops the rest (the
# reset is then sent on its own, after the rollback).
COMMIT_USER_TRANSACTION = """SET LOCAL asyncflow.commit = 'yes';
DELETE FROM {s}.transaction_guard WHERE backend = pg_backend_pid();
COMMIT;
""" + RESET_SESSION
ROLLBACK = "ROLLBACK"

# The server's idle_in_transaction_session_timeout for this role and database, in milliseconds
# (0: none): read when a transaction's session was closed under its body, to name the cause.
IDLE_IN_TRANSACTION_TIMEOUT = """
SELECT setting::bigint FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'"""

# ---------------------------------------------------------------------------------------------
# Launch checks of the connection paths (asyncflow._storage.pooler)
# ---------------------------------------------------------------------------------------------

# The server process of this statement: the connection's own pid on a direct connection, another
# one behind a pooler (which answers the connection with a key of its own).
BACKEND_PID = "SELECT pg_backend_pid()"
# A test NOTIFY ($1: a channel of its own; kind p, $2: a token) that a LISTEN on the listener's path
# must receive.
PROBE_NOTIFY = "SELECT pg_notify($1, 'p' || $2)"
# A failed user transaction: the rollback and the session's reset in one round trip, so that
# behind a transaction pooler (which hands the server connection to another client as soon as
# the transaction ends) no setting of it (default_transaction_read_only) outlives it.
ROLLBACK_USER_TRANSACTION = "ROLLBACK;\n" + RESET_SESSION
# A transaction started inside another (of the same task) is a savepoint of it.
SAVEPOINT = "SAVEPOINT asyncflow_nested"
RELEASE_SAVEPOINT = "RELEASE SAVEPOINT asyncflow_nested"
ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO SAVEPOINT asyncflow_nested; RELEASE SAVEPOINT asyncflow_nested"
