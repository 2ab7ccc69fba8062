"""Group commit: one statement writes many operations of one kind."""

from __future__ import annotations

from .streams import _FIRST_CLOSER

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

# The batched form of messages._HAND_OVER: the first message of each mailbox in the batch
# (``first``) completes that mailbox's waiting recv, if the conditions hold; ``handed`` is the
# recv's function id.
_HAND_OVER_MANY = """
    UPDATE {s}.operations o SET output = f.message, completed = true,
                                traceparent = f.traceparent
    FROM first f
    WHERE o.workflow_id = f.destination_id AND NOT o.completed AND o.name = 'asyncflow.recv'
      AND o.handoff AND o.topic IS NOT DISTINCT FROM f.topic
      AND o.function_id = (SELECT max(l.function_id) FROM {s}.operations l
                           WHERE l.workflow_id = o.workflow_id)
      AND NOT EXISTS (SELECT 1 FROM {s}.messages m
                      WHERE m.destination_id = o.workflow_id
                        AND m.topic IS NOT DISTINCT FROM o.topic)
      AND EXISTS (SELECT 1 FROM {s}.workflows w
                  WHERE w.workflow_id = o.workflow_id AND w.status = 'PENDING')
    RETURNING f.ord, o.workflow_id, o.function_id"""

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
), first AS (
    SELECT DISTINCT ON (destination_id, topic) * FROM chosen
    ORDER BY destination_id, topic, ord
), hand AS (""" + _HAND_OVER_MANY + """
), ins AS (
    INSERT INTO {s}.messages (destination_id, topic, message, traceparent)
    SELECT destination_id, topic, message, traceparent FROM chosen
    WHERE ord NOT IN (SELECT ord FROM hand) ORDER BY ord
    RETURNING destination_id
), woken AS (
    SELECT 'm' || char_length(destination_id) || ':' || destination_id AS item FROM ins
    UNION ALL
    SELECT 'm' || char_length(workflow_id) || ':' || workflow_id FROM hand
)""" + _NOTIFY_WOKEN.replace("%CHANNEL%", "$6") + """
SELECT i.ord, i.ord IN (SELECT ord FROM known) AS found,
       i.ord IN (SELECT ord FROM chosen) AS inserted,
       (SELECT w.status FROM {s}.workflows w WHERE w.workflow_id = i.destination_id) AS status,
       (SELECT count(*) FROM notified) AS notifies,
       (SELECT h.function_id FROM hand h WHERE h.ord = i.ord) AS handed
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
    -- coalesce(…, false) means the same as the bare IN here; it keeps the planner from a
    -- semi-join it plans as a nested loop over both CTEs (n² for a batch of n) and makes the
    -- IN a hashed subplan instead (also in JOURNALED_CLOSE_STREAMS).
    WHERE coalesce((workflow_id, key) IN (SELECT workflow_id, key FROM head), false)
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

# Closes (JOURNALED_CLOSE_STREAM's parameters as arrays, $5 the channel): rows 'o' (journaled:
# its stream is closed), 'h' (each stream closed, with its length: next_offset) and 'p'
# (workflows still PENDING, with their epoch, share-locked as in _OWNED): a PENDING workflow's
# close at its epoch that was not journaled already existed (another execution journaled it).
JOURNALED_CLOSE_STREAMS = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $6::bigint[])
        AS i(workflow_id, function_id, name, key, epoch)
), pending AS (
    SELECT w.workflow_id, w.epoch FROM {s}.workflows w
    WHERE w.workflow_id = ANY ($1::text[]) AND w.status = 'PENDING'
    FOR SHARE
), op AS (
    INSERT INTO {s}.operations (workflow_id, function_id, name, output)
    SELECT i.workflow_id, i.function_id, i.name, '{"key":' || to_json(i.key)::text || '}'
    FROM input i
    WHERE (i.workflow_id, i.epoch) IN (SELECT workflow_id, epoch FROM pending)
    ON CONFLICT (workflow_id, function_id) DO NOTHING
    RETURNING workflow_id, function_id
), h AS (
    INSERT INTO {s}.stream_heads (workflow_id, key, next_offset, closed, closed_by)
    SELECT DISTINCT ON (i.workflow_id, i.key) i.workflow_id, i.key, 0::bigint, true,
           i.function_id
    FROM input i
    WHERE coalesce((i.workflow_id, i.function_id) IN (SELECT workflow_id, function_id FROM op),
                   false)
    ORDER BY i.workflow_id, i.key, i.function_id
    ON CONFLICT (workflow_id, key) DO UPDATE SET closed = true, """ + _FIRST_CLOSER + """
    RETURNING workflow_id, key, next_offset
), woken AS (
    SELECT 's' || char_length(workflow_id) || ':' || workflow_id AS item FROM h
)""" + _NOTIFY_WOKEN.replace("%CHANNEL%", "$5") + """
SELECT 'o' AS kind, workflow_id, function_id, (SELECT count(*) FROM notified) AS notifies,
       NULL::bigint AS epoch, NULL::text AS key, NULL::bigint AS next_offset FROM op
