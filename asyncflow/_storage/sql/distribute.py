"""The distribution plan of ``asyncflow db distribute`` (docs/scaling.md), ending with the
coordinator functions of :mod:`.coordinator`. Every step may run again: a table already
distributed is left alone, the rest is IF NOT EXISTS / OR REPLACE. Only
``asyncflow._storage.citus`` runs these, and only on a database with Citus.
"""

from __future__ import annotations

from .coordinator import (
    CLAIM_QUEUED_FUNCTION,
    CONTINUE_AS_NEW_FUNCTION,
    DEBOUNCE_FUNCTION,
    DESCENDANTS_FUNCTION,
    FORK_COPY_FUNCTION,
    HOLD_DEDUPLICATION_FUNCTION,
    RETENTION_CANDIDATES_FUNCTION,
)

# ---------------------------------------------------------------------------------------------
# The distribution plan (``asyncflow db distribute``, docs/scaling.md). Every step may run again:
# a table already distributed is left alone, the rest is IF NOT EXISTS / OR REPLACE.
# ---------------------------------------------------------------------------------------------

#: Whether this database runs Citus (plain Postgres: refused).
CITUS_VERSION = "SELECT extversion FROM pg_extension WHERE extname = 'citus'"

#: Whether the schema is distributed: its anchor table exists (only ``distribute`` makes it) and
#: Citus is installed. Read once when the storage opens; ``$1`` is ``<schema>.coordinator``.
IS_DISTRIBUTED = """
SELECT to_regclass($1) IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"""

#: The schema's tables Citus distributes already ($1: the schema name).
DISTRIBUTED_TABLES = """
SELECT c.relname::text FROM pg_dist_partition p
JOIN pg_class c ON c.oid = p.logicalrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1"""

#: Nodes that may hold shards (the workers, and the coordinator if it was made to hold some).
SHARD_NODES = """
SELECT count(*) FROM pg_dist_node
WHERE noderole = 'primary' AND isactive AND shouldhaveshards"""

#: The tables distributed by workflow id, co-located (the shards of one workflow's rows are on one
#: node, so every per-workflow statement is single-shard), with their distribution column. The
#: first one sets the shard count. Everything else -- executors, schema_version, the transaction
#: guard, queues (the rate limit's starts, the row whose lock serializes a queue's claims) and
#: schedules -- stays on the coordinator, as does the anchor below.
DISTRIBUTED = (
    ("workflows", "workflow_id"),
    ("operations", "workflow_id"),
    ("messages", "destination_id"),
    ("message_keys", "destination_id"),
    ("events", "workflow_id"),
    ("stream_heads", "workflow_id"),
    ("streams", "workflow_id"),
    ("version_changes", "workflow_id"),
    ("workflow_attributes", "workflow_id"),
)

#: The coordinator-only anchor (see the module's docstring): one row, never distributed.
CREATE_ANCHOR = """
CREATE TABLE IF NOT EXISTS {s}.coordinator (
    here boolean PRIMARY KEY DEFAULT true CHECK (here)
);
INSERT INTO {s}.coordinator VALUES (true) ON CONFLICT DO NOTHING"""

#: Unique indexes without the distribution column, which Citus refuses: the deduplication id and
#: a debouncer's burst are held under coordinator advisory locks instead (ENQUEUE_WORKFLOW's,
#: RESUME_WORKFLOW's and DEBOUNCE's forms above); plain indexes serve their lookups.
REPLACE_UNIQUE_INDEXES = """
CREATE INDEX IF NOT EXISTS workflows_deduplication_key_idx ON {s}.workflows
    (queue_name, deduplication_id)
    WHERE status IN ('ENQUEUED', 'DELAYED', 'PENDING') AND deduplication_id IS NOT NULL;
DROP INDEX IF EXISTS {s}.workflows_deduplication_idx;
CREATE INDEX IF NOT EXISTS workflows_debounce_key_idx ON {s}.workflows
    (queue_name, name, debounce_key)
    WHERE status = 'DELAYED' AND debounce_key IS NOT NULL;
DROP INDEX IF EXISTS {s}.workflows_debounce_idx"""

#: A message's key must hold its distribution column (the mailbox order is still message_id's,
#: from the coordinator's sequence: every insert goes through the coordinator).
MESSAGES_KEY = """
ALTER TABLE {s}.messages DROP CONSTRAINT IF EXISTS messages_pkey,
    ADD PRIMARY KEY (destination_id, message_id)"""

#: The workflows table ($1) by workflow id, in a colocation group of its own, $2 shards.
DISTRIBUTE_FIRST = """
SELECT create_distributed_table($1::regclass, 'workflow_id', colocate_with => 'none',
                                shard_count => $2::int)"""

#: Another table ($1) by its column $2, co-located with the workflows table ($3).
DISTRIBUTE_COLOCATED = """
SELECT create_distributed_table($1::regclass, $2, colocate_with => $3)"""

#: The workflows table's triggers (workflow attributes) run on the worker holding the row's
#: shard, which writes the co-located attributes shard: Citus asks to allow them explicitly.
ALLOW_TRIGGERS = "SET citus.enable_unsafe_triggers = on"

#: The functions a distributed database runs in place of the plain ones, in order.
FUNCTIONS = (
    DESCENDANTS_FUNCTION, CLAIM_QUEUED_FUNCTION, DEBOUNCE_FUNCTION,
    HOLD_DEDUPLICATION_FUNCTION, CONTINUE_AS_NEW_FUNCTION, FORK_COPY_FUNCTION,
    RETENTION_CANDIDATES_FUNCTION,
)

#: One ``distribute`` at a time per schema ($1: the schema's migration lock namespace), on the
#: session that runs it (released when it closes).
DISTRIBUTE_LOCK = "SELECT pg_advisory_lock($1::int, 1)"
