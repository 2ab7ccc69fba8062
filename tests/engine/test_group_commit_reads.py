"""Group commit of starts, outcome checks and recvs: concurrent ones share statements, and each
keeps the outcome it would have had alone (issue 23: fewer statements per operation)."""

from __future__ import annotations

import asyncio

import asyncflow


async def test_concurrent_starts_share_statements_and_keep_their_outcomes(make_app):
    app = make_app()

    @app.workflow()
    async def double(x: int) -> int:
        return 2 * x

    @app.workflow()
    async def other() -> None:
        return None

    async with app:
        taken = await app.start_workflow(other, workflow_id="taken")
        await taken.get_result(timeout_seconds=30)
        store = app.runtime.store
        before = (store.starts.batches, store.starts.ops)
        calls = [app.start_workflow(double, k, workflow_id=f"w{k}") for k in range(60)]
        calls.append(app.start_workflow(double, 1, workflow_id="taken"))  # another's id
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        batches, ops = store.starts.batches - before[0], store.starts.ops - before[1]
        assert ops == 61 and batches < ops  # they shared statements
        assert isinstance(outcomes[-1], asyncflow.WorkflowConflictError)
        assert ".other'" in str(outcomes[-1])
        results = await asyncio.gather(*(h.get_result(timeout_seconds=30)
                                         for h in outcomes[:60]))
        assert results == [2 * k for k in range(60)]
        # Five starts of one id at once (a batch written one by one): one workflow, started
        # once, whose result all of them get.
        handles = await asyncio.gather(*(app.start_workflow(double, 100 + k, workflow_id="twice")
                                         for k in range(5)))
        twice = [await h.get_result(timeout_seconds=30) for h in handles]
        assert len(set(twice)) == 1 and twice[0] in {200 + 2 * k for k in range(5)}


async def test_a_batched_child_start_is_refused_when_the_parent_is_not_owned(make_app):
    app = make_app()

    @app.workflow()
    async def parent() -> None:
        await asyncflow.recv(timeout_seconds=60)

    async with app:
        handle = await app.start_workflow(parent)
        await app._waits.wait_for_count(1)
        store = app.runtime.store
        before = store.starts.batches
        # Starts of children fenced by the parent's epoch: the current one (1) is owned, a
        # stale one (0) is not; in one batch each gets its own answer.
        calls = [store.insert_workflow(f"c{k}", "elsewhere", "[]", "x", "v", handle.workflow_id,
                                       parent_epoch=1 if k % 2 else 0) for k in range(20)]
        outcomes = await asyncio.gather(*calls)
        assert store.starts.batches - before < 20  # (the first alone, the rest together)
        for k, (created, name) in enumerate(outcomes):
            if k % 2:
                assert (created, name) == (True, "elsewhere")
            else:
                assert (created, name) == (False, None)
        await app.cancel_workflow(handle.workflow_id)


async def test_concurrent_result_checks_share_queries(make_app):
    app = make_app()

    @app.workflow()
    async def quick(x: int) -> int:
        return x

    async with app:
        handles = [await app.start_workflow(quick, k) for k in range(40)]
        for h in handles:
            await h.get_result(timeout_seconds=30)
        store = app.runtime.store
        before = (store.outcomes.batches, store.outcomes.ops)
        calls = [store.workflow_outcome(h.workflow_id) for h in handles]
        calls.append(store.workflow_outcome("no-such-workflow"))
        found = await asyncio.gather(*calls)
        batches, ops = store.outcomes.batches - before[0], store.outcomes.ops - before[1]
        assert ops == 41 and batches < ops
        assert [o.output for o in found[:40]] == [str(k) for k in range(40)]
        assert {o.status for o in found[:40]} == {"SUCCESS"}
        assert found[40] is None


async def test_recvs_woken_together_share_statements_and_take_each_message_once(make_app,
                                                                                 conn):
    app = make_app()

    @app.workflow()
    async def sink(n: int) -> list:
        got = [await asyncflow.recv(timeout_seconds=30) for _ in range(n)]
        got += [await asyncflow.recv("t", timeout_seconds=30) for _ in range(n)]
        return got

    async with app:
        handles = [await app.start_workflow(sink, 3) for _ in range(50)]
        await app._waits.wait_for_count(50)
        store = app.runtime.store
        before = (store.recvs.batches, store.recvs.ops)
        # The first messages land in the mailboxes of the parked recvs without a NOTIFY (a send
        # would hand each to its recv: see test_handed_messages), then everyone is woken at
        # once, as after a listener reconnect: the recvs take them in shared statements.
        for h in handles:
            await conn.execute("INSERT INTO asyncflow.messages (destination_id, message) "
                               "VALUES ($1, '0')", h.workflow_id)
        app.runtime.waits.wake_all()
        for i in range(1, 3):
            await asyncio.gather(*(app.send(h.workflow_id, i) for h in handles))
        for i in range(3):
            await asyncio.gather(*(app.send(h.workflow_id, 10 + i, topic="t") for h in handles))
        results = await asyncio.gather(*(h.get_result(timeout_seconds=60) for h in handles))
        assert results == [[0, 1, 2, 10, 11, 12]] * 50  # every message once, in order
        batches, ops = store.recvs.batches - before[0], store.recvs.ops - before[1]
        assert ops >= 50 and batches < ops  # woken together, they took their messages together


