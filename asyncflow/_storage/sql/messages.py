"""Messages: send, and the recv that takes one exactly once."""

from __future__ import annotations

from .journal import _JOURNAL_ENTRY, _OWNED, _owned

# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------

# A send hands its message straight to the recv waiting for it: when the destination's latest
# journal entry is an open recv of the message's topic, the workflow is PENDING and its mailbox
# holds no message of that topic (the recv would take that one first), the send completes the
# recv's entry with the message instead of storing it, in its own statement. The recv's answer
# is then durable with the send's commit: one WAL flush where the recv taking it would have
# been a second (the woken recv finds its entry completed: see ``handed`` below). The same
# outcome as a recv taking the message, only sooner: a recv in a workflow's gather, or one of
# several recvs open at once, gets its messages from the mailbox as before, and so does a recv
# whose entry does not say ``handoff`` (journaled by an older release, which would not look for
# the completion). The entry keeps the send's trace context (the recv's span links to it, as
# to a taken message's). A concurrent completion of the entry (another send's hand,
# the recv's timeout) holds its row lock: this send then finds it completed and stores its
# message. The workflow's row is read, not locked: a share lock would make a claim of the
# workflow running at that moment skip it (``FOR UPDATE SKIP LOCKED``), which then waits for the
# next sweep; a cancel committing meanwhile serializes after the hand (the recv took the
# message, then the workflow was cancelled, as when a recv takes it). ``handed``: the recv's
# function id.
_HAND_OVER = """hand AS (
    UPDATE {s}.operations SET output = %M%, completed = true, traceparent = %TP%
    WHERE workflow_id = %D% AND NOT completed AND name = 'asyncflow.recv' AND handoff
      AND topic IS NOT DISTINCT FROM %T% AND %IF%
      AND function_id = (SELECT max(function_id) FROM {s}.operations WHERE workflow_id = %D%)
      AND NOT EXISTS (SELECT 1 FROM {s}.messages
                      WHERE destination_id = %D% AND topic IS NOT DISTINCT FROM %T%)
      AND EXISTS (SELECT 1 FROM {s}.workflows WHERE workflow_id = %D% AND status = 'PENDING')
    RETURNING function_id
)"""


def _hand_over(destination: str, topic: str, message: str, traceparent: str,
               condition: str = "true") -> str:
    """The ``hand`` CTE of a send statement, given the parameters it names (and a further
    condition: the send itself was made)."""
    return (_HAND_OVER.replace("%D%", destination).replace("%T%", topic)
            .replace("%M%", message).replace("%TP%", traceparent).replace("%IF%", condition))


# Sends from outside a workflow also return whether the message was stored (`inserted`: not
# with an idempotency key sent before) and the destination's status (NULL: no such workflow), so
# that send can say what became of it (asyncflow.Delivery). A message handed to a waiting recv
# counts as stored.
SEND_MESSAGE = """
WITH """ + _hand_over("$1", "$2", "$3", "$5") + """, ins AS (
    INSERT INTO {s}.messages (destination_id, topic, message, traceparent)
    SELECT $1, $2, $3, $5 WHERE NOT EXISTS (SELECT 1 FROM hand)
    RETURNING destination_id
)
SELECT pg_notify($4, 'm' || $1)::text AS notified, true AS inserted,
       (SELECT status FROM {s}.workflows WHERE workflow_id = $1) AS status,
       (SELECT function_id FROM hand) AS handed"""

# A workflow's send: its journal entry and the delivery (or the hand to a waiting recv) in one
# statement. The entry's output is {"to": destination, "topic": topic, "message": message}.
_SEND_OUTPUT = """'{"to":' || to_json($4::text)::text || ',"topic":' || coalesce(
    to_json($5::text)::text, 'null') || ',"message":' || $6 || '}'"""
JOURNALED_SEND = _JOURNAL_ENTRY.replace("%EPOCH%", "$9").replace(
    "%OUTPUT%", _SEND_OUTPUT) + """, """ + _hand_over(
    "$4", "$5", "$6", "$8", "EXISTS (SELECT 1 FROM op)") + """, ins AS (
    INSERT INTO {s}.messages (destination_id, topic, message, traceparent)
    SELECT $4, $5, $6, $8 FROM op WHERE NOT EXISTS (SELECT 1 FROM hand)
    RETURNING destination_id
)
SELECT (SELECT count(*) FROM op) AS recorded,
       (SELECT pg_notify($7, 'm' || $4) FROM op) AS notified,
       (SELECT function_id FROM hand) AS handed"""

# With an idempotency key ($5): delivered (stored or handed over) only the first time.
SEND_MESSAGE_ONCE = """
WITH k AS (
    INSERT INTO {s}.message_keys (destination_id, idempotency_key) VALUES ($1, $5)
    ON CONFLICT DO NOTHING
    RETURNING destination_id
), """ + _hand_over("$1", "$2", "$3", "$6", "EXISTS (SELECT 1 FROM k)") + """, ins AS (
    INSERT INTO {s}.messages (destination_id, topic, message, traceparent)
    SELECT destination_id, $2, $3, $6 FROM k WHERE NOT EXISTS (SELECT 1 FROM hand)
    RETURNING destination_id
)
SELECT (SELECT pg_notify($4, 'm' || $1) FROM k)::text AS notified,
       EXISTS (SELECT 1 FROM k) AS inserted,
       (SELECT status FROM {s}.workflows WHERE workflow_id = $1) AS status,
       (SELECT function_id FROM hand) AS handed"""

