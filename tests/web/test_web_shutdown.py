"""A web server with open Server-Sent Events streams stops promptly and cleanly: uvicorn, run for
real, is sent SIGINT or SIGTERM while a client follows an endless stream."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import httpx
import pytest
from conftest import ROOT, Proc, python_env

pytestmark = pytest.mark.slow  # a real uvicorn server, stopped

PROCS = ROOT / "tests" / "procs"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_open_event_streams_end_when_the_server_stops(db_url, signum):
    env = python_env()
    env["ASYNCFLOW_DATABASE_URL"] = db_url
    # No --timeout-graceful-shutdown: uvicorn would wait for an open stream forever.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "--app-dir", str(PROCS), "sse_app:app",
        "--host", "127.0.0.1", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
    proc = Proc(process)
    try:
        running = await proc.expect("INFO:     Uvicorn running")
        port = re.search(r"http://127\.0\.0\.1:(\d+)", running)
        assert port is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port.group(1)}",
                                     timeout=30) as http:
            assert (await http.post("/start/e-1")).status_code == 200
            async with http.stream("GET", "/stream/e-1") as response:
                lines = response.aiter_lines()
                async for line in lines:
                    if line.startswith("data: "):
                        assert line == 'data: {"n":1180591620717411303424}'
                        break
                process.send_signal(signum)
                rest = [line async for line in lines]  # the server ends the response
        assert ": server stopping" in rest and "event: end" not in rest
        code = await proc.wait(60)
    finally:
        proc.kill()
    output = "\n".join(proc.lines)
    assert code in (0, -signum), output  # uvicorn re-raises SIGTERM once it has shut down
    assert "Finished server process" in output, output
    for bad in ("Traceback", "CancelledError", "graceful shutdown exceeded", "ERROR"):
        assert bad not in output, output
