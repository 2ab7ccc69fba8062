"""Migration 1: the whole initial schema (as it was first released; later migrations change
it, and this text never does)."""

from __future__ import annotations

INITIAL_SCHEMA = """
    CREATE TABLE {s}.workflows (
        workflow_id        text PRIMARY KEY,
        name               text NOT NULL,
        status             text NOT NULL,
        inputs             text NOT NULL,
        output             text,
        error              text,
        executor_id        text,
        app_version        text NOT NULL,
        recovery_attempts  integer NOT NULL DEFAULT 0,
        parent_workflow_id text,
        created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
        updated_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
        completed_at       timestamptz
    );
    CREATE INDEX workflows_pending_idx ON {s}.workflows (executor_id) WHERE status = 'PENDING';
    CREATE INDEX workflows_created_idx ON {s}.workflows (created_at);

    CREATE TABLE {s}.operations (
        workflow_id  text NOT NULL,
        function_id  integer NOT NULL,
        name         text NOT NULL,
        output       text,
        error        text,
        child_id     text,
        completed    boolean NOT NULL DEFAULT true,
        deadline     double precision,
        created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (workflow_id, function_id)
    );

    CREATE TABLE {s}.messages (
        message_id     bigserial PRIMARY KEY,
        destination_id text NOT NULL REFERENCES {s}.workflows (workflow_id) ON DELETE CASCADE,
        topic          text,
        message        text NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX messages_mailbox_idx ON {s}.messages (destination_id, topic, message_id);

    CREATE TABLE {s}.message_keys (
        destination_id  text NOT NULL REFERENCES {s}.workflows (workflow_id) ON DELETE CASCADE,
        idempotency_key text NOT NULL,
        PRIMARY KEY (destination_id, idempotency_key)
    );

    CREATE TABLE {s}.events (
        workflow_id text NOT NULL,
        key         text NOT NULL,
        value       text NOT NULL,
        updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (workflow_id, key)
    );

    CREATE TABLE {s}.stream_heads (
        workflow_id text NOT NULL,
        key         text NOT NULL,
        next_offset bigint NOT NULL,
        closed      boolean NOT NULL DEFAULT false,
        PRIMARY KEY (workflow_id, key)
    );

    CREATE TABLE {s}.streams (
        workflow_id text NOT NULL,
        key         text NOT NULL,
        "offset"    bigint NOT NULL,
        value       text NOT NULL,
        writer_fid  integer NOT NULL,
        writer_seq  integer NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (workflow_id, key, "offset"),
        UNIQUE (workflow_id, key, writer_fid, writer_seq)
    );
    """
