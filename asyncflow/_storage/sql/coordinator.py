"""The functions a distributed database runs on its coordinator in place of plain statements
(``asyncflow db distribute`` installs them: :data:`.distribute.FUNCTIONS`; the Citus forms of
:mod:`.citus` call them). Each keeps its statement's parameters and result.
"""

from __future__ import annotations

from .history import _EVENTS_BEFORE

#: Migration 15's ``claim_queued`` for a distributed database (``asyncflow db distribute``
#: replaces it): the same claim, same parameters and result, as a few statements under the queue
#: row's lock. ``queues`` stays on the coordinator, and the coordinator holds that lock until every
#: node has committed the claim before it (Citus commits the workers' prepared transactions before
#: the coordinator's locks are released), so each claim counts every claim before it and the limits
#: stay exact. The candidates are read without row locks (Citus refuses ``FOR UPDATE SKIP LOCKED``
#: across shards) and taken by compare-and-set: the UPDATE takes a row only at the epoch and status
#: it was read with, so a row that a cancel, resume or requeue changed meanwhile is left alone.
CLAIM_QUEUED_FUNCTION = """
CREATE OR REPLACE FUNCTION {s}.claim_queued(
    text, text, text[], text, integer, integer, integer, double precision, integer,
    integer, double precision, text)
RETURNS TABLE (workflow_id text, name text, inputs text, recovery_attempts integer,
               fresh boolean, deadline double precision, epoch bigint,
               wait_s double precision, found bigint, room bigint, deadlines bigint)
LANGUAGE plpgsql AS $claim$
#variable_conflict use_column
DECLARE
    ts timestamptz;
    n_starts bigint := 0;
    oldest timestamptz;
    free_n bigint;
    full_keys text[];
    c_ids text[]; c_epochs bigint[]; c_fresh boolean[]; c_keys text[]; c_found bigint := 0;
    p_keys text[]; p_running bigint[];
    k_ids text[]; k_epochs bigint[]; k_fresh boolean[];
    r_ids text[]; r_names text[]; r_inputs text[]; r_attempts integer[]; r_fresh boolean[];
    r_deadlines double precision[]; r_epochs bigint[];
    n_claimed integer := 0;
    wait double precision;
    notified bigint := 0;
BEGIN
    INSERT INTO {s}.queues (queue_name) VALUES ($1)
    ON CONFLICT (queue_name) DO UPDATE SET queue_name = excluded.queue_name WHERE false;
    ts := clock_timestamp();
    IF $7 IS NOT NULL THEN
        SELECT count(*), min(s) INTO n_starts, oldest
        FROM {s}.queues q, unnest(q.starts) AS s
        WHERE q.queue_name = $1 AND s > ts - make_interval(secs => $8);
    END IF;
    free_n := greatest(least(
        $10::bigint,
        CASE WHEN $5 IS NOT NULL THEN $5 - (
            SELECT count(*) FROM {s}.workflows w
            WHERE w.queue_name = $1 AND w.status = 'PENDING') END,
        CASE WHEN $6 IS NOT NULL THEN $6 - (
            SELECT count(*) FROM {s}.workflows w
            WHERE w.queue_name = $1 AND w.status = 'PENDING' AND w.executor_id = $2) END,
        CASE WHEN $7 IS NOT NULL THEN $7 - n_starts END), 0);
    IF $9 IS NOT NULL THEN
        full_keys := ARRAY(
            SELECT w.partition_key FROM {s}.workflows w
            WHERE w.queue_name = $1 AND w.status = 'PENDING' AND w.partition_key IS NOT NULL
            GROUP BY w.partition_key HAVING count(*) >= $9);
    END IF;
    IF free_n > 0 THEN
        SELECT array_agg(c.workflow_id ORDER BY c.priority, c.created_at, c.workflow_id),
               array_agg(c.epoch ORDER BY c.priority, c.created_at, c.workflow_id),
               array_agg(c.dispatched_at IS NULL ORDER BY c.priority, c.created_at, c.workflow_id),
               array_agg(c.partition_key ORDER BY c.priority, c.created_at, c.workflow_id),
               count(*)
        INTO c_ids, c_epochs, c_fresh, c_keys, c_found
        FROM (
            SELECT w.workflow_id, w.epoch, w.dispatched_at, w.partition_key, w.priority,
                   w.created_at
            FROM {s}.workflows w
            WHERE w.queue_name = $1
              AND (w.status = 'ENQUEUED' OR (w.status = 'DELAYED' AND w.delay_until <= ts))
              AND w.name = ANY ($3) AND (w.dispatched_at IS NULL OR w.app_version = $4)
              AND (w.partition_key IS NULL OR full_keys IS NULL
                   OR NOT (w.partition_key = ANY (full_keys)))
            ORDER BY w.priority, w.created_at, w.workflow_id
            LIMIT free_n
        ) c;
    END IF;
    IF c_found > 0 THEN
        IF $9 IS NOT NULL THEN
            SELECT array_agg(r.partition_key), array_agg(r.running) INTO p_keys, p_running
            FROM (
                SELECT w.partition_key, count(*) AS running FROM {s}.workflows w
                WHERE w.queue_name = $1 AND w.status = 'PENDING'
                  AND w.partition_key = ANY (c_keys)
                GROUP BY w.partition_key
            ) r;
        END IF;
        SELECT array_agg(x.id ORDER BY x.ord), array_agg(x.ep ORDER BY x.ord),
               array_agg(x.fr ORDER BY x.ord)
        INTO k_ids, k_epochs, k_fresh
        FROM (
            SELECT u.id, u.ep, u.fr, u.ord, u.key,
                   row_number() OVER (PARTITION BY u.key ORDER BY u.ord) AS rank
            FROM unnest(c_ids, c_epochs, c_fresh, c_keys) WITH ORDINALITY AS u(id, ep, fr, key, ord)
        ) x
        LEFT JOIN unnest(p_keys, p_running) AS p(key, running) ON p.key = x.key
        WHERE $9 IS NULL OR x.key IS NULL OR x.rank <= $9 - coalesce(p.running, 0);
    END IF;
    IF k_ids IS NOT NULL THEN
        WITH claimed AS (
            UPDATE {s}.workflows w
            SET status = 'PENDING', executor_id = $2, app_version = $4, dispatched_at = ts,
                updated_at = ts, deadline = coalesce(w.deadline, $11 + w.timeout_seconds),
                epoch = w.epoch + 1
            FROM unnest(k_ids, k_epochs, k_fresh) AS k(id, ep, fr)
            WHERE w.workflow_id = k.id AND w.epoch = k.ep AND w.status IN ('ENQUEUED', 'DELAYED')
            RETURNING w.workflow_id, w.name, w.inputs, w.recovery_attempts, k.fr, w.deadline,
                      w.epoch
        )
        SELECT array_agg(c.workflow_id), array_agg(c.name), array_agg(c.inputs),
               array_agg(c.recovery_attempts), array_agg(c.fr), array_agg(c.deadline),
               array_agg(c.epoch), count(*)
        INTO r_ids, r_names, r_inputs, r_attempts, r_fresh, r_deadlines, r_epochs, n_claimed
        FROM claimed c;
    END IF;
    UPDATE {s}.workflows d SET status = 'ENQUEUED', updated_at = ts
    WHERE d.queue_name = $1 AND d.status = 'DELAYED' AND d.delay_until <= ts;
    IF $7 IS NOT NULL AND n_claimed > 0 THEN
        UPDATE {s}.queues q
        SET starts = ARRAY(
            SELECT s FROM unnest(q.starts || array_fill(ts, ARRAY[n_claimed])) s
            WHERE s > ts - make_interval(secs => $8)
            ORDER BY s DESC LIMIT $7)
        WHERE q.queue_name = $1;
    END IF;
    wait := extract(epoch FROM least(
        (SELECT min(w.delay_until) FROM {s}.workflows w
         WHERE w.queue_name = $1 AND w.status = 'DELAYED' AND w.delay_until > ts),
        CASE WHEN $7 IS NOT NULL AND n_starts + n_claimed >= $7
             THEN coalesce(oldest, ts) + make_interval(secs => $8) END) - ts)::float8;
    IF EXISTS (SELECT 1 FROM unnest(r_deadlines) d WHERE d IS NOT NULL) THEN
        PERFORM pg_notify($12, 'd');
        notified := 1;
    END IF;
    IF n_claimed = 0 THEN
        RETURN QUERY SELECT NULL::text, NULL::text, NULL::text, NULL::integer, NULL::boolean,
                            NULL::double precision, NULL::bigint, wait, c_found, free_n,
                            notified;
    ELSE
        RETURN QUERY SELECT u.*, wait, c_found, free_n, notified
        FROM unnest(r_ids, r_names, r_inputs, r_attempts, r_fresh, r_deadlines, r_epochs) u;
    END IF;
END
$claim$;
"""


