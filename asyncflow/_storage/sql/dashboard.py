"""The dashboard's read-only queries."""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Dashboard (asyncflow._dashboard): read-only queries. Large values are cut with left(): the
# page shows at most $n characters of a value and its full length.
# ---------------------------------------------------------------------------------------------

# A workflow's inputs, output and error (the recorded exception as JSON), each cut to $2 chars.
DASHBOARD_WORKFLOW_DATA = """
SELECT left(inputs, $2) AS inputs, length(inputs) AS inputs_length,
       left(output, $2) AS output, length(output) AS output_length,
       left(error, $2) AS error, length(error) AS error_length
FROM {s}.workflows WHERE workflow_id = $1"""

# The messages waiting in a workflow's mailboxes (every topic), oldest first: at most $2 of
# them, each cut to $3 chars, with the total count.
DASHBOARD_PENDING_MESSAGES = """
SELECT message_id, topic, left(message, $3) AS message, length(message) AS length, created_at,
       count(*) OVER () AS total
FROM {s}.messages WHERE destination_id = $1
ORDER BY message_id LIMIT $2"""

# A workflow's streams (at most $2 keys, by key) with the last $3 entries of each, cut to $4
# chars. A stream with no entries yet (closed before any write) has one row with a NULL offset.
# A workflow's stream keys, key $2 first if it has that stream (the CLI's unknown-key check).
STREAM_KEYS = """
SELECT key FROM {s}.stream_heads WHERE workflow_id = $1 ORDER BY key <> $2, key LIMIT $3"""

DASHBOARD_STREAMS = """
SELECT h.key, h.next_offset, h.closed, e."offset", e.value, e.length
FROM (
    SELECT key, next_offset, closed FROM {s}.stream_heads
    WHERE workflow_id = $1 ORDER BY key LIMIT $2
) h
LEFT JOIN LATERAL (
    SELECT "offset", left(value, $4) AS value, length(value) AS length FROM {s}.streams
    WHERE workflow_id = $1 AND key = h.key
    ORDER BY "offset" DESC LIMIT $3
) e ON true
ORDER BY h.key, e."offset"
"""

# The queues known to the database: those with a row in `queues` (created by a dispatcher's
# first claim), those that active workflows (ENQUEUED, DELAYED, PENDING) name, and the names $1
# (the serving app's registered queues). Per queue: its depth (ENQUEUED, DELAYED), its running
# workflows (PENDING), when the next DELAYED one is due and since when the oldest ENQUEUED one
# waits. Only active rows are read (the partial queue indexes): finished workflows are not
# counted, and a queue none of whose workflows was ever dispatched is gone once they ended.
DASHBOARD_QUEUES = """
WITH names AS (
    SELECT queue_name FROM {s}.queues
    UNION
    SELECT queue_name FROM {s}.workflows
    WHERE queue_name IS NOT NULL AND status IN ('ENQUEUED', 'DELAYED', 'PENDING')
    UNION
    SELECT unnest($1::text[])
)
SELECT n.queue_name,
       count(w.workflow_id) FILTER (WHERE w.status = 'ENQUEUED') AS enqueued,
       count(w.workflow_id) FILTER (WHERE w.status = 'DELAYED') AS delayed,
       count(w.workflow_id) FILTER (WHERE w.status = 'PENDING') AS running,
       min(w.delay_until) FILTER (WHERE w.status = 'DELAYED') AS next_due,
       min(w.created_at) FILTER (WHERE w.status = 'ENQUEUED') AS oldest_enqueued
FROM names n
LEFT JOIN {s}.workflows w
    ON w.queue_name = n.queue_name AND w.status IN ('ENQUEUED', 'DELAYED', 'PENDING')
GROUP BY n.queue_name
ORDER BY n.queue_name"""

