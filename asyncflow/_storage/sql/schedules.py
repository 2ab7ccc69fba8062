"""Schedules: ticks claimed once, runtime schedules, backfills."""

from __future__ import annotations

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
