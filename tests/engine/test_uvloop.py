"""The engine on uvloop, the event loop ASGI servers such as uvicorn run on when it is
installed: every kind of operation and wake-up, a child, a queue, a durable sleep and a
timeout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import asyncflow

uvloop = pytest.importorskip("uvloop")


async def _exercise(db_url: str) -> dict[str, Any]:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    app = asyncflow.AsyncFlow(db_url, app_version="uvloop")
    queue = app.queue("uv")

    @app.step()
    async def double(value: int) -> int:
        return 2 * value

    @app.transaction()
    async def count_workflows() -> int:
        return int(await asyncflow.connection().fetchval(
            "SELECT count(*) FROM asyncflow.workflows"))

    @app.workflow()
    async def child(value: int) -> int:
        return await double(value)

    @app.workflow()
    async def parent(value: int) -> dict[str, Any]:
        doubled = await double(value)
        counted = await count_workflows()
        from_child = await (await app.start_workflow(child, value + 1)).get_result()
        await asyncflow.sleep(0.05)
        message = await asyncflow.recv("ping", timeout_seconds=30)
        await asyncflow.set_event("pong", message)
        for index in range(3):
            await asyncflow.write_stream("numbers", index)
        timed_out = await asyncflow.recv("never", timeout_seconds=0.1)
        return {"doubled": doubled, "counted": counted, "child": from_child,
                "message": message, "timed_out": timed_out}

    async with app:
        handle = await app.start_workflow(parent, 20)
        await app.send(handle.workflow_id, "hello", "ping")
        pong = await app.get_event(handle.workflow_id, "pong", timeout_seconds=30)
        streamed = [value async for value in app.read_stream(handle.workflow_id, "numbers")]
        result = await handle.get_result(timeout_seconds=30)
        queued = await (await queue.enqueue(child, 4)).get_result(timeout_seconds=30)
        steps = await app.list_workflow_steps(handle.workflow_id)
    return {"pong": pong, "streamed": streamed, "result": result, "queued": queued,
            "steps": len(steps)}


def test_every_kind_of_operation_runs_on_uvloop(db_url: str) -> None:
    outcome = uvloop.run(_exercise(db_url))
    assert outcome["pong"] == "hello"
    assert outcome["streamed"] == [0, 1, 2]
    assert outcome["queued"] == 8
    result = outcome["result"]
    assert result["doubled"] == 40 and result["child"] == 42 and result["message"] == "hello"
    assert result["counted"] >= 1 and result["timed_out"] is None
    assert outcome["steps"] >= 10
