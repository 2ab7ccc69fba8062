"""History: export, import and fork of workflows."""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# History: export, import, fork (asyncflow._front.history) and the reads of a history replay. Rows
# travel whole, as JSON (to_jsonb / jsonb_populate_record), so columns that later migrations
# add travel with them.
# ---------------------------------------------------------------------------------------------

EXISTING_WORKFLOW_IDS = """
SELECT workflow_id FROM {s}.workflows WHERE workflow_id = ANY ($1::text[])"""

CHILD_WORKFLOW_IDS = """
SELECT workflow_id FROM {s}.workflows WHERE parent_workflow_id = ANY ($1::text[])"""

# Each export statement returns (workflow_id, row as JSON text) for the workflows $1.
EXPORT_WORKFLOWS = """
SELECT w.workflow_id, to_jsonb(w)::text AS row FROM {s}.workflows w
WHERE w.workflow_id = ANY ($1::text[]) ORDER BY w.created_at, w.workflow_id"""
EXPORT_OPERATIONS = """
SELECT o.workflow_id, to_jsonb(o)::text AS row FROM {s}.operations o
WHERE o.workflow_id = ANY ($1::text[]) ORDER BY o.workflow_id, o.function_id"""
EXPORT_EVENTS = """
SELECT e.workflow_id, to_jsonb(e)::text AS row FROM {s}.events e
WHERE e.workflow_id = ANY ($1::text[]) ORDER BY e.workflow_id, e.key"""
EXPORT_STREAM_HEADS = """
SELECT h.workflow_id, to_jsonb(h)::text AS row FROM {s}.stream_heads h
WHERE h.workflow_id = ANY ($1::text[]) ORDER BY h.workflow_id, h.key"""
EXPORT_STREAMS = """
SELECT e.workflow_id, to_jsonb(e)::text AS row FROM {s}.streams e
WHERE e.workflow_id = ANY ($1::text[]) ORDER BY e.workflow_id, e.key, e."offset\""""
# Pending messages, oldest first; their ids are assigned anew on import.
EXPORT_MESSAGES = """
SELECT m.destination_id AS workflow_id, (to_jsonb(m) - 'message_id')::text AS row
FROM {s}.messages m WHERE m.destination_id = ANY ($1::text[]) ORDER BY m.message_id"""
EXPORT_MESSAGE_KEYS = """
SELECT k.destination_id AS workflow_id, to_jsonb(k)::text AS row FROM {s}.message_keys k
WHERE k.destination_id = ANY ($1::text[]) ORDER BY k.destination_id, k.idempotency_key"""

# Import: the workflow row ($1, JSON) unless its id exists; then its other rows ($1, a JSON
# array each), in one transaction.
# A NOT NULL column with a default that a migration adds must get its default here too, so that
# exports written before that migration still import.
IMPORT_WORKFLOW = """
INSERT INTO {s}.workflows
SELECT * FROM jsonb_populate_record(NULL::{s}.workflows, jsonb_build_object(
    'recovery_attempts', 0, 'priority', 0, 'epoch', 0, 'created_at', clock_timestamp(),
    'updated_at', clock_timestamp(), 'run', 1, 'first_function_id', 0,
    'attributes', '{ }'::jsonb) || $1::jsonb)
ON CONFLICT (workflow_id) DO NOTHING
RETURNING workflow_id"""
IMPORT_OPERATIONS = """
INSERT INTO {s}.operations
SELECT * FROM jsonb_populate_recordset(NULL::{s}.operations, $1::jsonb)"""
IMPORT_EVENTS = """
INSERT INTO {s}.events SELECT * FROM jsonb_populate_recordset(NULL::{s}.events, $1::jsonb)"""
IMPORT_STREAM_HEADS = """
INSERT INTO {s}.stream_heads
SELECT * FROM jsonb_populate_recordset(NULL::{s}.stream_heads, $1::jsonb)"""
IMPORT_STREAMS = """
INSERT INTO {s}.streams SELECT * FROM jsonb_populate_recordset(NULL::{s}.streams, $1::jsonb)"""
IMPORT_MESSAGES = """
INSERT INTO {s}.messages (destination_id, topic, message, created_at)
SELECT r.destination_id, r.topic, r.message, coalesce(r.created_at, clock_timestamp())
FROM jsonb_populate_recordset(NULL::{s}.messages, $1::jsonb) WITH ORDINALITY AS r
ORDER BY r.ordinality"""
IMPORT_MESSAGE_KEYS = """
INSERT INTO {s}.message_keys
SELECT * FROM jsonb_populate_recordset(NULL::{s}.message_keys, $1::jsonb)"""
# Wake the recovery supervisors (an unassigned PENDING workflow $2 arrived), or the dispatchers
# of queue $2 (a queued workflow arrived).
NOTIFY_UNASSIGNED = "SELECT pg_notify($1, 'r' || $2)"
NOTIFY_QUEUE = "SELECT pg_notify($1, 'q' || $2)"

