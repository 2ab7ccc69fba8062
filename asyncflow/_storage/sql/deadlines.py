"""Workflow deadlines: the guarded cancel of an overdue workflow."""

from __future__ import annotations

from .operating import _NOTIFY_CANCELLED

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
