"""Workflows' rows: start, status, finish, cancel, resume, the supervisor's claims."""

from __future__ import annotations

from .liveness import _LIVE_EXECUTORS

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
