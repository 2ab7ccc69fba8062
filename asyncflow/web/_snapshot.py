"""Non-blocking reads of a workflow's stream: everything written so far, at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import _queries as Q
from .._core import STREAM_BATCH, Core, check_stream_args, stream_page


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
    storage = source.storage
    entries: list[tuple[int, Any]] = []
    while True:
        rows = await storage.fetch(Q.READ_STREAM, workflow_id, key, offset, STREAM_BATCH)
        page, ended = stream_page(workflow_id, rows)
        entries.extend(page)
        if len(page) < STREAM_BATCH:
            return StreamSnapshot(entries, ended)
        offset = page[-1][0] + 1
