"""The group-commit statements of the store: many operations of one kind in one statement,
with one outcome per operation (see :mod:`asyncflow._storage.batcher`). For the starts, outcome
checks and recvs, both halves live here: the statement of one operation and of many."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .._status import Delivery
from .base import (
    Close,
    Delivered,
    Finish,
    FirstRecv,
    Outcome,
    Page,
    Read,
    Received,
    Record,
    Recv,
    Sent,
    Start,
    Started,
    StoreBase,
    Taken,
    Write,
    Written,
    conflict,
    not_found,
    page,
)
from .database import UniqueViolation
from .sql import batches, journal, messages, streams, workflows

#: Told of each journaled stream write or close committed: (workflow id, key, offset, value
#: text), or for a close (workflow id, key, the stream's length, ``None``).
StreamCommitted = Callable[[str, str, int, str | None], None]


class BatchStatements(StoreBase):
    """The statements of the store's batchers: each kind's ``*_many`` and, for most, its ``*_one``
    (a lone operation, or each operation of a batch that failed as a whole)."""

    __slots__ = ()
    on_stream_committed: StreamCommitted | None

    def _written(self, op: Write, result: Written) -> None:
        """A journaled stream write committed (the ``settled`` hook of the store's writes): its
        entry goes to ``on_stream_committed`` (the runtime hands it to local readers) as soon
        as the statement returned, before the writers of its batch resume one after another."""
        hook = self.on_stream_committed
        if hook is not None and result[1] is not None:
            hook(op[0], op[3], result[1], op[4])

    def _closed(self, op: Close, length: int | None) -> None:
        """A journaled close committed (the ``settled`` hook of the store's closes): local
        readers that have read ``length`` entries learn that the stream ended without a read."""
        hook = self.on_stream_committed
        if hook is not None and length is not None:
            hook(op[0], op[3], length, None)

    async def _finish_many(self, ops: list[Finish]) -> list[bool | BaseException]:
        columns = [list(column) for column in zip(*ops, strict=True)]
        rows = await self.storage.fetch(batches.FINISH_WORKFLOWS, *columns[:4], self.channel,
                                        columns[4])
        finished = {row["workflow_id"] for row in rows}
        return [op[0] in finished for op in ops]

    async def _record_many(self, ops: list[Record]) -> list[bool | BaseException]:
        columns = list(zip(*ops, strict=True))
        rows = await self.storage.fetch(batches.RECORD_OPERATIONS, *map(list, columns))
        recorded = {(r["workflow_id"], r["function_id"]) for r in rows if r["kind"] == "r"}
        pending = {(r["workflow_id"], r["epoch"]) for r in rows if r["kind"] == "p"}
        results: list[bool | BaseException] = []
        for op in ops:
            if (op[0], op[1]) in recorded:
                # Two executions of one workflow may record the same entry in one batch: the
                # first wins, like the first of two inserts; the other is a conflict.
                recorded.discard((op[0], op[1]))
                results.append(True)
            elif (op[0], op[8]) in pending:  # owned, but its entry exists: another execution
                results.append(conflict(op[0], op[1]))
            else:
                results.append(False)
        return results

    async def _write_many(self, ops: list[Write]) -> list[Written | BaseException]:
        columns = [list(column) for column in zip(*ops, strict=True)]
        rows = await self.storage.fetch(batches.JOURNALED_WRITE_STREAMS, *columns[:5], self.channel,
                                        columns[5], columns[6])
        journaled = {(r["workflow_id"], r["function_id"]): bool(r["refused"])
                     for r in rows if r["kind"] == "o"}
        offsets = {(r["workflow_id"], r["function_id"]): r["offset"]
                   for r in rows if r["kind"] == "w"}
        pending = {(r["workflow_id"], r["epoch"]) for r in rows if r["kind"] == "p"}
        results: list[Written | BaseException] = []
        for op in ops:
            key = (op[0], op[1])
            if key in journaled:  # (the first of two executions' writes wins, as in records)
                results.append((True, offsets.get(key), journaled.pop(key)))
            elif (op[0], op[6]) in pending:
                results.append(conflict(op[0], op[1]))
            else:
                results.append((False, None, False))
        return results

    async def _close_many(self, ops: list[Close]) -> list[int | BaseException | None]:
        columns = [list(column) for column in zip(*ops, strict=True)]
        rows = await self.storage.fetch(batches.JOURNALED_CLOSE_STREAMS, *columns[:4],
                                        self.channel, columns[4])
        journaled = {(r["workflow_id"], r["function_id"]) for r in rows if r["kind"] == "o"}
        pending = {(r["workflow_id"], r["epoch"]) for r in rows if r["kind"] == "p"}
        lengths = {(r["workflow_id"], r["key"]): r["next_offset"] for r in rows
                   if r["kind"] == "h"}
        results: list[int | BaseException | None] = []
        for op in ops:
            if (op[0], op[1]) in journaled:  # (the first of two executions' closes wins)
                journaled.discard((op[0], op[1]))
                results.append(lengths[op[0], op[3]])
            elif (op[0], op[4]) in pending:
                results.append(conflict(op[0], op[1]))
            else:
                results.append(None)
        return results

    async def _send_many(self, ops: list[Sent]) -> list[Delivered | BaseException]:
        columns = list(zip(*ops, strict=True))
        rows = await self.storage.fetch(batches.SEND_MESSAGES, *map(list, columns), self.channel)
        return [(Delivery.of(row["inserted"], row["status"]), row["handed"])
                if row["found"] and row["status"] is not None else not_found(op[0])
                for op, row in zip(ops, rows, strict=True)]

    async def _read_many(self, ops: list[Read]) -> list[Page | BaseException]:
        columns = list(zip(*ops, strict=True))
        rows = await self.storage.fetch(batches.READ_STREAMS, *map(list, columns))
        grouped: dict[int, list[Any]] = {}
        for row in rows:
            grouped.setdefault(row["ord"], []).append(row)
        results: list[Page | BaseException] = []
        for ordinal, op in enumerate(ops, start=1):
            mine = grouped.get(ordinal, [])
            if not mine or mine[0]["status"] is None:
                results.append(not_found(op[0]))
            else:
                results.append(page(mine))
        return results

    # -- single operations: a lone one, or each of a failed batch -------------------------------

    async def _finish_one(self, op: Finish) -> bool:
        return bool(await self.storage.fetch(workflows.FINISH_WORKFLOW, *op[:4], self.channel,
                    op[4]))

    async def _record_one(self, op: Record) -> bool:
        try:
            result = await self.storage.execute(journal.RECORD_OPERATION, *op)
        except UniqueViolation:
            raise conflict(op[0], op[1]) from None
        return not result.endswith(" 0")

    async def _close_one(self, op: Close) -> int | None:
        """The closed stream's length, or ``None`` when not recorded (not owned)."""
        workflow_id, function_id, name, key, epoch = op
        try:
            row = await self.storage.fetchrow(journal.JOURNALED_CLOSE_STREAM, workflow_id,
                                              function_id, name, key, self.channel, epoch)
        except UniqueViolation:
            raise conflict(workflow_id, function_id) from None
        assert row is not None
        length: int | None = row["next_offset"] if row["recorded"] else None
        return length

    async def _read_one(self, op: Read) -> Page:
        rows = await self.storage.fetch(streams.READ_STREAM, *op)
        if not rows:
            raise not_found(op[0])
        return page(rows)

    # -- starts ---------------------------------------------------------------------------------

    async def _insert_one(self, op: Start) -> Started:
        row = await self.storage.fetchrow(workflows.INSERT_WORKFLOW, *op[:9], self.channel,
                                          *op[9:])
        if row is None:  # lost a race with a concurrent insert of the same id (it exists now),
            # or the parent's execution no longer owns the parent (then it may not exist)
            existing: str | None = await self.storage.fetchval(workflows.WORKFLOW_NAME, op[0])
            return False, existing
        return bool(row["created"]), row["name"]

    async def _insert_many(self, ops: list[Start]) -> list[Started | BaseException]:
        columns = _distinct_columns(ops, 1)  # two starts of one id: one by one
        rows = await self.storage.fetch(batches.INSERT_WORKFLOWS, *columns[:9], self.channel,
                                        *columns[9:])
        created = {row["workflow_id"]: row["name"] for row in rows if row["kind"] == "c"}
        existing = {row["workflow_id"]: row["name"] for row in rows if row["kind"] == "e"}
        results: list[Started | BaseException] = []
        for op in ops:
            workflow_id = op[0]
            if workflow_id in existing:
                results.append((False, existing[workflow_id]))
            elif workflow_id in created:
                results.append((True, created[workflow_id]))
            else:  # refused by its parent's fence, or raced by a concurrent insert: alone
                try:
                    results.append(await self._insert_one(op))
                except Exception as exc:
                    results.append(exc)
        return results

    # -- outcome checks -------------------------------------------------------------------------

    async def _outcome_one(self, workflow_id: str) -> Outcome | None:
        row = await self.storage.fetchrow(workflows.WORKFLOW_RESULT, workflow_id)
        if row is None:
            return None
        return Outcome(row["status"], row["output"], row["error"])

    async def _outcome_many(self, ids: list[str]) -> list[Outcome | BaseException | None]:
        rows = await self.storage.fetch(batches.WORKFLOW_RESULTS, ids)
        found = {row["workflow_id"]: Outcome(row["status"], row["output"], row["error"])
                 for row in rows}
        return [found.get(workflow_id) for workflow_id in ids]

    # -- recvs ----------------------------------------------------------------------------------

    async def _recv_first_one(self, op: FirstRecv) -> Taken:
        workflow_id, topic, function_id, deadline, epoch = op
        template = messages.RECV_FIRST_NO_TOPIC if topic is None else messages.RECV_FIRST_TOPIC
        try:
            row = await self.storage.fetchrow(template, workflow_id, topic, function_id,
                                              deadline, epoch)
        except UniqueViolation:
            raise conflict(workflow_id, function_id) from None
        assert row is not None
        if not row["consumed"]:
            return bool(row["recorded"]), None, None
        return bool(row["recorded"]), row["message"], row["traceparent"]

    async def _recv_first_many(self, ops: list[FirstRecv]) -> list[Taken | BaseException]:
        columns = _distinct_columns(ops, 2)  # two recvs of one mailbox: one by one
        rows = await self.storage.fetch(batches.RECV_FIRST_MANY, *columns)
        journaled = {row["ord"]: row for row in rows if row["kind"] == "r"}
        pending = {(row["workflow_id"], row["epoch"]) for row in rows if row["kind"] == "p"}
        results: list[Taken | BaseException] = []
        for ordinal, (workflow_id, _topic, function_id, _deadline, epoch) in enumerate(
                ops, start=1):
            row = journaled.get(ordinal)
            if row is not None:
                taken = bool(row["consumed"])
                results.append((True, row["message"] if taken else None,
                                row["traceparent"] if taken else None))
            elif (workflow_id, epoch) in pending:  # owned, but its entry exists: another
                results.append(conflict(workflow_id, function_id))  # execution journaled it
            else:
                results.append((False, None, None))
        return results

    async def _recv_one(self, op: Recv) -> Received:
        workflow_id, topic, function_id, epoch = op
        template = messages.RECV_NO_TOPIC if topic is None else messages.RECV_TOPIC
        row = await self.storage.fetchrow(template, workflow_id, topic, function_id, epoch)
        assert row is not None
        status = row["status"] if row["epoch"] == epoch else None
        if row["handed"] is not None:  # (the handing send's trace context)
            return status, None, False, row["handed_traceparent"], row["handed"]
        return status, row["message"], bool(row["consumed"]), row["traceparent"], None

    async def _recv_many(self, ops: list[Recv]) -> list[Received | BaseException]:
        columns = _distinct_columns(ops, 2)  # two recvs of one mailbox: one by one
        rows = await self.storage.fetch(batches.RECV_MANY, *columns)
        taken = {row["ord"]: row for row in rows if row["kind"] == "m"}
        states = {row["workflow_id"]: row for row in rows if row["kind"] == "s"}
        handed = {row["ord"]: row for row in rows if row["kind"] == "h"}
        results: list[Received | BaseException] = []
        for ordinal, (workflow_id, _topic, _function_id, epoch) in enumerate(ops, start=1):
            state = states.get(workflow_id)
            status = state["status"] if state is not None and state["epoch"] == epoch else None
            row = taken.get(ordinal)
            done = handed.get(ordinal)
            if done is not None:  # (the handing send's trace context)
                results.append((status, None, False, done["traceparent"], done["message"]))
            elif row is None:
                results.append((status, None, False, None, None))
            else:
                results.append((status, row["message"], bool(row["consumed"]),
                                row["traceparent"], None))
        return results


class _SameKey(Exception):
    """A batch holding two starts of one workflow id, or two recvs of one mailbox (a workflow
    and topic: each would take the same message): it is written one by one instead, so each
    gets the answer it would get alone."""


def _distinct_columns(ops: Sequence[tuple[Any, ...]], key: int) -> list[list[Any]]:
    """The batch's parameters column by column, or :class:`_SameKey` when two operations share
    their first ``key`` fields."""
    if len({op[:key] for op in ops}) < len(ops):
        raise _SameKey
    return [list(column) for column in zip(*ops, strict=True)]
