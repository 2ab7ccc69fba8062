"""A web server with the dashboard mounted, for the browser test of its debugging pages.

    dashboard_debug_server.py URL

Serves a Starlette app on 127.0.0.1 (a free port) with the dashboard mounted at ``/dash``
(actions allowed), its AsyncFlow app running in the lifespan. At startup it starts:

- ``sink-1``, which returns the first message it receives on the topic ``EVIL``;
- ``talk-1``, which sets the event ``EVIL`` to a long value, writes a long entry to the stream
  ``EVIL`` and closes it, sends ``{"note": EVIL}`` to ``sink-1`` on topic ``EVIL``, then waits
  for a message on ``go``, runs the step ``shout`` on it and waits on ``end`` until cancelled;
- ``long-1``, which sets the event ``i`` 130 times and returns;
- and it registers the schedule ``EVIL`` (03:00 every day, Paris time).

Prints ``READY <dashboard url>`` once ``long-1`` and ``sink-1`` have ended.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

import asyncflow
from asyncflow._dashboard import dashboard

EVIL = "<script>alert(1)</script>&\"'"
URL = sys.argv[1]
app = asyncflow.AsyncFlow(URL, executor_id="dashboard-debug-server",
                          recovery_interval_seconds=0.2)


@app.step()
async def shout(text: str) -> str:
    return text.upper()


@app.workflow()
async def sink() -> Any:
    return await asyncflow.recv(EVIL, timeout_seconds=3600)


@app.workflow()
async def talk() -> None:
    await asyncflow.set_event(EVIL, {"long": "v" * 200 + EVIL})
    await asyncflow.write_stream(EVIL, "x" * 200 + EVIL)
    await asyncflow.close_stream(EVIL)
    await asyncflow.send("sink-1", {"note": EVIL}, topic=EVIL)
    await shout(await asyncflow.recv("go", timeout_seconds=3600))
    await asyncflow.recv("end", timeout_seconds=3600)


@app.workflow()
async def long() -> int:
    for i in range(130):
        await asyncflow.set_event("i", i)
    return 130


@app.scheduled("0 3 * * *", name=EVIL, timezone="Europe/Paris")
@app.workflow()
async def nightly(at: str) -> str:
    return at


async def main() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    dash = dashboard(app, auth=lambda _scope: True)

    @asynccontextmanager
    async def lifespan(_web: Starlette) -> AsyncIterator[None]:
        async with app:
            sink_1 = await app.start_workflow(sink, workflow_id="sink-1")
            await app.start_workflow(talk, workflow_id="talk-1")
            await (await app.start_workflow(long, workflow_id="long-1")).get_result()
            await sink_1.get_result()
            print(f"READY http://127.0.0.1:{port}/dash/", flush=True)
            yield
            dash.close()

    web = Starlette(routes=[Mount("/dash", dash)], lifespan=lifespan)
    server = uvicorn.Server(uvicorn.Config(web, log_level="warning"))
    await server.serve(sockets=[sock])


if __name__ == "__main__":
    asyncio.run(main())
