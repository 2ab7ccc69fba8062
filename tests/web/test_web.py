"""The web helpers: ASGI lifespan, Server-Sent Events of streams, non-blocking stream snapshots."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from conftest import python_env
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

import asyncflow
import asyncflow.web._snapshot


@dataclass
class SSE:
    id: str | None
    event: str | None
    data: Any


def parse_sse(body: bytes) -> list[SSE]:
    """Events of an SSE body (comments skipped); ``data`` decoded as JSON."""
    events = []
    for block in body.decode().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "data" in fields:
            events.append(SSE(fields.get("id"), fields.get("event"), orjson.loads(fields["data"])))
    return events


class ASGICall:
    """Drives one ASGI HTTP request by hand: messages sent by the app land in a queue."""

    def __init__(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.scope = {"type": "http", "method": "GET", "path": "/", "headers": headers or []}
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.disconnected = asyncio.Event()
        self._requested = False

    async def receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        await self.sent.put(message)

    async def next_chunk(self) -> bytes:
        message = await asyncio.wait_for(self.sent.get(), 10)
        assert message["type"] == "http.response.body", message
        body: bytes = message["body"]
        return body

    def drain(self) -> tuple[dict[str, Any], bytes]:
        """After the app returned: the start message and the whole body."""
        return self.sent.get_nowait(), self.rest()

    def rest(self) -> bytes:
        """After the app returned: the body not read yet (the response must be complete)."""
        body = b""
        while not self.sent.empty():
            message = self.sent.get_nowait()
            body += message["body"]
            last = message
        assert last.get("more_body") is False
        return body


@asynccontextmanager
async def lifespan_of(asgi_app: Any) -> AsyncIterator[None]:
    """Run an ASGI app's lifespan protocol around the block, as a server does."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(asgi_app(scope, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(from_app.get(), 30))["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        assert (await asyncio.wait_for(from_app.get(), 30))["type"] == "lifespan.shutdown.complete"
        await asyncio.wait_for(task, 10)


def register_writer(app: asyncflow.AsyncFlow) -> Any:
    @app.workflow()
    async def writer(n: int) -> int:
        for i in range(n):
            await asyncflow.write_stream("s", {"i": i})
        await asyncflow.close_stream("s")
        return n

    return writer


def register_gated(app: asyncflow.AsyncFlow) -> Any:
    @app.workflow()
    async def gated() -> None:
        await asyncflow.write_stream("s", "a")
        await asyncflow.recv("go", timeout_seconds=60)
        await asyncflow.write_stream("s", "b")
        await asyncflow.close_stream("s")

    return gated


async def test_resume_after_last_event_id(make_app):
    app = make_app()
    writer = register_writer(app)
    async with app:
        handle = await app.start_workflow(writer, 5, workflow_id="w")
        await handle.get_result(timeout_seconds=10)
        stream = asyncflow.EventStream(app, "w", "s")

        call = ASGICall()
        await stream(call.scope, call.receive, call.send)
        start, body = call.drain()
        assert start["status"] == 200
        assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
        events = parse_sse(body)
        assert [(e.id, e.data) for e in events[:-1]] == [(str(i), {"i": i}) for i in range(5)]
        assert (events[-1].event, events[-1].id, events[-1].data) == ("end", None, None)

        call = ASGICall([(b"last-event-id", b"2")])
        await stream(call.scope, call.receive, call.send)
        events = parse_sse(call.drain()[1])
        assert [(e.id, e.data) for e in events[:-1]] == [("3", {"i": 3}), ("4", {"i": 4})]

        call = ASGICall([(b"last-event-id", b"4")])  # reconnect after the last one: only "end"
        await stream(call.scope, call.receive, call.send)
        assert [e.event for e in parse_sse(call.drain()[1])] == ["end"]

        named = asyncflow.EventStream(app, "w", "s", offset=3, event="tick", end_event=None,
                                      retry_ms=500)
        call = ASGICall()
        await named(call.scope, call.receive, call.send)
        body = call.drain()[1]
        assert body.startswith(b"retry: 500\n\n")
        events = parse_sse(body)
        assert [(e.id, e.event) for e in events] == [("3", "tick"), ("4", "tick")]


