"""The group-commit statements of the store: many operations of one kind in one statement,
with one outcome per operation (see :mod:`asyncflow._storage.batcher`)."""

from __future__ import annotations

from typing import Any

from .._status import Delivery
from .base import (
    Finish,
    Page,
    Read,
    Record,
    Sent,
    StoreBase,
    Write,
    Written,
    conflict,
    not_found,
    page,
)
from .sql import batches


class BatchStatements(StoreBase):
    """The ``*_many`` statements of the store's batchers."""

    __slots__ = ()

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

    async def _send_many(self, ops: list[Sent]) -> list[Delivery | BaseException]:
        columns = list(zip(*ops, strict=True))
        rows = await self.storage.fetch(batches.SEND_MESSAGES, *map(list, columns), self.channel)
        return [Delivery.of(row["inserted"], row["status"])
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
