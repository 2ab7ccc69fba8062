"""A web server with the dashboard mounted, for the browser test.

    dashboard_server.py URL

Serves a Starlette app on 127.0.0.1 (a free port) with the dashboard mounted at ``/dash``
(actions allowed), its AsyncFlow app running in the lifespan. At startup it starts three
workflows:

- ``job-1`` writes a stream value, waits for a message on topic ``go``, runs the step ``crunch``
  on it, takes a message on topic ``extra``, writes the step's result to the stream, then waits
  on topic ``stop`` until cancelled;
- ``gate-1``: the step ``crunch`` waits until this workflow sets its event ``open``, which it does
  with the first message it receives on topic ``open`` (so the test decides when the step ends);
- ``quick-1`` returns the first message it receives on ``go``.

Prints ``READY <dashboard url>`` once it accepts requests.
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

URL = sys.argv[1]
app = asyncflow.AsyncFlow(URL, executor_id="dashboard-server", recovery_interval_seconds=0.2)


@app.step()
async def crunch(message: Any) -> str:
    await asyncflow.get_event("gate-1", "open", timeout_seconds=3600)
    return f"crunched {message}"


@app.workflow()
async def job() -> None:
    await asyncflow.write_stream("progress", "waiting for go")
    message = await asyncflow.recv("go", timeout_seconds=3600)
    result = await crunch(message)
    await asyncflow.recv("extra", timeout_seconds=3600)
    await asyncflow.write_stream("progress", result)
    await asyncflow.recv("stop", timeout_seconds=3600)


@app.workflow()
async def gate() -> None:
    await asyncflow.set_event("open", await asyncflow.recv("open", timeout_seconds=3600))


@app.workflow()
async def quick() -> Any:
    return await asyncflow.recv("go", timeout_seconds=3600)


async def main() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    dash = dashboard(app, auth=lambda _scope: True)

    @asynccontextmanager
    async def lifespan(_web: Starlette) -> AsyncIterator[None]:
        async with app:
            await app.start_workflow(job, workflow_id="job-1")
            await app.start_workflow(gate, workflow_id="gate-1")
            await app.start_workflow(quick, workflow_id="quick-1")
            print(f"READY http://127.0.0.1:{port}/dash/", flush=True)
            yield
            dash.close()

    web = Starlette(routes=[Mount("/dash", dash)], lifespan=lifespan)
    server = uvicorn.Server(uvicorn.Config(web, log_level="warning"))
    await server.serve(sockets=[sock])


if __name__ == "__main__":
    asyncio.run(main())
