"""The Citus forms of statements (``asyncflow db distribute``; docs/scaling.md).

On a database whose workflow tables Citus distributes by workflow id, ``Storage`` renders each
statement through :func:`citus_form` instead of the plain text: the plain-Postgres statements stay
as they are. The rules, applied to every statement:

- ``clock_timestamp()`` becomes ``statement_timestamp()``: Citus refuses VOLATILE functions in
  UPDATEs of distributed tables, and evaluates a STABLE one on the coordinator;
- every ``pg_notify`` is cast to text (Citus cannot carry a ``void`` column between nodes) and
  its SELECT reads ``{s}.coordinator``, a one-row table that exists only on the coordinator: a
  SELECT that reads it can run nowhere else, so the NOTIFY always leaves from the coordinator
  (where the listeners are), in the statement's transaction -- never from the worker a statement
  routed to would have sent it from.

Statements that need more than the rules (claims by compare-and-set, tree walks) are spelled out
in ``OVERRIDES``.
"""

from __future__ import annotations

import re

from . import (
    batches,
    dashboard,
    deadlines,
    events,
    history,
    journal,
    liveness,
    operating,
    queues,
    retention,
    runs,
    workflows,
)

ANCHOR = "{s}.coordinator"

_NOTIFY = "pg_notify("
_KEYWORD = re.compile(r"\b(FROM|WHERE|GROUP|UNION|ORDER|LIMIT)\b|[()]|$")
_FROM_ITEM = re.compile(
    r"\s+[A-Za-z_{}.]+"
    r"(\s+(AS\s+)?(?!WHERE\b|GROUP\b|UNION\b|ORDER\b|LIMIT\b|LEFT\b|JOIN\b|ON\b)[A-Za-z_]+)?")


def _close(text: str, start: int) -> int:
    """The index just past the parenthesis closing the one opened before ``start``."""
    depth = 1
    i = start
    while depth:
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
        i += 1
    return i


def _anchor(text: str, start: int) -> str:
    """Make the SELECT whose target list continues at ``start`` read the anchor."""
    depth = 0
    i = start
    while True:
        match = _KEYWORD.search(text, i)
        assert match is not None
        token = match.group(0)
        if token == "(":
            depth += 1
        elif token == ")":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0:
            break
        i = match.end()
    at = match.start()
    if match.group(1) == "FROM":
        item = _FROM_ITEM.match(text, match.end())
        assert item is not None
        end = item.end()
        return text[:end] + ", " + ANCHOR + text[end:]
    return text[:at].rstrip() + " FROM " + ANCHOR + "\n" + text[at:]


def _anchor_notifies(text: str) -> str:
    i = text.find(_NOTIFY)
    while i >= 0:
        end = _close(text, i + len(_NOTIFY))
        if not text.startswith("::text", end):
            text = text[:end] + "::text" + text[end:]
            end += len("::text")
        # the end of the expression holding it (a CASE ... END), then the SELECT's FROM
        if ANCHOR not in text[end:end + 400].split("SELECT")[0]:
            text = _anchor(text, end)
        i = text.find(_NOTIFY, end)
    return text


def _rules(template: str) -> str:
    text = template.replace("clock_timestamp()", "statement_timestamp()")
    if _NOTIFY in text:
        text = _anchor_notifies(text)
    return text


def citus_form(template: str) -> str:
    """The statement to run for ``template`` on a distributed database."""
    return _rules(OVERRIDES.get(template, template))


def _swap(template: str, *pairs: tuple[str, str]) -> str:
    """``template`` with each (old, new) replaced; every old text must be there."""
    for old, new in pairs:
        assert old in template, (old, template)
        template = template.replace(old, new)
    return template


