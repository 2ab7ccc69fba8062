"""Events: set and get."""

from __future__ import annotations

from .journal import _owned
from .messages import _OPEN_WAIT_COMMIT

# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------

# $5: the function id of the step that sets it (with its checkpoint).
SET_EVENT = """
WITH u AS (
    INSERT INTO {s}.events (workflow_id, key, value, writer_fid) VALUES ($1, $2, $3, $5)
    ON CONFLICT (workflow_id, key)
    DO UPDATE SET value = excluded.value, writer_fid = excluded.writer_fid,
                  updated_at = clock_timestamp(),
                  version = {s}.events.version + 1
    RETURNING workflow_id
)
SELECT pg_notify($4, 'e' || workflow_id) FROM u"""

# $3 is the id of the workflow doing the waiting (NULL outside a workflow), to notice its cancel.
GET_EVENT = """
SELECT EXISTS (SELECT 1 FROM {s}.workflows WHERE workflow_id = $1) AS found,
       (SELECT value FROM {s}.events WHERE workflow_id = $1 AND key = $2) AS value,
       (SELECT status FROM {s}.workflows WHERE workflow_id = $3) AS waiter_status"""

# The first attempt of a get_event inside workflow $1 (function id $4, deadline $5): journal it,
# completed with the value if the event ($2, $3) is already set.
GET_EVENT_FIRST = """
WITH v AS (
    SELECT value FROM {s}.events WHERE workflow_id = $2 AND key = $3
), op AS (
    INSERT INTO {s}.operations (workflow_id, function_id, name, output, completed, deadline)
    SELECT $1, $4, 'asyncflow.get_event', (SELECT value FROM v), EXISTS (SELECT 1 FROM v), $5
    FROM """ + _owned("$6") + """
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM {s}.workflows WHERE workflow_id = $2) AS found,
       (SELECT value FROM v) AS value,
       (SELECT count(*) FROM op) AS recorded,
       """ + _OPEN_WAIT_COMMIT.replace("%TAKEN%", "EXISTS (SELECT 1 FROM v)")

# A watcher's snapshot: the workflow's status and the event's value and version.
WATCH_EVENT = """
SELECT w.status, e.value, e.version
FROM {s}.workflows w
LEFT JOIN {s}.events e ON e.workflow_id = w.workflow_id AND e.key = $2
WHERE w.workflow_id = $1"""

GET_ALL_EVENTS = """
SELECT key, value FROM {s}.events WHERE workflow_id = $1 ORDER BY key"""

WORKFLOW_EXISTS = "SELECT EXISTS (SELECT 1 FROM {s}.workflows WHERE workflow_id = $1)"
