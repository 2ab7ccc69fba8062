"""Streams: append, read, close."""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------

# Appending to a stream: the head row's lock serializes writers and hands out the next offset
# (nothing when the stream is closed); %HEAD% and %ROW% name where the values come from.
_STREAM_APPEND = """, head AS (
    INSERT INTO {s}.stream_heads (workflow_id, key, next_offset)
    SELECT %HEAD%
    ON CONFLICT (workflow_id, key)
    DO UPDATE SET next_offset = {s}.stream_heads.next_offset + 1
    WHERE NOT {s}.stream_heads.closed
    RETURNING next_offset - 1 AS "offset"
), ins AS (
    INSERT INTO {s}.streams (workflow_id, key, "offset", value, writer_fid, writer_seq)
    SELECT %ROW% FROM head
    RETURNING "offset"
)
"""

# A write is keyed by its writer (function id, sequence number within that function's run), so a
# retried or replayed step overwrites the value it wrote before instead of appending it again.
# Offsets come from the stream head row, whose lock serializes concurrent writers.
WRITE_STREAM = """
WITH existing AS (
    SELECT "offset" FROM {s}.streams
    WHERE workflow_id = $1 AND key = $2 AND writer_fid = $4 AND writer_seq = $5
), upd AS (
    UPDATE {s}.streams SET value = $3
    WHERE workflow_id = $1 AND key = $2 AND "offset" = (SELECT "offset" FROM existing)
    RETURNING "offset"
)""" + _STREAM_APPEND.replace(
    "%HEAD%", "$1, $2, 1 WHERE NOT EXISTS (SELECT 1 FROM existing)"
).replace("%ROW%", '$1, $2, "offset", $3, $4, $5') + """\
SELECT coalesce((SELECT "offset" FROM ins), (SELECT "offset" FROM upd)) AS "offset",
       pg_notify($6, 's' || $1)"""

# A closed stream's head names the operation that closed it first (closed_by: FORK_COPY's rule).
_FIRST_CLOSER = """closed_by = CASE WHEN {s}.stream_heads.closed
                                    THEN {s}.stream_heads.closed_by
                                    ELSE excluded.closed_by END"""

# $4: the function id of the step that closes it (with its checkpoint).
CLOSE_STREAM = """
WITH h AS (
    INSERT INTO {s}.stream_heads (workflow_id, key, next_offset, closed, closed_by)
    VALUES ($1, $2, 0, true, $4)
    ON CONFLICT (workflow_id, key) DO UPDATE SET closed = true, """ + _FIRST_CLOSER + """
    RETURNING workflow_id
)
SELECT pg_notify($3, 's' || workflow_id) FROM h"""

# One snapshot: the writer's status, whether the stream is closed, and the next rows.
READ_STREAM = """
SELECT w.status, coalesce(h.closed, false) AS closed, r."offset", r.value
FROM {s}.workflows w
LEFT JOIN {s}.stream_heads h ON h.workflow_id = w.workflow_id AND h.key = $2
LEFT JOIN LATERAL (
    SELECT "offset", value FROM {s}.streams
    WHERE workflow_id = $1 AND key = $2 AND "offset" >= $3
    ORDER BY "offset" LIMIT $4
) r ON true
WHERE w.workflow_id = $1
ORDER BY r."offset"
"""
