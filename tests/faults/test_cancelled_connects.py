"""A caller cancelled while the pool opens a connection for it (a client's short deadline
under load): the connection is the pool's, not abandoned half-open; the pool's close ends a
connect under way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from faultlib import FaultProxy

from asyncflow import NotLaunchedError
from asyncflow._storage.pool import ConnectionPool


@asynccontextmanager
async def _held(db_url: str) -> AsyncIterator[tuple[FaultProxy, ConnectionPool]]:
    """A pool of one connection behind a proxy that holds each connect until released."""
    proxy = FaultProxy(db_url)
    url = await proxy.start()
    proxy.hold_connects()
    pool = ConnectionPool(url, 1)
    try:
        yield proxy, pool
    finally:
        await pool.close()
        await proxy.close()


async def test_a_caller_cancelled_while_its_connection_opens_leaves_it_to_the_pool(
        db_url: str) -> None:
    async with _held(db_url) as (proxy, pool):
        caller = asyncio.ensure_future(pool.acquire())
        await asyncio.wait_for(proxy.connecting.wait(), 30)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        proxy.release_connects()
        conn = await asyncio.wait_for(pool.acquire(), 30)
        assert await conn.fetchval("select 1") == 1
        assert proxy.accepted == 1, "the cancelled caller's connection was abandoned"
        assert pool.open_connections == 1
        pool.release(conn)


async def test_a_cancelled_callers_connection_goes_to_the_next_waiter(db_url: str) -> None:
    async with _held(db_url) as (proxy, pool):
        first = asyncio.ensure_future(pool.acquire())
        await asyncio.wait_for(proxy.connecting.wait(), 30)
        second = asyncio.ensure_future(pool.acquire())  # waits: the one slot is opening
        await asyncio.sleep(0)
        first.cancel()
        proxy.release_connects()
        conn = await asyncio.wait_for(second, 30)
        assert proxy.accepted == 1
        pool.release(conn)


async def test_closing_the_pool_ends_a_connect_under_way(db_url: str) -> None:
    async with _held(db_url) as (proxy, pool):
        caller: asyncio.Future[Any] = asyncio.ensure_future(pool.acquire())
        await asyncio.wait_for(proxy.connecting.wait(), 30)
        await asyncio.wait_for(pool.close(), 30)
        with pytest.raises(NotLaunchedError):
            await caller
        assert pool.open_connections == 0