UNION ALL
SELECT 'p', workflow_id, NULL, NULL, epoch, NULL, NULL FROM pending
UNION ALL
SELECT 'h', workflow_id, NULL, NULL, NULL, key, next_offset FROM h"""

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

# Many starts in one statement ($1-$9, $11, $12: arrays of INSERT_WORKFLOW's parameters; $10 the
# channel): rows 'c' (created, with the row's name) and 'e' (the id existed before: its name).
# An id in neither (the parent's execution no longer owns the parent, or a concurrent insert
# committed after this statement's snapshot) is written again alone. One start per id in a batch
# (the caller's rule).
INSERT_WORKFLOWS = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::float8[], $9::float8[], $11::bigint[],
                         $12::text[])
        AS i(workflow_id, name, inputs, executor_id, app_version, parent_id, traceparent,
             timeout_seconds, deadline, parent_epoch, attributes)
), ins AS (
    INSERT INTO {s}.workflows
        (workflow_id, name, status, inputs, executor_id, app_version, parent_workflow_id,
         traceparent, timeout_seconds, deadline, epoch, attributes)
    SELECT i.workflow_id, i.name, 'PENDING', i.inputs, i.executor_id, i.app_version,
           i.parent_id, i.traceparent, i.timeout_seconds, i.deadline, 1,
           coalesce(i.attributes::jsonb, '{ }')
    FROM input i
    WHERE i.parent_epoch IS NULL OR EXISTS (
        SELECT 1 FROM {s}.workflows p
        WHERE p.workflow_id = i.parent_id AND p.status = 'PENDING'
          AND p.epoch = i.parent_epoch FOR SHARE)
    ON CONFLICT (workflow_id) DO NOTHING
    RETURNING workflow_id, name, deadline
)
SELECT 'c' AS kind, workflow_id, name,
       (SELECT count(pg_notify($10, 'd')) FROM (SELECT 1 FROM ins WHERE deadline IS NOT NULL
                                                LIMIT 1) d) AS notified
FROM ins
UNION ALL
SELECT 'e', workflow_id, name, NULL FROM {s}.workflows
WHERE workflow_id = ANY ($1::text[])"""

# Many recvs' later attempts in one statement (RECV_TOPIC / RECV_NO_TOPIC for each op: $1
# workflow, $2 topic, $3 function id, $4 the execution's epoch). Rows 'm' (a message taken for
# op #ord, consumed when its open entry was completed and the message deleted), 's' (each
# workflow's status and epoch) and 'h' (op #ord's entry was completed before the statement, by
# a send that handed its message over: see messages._HAND_OVER). One op per mailbox in a batch
# (the caller's rule).
_RECV_LATERAL = """
    SELECT i.ord, i.workflow_id, i.function_id, i.epoch, x.message_id, x.message, x.traceparent
    FROM input i CROSS JOIN LATERAL (
        SELECT message_id, message, traceparent FROM {s}.messages
        WHERE destination_id = i.workflow_id AND %TOPIC%
        ORDER BY message_id LIMIT 1
        FOR UPDATE SKIP LOCKED
    ) x
    WHERE %WHICH%"""
RECV_MANY = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[])
        WITH ORDINALITY AS i(workflow_id, topic, function_id, epoch, ord)
), m AS (""" + _RECV_LATERAL.replace("%TOPIC%", "topic = i.topic").replace(
    "%WHICH%", "i.topic IS NOT NULL") + """
    UNION ALL""" + _RECV_LATERAL.replace("%TOPIC%", "topic IS NULL").replace(
    "%WHICH%", "i.topic IS NULL") + """
), pending AS (
    SELECT w.workflow_id, w.epoch FROM {s}.workflows w
    WHERE w.workflow_id = ANY ($1::text[]) AND w.status = 'PENDING'
    FOR SHARE
), op AS (
    UPDATE {s}.operations o SET output = m.message, completed = true
    FROM m
    WHERE o.workflow_id = m.workflow_id AND o.function_id = m.function_id AND NOT o.completed
      AND (m.workflow_id, m.epoch) IN (SELECT workflow_id, epoch FROM pending)
    RETURNING m.message_id
), d AS (
    DELETE FROM {s}.messages WHERE message_id IN (SELECT message_id FROM op)
    RETURNING message_id
)
SELECT 'm' AS kind, ord, NULL AS workflow_id, message, traceparent,
       message_id IN (SELECT message_id FROM d) AS consumed, NULL AS status,
       NULL::bigint AS epoch