#: ``DEBOUNCE`` on a distributed database, as a function on the coordinator: the burst's row is
#: found under a transaction-level advisory lock on (queue, workflow name, key) -- Citus keeps no
#: unique index without the distribution column -- then updated by its id, with the new times
#: computed on the coordinator (Citus refuses STABLE functions over columns in an UPDATE).
#: Parameters and result are DEBOUNCE's.
DEBOUNCE_FUNCTION = """
CREATE OR REPLACE FUNCTION {s}.debounce(
    text, text, text, text, text, double precision, double precision, text, text,
    double precision, text)
RETURNS TABLE (extended text, released text, created text, notified bigint)
LANGUAGE plpgsql AS $debounce$
DECLARE
    ts timestamptz;
    burst text;
    burst_until timestamptz;
    burst_created timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(
        hashtextextended('asyncflow-debounce:{s}:' || $1 || ':' || $2 || ':' || $3, 0));
    ts := clock_timestamp();
    SELECT w.workflow_id, w.delay_until, w.created_at INTO burst, burst_until, burst_created
    FROM {s}.workflows w
    WHERE w.queue_name = $1 AND w.name = $2 AND w.debounce_key = $3 AND w.status = 'DELAYED'
    LIMIT 1;
    IF burst IS NOT NULL AND burst_until > ts THEN
        UPDATE {s}.workflows w
        SET inputs = $5, updated_at = ts,
            delay_until = least(ts + make_interval(secs => $6),
                                burst_created + make_interval(secs => $7))
        WHERE w.workflow_id = burst AND w.status = 'DELAYED';
        IF FOUND THEN
            RETURN QUERY SELECT burst, NULL::text, NULL::text, 0::bigint;
            RETURN;
        END IF;
    ELSIF burst IS NOT NULL THEN
        UPDATE {s}.workflows w SET status = 'ENQUEUED', updated_at = ts
        WHERE w.workflow_id = burst AND w.status = 'DELAYED';
        IF FOUND THEN
            PERFORM pg_notify($11, 'q' || $1);
            RETURN QUERY SELECT NULL::text, burst, NULL::text, 1::bigint;
            RETURN;
        END IF;
    END IF;
    INSERT INTO {s}.workflows
        (workflow_id, name, status, inputs, app_version, queue_name, debounce_key, delay_until,
         created_at, updated_at, traceparent, timeout_seconds)
    VALUES ($4, $2, 'DELAYED', $5, $8, $1, $3,
            least(ts + make_interval(secs => $6), ts + make_interval(secs => $7)),
            ts, ts, $9, $10)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM pg_notify($11, 'q' || $1);
        RETURN QUERY SELECT NULL::text, NULL::text, $4, 1::bigint;
        RETURN;
    END IF;
    RETURN QUERY SELECT NULL::text, NULL::text, NULL::text, 0::bigint;
END
$debounce$;
"""