# The oldest message of mailbox ($1, topic), locked; and its deletion once the journal took it.
_MAILBOX_HEAD = """
WITH m AS (
    SELECT message_id, message, traceparent FROM {s}.messages
    WHERE destination_id = $1 AND %TOPIC%
    ORDER BY message_id LIMIT 1
    FOR UPDATE SKIP LOCKED
)"""
_TAKE_MESSAGE = """, d AS (
    DELETE FROM {s}.messages
    WHERE message_id = (SELECT message_id FROM m) AND EXISTS (SELECT 1 FROM op)
    RETURNING 1
)
SELECT (SELECT message FROM m) AS message,
       (SELECT traceparent FROM m) AS traceparent,
       (SELECT count(*) FROM d) AS consumed,"""

# A later attempt of recv #$3: complete its open journal entry with the message, if any.
_RECV = _MAILBOX_HEAD + """, op AS (
    UPDATE {s}.operations SET output = %OUTPUT%, completed = true
    WHERE workflow_id = $1 AND function_id = $3 AND NOT completed
      AND EXISTS (SELECT 1 FROM m)
      AND EXISTS (SELECT 1 FROM """ + _OWNED + """)
    RETURNING 1
)""" + _TAKE_MESSAGE + """
       (SELECT status FROM {s}.workflows WHERE workflow_id = $1) AS status,
       (SELECT epoch FROM {s}.workflows WHERE workflow_id = $1) AS epoch"""

_TOPIC = "topic = $2"
_NO_TOPIC = "topic IS NULL AND $2::text IS NULL"
_MESSAGE = "(SELECT message FROM m)"
# ``handed``: the entry's output when it was completed before this statement (by a send that
# handed its message over, or by this execution's own earlier attempt whose answer was lost).
_RECV_NEXT = _RECV.replace("%EPOCH%", "$4").replace("%OUTPUT%", _MESSAGE) + """,
       h.output AS handed, h.traceparent AS handed_traceparent
FROM (SELECT 1) one LEFT JOIN (
    SELECT output, traceparent FROM {s}.operations
    WHERE workflow_id = $1 AND function_id = $3 AND completed
) h ON true"""
RECV_TOPIC = _RECV_NEXT.replace("%TOPIC%", _TOPIC)
RECV_NO_TOPIC = _RECV_NEXT.replace("%TOPIC%", _NO_TOPIC)
# wait_first's message branch: the same, but the journal records {"index": $4, "value": message}.
_BRANCH = """'{"index":' || $4::int || ',"value":' || (SELECT message FROM m) || '}'"""
_TAKE_BRANCH = _RECV.replace("%EPOCH%", "$5").replace("%OUTPUT%", _BRANCH)
TAKE_BRANCH_MESSAGE_TOPIC = _TAKE_BRANCH.replace("%TOPIC%", _TOPIC)
TAKE_BRANCH_MESSAGE_NO_TOPIC = _TAKE_BRANCH.replace("%TOPIC%", _NO_TOPIC)

# An open wait's journal entry (no value taken yet) commits asynchronously: nothing was returned
# to anyone, so there is nothing to lose but the entry itself, and the next synchronous commit of
# any session (the send that will end the wait, typically) flushes it with its own WAL, one flush
# instead of two. Only a crash of the server itself within the WAL writer's delay (about 0.6 s)
# can lose it; the wait is then journaled again, with a deadline counted from then. A value taken
# at once commits as the session says (synchronously by default).
_OPEN_WAIT_COMMIT = """set_config('synchronous_commit', CASE WHEN %TAKEN% THEN
           current_setting('synchronous_commit') ELSE 'off' END, true) AS commit_mode"""

# The first attempt of a recv: journal it (deadline $4) and take a waiting message, if any, in
# one statement. A message taken is the recv's recorded output; otherwise the entry stays open.
_RECV_FIRST = _MAILBOX_HEAD + """, op AS (
    INSERT INTO {s}.operations
        (workflow_id, function_id, name, output, completed, deadline, topic, handoff)
    SELECT $1, $3, 'asyncflow.recv', (SELECT message FROM m), EXISTS (SELECT 1 FROM m), $4,
           $2, true
    FROM """ + _owned("$5") + """
    RETURNING 1
)""" + _TAKE_MESSAGE + """
       (SELECT count(*) FROM op) AS recorded,
       """ + _OPEN_WAIT_COMMIT.replace("%TAKEN%", "EXISTS (SELECT 1 FROM m)")

RECV_FIRST_TOPIC = _RECV_FIRST.replace("%TOPIC%", "topic = $2")
RECV_FIRST_NO_TOPIC = _RECV_FIRST.replace("%TOPIC%", "topic IS NULL AND $2::text IS NULL")