FROM m
UNION ALL
SELECT 's', NULL, workflow_id, NULL, NULL, NULL, status, epoch FROM {s}.workflows
WHERE workflow_id = ANY ($1::text[])
UNION ALL
SELECT 'h', i.ord, NULL, o.output, o.traceparent, NULL, NULL, NULL
FROM input i JOIN (
    SELECT workflow_id, function_id, output, traceparent FROM {s}.operations
    WHERE workflow_id = ANY ($1::text[]) AND function_id = ANY ($3::int[]) AND completed
) o ON o.workflow_id = i.workflow_id AND o.function_id = i.function_id"""

# Many recvs' first attempts in one statement (RECV_FIRST_TOPIC / RECV_FIRST_NO_TOPIC for each
# op: $1 workflow, $2 topic, $3 function id, $4 deadline, $5 the execution's epoch). Rows 'r'
# (journaled: the message taken, if any), 'p' (workflows still PENDING, with their epoch: an
# entry of a PENDING workflow at its epoch that was not journaled already existed) and one 'c'
# row, which commits asynchronously when no op took a message (see _OPEN_WAIT_COMMIT). One op
# per mailbox (workflow and topic) in a batch (the caller's rule).
RECV_FIRST_MANY = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::float8[], $5::bigint[])
        WITH ORDINALITY AS i(workflow_id, topic, function_id, deadline, epoch, ord)
), m AS (
    SELECT i.*, x.message_id, x.message, x.traceparent FROM input i
    LEFT JOIN LATERAL (
        SELECT message_id, message, traceparent FROM {s}.messages
        WHERE destination_id = i.workflow_id AND topic = i.topic
        ORDER BY message_id LIMIT 1
        FOR UPDATE SKIP LOCKED
    ) x ON true
    WHERE i.topic IS NOT NULL
    UNION ALL
    SELECT i.*, x.message_id, x.message, x.traceparent FROM input i
    LEFT JOIN LATERAL (
        SELECT message_id, message, traceparent FROM {s}.messages
        WHERE destination_id = i.workflow_id AND topic IS NULL
        ORDER BY message_id LIMIT 1
        FOR UPDATE SKIP LOCKED
    ) x ON true
    WHERE i.topic IS NULL
), pending AS (
    SELECT w.workflow_id, w.epoch FROM {s}.workflows w
    WHERE w.workflow_id = ANY ($1::text[]) AND w.status = 'PENDING'
    FOR SHARE
), op AS (
    INSERT INTO {s}.operations
        (workflow_id, function_id, name, output, completed, deadline, topic, handoff)
    SELECT workflow_id, function_id, 'asyncflow.recv', message, message_id IS NOT NULL,
           deadline, topic, true
    FROM m WHERE (workflow_id, epoch) IN (SELECT workflow_id, epoch FROM pending)
    ON CONFLICT (workflow_id, function_id) DO NOTHING
    RETURNING workflow_id, function_id
), d AS (
    DELETE FROM {s}.messages WHERE message_id IN (
        SELECT message_id FROM m
        WHERE (workflow_id, function_id) IN (SELECT workflow_id, function_id FROM op))
    RETURNING message_id
)
SELECT 'r' AS kind, m.ord, m.workflow_id, m.message, m.traceparent,
       m.message_id IN (SELECT message_id FROM d) AS consumed, NULL::bigint AS epoch,
       NULL AS commit_mode
FROM m WHERE (m.workflow_id, m.function_id) IN (SELECT workflow_id, function_id FROM op)
UNION ALL
SELECT 'p', NULL, workflow_id, NULL, NULL, NULL, epoch, NULL FROM pending
UNION ALL
SELECT 'c', NULL, NULL, NULL, NULL, NULL, NULL, set_config('synchronous_commit', CASE WHEN
           EXISTS (SELECT 1 FROM m WHERE message_id IS NOT NULL)
           THEN current_setting('synchronous_commit') ELSE 'off' END, true)"""

# Many outcome checks in one query (the ids that exist).
WORKFLOW_RESULTS = """
SELECT workflow_id, status, output, error FROM {s}.workflows WHERE workflow_id = ANY ($1::text[])"""
