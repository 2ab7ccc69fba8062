"""Drives a running workflow from a separate process with asyncflow.Client.

    client_proc.py URL WORKFLOW_ID
"""

from __future__ import annotations

import asyncio
import sys

import orjson

import asyncflow


async def main() -> None:
    url, workflow_id = sys.argv[1], sys.argv[2]
    async with asyncflow.Client(url) as client:
        handle = await client.retrieve_workflow(workflow_id)
        print("STATUS", (await handle.get_status()).status, flush=True)
        ready = await client.get_event(workflow_id, "ready", timeout_seconds=30)
        print("READY", orjson.dumps(ready).decode(), flush=True)
        await client.send(workflow_id, {"n": 3}, "work")
        values = [v async for v in client.read_stream(workflow_id, "out")]
        print("STREAM", orjson.dumps(values).decode(), flush=True)
        print("EVENTS", orjson.dumps(await client.get_all_events(workflow_id)).decode(),
              flush=True)
        result = await handle.get_result(timeout_seconds=30)
        print("RESULT", orjson.dumps(result).decode(), flush=True)
        listed = await client.list_workflows(status="SUCCESS")
        print("LISTED", orjson.dumps([s.workflow_id for s in listed]).decode(), flush=True)


asyncio.run(main())