def _compare_and_set(template: str, target: str = "candidates") -> str:
    """A claim without row locks: the candidates (alias ``c``) are read with their epoch (no
    ``FOR ... SKIP LOCKED``, which Citus refuses across shards), and the UPDATE takes only rows
    whose epoch is still the one read. A concurrent claim bumped it: its UPDATE waits on the row,
    re-reads it and skips it, so two claimers never both take a workflow."""
    guard = "w.workflow_id = " + target + ".workflow_id"
    return _swap(
        template,
        ("SELECT c.workflow_id FROM", "SELECT c.workflow_id, c.epoch FROM"),
        ("\n    FOR NO KEY UPDATE OF c SKIP LOCKED", ""),
        (guard, guard + " AND w.epoch = " + target + ".epoch AND w.status = 'PENDING'"))


def _uncorrelated_pending(template: str) -> str:
    """A correlated ``NOT EXISTS`` over the workflows (Citus refuses it from a coordinator table)
    as an uncorrelated ``NOT IN`` (a subplan Citus runs once, on every shard)."""
    old = """NOT EXISTS (
        SELECT 1 FROM {s}.workflows w
        WHERE w.executor_id = e.executor_id AND w.status = 'PENDING')"""
    assert old in template
    lapsed = "e.beat_at <= clock_timestamp() - make_interval(secs => e.lease_seconds)"
    assert lapsed in template
    template = template.replace(lapsed, """e.executor_id IN (
           SELECT executor_id FROM {s}.executors
           WHERE beat_at <= clock_timestamp() - make_interval(secs => lease_seconds))""")
    return template.replace(old, """e.executor_id NOT IN (
        SELECT DISTINCT w.executor_id FROM {s}.workflows w
        WHERE w.status = 'PENDING' AND w.executor_id IS NOT NULL)""")


def _upsert_event(template: str) -> str:
    """An event's upsert whose ``DO UPDATE SET`` calls no function (Citus wants IMMUTABLE ones
    there): the time is inserted, and an update takes the inserted row's."""
    text = template.replace("updated_at = clock_timestamp(),\n                  version",
                            "updated_at = excluded.updated_at,\n                  version")
    text = text.replace(
        "(workflow_id, key, value, writer_fid) VALUES ($1, $2, $3, $5)",
        "(workflow_id, key, value, writer_fid, updated_at)"
        " VALUES ($1, $2, $3, $5, clock_timestamp())")
    text = text.replace(
        "(workflow_id, key, value, writer_fid)\n    SELECT workflow_id, $4, $5, $2 FROM op",
        "(workflow_id, key, value, writer_fid, updated_at)\n"
        "    SELECT workflow_id, $4, $5, $2, clock_timestamp() FROM op")
    assert "excluded.updated_at" in text and text.count("clock_timestamp()") == 1, template
    return text


def _error_in_select(template: str) -> str:
    """The deadline enforcer's recorded error built where the due rows are read (Citus refuses a
    STABLE function over columns, ``jsonb_build_object``, in an UPDATE)."""
    build = """jsonb_build_object(
            'v', 2, 'module', 'asyncflow', 'type', 'WorkflowTimeoutError',
            'message', due.message, 'args', jsonb_build_array(due.message),
            'attrs', jsonb_build_object(), 'traceback', '')::text"""
    assert build in template
    text = template.replace(build, "due.error")
    message = """'workflow ' || quote_literal(workflow_id) || ' timed out after '
           || coalesce(timeout_seconds::text, '?') || ' seconds and was cancelled'"""
    assert message in text
    return text.replace(message + " AS message", build.replace("due.message", "m.message")
                        .replace("\n", " ") + " AS error").replace(
        "    FROM {s}.workflows\n    WHERE deadline IS NOT NULL",
        "    FROM {s}.workflows, LATERAL (SELECT " + message + " AS message) m\n"
        "    WHERE deadline IS NOT NULL", 1)


#: A tree walk without a recursive CTE (Citus runs one only within a shard): the coordinator's
#: ``descendants`` function (``asyncflow db distribute``) reads one level per statement.
_TREE = """WITH RECURSIVE tree AS (
    SELECT c.workflow_id FROM {s}.workflows c WHERE c.parent_workflow_id = ANY ($1::text[])
    UNION
    SELECT c.workflow_id FROM {s}.workflows c JOIN tree t ON c.parent_workflow_id = t.workflow_id
)"""

