"""A queue app the queue tests share (tests/operations/test_queues.py, test_queue_many.py)."""

from __future__ import annotations

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