async def test_live_events_pings_and_disconnect(make_app):
    app = make_app()
    gated = register_gated(app)
    async with app:
        handle = await app.start_workflow(gated, workflow_id="g")
        stream = asyncflow.EventStream(app, "g", "s", ping_seconds=0.05)
        call = ASGICall()
        task = asyncio.create_task(stream(call.scope, call.receive, call.send))
        start = await asyncio.wait_for(call.sent.get(), 10)
        assert start["status"] == 200
        assert (await call.next_chunk()).startswith(b":")  # opening comment
        assert parse_sse(await call.next_chunk())[0].data == "a"
        assert await call.next_chunk() == b": ping\n\n"  # parked at the tail: keep-alives

        # A second reader that goes away while parked: its request ends, nothing more is sent.
        other = ASGICall([(b"last-event-id", b"0")])
        other_task = asyncio.create_task(stream(other.scope, other.receive, other.send))
        assert (await asyncio.wait_for(other.sent.get(), 10))["status"] == 200
        other.disconnected.set()
        await asyncio.wait_for(other_task, 10)
        leftovers = [other.sent.get_nowait() for _ in range(other.sent.qsize())]
        assert all(m["more_body"] for m in leftovers)  # ended by the disconnect, not completed

        await app.send("g", "now", "go")
        while (chunk := await call.next_chunk()) == b": ping\n\n":
            pass
        event = parse_sse(chunk)[0]
        assert (event.id, event.data) == ("1", "b")
        await asyncio.wait_for(task, 10)
        assert [e.event for e in parse_sse(call.rest())] == ["end"]
        await handle.get_result(timeout_seconds=10)


async def test_errors_before_streaming(make_app):
    app = make_app()
    writer = register_writer(app)
    async with app:
        await (await app.start_workflow(writer, 1, workflow_id="w")).get_result()
        call = ASGICall()
        await asyncflow.EventStream(app, "nope", "s")(call.scope, call.receive, call.send)
        start, body = call.drain()
        assert start["status"] == 404
        assert orjson.loads(body) == {"detail": "no workflow with id 'nope'"}

        call = ASGICall([(b"last-event-id", b"x1")])
        await asyncflow.EventStream(app, "w", "s")(call.scope, call.receive, call.send)
        start, body = call.drain()
        assert start["status"] == 400
        assert "Last-Event-ID" in orjson.loads(body)["detail"]

        with pytest.raises(asyncflow.InvalidArgumentError):
            asyncflow.EventStream(app, "w", "s", offset=-1)
        with pytest.raises(asyncflow.InvalidArgumentError):
            asyncflow.EventStream(app, "w", "s", event="a\nb")
        with pytest.raises(asyncflow.InvalidArgumentError):
            asyncflow.EventStream(app, "w", "s", ping_seconds=0)
        with pytest.raises(asyncflow.InvalidArgumentError):
            asyncflow.EventStream(object(), "w", "s")  # type: ignore[arg-type]
    with pytest.raises(asyncflow.ConfigurationError):
        asyncflow.lifespan()
    with pytest.raises(asyncflow.ConfigurationError):
        asyncflow.lifespan(object())  # type: ignore[arg-type]


async def test_fastapi_lifespan_and_sse_response(make_app):
    flow = make_app()
    writer = register_writer(flow)
    api = FastAPI(lifespan=asyncflow.lifespan(flow))

    @api.post("/start/{workflow_id}")
    async def start(workflow_id: str) -> dict[str, Any]:
        handle = await flow.start_workflow(writer, 3, workflow_id=workflow_id)
        return {"result": await handle.get_result(timeout_seconds=10)}

    @api.get("/live/{workflow_id}")
    async def live(workflow_id: str) -> Any:
        return asyncflow.sse_response(flow, workflow_id, "s")

    with pytest.raises(asyncflow.NotLaunchedError):
        _ = flow.storage
    async with lifespan_of(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.post("/start/w1")).json() == {"result": 3}
            response = await client.get("/live/w1", headers={"Last-Event-ID": "0"})
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-cache"
            events = parse_sse(response.content)
            assert [(e.id, e.data) for e in events] == [("1", {"i": 1}), ("2", {"i": 2}),
                                                          (None, None)]
            response = await client.get("/live/missing")
            assert response.status_code == 404
    with pytest.raises(asyncflow.NotLaunchedError):
        _ = flow.storage


