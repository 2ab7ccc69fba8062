"""The launch check of the connection paths: wake-ups must reach the listener.

Every wake-up is a NOTIFY committed by a statement on the pool and received by the listener's
LISTEN. Behind a transaction pooler (PgBouncer ``pool_mode=transaction``, a provider's pooled
URL) a LISTEN lands on whichever server connection ran it and nothing is ever delivered, so the
app would run without wake-ups. Launch refuses that with a :class:`ConfigurationError` naming
``listen_url``.

On a direct connection the check costs one statement: the pool connection's server process is
the one the connection was opened with. Otherwise (a pooler in between), or when ``listen_url``
gives the listener a path of its own, a test NOTIFY goes through the pool and must reach a
LISTEN on the listener's path within :data:`PROBE_SECONDS` (it is delivered at commit, so it
takes milliseconds when it works).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

from .._errors import ConfigurationError
from .database import Connection, Storage, map_errors

#: How long the test NOTIFY may take to arrive before the path counts as broken.
PROBE_SECONDS = 2.0


async def notify_arrives(storage: Storage, url: str) -> bool:
    """Whether a NOTIFY committed through the pool reaches a LISTEN on a session to ``url``."""
    channel = "asyncflow_probe_" + secrets.token_hex(8)
    token = secrets.token_hex(8)
    arrived = asyncio.Event()

    def received(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == "p" + token:
            arrived.set()

    session = await storage.connect(url)
    try:
        with map_errors(session):
            await session.add_listener(channel, received)
        await storage.probe_notify(channel, token)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROBE_SECONDS):
                await arrived.wait()
        return arrived.is_set()
    finally:
        await _close(session, channel, received)


async def _close(session: Connection, channel: str, callback: Any) -> None:
    """UNLISTEN (a session-mode pooler hands the server on) and close; never raises."""
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            await session.remove_listener(channel, callback)
            await session.close()
    except Exception:
        session.terminate()


async def check_paths(storage: Storage) -> None:
    """Fail launch with a clear error if wake-ups could not reach the listener."""
    listen_url = storage.settings.listen_url
    storage.pooled = not await storage.pool_is_direct()
    if listen_url is None:
        if not storage.pooled or await notify_arrives(storage, storage.url):
            return
        raise ConfigurationError(
            "the database URL goes through a connection pooler that does not keep sessions "
            "(PgBouncer pool_mode=transaction, a provider's pooled or 'transaction' URL): a "
            f"NOTIFY committed through it did not reach a LISTEN on it within {PROBE_SECONDS:g} "
            "s, so no workflow would ever be woken. Set listen_url= (or ASYNCFLOW_LISTEN_URL) to "
            "a direct or session-mode URL of the same database for the listener, and "
            "connect_options={'statement_cache_size': 0} for the pooled database URL"
        )
    if not await notify_arrives(storage, listen_url):
        raise ConfigurationError(
            "a NOTIFY committed through the database URL did not reach a LISTEN on listen_url "
            f"within {PROBE_SECONDS:g} s: listen_url (ASYNCFLOW_LISTEN_URL) must be a direct or "
            "session-mode URL of the same database as the database URL (not a transaction "
            "pooler, not another database)"
        )
