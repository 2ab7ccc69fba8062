"""Load and listener loss: many concurrent clients sending to many workflows, and the LISTEN
connections terminated again and again during a send/recv storm.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict

import pytest
from faultlib import FaultProxy, size

import asyncflow

pytestmark = [pytest.mark.soak, pytest.mark.slow]


class Progress:
    """A counter that tests can await (``await progress.reach(n)``)."""

    def __init__(self) -> None:
        self.value = 0
        self._changed = asyncio.Event()

    def add(self) -> None:
        self.value += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def reach(self, target: int) -> None:
        while self.value < target:
            await self._changed.wait()


async def test_concurrent_clients_each_workflow_gets_its_exact_messages(make_app, db_url):
    clients = size(20, 20, "ASYNCFLOW_SOAK_LOAD_CLIENTS")
    sends = size(200, 500, "ASYNCFLOW_SOAK_LOAD_SENDS")
    workflows = 100
    topics = ("a", "b")
    # The plan: client c's j-th message goes to workflow (c * 7 + j) % workflows on topic
    # topics[j % 2], carrying [c, j].
    plan: dict[tuple[int, str], list[list[int]]] = defaultdict(list)
    for c in range(clients):
        for j in range(sends):
            plan[((c * 7 + j) % workflows, topics[j % 2])].append([c, j])
    app = make_app()

    @app.workflow()
    async def inbox(expect: dict[str, int]) -> dict[str, list[list[int]]]:
        got: dict[str, list[list[int]]] = {}
        for topic, count in expect.items():
            got[topic] = [await asyncflow.recv(topic, timeout_seconds=3600)
                          for _ in range(count)]
        return got

    started = time.monotonic()
    async with app:
        handles = [
            await app.start_workflow(
                inbox, {t: len(plan[(w, t)]) for t in topics}, workflow_id=f"inbox-{w}")
            for w in range(workflows)
        ]

        async def client_sends(c: int) -> None:
            async with asyncflow.Client(db_url, pool_size=2) as client:
                for j in range(sends):
                    await client.send(f"inbox-{(c * 7 + j) % workflows}", [c, j], topics[j % 2])

        await asyncio.gather(*(client_sends(c) for c in range(clients)))
        results = [await h.get_result(timeout_seconds=120) for h in handles]
    elapsed = time.monotonic() - started
    for w, got in enumerate(results):
        for topic in topics:
            received = got[topic]
            # Exactly the multiset sent to it...
            assert Counter(map(tuple, received)) == Counter(map(tuple, plan[(w, topic)]))
            # ...and, per sender, in the order it was sent.
            by_sender: dict[int, list[int]] = defaultdict(list)
            for c, j in received:
                by_sender[c].append(j)
            assert all(js == sorted(js) for js in by_sender.values())
    print(f"load: {clients * sends} messages from {clients} clients to {workflows} workflows "
          f"in {elapsed:.1f}s")


async def test_listener_terminated_repeatedly_during_send_recv_storm(make_app, db_url, conn):
    n = size(40, 200, "ASYNCFLOW_SOAK_STORM_WORKFLOWS")
    per = 15
    kills = size(10, 40, "ASYNCFLOW_SOAK_STORM_KILLS")
    app = make_app()
    received = Progress()

    @app.workflow()
    async def sink(count: int) -> list[int]:
        got = []
        for _ in range(count):
            # A wait this long would fail the test: every wake-up must come from a NOTIFY or
            # from the listener's reconnect.
            got.append(await asyncflow.recv("s", timeout_seconds=3600))
            received.add()
        return got

    started = time.monotonic()
    async with app, asyncflow.Client(db_url) as client:
        handles = [await app.start_workflow(sink, per, workflow_id=f"s{i}") for i in range(n)]
        results = [asyncio.ensure_future(h.get_result(timeout_seconds=3600)) for h in handles]
        client_results = [
            asyncio.ensure_future((await client.retrieve_workflow(f"s{i}")).get_result(3600))
            for i in range(n)
        ]

        async def sender(i: int) -> None:
            for j in range(per):
                await client.send(f"s{i}", j, "s")

        senders = asyncio.gather(*(sender(i) for i in range(n)))
        total = n * per
        for k in range(kills):
            # Kill the app's and the client's LISTEN connections in turn, mid-storm.
            listener = app.listener if k % 2 == 0 else client.listener
            await received.reach(total * (k + 1) // (kills + 2))
            await listener.wait_connected()
            pid = listener.backend_pid
            assert await conn.fetchval("select pg_terminate_backend($1::int)", pid)
            await listener.wait_connected(not_pid=pid)
        await senders
        got = await asyncio.gather(*results)
        seen = await asyncio.gather(*client_results)
        reconnects = app.listener.reconnects + client.listener.reconnects
    assert got == seen == [list(range(per))] * n
    assert await conn.fetchval("select count(*) from asyncflow.messages") == 0
    assert reconnects >= kills
    assert time.monotonic() - started < 60  # nobody sat out a 3600 s timeout


async def test_listener_reconnects_while_its_old_backend_still_holds_the_executor_lock(
    db_url, conn
):
    """The LISTEN connection is lost on the client's side only (a half-open connection): the
    server keeps the old backend, and with it the executor's lock, for a while. The listener
    listens again at once without the lock — no wake-up is lost — and takes the lock back as
    soon as the old backend is gone."""
    n = 20
    proxy = FaultProxy(db_url)
    url = await proxy.start()
    app = asyncflow.AsyncFlow(url, executor_id="stale-lock", recovery_interval_seconds=0.2)

    @app.workflow()
    async def parked() -> object:
        return await asyncflow.recv(timeout_seconds=3600)

    try:
        async with asyncio.timeout(60), app, asyncflow.Client(db_url) as client:
            handles = [await app.start_workflow(parked, workflow_id=f"p{i}") for i in range(n)]
            await app._waits.wait_for_count(n)
            listener = app.listener
            old = listener.backend_pid
            assert proxy.strand(b"LISTEN") == 1
            await listener.wait_connected(not_pid=old)
            assert not listener.holds_lock  # the stranded backend still has it
            assert await conn.fetchval(
                "select count(*) from pg_stat_activity where pid = $1", old) == 1
            for i in range(n):
                await client.send(f"p{i}", i)  # only the app's NOTIFYs can wake its waiters
            assert [await h.get_result(timeout_seconds=10) for h in handles] == list(range(n))
            proxy.release()  # the old backend sees EOF and exits, freeing the lock
            await listener.wait_connected(lock=True)
            with pytest.raises(asyncflow.ExecutorIdInUseError):
                async with asyncflow.AsyncFlow(db_url, executor_id="stale-lock"):
                    pass
    finally:
        await proxy.close()
