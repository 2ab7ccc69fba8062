"""Executor liveness: live executors, registration, heartbeats, the lease's end."""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Executor liveness: a lease renewed by heartbeats (server clock), plus a session-level advisory
# lock held on the listener connection. See docs/operations.md, "Liveness and fencing".
# ---------------------------------------------------------------------------------------------

# Live executors: those that renewed their lease recently (server clock) or hold their advisory
# lock. An executor is taken for dead only when both fail: a reconnect (which drops the lock for
# a moment) or a stalled statement (which delays a heartbeat) alone never makes it look dead.
# $5: the lock namespace (the schema's OID).
_LIVE_EXECUTORS = """
WITH live AS (
    SELECT e.executor_id FROM {s}.executors e
    WHERE e.beat_at > clock_timestamp() - make_interval(secs => e.lease_seconds)
    UNION
    SELECT e.executor_id FROM pg_locks l
    JOIN {s}.executors e ON l.objid = e.lock_key::oid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.classid = ($5::bigint & 4294967295)::oid
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
)"""

# The lock namespace of a schema: its OID (unique in the database), as a signed int4.
SCHEMA_LOCK_NAMESPACE = """
SELECT (oid::bigint - CASE WHEN oid::bigint >= 2147483648 THEN 4294967296 ELSE 0 END)::int
FROM pg_namespace WHERE nspname = $1"""
# Registration, on the listener's connection: a new executor id is inserted with a fresh lease
# and its lock taken in the same statement (no moment in which it has a row but no lock, or a
# lock but no row). Nothing is returned when the id exists (EXECUTOR_STATE then decides). $7: the
# app version the process runs.
REGISTER_EXECUTOR = """
WITH ins AS (
    INSERT INTO {s}.executors
        (executor_id, instance, beat_at, lease_seconds, host, process, app_version)
    VALUES ($1, $2, clock_timestamp(), $3, $4, $5, $7)
    ON CONFLICT (executor_id) DO NOTHING
    RETURNING lock_key
)
SELECT lock_key, pg_try_advisory_lock($6::int, lock_key) AS locked FROM ins"""
# An existing executor id: its holder's lease and whereabouts, and this session's try at its
# lock (taken: no live session holds it).
EXECUTOR_STATE = """
SELECT lock_key, instance, host, process, beat_at,
       beat_at > clock_timestamp() - make_interval(secs => lease_seconds) AS fresh,
       CASE WHEN beat_at > clock_timestamp() - make_interval(secs => lease_seconds)
            THEN extract(epoch FROM beat_at + make_interval(secs => lease_seconds)
                         - clock_timestamp())::float8
            ELSE 0 END AS fresh_for,  -- (no arithmetic on an ended lease's -infinity)
       pg_try_advisory_lock($2::int, lock_key) AS locked
FROM {s}.executors WHERE executor_id = $1"""
# The id passes to a new launch ($2, running app version $8) -- unless its previous holder ($6,
# last seen at $7) showed a sign of life meanwhile.
TAKE_OVER_EXECUTOR = """
UPDATE {s}.executors
SET instance = $2, beat_at = clock_timestamp(), lease_seconds = $3, host = $4, process = $5,
    app_version = $8
WHERE executor_id = $1 AND instance IS NOT DISTINCT FROM $6
  AND beat_at IS NOT DISTINCT FROM $7::timestamptz
RETURNING lock_key"""
RELEASE_EXECUTOR_LOCK = "SELECT pg_advisory_unlock($1::int, $2::int)"
# A heartbeat: the lease renewed (NULL lock key: this launch no longer holds the id). Committed
# asynchronously (no wait for the WAL flush or a synchronous standby): a lost heartbeat only
# makes the lease look older. On the listener's connection the lock is checked and re-taken if
# it was lost ($3: the lock namespace; NULL on a pool connection, which never takes it).
HEARTBEAT = """
WITH b AS (
    UPDATE {s}.executors SET beat_at = clock_timestamp(), lease_seconds = $4
    WHERE executor_id = $1 AND instance = $2
    RETURNING lock_key
)
SELECT set_config('synchronous_commit', 'off', true) AS commit_mode,
       (SELECT lock_key FROM b) AS lock_key,
       CASE WHEN $3::int IS NULL OR NOT EXISTS (SELECT 1 FROM b) THEN NULL
            WHEN EXISTS (
                SELECT 1 FROM pg_locks l
                WHERE l.pid = pg_backend_pid() AND l.locktype = 'advisory' AND l.granted
                  AND l.objsubid = 2 AND l.classid = ($3::bigint & 4294967295)::oid
                  AND l.objid = (SELECT lock_key FROM b)::oid) THEN true
            ELSE pg_try_advisory_lock($3::int, (SELECT lock_key FROM b)) END AS locked"""
# A clean shutdown: the lease ends now, so others recover what this launch left at once.
RETIRE_EXECUTOR = """
UPDATE {s}.executors SET beat_at = '-infinity'
WHERE executor_id = $1 AND instance = $2"""
# Executors on this host ($1) whose lease is fresh but whose lock is free ($3: the namespace):
# the supervisor checks their processes itself, and ends the lease of a process that is gone.
UNLOCKED_ON_HOST = """
SELECT e.executor_id, e.instance, e.process, e.beat_at FROM {s}.executors e
WHERE e.host = $1 AND e.executor_id <> $2
  AND e.beat_at > clock_timestamp() - make_interval(secs => e.lease_seconds)
  AND NOT EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.classid = ($3::bigint & 4294967295)::oid AND l.objid = e.lock_key::oid
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"""
DECLARE_EXECUTOR_DEAD = """
UPDATE {s}.executors SET beat_at = '-infinity'
WHERE executor_id = $1 AND instance = $2 AND beat_at = $3::timestamptz"""
# Executors that are not alive (lease over, lock free) and own no PENDING workflow are forgotten.
PRUNE_EXECUTORS = """
DELETE FROM {s}.executors e
WHERE (e.beat_at IS NULL
       OR e.beat_at <= clock_timestamp() - make_interval(secs => e.lease_seconds))
  AND NOT EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.classid = ($1::bigint & 4294967295)::oid AND l.objid = e.lock_key::oid
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
  AND NOT EXISTS (
        SELECT 1 FROM {s}.workflows w
        WHERE w.executor_id = e.executor_id AND w.status = 'PENDING')"""
# The server the listener is connected to: a changed identity (another cluster, a promoted
# standby's new timeline, a restart) may mean committed work was lost (asynchronous failover).
SERVER_IDENTITY = """
SELECT (SELECT system_identifier FROM pg_control_system())::text || '/'
       || (SELECT timeline_id FROM pg_control_checkpoint())::text || '/'
       || pg_postmaster_start_time()::text AS identity"""
# The same where pg_control_* are not granted (some managed servers).
SERVER_START = "SELECT pg_postmaster_start_time()::text AS identity"
# The listener's probe of its own wake-ups: a NOTIFY sent through the pool ($1 channel, $2 token)
# must reach the LISTEN connection (through a transaction pooler it would not).
NOTIFY_PROBE = "SELECT pg_notify($1, 'h' || $2)"
# A client's listener keeps its session from being idle.
KEEPALIVE = "SELECT 1"
# idle_session_timeout in milliseconds (NULL before Postgres 14; 0: off).
IDLE_SESSION_TIMEOUT = """
SELECT setting::bigint FROM pg_settings WHERE name = 'idle_session_timeout'"""
