"""Live page updates: the app's wake-ups, coalesced per workflow, as Server-Sent Events.

The :class:`Hub` observes the app's (or client's) wait registry while at least one page is
connected, so it sees every NOTIFY the LISTEN connection receives and every local commit's
wake-up, without a query or a timer. Each connected page has a :class:`Subscription` to all
workflows (the list) or to some ids (a workflow page). Wake-ups accumulate per workflow id until
the connection's writer takes them; the writer sends at most one ``change`` event per
``interval`` seconds, so a burst of writes becomes one event and one re-fetch in the browser.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import anyio
import anyio.abc
import orjson

from .._lifecycle import Connected
from .._wait import WaitRegistry
from ._http import Receive, Send

logger = logging.getLogger("asyncflow")

MAX_PENDING_IDS = 500  # beyond this many changed workflows, a page just refreshes everything


def _registry(core: Connected) -> WaitRegistry:
    # The one place the dashboard reaches into the app: its waiter registry's observer hook.
    return core._waits


class Subscription:
    """One live page's interest: every workflow (``ids is None``) or some ids."""

    def __init__(self, ids: frozenset[str] | None) -> None:
        self.ids = ids
        self.changed: dict[str, set[str]] = {}
        self.overflow = False
        self.ready = asyncio.Event()

    def offer(self, kind: str, workflow_id: str) -> None:
        """Record a wake-up of ``kind`` for ``workflow_id`` (coalesced until taken)."""
        if not self.overflow:
            kinds = self.changed.get(workflow_id)
            if kinds is None:
                if len(self.changed) >= MAX_PENDING_IDS:
                    self.overflow = True
                    self.changed.clear()
                else:
                    self.changed[workflow_id] = {kind}
            else:
                kinds.add(kind)
        self.ready.set()

    def take(self) -> bytes:
        """The accumulated changes as one SSE ``change`` event, and start afresh."""
        changed = {wid: "".join(sorted(kinds)) for wid, kinds in self.changed.items()}
        data = orjson.dumps({"ids": changed, "all": self.overflow})
        self.changed = {}
        self.overflow = False
        self.ready.clear()
        return b"event: change\ndata: " + data + b"\n\n"


class Hub:
    """Fans the registry's wake-ups out to the dashboard's live connections."""

    def __init__(self, core: Connected) -> None:
        self._core = core
        self._everything: set[Subscription] = set()
        self._by_id: dict[str, set[Subscription]] = {}
        self._remove: Callable[[], None] | None = None
        self.closed = False

    def subscribe(self, ids: frozenset[str] | None) -> Subscription:
        """A new subscription; the first one starts observing the registry."""
        sub = Subscription(ids)
        if ids is None:
            self._everything.add(sub)
        else:
            for workflow_id in ids:
                self._by_id.setdefault(workflow_id, set()).add(sub)
        if self._remove is None:
            self._remove = _registry(self._core).add_observer(self.publish)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub``; the last one stops observing the registry."""
        self._everything.discard(sub)
        for workflow_id in sub.ids or ():
            group = self._by_id.get(workflow_id)
            if group is not None:
                group.discard(sub)
                if not group:
                    del self._by_id[workflow_id]
        if not self._everything and not self._by_id and self._remove is not None:
            self._remove()
            self._remove = None

    def publish(self, kind: str, workflow_id: str) -> None:
        """A change of ``kind`` to ``workflow_id`` (the registry observer; also called by the
        dashboard's own actions for changes the registry does not see)."""
        for sub in self._everything:
            sub.offer(kind, workflow_id)
        for sub in self._by_id.get(workflow_id, ()):
            sub.offer(kind, workflow_id)

    def close(self) -> None:
        """End every live connection (for server shutdown); new ones end at once."""
        self.closed = True
        for sub in [*self._everything, *(s for group in self._by_id.values() for s in group)]:
            sub.ready.set()


SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # tell nginx-style proxies not to buffer
]


async def serve(
    hub: Hub,
    ids: frozenset[str] | None,
    receive: Receive,
    send: Send,
    *,
    interval: float,
    ping_seconds: float = 15.0,
) -> None:
    """Stream ``change`` events for ``ids`` (every workflow if None) until the client leaves or
    the hub closes. The first event, ``ready``, tells the page to re-fetch once: anything that
    changed between rendering the page and subscribing is then shown too."""
    sub = hub.subscribe(ids)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "more_body": True,
                    "body": b"retry: 1000\nevent: ready\ndata: {}\n\n"})

        async def watch_disconnect(scope: anyio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_disconnect, tg.cancel_scope)
            while not hub.closed:
                with anyio.move_on_after(ping_seconds):  # keep-alive timer, not a poll
                    await sub.ready.wait()
                if hub.closed:
                    break
                if not sub.ready.is_set():
                    await send({"type": "http.response.body", "body": b": ping\n\n",
                                "more_body": True})
                    continue
                await send({"type": "http.response.body", "body": sub.take(),
                            "more_body": True})
                await anyio.sleep(interval)  # rate limit: later changes coalesce meanwhile
            tg.cancel_scope.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError as exc:  # the connection broke under a send
        logger.debug("dashboard live connection ended: %s", exc)
    finally:
        hub.unsubscribe(sub)
