"""Workflow communication over HTTP: events, messages and streams, with FastAPI and asyncflow.

Three workflows each show one way to talk to a running workflow:

* events    -- the workflow publishes ``progress`` (0-100), ``status`` and finally ``result``;
               ``GET /workflow-events/{id}/{key}`` blocks until the event exists (or times out),
               ``GET /workflow-events/{id}/all`` answers at once.
* messaging -- the workflow waits (``recv`` with a timeout) for an approval message, then runs its
               steps or stops; ``POST /send-message/{id}`` never blocks. ``recv`` returns
               ``None`` on timeout, so every message travels in an envelope
               ``{"payload": <the JSON body>}``: a ``null`` body is a message, not a timeout.
* streaming -- the workflow streams ``start``, ``progress``, ``result`` and ``complete`` records
               and closes the stream; ``GET /workflow-stream/{id}`` is a snapshot,
               ``GET /workflow-stream/{id}/live`` follows it as Server-Sent Events.

Starting an id that exists returns the existing workflow (its inputs never change): the answer
says so with ``"started": false``. Every wait is woken by Postgres LISTEN/NOTIFY: nothing polls,
and the server stays responsive while requests and workflows wait. Run it with no configuration
(an embedded Postgres in ``./.asyncflow``) or point it at a database with
``ASYNCFLOW_DATABASE_URL``::

    pip install -e '.[examples]'                        # from a clone of asyncflow
    python examples/communication_server.py            # or: uvicorn communication_server:app

    curl -X POST localhost:8000/start-workflow-events/ev-1/3
    curl 'localhost:8000/workflow-events/ev-1/result?timeout=30'
    curl -X POST localhost:8000/start-workflow-messaging/msg-1/3
    curl -X POST localhost:8000/send-message/msg-1 -H 'Content-Type: application/json' \\
         -d '{"approved": true}'
    curl -X POST localhost:8000/start-workflow-streaming/st-1/5
    curl -N localhost:8000/workflow-stream/st-1/live

``EXAMPLE_STEP_SECONDS`` sets how long each step's simulated work takes (default 0.5).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Annotated, Any
from urllib.parse import quote

import uvicorn
from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response

import asyncflow

STEP_SECONDS = float(os.environ.get("EXAMPLE_STEP_SECONDS", "0.5"))
NOTIFICATION_TOPIC = "notification"
STREAM_KEY = "progress_stream"

flow = asyncflow.AsyncFlow()  # ASYNCFLOW_DATABASE_URL, else the embedded Postgres
app = FastAPI(title="asyncflow workflow communication", lifespan=asyncflow.lifespan(flow))

Steps = Annotated[int, Path(ge=0, le=100, description="how many steps the workflow runs")]


async def start(fn: Any, workflow_id: str, *args: Any) -> dict[str, Any]:
    """Start ``fn(*args)`` as ``workflow_id``, or find the workflow that already has that id.

    Either way it runs once: starting an existing id returns that workflow, whose inputs never
    change. The answer says which happened.
    """
    try:
        existing: asyncflow.WorkflowStatus | None = await flow.get_workflow_status(workflow_id)
    except asyncflow.WorkflowNotFoundError:
        existing = None
    await flow.start_workflow(fn, *args, workflow_id=workflow_id)  # 409 if another kind's id
    if existing is None:
        return {"workflow_id": workflow_id, "started": True}
    return {
        "workflow_id": workflow_id,
        "started": False,
        "status": existing.status,
        "message": f"Workflow {workflow_id} already exists (status {existing.status}): returned "
        "the existing workflow, unchanged; the requested inputs were not used",
    }


def fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


@flow.step()
async def compute(n: int) -> dict[str, int]:
    """One step: a little (simulated) work, checkpointed once done."""
    await asyncio.sleep(STEP_SECONDS)  # stands in for real work: an API call, a model, ...
    return {"n": n, "fibonacci": fibonacci(n)}


# -- 1. events ----------------------------------------------------------------------------------


@flow.workflow()
async def workflow_with_events(steps: int) -> list[dict[str, int]]:
    await asyncflow.set_event("status", "started")
    await asyncflow.set_event("progress", 0)
    results = []
    for i in range(steps):
        await asyncflow.set_event("progress", i * 100 // steps)
        await asyncflow.set_event("status", f"processing_step_{i + 1}")
        results.append(await compute(23 + i))
    await asyncflow.set_event("progress", 100)
    await asyncflow.set_event("status", "completed")
    total = sum(r["fibonacci"] for r in results)
    await asyncflow.set_event("result", {"total_steps": steps, "total_fibonacci": total})
    return results


def segment(text: str) -> str:
    """``text`` as one URL path segment (a workflow id may hold ``/``, ``?``, ``#``, spaces)."""
    return quote(text, safe="")


@app.post("/start-workflow-events/{workflow_id}/{steps}")
async def start_workflow_events(workflow_id: str, steps: Steps) -> dict[str, Any]:
    answer = await start(workflow_with_events, workflow_id, steps)
    base = f"/workflow-events/{segment(workflow_id)}"
    return {
        "message": "Workflow started with events",
        **answer,
        "query_endpoints": {k: f"{base}/{k}" for k in ("progress", "status", "result", "all")},
    }


@app.get("/workflow-events/{workflow_id}/all")
async def get_all_workflow_events(workflow_id: str) -> dict[str, Any]:
    """Every event of the workflow right now (never blocks)."""
    return {"workflow_id": workflow_id, "events": await flow.get_all_events(workflow_id)}


@app.get("/workflow-events/{workflow_id}/{key}")
async def get_workflow_event(
    workflow_id: str,
    key: str,
    wait: Annotated[float, Query(alias="timeout", ge=0, le=300, description="seconds")] = 5,
) -> Any:
    """Blocks this request (not the server) until the event is set or ``timeout`` passes."""
    value = await flow.get_event(workflow_id, key, timeout_seconds=wait)
    if value is None:
        return JSONResponse(
            {"detail": f"event {key!r} of workflow {workflow_id!r} not set within {wait:g}s"},
            status_code=404,
        )
    return {"workflow_id": workflow_id, "event_key": key, "value": value}


# -- 2. messaging -------------------------------------------------------------------------------


@flow.workflow()
async def workflow_with_messaging(steps: int, approval_timeout: float = 60) -> dict[str, Any]:
    # Suspends this workflow (not the server) until a message arrives; messages sent before
    # this line are kept in Postgres and received here all the same. recv returns None only on
    # timeout: messages are envelopes, so even a null body arrives as {"payload": None}.
    envelope = await asyncflow.recv(NOTIFICATION_TOPIC, timeout_seconds=approval_timeout)
    if envelope is None:
        return {"status": "cancelled", "reason": "timeout", "results": []}
    approval = envelope["payload"]
    if not (isinstance(approval, dict) and approval.get("approved") is True):
        return {"status": "cancelled", "reason": "not approved", "message": approval,
                "results": []}
    results = [await compute(20 + i) for i in range(steps)]
    return {"status": "completed", "approval": approval, "results": results}


@app.post("/start-workflow-messaging/{workflow_id}/{steps}")
async def start_workflow_messaging(
    workflow_id: str,
    steps: Steps,
    approval_timeout: Annotated[float, Query(ge=0, le=3600)] = 60,
) -> dict[str, Any]:
    answer = await start(workflow_with_messaging, workflow_id, steps, approval_timeout)
    return {
        "message": "Workflow started and will wait for approval notification",
        **answer,
        "send_approval": f"/send-message/{segment(workflow_id)}",
        "note": 'POST a JSON body such as {"approved": true}; messages are queued durably.',
    }


_DELIVERY_MESSAGES = {
    asyncflow.Delivery.DELIVERED: "Notification delivered to the workflow",
    asyncflow.Delivery.DUPLICATE: "Not sent again: this Idempotency-Key was already sent to the "
    "workflow (it is delivered once)",
    asyncflow.Delivery.WORKFLOW_ENDED: "Stored, but the workflow has ended: nothing will "
    "receive it",
}


@app.post("/send-message/{workflow_id}")
async def send_message(
    workflow_id: str,
    request: Request,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Any:
    """Queue a message (a JSON body) for the workflow and return at once, saying whether it
    was delivered, a duplicate of an ``Idempotency-Key`` sent before (delivered once), or for a
    workflow that has ended."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return JSONResponse({"detail": "send the message as JSON, with the header "
                             "Content-Type: application/json (curl: -H 'Content-Type: "
                             "application/json' -d '{\"approved\": true}')"}, status_code=415)
    body = await request.body()
    try:
        message = json.loads(body)
    except ValueError as exc:
        return JSONResponse({"detail": f"the body is not valid JSON ({exc}); send a JSON "
                             "value such as {\"approved\": true}"}, status_code=422)
    delivery = await flow.send(workflow_id, {"payload": message}, NOTIFICATION_TOPIC,
                               idempotency_key=idempotency_key)
    return {"workflow_id": workflow_id, "delivery": delivery,
            "message": _DELIVERY_MESSAGES[delivery], "payload": message}


# -- 3. streaming -------------------------------------------------------------------------------


def record(kind: str, **fields: Any) -> dict[str, Any]:
    return {"timestamp": time.time(), "type": kind, **fields}


@flow.workflow()
async def workflow_with_streaming(steps: int) -> list[dict[str, int]]:
    await asyncflow.write_stream(
        STREAM_KEY, record("start", message=f"Workflow started with {steps} steps"))
    results = []
    for i in range(steps):
        await asyncflow.write_stream(STREAM_KEY, record(
            "progress", step=i + 1, total_steps=steps, message=f"Starting step {i + 1}/{steps}"))
        result = await compute(23 + i)
        results.append(result)
        await asyncflow.write_stream(STREAM_KEY, record("result", step=i + 1, result=result))
    await asyncflow.write_stream(STREAM_KEY, record(
        "complete", message="Workflow completed successfully", total_results=len(results)))
    await asyncflow.close_stream(STREAM_KEY)
    return results


@app.post("/start-workflow-streaming/{workflow_id}/{steps}")
async def start_workflow_streaming(workflow_id: str, steps: Steps) -> dict[str, Any]:
    answer = await start(workflow_with_streaming, workflow_id, steps)
    return {
        "message": "Workflow started with streaming",
        **answer,
        "read_stream": f"/workflow-stream/{segment(workflow_id)}",
        "live_stream": f"/workflow-stream/{segment(workflow_id)}/live",
    }


@app.get("/workflow-stream/{workflow_id}")
async def read_workflow_stream(workflow_id: str) -> dict[str, Any]:
    """Everything streamed so far, at once (never waits for the stream to close)."""
    snapshot = await asyncflow.stream_snapshot(flow, workflow_id, STREAM_KEY)
    return {
        "workflow_id": workflow_id,
        "stream_values": snapshot.values,
        "total_messages": len(snapshot.entries),
        "closed": snapshot.done,
    }


@app.get("/workflow-stream/{workflow_id}/live")
async def follow_workflow_stream(workflow_id: str) -> Response:
    """The stream as Server-Sent Events; reconnecting with ``Last-Event-ID`` resumes."""
    return asyncflow.sse_response(flow, workflow_id, STREAM_KEY)


# -- status -------------------------------------------------------------------------------------


@app.get("/workflows/{workflow_id}")
async def get_workflow(
    workflow_id: str,
    wait: Annotated[float, Query(alias="timeout", ge=0, le=300, description="seconds")] = 0,
) -> dict[str, Any]:
    """Status and result. With ``?timeout=S``, first waits up to S seconds for the end."""
    handle = await flow.retrieve_workflow(workflow_id)
    if wait > 0:
        try:
            await handle.get_result(timeout_seconds=wait)
        except Exception:  # still running, failed or cancelled: the status below says which
            pass
    status = await handle.get_status()
    answer = status.to_dict()
    if status.status == asyncflow.SUCCESS:
        answer["result"] = await handle.get_result()
    return answer


@app.get("/health")
async def health() -> dict[str, Any]:
    return {"status": "ok", "running_workflows": len(flow.running_workflows())}


# -- errors: clear JSON answers, never a traceback ----------------------------------------------

_STATUS_OF: list[tuple[type[asyncflow.AsyncFlowError], int]] = [
    (asyncflow.WorkflowNotFoundError, 404),
    (asyncflow.WorkflowConflictError, 409),
    (asyncflow.ValueTooLargeError, 413),
    (asyncflow.SerializationError, 422),
    (asyncflow.InvalidArgumentError, 400),
    (asyncflow.AsyncFlowTimeoutError, 504),
    (asyncflow.DatabaseUnavailableError, 503),
]


@app.exception_handler(asyncflow.AsyncFlowError)
async def asyncflow_error(request: Request, exc: Exception) -> JSONResponse:
    status = next((code for kind, code in _STATUS_OF if isinstance(exc, kind)), 500)
    return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=status)


if __name__ == "__main__":
    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))
    # Open SSE streams end by themselves when the server stops; requests waiting for an event
    # (GET /workflow-events/...?timeout=S) get 5 seconds to finish.
    uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=5)
