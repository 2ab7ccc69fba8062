"""What the queue tests share (tests/operations/test_queues.py, test_queue_many.py,
test_queue_claim_on_enqueue.py): an app, and waiting for its dispatchers to park."""

from __future__ import annotations

import asyncio
from typing import Any


def order_app(make_app: Any, runs: list[str], **kwargs: Any) -> tuple[Any, Any, Any]:
    """An app with queue ``q`` (one at a time) and workflow ``job`` that appends its tag to
    ``runs``."""
    app = make_app(**kwargs)
    queue = app.queue("q", concurrency=1)

    @app.workflow(name="job")
    async def job(tag: str) -> str:
        runs.append(tag)
        return tag

    return app, queue, job


async def parked(app: Any, count: int = 1) -> None:
    """Wait until the app's dispatchers have finished their claims and parked."""
    async with asyncio.timeout(30):
        await app._waits.wait_for_count(count)