#: A workflow ($3) about to hold deduplication id $2 of queue $1 again (a resume), on a
#: distributed database: under the id's advisory lock (ENQUEUE_WORKFLOW's), refused with a
#: unique violation -- what the unique index raises on Postgres -- while another workflow holds it.
HOLD_DEDUPLICATION_FUNCTION = """
CREATE OR REPLACE FUNCTION {s}.hold_deduplication_id(text, text, text) RETURNS text
LANGUAGE plpgsql AS $hold$
BEGIN
    PERFORM pg_advisory_xact_lock(
        hashtextextended('asyncflow-dedup:{s}:' || $1 || ':' || $2, 0));
    IF EXISTS (SELECT 1 FROM {s}.workflows h
               WHERE h.queue_name = $1 AND h.deduplication_id = $2 AND h.workflow_id <> $3
                 AND h.status IN ('ENQUEUED', 'DELAYED', 'PENDING')) THEN
        RAISE EXCEPTION 'deduplication id % of queue % is held', $2, $1
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN $2;
END
$hold$;
"""


#: The workflows below the workflows $1 (children, their children, …), one level per statement:
#: Citus runs a recursive CTE only within one shard, and a tree spans shards.
DESCENDANTS_FUNCTION = """
CREATE OR REPLACE FUNCTION {s}.descendants(text[]) RETURNS TABLE (workflow_id text)
LANGUAGE plpgsql AS $walk$
DECLARE
    frontier text[] := $1;
    found text[];
BEGIN
    LOOP
        SELECT array_agg(c.workflow_id) INTO found
        FROM {s}.workflows c WHERE c.parent_workflow_id = ANY (frontier);
        EXIT WHEN found IS NULL;
        RETURN QUERY SELECT unnest(found);
        frontier := found;
    END LOOP;
END
$walk$;
"""

