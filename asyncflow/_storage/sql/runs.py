"""Endless workflows (continue_as_new) and workflow attributes."""

from __future__ import annotations

from .journal import _owned
from .workflows import _STATUS_COLUMNS

# ---------------------------------------------------------------------------------------------
# Endless workflows (continue_as_new) and workflow attributes
# ---------------------------------------------------------------------------------------------

# Continue workflow $1 as a new run, in one statement fenced like every write of an execution
# (PENDING at the execution's epoch $4, here under an update lock): with $5 (keep the run) the
# current run becomes a linked row $6 (status CONTINUED_AS_NEW, ``run_of`` $1, its inputs and
# attributes, the continue's entry #$2 with the new inputs, and its whole journal, moved);
# without, its journal is deleted. The row $1 then holds the new run: inputs $3, an empty
# journal whose function ids start at $2 + 1, the next run number and a bumped epoch (the new
# run's execution owns that epoch; a stale one is fenced out). Messages, events and streams
# stay with the workflow id. The kept run has no parent (it is linked by ``run_of``), so
# retention never keeps it for a parent still running. Returns the new epoch (no row: refused,
# not owned).
CONTINUE_AS_NEW = """
WITH cur AS (
    SELECT * FROM {s}.workflows
    WHERE workflow_id = $1 AND status = 'PENDING' AND epoch = $4
    FOR UPDATE
), arch AS (
    INSERT INTO {s}.workflows
        (workflow_id, name, status, inputs, output, executor_id, app_version,
         recovery_attempts, parent_workflow_id, created_at, updated_at, completed_at,
         traceparent, epoch, run, first_function_id, run_of, attributes)
    SELECT $6, name, 'CONTINUED_AS_NEW', inputs, $3, executor_id, app_version,
           recovery_attempts, NULL, clock_timestamp(), clock_timestamp(),
           clock_timestamp(), traceparent, epoch, run, first_function_id, workflow_id,
           attributes
    FROM cur WHERE $5
    ON CONFLICT (workflow_id) DO NOTHING
    RETURNING workflow_id
), entry AS (
    INSERT INTO {s}.operations (workflow_id, function_id, name, output)
    SELECT workflow_id, $2, 'asyncflow.continue_as_new', $3 FROM arch
), moved AS (
    UPDATE {s}.operations SET workflow_id = $6
    WHERE workflow_id = $1 AND EXISTS (SELECT 1 FROM arch)
), dropped AS (
    DELETE FROM {s}.operations
    WHERE workflow_id = $1 AND NOT $5 AND EXISTS (SELECT 1 FROM cur)
), u AS (
    UPDATE {s}.workflows w
    SET inputs = $3, epoch = w.epoch + 1, run = w.run + 1, first_function_id = $2 + 1,
        recovery_attempts = 0, updated_at = clock_timestamp()
    FROM cur
    WHERE w.workflow_id = cur.workflow_id AND (NOT $5 OR EXISTS (SELECT 1 FROM arch))
    RETURNING w.epoch
)
SELECT (SELECT epoch FROM u) AS epoch, EXISTS (SELECT 1 FROM cur) AS owned"""

# The earlier runs kept of workflow $1, newest first.
LIST_RUNS = "SELECT " + _STATUS_COLUMNS + """
FROM {s}.workflows w WHERE w.run_of = $1 ORDER BY w.run DESC"""

# Attributes: $2 (a JSON object) merged into (or, without $3, replacing) those of workflow $1.
# From a workflow's body the write is journaled (entry #$4, its output the attributes set) and
# fenced by the execution's epoch $5, in one statement.
SET_ATTRIBUTES = """
UPDATE {s}.workflows
SET attributes = CASE WHEN $3 THEN attributes || $2::jsonb ELSE $2::jsonb END,
    updated_at = clock_timestamp()
WHERE workflow_id = $1
RETURNING attributes::text"""

JOURNALED_SET_ATTRIBUTES = """
WITH op AS (
    INSERT INTO {s}.operations (workflow_id, function_id, name, output)
    SELECT $1, $4, 'asyncflow.set_attributes', $2 FROM """ + _owned("$5") + """
    RETURNING workflow_id
), u AS (
    UPDATE {s}.workflows
    SET attributes = CASE WHEN $3 THEN attributes || $2::jsonb ELSE $2::jsonb END,
        updated_at = clock_timestamp()
    WHERE workflow_id = (SELECT workflow_id FROM op)
    RETURNING 1
)
SELECT count(*) AS recorded FROM u"""

WORKFLOW_ATTRIBUTES = "SELECT attributes::text FROM {s}.workflows WHERE workflow_id = $1"
