"""Operating workflows: filtered pages, cascading and bulk cancels, retention."""

from __future__ import annotations

from .batches import _NOTIFY_WOKEN
from .workflows import _STATUS_COLUMNS

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
