"""Commit modes: an open wait's journal entry commits asynchronously (it is flushed by the next
synchronous commit, typically the send that ends the wait: one WAL flush instead of two), while
a wait that takes its value at once commits as the session says (synchronously by default)."""

from __future__ import annotations

import asyncio

import pytest

import asyncflow
from asyncflow._storage import sql
from asyncflow._storage.sql import events, messages


@pytest.mark.not_on_citus("the statement runs on the worker holding the workflow's shard: "
                           "set_config changes that worker's commit, which SHOW on the "
                           "coordinator does not see")
@pytest.mark.parametrize("waiting", [False, True])
async def test_recv_first_commits_asynchronously_only_while_the_wait_is_open(
        make_app, conn, waiting):
    app = make_app()
    parked = asyncio.Event()

    @app.workflow()
    async def holder() -> None:
        parked.set()
        await asyncio.Event().wait()  # not durable: the test writes its journal itself

    async with app:
        await app.start_workflow(holder, workflow_id="w")
        await parked.wait()
        if waiting:
            await app.send("w", "hello", topic="t")
        statement = sql.render(messages.RECV_FIRST_TOPIC, "asyncflow")
        async with conn.transaction():
            row = await conn.fetchrow(statement, "w", "t", 0, 1e12, 1)
            mode = await conn.fetchval("SHOW synchronous_commit")
        assert row["recorded"] == 1
        assert (row["message"] is not None) == waiting
        assert mode == ("on" if waiting else "off")


@pytest.mark.not_on_citus("the statement runs on the worker holding the workflow's shard: "
                           "set_config changes that worker's commit, which SHOW on the "
                           "coordinator does not see")
@pytest.mark.parametrize("set_before", [False, True])
async def test_get_event_first_commits_asynchronously_only_while_the_wait_is_open(
        make_app, conn, set_before):
    app = make_app()
    parked = asyncio.Event()

    @app.workflow()
    async def holder() -> None:
        if set_before:
            await asyncflow.set_event("k", 1)
        parked.set()
        await asyncio.Event().wait()

    async with app:
        await app.start_workflow(holder, workflow_id="w")
        await parked.wait()
        statement = sql.render(events.GET_EVENT_FIRST, "asyncflow")
        function_id = 1 if set_before else 0
        async with conn.transaction():
            row = await conn.fetchrow(statement, "w", "w", "k", function_id, 1e12, 1)
            mode = await conn.fetchval("SHOW synchronous_commit")
        assert row["recorded"] == 1
        assert (row["value"] is not None) == set_before
        assert mode == ("on" if set_before else "off")
