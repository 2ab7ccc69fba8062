"""Queues: enqueue, the one-statement claim, orphans put back."""

from __future__ import annotations

from .liveness import _LIVE_EXECUTORS

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

# Enqueue many (``Queue.enqueue_many``): workflows $1 with inputs $3 (one per id), all of workflow
# $2 on queue $6, in one statement, and one NOTIFY to the queue's dispatchers if any was
# inserted ($10: the channel). The rest is shared: app version $4, parent $5 (enqueued by a step
# of it), priority $7, delay $8 seconds (DELAYED while it runs), partition key $9, traceparent
# $11, timeout $12. An id that exists is skipped (any unique index: no conflict target; the caller
# looks at those one by one); no deduplication ids here. Their created_at follow the given order
# one microsecond apart from the statement's time, so they run first-in first-out in that order
# within a priority. Returns the ids inserted.
ENQUEUE_WORKFLOWS = """
WITH t AS (
    SELECT clock_timestamp() AS ts
), ins AS (
    INSERT INTO {s}.workflows
        (workflow_id, name, status, inputs, app_version, parent_workflow_id, queue_name,
         priority, partition_key, delay_until, created_at, updated_at, traceparent,
         timeout_seconds)
    SELECT i.id, $2, CASE WHEN $8::float8 > 0 THEN 'DELAYED' ELSE 'ENQUEUED' END, i.inputs, $4,
           $5, $6, $7, $9, CASE WHEN $8::float8 > 0 THEN t.ts + make_interval(secs => $8) END,
           t.ts + make_interval(secs => (i.n - 1) / 1e6), t.ts, $11, $12
    FROM t, unnest($1::text[], $3::text[]) WITH ORDINALITY AS i(id, inputs, n)
    ON CONFLICT DO NOTHING
    RETURNING workflow_id
), n AS (
    SELECT pg_notify($10, 'q' || $6) WHERE EXISTS (SELECT 1 FROM ins)
)
SELECT workflow_id, (SELECT count(*) FROM n) AS notified FROM ins"""

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

# Enqueue to a queue without limits that this process serves ($12: its executor id; $13: the
# runtime clock's now, where the timeout $10 starts): inserted PENDING and owned by this executor
# (as a claim would leave it: epoch 1, dispatched now) unless a workflow waits in the queue (an
# ENQUEUED one, or a DELAYED one due), which goes first: then inserted ENQUEUED and the queue
# notified. ENQUEUE_CLAIM's other parameters; returns the new row's status, epoch and deadline,
# or (nothing inserted) what ENQUEUE_WORKFLOW reports.
ENQUEUE_RUN = """
WITH t AS (
    SELECT clock_timestamp() AS ts
), waiting AS (
    SELECT EXISTS (
        SELECT 1 FROM {s}.workflows w, t
        WHERE w.queue_name = $5
          AND (w.status = 'ENQUEUED' OR (w.status = 'DELAYED' AND w.delay_until <= t.ts))
    ) AS yes
), ins AS (
    INSERT INTO {s}.workflows
        (workflow_id, name, status, inputs, app_version, queue_name, priority, deduplication_id,
         partition_key, created_at, updated_at, traceparent, timeout_seconds, executor_id,
         dispatched_at, deadline, epoch)
    SELECT $1, $2, CASE WHEN w.yes THEN 'ENQUEUED' ELSE 'PENDING' END, $3, $4, $5, $6, $7,
           $8, t.ts, t.ts, $9, $10, CASE WHEN NOT w.yes THEN $12::text END,
           CASE WHEN NOT w.yes THEN t.ts END,
           CASE WHEN NOT w.yes THEN $13::float8 + $10::float8 END,
           CASE WHEN w.yes THEN 0 ELSE 1 END
    FROM t, waiting w
    ON CONFLICT DO NOTHING
    RETURNING status, epoch, deadline
), queued AS (
    SELECT pg_notify($11, 'q' || $5) FROM ins WHERE status = 'ENQUEUED'
), timed AS (
    SELECT pg_notify($11, 'd') FROM ins WHERE deadline IS NOT NULL
)
SELECT ins.status, ins.epoch, ins.deadline,
       (SELECT count(*) FROM queued) + (SELECT count(*) FROM timed) AS notified,
       (SELECT name FROM {s}.workflows WHERE workflow_id = $1) AS existing_name,
       (SELECT workflow_id FROM {s}.workflows
        WHERE queue_name = $5 AND deduplication_id = $7
          AND status IN ('ENQUEUED', 'DELAYED', 'PENDING')) AS holder
FROM (SELECT 1) one LEFT JOIN ins ON true"""

# Enqueue and claim in one statement (migration 17's function), for an app serving the queue:
# ENQUEUE_WORKFLOW's parameters without parent, delay and parent epoch ($1 id, $2 name, $3 inputs,
# $4 app version, $5 queue, $6 priority, $7 deduplication id, $8 partition key, $9 traceparent,
# $10 timeout, $11 channel), then the claim's ($12 executor, $13 names, $14 concurrency, $15
# worker concurrency, $16-$17 rate limit, $18 partition concurrency, $19 batch, $20 now).
ENQUEUE_CLAIM = """
SELECT * FROM {s}.enqueue_claim($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                                 $15, $16, $17, $18, $19, $20)"""

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