_LOCK_TREE = """WITH RECURSIVE tree AS (
    SELECT workflow_id FROM {s}.workflows WHERE workflow_id = $1
    UNION
    SELECT c.workflow_id FROM {s}.workflows c JOIN tree t ON c.parent_workflow_id = t.workflow_id
    WHERE $2
)
SELECT w.workflow_id, w.status FROM {s}.workflows w
WHERE w.workflow_id IN (SELECT workflow_id FROM tree)
ORDER BY w.workflow_id
FOR UPDATE OF w"""

#: Row locks across shards by a no-op UPDATE (Citus refuses ``SELECT ... FOR UPDATE/SHARE`` on
#: more than one shard; an UPDATE locks every row it touches, on every shard, and Citus detects
#: distributed deadlocks).
_CITUS_LOCK_TREE = """WITH tree AS (
    SELECT $1::text AS workflow_id
    UNION
    SELECT d.workflow_id FROM {s}.descendants(ARRAY[$1::text]) d WHERE $2
), l AS (
    UPDATE {s}.workflows w SET status = w.status
    WHERE w.workflow_id IN (SELECT workflow_id FROM tree)
    RETURNING w.workflow_id, w.status
)
SELECT workflow_id, status FROM l ORDER BY workflow_id"""

#: The deduplication id held on a distributed database: Citus keeps no unique index that does
#: not hold the distribution column, so a transaction-level advisory lock on the coordinator
#: (queue and deduplication id) serializes the enqueues of one id, and each looks for a holder
#: only once it holds the lock (the lock is released after every node committed the enqueue
#: before it). Enqueues without a deduplication id take no lock.
_DEDUPLICATION_LOCK = """, dedup_lock AS (
    SELECT pg_advisory_xact_lock(
        hashtextextended('asyncflow-dedup:{s}:' || $6 || ':' || $8, 0))::text AS locked
    FROM {s}.coordinator WHERE $8::text IS NOT NULL
), holder AS (
    SELECT h.workflow_id FROM {s}.workflows h
    WHERE $8::text IS NOT NULL AND h.queue_name = $6 AND h.deduplication_id = $8
      AND h.status IN ('ENQUEUED', 'DELAYED', 'PENDING')
      AND (SELECT count(*) FROM dedup_lock) >= 0
    LIMIT 1
)"""

#: A batch's fence (its workflows PENDING at the epochs it was written for) locks their rows by a
#: no-op UPDATE: Citus refuses ``FOR SHARE`` on rows of more than one shard. The lock is
#: stronger (two batches of one workflow wait for each other, as two claims do), the fence the
#: same: a claim waits for the batch, or commits first and the batch writes nothing for it.
_SHARED_PENDING = """    SELECT w.workflow_id, w.epoch FROM {s}.workflows w
    WHERE w.workflow_id = ANY ($1::text[]) AND w.status = 'PENDING'
    FOR SHARE"""
_LOCKED_PENDING = """    UPDATE {s}.workflows w SET epoch = w.epoch
    WHERE w.workflow_id = ANY ($1::text[]) AND w.status = 'PENDING'
    RETURNING w.workflow_id, w.epoch"""


#: Whether another workflow of its queue holds a workflow's deduplication id, uncorrelated
#: (Citus refuses a correlated subquery over other shards): the held ids, read once.
_HELD_IDS = """(%W%.queue_name, %W%.deduplication_id) IN (
          SELECT h.queue_name, h.deduplication_id FROM {s}.workflows h
          WHERE h.deduplication_id IS NOT NULL
            AND h.status IN ('ENQUEUED', 'DELAYED', 'PENDING'))"""

_HOLDER = """(
    SELECT h.workflow_id FROM {s}.workflows h
    WHERE h.queue_name = w.queue_name AND h.deduplication_id = w.deduplication_id
      AND h.status IN ('ENQUEUED', 'DELAYED', 'PENDING') LIMIT 1) AS holder
FROM {s}.workflows w"""

