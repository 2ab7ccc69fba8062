"""A local commit hands its value to the waiters of the same process: an outside ``get_event``
and a stream reader get what was just written without reading it back, and get exactly what a
read from the database gives."""

from __future__ import annotations

import asyncio

import asyncflow


def _count_calls(monkeypatch, store, name):
    calls = []
    original = getattr(type(store), name)

    async def counting(self, *args, **kwargs):
        calls.append(args)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(type(store), name, counting)
    return calls


async def test_get_event_takes_the_value_set_in_this_process(make_app, monkeypatch):
    app = make_app()
    rounds = 20

    @app.workflow()
    async def ponger():
        for index in range(rounds):
            message = await asyncflow.recv("ping", timeout_seconds=30)
            await asyncflow.set_event(f"pong{index}", {"n": message, "t": (1, 2)})

    async with app:
        handle = await app.start_workflow(ponger, workflow_id="p")
        reads = _count_calls(monkeypatch, app.runtime.store, "get_event")
        for index in range(rounds):
            waiting = asyncio.ensure_future(app.get_event("p", f"pong{index}", 30))
            await app.runtime.waits.wait_for_count(2)  # the ponger's recv and this get_event
            await app.send("p", index, "ping")
            # Decoded from the committed text, as a read would: the tuple comes back a list.
            assert await waiting == {"n": index, "t": [1, 2]}
        await handle.get_result()
        # One read per round (the check before parking), none after the wake-up.
        assert len(reads) == rounds
        assert await app.get_event("p", "pong3") == {"n": 3, "t": [1, 2]}


async def test_a_waiter_on_one_key_is_not_given_another_keys_value(make_app):
    app = make_app()

    @app.workflow()
    async def setter():
        await asyncflow.recv("go", timeout_seconds=30)
        await asyncflow.set_event("a", 1)
        await asyncflow.set_event("b", 2)
        await asyncflow.set_event("a", 3)
        await asyncflow.recv("done", timeout_seconds=30)

    async with app:
        handle = await app.start_workflow(setter, workflow_id="s")
        waiting_b = asyncio.ensure_future(app.get_event("s", "b", 30))
        waiting_a = asyncio.ensure_future(app.get_event("s", "a", 30))
        await app.runtime.waits.wait_for_count(3)
        await app.send("s", None, "go")
        assert await waiting_b == 2
        assert await waiting_a in (1, 3)  # the value at some moment after the call
        await app.send("s", None, "done")
        await handle.get_result()


async def test_a_local_reader_takes_each_next_entry_without_reading_it(make_app, monkeypatch):
    app = make_app()
    count = 20

    @app.workflow()
    async def writer():
        for index in range(count):
            await asyncflow.recv("next", timeout_seconds=30)
            await asyncflow.write_stream("s", {"i": index, "pair": (index, -index)})
        await asyncflow.close_stream("s")

    async with app:
        handle = await app.start_workflow(writer, workflow_id="w")
        reads = _count_calls(monkeypatch, app.runtime.store, "read_stream")
        first, second = [], []
        arrivals: asyncio.Queue = asyncio.Queue()

        async def follow(into):
            async for value in app.read_stream("w", "s"):
                into.append(value)
                if value["i"] == 0:
                    value["mutated"] = True  # each reader decodes its own copy
                arrivals.put_nowait(value["i"])

        readers = [asyncio.ensure_future(follow(first)), asyncio.ensure_future(follow(second))]
        for index in range(count):
            await app.send("w", None, "next")
            assert [await arrivals.get(), await arrivals.get()] == [index, index]
        await asyncio.wait_for(asyncio.gather(*readers), 30)
        await handle.get_result()
        expected = [{"i": i, "pair": [i, -i]} for i in range(count)]
        expected[0]["mutated"] = True
        assert first == expected and second == expected
        # Each reader read once before the first write (and once more if that read already
        # found the first value, whose hand-over then does not fit), never per value, and not
        # at the close (handed over too: see the next test).
        assert len(reads) <= 4
        # A reader from the database sees the same values.
        assert [v async for v in app.read_stream("w", "s")] == [
            {"i": i, "pair": [i, -i]} for i in range(count)]


