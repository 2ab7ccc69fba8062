"""Group commit: concurrent operations of one kind share one statement.

While a batch of a kind is being written, operations of that kind arriving from other workflows
queue up; the next batch takes them all (up to ``max_batch``) — natural batching, no timer. A
lone operation is written at once by its own statement, so under no load nothing waits and it
costs one round trip, as before. Batches run in the callers' own tasks: the caller whose
operation opens a batch writes it (shielded from cancellation, so every operation in it is
either committed or failed), then hands the turn to the first operation still queued.

``settled`` (optional) is called with each operation and its result as soon as its statement has
returned, before any caller resumes: a batch of n wakes n tasks, and what a commit makes
possible elsewhere (a local reader handed the value just written) need not wait for them all.

A batch statement reports a result per operation. If it fails as a whole with anything but a
lost connection (one bad row, a unique violation of rows racing a concurrent writer — whatever
the exception's type, the driver's internal ones included), each of its operations is retried
alone, so an operation that fails fails alone; a lost connection fails every operation of the
batch with the same :class:`DatabaseUnavailableError` the operation would have raised alone.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, TypeVar

import anyio

from .._errors import DatabaseUnavailableError, _ExecutionConflict

Op = TypeVar("Op")
R = TypeVar("R")


class _Lead:
    __slots__ = ()


_LEAD: Final = _Lead()


class _Entry(Generic[Op]):
    __slots__ = ("future", "op")

    def __init__(self, op: Op, future: asyncio.Future[Any] | None) -> None:
        self.op = op
        self.future = future


class Batcher(Generic[Op, R]):
    """Writes operations of one kind, batching those that arrive while a batch is in flight.

    ``many(ops)`` writes several in one statement and returns one result (or exception) per
    op; ``one(op)`` writes a single op (used for lone ops and for the one-by-one fallback).
    At most ``writers`` batches are in flight at once. ``settled(op, result)``: called for
    each op written successfully, before its caller resumes (it must not raise).
    """

    def __init__(
        self,
        many: Callable[[list[Op]], Awaitable[list[R | BaseException]]],
        one: Callable[[Op], Awaitable[R]],
        *,
        max_batch: int = 500,
        writers: int = 1,
        settled: Callable[[Op, R], None] | None = None,
    ) -> None:
        self._many = many
        self._one = one
        self._settled = settled
        self._max_batch = max_batch
        self._writers = writers
        self._active = 0
        self._queue: deque[_Entry[Op]] = deque()
        #: Batch sizes written (for benchmarks and tests): count of batches and of ops.
        self.batches = 0
        self.ops = 0

    async def submit(self, op: Op) -> R:
        """Write ``op`` (alone or in a batch); its result once committed."""
        if self._active < self._writers:
            self._active += 1
            if not self._queue:  # alone: written at once by its own statement, like no batching
                self.batches += 1
                self.ops += 1
                try:
                    alone = await self._one(op)
                finally:
                    self._hand_over()
                if self._settled is not None:
                    self._settled(op, alone)
                return alone
            return await self._lead(op)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry: _Entry[Op] = _Entry(op, future)
        self._queue.append(entry)
        try:
            outcome = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.result() is _LEAD:
                self._hand_over()  # it was our turn: give it to the next one
            elif entry in self._queue:
                self._queue.remove(entry)
            raise
        if outcome is _LEAD:
            return await self._lead(op)
        result: R = outcome
        return result

    async def _lead(self, op: Op) -> R:
        """Write ``op`` with every queued op (up to ``max_batch``)."""
        batch: list[_Entry[Op]] = [_Entry(op, None)]
        queue = self._queue
        while queue and len(batch) < self._max_batch:
            batch.append(queue.popleft())
        return await self._write(batch)

    async def _write(self, batch: list[_Entry[Op]]) -> R:
        try:
            with anyio.CancelScope(shield=True):
                results = await self._run([entry.op for entry in batch])
        except Exception as exc:  # a bug, not a database outcome: everyone gets it
            results = [exc for _ in batch]
        finally:
            self._hand_over()
        settled = self._settled
        if settled is not None:
            for entry, result in zip(batch, results, strict=True):
                if not isinstance(result, BaseException):
                    settled(entry.op, result)
        for entry, result in zip(batch[1:], results[1:], strict=True):
            assert entry.future is not None
            if not entry.future.done():  # (done: its caller was cancelled meanwhile)
                if isinstance(result, BaseException):
                    entry.future.set_exception(result)
                else:
                    entry.future.set_result(result)
        mine = results[0]
        if isinstance(mine, BaseException):
            raise mine
        return mine

    def _hand_over(self) -> None:
        """Give the turn to the first queued op (it then writes a batch of its own)."""
        while self._queue:
            head = self._queue.popleft()
            assert head.future is not None
            if not head.future.done():
                head.future.set_result(_LEAD)
                return
        self._active -= 1

    async def _run(self, ops: list[Op]) -> list[R | BaseException]:
        self.batches += 1
        self.ops += len(ops)
        if len(ops) > 1:
            try:
                return await self._many(ops)
            except DatabaseUnavailableError as exc:
                return [exc for _ in ops]
            except Exception:  # any other failure of the whole statement (one bad operation,
                pass  # rows racing a concurrent writer, whatever its type): write each alone
        results: list[R | BaseException] = []
        for op in ops:
            try:
                results.append(await self._one(op))
            except _OUTCOMES as exc:
                results.append(exc)
        return results


#: What a single write may raise as its own outcome (passed to its caller alone).
_OUTCOMES: tuple[type[BaseException], ...] = (Exception, _ExecutionConflict)

