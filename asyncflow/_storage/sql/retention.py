"""Deleting workflows: delete_workflows, the locks that keep what a fork or parent reads, and
retention passes."""

from __future__ import annotations

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
