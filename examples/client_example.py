"""Talk to the workflows of a running communication server from another process.

``asyncflow.Client`` connects to the server's database (``ASYNCFLOW_DATABASE_URL``, else the
embedded Postgres in ``./.asyncflow`` that the server started). It never runs workflows; it
sends messages, reads events and follows streams, woken by NOTIFY like the server itself::

    python examples/communication_server.py &
    curl -X POST 'localhost:8000/start-workflow-messaging/approve-me/2'
    curl -X POST 'localhost:8000/start-workflow-events/ev-1/3'
    curl -X POST 'localhost:8000/start-workflow-streaming/st-1/3'
    python examples/client_example.py approve-me ev-1 st-1
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import asyncflow

TOPIC = "notification"  # what the server's messaging workflow receives on
STREAM_KEY = "progress_stream"


def show(label: str, value: Any) -> None:
    print(f"{label}: {json.dumps(value, sort_keys=True)}", flush=True)


async def main(messaging_id: str, events_id: str, stream_id: str) -> None:
    async with asyncflow.Client() as client:
        # 1. Messages: approve the waiting workflow, in the server's envelope (see its docs). The
        #    idempotency key makes a retry of this script deliver the approval once.
        approval = {"approved": True, "by": "client_example"}
        await client.send(messaging_id, {"payload": approval}, TOPIC,
                          idempotency_key=f"approve-{messaging_id}")
        print(f"sent approval to {messaging_id}", flush=True)
        handle = await client.retrieve_workflow(messaging_id)
        show("messaging result", await handle.get_result(timeout_seconds=60))

        # 2. Events: wait for the final one, then read them all at once.
        show("events result", await client.get_event(events_id, "result", timeout_seconds=60))
        show("all events", await client.get_all_events(events_id))

        # 3. Streams: follow from the beginning until the workflow closes the stream.
        async for offset, record in client.stream_entries(stream_id, STREAM_KEY):
            show(f"stream {offset}", record)
        print("stream closed", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("messaging_id", help="a workflow started by /start-workflow-messaging")
    parser.add_argument("events_id", help="a workflow started by /start-workflow-events")
    parser.add_argument("stream_id", help="a workflow started by /start-workflow-streaming")
    args = parser.parse_args()
    asyncio.run(main(args.messaging_id, args.events_id, args.stream_id))
