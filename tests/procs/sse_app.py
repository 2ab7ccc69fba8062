"""A web app with one endless stream, served by uvicorn in the SSE shutdown test.

``POST /start/{id}`` starts a workflow that writes one value to stream ``s`` and then waits
(for a message that never comes); ``GET /stream/{id}`` follows ``s`` as Server-Sent Events.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response

import asyncflow
from asyncflow.web import lifespan, sse_response

flow = asyncflow.AsyncFlow()  # ASYNCFLOW_DATABASE_URL
app = FastAPI(lifespan=lifespan(flow))


@flow.workflow()
async def endless() -> None:
    await asyncflow.write_stream("s", {"n": 2**70})  # a big integer on the wire too
    await asyncflow.recv("never", timeout_seconds=3600)


@app.post("/start/{workflow_id}")
async def start(workflow_id: str) -> dict[str, str]:
    await flow.start_workflow(endless, workflow_id=workflow_id)
    return {"workflow_id": workflow_id}


@app.get("/stream/{workflow_id}")
async def stream(workflow_id: str) -> Response:
    return sse_response(flow, workflow_id, "s")
