"""The scenarios, in the order they run. Each gets a fresh database of its own."""

from __future__ import annotations

from . import (
    fanout,
    list_pages,
    pingpong,
    queue_fleet,
    queue_latency,
    recovery,
    steps,
    stream,
    streams_concurrent,
    throughput,
    transaction,
    waiters,
)
from ._base import Context, Measured, Scenario

SCENARIOS: dict[str, Scenario] = {
    "steps": steps.run,
    "throughput": throughput.run,
    "pingpong": pingpong.run,
    "stream": stream.run,
    "streams_concurrent": streams_concurrent.run,
    "fanout": fanout.run,
    "waiters": waiters.run,
    "recovery": recovery.run,
    "transaction": transaction.run,
    "list_pages": list_pages.run,
    "queue_latency": queue_latency.run,
    "queue_fleet": queue_fleet.run,
}

DESCRIPTIONS: dict[str, str] = {
    "steps": "one workflow running no-op steps sequentially",
    "throughput": "workflows x 3 no-op steps started at once",
    "pingpong": "send → recv → set_event → get_event round trips",
    "stream": "write_stream → read_stream latency and sustained rate",
    "streams_concurrent": "many workflows streaming at once, a reader on each",
    "fanout": "workflows parked in recv, woken by as many sends",
    "waiters": "workflows parked in recv in one process: connections and RSS",
    "recovery": "PENDING workflows of a SIGKILLed process completed by a fresh app",
    "transaction": "a workflow of @app.transaction steps each updating a row",
    "list_pages": "list_workflows pages with after= in a table of 1,000,000 workflows",
    "queue_latency": "enqueue → first step running, one idle worker process",
    "queue_fleet": "workflows enqueued at once, drained by 1, 2 and 4 worker processes",
}

__all__ = ["DESCRIPTIONS", "SCENARIOS", "Context", "Measured", "Scenario"]
