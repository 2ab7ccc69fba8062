"""Live page updates: the app's wake-ups, coalesced per workflow, as Server-Sent Events.

The :class:`Hub` observes the app's (or client's) wait registry while at least one page is
connected, so it sees every NOTIFY the LISTEN connection receives and every local commit's
wake-up, without a query or a timer. Each connected page has a :class:`Subscription` to
everything (the workflow list, the queue pages) or to some workflow ids and queue names
(a workflow page: its id, and its queue's). Wake-ups accumulate per workflow id — and, for the
queue kinds ``q`` (enqueued) and ``f`` (a slot freed), whose id is a queue name, per queue — until
the connection's writer takes them; the writer sends at most one ``change`` event per
``interval`` seconds, so a burst of writes becomes one event and one re-fetch in the browser.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.abc
import orjson

from .._core.wait import QUEUE, SLOT_FREED, WaitRegistry
from .._front.lifecycle import Connected
from ._http import Receive, Send

logger = logging.getLogger("asyncflow")

MAX_PENDING_IDS = 500  # beyond this many changed workflows, a page just refreshes everything
#: Wake-up kinds whose id is a queue name, not a workflow id.
QUEUE_KINDS = frozenset({QUEUE, SLOT_FREED})


def _registry(core: Connected) -> WaitRegistry:
    # The one place the dashboard reaches into the app: its waiter registry's observer hook.
    return core._waits


@dataclass(frozen=True, slots=True)
class Follow:
    """What a page follows: some workflow ids and some queue names."""

    ids: frozenset[str]
    queues: frozenset[str]


class Subscription:
    """One live page's interest: everything (``follow is None``) or some ids and queues."""

    def __init__(self, follow: Follow | None) -> None:
        self.follow = follow
        self.changed: dict[str, set[str]] = {}
        self.queues: dict[str, set[str]] = {}
        self.overflow = False
        self.ready = asyncio.Event()

    def offer(self, kind: str, key: str) -> None:
        """Record a wake-up of ``kind`` for ``key`` (a workflow id, or a queue name for the
        queue kinds), coalesced until taken."""
        if not self.overflow:
            changed = self.queues if kind in QUEUE_KINDS else self.changed
            kinds = changed.get(key)
            if kinds is None:
                if len(self.changed) + len(self.queues) >= MAX_PENDING_IDS:
                    self.overflow = True
                    self.changed.clear()
                    self.queues.clear()
                else:
                    changed[key] = {kind}
            else:
                kinds.add(kind)
        self.ready.set()

    def take(self) -> bytes:
        """The accumulated changes as one SSE ``change`` event, and start afresh: ``ids`` maps
        workflow ids to their kind letters, ``queues`` (present when some changed) queue names
        to theirs, ``all`` says too much changed to list."""
        event: dict[str, object] = {
            "ids": {wid: "".join(sorted(kinds)) for wid, kinds in self.changed.items()},
            "all": self.overflow,
        }
        if self.queues:
            event["queues"] = {name: "".join(sorted(kinds)) for name, kinds in self.queues.items()}
        data = orjson.dumps(event)
        self.changed = {}
        self.queues = {}
        self.overflow = False
        self.ready.clear()
        return b"event: change\ndata: " + data + b"\n\n"


class Hub:
    """Fans the registry's wake-ups out to the dashboard's live connections."""

    def __init__(self, core: Connected) -> None:
        self._core = core
        self._everything: set[Subscription] = set()
        self._by_id: dict[str, set[Subscription]] = {}
        self._by_queue: dict[str, set[Subscription]] = {}
        self._remove: Callable[[], None] | None = None
        self.closed = False

    def subscribe(self, follow: Follow | None) -> Subscription:
        """A new subscription; the first one starts observing the registry."""
        sub = Subscription(follow)
        if follow is None:
            self._everything.add(sub)
        else:
            for workflow_id in follow.ids:
                self._by_id.setdefault(workflow_id, set()).add(sub)
            for queue_name in follow.queues:
                self._by_queue.setdefault(queue_name, set()).add(sub)
        if self._remove is None:
            self._remove = _registry(self._core).add_observer(self.publish)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub``; the last one stops observing the registry."""
        self._everything.discard(sub)
        if sub.follow is not None:
            for index, keys in ((self._by_id, sub.follow.ids),
                                (self._by_queue, sub.follow.queues)):
                for key in keys:
                    group = index.get(key)
                    if group is not None:
                        group.discard(sub)
                        if not group:
                            del index[key]
        if (not self._everything and not self._by_id and not self._by_queue
                and self._remove is not None):
            self._remove()
            self._remove = None

    def publish(self, kind: str, key: str) -> None:
        """A change of ``kind`` to ``key`` — a workflow id, or a queue name for the queue kinds
        (the registry observer; also called by the dashboard's own actions for changes the
        registry does not see)."""
        for sub in self._everything:
            sub.offer(kind, key)
        index = self._by_queue if kind in QUEUE_KINDS else self._by_id
        for sub in index.get(key, ()):
            sub.offer(kind, key)

    def close(self) -> None:
        """End every live connection (for server shutdown); new ones end at once."""
        self.closed = True
        for sub in [*self._everything,
                    *(s for index in (self._by_id, self._by_queue)
                      for group in index.values() for s in group)]:
            sub.ready.set()


SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # tell nginx-style proxies not to buffer
]


async def serve(
    hub: Hub,
    follow: Follow | None,
    receive: Receive,
    send: Send,
    *,
    interval: float,
    ping_seconds: float = 15.0,
) -> None:
    """Stream ``change`` events for ``follow`` (everything if None) until the client leaves or
    the hub closes. The first event, ``ready``, tells the page to re-fetch once: anything that
    changed between rendering the page and subscribing is then shown too."""
    sub = hub.subscribe(follow)
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