FORK_SOURCE = """
SELECT name, inputs, app_version, queue_name, priority, partition_key,
       dispatched_at IS NOT NULL AS dispatched, status = 'CONTINUED_AS_NEW' AS continued,
       (SELECT max(function_id) FROM {s}.operations WHERE workflow_id = $1) AS last_function_id
FROM {s}.workflows WHERE workflow_id = $1"""

# The fork of a queued workflow waits in the source's queue ($3, with its priority $4 and
# partition $5; no deduplication id, which the source may still hold): ENQUEUED, its queue's
# dispatchers notified at commit. dispatched_at is set when the source was dispatched ($9): the
# claim then sees a workflow with a journal (not fresh), loaded when it runs, by an app of its
# version. A source that never ran has no journal (nor a version, enqueued by a Client): its
# fork is fresh, like a new enqueue, and any app serving the queue runs it.
FORK_ENQUEUE = """
WITH ins AS (
    INSERT INTO {s}.workflows
        (workflow_id, name, status, inputs, app_version, queue_name, priority, partition_key,
         dispatched_at)
    VALUES ($1, $2, 'ENQUEUED', $6, $7, $3, $4, $5, CASE WHEN $9 THEN clock_timestamp() END)
    ON CONFLICT DO NOTHING
    RETURNING queue_name
)
SELECT (SELECT count(*) FROM ins) AS created,
       (SELECT pg_notify($8, 'q' || queue_name) FROM ins) AS notified"""

# The events of workflow $1 as they were before its operation $3 (key, value, updated_at, version,
# writer_fid): an event whose latest value an operation below $3 wrote (writer_fid; rows written
# before migration 19 name no writer and are told by their transaction, see below) is copied as
# it is; one set again from $3 on takes the value the workflow body's latest set_event below $3
# wrote, from that operation's journal entry ({"key": key, "value": value}, the value's text cut
# out as written: never re-encoded). A value only a step set (staged with its checkpoint, not
# journaled) and set again from $3 on is not kept anywhere.
_EVENTS_BEFORE = """
SELECT DISTINCT ON (c.key) c.key, c.value, c.updated_at, c.version, c.writer_fid FROM (
    SELECT ev.key, ev.value, ev.updated_at, ev.version, ev.writer_fid, 0 AS rank
    FROM {s}.events ev
    WHERE ev.workflow_id = $1 AND coalesce(ev.writer_fid < $3, ev.xmin::text IN (
        SELECT o.xmin::text FROM {s}.operations o
        WHERE o.workflow_id = $1 AND o.function_id < $3))
    UNION ALL
    SELECT j.key,
           left(substr(o.output,
                       char_length('{"key":' || to_json(j.key)::text || ',"value":') + 1), -1),
           o.created_at, count(*) OVER (PARTITION BY j.key), o.function_id, 1
    FROM {s}.operations o CROSS JOIN LATERAL (
        -- parsed only where it is a set_event's, whatever order the planner picks
        SELECT CASE WHEN o.name = 'asyncflow.set_event' THEN o.output::json ->> 'key' END AS key
    ) j
    WHERE o.workflow_id = $1 AND o.function_id < $3 AND o.name = 'asyncflow.set_event'
      AND j.key IS NOT NULL
) c
ORDER BY c.key, c.rank, c.writer_fid DESC"""