async def test_a_local_reader_at_the_end_learns_of_a_local_close_without_a_read(
        make_app, monkeypatch):
    app = make_app()

    @app.workflow()
    async def writer():
        await asyncflow.recv("go", timeout_seconds=30)
        for index in range(3):
            await asyncflow.write_stream("s", index)
        await asyncflow.recv("close", timeout_seconds=30)
        await asyncflow.close_stream("s")
        await asyncflow.recv("end", timeout_seconds=30)  # the stream ends by its close alone

    async with app:
        handle = await app.start_workflow(writer, workflow_id="w")
        reads = _count_calls(monkeypatch, app.runtime.store, "read_stream")
        arrivals: asyncio.Queue = asyncio.Queue()

        async def follow():
            async for value in app.read_stream("w", "s"):
                arrivals.put_nowait(value)
            return "ended"

        reader = asyncio.ensure_future(follow())
        await app.runtime.waits.wait_for_count(2)  # the writer's recv and the parked reader
        await app.send("w", None, "go")
        assert [await arrivals.get() for _ in range(3)] == [0, 1, 2]
        before = len(reads)
        await app.send("w", None, "close")
        assert await asyncio.wait_for(reader, 30) == "ended"
        assert len(reads) == before  # the close's length was handed over: nothing left to read
        # A reader from the database sees the same stream, ended by its close.
        assert await asyncio.wait_for(_collect(app.read_stream("w", "s")), 30) == [0, 1, 2]
        assert len(reads) > before
        await app.send("w", None, "end")
        await handle.get_result()


async def test_a_reader_that_missed_entries_reads_them_from_the_database(make_app):
    app = make_app()

    @app.workflow()
    async def writer():
        await asyncflow.recv("go", timeout_seconds=30)
        for index in range(50):  # many writes between the reader's wake-ups
            await asyncflow.write_stream("s", index)
        await asyncflow.close_stream("s")

    async with app:
        handle = await app.start_workflow(writer, workflow_id="w")
        reader = asyncio.ensure_future(
            asyncio.wait_for(_collect(app.read_stream("w", "s")), 30))
        await app.runtime.waits.wait_for_count(2)
        await app.send("w", None, "go")
        assert await reader == list(range(50))
        await handle.get_result()


async def _collect(iterator):
    return [value async for value in iterator]


async def test_a_local_send_hands_its_message_to_the_recv_journaled_before_it(make_app, conn):
    """Issue 23, item 1. A workflow's ``set_event`` wakes a caller in ``get_event``, and the
    workflow goes on to journal its next ``recv`` before the caller runs; the caller's ``send``
    waits for that entry and completes it with its message in its own statement (one durable
    commit for the send and the recv), then hands the message to the woken workflow, which
    reads nothing back."""
    app = make_app()
    rounds = 10

    @app.workflow()
    async def ponger():
        for index in range(rounds):
            await asyncflow.recv("ping", timeout_seconds=30)
            await asyncflow.set_event(f"pong{index}", index)

    await conn.execute("""
        CREATE TABLE stored (n int);
        CREATE FUNCTION count_stored() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN INSERT INTO stored VALUES (1); RETURN NEW; END $$;
        CREATE TRIGGER count_stored AFTER INSERT ON asyncflow.messages
            FOR EACH ROW EXECUTE FUNCTION count_stored()""")
    async with app:
        handle = await app.start_workflow(ponger, workflow_id="p")
        store = app.runtime.store
        await app.runtime.waits.wait_for_count(1)  # the ponger waits in its first recv
        for index in range(rounds):

            async def ping(index: int = index) -> None:
                await app.runtime.waits.wait_for_count(2)  # the ponger and the get_event below
                taken = store.recvs.ops
                await app.send("p", index, "ping")
                # Back from the send: the woken ponger got the message with the wake-up (no
                # statement of its own).
                assert store.recvs.ops == taken

            sender = asyncio.ensure_future(ping())
            assert await app.get_event("p", f"pong{index}", 30) == index
            # Back from get_event: the ponger's next recv is already journaling itself.
            assert store.first_recvs.ops == min(index + 2, rounds)
            await sender
        await handle.get_result()
    assert await conn.fetchval("SELECT count(*) FROM stored") == 0  # no message was stored
    rows = await conn.fetch("SELECT output FROM asyncflow.operations "
                            "WHERE workflow_id = 'p' AND name = 'asyncflow.recv' "
                            "ORDER BY function_id")
    assert [row["output"] for row in rows] == [str(i) for i in range(rounds)]


