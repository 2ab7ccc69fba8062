"""Streams: ordered, offset-addressed values a workflow appends and anyone reads.

Writes from a workflow are journaled; writes from a step are keyed by (step, write number), so a
retried or replayed step never appends twice. Reading parks at the tail and is woken per write.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

from .. import _codec
from .._core.wait import NOT_YET, STREAM, TERMINAL, Key, Wait, Waiter, _NotYet, wait
from .._engine.context import StepContext, WorkflowContext
from .._engine.journal import begin, checked, ensure_running, stop_for_status
from .._engine.observe import workflow_operation
from .._engine.runtime import Runtime
from .._errors import StepFailedError, StreamClosedError
from .._recorded import decode_error, encode_error

WRITE_STREAM = "asyncflow.write_stream"
CLOSE_STREAM = "asyncflow.close_stream"
STREAM_BATCH = 500


def closed_error(workflow_id: str, key: str) -> StreamClosedError:
    return StreamClosedError(
        f"stream {key!r} of workflow {workflow_id!r} is closed; nothing more can be written"
    )


@functools.lru_cache(maxsize=1024)
def _closed_record(workflow_id: str, key: str) -> str:
    """The recorded StreamClosedError of a write to this stream (one per stream, cached: every
    journaled write carries it, in case the stream is closed)."""
    return encode_error(closed_error(workflow_id, key))


@workflow_operation(WRITE_STREAM, arguments={"asyncflow.stream.key": 0})
async def write_from_workflow(ctx: WorkflowContext, function_id: int, key: str,
                              text: str) -> None:
    recorded = await begin(ctx, function_id, WRITE_STREAM)
    if recorded is not None:
        if recorded.error is not None:  # it was written to a closed stream: raise that again
            raise decode_error(recorded.error, StepFailedError)
        return
    store = ctx.runtime.store
    recorded_now, offset, refused = await store.journaled_write_stream(
        ctx.workflow_id, function_id, WRITE_STREAM, ctx.epoch, key, text,
        _closed_record(ctx.workflow_id, key))
    if not recorded_now:
        await stop_for_status(ctx)
    if refused:  # the stream was closed: journaled with this failure, so a replay raises it
        raise closed_error(ctx.workflow_id, key)
    if offset is None:
        # Closed between the statement's snapshot and its lock on the stream's head (a close
        # racing this write): record the failure now.
        await checked(ctx, store.set_operation_error(ctx.workflow_id, function_id,
                                                     _closed_record(ctx.workflow_id, key),
                                                     ctx.epoch))
        raise closed_error(ctx.workflow_id, key)
    # The committed entry was handed to local readers as its statement returned (no read back
    # when it is the next one): the store's on_stream_written, set by the runtime.


async def write_from_step(step: StepContext, key: str, text: str) -> None:
    """Staged: appended with the step's checkpoint, so a failed or interrupted attempt leaves
    nothing in the stream and every reader sees one history. Keyed by (step function id, write
    number), so it is appended once."""
    store = step.workflow.runtime.store
    workflow_id = step.workflow.workflow_id
    seq = step.next_seq()

    async def apply() -> None:
        if await store.write_stream(workflow_id, key, text, step.function_id, seq) is None:
            raise closed_error(workflow_id, key)

    step.stage(apply, (STREAM, workflow_id))


@workflow_operation(CLOSE_STREAM, arguments={"asyncflow.stream.key": 0})
async def close_from_workflow(ctx: WorkflowContext, function_id: int, key: str) -> None:
    if await begin(ctx, function_id, CLOSE_STREAM) is not None:
        return
    await checked(ctx, ctx.runtime.store.journaled_close_stream(
        ctx.workflow_id, function_id, CLOSE_STREAM, ctx.epoch, key))
    # The committed close was handed to local readers (the stream's length) as its statement
    # returned: the store's on_stream_committed, set by the runtime, as for a write.


async def close_from_step(step: StepContext, key: str) -> None:
    """Staged: the stream is closed with the step's checkpoint."""
    store = step.workflow.runtime.store
    workflow_id = step.workflow.workflow_id
    step.stage(lambda: store.close_stream(workflow_id, key, step.function_id),
               (STREAM, workflow_id))


async def entries(
    runtime: Runtime, workflow_id: str, key: str, offset: int,
    reader: WorkflowContext | None = None,
) -> AsyncIterator[tuple[int, Any]]:
    """Yield ``(offset, value)`` from ``offset`` on, parking at the tail; ends when the stream
    is closed or its workflow ended. ``reader``: the workflow reading (its cancellation wakes
    it)."""
    keys: tuple[Key, ...] = ((STREAM, workflow_id), (TERMINAL, workflow_id))
    if reader is not None:
        keys += ((TERMINAL, reader.workflow_id),)
    store = runtime.store

    async def check(waiter: Waiter) -> tuple[list[tuple[int, Any]], bool] | _NotYet:
        if reader is not None:
            await ensure_running(reader)
        handed = waiter.handed.pop((STREAM, workflow_id), None)
        if handed is not None and handed[0] == key and handed[1] == offset:
            # Committed in this process, and nothing of the stream is left to read: no read.
            if handed[2] is None:  # closed, and this reader has read all it holds
                return [], True
            # Exactly the next entry. (Not ended: a close or the workflow's end wakes this
            # reader again.)
            return [(offset, _codec.loads(handed[2]))], False
        page, ended = await store.read_stream(workflow_id, key, offset, STREAM_BATCH)
        return (page, ended) if page or ended else NOT_YET

    spec = Wait(runtime.waits, keys, check, retry_unavailable=True)
    with runtime.waits.watch(*keys) as waiter:  # registered once for the whole read
        full = True  # whether to look again at once (first read, or a full page)
        while True:
            result = await wait(spec, waiter, park_first=not full)
            assert not isinstance(result, _NotYet)
            page, ended = result
            for entry in page:
                offset = entry[0] + 1
                yield entry
            full = len(page) == STREAM_BATCH
            if ended and not full:
                return


async def values(
    runtime: Runtime, workflow_id: str, key: str, offset: int,
    reader: WorkflowContext | None = None,
) -> AsyncIterator[Any]:
    """Like :func:`entries`, without the offsets."""
    async for _offset, value in entries(runtime, workflow_id, key, offset, reader):
        yield value
