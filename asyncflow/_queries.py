"""Every SQL statement asyncflow runs, as named constants.

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


# ---------------------------------------------------------------------------------------------
# Migrations: forward-only, numbered from 1, applied in one transaction under an advisory lock.
# ---------------------------------------------------------------------------------------------

MIGRATION_LOCK = "SELECT pg_advisory_xact_lock($1::int, 0)"
CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {s}"
# Whether the schema exists ($1: its name): CREATE SCHEMA IF NOT EXISTS needs CREATE on the
# database even when it exists, which a schema owner without that privilege lacks.
SCHEMA_EXISTS = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)"
CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS {s}.schema_version (
    version integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
GET_SCHEMA_VERSION = "SELECT coalesce(max(version), 0) FROM {s}.schema_version"
# $1 is the qualified name of the version table, passed as a value to to_regclass.
VERSION_TABLE_EXISTS = "SELECT to_regclass($1) IS NOT NULL"
SET_SCHEMA_VERSION = "INSERT INTO {s}.schema_version (version) VALUES ($1)"

MIGRATIONS: tuple[str, ...] = (
    # 1: the whole initial schema.
    """
    CREATE TABLE {s}.workflows (
        workflow_id        text PRIMARY KEY,
        name               text NOT NULL,
        status             text NOT NULL,
        inputs             text NOT NULL,
        output             text,
        error              text,
        executor_id        text,
        app_version        text NOT NULL,
        recovery_attempts  integer NOT NULL DEFAULT 0,
        parent_workflow_id text,
        created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
        updated_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
        completed_at       timestamptz
    );
    CREATE INDEX workflows_pending_idx ON {s}.workflows (executor_id) WHERE status = 'PENDING';
    CREATE INDEX workflows_created_idx ON {s}.workflows (created_at);

    CREATE TABLE {s}.operations (
        workflow_id  text NOT NULL,
        function_id  integer NOT NULL,
        name         text NOT NULL,
        output       text,
        error        text,
        child_id     text,
        completed    boolean NOT NULL DEFAULT true,
        deadline     double precision,
        created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (workflow_id, function_id)
    );

    CREATE TABLE {s}.messages (
        message_id     bigserial PRIMARY KEY,
        destination_id text NOT NULL REFERENCES {s}.workflows (workflow_id) ON DELETE CASCADE,
        topic          text,
        message        text NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX messages_mailbox_idx ON {s}.messages (destination_id, topic, message_id);

    CREATE TABLE {s}.message_keys (
        destination_id  text NOT NULL REFERENCES {s}.workflows (workflow_id) ON DELETE CASCADE,
        idempotency_key text NOT NULL,
        PRIMARY KEY (destination_id, idempotency_key)
    );

    CREATE TABLE {s}.events (
        workflow_id text NOT NULL,
        key         text NOT NULL,
        value       text NOT NULL,
        updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (workflow_id, key)
    );

    CREATE TABLE {s}.stream_heads (
        workflow_id text NOT NULL,
        key         text NOT NULL,
        next_offset bigint NOT NULL,
        closed      boolean NOT NULL DEFAULT false,
        PRIMARY KEY (workflow_id, key)
    );

    CREATE TABLE {s}.streams (
        workflow_id text NOT NULL,
        key         text NOT NULL,
        "offset"    bigint NOT NULL,
        value       text NOT NULL,
        writer_fid  integer NOT NULL,
        writer_seq  integer NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (workflow_id, key, "offset"),
        UNIQUE (workflow_id, key, writer_fid, writer_seq)
    );
    """,
    # 2: a version per event, so a watcher sees every change (also of an equal value).
    """
    ALTER TABLE {s}.events ADD COLUMN version bigint NOT NULL DEFAULT 1;
    """,
    # 3: the guard of user transactions. Every @app.transaction inserts a row whose deferred
    # trigger refuses to commit unless asyncflow itself commits (asyncflow.commit = 'yes'): a
    # body that runs COMMIT commits nothing.
    """
    CREATE TABLE {s}.transaction_guard (backend integer NOT NULL);
    CREATE FUNCTION {s}.transaction_guard_check() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
        IF current_setting('asyncflow.commit', true) IS DISTINCT FROM 'yes' THEN
            RAISE EXCEPTION 'an @app.transaction body must not end its own transaction'
                USING ERRCODE = 'AF001';
        END IF;
        RETURN NULL;
    END
    $fn$;
    CREATE CONSTRAINT TRIGGER transaction_guard AFTER INSERT ON {s}.transaction_guard
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
        EXECUTE FUNCTION {s}.transaction_guard_check();
    """,
    # 4: executors, each with a unique lock key: liveness is exact (no hash of the id).
    """
    CREATE TABLE {s}.executors (
        executor_id text PRIMARY KEY,
        lock_key    integer NOT NULL UNIQUE GENERATED ALWAYS AS IDENTITY,
        created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    """,
    # 5: queues. A queued workflow is ENQUEUED (or DELAYED until delay_until) until a
    # dispatcher claims it (PENDING, dispatched_at set). One row per queue in `queues`: its lock
    # serializes the claims of that queue, and `starts` keeps the times of its most recent
    # starts (at most the rate limit's count) for the sliding-window rate limit.
    """
    ALTER TABLE {s}.workflows
        ADD COLUMN queue_name       text,
        ADD COLUMN priority         integer NOT NULL DEFAULT 0,
        ADD COLUMN deduplication_id text,
        ADD COLUMN partition_key    text,
        ADD COLUMN delay_until      timestamptz,
        ADD COLUMN dispatched_at    timestamptz;
    CREATE INDEX workflows_queued_idx ON {s}.workflows
        (queue_name, priority, created_at, workflow_id) WHERE status IN ('ENQUEUED', 'DELAYED');
    CREATE INDEX workflows_delayed_idx ON {s}.workflows (queue_name, delay_until)
        WHERE status = 'DELAYED';
    CREATE INDEX workflows_queue_running_idx ON {s}.workflows
        (queue_name, executor_id, partition_key)
        WHERE status = 'PENDING' AND queue_name IS NOT NULL;
    CREATE UNIQUE INDEX workflows_deduplication_idx ON {s}.workflows
        (queue_name, deduplication_id)
        WHERE status IN ('ENQUEUED', 'DELAYED', 'PENDING') AND deduplication_id IS NOT NULL;
    CREATE TABLE {s}.queues (
        queue_name text PRIMARY KEY,
        starts     timestamptz[] NOT NULL DEFAULT '{}'
    );
    """,
    # 6: operating workflows (lifecycle). Pages of workflows by status or by parent, newest
    # first (keyset: created_at DESC, workflow_id); a cancel's walk down the children; retention
    # by completion time. IF NOT EXISTS: on a large table, build them beforehand with CREATE
    # INDEX CONCURRENTLY under these names (docs/operating-lifecycle.md). The index on
    # created_at alone goes: every page walks the status index (the planner would otherwise
    # walk created_at and filter out a rare status row by row).
    """
    CREATE INDEX IF NOT EXISTS workflows_status_created_idx
        ON {s}.workflows (status, created_at DESC, workflow_id);
    CREATE INDEX IF NOT EXISTS workflows_parent_idx
        ON {s}.workflows (parent_workflow_id, created_at DESC, workflow_id)
        WHERE parent_workflow_id IS NOT NULL;
    CREATE INDEX IF NOT EXISTS workflows_completed_idx
        ON {s}.workflows (completed_at, workflow_id) WHERE status <> 'PENDING';
    DROP INDEX IF EXISTS {s}.workflows_created_idx;
    """,
    # 7: trace context (a W3C traceparent) of the span that started a workflow, and of the span
    # that sent a message (asyncflow._core.telemetry); NULL when telemetry is off.
    """
    ALTER TABLE {s}.workflows ADD COLUMN traceparent text;
    ALTER TABLE {s}.messages ADD COLUMN traceparent text;
    """,
    # 8: workflow timeouts and schedules. ``timeout_seconds`` is what the workflow was started
    # (or enqueued) with; ``deadline`` the time it is cancelled at, in seconds since the epoch of
    # the runtime clock durable timers use (set at start, or at dispatch for a queued workflow).
    # The partial index serves the enforcers' "nearest deadline" query. One row per schedule
    # name: whether it is paused, the last tick it started (ticks are claimed by moving
    # last_tick forward, under the row's lock) and a manual trigger not started yet.
    """
    ALTER TABLE {s}.workflows
        ADD COLUMN timeout_seconds double precision,
        ADD COLUMN deadline        double precision;
    CREATE INDEX workflows_deadline_idx ON {s}.workflows (deadline)
        WHERE deadline IS NOT NULL AND status IN ('PENDING', 'ENQUEUED', 'DELAYED');
    CREATE TABLE {s}.schedules (
        schedule_name text PRIMARY KEY,
        workflow_name text NOT NULL,
        cron          text NOT NULL,
        timezone      text NOT NULL,
        catch_up      text NOT NULL,
        queue_name    text,
        paused        boolean NOT NULL DEFAULT false,
        last_tick     timestamptz,
        triggered_at  timestamptz,
        updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    """,
    # 9: the transaction guard is unlogged (its rows live only inside one transaction: no WAL
    # for them) and indexed by backend (asyncflow's own commit deletes its row through the index
    # instead of scanning dead rows left by earlier transactions).
    """
    ALTER TABLE {s}.transaction_guard SET UNLOGGED;
    CREATE INDEX transaction_guard_backend_idx ON {s}.transaction_guard (backend);
    """,
    # 10: ownership. ``epoch`` counts the claims of a workflow (start, recovery, dispatch,
    # resume): every write of an execution is conditioned on the epoch it started with, so a
    # stale execution's first write after its workflow was claimed elsewhere is refused. An
    # executor row holds the launch using its id (``instance``), its last sign of life
    # (``beat_at``, server clock), the lease it renews (``lease_seconds``) and where its process
    # runs (``host``: boot id and pid namespace; ``process``: pid and start time), so a process
    # on the same host can prove it dead at once.
    """
    ALTER TABLE {s}.workflows ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
    ALTER TABLE {s}.executors
        ADD COLUMN instance      text,
        ADD COLUMN beat_at       timestamptz,
        ADD COLUMN lease_seconds double precision NOT NULL DEFAULT 10,
        ADD COLUMN host          text,
        ADD COLUMN process       text;
    """,
    # 11: deploying new code. An executor row names the app version its process runs
    # (``app_version``; NULL for a process of a release before this migration, which may run
    # any version), so a workflow of version V is stranded when no live executor runs V. Each
    # adoption of a stranded workflow by another version is journaled in ``version_changes``
    # (one row per adoption, keyed by the epoch the adoption gave it; ``replayed``: how many
    # recorded operations were replayed against the new code, NULL when adopted without
    # replay, ``upgrade="always"``).
    """
    ALTER TABLE {s}.executors ADD COLUMN app_version text;
    CREATE TABLE {s}.version_changes (
        workflow_id  text NOT NULL REFERENCES {s}.workflows (workflow_id) ON DELETE CASCADE,
        epoch        bigint NOT NULL,
        from_version text NOT NULL,
        to_version   text NOT NULL,
        executor_id  text,
        replayed     integer,
        changed_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (workflow_id, epoch)
    );
    """,
    # 12: the topic a recv waited on, in its journal entry (the dashboard's timeline shows it;
    # a replay never reads it). NULL for a recv without a topic and for every other entry.
    """
    ALTER TABLE {s}.operations ADD COLUMN topic text;
    """,
    # 13: debounce and schedules made at runtime. ``debounce_key``: a debouncer's DELAYED
    # workflow waiting out
    # its burst; the partial unique index holds at most one per (queue, workflow name, key)
    # while it is DELAYED, so the calls of a burst in every process find the same row, and the
    # first call after it left DELAYED starts the next burst's. ``schedules.dynamic``: made by
    # create_schedule (served by every app registering its workflow; deletable), with its own
    # ``grace_seconds``; ``backfill_starts``/``backfill_ends``: backfill ranges asked for and
    # not run yet (a scheduler of the schedule runs their ticks under the row's lock).
    """
    ALTER TABLE {s}.workflows ADD COLUMN debounce_key text;
    CREATE UNIQUE INDEX workflows_debounce_idx ON {s}.workflows
        (queue_name, name, debounce_key)
        WHERE status = 'DELAYED' AND debounce_key IS NOT NULL;
    ALTER TABLE {s}.schedules
        ADD COLUMN dynamic         boolean NOT NULL DEFAULT false,
        ADD COLUMN grace_seconds   double precision,
        ADD COLUMN backfill_starts timestamptz[] NOT NULL DEFAULT '{}',
        ADD COLUMN backfill_ends   timestamptz[] NOT NULL DEFAULT '{}';
    """,
    # 14: endless workflows and workflow attributes. ``run`` numbers the runs of a workflow id
    # (continue_as_new starts run n+1 in the same row, with an empty journal whose function ids
    # go on from ``first_function_id``, one past the continue's own); an earlier run
    # kept as a linked row has status CONTINUED_AS_NEW, ``run_of`` naming the workflow id it
    # continued as. ``attributes``: the workflow's searchable attributes (a JSON object), with a
    # GIN index (jsonb_path_ops: containment, ``@>``) over the workflows that have any.
    # IF NOT EXISTS: on a large table, build the indexes beforehand with CREATE INDEX
    # CONCURRENTLY under these names (docs/operating-lifecycle.md).
    """
    ALTER TABLE {s}.workflows
        ADD COLUMN run               integer NOT NULL DEFAULT 1,
        ADD COLUMN first_function_id integer NOT NULL DEFAULT 0,
        ADD COLUMN run_of            text,
        ADD COLUMN attributes        jsonb NOT NULL DEFAULT '{}';
    CREATE INDEX IF NOT EXISTS workflows_attributes_idx ON {s}.workflows
        USING gin (attributes jsonb_path_ops) WHERE attributes <> '{}'::jsonb;
    CREATE INDEX IF NOT EXISTS workflows_runs_idx ON {s}.workflows (run_of, run)
        WHERE run_of IS NOT NULL;
    CREATE TABLE {s}.workflow_attributes (
        workflow_id text NOT NULL REFERENCES {s}.workflows (workflow_id) ON DELETE CASCADE,
        key         text NOT NULL,
        value       jsonb NOT NULL,
        created_at  timestamptz NOT NULL,
        PRIMARY KEY (workflow_id, key)
    );
    CREATE INDEX workflow_attributes_walk_idx ON {s}.workflow_attributes
        (key, value, created_at DESC, workflow_id);
    CREATE FUNCTION {s}.workflow_attributes_sync() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            DELETE FROM {s}.workflow_attributes WHERE workflow_id = NEW.workflow_id;
        END IF;
        INSERT INTO {s}.workflow_attributes (workflow_id, key, value, created_at)
        SELECT NEW.workflow_id, e.key, e.value, NEW.created_at
        FROM jsonb_each(NEW.attributes) AS e
        WHERE jsonb_typeof(e.value) NOT IN ('object', 'array');
        RETURN NULL;
    END
    $fn$;
    CREATE TRIGGER workflow_attributes_inserted AFTER INSERT ON {s}.workflows
        FOR EACH ROW WHEN (NEW.attributes <> '{}'::jsonb)
        EXECUTE FUNCTION {s}.workflow_attributes_sync();
    CREATE TRIGGER workflow_attributes_updated AFTER UPDATE OF attributes ON {s}.workflows
        FOR EACH ROW WHEN (OLD.attributes IS DISTINCT FROM NEW.attributes)
        EXECUTE FUNCTION {s}.workflow_attributes_sync();
    """,
    # 15: a queue's claim in one round trip. The function locks the queue's row, then claims in
    # a statement of its own: a VOLATILE function's statements each take a new snapshot, so the
    # claim counts every claim committed before the lock was granted (as the two statements of a
    # transaction did, in four round trips). Its parameters are CLAIM_QUEUED's.
    """
    CREATE FUNCTION {s}.claim_queued(
        text, text, text[], text, integer, integer, integer, double precision, integer,
        integer, double precision, text)
    RETURNS TABLE (workflow_id text, name text, inputs text, recovery_attempts integer,
                   fresh boolean, deadline double precision, epoch bigint,
                   wait_s double precision, found bigint, room bigint, deadlines bigint)
    LANGUAGE plpgsql AS $claim$
    #variable_conflict use_column
    BEGIN
        INSERT INTO {s}.queues (queue_name) VALUES ($1)
        ON CONFLICT (queue_name) DO UPDATE SET queue_name = excluded.queue_name WHERE false;
        RETURN QUERY
    WITH t AS (
        SELECT clock_timestamp() AS ts
    ), starts AS (
        SELECT count(*) AS n, min(s) AS oldest
        FROM {s}.queues q, t, unnest(q.starts) AS s
        WHERE q.queue_name = $1 AND $7::int IS NOT NULL AND s > t.ts - make_interval(secs => $8)
    ), free AS (
        SELECT least(
            $10::int,
            CASE WHEN $5::int IS NOT NULL THEN $5 - (
                SELECT count(*) FROM {s}.workflows
                WHERE queue_name = $1 AND status = 'PENDING') END,
            CASE WHEN $6::int IS NOT NULL THEN $6 - (
                SELECT count(*) FROM {s}.workflows
                WHERE queue_name = $1 AND status = 'PENDING' AND executor_id = $2) END,
            CASE WHEN $7::int IS NOT NULL THEN $7 - (SELECT n FROM starts) END
        ) AS n
    ), full_partitions AS (
        SELECT partition_key FROM {s}.workflows
        WHERE $9::int IS NOT NULL AND queue_name = $1 AND status = 'PENDING'
          AND partition_key IS NOT NULL
        GROUP BY partition_key HAVING count(*) >= $9
    ), candidates AS (
        SELECT c.workflow_id, c.partition_key, c.priority, c.created_at,
               c.dispatched_at IS NULL AS fresh
        FROM {s}.workflows c
        WHERE c.queue_name = $1
          AND (c.status = 'ENQUEUED'
               OR (c.status = 'DELAYED' AND c.delay_until <= (SELECT ts FROM t)))
          AND c.name = ANY ($3::text[])
          AND (c.dispatched_at IS NULL OR c.app_version = $4)
          AND (c.partition_key IS NULL
               OR c.partition_key NOT IN (SELECT partition_key FROM full_partitions))
        ORDER BY c.priority, c.created_at, c.workflow_id
        LIMIT (SELECT greatest(n, 0) FROM free)
        FOR NO KEY UPDATE OF c SKIP LOCKED
    ), chosen AS (
        SELECT r.workflow_id, r.fresh FROM (
            SELECT workflow_id, fresh, partition_key,
                   row_number() OVER (PARTITION BY partition_key
                                      ORDER BY priority, created_at, workflow_id) AS rank
            FROM candidates
        ) r
        WHERE $9::int IS NULL OR r.partition_key IS NULL OR r.rank <= $9 - (
            SELECT count(*) FROM {s}.workflows
            WHERE queue_name = $1 AND status = 'PENDING' AND partition_key = r.partition_key)
    ), claimed AS (
        UPDATE {s}.workflows w
        SET status = 'PENDING', executor_id = $2, app_version = $4, dispatched_at = t.ts,
            updated_at = t.ts, deadline = coalesce(w.deadline, $11::float8 + w.timeout_seconds),
            epoch = w.epoch + 1
        FROM chosen, t
        WHERE w.workflow_id = chosen.workflow_id
        RETURNING w.workflow_id, w.name, w.inputs, w.recovery_attempts, chosen.fresh, w.deadline,
                  w.epoch
    ), promoted AS (
        UPDATE {s}.workflows d SET status = 'ENQUEUED', updated_at = t.ts
        FROM t
        WHERE d.queue_name = $1 AND d.status = 'DELAYED' AND d.delay_until <= t.ts
          AND d.workflow_id NOT IN (SELECT workflow_id FROM chosen)
    ), recorded AS (
        UPDATE {s}.queues q
        SET starts = ARRAY(
            SELECT s
            FROM unnest(q.starts || array_fill(t.ts, ARRAY[(SELECT count(*) FROM claimed)::int])) s
            WHERE s > t.ts - make_interval(secs => $8)
            ORDER BY s DESC LIMIT $7)
        FROM t
        WHERE q.queue_name = $1 AND $7::int IS NOT NULL AND EXISTS (SELECT 1 FROM claimed)
    ), next AS (
        SELECT extract(epoch FROM least(
            (SELECT min(delay_until) FROM {s}.workflows
             WHERE queue_name = $1 AND status = 'DELAYED' AND delay_until > t.ts),
            CASE WHEN $7::int IS NOT NULL
                      AND (SELECT n FROM starts) + (SELECT count(*) FROM claimed) >= $7
                 THEN coalesce((SELECT oldest FROM starts), t.ts) + make_interval(secs => $8) END
        ) - t.ts)::float8 AS wait_s
        FROM t
    )
    SELECT c.workflow_id, c.name, c.inputs, c.recovery_attempts, c.fresh, c.deadline, c.epoch,
           n.wait_s,
           (SELECT count(*) FROM candidates) AS found,
           (SELECT greatest(n, 0) FROM free)::bigint AS room,
           (SELECT count(*) FROM (SELECT pg_notify($12, 'd') WHERE EXISTS (
                SELECT 1 FROM claimed WHERE deadline IS NOT NULL)) d) AS deadlines
    FROM next n LEFT JOIN claimed c ON true;
    END
    $claim$;
    """,
    # 16: which journals name a workflow as their child. A fork's journal names the children its
    # source started before the fork's operation (they keep the source as their parent), so
    # retention and delete look for readers here, not only by parent_workflow_id.
    """
    CREATE INDEX IF NOT EXISTS operations_child_idx ON {s}.operations (child_id)
        WHERE child_id IS NOT NULL;
    """,
)

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

# ---------------------------------------------------------------------------------------------
# Workflows
# ---------------------------------------------------------------------------------------------

# A workflow starts PENDING at epoch 1 on its starter's executor, with attributes $12 (a JSON
# object, or NULL: none). A child ($6: its parent, $11: the parent execution's epoch) is
# inserted only while its parent's execution still owns it.
INSERT_WORKFLOW = """
WITH ins AS (
    INSERT INTO {s}.workflows
        (workflow_id, name, status, inputs, executor_id, app_version, parent_workflow_id,
         traceparent, timeout_seconds, deadline, epoch, attributes)
    SELECT $1, $2, 'PENDING', $3, $4, $5, $6, $7, $8, $9, 1, coalesce($12::jsonb, '{ }')
    WHERE $11::bigint IS NULL OR EXISTS (
        SELECT 1 FROM {s}.workflows p
        WHERE p.workflow_id = $6 AND p.status = 'PENDING' AND p.epoch = $11 FOR SHARE)
    ON CONFLICT (workflow_id) DO NOTHING
    RETURNING name, deadline
)
SELECT true AS created, name,
       CASE WHEN deadline IS NOT NULL THEN pg_notify($10, 'd') END AS notified
FROM ins
UNION ALL
SELECT false, name, NULL FROM {s}.workflows
WHERE workflow_id = $1 AND NOT EXISTS (SELECT 1 FROM ins)"""

# A workflow started by name from outside any app (Client.start_workflow): PENDING, unassigned
# and of no app version yet (''), so the recovery supervisor of any live app registering the name
# claims it (CLAIM_WORKFLOWS stamps its version) -- woken by the 'r' notification.
INSERT_UNASSIGNED_WORKFLOW = """
WITH ins AS (
    INSERT INTO {s}.workflows (workflow_id, name, status, inputs, executor_id, app_version)
    VALUES ($1, $2, 'PENDING', $3, NULL, '')
    ON CONFLICT (workflow_id) DO NOTHING
    RETURNING name
)
SELECT true AS created, name, pg_notify($4, 'r' || $1)::text AS notified FROM ins
UNION ALL
SELECT false, name, NULL FROM {s}.workflows
WHERE workflow_id = $1 AND NOT EXISTS (SELECT 1 FROM ins)"""

WORKFLOW_NAME = "SELECT name FROM {s}.workflows WHERE workflow_id = $1"
WORKFLOW_STATE = "SELECT status FROM {s}.workflows WHERE workflow_id = $1"
WORKFLOW_OWNERSHIP = "SELECT status, epoch FROM {s}.workflows WHERE workflow_id = $1"
WORKFLOW_RESULT = "SELECT status, output, error FROM {s}.workflows WHERE workflow_id = $1"
WORKFLOW_TRACEPARENT = "SELECT traceparent FROM {s}.workflows WHERE workflow_id = $1"

_STATUS_COLUMNS = """workflow_id, name, status, executor_id, app_version, recovery_attempts,
    parent_workflow_id, created_at, updated_at, completed_at, error, queue_name, priority,
    deduplication_id, partition_key, delay_until, dispatched_at, timeout_seconds, deadline,
    epoch, run, run_of, attributes"""

WORKFLOW_STATUS = "SELECT " + _STATUS_COLUMNS + " FROM {s}.workflows WHERE workflow_id = $1"

FINISH_WORKFLOW = """
WITH u AS (
    UPDATE {s}.workflows
    SET status = $2, output = $3, error = $4, updated_at = clock_timestamp(),
        completed_at = clock_timestamp()
    WHERE workflow_id = $1 AND status = 'PENDING' AND epoch = $6
    RETURNING workflow_id, queue_name
)
SELECT pg_notify($5, 't' || workflow_id),
       CASE WHEN queue_name IS NOT NULL THEN pg_notify($5, 'f' || queue_name) END
FROM u"""

# A queued workflow (ENQUEUED, DELAYED or running) is cancelled too; its queue is notified
# (kind f: a slot of the queue may be free).
CANCEL_WORKFLOW = """
WITH u AS (
    UPDATE {s}.workflows
    SET status = 'CANCELLED', updated_at = clock_timestamp(), completed_at = clock_timestamp()
    WHERE workflow_id = $1 AND status IN ('PENDING', 'ENQUEUED', 'DELAYED')
    RETURNING workflow_id, queue_name
), n AS (
    SELECT pg_notify($2, 't' || workflow_id),
           CASE WHEN queue_name IS NOT NULL THEN pg_notify($2, 'f' || queue_name) END
    FROM u
)
SELECT EXISTS (SELECT 1 FROM {s}.workflows WHERE workflow_id = $1) AS found,
       (SELECT count(*) FROM n) AS cancelled, (SELECT queue_name FROM u) AS queue_name"""

# A queued workflow goes back to its queue (ENQUEUED, no executor) and its queue is notified;
# the others become PENDING on executor $2 (NULL: for a supervisor to claim).
RESUME_WORKFLOW = """
WITH u AS (
    UPDATE {s}.workflows
    SET status = CASE WHEN queue_name IS NULL THEN 'PENDING' ELSE 'ENQUEUED' END,
        executor_id = CASE WHEN queue_name IS NULL THEN $2 END,
        recovery_attempts = 0, output = NULL, error = NULL, timeout_seconds = NULL,
        deadline = NULL, completed_at = NULL, updated_at = clock_timestamp(),
        epoch = epoch + 1
    WHERE workflow_id = $1 AND status IN ('CANCELLED', 'ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
    RETURNING workflow_id, name, inputs, queue_name, epoch
), n AS (
    SELECT CASE WHEN queue_name IS NULL THEN pg_notify($3, 'r' || workflow_id)
                ELSE pg_notify($3, 'q' || queue_name) END
    FROM u
)
SELECT EXISTS (SELECT 1 FROM {s}.workflows WHERE workflow_id = $1) AS found,
       u.name, u.inputs, u.queue_name, u.epoch, (SELECT count(*) FROM n) AS notified
FROM (SELECT 1) AS one LEFT JOIN u ON true"""

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
# Claims PENDING workflows nobody runs: unassigned ones and, with $4 (the supervisor has been
# connected for a whole lease), those of dead executors. Each claim bumps the workflow's epoch,
# which fences off any execution still running elsewhere. SKIP LOCKED keeps two supervisors from
# ever claiming the same row. NO KEY UPDATE (what the UPDATE takes anyway) rather than UPDATE: a
# send in flight holds a KEY SHARE lock on its destination's row (the foreign key check), which
# must not make a sweep skip that workflow. Queued workflows are not claimed here:
# REQUEUE_ORPHANS puts them back in their queue. This executor's own are CLAIM_OWN's.
CLAIM_WORKFLOWS = _LIVE_EXECUTORS + """, candidates AS (
    SELECT c.workflow_id FROM {s}.workflows c
    WHERE c.status = 'PENDING' AND c.queue_name IS NULL
      AND c.name = ANY ($2::text[])
      AND (c.app_version = $3 OR (c.app_version = '' AND c.executor_id IS NULL))
      AND (
          c.executor_id IS NULL
          OR ($4 AND c.executor_id <> $1
              AND c.executor_id NOT IN (SELECT executor_id FROM live))
      )
    ORDER BY c.created_at
    LIMIT $6
    FOR NO KEY UPDATE OF c SKIP LOCKED
)
UPDATE {s}.workflows w
SET executor_id = $1, app_version = $3, recovery_attempts = w.recovery_attempts + 1,
    epoch = w.epoch + 1,
    updated_at = clock_timestamp()
FROM candidates
WHERE w.workflow_id = candidates.workflow_id
RETURNING w.workflow_id, w.name, w.inputs, w.recovery_attempts, w.epoch"""

# Self-repair: this executor's PENDING workflows ($1) that were not touched in the last $2
# seconds (a start, claim or dispatch commits before its execution is spawned: the age keeps
# those out), for the supervisor to compare with what runs here.
OWN_PENDING = """
SELECT workflow_id FROM {s}.workflows
WHERE executor_id = $1 AND status = 'PENDING'
  AND updated_at <= clock_timestamp() - make_interval(secs => $2)"""
OWN_PENDING_COUNT = """
SELECT count(*) FROM {s}.workflows WHERE executor_id = $1 AND status = 'PENDING'"""
# ... and the claim of those of them not running here ($2), of a function this app registers
# ($3) and its version ($4) (queued ones ran on the version their dispatch stamped): a new epoch.
CLAIM_OWN = """
UPDATE {s}.workflows w
SET recovery_attempts = w.recovery_attempts + 1, epoch = w.epoch + 1,
    updated_at = clock_timestamp()
WHERE w.workflow_id = ANY ($2::text[]) AND w.executor_id = $1 AND w.status = 'PENDING'
  AND w.name = ANY ($3::text[]) AND w.app_version = $4
RETURNING w.workflow_id, w.name, w.inputs, w.recovery_attempts, w.epoch, w.queue_name,
          w.deadline"""

# At launch: this executor's PENDING workflows whose function this app does not register are
# left unassigned, and the supervisors of apps that may register them are woken.
RELEASE_UNREGISTERED = """
WITH u AS (
    UPDATE {s}.workflows
    SET executor_id = NULL, epoch = epoch + 1, updated_at = clock_timestamp()
    WHERE executor_id = $1 AND status = 'PENDING' AND NOT (name = ANY ($2::text[]))
      AND queue_name IS NULL  -- queued ones go back to their queue (REQUEUE_ORPHANS)
    RETURNING workflow_id
)
SELECT pg_notify($3, 'r' || workflow_id) FROM u"""

DEAD_LETTER = """
WITH u AS (
    UPDATE {s}.workflows
    SET status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', updated_at = clock_timestamp(),
        completed_at = clock_timestamp()
    WHERE workflow_id = $1 AND status = 'PENDING'
    RETURNING workflow_id, queue_name
)
SELECT pg_notify($2, 't' || workflow_id),
       CASE WHEN queue_name IS NOT NULL THEN pg_notify($2, 'f' || queue_name) END
FROM u"""

# ---------------------------------------------------------------------------------------------
# Executor liveness: a lease renewed by heartbeats (server clock), plus a session-level advisory
# lock held on the listener connection. See docs/operations.md, "Liveness and fencing".
# ---------------------------------------------------------------------------------------------

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

# ---------------------------------------------------------------------------------------------
# Deploying new code: workflows stranded on a version no live executor runs, and their adoption
# by another version (asyncflow._operations.adoption; docs/deploying.md).
# ---------------------------------------------------------------------------------------------

# The versions live executors run (NULL: a process of an older release, which may run any).
_LIVE_VERSIONS = """, live_versions AS (
    SELECT e.app_version FROM {s}.executors e
    WHERE e.executor_id IN (SELECT executor_id FROM live)
)"""
# A workflow ``w`` is stranded when it waits for an executor of its version and none is live: a
# PENDING one (not queued: those go back to their queue) nobody live runs, or an ENQUEUED or
# DELAYED one that ran before (a fresh one may be dispatched by any version).
_STRANDED = """(CASE WHEN w.status = 'PENDING'
         THEN w.queue_name IS NULL AND (w.executor_id IS NULL
              OR w.executor_id NOT IN (SELECT executor_id FROM live))
         ELSE w.status IN ('ENQUEUED', 'DELAYED') AND w.dispatched_at IS NOT NULL END
    AND NOT EXISTS (SELECT 1 FROM live_versions v
                    WHERE v.app_version IS NULL OR v.app_version = w.app_version))"""
# An app's candidates for adoption ($1: its version, $2: the workflow names it registers, $3:
# at most, $4: the lock namespace), oldest first, each with its epoch and how many operations it
# recorded (the adoption is guarded by both).
STRANDED_WORKFLOWS = _LIVE_EXECUTORS.replace("$5", "$4") + _LIVE_VERSIONS + """
SELECT w.workflow_id, w.name, w.status, w.app_version, w.epoch,
       (SELECT count(*) FROM {s}.operations o WHERE o.workflow_id = w.workflow_id) AS operations
FROM {s}.workflows w
WHERE w.status IN ('PENDING', 'ENQUEUED', 'DELAYED') AND w.app_version <> $1
  AND w.name = ANY ($2::text[]) AND """ + _STRANDED + """
ORDER BY w.created_at, w.workflow_id
LIMIT $3"""
# The adoption of one stranded workflow ($1) of version $3 by version $2, exactly once across a
# fleet: only while it is still at the epoch ($4) and journal length ($6) that were replayed and
# still stranded (re-checked on the newest row version when another adoption or claim committed
# first). A PENDING one is claimed for executor $5 (a new epoch, like every claim); an ENQUEUED
# or DELAYED one stays in its queue with the new version (and a new epoch), and its queue is
# notified. The adoption is journaled in version_changes ($7: operations replayed; NULL:
# adopted without replay). $8: the NOTIFY channel; $9: the lock namespace.
ADOPT_WORKFLOW = _LIVE_EXECUTORS.replace("$5", "$9") + _LIVE_VERSIONS + """, u AS (
    UPDATE {s}.workflows w
    SET app_version = $2, epoch = w.epoch + 1, updated_at = clock_timestamp(),
        executor_id = CASE WHEN w.status = 'PENDING' THEN $5 END,
        recovery_attempts = w.recovery_attempts
                            + CASE WHEN w.status = 'PENDING' THEN 1 ELSE 0 END
    WHERE w.workflow_id = $1 AND w.app_version = $3 AND w.epoch = $4
      AND w.status IN ('PENDING', 'ENQUEUED', 'DELAYED')
      AND (SELECT count(*) FROM {s}.operations o WHERE o.workflow_id = $1) = $6
      AND """ + _STRANDED + """
    RETURNING w.workflow_id, w.name, w.inputs, w.recovery_attempts, w.epoch, w.queue_name,
              w.deadline, w.status
), j AS (
    INSERT INTO {s}.version_changes
        (workflow_id, epoch, from_version, to_version, executor_id, replayed)
    SELECT workflow_id, epoch, $3, $2, $5, $7::int FROM u
)
SELECT workflow_id, name, inputs, recovery_attempts, epoch, queue_name, deadline, status,
       CASE WHEN status <> 'PENDING' THEN pg_notify($8, 'q' || queue_name) END AS notified
FROM u"""
# The versions view ($1: the lock namespace): live executors per version ...
LIVE_EXECUTOR_VERSIONS = _LIVE_EXECUTORS.replace("$5", "$1") + """
SELECT e.app_version, count(*) AS executors FROM {s}.executors e
WHERE e.executor_id IN (SELECT executor_id FROM live)
GROUP BY e.app_version"""
# ... unfinished workflows per version and status, and how many of them are stranded ...
VERSION_COUNTS = _LIVE_EXECUTORS.replace("$5", "$1") + _LIVE_VERSIONS + """
SELECT w.app_version, w.status, count(*) AS workflows,
       count(*) FILTER (WHERE """ + _STRANDED + """) AS stranded
FROM {s}.workflows w
WHERE w.status IN ('PENDING', 'ENQUEUED', 'DELAYED')
GROUP BY w.app_version, w.status"""
# ... and the first stranded ones ($2: at most), oldest first.
STRANDED_IDS = _LIVE_EXECUTORS.replace("$5", "$1") + _LIVE_VERSIONS + """
SELECT w.workflow_id, w.name, w.status, w.app_version, w.created_at
FROM {s}.workflows w
WHERE w.status IN ('PENDING', 'ENQUEUED', 'DELAYED') AND """ + _STRANDED + """
ORDER BY w.created_at, w.workflow_id
LIMIT $2"""
# One workflow ($2): whether it waits for an executor of its version that is not there.
WORKFLOW_STRANDED = _LIVE_EXECUTORS.replace("$5", "$1") + _LIVE_VERSIONS + """
SELECT """ + _STRANDED + """ AS stranded FROM {s}.workflows w WHERE w.workflow_id = $2"""
# The adoptions of one workflow, oldest first.
VERSION_CHANGES = """
SELECT epoch, from_version, to_version, executor_id, replayed, changed_at
FROM {s}.version_changes WHERE workflow_id = $1 ORDER BY epoch"""

# ---------------------------------------------------------------------------------------------
# The journal
# ---------------------------------------------------------------------------------------------

# The journal of the workflow's current run, and the function id its run starts at (a run
# started by continue_as_new numbers its operations on from the run before it: per-position
# ids and keys stay unique across runs), and its epoch. One row with NULL operation columns: an
# empty journal.
LOAD_JOURNAL = """
SELECT w.first_function_id, w.epoch, o.function_id, o.name, o.output, o.error, o.child_id,
       o.completed, o.deadline
FROM {s}.workflows w LEFT JOIN {s}.operations o ON o.workflow_id = w.workflow_id
WHERE w.workflow_id = $1"""

LIST_OPERATIONS = """
SELECT function_id, name, output, error, child_id, completed, deadline, created_at
FROM {s}.operations WHERE workflow_id = $1 ORDER BY function_id"""

# Every write of an execution is fenced by its ownership: the workflow ($1) is still PENDING and
# at the epoch the execution started with (%EPOCH%), read under a share lock on its row, so a
# claim (which bumps the epoch) either waits for the write to commit (and the new owner's journal
# load sees it) or commits first (and the write is refused). Refused: the workflow was cancelled
# or ended (the next operation stops), or it was claimed elsewhere (this execution stops).
_OWNED = """{s}.workflows WHERE workflow_id = $1 AND status = 'PENDING' AND epoch = %EPOCH%
    FOR SHARE"""


def _owned(epoch_param: str) -> str:
    return _OWNED.replace("%EPOCH%", epoch_param)


# A duplicate (workflow_id, function_id) is a unique violation: another execution recorded it.
RECORD_OPERATION = """
INSERT INTO {s}.operations
    (workflow_id, function_id, name, output, error, child_id, completed, deadline)
SELECT $1, $2, $3, $4, $5, $6, $7, $8
FROM """ + _owned("$9")

OPERATION_EXISTS = """
SELECT EXISTS (SELECT 1 FROM {s}.operations WHERE workflow_id = $1 AND function_id = $2)"""

COMPLETE_OPERATION = """
UPDATE {s}.operations SET output = $3, completed = true
WHERE workflow_id = $1 AND function_id = $2 AND NOT completed
  AND EXISTS (SELECT 1 FROM """ + _owned("$4") + ")"

# Journaled effects of a workflow: the journal entry and the effect in ONE statement (one round
# trip, atomic). ``recorded`` is 0 when the workflow is no longer PENDING (nothing was done); a
# duplicate journal entry is a unique violation and nothing is done either.
# The entry's output describes the effect for the dashboard's timeline and `workflow steps`
# (%OUTPUT%, built from the statement's own parameters): a replay never reads it.
_JOURNAL_ENTRY = """
WITH op AS (
    INSERT INTO {s}.operations (workflow_id, function_id, name, output)
    SELECT $1, $2, $3, %OUTPUT% FROM """ + _OWNED + """
    RETURNING workflow_id
)"""

# {"to": destination, "topic": topic, "message": message}
_SEND_OUTPUT = """'{"to":' || to_json($4::text)::text || ',"topic":' || coalesce(
    to_json($5::text)::text, 'null') || ',"message":' || $6 || '}'"""
JOURNALED_SEND = _JOURNAL_ENTRY.replace("%EPOCH%", "$9").replace(
    "%OUTPUT%", _SEND_OUTPUT) + """, ins AS (
    INSERT INTO {s}.messages (destination_id, topic, message, traceparent)
    SELECT $4, $5, $6, $8 FROM op
    RETURNING destination_id
)
SELECT (SELECT count(*) FROM op) AS recorded,
       (SELECT pg_notify($7, 'm' || destination_id) FROM ins) AS notified"""

# {"key": key, "value": value}
_SET_EVENT_OUTPUT = """'{"key":' || to_json($4::text)::text || ',"value":' || $5 || '}'"""
JOURNALED_SET_EVENT = _JOURNAL_ENTRY.replace("%EPOCH%", "$7").replace(
    "%OUTPUT%", _SET_EVENT_OUTPUT) + """, u AS (
    INSERT INTO {s}.events (workflow_id, key, value)
    SELECT workflow_id, $4, $5 FROM op
    ON CONFLICT (workflow_id, key)
    DO UPDATE SET value = excluded.value, updated_at = clock_timestamp(),
                  version = {s}.events.version + 1
    RETURNING workflow_id
)
SELECT (SELECT count(*) FROM op) AS recorded,
       (SELECT pg_notify($6, 'e' || workflow_id) FROM u) AS notified"""

# Appending to a stream: the head row's lock serializes writers and hands out the next offset
# (nothing when the stream is closed); %HEAD% and %ROW% name where the values come from.
_STREAM_APPEND = """, head AS (
    INSERT INTO {s}.stream_heads (workflow_id, key, next_offset)
    SELECT %HEAD%
    ON CONFLICT (workflow_id, key)
    DO UPDATE SET next_offset = {s}.stream_heads.next_offset + 1
    WHERE NOT {s}.stream_heads.closed
    RETURNING next_offset - 1 AS "offset"
), ins AS (
    INSERT INTO {s}.streams (workflow_id, key, "offset", value, writer_fid, writer_seq)
    SELECT %ROW% FROM head
    RETURNING "offset"
)
"""

# A write to a stream already closed is journaled with its failure ($7, the recorded
# StreamClosedError) in the same statement, so a replay raises it too. The entry's output is
# {"key": key} (the value is the stream's row, written by this function id).
JOURNALED_WRITE_STREAM = """
WITH op AS (
    INSERT INTO {s}.operations (workflow_id, function_id, name, error, output)
    SELECT $1, $2, $3, CASE WHEN EXISTS (
        SELECT 1 FROM {s}.stream_heads WHERE workflow_id = $1 AND key = $4 AND closed
    ) THEN $7 END, '{"key":' || to_json($4::text)::text || '}'
    FROM """ + _owned("$8") + """
    RETURNING workflow_id, error
)""" + _STREAM_APPEND.replace(
    "%HEAD%", "workflow_id, $4, 1 FROM op WHERE error IS NULL"
).replace("%ROW%", '$1, $4, "offset", $5, $2, 0') + """\
SELECT (SELECT count(*) FROM op) AS recorded, (SELECT "offset" FROM ins) AS "offset",
       coalesce((SELECT error IS NOT NULL FROM op), false) AS refused,
       (SELECT pg_notify($6, 's' || $1) FROM ins) AS notified"""

# {"key": key}
JOURNALED_CLOSE_STREAM = _JOURNAL_ENTRY.replace("%EPOCH%", "$6").replace(
    "%OUTPUT%", """'{"key":' || to_json($4::text)::text || '}'""") + """, h AS (
    INSERT INTO {s}.stream_heads (workflow_id, key, next_offset, closed)
    SELECT workflow_id, $4, 0, true FROM op
    ON CONFLICT (workflow_id, key) DO UPDATE SET closed = true
    RETURNING workflow_id
)
SELECT (SELECT count(*) FROM op) AS recorded,
       (SELECT pg_notify($5, 's' || workflow_id) FROM h) AS notified"""

SET_OPERATION_ERROR = """
UPDATE {s}.operations SET error = $3 WHERE workflow_id = $1 AND function_id = $2
  AND EXISTS (SELECT 1 FROM """ + _owned("$4") + ")"
# An open wait ended by an error (the workflow it waits on does not exist): completed with the
# error, which replays raise again.
FAIL_OPERATION = """
UPDATE {s}.operations SET error = $3, completed = true
WHERE workflow_id = $1 AND function_id = $2 AND NOT completed
  AND EXISTS (SELECT 1 FROM """ + _owned("$4") + ")"

# ---------------------------------------------------------------------------------------------
# History: export, import, fork (asyncflow._front.history) and the reads of a history replay. Rows
# travel whole, as JSON (to_jsonb / jsonb_populate_record), so columns that later migrations
# add travel with them.
# ---------------------------------------------------------------------------------------------

EXISTING_WORKFLOW_IDS = """
SELECT workflow_id FROM {s}.workflows WHERE workflow_id = ANY ($1::text[])"""

CHILD_WORKFLOW_IDS = """
SELECT workflow_id FROM {s}.workflows WHERE parent_workflow_id = ANY ($1::text[])"""

# Each export statement returns (workflow_id, row as JSON text) for the workflows $1.
EXPORT_WORKFLOWS = """
SELECT w.workflow_id, to_jsonb(w)::text AS row FROM {s}.workflows w
WHERE w.workflow_id = ANY ($1::text[]) ORDER BY w.created_at, w.workflow_id"""
EXPORT_OPERATIONS = """
SELECT o.workflow_id, to_jsonb(o)::text AS row FROM {s}.operations o
WHERE o.workflow_id = ANY ($1::text[]) ORDER BY o.workflow_id, o.function_id"""
EXPORT_EVENTS = """
SELECT e.workflow_id, to_jsonb(e)::text AS row FROM {s}.events e
WHERE e.workflow_id = ANY ($1::text[]) ORDER BY e.workflow_id, e.key"""
EXPORT_STREAM_HEADS = """
SELECT h.workflow_id, to_jsonb(h)::text AS row FROM {s}.stream_heads h
WHERE h.workflow_id = ANY ($1::text[]) ORDER BY h.workflow_id, h.key"""
EXPORT_STREAMS = """
SELECT e.workflow_id, to_jsonb(e)::text AS row FROM {s}.streams e
WHERE e.workflow_id = ANY ($1::text[]) ORDER BY e.workflow_id, e.key, e."offset\""""
# Pending messages, oldest first; their ids are assigned anew on import.
EXPORT_MESSAGES = """
SELECT m.destination_id AS workflow_id, (to_jsonb(m) - 'message_id')::text AS row
FROM {s}.messages m WHERE m.destination_id = ANY ($1::text[]) ORDER BY m.message_id"""
EXPORT_MESSAGE_KEYS = """
SELECT k.destination_id AS workflow_id, to_jsonb(k)::text AS row FROM {s}.message_keys k
WHERE k.destination_id = ANY ($1::text[]) ORDER BY k.destination_id, k.idempotency_key"""

# Import: the workflow row ($1, JSON) unless its id exists; then its other rows ($1, a JSON
# array each), in one transaction.
# A NOT NULL column with a default that a migration adds must get its default here too, so that
# exports written before that migration still import.
IMPORT_WORKFLOW = """
INSERT INTO {s}.workflows
SELECT * FROM jsonb_populate_record(NULL::{s}.workflows, jsonb_build_object(
    'recovery_attempts', 0, 'priority', 0, 'epoch', 0, 'created_at', clock_timestamp(),
    'updated_at', clock_timestamp(), 'run', 1, 'first_function_id', 0,
    'attributes', '{ }'::jsonb) || $1::jsonb)
ON CONFLICT (workflow_id) DO NOTHING
RETURNING workflow_id"""
IMPORT_OPERATIONS = """
INSERT INTO {s}.operations
SELECT * FROM jsonb_populate_recordset(NULL::{s}.operations, $1::jsonb)"""
IMPORT_EVENTS = """
INSERT INTO {s}.events SELECT * FROM jsonb_populate_recordset(NULL::{s}.events, $1::jsonb)"""
IMPORT_STREAM_HEADS = """
INSERT INTO {s}.stream_heads
SELECT * FROM jsonb_populate_recordset(NULL::{s}.stream_heads, $1::jsonb)"""
IMPORT_STREAMS = """
INSERT INTO {s}.streams SELECT * FROM jsonb_populate_recordset(NULL::{s}.streams, $1::jsonb)"""
IMPORT_MESSAGES = """
INSERT INTO {s}.messages (destination_id, topic, message, created_at)
SELECT r.destination_id, r.topic, r.message, coalesce(r.created_at, clock_timestamp())
FROM jsonb_populate_recordset(NULL::{s}.messages, $1::jsonb) WITH ORDINALITY AS r
ORDER BY r.ordinality"""
IMPORT_MESSAGE_KEYS = """
INSERT INTO {s}.message_keys
SELECT * FROM jsonb_populate_recordset(NULL::{s}.message_keys, $1::jsonb)"""
# Wake the recovery supervisors (an unassigned PENDING workflow $2 arrived), or the dispatchers
# of queue $2 (a queued workflow arrived).
NOTIFY_UNASSIGNED = "SELECT pg_notify($1, 'r' || $2)"
NOTIFY_QUEUE = "SELECT pg_notify($1, 'q' || $2)"

FORK_SOURCE = """
SELECT name, inputs, app_version, queue_name, priority, partition_key,
       dispatched_at IS NOT NULL AS dispatched, status = 'CONTINUED_AS_NEW' AS continued,
       (SELECT max(function_id) FROM {s}.operations WHERE workflow_id = $1) AS last_function_id
FROM {s}.workflows WHERE workflow_id = $1"""

# The fork of a queued workflow waits in the source's queue ($3, with its priority $4 and
# partition $5; no deduplication id, which the source may still hold): ENQUEUED, its queue's
# dispatchers notified at commit. dispatched_at is set when the source was dispatched ($9): the
# claim then sees a workflow with a journal (not fresh), loaded when it runs, by an app of its
# version. A source that never ran has no journal (nor a version, enqueued by a Client): its
# fork is fresh, like a new enqueue, and any app serving the queue runs it.
FORK_ENQUEUE = """
WITH ins AS (
    INSERT INTO {s}.workflows
        (workflow_id, name, status, inputs, app_version, queue_name, priority, partition_key,
         dispatched_at)
    VALUES ($1, $2, 'ENQUEUED', $6, $7, $3, $4, $5, CASE WHEN $9 THEN clock_timestamp() END)
    ON CONFLICT DO NOTHING
    RETURNING queue_name
)
SELECT (SELECT count(*) FROM ins) AS created,
       (SELECT pg_notify($8, 'q' || queue_name) FROM ins) AS notified"""

# Copy what workflow $1 recorded before function id $3 into the new workflow $2 (inserted just
# before, in the same transaction), and wake the supervisors (channel $4):
# - journal entries with function ids below $3;
# - events whose latest value was written by one of those operations: the same database
#   transaction wrote both (a workflow's set_event is one statement with its journal entry; a
#   step's staged set_event commits with its checkpoint), so the row versions share their xmin;
# - stream entries whose writer (function id) is below $3, renumbered from offset 0;
# - a stream's closed flag, when an operation before $3 closed it (by the same xmin rule: the
#   head row is not touched again once closed);
# - the function id the source's run starts at (a run after a continue_as_new numbers its
#   operations on from the run before) and the source's attributes.
FORK_COPY = """
WITH run AS (
    UPDATE {s}.workflows w
    SET first_function_id = src.first_function_id, attributes = src.attributes
    FROM {s}.workflows src
    WHERE w.workflow_id = $2 AND src.workflow_id = $1
    RETURNING 1
), ops AS (
    INSERT INTO {s}.operations
        (workflow_id, function_id, name, output, error, child_id, completed, deadline,
         created_at, topic)
    SELECT $2, function_id, name, output, error, child_id, completed, deadline, created_at,
           topic
    FROM {s}.operations WHERE workflow_id = $1 AND function_id < $3
    RETURNING 1
), before AS (
    SELECT xmin::text AS x FROM {s}.operations WHERE workflow_id = $1 AND function_id < $3
), ev AS (
    INSERT INTO {s}.events (workflow_id, key, value, updated_at, version)
    SELECT $2, key, value, updated_at, version FROM {s}.events
    WHERE workflow_id = $1 AND xmin::text IN (SELECT x FROM before)
    RETURNING 1
), entries AS (
    SELECT key, value, writer_fid, writer_seq, created_at,
           row_number() OVER (PARTITION BY key ORDER BY "offset") - 1 AS pos
    FROM {s}.streams WHERE workflow_id = $1 AND writer_fid < $3
), heads AS (
    SELECT h.key, h.closed AND h.xmin::text IN (SELECT x FROM before) AS closed
    FROM {s}.stream_heads h WHERE h.workflow_id = $1
), new_heads AS (
    INSERT INTO {s}.stream_heads (workflow_id, key, next_offset, closed)
    SELECT $2, h.key, (SELECT count(*) FROM entries e WHERE e.key = h.key), h.closed
    FROM heads h
    WHERE h.closed OR h.key IN (SELECT key FROM entries)
    RETURNING 1
), new_entries AS (
    INSERT INTO {s}.streams (workflow_id, key, "offset", value, writer_fid, writer_seq,
                             created_at)
    SELECT $2, key, pos, value, writer_fid, writer_seq, created_at FROM entries
    RETURNING 1
)
SELECT (SELECT count(*) FROM ops) AS operations, (SELECT count(*) FROM ev) AS events,
       (SELECT count(*) FROM new_entries) AS entries, (SELECT count(*) FROM run) AS run,
       pg_notify($4, 'r' || $2) AS notified"""

# ---------------------------------------------------------------------------------------------
# Endless workflows (continue_as_new) and workflow attributes
# ---------------------------------------------------------------------------------------------

# Continue workflow $1 as a new run, in one statement fenced like every write of an execution
# (PENDING at the execution's epoch $4, here under an update lock): with $5 (keep the run) the
# current run becomes a linked row $6 (status CONTINUED_AS_NEW, ``run_of`` $1, its inputs and
# attributes, the continue's entry #$2 with the new inputs, and its whole journal, moved);
# without, its journal is deleted. The row $1 then holds the new run: inputs $3, an empty
# journal whose function ids start at $2 + 1, the next run number and a bumped epoch (the new
# run's execution owns that epoch; a stale one is fenced out). Messages, events and streams
# stay with the workflow id. The kept run has no parent (it is linked by ``run_of``), so
# retention never keeps it for a parent still running. Returns the new epoch (no row: refused,
# not owned).
CONTINUE_AS_NEW = """
WITH cur AS (
    SELECT * FROM {s}.workflows
    WHERE workflow_id = $1 AND status = 'PENDING' AND epoch = $4
    FOR UPDATE
), arch AS (
    INSERT INTO {s}.workflows
        (workflow_id, name, status, inputs, output, executor_id, app_version,
         recovery_attempts, parent_workflow_id, created_at, updated_at, completed_at,
         traceparent, epoch, run, first_function_id, run_of, attributes)
    SELECT $6, name, 'CONTINUED_AS_NEW', inputs, $3, executor_id, app_version,
           recovery_attempts, NULL, clock_timestamp(), clock_timestamp(),
           clock_timestamp(), traceparent, epoch, run, first_function_id, workflow_id,
           attributes
    FROM cur WHERE $5
    ON CONFLICT (workflow_id) DO NOTHING
    RETURNING workflow_id
), entry AS (
    INSERT INTO {s}.operations (workflow_id, function_id, name, output)
    SELECT workflow_id, $2, 'asyncflow.continue_as_new', $3 FROM arch
), moved AS (
    UPDATE {s}.operations SET workflow_id = $6
    WHERE workflow_id = $1 AND EXISTS (SELECT 1 FROM arch)
), dropped AS (
    DELETE FROM {s}.operations
    WHERE workflow_id = $1 AND NOT $5 AND EXISTS (SELECT 1 FROM cur)
), u AS (
    UPDATE {s}.workflows w
    SET inputs = $3, epoch = w.epoch + 1, run = w.run + 1, first_function_id = $2 + 1,
        recovery_attempts = 0, updated_at = clock_timestamp()
    FROM cur
    WHERE w.workflow_id = cur.workflow_id AND (NOT $5 OR EXISTS (SELECT 1 FROM arch))
    RETURNING w.epoch
)
SELECT (SELECT epoch FROM u) AS epoch, EXISTS (SELECT 1 FROM cur) AS owned"""

# The earlier runs kept of workflow $1, newest first.
LIST_RUNS = "SELECT " + _STATUS_COLUMNS + """
FROM {s}.workflows w WHERE w.run_of = $1 ORDER BY w.run DESC"""

# Attributes: $2 (a JSON object) merged into (or, without $3, replacing) those of workflow $1.
# From a workflow's body the write is journaled (entry #$4, its output the attributes set) and
# fenced by the execution's epoch $5, in one statement.
SET_ATTRIBUTES = """
UPDATE {s}.workflows
SET attributes = CASE WHEN $3 THEN attributes || $2::jsonb ELSE $2::jsonb END,
    updated_at = clock_timestamp()
WHERE workflow_id = $1
RETURNING attributes::text"""

JOURNALED_SET_ATTRIBUTES = """
WITH op AS (
    INSERT INTO {s}.operations (workflow_id, function_id, name, output)
    SELECT $1, $4, 'asyncflow.set_attributes', $2 FROM """ + _owned("$5") + """
    RETURNING workflow_id
), u AS (
    UPDATE {s}.workflows
    SET attributes = CASE WHEN $3 THEN attributes || $2::jsonb ELSE $2::jsonb END,
        updated_at = clock_timestamp()
    WHERE workflow_id = (SELECT workflow_id FROM op)
    RETURNING 1
)
SELECT count(*) AS recorded FROM u"""

WORKFLOW_ATTRIBUTES = "SELECT attributes::text FROM {s}.workflows WHERE workflow_id = $1"

# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------

# Sends from outside a workflow also return whether the message was stored (`inserted`: not
# with an idempotency key sent before) and the destination's status (NULL: no such workflow), so
# that send can say what became of it (asyncflow.Delivery).
SEND_MESSAGE = """
WITH ins AS (
    INSERT INTO {s}.messages (destination_id, topic, message, traceparent)
    VALUES ($1, $2, $3, $5)
    RETURNING destination_id
)
SELECT pg_notify($4, 'm' || destination_id)::text AS notified, true AS inserted,
       (SELECT status FROM {s}.workflows WHERE workflow_id = $1) AS status
FROM ins"""

SEND_MESSAGE_ONCE = """
WITH k AS (
    INSERT INTO {s}.message_keys (destination_id, idempotency_key) VALUES ($1, $5)
    ON CONFLICT DO NOTHING
    RETURNING destination_id
), ins AS (
    INSERT INTO {s}.messages (destination_id, topic, message, traceparent)
    SELECT destination_id, $2, $3, $6 FROM k
    RETURNING destination_id
)
SELECT (SELECT pg_notify($4, 'm' || destination_id) FROM ins)::text AS notified,
       EXISTS (SELECT 1 FROM ins) AS inserted,
       (SELECT status FROM {s}.workflows WHERE workflow_id = $1) AS status"""

# The oldest message of mailbox ($1, topic), locked; and its deletion once the journal took it.
_MAILBOX_HEAD = """
WITH m AS (
    SELECT message_id, message, traceparent FROM {s}.messages
    WHERE destination_id = $1 AND %TOPIC%
    ORDER BY message_id LIMIT 1
    FOR UPDATE SKIP LOCKED
)"""
_TAKE_MESSAGE = """, d AS (
    DELETE FROM {s}.messages
    WHERE message_id = (SELECT message_id FROM m) AND EXISTS (SELECT 1 FROM op)
    RETURNING 1
)
SELECT (SELECT message FROM m) AS message,
       (SELECT traceparent FROM m) AS traceparent,
       (SELECT count(*) FROM d) AS consumed,"""

# A later attempt of recv #$3: complete its open journal entry with the message, if any.
_RECV = _MAILBOX_HEAD + """, op AS (
    UPDATE {s}.operations SET output = %OUTPUT%, completed = true
    WHERE workflow_id = $1 AND function_id = $3 AND NOT completed
      AND EXISTS (SELECT 1 FROM m)
      AND EXISTS (SELECT 1 FROM """ + _OWNED + """)
    RETURNING 1
)""" + _TAKE_MESSAGE + """
       (SELECT status FROM {s}.workflows WHERE workflow_id = $1) AS status,
       (SELECT epoch FROM {s}.workflows WHERE workflow_id = $1) AS epoch"""

_TOPIC = "topic = $2"
_NO_TOPIC = "topic IS NULL AND $2::text IS NULL"
_MESSAGE = "(SELECT message FROM m)"
_RECV_NEXT = _RECV.replace("%EPOCH%", "$4").replace("%OUTPUT%", _MESSAGE)
RECV_TOPIC = _RECV_NEXT.replace("%TOPIC%", _TOPIC)
RECV_NO_TOPIC = _RECV_NEXT.replace("%TOPIC%", _NO_TOPIC)
# wait_first's message branch: the same, but the journal records {"index": $4, "value": message}.
_BRANCH = """'{"index":' || $4::int || ',"value":' || (SELECT message FROM m) || '}'"""
_TAKE_BRANCH = _RECV.replace("%EPOCH%", "$5").replace("%OUTPUT%", _BRANCH)
TAKE_BRANCH_MESSAGE_TOPIC = _TAKE_BRANCH.replace("%TOPIC%", _TOPIC)
TAKE_BRANCH_MESSAGE_NO_TOPIC = _TAKE_BRANCH.replace("%TOPIC%", _NO_TOPIC)

# An open wait's journal entry (no value taken yet) commits asynchronously: nothing was returned
# to anyone, so there is nothing to lose but the entry itself, and the next synchronous commit of
# any session (the send that will end the wait, typically) flushes it with its own WAL, one flush
# instead of two. Only a crash of the server itself within the WAL writer's delay (about 0.6 s)
# can lose it; the wait is then journaled again, with a deadline counted from then. A value taken
# at once commits as the session says (synchronously by default).
_OPEN_WAIT_COMMIT = """set_config('synchronous_commit', CASE WHEN %TAKEN% THEN
           current_setting('synchronous_commit') ELSE 'off' END, true) AS commit_mode"""

# The first attempt of a recv: journal it (deadline $4) and take a waiting message, if any, in
# one statement. A message taken is the recv's recorded output; otherwise the entry stays open.
_RECV_FIRST = _MAILBOX_HEAD + """, op AS (
    INSERT INTO {s}.operations
        (workflow_id, function_id, name, output, completed, deadline, topic)
    SELECT $1, $3, 'asyncflow.recv', (SELECT message FROM m), EXISTS (SELECT 1 FROM m), $4,
           $2
    FROM """ + _owned("$5") + """
    RETURNING 1
)""" + _TAKE_MESSAGE + """
       (SELECT count(*) FROM op) AS recorded,
       """ + _OPEN_WAIT_COMMIT.replace("%TAKEN%", "EXISTS (SELECT 1 FROM m)")

RECV_FIRST_TOPIC = _RECV_FIRST.replace("%TOPIC%", "topic = $2")
RECV_FIRST_NO_TOPIC = _RECV_FIRST.replace("%TOPIC%", "topic IS NULL AND $2::text IS NULL")

# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------

SET_EVENT = """
WITH u AS (
    INSERT INTO {s}.events (workflow_id, key, value) VALUES ($1, $2, $3)
    ON CONFLICT (workflow_id, key)
    DO UPDATE SET value = excluded.value, updated_at = clock_timestamp(),
                  version = {s}.events.version + 1
    RETURNING workflow_id
)
SELECT pg_notify($4, 'e' || workflow_id) FROM u"""

# $3 is the id of the workflow doing the waiting (NULL outside a workflow), to notice its cancel.
GET_EVENT = """
SELECT EXISTS (SELECT 1 FROM {s}.workflows WHERE workflow_id = $1) AS found,
       (SELECT value FROM {s}.events WHERE workflow_id = $1 AND key = $2) AS value,
       (SELECT status FROM {s}.workflows WHERE workflow_id = $3) AS waiter_status"""

# The first attempt of a get_event inside workflow $1 (function id $4, deadline $5): journal it,
# completed with the value if the event ($2, $3) is already set.
GET_EVENT_FIRST = """
WITH v AS (
    SELECT value FROM {s}.events WHERE workflow_id = $2 AND key = $3
), op AS (
    INSERT INTO {s}.operations (workflow_id, function_id, name, output, completed, deadline)
    SELECT $1, $4, 'asyncflow.get_event', (SELECT value FROM v), EXISTS (SELECT 1 FROM v), $5
    FROM """ + _owned("$6") + """
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM {s}.workflows WHERE workflow_id = $2) AS found,
       (SELECT value FROM v) AS value,
       (SELECT count(*) FROM op) AS recorded,
       """ + _OPEN_WAIT_COMMIT.replace("%TAKEN%", "EXISTS (SELECT 1 FROM v)")

# A watcher's snapshot: the workflow's status and the event's value and version.
WATCH_EVENT = """
SELECT w.status, e.value, e.version
FROM {s}.workflows w
LEFT JOIN {s}.events e ON e.workflow_id = w.workflow_id AND e.key = $2
WHERE w.workflow_id = $1"""

GET_ALL_EVENTS = """
SELECT key, value FROM {s}.events WHERE workflow_id = $1 ORDER BY key"""

WORKFLOW_EXISTS = "SELECT EXISTS (SELECT 1 FROM {s}.workflows WHERE workflow_id = $1)"

# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------

# A write is keyed by its writer (function id, sequence number within that function's run), so a
# retried or replayed step overwrites the value it wrote before instead of appending it again.
# Offsets come from the stream head row, whose lock serializes concurrent writers.
WRITE_STREAM = """
WITH existing AS (
    SELECT "offset" FROM {s}.streams
    WHERE workflow_id = $1 AND key = $2 AND writer_fid = $4 AND writer_seq = $5
), upd AS (
    UPDATE {s}.streams SET value = $3
    WHERE workflow_id = $1 AND key = $2 AND "offset" = (SELECT "offset" FROM existing)
    RETURNING "offset"
)""" + _STREAM_APPEND.replace(
    "%HEAD%", "$1, $2, 1 WHERE NOT EXISTS (SELECT 1 FROM existing)"
).replace("%ROW%", '$1, $2, "offset", $3, $4, $5') + """\
SELECT coalesce((SELECT "offset" FROM ins), (SELECT "offset" FROM upd)) AS "offset",
       pg_notify($6, 's' || $1)"""

CLOSE_STREAM = """
WITH h AS (
    INSERT INTO {s}.stream_heads (workflow_id, key, next_offset, closed) VALUES ($1, $2, 0, true)
    ON CONFLICT (workflow_id, key) DO UPDATE SET closed = true
    RETURNING workflow_id
)
SELECT pg_notify($3, 's' || workflow_id) FROM h"""

# One snapshot: the writer's status, whether the stream is closed, and the next rows.
READ_STREAM = """
SELECT w.status, coalesce(h.closed, false) AS closed, r."offset", r.value
FROM {s}.workflows w
LEFT JOIN {s}.stream_heads h ON h.workflow_id = w.workflow_id AND h.key = $2
LEFT JOIN LATERAL (
    SELECT "offset", value FROM {s}.streams
    WHERE workflow_id = $1 AND key = $2 AND "offset" >= $3
    ORDER BY "offset" LIMIT $4
) r ON true
WHERE w.workflow_id = $1
ORDER BY r."offset"
"""

# ---------------------------------------------------------------------------------------------
# Queues
# ---------------------------------------------------------------------------------------------

# Enqueue: the workflow row, ENQUEUED (DELAYED while $9 seconds of delay run), and a NOTIFY to
# the queue's dispatchers, in one statement. Nothing is inserted when the id exists or the
# deduplication id is held by an active workflow of the queue (any unique index: no conflict
# target); the row then says which. Neither found (a concurrent insert committed after this
# statement's snapshot): the caller runs it again. Enqueued from a workflow ($5, the parent; $14,
# its execution's epoch), the child is inserted only while that execution still owns the parent,
# as a started child is (INSERT_WORKFLOW): a cancelled or taken-over parent starts nothing.
ENQUEUE_WORKFLOW = """
WITH t AS (
    SELECT clock_timestamp() AS ts
), owner AS (
    SELECT $14::bigint IS NULL OR EXISTS (
        SELECT 1 FROM {s}.workflows p
        WHERE p.workflow_id = $5 AND p.status = 'PENDING' AND p.epoch = $14 FOR SHARE) AS owned
), ins AS (
    INSERT INTO {s}.workflows
        (workflow_id, name, status, inputs, app_version, parent_workflow_id, queue_name,
         priority, deduplication_id, partition_key, delay_until, created_at, updated_at,
         traceparent, timeout_seconds)
    SELECT $1, $2, CASE WHEN $9::float8 > 0 THEN 'DELAYED' ELSE 'ENQUEUED' END, $3, $4, $5, $6,
           $7, $8, $10, CASE WHEN $9::float8 > 0 THEN t.ts + make_interval(secs => $9) END,
           t.ts, t.ts, $12, $13
    FROM t, owner WHERE owner.owned
    ON CONFLICT DO NOTHING
    RETURNING queue_name
), n AS (
    SELECT pg_notify($11, 'q' || queue_name) FROM ins
)
SELECT (SELECT count(*) FROM n) AS created, (SELECT owned FROM owner) AS owned,
       (SELECT name FROM {s}.workflows WHERE workflow_id = $1) AS existing_name,
       (SELECT workflow_id FROM {s}.workflows
        WHERE queue_name = $6 AND deduplication_id = $8
          AND status IN ('ENQUEUED', 'DELAYED', 'PENDING')) AS holder"""

# A debounce call ($1 queue, $2 workflow name, $3 key): the burst's DELAYED workflow takes the
# new inputs ($5) and its time moves to $6 seconds from now, or at the latest $7 seconds after
# the burst's first call (its created_at; NULL: no cap); a row already due is released instead
# (ENQUEUED: its quiet period passed, it runs with the inputs it has) and its queue notified, and
# the caller runs the statement again. With no such row, a new one ($4, app version $8,
# traceparent $9, timeout $10) is inserted DELAYED and the queue notified ($11: the channel). Two
# callers inserting at once: the unique index lets one in, the other inserts nothing (none of
# the three ids is returned) and runs the statement again, which then finds the row. A claim
# holding the row (FOR NO KEY UPDATE) makes the UPDATE wait; once committed the row is PENDING
# and no longer matches, so the call starts the next burst's workflow.
DEBOUNCE = """
WITH t AS (
    SELECT clock_timestamp() AS ts
), upd AS (
    UPDATE {s}.workflows w
    SET status = CASE WHEN w.delay_until > t.ts THEN 'DELAYED' ELSE 'ENQUEUED' END,
        inputs = CASE WHEN w.delay_until > t.ts THEN $5 ELSE w.inputs END,
        delay_until = CASE WHEN w.delay_until > t.ts
                           THEN least(t.ts + make_interval(secs => $6),
                                      w.created_at + make_interval(secs => $7))
                           ELSE w.delay_until END,
        updated_at = t.ts
    FROM t
    WHERE w.queue_name = $1 AND w.name = $2 AND w.debounce_key = $3 AND w.status = 'DELAYED'
    RETURNING w.workflow_id, w.status
), ins AS (
    INSERT INTO {s}.workflows
        (workflow_id, name, status, inputs, app_version, queue_name, debounce_key, delay_until,
         created_at, updated_at, traceparent, timeout_seconds)
    SELECT $4, $2, 'DELAYED', $5, $8, $1, $3,
           least(t.ts + make_interval(secs => $6), t.ts + make_interval(secs => $7)),
           t.ts, t.ts, $9, $10
    FROM t
    WHERE NOT EXISTS (SELECT 1 FROM upd)
    ON CONFLICT DO NOTHING
    RETURNING workflow_id
), n AS (
    SELECT pg_notify($11, 'q' || $1)
    WHERE EXISTS (SELECT 1 FROM ins) OR EXISTS (SELECT 1 FROM upd WHERE status = 'ENQUEUED')
)
SELECT (SELECT workflow_id FROM upd WHERE status = 'DELAYED') AS extended,
       (SELECT workflow_id FROM upd WHERE status = 'ENQUEUED') AS released,
       (SELECT workflow_id FROM ins) AS created,
       (SELECT count(*) FROM n) AS notified"""

# A queued workflow's delay changed ($1; $2 seconds from now, or until $3 when not NULL): an
# ENQUEUED or DELAYED one becomes DELAYED until then (ENQUEUED if that time has come), and its
# queue's dispatchers are notified ($4: the channel) so they move their timers. A workflow
# claimed meanwhile (PENDING) is left alone; the caller reads its status to say why.
SET_WORKFLOW_DELAY = """
WITH t AS (
    SELECT clock_timestamp() AS ts
), until AS (
    SELECT coalesce($3::timestamptz, t.ts + make_interval(secs => $2)) AS at, t.ts FROM t
), u AS (
    UPDATE {s}.workflows w
    SET status = CASE WHEN until.at > until.ts THEN 'DELAYED' ELSE 'ENQUEUED' END,
        delay_until = until.at, updated_at = until.ts
    FROM until
    WHERE w.workflow_id = $1 AND w.status IN ('ENQUEUED', 'DELAYED')
    RETURNING w.queue_name, w.delay_until, w.status
), n AS (
    SELECT pg_notify($4, 'q' || queue_name) FROM u
)
SELECT u.queue_name, u.delay_until, u.status, (SELECT count(*) FROM n) AS notified FROM u"""

# How many workflows wait in queue $1 (telemetry's queue depth; the partial index of queued rows).
QUEUE_DEPTH = """
SELECT count(*) FROM {s}.workflows
WHERE queue_name = $1 AND status IN ('ENQUEUED', 'DELAYED')"""

# The claim, one round trip: migration 15's function (its first statement locks the queue's row
# -- created on first use -- so every claim of the queue waits for the one before to commit;
# its claim statement then counts everything claimed before it). $1 queue, $2 executor, $3 workflow
# names this executor runs, $4 its app version, $5 concurrency, $6 worker concurrency,
# $7/$8 rate limit (count per seconds), $9 partition concurrency (NULL: no limit), $10 batch,
# $11 the claimer's runtime clock (a claimed workflow's timeout starts now, unless it had a
# deadline already), $12 the channel ('d': a deadline was set, for the deadline enforcers).
# How many may start: the least of the free slots (PENDING workflows of the queue, of this
# executor), the rate limit's room (starts recorded in the last $8 seconds) and the batch. The
# ready rows (ENQUEUED, or DELAYED and due) are taken in (priority, created_at) order, skipping
# full partitions, then at most the free slots of each partition. A row never dispatched runs on
# any app version (it has no journal yet: it is stamped with the claimer's); one that ran before
# only on its own version. Due DELAYED rows not taken become ENQUEUED; the starts are recorded.
# Returns the claimed rows (none: one row of NULLs) and, in every row, how many seconds until
# the next DELAYED row is due or the rate limit's window opens (NULL: nothing to wait for), how
# many ready rows were found and how many could start (found < room: no more ready rows).
CLAIM_QUEUED = """
SELECT * FROM {s}.claim_queued($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"""

# The supervisor's part in queues: PENDING queued workflows of dead executors (and, at launch,
# of this executor) go back to their queue, ENQUEUED with their journal, so they run again
# within the queue's limits; each queue is notified once. ($4: the liveness lock namespace; $5:
# dead executors' too, not only unassigned ones.)
REQUEUE_ORPHANS = _LIVE_EXECUTORS.replace("$5", "$4") + """, orphans AS (
    SELECT c.workflow_id FROM {s}.workflows c
    WHERE c.status = 'PENDING' AND c.queue_name IS NOT NULL
      AND (($2 AND c.executor_id = $1) OR c.executor_id IS NULL
           OR ($5 AND c.executor_id <> $1
               AND c.executor_id NOT IN (SELECT executor_id FROM live)))
    FOR NO KEY UPDATE OF c SKIP LOCKED
), u AS (
    UPDATE {s}.workflows w
    SET status = 'ENQUEUED', executor_id = NULL, recovery_attempts = w.recovery_attempts + 1,
        epoch = w.epoch + 1, updated_at = clock_timestamp()
    FROM orphans
    WHERE w.workflow_id = orphans.workflow_id
    RETURNING w.queue_name
), q AS (
    SELECT DISTINCT queue_name FROM u
)
SELECT queue_name, pg_notify($3, 'q' || queue_name) FROM q"""

# After a claim whose outcome was lost (the connection dropped around its COMMIT): this
# executor's PENDING workflows of the queue that are not running here ($3) go back to the queue.
RELEASE_UNSTARTED = """
WITH u AS (
    UPDATE {s}.workflows
    SET status = 'ENQUEUED', executor_id = NULL, epoch = epoch + 1,
        updated_at = clock_timestamp()
    WHERE queue_name = $1 AND status = 'PENDING' AND executor_id = $2
      AND workflow_id <> ALL ($3::text[])
    RETURNING workflow_id
)
SELECT count(*) AS released, CASE WHEN count(*) > 0 THEN pg_notify($4, 'q' || $1) END
FROM u"""

# ---------------------------------------------------------------------------------------------
# Group commit (_batch): one statement writes many operations of one kind, reports a result per
# operation, and wakes every woken key with as few NOTIFYs as fit: a batched payload is '*'
# followed by items kind || length(id) || ':' || id (ids only, never user data), split so that
# no payload passes 8000 bytes (ids are at most 1000 bytes).
# ---------------------------------------------------------------------------------------------

_NOTIFY_WOKEN = """, chunks AS (
    SELECT item, sum(octet_length(item)) OVER (ORDER BY item ROWS UNBOUNDED PRECEDING) / 6000
           AS chunk
    FROM (SELECT DISTINCT item FROM woken) d
), notified AS (
    SELECT pg_notify(%CHANNEL%, '*' || string_agg(item, '')) FROM chunks GROUP BY chunk
)
"""

FINISH_WORKFLOWS = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $6::bigint[])
        AS i(workflow_id, status, output, error, epoch)
), u AS (
    UPDATE {s}.workflows w
    SET status = i.status, output = i.output, error = i.error, updated_at = clock_timestamp(),
        completed_at = clock_timestamp()
    FROM input i
    WHERE w.workflow_id = i.workflow_id AND w.status = 'PENDING' AND w.epoch = i.epoch
    RETURNING w.workflow_id, w.queue_name
), woken AS (
    SELECT 't' || char_length(workflow_id) || ':' || workflow_id AS item FROM u
    UNION ALL  -- a queued workflow ended: a slot of its queue may be free
    SELECT 'f' || char_length(queue_name) || ':' || queue_name AS item FROM u
    WHERE queue_name IS NOT NULL
)""" + _NOTIFY_WOKEN.replace("%CHANNEL%", "$5") + """
SELECT u.workflow_id, (SELECT count(*) FROM notified) AS notifies FROM u"""

# Rows 'r' (recorded) and 'p' (workflows still PENDING, with their epoch, share-locked as in
# _OWNED); a PENDING workflow's entry at its epoch that was not recorded already existed (another
# execution recorded it).
RECORD_OPERATIONS = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bool[], $8::float8[], $9::bigint[])
        AS i(workflow_id, function_id, name, output, error, child_id, completed, deadline,
             epoch)
), pending AS (
    SELECT w.workflow_id, w.epoch FROM {s}.workflows w
    WHERE w.workflow_id = ANY ($1::text[]) AND w.status = 'PENDING'
    FOR SHARE
), ins AS (
    INSERT INTO {s}.operations
        (workflow_id, function_id, name, output, error, child_id, completed, deadline)
    SELECT i.workflow_id, i.function_id, i.name, i.output, i.error, i.child_id, i.completed,
           i.deadline
    FROM input i WHERE (i.workflow_id, i.epoch) IN (SELECT workflow_id, epoch FROM pending)
    ON CONFLICT (workflow_id, function_id) DO NOTHING
    RETURNING workflow_id, function_id
)
SELECT 'r' AS kind, workflow_id, function_id, NULL::bigint AS epoch FROM ins
UNION ALL
SELECT 'p', workflow_id, NULL, epoch FROM pending"""

SEND_MESSAGES = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
        WITH ORDINALITY AS i(destination_id, topic, message, idempotency_key, traceparent, ord)
), known AS (
    SELECT i.* FROM input i
    WHERE EXISTS (SELECT 1 FROM {s}.workflows w WHERE w.workflow_id = i.destination_id)
), k AS (
    INSERT INTO {s}.message_keys (destination_id, idempotency_key)
    SELECT DISTINCT destination_id, idempotency_key FROM known WHERE idempotency_key IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING destination_id, idempotency_key
), chosen AS (
    SELECT * FROM known WHERE idempotency_key IS NULL
    UNION ALL
    (SELECT DISTINCT ON (known.destination_id, known.idempotency_key) known.*
     FROM known JOIN k USING (destination_id, idempotency_key)
     ORDER BY known.destination_id, known.idempotency_key, known.ord)
), ins AS (
    INSERT INTO {s}.messages (destination_id, topic, message, traceparent)
    SELECT destination_id, topic, message, traceparent FROM chosen ORDER BY ord
    RETURNING destination_id
), woken AS (
    SELECT 'm' || char_length(destination_id) || ':' || destination_id AS item FROM ins
)""" + _NOTIFY_WOKEN.replace("%CHANNEL%", "$6") + """
SELECT i.ord, i.ord IN (SELECT ord FROM known) AS found,
       i.ord IN (SELECT ord FROM chosen) AS inserted,
       (SELECT w.status FROM {s}.workflows w WHERE w.workflow_id = i.destination_id) AS status,
       (SELECT count(*) FROM notified) AS notifies
FROM input i ORDER BY i.ord"""

# $7: the recorded StreamClosedError of each write, journaled with it if its stream is closed.
# Offsets come from each stream head as of the statement's snapshot plus the write's position
# in the batch. A concurrent writer to the same stream (another process) makes two rows claim
# one offset: the streams primary key refuses that, and the batch is written again one by one
# (each write then takes the head's row lock). Written: rows 'o' (journaled), 'w' (appended, with
# the offset) and 'p' (workflows still PENDING).
JOURNALED_WRITE_STREAMS = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $7::text[],
                         $8::bigint[])
        WITH ORDINALITY AS i(workflow_id, function_id, name, key, value, error, epoch, ord)
), pending AS (
    SELECT w.workflow_id, w.epoch FROM {s}.workflows w
    WHERE w.workflow_id = ANY ($1::text[]) AND w.status = 'PENDING'
    FOR SHARE
), op AS (
    INSERT INTO {s}.operations (workflow_id, function_id, name, error, output)
    SELECT i.workflow_id, i.function_id, i.name, CASE WHEN EXISTS (
        SELECT 1 FROM {s}.stream_heads h
        WHERE h.workflow_id = i.workflow_id AND h.key = i.key AND h.closed
    ) THEN i.error END, '{"key":' || to_json(i.key)::text || '}'
    FROM input i
    WHERE (i.workflow_id, i.epoch) IN (SELECT workflow_id, epoch FROM pending)
    ON CONFLICT (workflow_id, function_id) DO NOTHING
    RETURNING workflow_id, function_id, error
), ok AS (
    SELECT i.*,
           row_number() OVER (PARTITION BY i.workflow_id, i.key ORDER BY i.ord) AS pos,
           count(*) OVER (PARTITION BY i.workflow_id, i.key) AS n
    FROM input i
    WHERE (i.workflow_id, i.function_id) IN (
        SELECT workflow_id, function_id FROM op WHERE error IS NULL)
), cur AS (
    SELECT ok.*, coalesce(h.next_offset, 0) AS base, coalesce(h.closed, false) AS closed
    FROM ok LEFT JOIN {s}.stream_heads h ON h.workflow_id = ok.workflow_id AND h.key = ok.key
), head AS (
    INSERT INTO {s}.stream_heads AS h (workflow_id, key, next_offset)
    SELECT workflow_id, key, n FROM cur WHERE pos = 1 AND NOT closed
    ON CONFLICT (workflow_id, key)
    DO UPDATE SET next_offset = h.next_offset + excluded.next_offset
    WHERE NOT h.closed
    RETURNING workflow_id, key
), ins AS (
    INSERT INTO {s}.streams (workflow_id, key, "offset", value, writer_fid, writer_seq)
    SELECT workflow_id, key, base + pos - 1, value, function_id, 0 FROM cur
    WHERE (workflow_id, key) IN (SELECT workflow_id, key FROM head)
    RETURNING workflow_id, writer_fid, "offset"
), woken AS (
    SELECT 's' || char_length(workflow_id) || ':' || workflow_id AS item FROM ins
)""" + _NOTIFY_WOKEN.replace("%CHANNEL%", "$6") + """
SELECT 'o' AS kind, workflow_id, function_id, NULL::bigint AS "offset",
       error IS NOT NULL AS refused, (SELECT count(*) FROM notified) AS notifies,
       NULL::bigint AS epoch FROM op
UNION ALL
SELECT 'w', workflow_id, writer_fid, "offset", NULL, NULL, NULL FROM ins
UNION ALL
SELECT 'p', workflow_id, NULL, NULL, NULL, NULL, epoch FROM pending"""

# Many readers' next pages in one query: rows tagged with the reader's ordinal (a reader whose
# workflow does not exist gets one row with a NULL status).
READ_STREAMS = """
SELECT i.ord, w.status, coalesce(h.closed, false) AS closed, r."offset", r.value
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[]) WITH ORDINALITY
    AS i(workflow_id, key, start, lim, ord)
LEFT JOIN {s}.workflows w ON w.workflow_id = i.workflow_id
LEFT JOIN {s}.stream_heads h ON h.workflow_id = i.workflow_id AND h.key = i.key
LEFT JOIN LATERAL (
    SELECT s."offset", s.value FROM {s}.streams s
    WHERE s.workflow_id = i.workflow_id AND s.key = i.key AND s."offset" >= i.start
    ORDER BY s."offset" LIMIT i.lim
) r ON w.workflow_id IS NOT NULL
ORDER BY i.ord, r."offset\""""

# ---------------------------------------------------------------------------------------------
# Operating workflows (_admin, _cancel, _retention): filtered pages, cascading and bulk cancels,
# bulk resumes, deletes and retention. Every filtered statement shares parameters $1-$7:
# statuses ($1 text[], never NULL), created at or after $2 and before $3, name $4, app version
# $5, id prefix $6, parent $7 (NULL: any).
# ---------------------------------------------------------------------------------------------

_FILTERS = """%STATUS%
      AND w.created_at >= coalesce($2::timestamptz, '-infinity'::timestamptz)
      AND w.created_at < coalesce($3::timestamptz, 'infinity'::timestamptz)
      AND ($4::text IS NULL OR w.name = $4)
      AND ($5::text IS NULL OR w.app_version = $5)
      AND ($6::text IS NULL OR starts_with(w.workflow_id, $6))
      AND ($7::text IS NULL OR w.parent_workflow_id = $7)
      AND ($11::text IS NULL OR w.queue_name = $11)"""

# The page after the cursor ($8 created_at, $9 workflow_id) in the order created_at DESC,
# workflow_id: the first condition bounds the index scan, the second drops the cursor's ties.
_AFTER_CURSOR = """
      AND w.created_at <= coalesce($8::timestamptz, 'infinity'::timestamptz)
      AND ($8::timestamptz IS NULL OR w.created_at < $8 OR w.workflow_id > $9::text)"""

# One page ($10 rows), walking the (status, created_at DESC, workflow_id) index once per wanted
# status and merging: a rare status costs as little as a common one. (Ordering by the status,
# fixed in each walk, is what lets the planner see that the index gives the order.)
LIST_WORKFLOWS_PAGE = """
SELECT p.* FROM unnest($1::text[]) AS wanted(status)
CROSS JOIN LATERAL (
    SELECT """ + _STATUS_COLUMNS + """
    FROM {s}.workflows w
    WHERE """ + _FILTERS.replace("%STATUS%", "w.status = wanted.status") + _AFTER_CURSOR + """
    ORDER BY w.status, w.created_at DESC, w.workflow_id
    LIMIT $10
) p
ORDER BY p.created_at DESC, p.workflow_id
LIMIT $10"""

# The same with a parent given ($7): walks that parent's children.
LIST_CHILDREN_PAGE = """
SELECT """ + _STATUS_COLUMNS + """
FROM {s}.workflows w
WHERE w.parent_workflow_id = $7 AND """ + _FILTERS.replace(
    "%STATUS%", "w.status = ANY ($1::text[])") + _AFTER_CURSOR + """
ORDER BY w.created_at DESC, w.workflow_id
LIMIT $10"""

# The same with attributes given ($12, a JSON object the workflows' attributes contain): the
# GIN index on attributes finds the matching workflows (the repeated ``<> '{ }'`` is the
# partial index's predicate; the space keeps it from reading as a format placeholder), newest
# first after the cursor; the other filters are checked on each.
LIST_ATTRIBUTES_PAGE = """
SELECT """ + _STATUS_COLUMNS + """
FROM {s}.workflows w
WHERE w.attributes @> $12::jsonb AND w.attributes <> '{ }'::jsonb AND """ + _FILTERS.replace(
    "%STATUS%", "w.status = ANY ($1::text[])") + _AFTER_CURSOR + """
ORDER BY w.created_at DESC, w.workflow_id
LIMIT $10"""

# The same walking the attribute index: the workflows whose attribute $13 is $14 (a scalar),
# in list order after the cursor, each checked for the whole of $12 and the other filters.
# Every page costs the same however common the value is (the GIN path above sorts every match).
LIST_ATTRIBUTE_WALK_PAGE = """
SELECT """ + ", ".join("w." + column.strip() for column in _STATUS_COLUMNS.split(",")) + """
FROM {s}.workflow_attributes a JOIN {s}.workflows w ON w.workflow_id = a.workflow_id
WHERE a.key = $13 AND a.value = $14::jsonb
  AND a.created_at >= coalesce($2::timestamptz, '-infinity'::timestamptz)
  AND a.created_at < coalesce($3::timestamptz, 'infinity'::timestamptz)
  AND a.created_at <= coalesce($8::timestamptz, 'infinity'::timestamptz)
  AND ($8::timestamptz IS NULL OR a.created_at < $8 OR a.workflow_id > $9::text)
  AND w.attributes @> $12::jsonb AND """ + _FILTERS.replace(
    "%STATUS%", "w.status = ANY ($1::text[])") + """
ORDER BY a.created_at DESC, a.workflow_id
LIMIT $10"""

# Wakes the workflows of rows ``u`` (kind 't') and frees their queues' slots (kind 'f', for rows
# with a queue_name); the statement selects ``notifies``.
_NOTIFY_CANCELLED = """, woken AS (
    SELECT 't' || char_length(workflow_id) || ':' || workflow_id AS item FROM u
    UNION ALL
    SELECT 'f' || char_length(queue_name) || ':' || queue_name AS item FROM u
    WHERE queue_name IS NOT NULL
)""" + _NOTIFY_WOKEN

# Every PENDING descendant of the workflows $1 (any status themselves) is cancelled.
CANCEL_DESCENDANTS = """
WITH RECURSIVE tree AS (
    SELECT c.workflow_id FROM {s}.workflows c WHERE c.parent_workflow_id = ANY ($1::text[])
    UNION
    SELECT c.workflow_id FROM {s}.workflows c JOIN tree t ON c.parent_workflow_id = t.workflow_id
), u AS (
    UPDATE {s}.workflows w
    SET status = 'CANCELLED', updated_at = clock_timestamp(), completed_at = clock_timestamp()
    WHERE w.workflow_id IN (SELECT workflow_id FROM tree)
      AND w.status IN ('PENDING', 'ENQUEUED', 'DELAYED')
    RETURNING w.workflow_id, w.queue_name
)""" + _NOTIFY_CANCELLED.replace("%CHANNEL%", "$2") + """
SELECT u.workflow_id, (SELECT count(*) FROM notified) AS notifies FROM u"""

# Up to $9 PENDING workflows matching the filters and created at or before $8, oldest first.
# The rows are locked in that order (waiting for a claim or a finish in flight); a row that is
# no longer PENDING once locked is left out.
CANCEL_MATCHING = """
WITH c AS (
    SELECT w.workflow_id FROM {s}.workflows w
    WHERE """ + _FILTERS.replace("%STATUS%", "w.status = ANY ($1::text[])") + """
      AND w.created_at <= $8
    ORDER BY w.created_at, w.workflow_id
    LIMIT $9
    FOR NO KEY UPDATE OF w
), u AS (
    UPDATE {s}.workflows w
    SET status = 'CANCELLED', updated_at = clock_timestamp(), completed_at = clock_timestamp()
    FROM c WHERE w.workflow_id = c.workflow_id AND w.status IN ('PENDING', 'ENQUEUED', 'DELAYED')
    RETURNING w.workflow_id, w.queue_name
)""" + _NOTIFY_CANCELLED.replace("%CHANNEL%", "$10") + """
SELECT u.workflow_id, (SELECT count(*) FROM notified) AS notifies FROM u"""

# A queued workflow whose deduplication id another workflow of its queue holds (ENQUEUED,
# DELAYED or PENDING) cannot be resumed (it would hold the id twice): %W% is the candidate.
_DEDUPLICATION_HELD = """EXISTS (
          SELECT 1 FROM {s}.workflows h
          WHERE h.queue_name = %W%.queue_name AND h.deduplication_id = %W%.deduplication_id
            AND h.status IN ('ENQUEUED', 'DELAYED', 'PENDING'))"""

# Up to $9 finished-but-not-successful workflows matching the filters that ended before $8 are
# made PENDING and unassigned (kind 'r' wakes the supervisors, which claim them). Left out: a
# queued workflow whose deduplication id is held (RESUME_CONFLICTS reports them), and of those
# in this batch sharing a deduplication id, all but the first (the next batch finds it held).
RESUME_MATCHING = """
WITH c AS (
    SELECT w.workflow_id, w.queue_name, w.deduplication_id, w.created_at FROM {s}.workflows w
    WHERE """ + _FILTERS.replace("%STATUS%", "w.status = ANY ($1::text[])") + """
      AND w.updated_at < $8
      AND NOT (w.deduplication_id IS NOT NULL AND w.queue_name IS NOT NULL
               AND """ + _DEDUPLICATION_HELD.replace("%W%", "w") + """)
    ORDER BY w.created_at, w.workflow_id
    LIMIT $9
    FOR NO KEY UPDATE OF w
), pick AS (
    SELECT workflow_id FROM (
        SELECT workflow_id, deduplication_id, row_number() OVER (
            PARTITION BY queue_name, deduplication_id ORDER BY created_at, workflow_id) AS nth
        FROM c) r
    WHERE r.deduplication_id IS NULL OR r.nth = 1
), u AS (
    UPDATE {s}.workflows w
    SET status = CASE WHEN w.queue_name IS NULL THEN 'PENDING' ELSE 'ENQUEUED' END,
        executor_id = NULL, recovery_attempts = 0, output = NULL, error = NULL,
        timeout_seconds = NULL, deadline = NULL, completed_at = NULL,
        updated_at = clock_timestamp(), epoch = w.epoch + 1
    FROM pick WHERE w.workflow_id = pick.workflow_id
      AND w.status IN ('CANCELLED', 'ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
    RETURNING w.workflow_id, w.queue_name
), woken AS (
    SELECT 'r' || char_length(workflow_id) || ':' || workflow_id AS item FROM u
    WHERE queue_name IS NULL
    UNION ALL
    SELECT 'q' || char_length(queue_name) || ':' || queue_name AS item FROM u
    WHERE queue_name IS NOT NULL
)""" + _NOTIFY_WOKEN.replace("%CHANNEL%", "$10") + """
SELECT u.workflow_id, (SELECT count(*) FROM notified) AS notifies FROM u"""

# The workflows a bulk resume (same parameters $1-$8, the queue as $9) left out because another
# workflow of their queue holds their deduplication id: each with a holder.
RESUME_CONFLICTS = """
SELECT w.workflow_id, w.deduplication_id, (
    SELECT h.workflow_id FROM {s}.workflows h
    WHERE h.queue_name = w.queue_name AND h.deduplication_id = w.deduplication_id
      AND h.status IN ('ENQUEUED', 'DELAYED', 'PENDING') LIMIT 1) AS holder
FROM {s}.workflows w
WHERE """ + _FILTERS.replace("%STATUS%", "w.status = ANY ($1::text[])").replace("$11", "$9") + """
  AND w.updated_at < $8 AND w.deduplication_id IS NOT NULL AND w.queue_name IS NOT NULL
  AND """ + _DEDUPLICATION_HELD.replace("%W%", "w") + """
ORDER BY w.created_at, w.workflow_id"""

# ---------------------------------------------------------------------------------------------
# Workflow deadlines (_deadlines): enforced by every live app's deadline watcher; one guarded
# UPDATE per batch, so exactly one enforcer cancels each workflow.
# ---------------------------------------------------------------------------------------------

# The nearest deadline of a workflow not ended yet (NULL: none).
NEXT_DEADLINE = """
SELECT min(deadline) FROM {s}.workflows
WHERE deadline IS NOT NULL AND status IN ('PENDING', 'ENQUEUED', 'DELAYED')"""

# Up to $2 workflows whose deadline passed by $1 (the enforcer's runtime clock) are cancelled
# with a recorded WorkflowTimeoutError (the v2 record of asyncflow._recorded), and their waiters
# and queues notified. The UPDATE re-checks the status once it holds a row's lock: a workflow
# that finished (or was cancelled by another enforcer) meanwhile is left alone.
ENFORCE_DEADLINES = """
WITH due AS (
    SELECT workflow_id,
           'workflow ' || quote_literal(workflow_id) || ' timed out after '
           || coalesce(timeout_seconds::text, '?') || ' seconds and was cancelled' AS message
    FROM {s}.workflows
    WHERE deadline IS NOT NULL AND deadline <= $1
      AND status IN ('PENDING', 'ENQUEUED', 'DELAYED')
    ORDER BY deadline
    LIMIT $2
), u AS (
    UPDATE {s}.workflows w
    SET status = 'CANCELLED', updated_at = clock_timestamp(), completed_at = clock_timestamp(),
        error = jsonb_build_object(
            'v', 2, 'module', 'asyncflow', 'type', 'WorkflowTimeoutError',
            'message', due.message, 'args', jsonb_build_array(due.message),
            'attrs', jsonb_build_object(), 'traceback', '')::text
    FROM due
    WHERE w.workflow_id = due.workflow_id AND w.deadline <= $1
      AND w.status IN ('PENDING', 'ENQUEUED', 'DELAYED')
    RETURNING w.workflow_id, w.queue_name
)""" + _NOTIFY_CANCELLED.replace("%CHANNEL%", "$3") + """
SELECT u.workflow_id, u.queue_name, (SELECT count(*) FROM notified) AS notifies FROM u"""

# A queued workflow enqueued without a timeout whose registered workflow has a default one: its
# deadline is set when it is dispatched (by the dispatcher, after its claim).
SET_DEADLINE = """
WITH u AS (
    UPDATE {s}.workflows SET timeout_seconds = $2, deadline = $3
    WHERE workflow_id = $1 AND deadline IS NULL AND status = 'PENDING' AND epoch = $5
    RETURNING workflow_id
)
SELECT count(*) AS updated, CASE WHEN count(*) > 0 THEN pg_notify($4, 'd') END FROM u"""

# ---------------------------------------------------------------------------------------------
# Schedules (_schedules)
# ---------------------------------------------------------------------------------------------

# Register a schedule (at launch): created unpaused, or its definition updated (its paused flag
# and last tick are kept).
UPSERT_SCHEDULE = """
INSERT INTO {s}.schedules (schedule_name, workflow_name, cron, timezone, catch_up, queue_name)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (schedule_name) DO UPDATE
SET workflow_name = excluded.workflow_name, cron = excluded.cron, timezone = excluded.timezone,
    catch_up = excluded.catch_up, queue_name = excluded.queue_name
WHERE (schedules.workflow_name, schedules.cron, schedules.timezone, schedules.catch_up,
       schedules.queue_name)
      IS DISTINCT FROM (excluded.workflow_name, excluded.cron, excluded.timezone,
                        excluded.catch_up, excluded.queue_name)"""

_SCHEDULE_COLUMNS = """schedule_name, workflow_name, cron, timezone, catch_up, queue_name,
    paused, last_tick, triggered_at, updated_at, dynamic, grace_seconds, backfill_starts,
    backfill_ends"""
LIST_SCHEDULES = "SELECT " + _SCHEDULE_COLUMNS + " FROM {s}.schedules ORDER BY schedule_name"
GET_SCHEDULE = "SELECT " + _SCHEDULE_COLUMNS + " FROM {s}.schedules WHERE schedule_name = $1"

# The schedules made with create_schedule whose workflow ($1: names) an app registers.
DYNAMIC_SCHEDULES = "SELECT " + _SCHEDULE_COLUMNS + """ FROM {s}.schedules
WHERE dynamic AND workflow_name = ANY ($1::text[]) ORDER BY schedule_name"""

# create_schedule: a new schedule (unpaused, from its next tick on), or a new definition of one
# made the same way (its paused flag, last tick and backfills kept). A schedule of the name that
# @app.scheduled registered is left alone (stored = 0; ``dynamic`` says why). The schedulers of
# every process are woken ('c' with no name: the set of schedules changed; $8: the channel).
CREATE_SCHEDULE = """
WITH up AS (
    INSERT INTO {s}.schedules
        (schedule_name, workflow_name, cron, timezone, catch_up, queue_name, grace_seconds,
         dynamic)
    VALUES ($1, $2, $3, $4, $5, $6, $7, true)
    ON CONFLICT (schedule_name) DO UPDATE
    SET workflow_name = excluded.workflow_name, cron = excluded.cron,
        timezone = excluded.timezone, catch_up = excluded.catch_up,
        queue_name = excluded.queue_name, grace_seconds = excluded.grace_seconds,
        updated_at = clock_timestamp()
    WHERE schedules.dynamic
    RETURNING schedule_name
), n AS (
    SELECT pg_notify($8, 'c') FROM up
)
SELECT (SELECT count(*) FROM n) AS stored"""

# delete_schedule: only a schedule made with create_schedule ($1); every scheduler is woken.
# Nothing deleted: ``dynamic`` is NULL (no such schedule) or false (an @app.scheduled one).
DELETE_SCHEDULE = """
WITH d AS (
    DELETE FROM {s}.schedules WHERE schedule_name = $1 AND dynamic
    RETURNING schedule_name
), n AS (
    SELECT pg_notify($2, 'c') FROM d
)
SELECT (SELECT count(*) FROM n) AS deleted,
       (SELECT dynamic FROM {s}.schedules WHERE schedule_name = $1) AS dynamic"""

# backfill_schedule: the range [$2, $3) is added to the schedule's backfills for a scheduler of
# it to run (woken by 'c' || name; $4: the channel). Nothing returned: no such schedule.
BACKFILL_SCHEDULE = """
WITH u AS (
    UPDATE {s}.schedules
    SET backfill_starts = backfill_starts || $2::timestamptz,
        backfill_ends = backfill_ends || $3::timestamptz, updated_at = clock_timestamp()
    WHERE schedule_name = $1
    RETURNING schedule_name
)
SELECT u.schedule_name, pg_notify($4, 'c' || $1) FROM u"""

# Pause or resume; the schedulers of every process are woken ('c' || name). $3 (not NULL): the
# last tick moves forward to it (a resumed catch_up="skip" schedule skips what it missed).
SET_SCHEDULE_PAUSED = """
WITH u AS (
    UPDATE {s}.schedules
    SET paused = $2, updated_at = clock_timestamp(),
        last_tick = CASE WHEN $3::timestamptz IS NULL THEN last_tick
                         ELSE greatest(last_tick, $3) END
    WHERE schedule_name = $1
    RETURNING schedule_name
)
SELECT count(*) AS updated, CASE WHEN count(*) > 0 THEN pg_notify($4, 'c' || $1) END FROM u"""

# A scheduler's claim of ticks, in one transaction: lock and read the schedule's row, then move
# last_tick forward to the last tick it starts (the workflows are started in that transaction);
# $3: its manual trigger ran, $4: its backfills ran.
LOCK_SCHEDULE = "SELECT " + _SCHEDULE_COLUMNS + """ FROM {s}.schedules
WHERE schedule_name = $1 FOR UPDATE"""
ADVANCE_SCHEDULE = """
UPDATE {s}.schedules
SET last_tick = CASE WHEN last_tick IS NULL OR last_tick < $2 THEN $2 ELSE last_tick END,
    triggered_at = CASE WHEN $3 THEN NULL ELSE triggered_at END,
    backfill_starts = CASE WHEN $4 THEN '{}' ELSE backfill_starts END,
    backfill_ends = CASE WHEN $4 THEN '{}' ELSE backfill_ends END,
    updated_at = clock_timestamp()
WHERE schedule_name = $1"""

# A manual trigger: recorded in the row (a trigger already waiting is kept: both callers get
# the same run) for a scheduler of the schedule to start, woken by 'c' || name.
TRIGGER_SCHEDULE = """
WITH u AS (
    UPDATE {s}.schedules SET triggered_at = coalesce(triggered_at, $2)
    WHERE schedule_name = $1
    RETURNING schedule_name, triggered_at
)
SELECT u.triggered_at, pg_notify($3, 'c' || $1) FROM u"""

DATABASE_NOW = "SELECT clock_timestamp()"

# A workflow and (with $2) all its descendants, locked: the delete checks none is PENDING.
LOCK_WORKFLOW_TREE = """
WITH RECURSIVE tree AS (
    SELECT workflow_id FROM {s}.workflows WHERE workflow_id = $1
    UNION
    SELECT c.workflow_id FROM {s}.workflows c JOIN tree t ON c.parent_workflow_id = t.workflow_id
    WHERE $2
)
SELECT w.workflow_id, w.status FROM {s}.workflows w
WHERE w.workflow_id IN (SELECT workflow_id FROM tree)
ORDER BY w.workflow_id
FOR UPDATE OF w"""

# The parent of workflow $1 (none: no row), locked against a concurrent resume or finish.
LOCK_PARENT = """
SELECT p.workflow_id, p.status FROM {s}.workflows w
JOIN {s}.workflows p ON p.workflow_id = w.parent_workflow_id
WHERE w.workflow_id = $1
FOR SHARE OF p"""

# Unfinished workflows outside the ids $1 whose journal names one of them as its child (a fork
# reads the children its source started), locked against a concurrent resume or finish.
LOCK_READERS = """
SELECT r.workflow_id, r.status, o.child_id FROM {s}.operations o
JOIN {s}.workflows r ON r.workflow_id = o.workflow_id
WHERE o.child_id = ANY ($1::text[]) AND NOT (r.workflow_id = ANY ($1::text[]))
  AND r.status IN ('PENDING', 'ENQUEUED', 'DELAYED')
ORDER BY r.workflow_id
FOR SHARE OF r"""

# Everything of the workflows to delete (%IDS%): journal, events, streams and the rows
# themselves (their messages and idempotency keys go with them: ON DELETE CASCADE).
_DELETE_EVERYTHING = """, o AS (
    DELETE FROM {s}.operations WHERE workflow_id IN (%IDS%)
), e AS (
    DELETE FROM {s}.events WHERE workflow_id IN (%IDS%)
), h AS (
    DELETE FROM {s}.stream_heads WHERE workflow_id IN (%IDS%)
), v AS (
    DELETE FROM {s}.streams WHERE workflow_id IN (%IDS%)
), d AS (
    DELETE FROM {s}.workflows WHERE workflow_id IN (%IDS%)
    RETURNING workflow_id
)
SELECT workflow_id FROM d"""

DELETE_WORKFLOWS = """
WITH ids AS (SELECT unnest($1::text[]) AS workflow_id)""" + _DELETE_EVERYTHING.replace(
    "%IDS%", "SELECT workflow_id FROM ids")

# Retention: what to delete is every finished (terminal: not PENDING, ENQUEUED or DELAYED)
# workflow at or before the bound ($1 completed_at,
# $2 workflow_id) in completion order — except children whose parent stays: a parent not
# finished (PENDING, or queued: ENQUEUED or DELAYED, say requeued after a crash or resumed) may
# yet read their results, and so may a finished parent that is kept (newer than the bound),
# when it is resumed or replayed. A child goes with its parent, in the same pass.
_RETAINED = """
    w.status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED',
                   'CONTINUED_AS_NEW')
      AND (w.completed_at, w.workflow_id) <= ($1::timestamptz, $2::text)
      AND NOT EXISTS (
          SELECT 1 FROM {s}.workflows p
          WHERE p.workflow_id = w.parent_workflow_id
            AND NOT coalesce(
                p.status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
                AND (p.completed_at, p.workflow_id) <= ($1::timestamptz, $2::text), false))
      AND NOT EXISTS (  -- nor a workflow whose journal names it (a fork of its parent) stays
          SELECT 1 FROM {s}.operations o JOIN {s}.workflows r ON r.workflow_id = o.workflow_id
          WHERE o.child_id = w.workflow_id AND r.workflow_id <> w.workflow_id
            AND NOT coalesce(
                r.status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
                AND (r.completed_at, r.workflow_id) <= ($1::timestamptz, $2::text), false))"""

# The bounds of a retention pass: completed before now minus $1 seconds (NULL: no age limit);
# the newest $2 finished workflows kept (NULL: no count limit; the row returned is the newest
# one beyond them).
RETENTION_BOUNDS = """
SELECT clock_timestamp() - make_interval(secs => $1::float8) AS age_bound,
       k.completed_at AS keep_completed_at, k.workflow_id AS keep_workflow_id
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT w.completed_at, w.workflow_id FROM {s}.workflows w
    WHERE w.status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED',
                   'CONTINUED_AS_NEW')
      AND $2::bigint IS NOT NULL
    ORDER BY w.completed_at DESC, w.workflow_id DESC
    OFFSET $2 LIMIT 1
) k ON true"""

# One retention batch: up to $3 workflows, oldest first, locked with SKIP LOCKED (a row being
# resumed, claimed or finished is left for the next pass), deleted in the same statement. A
# child is deleted only once its parent is gone (deleted by an earlier batch of the pass): a
# parent left for the next pass, its row busy, keeps its children too.
RETENTION_DELETE = """
WITH victims AS (
    SELECT w.workflow_id FROM {s}.workflows w
    WHERE """ + _RETAINED + """
      AND NOT EXISTS (SELECT 1 FROM {s}.workflows p WHERE p.workflow_id = w.parent_workflow_id)
    ORDER BY w.completed_at, w.workflow_id
    LIMIT $3
    FOR UPDATE OF w SKIP LOCKED
)""" + _DELETE_EVERYTHING.replace("%IDS%", "SELECT workflow_id FROM victims")

RETENTION_COUNT = """
SELECT count(*) FROM {s}.workflows w WHERE """ + _RETAINED

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


# ---------------------------------------------------------------------------------------------
# Dashboard (asyncflow._dashboard): read-only queries. Large values are cut with left(): the
# page shows at most $n characters of a value and its full length.
# ---------------------------------------------------------------------------------------------

# A workflow's inputs, output and error (the recorded exception as JSON), each cut to $2 chars.
DASHBOARD_WORKFLOW_DATA = """
SELECT left(inputs, $2) AS inputs, length(inputs) AS inputs_length,
       left(output, $2) AS output, length(output) AS output_length,
       left(error, $2) AS error, length(error) AS error_length
FROM {s}.workflows WHERE workflow_id = $1"""

# The messages waiting in a workflow's mailboxes (every topic), oldest first: at most $2 of
# them, each cut to $3 chars, with the total count.
DASHBOARD_PENDING_MESSAGES = """
SELECT message_id, topic, left(message, $3) AS message, length(message) AS length, created_at,
       count(*) OVER () AS total
FROM {s}.messages WHERE destination_id = $1
ORDER BY message_id LIMIT $2"""

# A workflow's streams (at most $2 keys, by key) with the last $3 entries of each, cut to $4
# chars. A stream with no entries yet (closed before any write) has one row with a NULL offset.
# A workflow's stream keys, key $2 first if it has that stream (the CLI's unknown-key check).
STREAM_KEYS = """
SELECT key FROM {s}.stream_heads WHERE workflow_id = $1 ORDER BY key <> $2, key LIMIT $3"""

DASHBOARD_STREAMS = """
SELECT h.key, h.next_offset, h.closed, e."offset", e.value, e.length
FROM (
    SELECT key, next_offset, closed FROM {s}.stream_heads
    WHERE workflow_id = $1 ORDER BY key LIMIT $2
) h
LEFT JOIN LATERAL (
    SELECT "offset", left(value, $4) AS value, length(value) AS length FROM {s}.streams
    WHERE workflow_id = $1 AND key = h.key
    ORDER BY "offset" DESC LIMIT $3
) e ON true
ORDER BY h.key, e."offset"
"""

# The queues known to the database: those with a row in `queues` (created by a dispatcher's
# first claim), those that active workflows (ENQUEUED, DELAYED, PENDING) name, and the names $1
# (the serving app's registered queues). Per queue: its depth (ENQUEUED, DELAYED), its running
# workflows (PENDING), when the next DELAYED one is due and since when the oldest ENQUEUED one
# waits. Only active rows are read (the partial queue indexes): finished workflows are not
# counted, and a queue none of whose workflows was ever dispatched is gone once they ended.
DASHBOARD_QUEUES = """
WITH names AS (
    SELECT queue_name FROM {s}.queues
    UNION
    SELECT queue_name FROM {s}.workflows
    WHERE queue_name IS NOT NULL AND status IN ('ENQUEUED', 'DELAYED', 'PENDING')
    UNION
    SELECT unnest($1::text[])
)
SELECT n.queue_name,
       count(w.workflow_id) FILTER (WHERE w.status = 'ENQUEUED') AS enqueued,
       count(w.workflow_id) FILTER (WHERE w.status = 'DELAYED') AS delayed,
       count(w.workflow_id) FILTER (WHERE w.status = 'PENDING') AS running,
       min(w.delay_until) FILTER (WHERE w.status = 'DELAYED') AS next_due,
       min(w.created_at) FILTER (WHERE w.status = 'ENQUEUED') AS oldest_enqueued
FROM names n
LEFT JOIN {s}.workflows w
    ON w.queue_name = n.queue_name AND w.status IN ('ENQUEUED', 'DELAYED', 'PENDING')
GROUP BY n.queue_name
ORDER BY n.queue_name"""

# One queue ($1), the same figures; ``known``: it has a row in `queues` or active workflows.
DASHBOARD_QUEUE = """
SELECT count(*) FILTER (WHERE status = 'ENQUEUED') AS enqueued,
       count(*) FILTER (WHERE status = 'DELAYED') AS delayed,
       count(*) FILTER (WHERE status = 'PENDING') AS running,
       min(delay_until) FILTER (WHERE status = 'DELAYED') AS next_due,
       min(created_at) FILTER (WHERE status = 'ENQUEUED') AS oldest_enqueued,
       count(*) > 0 OR EXISTS (SELECT 1 FROM {s}.queues WHERE queue_name = $1) AS known
FROM {s}.workflows
WHERE queue_name = $1 AND status IN ('ENQUEUED', 'DELAYED', 'PENDING')"""

# A workflow's journal: its first and last function ids, and when the last entry was recorded
# (the workflow's last activity: checkpoints do not touch its row). Two probes of the primary
# key, whatever the journal's length; no row when it is empty.
DASHBOARD_JOURNAL_SPAN = """
SELECT f.function_id AS first, l.function_id AS last, l.created_at AS last_at
FROM (SELECT function_id FROM {s}.operations WHERE workflow_id = $1
      ORDER BY function_id LIMIT 1) f,
     (SELECT function_id, created_at FROM {s}.operations WHERE workflow_id = $1
      ORDER BY function_id DESC LIMIT 1) l"""

# When each workflow of $1 last recorded a journal entry (NULL: none yet).
DASHBOARD_LAST_ACTIVITY = """
SELECT w.id AS workflow_id,
       (SELECT o.created_at FROM {s}.operations o WHERE o.workflow_id = w.id
        ORDER BY o.function_id DESC LIMIT 1) AS last_at
FROM unnest($1::text[]) AS w(id)"""

# The journal entries with function ids in [$2, $3), with what each did: ``key`` (an event's,
# a stream's), ``topic`` and ``target`` (a send's), and ``value`` (cut to $4 chars; ``length``
# is the full length): a step's or a wait's recorded output, the value an event was set to, the
# message sent, the entry a stream write appended (the stream's row written by that function
# id). Built-in entries record a JSON description as their output (``{"key": …, "value": …}``);
# entries recorded before they did show what they have.
_DESCRIBED = """('asyncflow.set_event', 'asyncflow.send', 'asyncflow.close_stream',
                 'asyncflow.write_stream')"""
DASHBOARD_OPERATIONS = """
SELECT o.function_id, o.name, o.child_id, o.completed, o.created_at,
       left(o.error, $4) AS error, d.j ->> 'key' AS key,
       coalesce(o.topic, d.j ->> 'topic') AS topic,
       d.j ->> 'to' AS target, left(v.value, $4) AS value, length(v.value) AS length
FROM {s}.operations o
CROSS JOIN LATERAL (
    SELECT CASE WHEN o.name IN """ + _DESCRIBED + """ AND left(o.output, 1) = '{'
                THEN o.output::jsonb END AS j
) d
LEFT JOIN LATERAL (
    SELECT e.value FROM {s}.streams e
    WHERE o.name = 'asyncflow.write_stream' AND e.workflow_id = o.workflow_id
      AND e.key = d.j ->> 'key' AND e.writer_fid = o.function_id AND e.writer_seq = 0
) w ON true
CROSS JOIN LATERAL (
    SELECT CASE WHEN o.name = 'asyncflow.write_stream' THEN w.value
                WHEN o.name = 'asyncflow.set_event' AND d.j IS NOT NULL
                    THEN (d.j -> 'value')::text
                WHEN o.name = 'asyncflow.send' AND d.j IS NOT NULL
                    THEN (d.j -> 'message')::text
                WHEN o.name IN """ + _DESCRIBED + """ THEN NULL
                ELSE o.output END AS value
) v
WHERE o.workflow_id = $1 AND o.function_id >= $2 AND o.function_id < $3
ORDER BY o.function_id"""
