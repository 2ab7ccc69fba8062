"""The examples, run for real: the communication server under uvicorn driven over HTTP (with SSE
resume), the Client example against its database, and the quickstart with no configuration."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from clilib import cli, cli_env
from conftest import ROOT, Proc, python_env

pytestmark = pytest.mark.slow  # real servers and subprocesses

EXAMPLES = ROOT / "examples"


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[str]:
    """The example app under ``uvicorn`` on 127.0.0.1 and a free port; yields its base URL."""
    env = python_env()
    env["ASYNCFLOW_DATABASE_URL"] = db_url
    env["EXAMPLE_STEP_SECONDS"] = "0.01"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "communication_server:app",
        "--host", "127.0.0.1", "--port", "0", "--no-access-log",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    proc = Proc(process)
    drain: asyncio.Task[int] | None = None
    try:
        while "Uvicorn running on" not in (line := await proc.expect("")):
            pass
        port = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert port is not None, line
        drain = asyncio.create_task(proc.wait(3600))  # keep reading its output
        yield f"http://127.0.0.1:{port.group(1)}"
    finally:
        proc.kill()
        await (drain if drain is not None else proc.wait(10))
    assert not any("Traceback" in line for line in proc.lines), "\n".join(proc.lines)


@dataclass
class SSE:
    id: str | None
    event: str | None
    data: Any


async def sse_events(response: httpx.Response) -> AsyncIterator[SSE]:
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield SSE(fields.get("id"), fields.get("event"), json.loads(fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


async def test_events_messaging_and_bad_input(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        # Events: the GET of "result" blocks until the workflow publishes it.
        started = await http.post("/start-workflow-events/ev-1/3")
        assert started.status_code == 200
        assert started.json()["query_endpoints"]["all"] == "/workflow-events/ev-1/all"
        response = await http.get("/workflow-events/ev-1/result", params={"timeout": 30})
        total = fib(23) + fib(24) + fib(25)
        assert response.json() == {"workflow_id": "ev-1", "event_key": "result",
                                   "value": {"total_steps": 3, "total_fibonacci": total}}
        response = await http.get("/workflow-events/ev-1/all")
        assert response.json()["events"] == {
            "progress": 100, "status": "completed",
            "result": {"total_steps": 3, "total_fibonacci": total}}
        response = await http.get("/workflow-events/ev-1/missing", params={"timeout": 0.1})
        assert response.status_code == 404 and "not set" in response.json()["detail"]

        # Messaging: the workflow waits for approval; sends never block; keys dedupe.
        assert (await http.post("/start-workflow-messaging/m-1/2")).status_code == 200
        assert (await http.get("/workflows/m-1")).json()["status"] == "PENDING"
        deliveries = []
        for _ in range(2):
            response = await http.post("/send-message/m-1", json={"approved": True},
                                       headers={"Idempotency-Key": "approve-m-1"})
            assert response.json()["payload"] == {"approved": True}
            deliveries.append(response.json()["delivery"])
        assert deliveries == ["delivered", "duplicate"]  # the answer says it was sent once
        done = (await http.get("/workflows/m-1", params={"timeout": 30})).json()
        assert done["status"] == "SUCCESS"
        assert done["result"]["status"] == "completed"
        assert done["result"]["results"] == [{"n": 20, "fibonacci": fib(20)},
                                             {"n": 21, "fibonacci": fib(21)}]

        await http.post("/start-workflow-messaging/m-2/2")
        await http.post("/send-message/m-2", json={"approved": False})
        await http.post("/start-workflow-messaging/m-3/2", params={"approval_timeout": 0.1})
        await http.post("/start-workflow-messaging/m-4/2")
        response = await http.post("/send-message/m-4", content=b"null",
                                   headers={"content-type": "application/json"})
        assert response.status_code == 200 and response.json()["payload"] is None
        # A null message is a message, not a timeout: the answers tell them apart.
        for workflow_id, expected in (
            ("m-2", {"reason": "not approved", "message": {"approved": False}}),
            ("m-3", {"reason": "timeout"}),
            ("m-4", {"reason": "not approved", "message": None}),
        ):
            done = (await http.get(f"/workflows/{workflow_id}", params={"timeout": 30})).json()
            assert done["result"] == {"status": "cancelled", **expected, "results": []}

        # Starting an existing id (here with another step count) returns that workflow, and
        # says so; it is neither run again nor changed.
        again = await http.post("/start-workflow-messaging/m-1/7")
        assert again.status_code == 200
        assert again.json()["started"] is False and again.json()["status"] == "SUCCESS"
        assert "already exists" in again.json()["message"]
        assert len((await http.get("/workflows/m-1")).json()["result"]["results"]) == 2
        assert started.json()["started"] is True

        # A message to a workflow that has ended is stored, and the answer says nobody gets it.
        response = await http.post("/send-message/m-1", json={"approved": True})
        assert response.json()["delivery"] == "workflow_ended"
        assert "has ended" in response.json()["message"]
        # A plain-text body: told to send JSON (HTTP advice, not Python's).
        response = await http.post("/send-message/m-1", content=b"approved",
                                   headers={"content-type": "text/plain"})
        assert response.status_code == 415, response.text
        assert "Content-Type: application/json" in response.json()["detail"]
        assert "dict" not in response.text and "str keys" not in response.text

        # Ids that need escaping in a URL: the endpoints the answers list are URL-encoded,
        # and they work as given.
        odd = "order 7?b=1#c%é"
        started = await http.post("/start-workflow-events/" + quote(odd, safe="") + "/1")
        assert started.status_code == 200, started.text
        endpoints = started.json()["query_endpoints"]
        assert endpoints["all"] == "/workflow-events/order%207%3Fb%3D1%23c%25%C3%A9/all"
        response = await http.get(endpoints["result"], params={"timeout": 30})
        assert response.status_code == 200 and response.json()["workflow_id"] == odd

        # Bad input: clear JSON errors, never a 500.
        bad = [
            ("GET", "/workflows/nope", None, 404),
            ("GET", "/workflow-events/nope/all", None, 404),
            ("GET", "/workflow-events/nope/status?timeout=0", None, 404),
            ("GET", "/workflow-events/ev-1/status?timeout=soon", None, 422),
            ("GET", "/workflow-stream/nope", None, 404),
            ("GET", "/workflow-stream/nope/live", None, 404),
            ("POST", "/send-message/nope", b'{"approved": true}', 404),
            ("POST", "/send-message/m-1", b'{"approved": tru', 422),
            ("POST", "/send-message/m-1", b"", 422),
            ("POST", "/start-workflow-events/x/many", None, 422),
            ("POST", "/start-workflow-events/x/-1", None, 422),
            ("POST", "/start-workflow-streaming/ev-1/2", None, 409),  # id of another workflow
            ("POST", "/start-workflow-events/" + "x" * 1001 + "/1", None, 400),
        ]
        for method, path, body, status in bad:
            response = await http.request(method, path, content=body,
                                          headers={"content-type": "application/json"})
            assert response.status_code == status, (method, path, response.text)
            assert "detail" in response.json()
        assert (await http.get("/health")).json()["status"] == "ok"


async def test_fibonacci_of_100_steps_is_exact(server: str) -> None:
    # fib(122) needs 84 bits: integers of any size travel through events, results and streams.
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        assert (await http.post("/start-workflow-events/big-ev/100")).status_code == 200
        assert (await http.post("/start-workflow-streaming/big-st/100")).status_code == 200
        response = await http.get("/workflow-events/big-ev/result", params={"timeout": 60})
        total = sum(fib(23 + i) for i in range(100))
        assert response.json()["value"] == {"total_steps": 100, "total_fibonacci": total}
        done = (await http.get("/workflows/big-st", params={"timeout": 60})).json()
        assert done["status"] == "SUCCESS"
        assert done["result"][-1] == {"n": 122, "fibonacci": fib(122)} and fib(122) > 2**64
        async with http.stream("GET", "/workflow-stream/big-st/live") as live:
            events = [event async for event in sse_events(live)]
        results = [e.data["result"] for e in events if e.data and e.data["type"] == "result"]
        assert results == [{"n": 23 + i, "fibonacci": fib(23 + i)} for i in range(100)]


async def test_streaming_sse_resume_and_client_example(server: str, db_url: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        assert (await http.post("/start-workflow-streaming/s-1/3")).status_code == 200
        first: list[SSE] = []
        async with http.stream("GET", "/workflow-stream/s-1/live") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for event in sse_events(response):
                first.append(event)
                if len(first) == 3:
                    break  # drop the connection mid-stream
        async with http.stream("GET", "/workflow-stream/s-1/live",
                               headers={"Last-Event-ID": first[-1].id or ""}) as response:
            rest = [event async for event in sse_events(response)]  # ends when stream closes
        assert (rest[-1].event, rest[-1].data) == ("end", None)
        values = first + rest[:-1]
        assert [int(e.id or -1) for e in values] == list(range(8))  # no gap, no repeat
        assert [e.data["type"] for e in values] == (
            ["start"] + ["progress", "result"] * 3 + ["complete"])
        stamps = [e.data["timestamp"] for e in values]
        assert stamps == sorted(stamps)

        snapshot = (await http.get("/workflow-stream/s-1")).json()
        assert snapshot == {"workflow_id": "s-1", "stream_values": [e.data for e in values],
                            "total_messages": 8, "closed": True}
        done = (await http.get("/workflows/s-1", params={"timeout": 30})).json()
        assert done["status"] == "SUCCESS" and len(done["result"]) == 3

        # The Client example, from another process, against the server's database.
        await http.post("/start-workflow-messaging/c-msg/1")
        await http.post("/start-workflow-events/c-ev/2")
        await http.post("/start-workflow-streaming/c-st/2")
        env = cli_env(db_url)
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLES / "client_example.py"), "c-msg", "c-ev", "c-st",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        raw, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        lines = raw.decode().splitlines()
        assert lines[0] == "sent approval to c-msg"
        result = json.loads(lines[1].removeprefix("messaging result: "))
        assert result["status"] == "completed"
        assert result["approval"] == {"approved": True, "by": "client_example"}
        assert json.loads(lines[2].removeprefix("events result: ")) == {
            "total_fibonacci": fib(23) + fib(24), "total_steps": 2}
        assert json.loads(lines[3].removeprefix("all events: "))["status"] == "completed"
        assert [line.split(":")[0] for line in lines[4:-1]] == [f"stream {i}" for i in range(6)]
        assert lines[-1] == "stream closed"


def _ctrl_c_as_a_terminal_sends_it() -> None:
    """In the child, before it runs: SIGINT back to its default disposition. A suite started
    in the background of a non-interactive shell inherits SIGINT ignored, and a Python started
    with it ignored never raises KeyboardInterrupt: the Ctrl-C these tests send would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def run_quickstart(
    cwd: Path, stop: signal.Signals | None = None, at: str = "stream: waiting 2 seconds"
) -> tuple[int, list[str], str]:
    """Run examples/quickstart.py with no configuration; with ``stop``, send that signal once it
    prints a line starting with ``at``. Its exit code, stdout lines and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "quickstart.py"), cwd=cwd, env=cli_env(None),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=_ctrl_c_as_a_terminal_sends_it)
    proc = Proc(process)
    try:
        if stop is not None:
            await proc.expect(at, within=120)
            process.send_signal(stop)
        assert process.stderr is not None
        err = await asyncio.wait_for(process.stderr.read(), 120)
        code = await proc.wait(120)
    finally:
        proc.kill()
    return code, proc.lines, err.decode()


async def test_quickstart_resumes_after_ctrl_c_and_kill(tmp_path) -> None:
    waiting = "stream: waiting 2 seconds: press Ctrl-C now and run me again"
    rest = ["stream: waiting for a reply", "stream: got 'hi there'",
            "result: Hello, world! They said: hi there"]
    try:
        # Ctrl-C while the workflow sleeps: one line, no traceback.
        code, lines, err = await run_quickstart(tmp_path, signal.SIGINT)
        assert code == 130
        assert lines == ["started workflow quickstart-greet-world",
                         "step: making the greeting (runs once per workflow)",
                         "event: Hello, world!", waiting]
        assert err == ("interrupted: workflow quickstart-greet-world is saved; run again to "
                       "resume it\n")
        # Run again: it resumes (its step does not run again); kill it outright.
        resumed = "resumed workflow quickstart-greet-world from its checkpoints"
        code, lines, err = await run_quickstart(tmp_path, signal.SIGKILL, at="resumed")
        assert code == -signal.SIGKILL and lines[0] == resumed
        assert not any(line.startswith("step:") for line in lines)
        # Run again: it resumes and finishes (unless it already finished before the kill).
        finished = ("workflow quickstart-greet-world already ended (SUCCESS): its recorded "
                    "outcome")
        code, lines, err = await run_quickstart(tmp_path)
        assert (code, err) == (0, "")
        assert lines[0] in (resumed, finished) and lines[1:] == [
            "event: Hello, world!", waiting, *rest]
        code, lines, err = await run_quickstart(tmp_path)
        assert (code, err) == (0, "")
        assert lines == [finished, "event: Hello, world!", waiting, *rest]
        assert (tmp_path / ".asyncflow" / "pgdata" / "PG_VERSION").is_file()

        # The quickstart stopped the server it started; the CLI starts it again, and the
        # workflow it ran is still there.
        code, _, err = await cli(None, "postgres", "url", cwd=tmp_path)
        assert code == 1 and "not running" in err
        code, url, err = await cli(None, "postgres", "start", cwd=tmp_path)
        assert code == 0 and url.startswith("postgresql://") and err == ""
        assert await cli(None, "postgres", "url", cwd=tmp_path) == (0, url, "")
        code, out, err = await cli(None, "--json", "workflow", "list", cwd=tmp_path)
        assert code == 0, err
        assert [(w["name"], w["status"]) for w in json.loads(out)] == [("greet", "SUCCESS")]
        code, out, _ = await cli(None, "postgres", "stop", cwd=tmp_path)
        assert code == 0 and out.startswith("stopped")
        code, _, err = await cli(None, "postgres", "url", cwd=tmp_path)
        assert code == 1 and "not running" in err
    finally:
        await cli(None, "postgres", "stop", "--force", cwd=tmp_path)


async def _quickstart_copy(path: Path, db_url: str, stop_at: str | None = None) -> Proc:
    """Run a copy of the quickstart on ``db_url`` (stdout and stderr as one stream of lines);
    with ``stop_at``, Ctrl-C it once a line starts with that."""
    env = python_env()
    env["ASYNCFLOW_DATABASE_URL"] = db_url
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(path), cwd=path.parent, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=_ctrl_c_as_a_terminal_sends_it)
    proc = Proc(process)
    try:
        if stop_at is not None:
            await proc.expect(stop_at, within=60)
            process.send_signal(signal.SIGINT)
        await proc.wait(60)
    finally:
        proc.kill()
    return proc


async def test_quickstart_edited_while_it_waits_adopts_or_explains(db_url, tmp_path) -> None:
    # The new user's case: Ctrl-C while it waits, edit one string, run again.
    copy = tmp_path / "quickstart.py"
    source = (EXAMPLES / "quickstart.py").read_text()
    copy.write_text(source)
    first = await _quickstart_copy(copy, db_url, stop_at="stream: waiting 2 seconds")
    assert first.process.returncode == 130
    edited = source.replace('"waiting for a reply"', '"waiting for an answer"')
    assert edited != source
    copy.write_text(edited)  # another app version: the source hash changed
    again = await _quickstart_copy(copy, db_url)
    assert again.process.returncode == 0, again.lines
    adopted = [line for line in again.lines if line.startswith("asyncflow adopted")]
    assert len(adopted) == 1 and re.fullmatch(
        r"asyncflow adopted workflow quickstart-greet-world of version \w+ \(now \w+\): "
        r"replayed [34] operations against the new code", adopted[0]), again.lines
    assert "stream: waiting for an answer" in again.lines
    assert again.lines[-1] == "result: Hello, world! They said: hi there"
    assert not any(line.startswith("step:") for line in again.lines)  # its step ran once

    # An edit its history does not replay against: it says so instead of hanging silently.
    source = source.replace('"quickstart-greet-world"', '"quickstart-2"')
    copy.write_text(source)
    await _quickstart_copy(copy, db_url, stop_at="stream: waiting 2 seconds")
    copy.write_text(source.replace('asyncflow.set_event("greeting", greeting)',
                                   'asyncflow.write_stream("log", greeting)'))
    explained = await _quickstart_copy(copy, db_url)
    assert explained.process.returncode == 0, explained.lines
    line = next(line for line in explained.lines if line.startswith("asyncflow left"))
    assert re.search(r"quickstart-2 left for version \w+: diverges at operation 1 "
                     r"\(asyncflow.write_stream vs asyncflow.set_event recorded\)", line), line
    assert "start one to finish them, see docs/deploying.md" in line
    assert re.fullmatch(r"workflow quickstart-2 waits for the code that started it \(version "
                        r"\w+\); this edit does not replay its history", explained.lines[-1])