async def test_plain_starlette_serves_event_stream(make_app):
    app = make_app()
    writer = register_writer(app)

    async def endpoint(request: Request) -> Any:
        return asyncflow.EventStream(app, request.path_params["workflow_id"], "s")

    web = Starlette(routes=[Route("/s/{workflow_id}", endpoint)])
    async with app:
        await (await app.start_workflow(writer, 2, workflow_id="w")).get_result()
        transport = httpx.ASGITransport(app=web)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/s/w")
            assert [e.data for e in parse_sse(response.content)] == [{"i": 0}, {"i": 1}, None]


async def test_stream_snapshot(make_app, monkeypatch):
    app = make_app()
    gated = register_gated(app)
    writer = register_writer(app)
    async with app:
        handle = await app.start_workflow(gated, workflow_id="g")
        # Event-driven: the live reader yields "a" once it is written, then we take a snapshot.
        async for value in app.read_stream("g", "s"):
            assert value == "a"
            break
        snapshot = await asyncflow.stream_snapshot(app, "g", "s")
        assert (snapshot.entries, snapshot.values, snapshot.done) == ([(0, "a")], ["a"], False)
        assert (await asyncflow.stream_snapshot(app, "g", "s", offset=1)).entries == []
        assert (await asyncflow.stream_snapshot(app, "g", "other")).done is False
        await app.send("g", 1, "go")
        await handle.get_result(timeout_seconds=10)
        snapshot = await asyncflow.stream_snapshot(app, "g", "s")
        assert (snapshot.values, snapshot.done) == (["a", "b"], True)

        monkeypatch.setattr(asyncflow.web._snapshot, "STREAM_BATCH", 2)  # several batches
        await (await app.start_workflow(writer, 5, workflow_id="w")).get_result()
        snapshot = await asyncflow.stream_snapshot(app, "w", "s", offset=1)
        assert snapshot.entries == [(i, {"i": i}) for i in range(1, 5)] and snapshot.done

        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await asyncflow.stream_snapshot(app, "nope", "s")
        with pytest.raises(asyncflow.InvalidArgumentError):
            await asyncflow.stream_snapshot(app, "w", "s", offset=-2)


def test_importing_asyncflow_does_not_import_web_frameworks():
    code = (
        "import sys, asyncflow; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('starlette', 'fastapi', 'uvicorn')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], env=python_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_event_watch_over_sse(make_app):
    app = make_app()

    @app.workflow()
    async def status() -> None:
        await asyncflow.set_event("status", "queued")
        await asyncflow.recv("go", timeout_seconds=60)
        await asyncflow.set_event("status", "running")
        await asyncflow.recv("go", timeout_seconds=60)
        await asyncflow.set_event("status", {"done": True})

    async with app:
        await app.start_workflow(status, workflow_id="w")
        watch = asyncflow.web.EventWatch(app, "w", "status")
        call = ASGICall()
        task = asyncio.create_task(watch(call.scope, call.receive, call.send))
        assert (await asyncio.wait_for(call.sent.get(), 10))["status"] == 200
        assert (await call.next_chunk()).startswith(b":")
        first = parse_sse(await call.next_chunk())[0]
        assert (first.id, first.data) == ("0", "queued")
        await app.send("w", 1, "go")
        second = parse_sse(await call.next_chunk())[0]
        assert (second.id, second.data) == ("1", "running")
        await app.send("w", 1, "go")
        await asyncio.wait_for(task, 10)
        events = parse_sse(call.rest())
        assert [(e.id, e.data) for e in events] == [("2", {"done": True}), (None, None)]
        assert events[-1].event == "end"

        # A reconnecting client gets the current (final) value, numbered after its last id.
        again = ASGICall([(b"last-event-id", b"2")])
        await asyncio.wait_for(watch(again.scope, again.receive, again.send), 10)
        _, body = again.drain()
        assert next((e.id, e.data) for e in parse_sse(body)) == ("3", {"done": True})
        # And the Starlette response wraps it for FastAPI endpoints.
        assert asyncflow.web.event_watch_response(app, "w", "status").media_type == (
            "text/event-stream")