#: CONTINUE_AS_NEW on a distributed database (same parameters and result), as a function on the
#: coordinator: the kept run ($6) lives on another shard than the workflow ($1), and Citus
#: refuses to change a row's distribution column, so the journal is copied to the kept run and
#: deleted from the workflow (one distributed transaction) instead of moved by an UPDATE.
CONTINUE_AS_NEW_FUNCTION = """
CREATE OR REPLACE FUNCTION {s}.continue_as_new(text, integer, text, bigint, boolean, text)
RETURNS TABLE (epoch bigint, owned boolean)
LANGUAGE plpgsql AS $continue$
#variable_conflict use_column
DECLARE
    cur {s}.workflows%ROWTYPE;
    ts timestamptz := clock_timestamp();
    kept boolean := false;
    next_epoch bigint;
BEGIN
    SELECT * INTO cur FROM {s}.workflows w
    WHERE w.workflow_id = $1 AND w.status = 'PENDING' AND w.epoch = $4
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::bigint, false;
        RETURN;
    END IF;
    IF $5 THEN
        INSERT INTO {s}.workflows
            (workflow_id, name, status, inputs, output, executor_id, app_version,
             recovery_attempts, parent_workflow_id, created_at, updated_at, completed_at,
             traceparent, epoch, run, first_function_id, run_of, attributes)
        VALUES ($6, cur.name, 'CONTINUED_AS_NEW', cur.inputs, $3, cur.executor_id,
                cur.app_version, cur.recovery_attempts, NULL, ts, ts, ts, cur.traceparent,
                cur.epoch, cur.run, cur.first_function_id, cur.workflow_id, cur.attributes)
        ON CONFLICT (workflow_id) DO NOTHING;
        kept := FOUND;
        IF NOT kept THEN
            RETURN QUERY SELECT NULL::bigint, true;
            RETURN;
        END IF;
        INSERT INTO {s}.operations
            (workflow_id, function_id, name, output, error, child_id, completed, deadline,
             created_at, topic)
        SELECT $6, o.function_id, o.name, o.output, o.error, o.child_id, o.completed,
               o.deadline, o.created_at, o.topic
        FROM {s}.operations o WHERE o.workflow_id = $1;
        INSERT INTO {s}.operations (workflow_id, function_id, name, output)
        VALUES ($6, $2, 'asyncflow.continue_as_new', $3);
    END IF;
    DELETE FROM {s}.operations o WHERE o.workflow_id = $1;
    UPDATE {s}.workflows w
    SET inputs = $3, epoch = w.epoch + 1, run = w.run + 1, first_function_id = $2 + 1,
        recovery_attempts = 0, updated_at = ts
    WHERE w.workflow_id = $1
    RETURNING w.epoch INTO next_epoch;
    RETURN QUERY SELECT next_epoch, true;
END
$continue$;
"""