# One queue ($1), the same figures; ``known``: it has a row in `queues` or active workflows.
DASHBOARD_QUEUE = """
SELECT count(*) FILTER (WHERE status = 'ENQUEUED') AS enqueued,
       count(*) FILTER (WHERE status = 'DELAYED') AS delayed,
       count(*) FILTER (WHERE status = 'PENDING') AS running,
       min(delay_until) FILTER (WHERE status = 'DELAYED') AS next_due,
       min(created_at) FILTER (WHERE status = 'ENQUEUED') AS oldest_enqueued,
       count(*) > 0 OR EXISTS (SELECT 1 FROM {s}.queues WHERE queue_name = $1) AS known
FROM {s}.workflows
WHERE queue_name = $1 AND status IN ('ENQUEUED', 'DELAYED', 'PENDING')"""

# A workflow's journal: its first and last function ids, and when the last entry was recorded
# (the workflow's last activity: checkpoints do not touch its row). Two probes of the primary
# key, whatever the journal's length; no row when it is empty.
DASHBOARD_JOURNAL_SPAN = """
SELECT f.function_id AS first, l.function_id AS last, l.created_at AS last_at
FROM (SELECT function_id FROM {s}.operations WHERE workflow_id = $1
      ORDER BY function_id LIMIT 1) f,
     (SELECT function_id, created_at FROM {s}.operations WHERE workflow_id = $1
      ORDER BY function_id DESC LIMIT 1) l"""

# When each workflow of $1 last recorded a journal entry (NULL: none yet).
DASHBOARD_LAST_ACTIVITY = """
SELECT w.id AS workflow_id,
       (SELECT o.created_at FROM {s}.operations o WHERE o.workflow_id = w.id
        ORDER BY o.function_id DESC LIMIT 1) AS last_at
FROM unnest($1::text[]) AS w(id)"""

# The journal entries with function ids in [$2, $3), with what each did: ``key`` (an event's,
# a stream's), ``topic`` and ``target`` (a send's), and ``value`` (cut to $4 chars; ``length``
# is the full length): a step's or a wait's recorded output, the value an event was set to, the
# message sent, the entry a stream write appended (the stream's row written by that function
# id). Built-in entries record a JSON description as their output (``{"key": …, "value": …}``);
# entries recorded before they did show what they have.
_DESCRIBED = """('asyncflow.set_event', 'asyncflow.send', 'asyncflow.close_stream',
                 'asyncflow.write_stream')"""
DASHBOARD_OPERATIONS = """
SELECT o.function_id, o.name, o.child_id, o.completed, o.created_at,
       left(o.error, $4) AS error, d.j ->> 'key' AS key,
       coalesce(o.topic, d.j ->> 'topic') AS topic,
       d.j ->> 'to' AS target, left(v.value, $4) AS value, length(v.value) AS length
FROM {s}.operations o
CROSS JOIN LATERAL (
    SELECT CASE WHEN o.name IN """ + _DESCRIBED + """ AND left(o.output, 1) = '{'
                THEN o.output::jsonb END AS j
) d
LEFT JOIN LATERAL (
    SELECT e.value FROM {s}.streams e
    WHERE o.name = 'asyncflow.write_stream' AND e.workflow_id = o.workflow_id
      AND e.key = d.j ->> 'key' AND e.writer_fid = o.function_id AND e.writer_seq = 0
) w ON true
CROSS JOIN LATERAL (
    SELECT CASE WHEN o.name = 'asyncflow.write_stream' THEN w.value
                WHEN o.name = 'asyncflow.set_event' AND d.j IS NOT NULL
                    THEN (d.j -> 'value')::text
                WHEN o.name = 'asyncflow.send' AND d.j IS NOT NULL
                    THEN (d.j -> 'message')::text
                WHEN o.name IN """ + _DESCRIBED + """ THEN NULL
                ELSE o.output END AS value
) v
WHERE o.workflow_id = $1 AND o.function_id >= $2 AND o.function_id < $3
ORDER BY o.function_id"""