# Copy what workflow $1 recorded before function id $3 into the new workflow $2 (inserted just
# before, in the same transaction), and wake the supervisors (channel $4):
# - journal entries with function ids below $3;
# - the events as they were before $3 (_EVENTS_BEFORE);
# - stream entries whose writer (function id) is below $3, renumbered from offset 0;
# - a stream's closed flag, when an operation below $3 closed it (closed_by);
# - the function id the source's run starts at (a run after a continue_as_new numbers its
#   operations on from the run before) and the source's attributes.
# Rows written before migration 19 name no writer (NULL): those are told by their transaction.
# A workflow's set_event and close_stream are one statement with their journal entry, and a
# step's staged ones commit with its checkpoint, so such a row version shares its xmin with the
# entry of the operation that wrote it (the rule cannot tell apart rows that one transaction
# copied or imported together: hence the columns).
FORK_COPY = """
WITH run AS (
    UPDATE {s}.workflows w
    SET first_function_id = src.first_function_id, attributes = src.attributes
    FROM {s}.workflows src
    WHERE w.workflow_id = $2 AND src.workflow_id = $1
    RETURNING 1
), ops AS (
    INSERT INTO {s}.operations
        (workflow_id, function_id, name, output, error, child_id, completed, deadline,
         created_at, topic)
    SELECT $2, function_id, name, output, error, child_id, completed, deadline, created_at,
           topic
    FROM {s}.operations WHERE workflow_id = $1 AND function_id < $3
    RETURNING 1
), before AS (
    SELECT xmin::text AS x FROM {s}.operations WHERE workflow_id = $1 AND function_id < $3
), ev AS (
    INSERT INTO {s}.events (workflow_id, key, value, updated_at, version, writer_fid)
    SELECT $2, e.key, e.value, e.updated_at, e.version, e.writer_fid
    FROM (""" + _EVENTS_BEFORE + """) e
    RETURNING 1
), entries AS (
    SELECT key, value, writer_fid, writer_seq, created_at,
           row_number() OVER (PARTITION BY key ORDER BY "offset") - 1 AS pos
    FROM {s}.streams WHERE workflow_id = $1 AND writer_fid < $3
), heads AS (
    SELECT h.key, h.closed_by,
           h.closed AND coalesce(h.closed_by < $3, h.xmin::text IN (SELECT x FROM before))
               AS closed
    FROM {s}.stream_heads h WHERE h.workflow_id = $1
), new_heads AS (
    INSERT INTO {s}.stream_heads (workflow_id, key, next_offset, closed, closed_by)
    SELECT $2, h.key, (SELECT count(*) FROM entries e WHERE e.key = h.key), h.closed,
           CASE WHEN h.closed THEN h.closed_by END
    FROM heads h
    WHERE h.closed OR h.key IN (SELECT key FROM entries)
    RETURNING 1
), new_entries AS (
    INSERT INTO {s}.streams (workflow_id, key, "offset", value, writer_fid, writer_seq,
                             created_at)
    SELECT $2, key, pos, value, writer_fid, writer_seq, created_at FROM entries
    RETURNING 1
)
SELECT (SELECT count(*) FROM ops) AS operations, (SELECT count(*) FROM ev) AS events,
       (SELECT count(*) FROM new_entries) AS entries, (SELECT count(*) FROM run) AS run,
       pg_notify($4, 'r' || $2) AS notified"""
