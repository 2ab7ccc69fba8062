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
# A deleted schedule's row (kept until a scheduler has started the ticks asked for before the
# deletion: migration 18) is left out of every read but the schedulers', which read it as
# paused: only those ticks start.
LIST_SCHEDULES = "SELECT " + _SCHEDULE_COLUMNS + """ FROM {s}.schedules WHERE NOT deleted
ORDER BY schedule_name"""
GET_SCHEDULE = "SELECT " + _SCHEDULE_COLUMNS + """ FROM {s}.schedules
WHERE schedule_name = $1 AND NOT deleted"""
_SCHEDULER_COLUMNS = _SCHEDULE_COLUMNS.replace("paused,", "(paused OR deleted) AS paused,")

# The schedules made with create_schedule whose workflow ($1: names) an app registers.
DYNAMIC_SCHEDULES = "SELECT " + _SCHEDULER_COLUMNS + """ FROM {s}.schedules
WHERE dynamic AND workflow_name = ANY ($1::text[]) ORDER BY schedule_name"""

# create_schedule: a new schedule (unpaused, from its next tick on), or a new definition of one
# made the same way (its paused flag, last tick and backfills kept; of a deleted one whose asked
# for ticks have not started yet, only those: it is new again). A schedule of the name that
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
        updated_at = clock_timestamp(), deleted = false,
        paused = schedules.paused AND NOT schedules.deleted,
        last_tick = CASE WHEN schedules.deleted THEN NULL ELSE schedules.last_tick END
    WHERE schedules.dynamic
    RETURNING schedule_name
), n AS (
    SELECT pg_notify($8, 'c') FROM up
)
SELECT (SELECT count(*) FROM n) AS stored"""

# delete_schedule, in one transaction: lock the schedule's row ($1; none: no such schedule) and
# read whether it was made with create_schedule (only those are deleted) and whether ticks asked
# for (a backfill, a manual trigger) have not started yet. Then the row goes, or, with such
# ticks, is marked deleted: a scheduler of it starts them, then removes it (ADVANCE_SCHEDULE).
# Either way every scheduler is woken ($2: the channel).
LOCK_SCHEDULE_TO_DELETE = """
SELECT dynamic, triggered_at IS NOT NULL OR cardinality(backfill_starts) > 0 AS asked
FROM {s}.schedules WHERE schedule_name = $1 AND NOT deleted FOR UPDATE"""
DELETE_SCHEDULE = """
WITH d AS (
    DELETE FROM {s}.schedules WHERE schedule_name = $1
    RETURNING schedule_name
)
SELECT pg_notify($2, 'c') FROM d"""
MARK_SCHEDULE_DELETED = """
WITH d AS (
    UPDATE {s}.schedules SET deleted = true, updated_at = clock_timestamp()
    WHERE schedule_name = $1
    RETURNING schedule_name
)
SELECT pg_notify($2, 'c') FROM d"""

# backfill_schedule: the range [$2, $3) is added to the schedule's backfills for a scheduler of
# it to run (woken by 'c' || name; $4: the channel). Nothing returned: no such schedule.
BACKFILL_SCHEDULE = """
WITH u AS (
    UPDATE {s}.schedules
    SET backfill_starts = backfill_starts || $2::timestamptz,
        backfill_ends = backfill_ends || $3::timestamptz, updated_at = clock_timestamp()
    WHERE schedule_name = $1 AND NOT deleted
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
    WHERE schedule_name = $1 AND NOT deleted
    RETURNING schedule_name
)
SELECT count(*) AS updated, CASE WHEN count(*) > 0 THEN pg_notify($4, 'c' || $1) END FROM u"""

# A scheduler's claim of ticks, in one transaction: lock and read the schedule's row, then move
# last_tick forward to the last tick it starts (the workflows are started in that transaction);
# $3: its manual trigger ran, $4: its backfills ran.
LOCK_SCHEDULE = "SELECT " + _SCHEDULER_COLUMNS + """ FROM {s}.schedules
WHERE schedule_name = $1 FOR UPDATE"""
# A deleted schedule's row goes once the ticks asked for before its deletion started (every
# scheduler is woken: $5, the channel); a row that is not deleted moves forward.
ADVANCE_SCHEDULE = """
WITH moved AS (
    UPDATE {s}.schedules
    SET last_tick = CASE WHEN last_tick IS NULL OR last_tick < $2 THEN $2 ELSE last_tick END,
        triggered_at = CASE WHEN $3 THEN NULL ELSE triggered_at END,
        backfill_starts = CASE WHEN $4 THEN ARRAY[]::timestamptz[] ELSE backfill_starts END,
        backfill_ends = CASE WHEN $4 THEN ARRAY[]::timestamptz[] ELSE backfill_ends END,
        updated_at = clock_timestamp()
    WHERE schedule_name = $1 AND NOT deleted
    RETURNING schedule_name
), gone AS (
    DELETE FROM {s}.schedules WHERE schedule_name = $1 AND deleted
    RETURNING schedule_name
)
SELECT pg_notify($5, 'c') FROM gone"""

# A manual trigger: recorded in the row (a trigger already waiting is kept: both callers get
# the same run) for a scheduler of the schedule to start, woken by 'c' || name.
TRIGGER_SCHEDULE = """
WITH u AS (
    UPDATE {s}.schedules SET triggered_at = coalesce(triggered_at, $2)
    WHERE schedule_name = $1 AND NOT deleted
    RETURNING schedule_name, triggered_at
)
SELECT u.triggered_at, pg_notify($3, 'c' || $1) FROM u"""