_HOLDER_JOINED = """h.workflow_id AS holder
FROM {s}.workflows w
JOIN (SELECT DISTINCT ON (queue_name, deduplication_id) queue_name, deduplication_id,
             workflow_id
      FROM {s}.workflows
      WHERE deduplication_id IS NOT NULL AND status IN ('ENQUEUED', 'DELAYED', 'PENDING')
      ORDER BY queue_name, deduplication_id, workflow_id) h
  ON h.queue_name = w.queue_name AND h.deduplication_id = w.deduplication_id"""


_TERMINAL = ("'SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', "
             "'CONTINUED_AS_NEW'")

#: Deleting chosen workflows: the rows first, each only if still finished (a resume or claim
#: that got there first keeps it: no row locks across shards), then what the deleted rows own.
_DELETE_CHOSEN = """, d AS (
    DELETE FROM {s}.workflows WHERE workflow_id IN (SELECT workflow_id FROM chosen)
      AND status IN (""" + _TERMINAL + """)
    RETURNING workflow_id
), o AS (
    DELETE FROM {s}.operations WHERE workflow_id IN (SELECT workflow_id FROM d)
), e AS (
    DELETE FROM {s}.events WHERE workflow_id IN (SELECT workflow_id FROM d)
), h AS (
    DELETE FROM {s}.stream_heads WHERE workflow_id IN (SELECT workflow_id FROM d)
), v AS (
    DELETE FROM {s}.streams WHERE workflow_id IN (SELECT workflow_id FROM d)
)
SELECT workflow_id FROM d"""


