"""Managed servers' timeouts: a transaction body outliving idle_in_transaction_session_timeout
is told so (not "the body ended or replaced its transaction")."""

from __future__ import annotations

import asyncio

import pytest

import asyncflow

IDLE_MS = "300"


async def _until_closed_by_the_server() -> None:
    """Park the body, its transaction open and idle, until the server closes its session."""
    conn = asyncflow.connection()
    closed = asyncio.Event()
    conn.add_termination_listener(lambda _conn: closed.set())
    await asyncio.wait_for(closed.wait(), 30)


@pytest.mark.parametrize("then_query", [False, True])
async def test_idle_in_transaction_timeout_is_named(db_url, then_query):
    app = asyncflow.AsyncFlow(db_url, connect_options={
        "server_settings": {"idle_in_transaction_session_timeout": IDLE_MS}})

    @app.transaction()
    async def slow() -> int:
        await asyncflow.connection().execute("SELECT 1")
        await _until_closed_by_the_server()
        if then_query:  # a statement on the closed session
            await asyncflow.connection().execute("SELECT 2")
        return 1

    @app.workflow()
    async def flow() -> int:
        return await slow()

    async with app:
        with pytest.raises(asyncflow.TransactionStateError,
                           match=f"idle_in_transaction_session_timeout \\({IDLE_MS} ms\\)"):
            await slow()
        handle = await app.start_workflow(flow)
        with pytest.raises(asyncflow.TransactionStateError,
                           match="idle_in_transaction_session_timeout"):
            await handle.get_result()
        assert (await handle.get_status()).status == "ERROR"


async def test_idle_in_transaction_timeout_is_named_with_a_pool_of_one(db_url):
    app = asyncflow.AsyncFlow(db_url, pool_size=1, connect_options={
        "server_settings": {"idle_in_transaction_session_timeout": IDLE_MS}})

    @app.transaction()
    async def slow() -> None:
        await _until_closed_by_the_server()

    async with app:
        with pytest.raises(asyncflow.TransactionStateError,
                           match="idle_in_transaction_session_timeout"):
            await asyncio.wait_for(slow(), 30)
