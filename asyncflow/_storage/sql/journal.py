"""The journal: load, record, and the journaled effects, each fenced by ownership."""

from __future__ import annotations

from .streams import _FIRST_CLOSER, _STREAM_APPEND

# ---------------------------------------------------------------------------------------------
# The journal
# ---------------------------------------------------------------------------------------------

# The journal of the workflow's current run, and the function id its run starts at (a run
# started by continue_as_new numbers its operations on from the run before it: per-position
# ids and keys stay unique across runs), and its epoch. One row with NULL operation columns: an
# empty journal.
LOAD_JOURNAL = """
SELECT w.first_function_id, w.epoch, o.function_id, o.name, o.output, o.error, o.child_id,
       o.completed, o.deadline
FROM {s}.workflows w LEFT JOIN {s}.operations o ON o.workflow_id = w.workflow_id
WHERE w.workflow_id = $1"""

LIST_OPERATIONS = """
SELECT function_id, name, output, error, child_id, completed, deadline, created_at
FROM {s}.operations WHERE workflow_id = $1 ORDER BY function_id"""

# Every write of an execution is fenced by its ownership: the workflow ($1) is still PENDING and
# at the epoch the execution started with (%EPOCH%), read under a share lock on its row, so a
# claim (which bumps the epoch) either waits for the write to commit (and the new owner's journal
# load sees it) or commits first (and the write is refused). Refused: the workflow was cancelled
# or ended (the next operation stops), or it was claimed elsewhere (this execution stops).
_OWNED = """{s}.workflows WHERE workflow_id = $1 AND status = 'PENDING' AND epoch = %EPOCH%
    FOR SHARE"""


def _owned(epoch_param: str) -> str:
    return _OWNED.replace("%EPOCH%", epoch_param)


# A duplicate (workflow_id, function_id) is a unique violation: another execution recorded it.
RECORD_OPERATION = """
INSERT INTO {s}.operations
    (workflow_id, function_id, name, output, error, child_id, completed, deadline)
SELECT $1, $2, $3, $4, $5, $6, $7, $8
FROM """ + _owned("$9")

OPERATION_EXISTS = """
SELECT EXISTS (SELECT 1 FROM {s}.operations WHERE workflow_id = $1 AND function_id = $2)"""

COMPLETE_OPERATION = """
UPDATE {s}.operations SET output = $3, completed = true
WHERE workflow_id = $1 AND function_id = $2 AND NOT completed
  AND EXISTS (SELECT 1 FROM """ + _owned("$4") + ")"

# Journaled effects of a workflow: the journal entry and the effect in ONE statement (one round
# trip, atomic). ``recorded`` is 0 when the workflow is no longer PENDING (nothing was done); a
# duplicate journal entry is a unique violation and nothing is done either.
# The entry's output describes the effect for the dashboard's timeline and `workflow steps`
# (%OUTPUT%, built from the statement's own parameters): a replay never reads it.
_JOURNAL_ENTRY = """
WITH op AS (
    INSERT INTO {s}.operations (workflow_id, function_id, name, output)
    SELECT $1, $2, $3, %OUTPUT% FROM """ + _OWNED + """
    RETURNING workflow_id
)"""

# {"key": key, "value": value}
_SET_EVENT_OUTPUT = """'{"key":' || to_json($4::text)::text || ',"value":' || $5 || '}'"""
JOURNALED_SET_EVENT = _JOURNAL_ENTRY.replace("%EPOCH%", "$7").replace(
    "%OUTPUT%", _SET_EVENT_OUTPUT) + """, u AS (
    INSERT INTO {s}.events (workflow_id, key, value, writer_fid)
    SELECT workflow_id, $4, $5, $2 FROM op
    ON CONFLICT (workflow_id, key)
    DO UPDATE SET value = excluded.value, writer_fid = excluded.writer_fid,
                  updated_at = clock_timestamp(),
                  version = {s}.events.version + 1
    RETURNING workflow_id
)
SELECT (SELECT count(*) FROM op) AS recorded,
       (SELECT pg_notify($6, 'e' || workflow_id) FROM u) AS notified"""

# A write to a stream already closed is journaled with its failure ($7, the recorded
# StreamClosedError) in the same statement, so a replay raises it too. The entry's output is
# {"key": key} (the value is the stream's row, written by this function id).
JOURNALED_WRITE_STREAM = """
WITH op AS (
    INSERT INTO {s}.operations (workflow_id, function_id, name, error, output)
    SELECT $1, $2, $3, CASE WHEN EXISTS (
        SELECT 1 FROM {s}.stream_heads WHERE workflow_id = $1 AND key = $4 AND closed
    ) THEN $7 END, '{"key":' || to_json($4::text)::text || '}'
    FROM """ + _owned("$8") + """
    RETURNING workflow_id, error
)""" + _STREAM_APPEND.replace(
    "%HEAD%", "workflow_id, $4, 1 FROM op WHERE error IS NULL"
).replace("%ROW%", '$1, $4, "offset", $5, $2, 0') + """\
SELECT (SELECT count(*) FROM op) AS recorded, (SELECT "offset" FROM ins) AS "offset",
       coalesce((SELECT error IS NOT NULL FROM op), false) AS refused,
       (SELECT pg_notify($6, 's' || $1) FROM ins) AS notified"""

# {"key": key}; next_offset: the closed stream's length (when recorded).
JOURNALED_CLOSE_STREAM = _JOURNAL_ENTRY.replace("%EPOCH%", "$6").replace(
    "%OUTPUT%", """'{"key":' || to_json($4::text)::text || '}'""") + """, h AS (
    INSERT INTO {s}.stream_heads (workflow_id, key, next_offset, closed, closed_by)
    SELECT workflow_id, $4, 0, true, $2 FROM op
    ON CONFLICT (workflow_id, key) DO UPDATE SET closed = true, """ + _FIRST_CLOSER + """
    RETURNING workflow_id, next_offset
)
SELECT (SELECT count(*) FROM op) AS recorded, (SELECT next_offset FROM h) AS next_offset,
       (SELECT pg_notify($5, 's' || workflow_id) FROM h) AS notified"""

SET_OPERATION_ERROR = """
UPDATE {s}.operations SET error = $3 WHERE workflow_id = $1 AND function_id = $2
  AND EXISTS (SELECT 1 FROM """ + _owned("$4") + ")"
# An open wait ended by an error (the workflow it waits on does not exist): completed with the
# error, which replays raise again.
FAIL_OPERATION = """
UPDATE {s}.operations SET error = $3, completed = true
WHERE workflow_id = $1 AND function_id = $2 AND NOT completed
  AND EXISTS (SELECT 1 FROM """ + _owned("$4") + ")"