OVERRIDES: dict[str, str] = {
    # The dashboard's queues: the figures aggregated per queue on every shard first (Citus
    # cannot join the coordinator's names to the workflows' shards), then matched to the names.
    dashboard.DASHBOARD_QUEUES: """
WITH counts AS MATERIALIZED (
    SELECT w.queue_name,
           count(*) FILTER (WHERE w.status = 'ENQUEUED') AS enqueued,
           count(*) FILTER (WHERE w.status = 'DELAYED') AS delayed,
           count(*) FILTER (WHERE w.status = 'PENDING') AS running,
           min(w.delay_until) FILTER (WHERE w.status = 'DELAYED') AS next_due,
           min(w.created_at) FILTER (WHERE w.status = 'ENQUEUED') AS oldest_enqueued
    FROM {s}.workflows w
    WHERE w.queue_name IS NOT NULL AND w.status IN ('ENQUEUED', 'DELAYED', 'PENDING')
    GROUP BY w.queue_name
), names AS (
    SELECT queue_name FROM {s}.queues
    UNION
    SELECT queue_name FROM counts
    UNION
    SELECT unnest($1::text[])
)
SELECT n.queue_name, coalesce(c.enqueued, 0) AS enqueued, coalesce(c.delayed, 0) AS delayed,
       coalesce(c.running, 0) AS running, c.next_due, c.oldest_enqueued
FROM names n LEFT JOIN counts c ON c.queue_name = n.queue_name
ORDER BY n.queue_name""",
    dashboard.DASHBOARD_LAST_ACTIVITY: """
SELECT w.id AS workflow_id, l.last_at
FROM unnest($1::text[]) AS w(id)
LEFT JOIN (
    SELECT DISTINCT ON (o.workflow_id) o.workflow_id, o.created_at AS last_at
    FROM {s}.operations o WHERE o.workflow_id = ANY ($1::text[])
    ORDER BY o.workflow_id, o.function_id DESC
) l ON l.workflow_id = w.id""",
    dashboard.DASHBOARD_QUEUE: """
WITH c AS MATERIALIZED (
    SELECT count(*) FILTER (WHERE status = 'ENQUEUED') AS enqueued,
           count(*) FILTER (WHERE status = 'DELAYED') AS delayed,
           count(*) FILTER (WHERE status = 'PENDING') AS running,
           min(delay_until) FILTER (WHERE status = 'DELAYED') AS next_due,
           min(created_at) FILTER (WHERE status = 'ENQUEUED') AS oldest_enqueued,
           count(*) AS active
    FROM {s}.workflows
    WHERE queue_name = $1 AND status IN ('ENQUEUED', 'DELAYED', 'PENDING')
)
SELECT enqueued, delayed, running, next_due, oldest_enqueued,
       active > 0 OR EXISTS (SELECT 1 FROM {s}.queues WHERE queue_name = $1) AS known
FROM c""",
    retention.RETENTION_DELETE: """
WITH chosen AS (
    SELECT c.workflow_id FROM {s}.retention_candidates($1, $2, $3, true) c
)""" + _DELETE_CHOSEN,
    retention.RETENTION_COUNT: """
SELECT count(*) FROM {s}.retention_candidates($1, $2, NULL, false)""",
    retention.RETENTION_BOUNDS: _swap(
        retention.RETENTION_BOUNDS, ("LEFT JOIN LATERAL (", "LEFT JOIN (")),
    history.FORK_COPY: """
SELECT operations, events, entries, run, notified
FROM {s}.fork_copy($1, $2, $3, $4)""",
    # Bulk resume: candidates read without row locks (the UPDATE re-checks each one's status),
    # deduplication ids held looked up once.
    operating.RESUME_MATCHING: _swap(
        operating.RESUME_MATCHING,
        ("\n    FOR NO KEY UPDATE OF w\n", "\n"),
        (operating._DEDUPLICATION_HELD.replace("%W%", "w"), _HELD_IDS.replace("%W%", "w"))),
    operating.RESUME_CONFLICTS: _swap(
        operating.RESUME_CONFLICTS,
        (_HOLDER, _HOLDER_JOINED),
        ("  AND " + operating._DEDUPLICATION_HELD.replace("%W%", "w") + "\n", "\n")),
    batches.RECORD_OPERATIONS: _swap(batches.RECORD_OPERATIONS,
                                     (_SHARED_PENDING, _LOCKED_PENDING)),
    batches.JOURNALED_WRITE_STREAMS: _swap(batches.JOURNALED_WRITE_STREAMS,
                                           (_SHARED_PENDING, _LOCKED_PENDING)),
    batches.JOURNALED_CLOSE_STREAMS: _swap(batches.JOURNALED_CLOSE_STREAMS,
                                           (_SHARED_PENDING, _LOCKED_PENDING)),
    runs.CONTINUE_AS_NEW: """
SELECT epoch, owned FROM {s}.continue_as_new($1, $2, $3, $4, $5, $6)""",
    # A queued workflow resumed with a deduplication id another workflow of its queue holds:
    # the coordinator's hold_deduplication_id refuses it as the unique index does on Postgres.
    workflows.RESUME_WORKFLOW: _swap(
        workflows.RESUME_WORKFLOW,
        ("WITH u AS (", """WITH r AS MATERIALIZED (
    SELECT queue_name, deduplication_id FROM {s}.workflows
    WHERE workflow_id = $1 AND queue_name IS NOT NULL AND deduplication_id IS NOT NULL
      AND status IN ('CANCELLED', 'ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
), dedup AS (
    SELECT {s}.hold_deduplication_id(r.queue_name, r.deduplication_id, $1) AS held
    FROM r, {s}.coordinator
), u AS ("""),
        ("    WHERE workflow_id = $1 AND status IN",
         "    WHERE (SELECT count(*) FROM dedup) >= 0 AND workflow_id = $1 AND status IN")),
    queues.ENQUEUE_WORKFLOW: _swap(
        queues.ENQUEUE_WORKFLOW,
        ("""    SELECT clock_timestamp() AS ts
)""", """    SELECT clock_timestamp() AS ts
)""" + _DEDUPLICATION_LOCK),
        ("    FROM t, owner WHERE owner.owned\n",
         "    FROM t, owner WHERE owner.owned AND NOT EXISTS (SELECT 1 FROM holder)\n"),
        ("""       (SELECT workflow_id FROM {s}.workflows
        WHERE queue_name = $6 AND deduplication_id = $8
          AND status IN ('ENQUEUED', 'DELAYED', 'PENDING')) AS holder""",
         "       (SELECT workflow_id FROM holder) AS holder")),
    queues.DEBOUNCE: """
SELECT extended, released, created, notified
FROM {s}.debounce($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
    operating.CANCEL_DESCENDANTS: _swap(operating.CANCEL_DESCENDANTS, (_TREE, """WITH tree AS (
    SELECT d.workflow_id FROM {s}.descendants($1::text[]) d
)""")),
    retention.LOCK_WORKFLOW_TREE: _swap(retention.LOCK_WORKFLOW_TREE,
                                        (_LOCK_TREE, _CITUS_LOCK_TREE)),
    retention.LOCK_PARENT: """
WITH l AS (
    UPDATE {s}.workflows p SET status = p.status
    WHERE p.workflow_id = (SELECT parent_workflow_id FROM {s}.workflows WHERE workflow_id = $1)
    RETURNING p.workflow_id, p.status
)
SELECT workflow_id, status FROM l""",
    retention.LOCK_READERS: """
WITH r AS (
    SELECT o.workflow_id, o.child_id FROM {s}.operations o
    WHERE o.child_id = ANY ($1::text[]) AND NOT (o.workflow_id = ANY ($1::text[]))
), l AS (
    UPDATE {s}.workflows w SET status = w.status
    WHERE w.workflow_id IN (SELECT workflow_id FROM r)
      AND w.status IN ('PENDING', 'ENQUEUED', 'DELAYED')
    RETURNING w.workflow_id, w.status
)
SELECT l.workflow_id, l.status, r.child_id FROM l JOIN r USING (workflow_id)
ORDER BY l.workflow_id""",
    operating.CANCEL_MATCHING: _swap(operating.CANCEL_MATCHING,
                                     ("\n    FOR NO KEY UPDATE OF w\n", "\n")),
    # A keyset page without the lateral walk per status (Citus cannot push it down): every
    # shard returns its first page in the same order and the coordinator merges them.
    operating.LIST_WORKFLOWS_PAGE: """
SELECT """ + workflows._STATUS_COLUMNS + """
FROM {s}.workflows w
WHERE """ + operating._FILTERS.replace("%STATUS%", "w.status = ANY ($1::text[])")
    + operating._AFTER_CURSOR + """
ORDER BY w.created_at DESC, w.workflow_id
LIMIT $10""",
    # No hand-over in a batch here (an UPDATE joined with the batch, across shards, with
    # subqueries on three distributed tables): its messages are stored. A single send's hand
    # is one shard's, and stays.
    batches.SEND_MESSAGES: _swap(
        batches.SEND_MESSAGES,
        (batches._HAND_OVER_MANY, """
    SELECT NULL::bigint AS ord, NULL::text AS workflow_id, NULL::int AS function_id
    WHERE false"""),
        ("WHERE EXISTS (SELECT 1 FROM {s}.workflows w WHERE w.workflow_id = i.destination_id)",
         "WHERE i.destination_id IN (\n        SELECT w.workflow_id FROM {s}.workflows w"
         " WHERE w.workflow_id = ANY ($1::text[]))"),
        ("       (SELECT w.status FROM {s}.workflows w"
         " WHERE w.workflow_id = i.destination_id) AS status,",
         "       s.status,"),
        ("FROM input i ORDER BY i.ord",
         "FROM input i LEFT JOIN (\n    SELECT w.workflow_id, w.status FROM {s}.workflows w"
         " WHERE w.workflow_id = ANY ($1::text[])\n) s ON s.workflow_id = i.destination_id\n"
         "ORDER BY i.ord")),
    events.SET_EVENT: _upsert_event(events.SET_EVENT),
    journal.JOURNALED_SET_EVENT: _upsert_event(journal.JOURNALED_SET_EVENT),
    deadlines.ENFORCE_DEADLINES: _error_in_select(deadlines.ENFORCE_DEADLINES),
    liveness.PRUNE_EXECUTORS: _uncorrelated_pending(liveness.PRUNE_EXECUTORS),
    workflows.CLAIM_WORKFLOWS: _compare_and_set(workflows.CLAIM_WORKFLOWS),
    queues.REQUEUE_ORPHANS: _compare_and_set(queues.REQUEUE_ORPHANS, target="orphans"),
}
