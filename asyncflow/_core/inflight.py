"""Writes of this process still in flight, by the id they are for.

A ``recv`` whose first statement would find the mailbox empty journals its deadline first (one
durable commit) and takes the message with a second one when it comes. When a send of this same
process to that workflow is being committed right then -- the caller of a ping-pong sends as soon
as its ``get_event`` returned, while the workflow goes on to its next ``recv`` -- the recv waits
for that one commit instead, and its first statement takes the message: one commit less, and no
second commit racing the send's for the disk.

The other way round, a send that starts while a recv of its destination journals its first
attempt waits for that entry (``Runtime.opening``), then completes it with its message in its
own statement (``sql/messages._HAND_OVER``): again one commit for the send and the recv.

Waiting here is waiting for a statement already running to return (never for state), and it
never waits longer than that statement: a failed or cancelled write releases its waiters too.
"""

from __future__ import annotations

import asyncio


class Write:
    """One write in flight; :attr:`awaited` says whether a reader waited for it (the writer
    then hands over, so that reader goes first)."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[None]] | None = None  # made only when someone waits

    @property
    def awaited(self) -> bool:
        return self.waiters is not None


class InFlight:
    """The writes in flight per id; :meth:`settled` waits for those of one id."""

    __slots__ = ("_writes",)

    def __init__(self) -> None:
        self._writes: dict[str, list[Write]] = {}

    def begin(self, key: str) -> Write:
        """Mark a write for ``key`` in flight until :meth:`end` (call that in a ``finally``)."""
        write = Write()
        writes = self._writes.get(key)
        if writes is None:
            self._writes[key] = [write]
        else:
            writes.append(write)
        return write

    def end(self, key: str, write: Write) -> None:
        """The write returned (or failed): release whoever waits for it."""
        writes = self._writes[key]
        if len(writes) == 1:
            del self._writes[key]
        else:
            writes.remove(write)
        if write.waiters is not None:
            for waiter in write.waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def settled(self, key: str) -> None:
        """Return once every write for ``key`` that was in flight at the call has returned
        (later ones are not waited for). Cancelling the caller cancels only its own wait."""
        writes = self._writes.get(key)
        if not writes:
            return
        # Every write listed is in flight (``end`` unlists it): a future on each, then the wait.
        # Each waiter's futures are its own, so cancelling it cancels only its wait.
        loop = asyncio.get_running_loop()
        waiting: list[asyncio.Future[None]] = []
        for write in writes:
            waiter: asyncio.Future[None] = loop.create_future()
            if write.waiters is None:
                write.waiters = []
            write.waiters.append(waiter)
            waiting.append(waiter)
        for waiter in waiting:
            await waiter