async def test_a_recv_batch_reports_a_lost_epoch_and_two_recvs_of_one_workflow(make_app, conn):
    app = make_app()

    @app.workflow()
    async def waiting() -> None:
        await asyncflow.recv(timeout_seconds=60)

    async with app:
        handles = [await app.start_workflow(waiting) for _ in range(12)]
        await app._waits.wait_for_count(12)
        store = app.runtime.store
        ids = [h.workflow_id for h in handles]
        for wid in ids:  # (no NOTIFY: the parked workflows stay parked)
            await conn.execute("INSERT INTO asyncflow.messages (destination_id, message) "
                               "VALUES ($1, '7')", wid)
        # A lone first call goes alone; the rest queue behind it and share a statement.
        # Workflow 0 is read at a stale epoch (as if another execution owned it): status None,
        # nothing taken.
        before = store.recvs.batches
        calls = [store.recv_next("no-such-workflow", None, 0, 1),
                 store.recv_next(ids[0], None, 0, 0)]
        calls += [store.recv_next(wid, None, 0, 1) for wid in ids[1:10]]
        outcomes = await asyncio.gather(*calls)
        assert store.recvs.batches - before == 2
        assert outcomes[0] == (None, None, False, None, None)
        assert outcomes[1][0] is None and outcomes[1][2] is False  # nothing consumed
        for status, message, consumed, _sender, handed in outcomes[2:]:
            assert (status, message, consumed, handed) == ("PENDING", "7", True, None)
        # Two recvs of one workflow in a batch are written one by one: the message is taken
        # once, by the first.
        outcomes = await asyncio.gather(store.recv_next("no-such-workflow", None, 0, 1),
                                        store.recv_next(ids[10], None, 0, 1),
                                        store.recv_next(ids[10], None, 0, 1))
        assert outcomes[1][1:3] == ("7", True)
        # The second finds the entry completed before it: its output, as a recv handed its
        # message by a send would.
        assert outcomes[2][1:3] == (None, False) and outcomes[2][4] == "7"
        left = await conn.fetch("SELECT destination_id FROM asyncflow.messages")
        assert sorted(row["destination_id"] for row in left) == sorted([ids[0], ids[11]])
        for h in handles:
            await app.cancel_workflow(h.workflow_id)


async def test_first_recvs_entered_together_share_statements(make_app):
    """Recvs entered at once journal their first attempts together; each takes the message
    waiting in its own mailbox (by topic), if any, exactly once."""
    app = make_app()
    gate = asyncio.Event()

    @app.workflow()
    async def sink(topic: str | None) -> list:
        await gate.wait()  # (in-process: every workflow enters its recv at once)
        return [await asyncflow.recv(topic, timeout_seconds=30),
                await asyncflow.recv(topic, timeout_seconds=30)]

    async with app:
        handles = [await app.start_workflow(sink, "t" if k % 4 < 2 else None)
                   for k in range(40)]
        topics = ["t" if k % 4 < 2 else None for k in range(40)]
        for k, h in enumerate(handles):
            if k % 2 == 0:  # half of them find a message waiting at their first attempt
                await app.send(h.workflow_id, "early", topic=topics[k])
            await app.send(h.workflow_id, "other topic", topic="u")  # never taken
        store = app.runtime.store
        before = (store.first_recvs.batches, store.first_recvs.ops)
        gate.set()
        await app._waits.wait_for_count(40)  # each parked: the early ones in their 2nd recv
        batches, ops = (store.first_recvs.batches - before[0], store.first_recvs.ops - before[1])
        assert ops == 60 and batches < 40
        await asyncio.gather(*(app.send(h.workflow_id, "late", topic=topics[k])
                               for k, h in enumerate(handles)))
        await asyncio.gather(*(app.send(h.workflow_id, "later", topic=topics[k])
                               for k, h in enumerate(handles) if k % 2))
        results = await asyncio.gather(*(h.get_result(timeout_seconds=30) for h in handles))
        assert results[::2] == [["early", "late"]] * 20
        assert results[1::2] == [["late", "later"]] * 20


async def test_recvs_of_two_topics_of_one_workflow_share_a_batch(make_app):
    """Two recvs of one workflow, on different topics, waiting at once: woken by one send_many
    each takes the message of its own mailbox."""
    app = make_app()

    @app.workflow()
    async def both() -> list:
        return list(await asyncio.gather(asyncflow.recv("a", timeout_seconds=30),
                                         asyncflow.recv("b", timeout_seconds=30)))

    async with app:
        handles = [await app.start_workflow(both) for _ in range(20)]
        await app._waits.wait_for_count(40)
        await app.send_many([(h.workflow_id, f"{t}{k}", t) for k, h in enumerate(handles)
                             for t in ("a", "b")])
        results = await asyncio.gather(*(h.get_result(timeout_seconds=30) for h in handles))
        assert results == [[f"a{k}", f"b{k}"] for k in range(20)]