#: FORK_COPY on a distributed database (same parameters and result), as a function on the
#: coordinator: the fork ($2) lives on another shard than its source ($1), so each part reads the
#: source in a statement routed to the source's node alone -- where its journal's and events'
#: row versions share transaction ids, as FORK_COPY's rule for rows that name no writer needs --
#: and inserts into the fork's.
FORK_COPY_FUNCTION = """
CREATE OR REPLACE FUNCTION {s}.fork_copy(text, text, integer, text)
RETURNS TABLE (operations bigint, events bigint, entries bigint, run bigint, notified text)
LANGUAGE plpgsql AS $fork$
DECLARE
    first_id integer;
    attrs jsonb;
    n_ops bigint;
    n_events bigint;
    n_entries bigint;
    n_run bigint;
BEGIN
    SELECT w.first_function_id, w.attributes INTO first_id, attrs
    FROM {s}.workflows w WHERE w.workflow_id = $1;
    UPDATE {s}.workflows w SET first_function_id = first_id, attributes = attrs
    WHERE w.workflow_id = $2 AND first_id IS NOT NULL;
    GET DIAGNOSTICS n_run = ROW_COUNT;
    INSERT INTO {s}.operations
        (workflow_id, function_id, name, output, error, child_id, completed, deadline,
         created_at, topic)
    SELECT $2, o.function_id, o.name, o.output, o.error, o.child_id, o.completed, o.deadline,
           o.created_at, o.topic
    FROM {s}.operations o WHERE o.workflow_id = $1 AND o.function_id < $3;
    GET DIAGNOSTICS n_ops = ROW_COUNT;
    INSERT INTO {s}.events (workflow_id, key, value, updated_at, version, writer_fid)
    SELECT $2, e.key, e.value, e.updated_at, e.version, e.writer_fid
    FROM (""" + _EVENTS_BEFORE + """) e;
    GET DIAGNOSTICS n_events = ROW_COUNT;
    INSERT INTO {s}.stream_heads (workflow_id, key, next_offset, closed, closed_by)
    SELECT $2, h.key, h.n, h.closed, CASE WHEN h.closed THEN h.closed_by END FROM (
        SELECT hd.key, hd.closed_by,
               (SELECT count(*) FROM {s}.streams st
                WHERE st.workflow_id = $1 AND st.key = hd.key AND st.writer_fid < $3) AS n,
               hd.closed AND coalesce(hd.closed_by < $3, hd.xmin::text IN (
                   SELECT o.xmin::text FROM {s}.operations o
                   WHERE o.workflow_id = $1 AND o.function_id < $3)) AS closed
        FROM {s}.stream_heads hd WHERE hd.workflow_id = $1
    ) h
    WHERE h.closed OR h.n > 0;
    INSERT INTO {s}.streams (workflow_id, key, "offset", value, writer_fid, writer_seq,
                             created_at)
    SELECT $2, e.key, e.pos, e.value, e.writer_fid, e.writer_seq, e.created_at FROM (
        SELECT st.key, st.value, st.writer_fid, st.writer_seq, st.created_at,
               row_number() OVER (PARTITION BY st.key ORDER BY st."offset") - 1 AS pos
        FROM {s}.streams st WHERE st.workflow_id = $1 AND st.writer_fid < $3
    ) e;
    GET DIAGNOSTICS n_entries = ROW_COUNT;
    PERFORM pg_notify($4, 'r' || $2);
    RETURN QUERY SELECT n_ops, n_events, n_entries, n_run, ''::text;
END
$fork$;
"""


