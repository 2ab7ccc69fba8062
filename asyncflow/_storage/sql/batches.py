"""Group commit: one statement writes many operations of one kind."""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Group commit (_batch): one statement writes many operations of one kind, reports a result per
# operation, and wakes every woken key with as few NOTIFYs as fit: a batched payload is '*'
# followed by items kind || length(id) || ':' || id (ids only, never user data), split so that
# no payload passes 8000 bytes (ids are at most 1000 bytes).
# ---------------------------------------------------------------------------------------------

_NOTIFY_WOKEN = """, chunks AS (
    SELECT item, sum(octet_length(item)) OVER (ORDER BY item ROWS UNBOUNDED PRECEDING) / 6000
           AS chunk
    FROM (SELECT DISTINCT item FROM woken) d
), notified AS (
    SELECT pg_notify(%CHANNEL%, '*' || string_agg(item, '')) FROM chunks GROUP BY chunk
)
"""

FINISH_WORKFLOWS = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $6::bigint[])
        AS i(workflow_id, status, output, error, epoch)
), u AS (
    UPDATE {s}.workflows w
    SET status = i.status, output = i.output, error = i.error, updated_at = clock_timestamp(),
        completed_at = clock_timestamp()
    FROM input i
    WHERE w.workflow_id = i.workflow_id AND w.status = 'PENDING' AND w.epoch = i.epoch
    RETURNING w.workflow_id, w.queue_name
), woken AS (
    SELECT 't' || char_length(workflow_id) || ':' || workflow_id AS item FROM u
    UNION ALL  -- a queued workflow ended: a slot of its queue may be free
    SELECT 'f' || char_length(queue_name) || ':' || queue_name AS item FROM u
    WHERE queue_name IS NOT NULL
)""" + _NOTIFY_WOKEN.replace("%CHANNEL%", "$5") + """
SELECT u.workflow_id, (SELECT count(*) FROM notified) AS notifies FROM u"""

# Rows 'r' (recorded) and 'p' (workflows still PENDING, with their epoch, share-locked as in
# _OWNED); a PENDING workflow's entry at its epoch that was not recorded already existed (another
# execution recorded it).
RECORD_OPERATIONS = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bool[], $8::float8[], $9::bigint[])
        AS i(workflow_id, function_id, name, output, error, child_id, completed, deadline,
             epoch)
), pending AS (
    SELECT w.workflow_id, w.epoch FROM {s}.workflows w
    WHERE w.workflow_id = ANY ($1::text[]) AND w.status = 'PENDING'
    FOR SHARE
), ins AS (
    INSERT INTO {s}.operations
        (workflow_id, function_id, name, output, error, child_id, completed, deadline)
    SELECT i.workflow_id, i.function_id, i.name, i.output, i.error, i.child_id, i.completed,
           i.deadline
    FROM input i WHERE (i.workflow_id, i.epoch) IN (SELECT workflow_id, epoch FROM pending)
    ON CONFLICT (workflow_id, function_id) DO NOTHING
    RETURNING workflow_id, function_id
)
SELECT 'r' AS kind, workflow_id, function_id, NULL::bigint AS epoch FROM ins
UNION ALL
SELECT 'p', workflow_id, NULL, epoch FROM pending"""

SEND_MESSAGES = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
        WITH ORDINALITY AS i(destination_id, topic, message, idempotency_key, traceparent, ord)
), known AS (
    SELECT i.* FROM input i
    WHERE EXISTS (SELECT 1 FROM {s}.workflows w WHERE w.workflow_id = i.destination_id)
), k AS (
    INSERT INTO {s}.message_keys (destination_id, idempotency_key)
    SELECT DISTINCT destination_id, idempotency_key FROM known WHERE idempotency_key IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING destination_id, idempotency_key
), chosen AS (
    SELECT * FROM known WHERE idempotency_key IS NULL
    UNION ALL
    (SELECT DISTINCT ON (known.destination_id, known.idempotency_key) known.*
     FROM known JOIN k USING (destination_id, idempotency_key)
     ORDER BY known.destination_id, known.idempotency_key, known.ord)
), ins AS (
    INSERT INTO {s}.messages (destination_id, topic, message, traceparent)
    SELECT destination_id, topic, message, traceparent FROM chosen ORDER BY ord
    RETURNING destination_id
), woken AS (
    SELECT 'm' || char_length(destination_id) || ':' || destination_id AS item FROM ins
)""" + _NOTIFY_WOKEN.replace("%CHANNEL%", "$6") + """
SELECT i.ord, i.ord IN (SELECT ord FROM known) AS found,
       i.ord IN (SELECT ord FROM chosen) AS inserted,
       (SELECT w.status FROM {s}.workflows w WHERE w.workflow_id = i.destination_id) AS status,
       (SELECT count(*) FROM notified) AS notifies
