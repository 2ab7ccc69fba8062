"""A send to a workflow waiting in ``recv`` completes the recv's journal entry with its message,
in the send's own statement, instead of storing the message for the recv to take: the recv's
answer is durable with the send's commit (one WAL flush for both). What the workflow receives
is what it would have taken: FIFO per topic, never a message of another topic, nothing for a
workflow that is no longer running."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import citus_cluster
import pytest

import asyncflow
from asyncflow._storage import sql
from asyncflow._storage.sql import messages

COUNT_STORED = """
    CREATE TABLE stored (message text);
    CREATE FUNCTION count_stored() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN INSERT INTO stored VALUES (NEW.message); RETURN NEW; END $$;
    CREATE TRIGGER count_stored AFTER INSERT ON asyncflow.messages
        FOR EACH ROW EXECUTE FUNCTION count_stored()"""


async def _log_stored(conn) -> None:
    """Log every message stored in a mailbox from now on (a trigger; Citus has none on its
    distributed tables: there, what the workflows receive is checked, not how)."""
    if not citus_cluster.ENABLED:
        await conn.execute(COUNT_STORED)


async def _stored(conn, expected: list[str]) -> bool:
    """Whether the messages stored in a mailbox are ``expected`` (always, on Citus)."""
    if citus_cluster.ENABLED:
        return True
    return [row["message"] for row in await conn.fetch("SELECT message FROM stored")] == expected


def _waiter(app: asyncflow.AsyncFlow, topic: str | None = None) -> Any:
    """Register the workflow of one ``recv`` (of ``topic``) that returns its message."""

    @app.workflow(name="waiter")
    async def waiter() -> object:
        return await asyncflow.recv(topic, timeout_seconds=60)

    return waiter


async def _parked(app: asyncflow.AsyncFlow, workflow: Any) -> Any:
    """Start ``workflow`` as "w" and return its handle once it waits in its recv."""
    handle = await app.start_workflow(workflow, workflow_id="w")
    await app.runtime.waits.wait_for_count(1)
    return handle


async def _recv_entries(conn, workflow_id: str) -> list[tuple[bool, str | None]]:
    rows = await conn.fetch(
        "SELECT completed, output FROM asyncflow.operations WHERE workflow_id = $1 "
        "AND name = 'asyncflow.recv' ORDER BY function_id", workflow_id)
    return [(row["completed"], row["output"]) for row in rows]


async def test_a_send_from_another_process_completes_the_waiting_recv(make_app, db_url, conn):
    app = make_app()
    waiter = _waiter(app, "t")
    await _log_stored(conn)
    async with app:
        handle = await _parked(app, waiter)
        async with asyncflow.Client(db_url) as client:  # its own connections: a NOTIFY wakes
            assert await client.send("w", {"b": 1, "a": [2.5]}, topic="t") is \
                asyncflow.Delivery.DELIVERED
        assert await handle.get_result(timeout_seconds=30) == {"b": 1, "a": [2.5]}
    assert await _stored(conn, [])
    assert await _recv_entries(conn, "w") == [(True, '{"b":1,"a":[2.5]}')]


async def test_a_workflows_send_hands_its_message_over_too(make_app, conn):
    app = make_app()
    waiter = _waiter(app)

    @app.workflow()
    async def sender(destination: str) -> None:
        await asyncflow.send(destination, "hello")

    await _log_stored(conn)
    async with app:
        handle = await _parked(app, waiter)
        await (await app.start_workflow(sender, "w")).get_result(timeout_seconds=30)
        assert await handle.get_result(timeout_seconds=30) == "hello"
    assert await _stored(conn, [])
    assert await _recv_entries(conn, "w") == [(True, '"hello"')]


async def test_an_older_message_of_the_topic_is_received_first(make_app, conn):
    app = make_app()

    @app.workflow()
    async def two() -> list[object]:
        return [await asyncflow.recv("t", timeout_seconds=60) for _ in range(2)]

    await _log_stored(conn)
    async with app:
        handle = await app.start_workflow(two, workflow_id="w")
        await app.runtime.waits.wait_for_count(1)
        # A message already in the mailbox that the recv has not taken yet (stored without a
        # NOTIFY: as if its sender's commit and the recv's entry had crossed).
        await conn.execute("INSERT INTO asyncflow.messages (destination_id, topic, message) "
                           "VALUES ('w', 't', '\"older\"')")
        await app.send("w", "newer", topic="t")  # not handed: the older one goes first
        assert await handle.get_result(timeout_seconds=30) == ["older", "newer"]
    assert await _stored(conn, ['"older"', '"newer"'])


async def test_a_message_of_another_topic_is_stored_for_later(make_app, conn):
    app = make_app()

    @app.workflow()
    async def by_topic() -> list[object]:
        first = await asyncflow.recv("a", timeout_seconds=60)
        return [first, await asyncflow.recv("b", timeout_seconds=60)]

    await _log_stored(conn)
    async with app:
        handle = await app.start_workflow(by_topic, workflow_id="w")
        await app.runtime.waits.wait_for_count(1)
        await app.send("w", "for b", topic="b")  # the recv waits on "a": stored
        await app.send("w", "for a", topic="a")  # handed
        assert await handle.get_result(timeout_seconds=30) == ["for a", "for b"]
    assert await _stored(conn, ['"for b"'])


async def test_a_recv_journaled_by_an_older_release_is_not_handed_a_message(
        make_app, db_url, conn):
    """An open entry without ``handoff`` (written by a release that would not look for a
    completed entry): the send stores its message, and the woken recv takes it."""
    app = make_app()
    waiter = _waiter(app)
    await _log_stored(conn)
    async with app:
        handle = await _parked(app, waiter)
        await conn.execute("UPDATE asyncflow.operations SET handoff = NULL "
                           "WHERE workflow_id = 'w'")
        async with asyncflow.Client(db_url) as client:
            await client.send("w", "stored")
        assert await handle.get_result(timeout_seconds=30) == "stored"
    assert await _stored(conn, ['"stored"'])
    assert await _recv_entries(conn, "w") == [(True, '"stored"')]


async def test_a_cancelled_workflows_recv_is_not_completed(make_app, conn):
    app = make_app()
    waiter = _waiter(app)
    await _log_stored(conn)
    async with app:
        handle = await _parked(app, waiter)
        await app.cancel_workflow("w")
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await handle.get_result(timeout_seconds=30)
        await app.send("w", "late")
    assert await _stored(conn, ['"late"'])  # kept in the mailbox, as for any send
    assert await _recv_entries(conn, "w") == [(False, None)]


async def test_a_hand_committed_as_the_recv_times_out_is_what_it_returns(
        make_app, conn, monkeypatch):
    """The recv's timeout write finds its entry completed by a send (their commits crossed):
    the recv returns the handed message, as its entry records, not ``None``, in the same
    execution (not by stopping and being run again from the journal)."""
    app = make_app()
    runs: list[int] = []

    @app.workflow()
    async def waiter() -> object:
        runs.append(1)
        return await asyncflow.recv("t", timeout_seconds=0.3)

    async with app:
        store = app.runtime.store
        original = type(store).complete_operation

        async def crossed(self, workflow_id, function_id, output, epoch):
            # What a send's hand does, committed just before the recv's own timeout write.
            await conn.execute(
                "UPDATE asyncflow.operations SET output = '\"just in time\"', completed = true "
                "WHERE workflow_id = $1 AND function_id = $2", workflow_id, function_id)
            return await original(self, workflow_id, function_id, output, epoch)

        monkeypatch.setattr(type(store), "complete_operation", crossed)
        handle = await app.start_workflow(waiter, workflow_id="w")
        assert await handle.get_result(timeout_seconds=30) == "just in time"
    assert runs == [1]
    assert await _recv_entries(conn, "w") == [(True, '"just in time"')]


async def test_many_senders_to_one_waiting_recv_lose_no_message(make_app, conn):
    """Concurrent sends to one waiting recv: one hands its message over, the others find the
    entry taken (its row lock) and store theirs; every message is received exactly once."""
    app = make_app()
    senders = 20

    @app.workflow()
    async def gather() -> list[object]:
        return [await asyncflow.recv("t", timeout_seconds=60) for _ in range(senders)]

    await _log_stored(conn)
    async with app:
        handle = await app.start_workflow(gather, workflow_id="w")
        await app.runtime.waits.wait_for_count(1)
        await asyncio.gather(*(app.send("w", i, topic="t") for i in range(senders)))
        assert sorted(await handle.get_result(timeout_seconds=30)) == list(range(senders))
    if not citus_cluster.ENABLED:  # at least the first was handed over
        assert await conn.fetchval("SELECT count(*) FROM stored") < senders


async def test_a_batch_of_sends_hands_each_mailbox_its_first_message(make_app, conn):
    """Sends written together (group commit) hand over too: per mailbox, the batch's first
    message to a waiting recv; a second one to the same mailbox is stored behind it."""
    app = make_app()
    workflows = 30

    @app.workflow()
    async def pair() -> list[object]:
        return [await asyncflow.recv(timeout_seconds=60) for _ in range(2)]

    await _log_stored(conn)
    async with app:
        handles = [await app.start_workflow(pair, workflow_id=f"w{i}") for i in range(workflows)]
        await app.runtime.waits.wait_for_count(workflows)
        sends = app.runtime.store.sends
        before = (sends.batches, sends.ops)
        await asyncio.gather(*(app.send(h.workflow_id, f"{h.workflow_id}:{n}")
                               for h in handles for n in ("a", "b")))
        assert sends.batches - before[0] < sends.ops - before[1]  # they shared statements
        results = await asyncio.gather(*(h.get_result(timeout_seconds=30) for h in handles))
        assert results == [[f"w{i}:a", f"w{i}:b"] for i in range(workflows)]
    if not citus_cluster.ENABLED:  # every "a" was handed over (each "b" may or may not be)
        stored = [row["message"] for row in await conn.fetch("SELECT message FROM stored")]
        assert not [m for m in stored if m.endswith(':a"')]


async def test_a_keyed_send_hands_over_once(make_app, conn):
    """A send with an idempotency key hands its message over the first time; the same key
    again delivers nothing, and the next recv waits for the next message."""
    app = make_app()

    @app.workflow()
    async def two() -> list[object]:
        return [await asyncflow.recv(timeout_seconds=60) for _ in range(2)]

    await _log_stored(conn)
    async with app:
        handle = await app.start_workflow(two, workflow_id="w")
        await app.runtime.waits.wait_for_count(1)
        assert await app.send("w", "x", idempotency_key="k") is asyncflow.Delivery.DELIVERED
        assert await app.send("w", "x", idempotency_key="k") is asyncflow.Delivery.DUPLICATE
        assert await app.send("w", "y") is asyncflow.Delivery.DELIVERED
        assert await handle.get_result(timeout_seconds=30) == ["x", "y"]
    # "x" was handed over ("y" too, if the second recv was already waiting for it).
    assert await _stored(conn, []) or await _stored(conn, ['"y"'])
    assert await _recv_entries(conn, "w") == [(True, '"x"'), (True, '"y"')]


@pytest.mark.not_on_citus("reads the statement's locks on one server")
async def test_a_hand_leaves_the_workflows_row_free_for_a_claim(make_app, db_url, conn):
    """A send handing its message over reads the destination's row without locking it: a
    claim of the workflow running meanwhile (``FOR NO KEY UPDATE SKIP LOCKED``) still finds it.
    (Under a share lock the claim skipped it, and a resumed workflow waited for the next
    sweep.)"""
    app = make_app()
    waiter = _waiter(app)
    async with app:
        handle = await _parked(app, waiter)
        sender = await asyncpg.connect(db_url)
        try:
            async with sender.transaction():  # the hand, not committed yet
                row = await sender.fetchrow(sql.render(messages.SEND_MESSAGE, "asyncflow"),
                                            "w", None, '"x"', app.storage.channel, None)
                assert row["handed"] is not None
                claimable = await conn.fetch(
                    "SELECT workflow_id FROM asyncflow.workflows WHERE workflow_id = 'w' "
                    "FOR NO KEY UPDATE SKIP LOCKED")
                assert [r["workflow_id"] for r in claimable] == ["w"]
        finally:
            await sender.close()
        assert await handle.get_result(timeout_seconds=30) == "x"