#: Retention's choice on a distributed database ($1/$2 the bound, $3 at most so many, NULL: all;
#: $4: only workflows whose parent row is gone, else also those whose parent goes in the same
#: pass), as a function on the coordinator: the rule of ``_RETAINED`` -- finished at or before
#: the bound, no parent that stays, no unfinished or kept workflow whose journal names it as a
#: child -- checked per chunk in the workflows' completion order, without the correlated
#: subqueries over other shards that Citus refuses.
RETENTION_CANDIDATES_FUNCTION = """
CREATE OR REPLACE FUNCTION {s}.retention_candidates(timestamptz, text, bigint, boolean)
RETURNS TABLE (workflow_id text)
LANGUAGE plpgsql AS $retain$
#variable_conflict use_column
DECLARE
    after_at timestamptz := '-infinity';
    after_id text := '';
    ids text[];
    parents text[];
    times timestamptz[];
    staying text[];
    read text[];
    found_n bigint := 0;
    chunk integer := 1000;
    i integer;
BEGIN
    LOOP
        SELECT array_agg(c.workflow_id ORDER BY c.completed_at, c.workflow_id),
               array_agg(c.parent_workflow_id ORDER BY c.completed_at, c.workflow_id),
               array_agg(c.completed_at ORDER BY c.completed_at, c.workflow_id)
        INTO ids, parents, times
        FROM (
            SELECT w.workflow_id, w.parent_workflow_id, w.completed_at FROM {s}.workflows w
            WHERE w.status IN ('SUCCESS', 'ERROR', 'CANCELLED',
                               'MAX_RECOVERY_ATTEMPTS_EXCEEDED', 'CONTINUED_AS_NEW')
              AND (w.completed_at, w.workflow_id) <= ($1, $2)
              AND (w.completed_at, w.workflow_id) > (after_at, after_id)
            ORDER BY w.completed_at, w.workflow_id
            LIMIT chunk
        ) c;
        EXIT WHEN ids IS NULL;
        staying := ARRAY(
            SELECT p.workflow_id FROM {s}.workflows p
            WHERE p.workflow_id = ANY (parents)
              AND ($4 OR NOT coalesce(
                  p.status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
                  AND (p.completed_at, p.workflow_id) <= ($1, $2), false)));
        read := ARRAY(
            SELECT o.child_id FROM {s}.operations o
            JOIN {s}.workflows r ON r.workflow_id = o.workflow_id
            WHERE o.child_id = ANY (ids) AND r.workflow_id <> o.child_id
              AND NOT coalesce(
                  r.status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
                  AND (r.completed_at, r.workflow_id) <= ($1, $2), false));
        FOR i IN 1 .. cardinality(ids) LOOP
            IF (parents[i] IS NULL OR NOT (parents[i] = ANY (staying)))
               AND NOT (ids[i] = ANY (read)) THEN
                IF $4 THEN  -- deleting: a row being resumed, claimed or finished waits
                    PERFORM 1 FROM {s}.workflows w WHERE w.workflow_id = ids[i]
                    FOR UPDATE SKIP LOCKED;  -- one shard: Citus allows it
                    CONTINUE WHEN NOT FOUND;
                END IF;
                workflow_id := ids[i];
                RETURN NEXT;
                found_n := found_n + 1;
                IF $3 IS NOT NULL AND found_n >= $3 THEN
                    RETURN;
                END IF;
            END IF;
        END LOOP;
        after_at := times[cardinality(times)];
        after_id := ids[cardinality(ids)];
    END LOOP;
END
$retain$;
"""
