"""Deploying new code: stranded workflows, their adoption, the versions view."""

from __future__ import annotations

from .liveness import _LIVE_EXECUTORS

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
