"""The schema: forward-only numbered migrations and the statements that apply them."""

from __future__ import annotations

from .initial_schema import INITIAL_SCHEMA

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
    INITIAL_SCHEMA,  # 1: the whole initial schema.
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
    # 17: an enqueue that claims in the same statement, for an app that serves the queue
    # (ENQUEUE_CLAIM): the workflow is inserted ENQUEUED, then, when no claim of the queue holds
    # its row now (SKIP LOCKED: never waits for one), claim_queued runs in a statement of its
    # own, so it sees the new row and claims within the limits what a dispatcher would, oldest
    # first. One commit instead of two; the queue is notified only when the new workflow is
    # still ENQUEUED. Parameters: the enqueue's ($1 id, $2 name, $3 inputs, $4 app version, $5
    # queue, $6 priority, $7 deduplication id, $8 partition key, $9 traceparent, $10 timeout,
    # $11 channel), then claim_queued's that the enqueue does not give ($12 executor, $13
    # names, $14-$18 the limits, $19 batch, $20 now). Returns the enqueue's outcome on every row
    # (created, existing_name, holder) with claim_queued's columns (NULL when nothing was
    # claimed or nothing inserted).
    """
    CREATE FUNCTION {s}.enqueue_claim(
        text, text, text, text, text, integer, text, text, text, double precision, text,
        text, text[], integer, integer, integer, double precision, integer, integer,
        double precision)
    RETURNS TABLE (created boolean, existing_name text, holder text,
                   workflow_id text, name text, inputs text, recovery_attempts integer,
                   fresh boolean, deadline double precision, epoch bigint,
                   wait_s double precision, found bigint, room bigint, deadlines bigint)
    LANGUAGE plpgsql AS $enqueue$
    #variable_conflict use_column
    DECLARE
        ts timestamptz := clock_timestamp();
    BEGIN
        INSERT INTO {s}.workflows
            (workflow_id, name, status, inputs, app_version, queue_name, priority,
             deduplication_id, partition_key, created_at, updated_at, traceparent,
             timeout_seconds)
        VALUES ($1, $2, 'ENQUEUED', $3, $4, $5, $6, $7, $8, ts, ts, $9, $10)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RETURN QUERY SELECT false,
                (SELECT e.name FROM {s}.workflows e WHERE e.workflow_id = $1),
                (SELECT e.workflow_id FROM {s}.workflows e
                 WHERE e.queue_name = $5 AND e.deduplication_id = $7
                   AND e.status IN ('ENQUEUED', 'DELAYED', 'PENDING')),
                NULL::text, NULL::text, NULL::text, NULL::integer, NULL::boolean,
                NULL::double precision, NULL::bigint, NULL::double precision, NULL::bigint,
                NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
        PERFORM 1 FROM {s}.queues q WHERE q.queue_name = $5 FOR UPDATE SKIP LOCKED;
        IF FOUND OR NOT EXISTS (SELECT 1 FROM {s}.queues q WHERE q.queue_name = $5) THEN
            RETURN QUERY SELECT true, NULL::text, NULL::text, c.*
            FROM {s}.claim_queued($5, $12, $13, $4, $14, $15, $16, $17, $18, $19, $20, $11) c;
        ELSE
            RETURN QUERY SELECT true, NULL::text, NULL::text,
                NULL::text, NULL::text, NULL::text, NULL::integer, NULL::boolean,
                NULL::double precision, NULL::bigint, NULL::double precision, NULL::bigint,
                NULL::bigint, NULL::bigint;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM {s}.workflows e
                       WHERE e.workflow_id = $1 AND e.status = 'PENDING') THEN
            PERFORM pg_notify($11, 'q' || $5);
        END IF;
    END
    $enqueue$;
    """,
    # 18: a runtime schedule deleted while ticks asked for by backfill_schedule or
    # trigger_schedule had not started yet. Its row stays, ``deleted``, until a scheduler of it
    # has started those ticks (then the row goes): no other tick of it starts, and every read
    # but the schedulers' leaves it out.
    """
    ALTER TABLE {s}.schedules ADD COLUMN deleted boolean NOT NULL DEFAULT false;
    """,
    # 19: which operation (function id) last set an event, and which one closed a stream, so
    # that a fork copies what came before its step also from a workflow whose rows one
    # transaction wrote (a fork's, an import's). NULL on rows written before: a fork tells those
    # by their transaction (xmin), as it did.
    """
    ALTER TABLE {s}.events ADD COLUMN writer_fid integer;
    ALTER TABLE {s}.stream_heads ADD COLUMN closed_by integer;
    """,
    # 20: a send hands its message to the recv waiting for it (sql/messages._HAND_OVER).
    # ``handoff``: set on a recv's open entry by a version that reads such a completion (a recv
    # parked in a process of an older release is never handed a message: it would not see it).
    # ``traceparent``: the trace context of the send that handed the message (the recv's span
    # links to it). Both NULL on every other entry.
    """
    ALTER TABLE {s}.operations ADD COLUMN handoff boolean, ADD COLUMN traceparent text;
    """,
)
