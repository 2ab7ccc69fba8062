"""Non-blocking reads of a workflow's stream: everything written so far, at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._front.lifecycle import Connected as Core
from .._front.lifecycle import check_stream_args
from .._primitives.streams import STREAM_BATCH


@dataclass(frozen=True, slots=True)
class StreamSnapshot:
    """What a stream holds right now: ``entries`` are ``(offset, value)`` pairs in order, and
    ``done`` is true when nothing more can be written (the stream was closed or its workflow
    ended)."""

    entries: list[tuple[int, Any]]
    done: bool

    @property
    def values(self) -> list[Any]:
        """The values alone, in stream order."""
        return [value for _offset, value in self.entries]


async def stream_snapshot(
    source: Core, workflow_id: str, key: str, *, offset: int = 0
) -> StreamSnapshot:
    """Everything written to a workflow's stream so far, from ``offset`` on; never waits.

    Raises :class:`WorkflowNotFoundError` for an unknown workflow. Use ``read_stream`` (or
    :class:`EventStream` over HTTP) to follow a stream as it is written.
    """
    check_stream_args(workflow_id, key, offset)
    store = source.runtime.store
    entries: list[tuple[int, Any]] = []
    while True:
        page, ended = await store.read_stream(workflow_id, key, offset, STREAM_BATCH)
        entries.extend(page)
        if len(page) < STREAM_BATCH:
            return StreamSnapshot(entries, ended)
        offset = page[-1][0] + 1