async def test_the_readers_of_a_batch_get_its_values_before_its_writers_resume(make_app):
    """Issue 23, §2. Stream writes of many workflows share a statement; as soon as it returns,
    each value is handed to its reader, before the batch's writers resume one after another
    (n tasks, each going back through its workflow's code). Only the writer whose task wrote
    the statement (one per statement) goes on before its reader has the value."""
    app = make_app()
    writers = 30
    go = asyncio.Event()
    order: list[tuple[str, int]] = []

    @app.step()
    async def ready() -> None:
        await go.wait()

    @app.workflow()
    async def writer(index: int) -> None:
        await ready()
        await asyncflow.write_stream("s", index)
        order.append(("wrote", index))
        await asyncflow.close_stream("s")

    async def follow(workflow_id: str) -> None:
        async for index in app.read_stream(workflow_id, "s"):
            order.append(("read", index))

    async with app:
        handles = [await app.start_workflow(writer, i) for i in range(writers)]
        readers = [asyncio.ensure_future(follow(h.workflow_id)) for h in handles]
        await app.runtime.waits.wait_for_count(writers)  # the readers are parked
        store = app.runtime.store
        statements = store.writes.batches
        go.set()
        await asyncio.wait_for(asyncio.gather(*readers), 30)
        for handle in handles:
            await handle.get_result()
        statements = store.writes.batches - statements
        assert statements < writers  # the writes were batched
        position = {event: at for at, event in enumerate(order)}
        ahead = [i for i in range(writers) if position[("wrote", i)] < position[("read", i)]]
        assert len(ahead) <= statements, (ahead, statements)


async def test_a_recv_takes_a_message_whose_local_send_is_in_flight(make_app, monkeypatch):
    """A recv that starts while a send of this process to its workflow is being committed waits
    for that commit, and its first statement takes the message: no deadline journaled first,
    no second statement (one durable commit less per ping-pong round)."""
    from asyncflow._core.inflight import InFlight
    from asyncflow._storage.store import Store

    app = make_app()
    gate, in_flight, recv_waits = asyncio.Event(), asyncio.Event(), asyncio.Event()
    send_message, settled = Store.send_message, InFlight.settled

    async def gated_send(self, *args, **kwargs):
        in_flight.set()
        await gate.wait()  # the send is in flight (and registered) until the gate opens
        return await send_message(self, *args, **kwargs)

    async def seen_settled(self, key):
        recv_waits.set()
        await settled(self, key)

    monkeypatch.setattr(Store, "send_message", gated_send)
    monkeypatch.setattr(InFlight, "settled", seen_settled)

    @app.workflow()
    async def receiver():
        return await asyncflow.recv("ping", timeout_seconds=30)

    async with app:
        firsts = _count_calls(monkeypatch, app.runtime.store, "recv_first")
        nexts = _count_calls(monkeypatch, app.runtime.store, "recv_next")
        sending = asyncio.ensure_future(app.send("r", {"n": 1}, "ping"))
        await in_flight.wait()
        handle = await app.start_workflow(receiver, workflow_id="r")
        await asyncio.wait_for(recv_waits.wait(), 10)
        assert firsts == []  # the recv waits for the send before its first statement
        gate.set()
        assert await handle.get_result() == {"n": 1}
        await sending
        assert len(firsts) == 1 and nexts == []


async def test_in_flight_waits_only_for_the_writes_in_flight_at_the_call():
    from asyncflow._core.inflight import InFlight

    inflight = InFlight()
    await inflight.settled("a")  # nothing in flight: returns at once
    first = inflight.begin("a")
    waiting = asyncio.ensure_future(inflight.settled("a"))
    cancelled = asyncio.ensure_future(inflight.settled("a"))
    await asyncio.sleep(0)  # one turn of the loop: each task runs to its wait
    assert first.waiters is not None and len(first.waiters) == 2
    later = inflight.begin("a")  # begun after the calls: not waited for
    cancelled.cancel()  # cancelling one waiter leaves the write and the other waiter alone
    inflight.end("a", first)
    await waiting
    assert cancelled.cancelled()
    assert first.awaited and not later.awaited
    inflight.end("a", later)
    await inflight.settled("a")