FROM input i ORDER BY i.ord"""

# $7: the recorded StreamClosedError of each write, journaled with it if its stream is closed.
# Offsets come from each stream head as of the statement's snapshot plus the write's position
# in the batch. A concurrent writer to the same stream (another process) makes two rows claim
# one offset: the streams primary key refuses that, and the batch is written again one by one
# (each write then takes the head's row lock). Written: rows 'o' (journaled), 'w' (appended, with
# the offset) and 'p' (workflows still PENDING).
JOURNALED_WRITE_STREAMS = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $7::text[],
                         $8::bigint[])
        WITH ORDINALITY AS i(workflow_id, function_id, name, key, value, error, epoch, ord)
), pending AS (
    SELECT w.workflow_id, w.epoch FROM {s}.workflows w
    WHERE w.workflow_id = ANY ($1::text[]) AND w.status = 'PENDING'
    FOR SHARE
), op AS (
    INSERT INTO {s}.operations (workflow_id, function_id, name, error, output)
    SELECT i.workflow_id, i.function_id, i.name, CASE WHEN EXISTS (
        SELECT 1 FROM {s}.stream_heads h
        WHERE h.workflow_id = i.workflow_id AND h.key = i.key AND h.closed
    ) THEN i.error END, '{"key":' || to_json(i.key)::text || '}'
    FROM input i
    WHERE (i.workflow_id, i.epoch) IN (SELECT workflow_id, epoch FROM pending)
    ON CONFLICT (workflow_id, function_id) DO NOTHING
    RETURNING workflow_id, function_id, error
), ok AS (
    SELECT i.*,
           row_number() OVER (PARTITION BY i.workflow_id, i.key ORDER BY i.ord) AS pos,
           count(*) OVER (PARTITION BY i.workflow_id, i.key) AS n
    FROM input i
    WHERE (i.workflow_id, i.function_id) IN (
        SELECT workflow_id, function_id FROM op WHERE error IS NULL)
), cur AS (
    SELECT ok.*, coalesce(h.next_offset, 0) AS base, coalesce(h.closed, false) AS closed
    FROM ok LEFT JOIN {s}.stream_heads h ON h.workflow_id = ok.workflow_id AND h.key = ok.key
), head AS (
    INSERT INTO {s}.stream_heads AS h (workflow_id, key, next_offset)
    SELECT workflow_id, key, n FROM cur WHERE pos = 1 AND NOT closed
    ON CONFLICT (workflow_id, key)
    DO UPDATE SET next_offset = h.next_offset + excluded.next_offset
    WHERE NOT h.closed
    RETURNING workflow_id, key
), ins AS (
    INSERT INTO {s}.streams (workflow_id, key, "offset", value, writer_fid, writer_seq)
    SELECT workflow_id, key, base + pos - 1, value, function_id, 0 FROM cur
    WHERE (workflow_id, key) IN (SELECT workflow_id, key FROM head)
    RETURNING workflow_id, writer_fid, "offset"
), woken AS (
    SELECT 's' || char_length(workflow_id) || ':' || workflow_id AS item FROM ins
)""" + _NOTIFY_WOKEN.replace("%CHANNEL%", "$6") + """
SELECT 'o' AS kind, workflow_id, function_id, NULL::bigint AS "offset",
       error IS NOT NULL AS refused, (SELECT count(*) FROM notified) AS notifies,
       NULL::bigint AS epoch FROM op
UNION ALL
SELECT 'w', workflow_id, writer_fid, "offset", NULL, NULL, NULL FROM ins
UNION ALL
SELECT 'p', workflow_id, NULL, NULL, NULL, NULL, epoch FROM pending"""

# Many readers' next pages in one query: rows tagged with the reader's ordinal (a reader whose
# workflow does not exist gets one row with a NULL status).
READ_STREAMS = """
SELECT i.ord, w.status, coalesce(h.closed, false) AS closed, r."offset", r.value
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[]) WITH ORDINALITY
    AS i(workflow_id, key, start, lim, ord)
LEFT JOIN {s}.workflows w ON w.workflow_id = i.workflow_id
LEFT JOIN {s}.stream_heads h ON h.workflow_id = i.workflow_id AND h.key = i.key
LEFT JOIN LATERAL (
    SELECT s."offset", s.value FROM {s}.streams s
    WHERE s.workflow_id = i.workflow_id AND s.key = i.key AND s."offset" >= i.start
    ORDER BY s."offset" LIMIT i.lim
) r ON w.workflow_id IS NOT NULL
ORDER BY i.ord, r."offset\""""
