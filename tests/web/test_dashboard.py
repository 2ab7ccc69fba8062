"""The web dashboard: pages, filters, auth, actions and live updates over HTTP (httpx against the
ASGI app), the `asyncflow dashboard` command, and a real headless Chromium driving a real server.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from cdp import chromium, find_chromium
from conftest import python_env
from dashlib import ARTIFACTS, BASE, allow, client_for, csrf_of
from starlette.applications import Starlette
from starlette.routing import Mount

import asyncflow
from asyncflow._dashboard import Dashboard, dashboard


def row_ids(page: str) -> list[str]:
    """Workflow ids of the list table's rows, in order (unescaped)."""
    import html

    return [html.unescape(m) for m in re.findall(r'<tr data-workflow-id="([^"]*)"', page)]


def define(app: asyncflow.AsyncFlow) -> dict[str, Any]:
    """Workflows used by the HTTP tests."""

    @app.step(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.workflow(name="double")
    async def double(x: int) -> int:
        return x * 2

    @app.workflow(name="rich")
    async def rich(n: int) -> dict[str, Any]:
        total = await add(n, 1)
        await asyncflow.set_event("phase", {"html": "<b>bold</b>"})
        await asyncflow.write_stream("log", "line <1>")
        await asyncflow.write_stream("log", {"n": 2})
        await asyncflow.close_stream("log")
        doubled = await double(total)
        await asyncflow.sleep(0.01)
        got = await asyncflow.recv("go", timeout_seconds=60)
        return {"total": total, "doubled": doubled, "got": got}

    @app.workflow(name="broken")
    async def broken(text: str) -> None:
        raise ValueError(text)

    @app.workflow(name="waiter")
    async def waiter() -> Any:
        return await asyncflow.recv("go", timeout_seconds=3600)

    return {"rich": rich, "broken": broken, "waiter": waiter, "double": double}


@asynccontextmanager
async def running(make_app: Any) -> AsyncIterator[tuple[asyncflow.AsyncFlow, dict[str, Any]]]:
    """An app with the test workflows, launched (in the test's own task)."""
    app = make_app()
    flows = define(app)
    async with app:
        yield app, flows


# -- the list -----------------------------------------------------------------------------------


async def test_list_filters_and_paging(make_app: Any) -> None:
    async with running(make_app) as (app, flows):
        ok = [await app.start_workflow(flows["double"], i, workflow_id=f"order-{i}")
              for i in range(3)]
        for handle in ok:
            await handle.get_result()
        bad = await app.start_workflow(flows["broken"], "nope", workflow_id="other-1")
        with pytest.raises(ValueError):
            await bad.get_result()
        await app.start_workflow(flows["waiter"], workflow_id="order-waiting")
        async with client_for(dashboard(app)) as http:
            page = (await http.get("/")).text
            assert set(row_ids(page)) == {"order-0", "order-1", "order-2", "other-1",
                                          "order-waiting"}
            assert 'data-live="/live"' in page and 'data-fragments="/list"' in page

            async def ids(**params: str) -> list[str]:
                response = await http.get("/", params=params)
                assert response.status_code == 200
                return row_ids(response.text)

            assert set(await ids(status="SUCCESS")) == {"order-0", "order-1", "order-2"}
            assert await ids(status="error") == ["other-1"]
            assert await ids(status="PENDING") == ["order-waiting"]
            assert await ids(name="broken") == ["other-1"]
            assert set(await ids(id="order-")) == {"order-0", "order-1", "order-2", "order-waiting"}
            assert await ids(id="order-", status="PENDING") == ["order-waiting"]
            assert await ids(id="zzz") == []
            assert len(await ids(since="1h")) == 5
            assert await ids(**{"from": "2999-01-01"}) == []
            assert await ids(to="2000-01-01T00:00") == []
            assert len(await ids(**{"from": "2000-01-01", "to": "2999-01-01T00:00:00+02:00"})) == 5

            response = await http.get("/", params={"status": "BOGUS", "from": "yesterday"})
            assert response.status_code == 200
            assert "unknown status" in response.text and "must be a date" in response.text
            assert len(row_ids(response.text)) == 5  # bad filters are reported and ignored

            # Paging: newest first; every workflow exactly once across the pages.
            seen: list[str] = []
            url: str | None = "/?limit=2&id=order-"
            while url is not None:
                page = (await http.get(url)).text
                seen.extend(row_ids(page))
                found = re.search(r'<a href="([^"]+)">older', page)
                url = found.group(1).replace("&amp;", "&") if found else None
            assert sorted(seen) == ["order-0", "order-1", "order-2", "order-waiting"]
            assert seen[0] == "order-waiting"

            part = await http.get("/list", params={"status": "ERROR"})
            assert part.text.startswith('<section data-part="list">')
            assert row_ids(part.text) == ["other-1"]


async def test_everything_is_escaped(make_app: Any) -> None:
    async with running(make_app) as (app, flows):
        evil = "<script>alert('id')</script>&\"x"
        handle = await app.start_workflow(flows["broken"], "<img src=x onerror=alert(1)>",
                                          workflow_id=evil)
        with pytest.raises(ValueError):
            await handle.get_result()
        await app.send(evil, {"<i>": "</pre><script>alert(2)</script>"}, topic="<t>")
        async with client_for(dashboard(app, auth=allow)) as http:
            for response in (await http.get("/"), await http.get("/workflow", params={"id": evil})):
                assert response.status_code == 200
                text = response.text
                assert "<script>alert" not in text and "<img src=x" not in text
                assert "&lt;script&gt;alert(&#x27;id&#x27;)&lt;/script&gt;&amp;&quot;x" in text
                assert response.headers["content-security-policy"].startswith("default-src 'none'")
            assert "&lt;img src=x onerror=alert(1)&gt;" in text
            assert "&lt;/pre&gt;&lt;script&gt;alert(2)" in text
            assert "?id=%3Cscript%3Ealert%28%27id%27%29%3C%2Fscript%3E%26%22x" in text


# -- a workflow's page --------------------------------------------------------------------------


async def test_workflow_page(make_app: Any) -> None:
    async with running(make_app) as (app, flows):
        handle = await app.start_workflow(flows["rich"], 4, workflow_id="rich-1")
        await app.send("rich-1", "the go message", topic="go")
        assert (await handle.get_result())["doubled"] == 10
        waiting = await app.start_workflow(flows["waiter"], workflow_id="waiting-1")
        await app.send("waiting-1", {"a": 1}, topic="elsewhere")
        await app.send("waiting-1", "second", topic=None)
        async with client_for(dashboard(app)) as http:
            response = await http.get("/workflow", params={"id": "rich-1"})
            assert response.status_code == 200
            page = response.text
            assert 'data-status="SUCCESS"' in page
            assert "&quot;args&quot;: [\n    4\n  ]" in page  # inputs, indented JSON
            assert "&quot;doubled&quot;: 10" in page  # the result
            kinds = re.findall(r'<tr class="op op-(\w+) state-(\w+)"', page)
            assert kinds == [("step", "done"), ("set_event", "done"), ("write_stream", "done"),
                             ("write_stream", "done"), ("close_stream", "done"), ("child", "done"),
                             ("sleep", "done"), ("recv", "done")]
            assert 'href="/workflow?id=rich-1-5"' in page  # the child workflow, as a link
            assert "received" in page and "&quot;the go message&quot;" in page
            assert 'data-event-key="phase"' in page and "&lt;b&gt;bold&lt;/b&gt;" in page
            assert 'data-stream-key="log" data-state="closed"' in page
            assert re.findall(r'<li data-offset="(\d+)">', page) == ["0", "1"]
            assert "No messages waiting" in page
            assert "Actions are disabled" in page and 'data-action="cancel"' not in page

            child = (await http.get("/workflow", params={"id": "rich-1-5"})).text
            assert 'Parent</dt><dd><a class="wid" href="/workflow?id=rich-1"' in child

            page = (await http.get("/workflow", params={"id": "waiting-1"})).text
            assert 'data-status="PENDING"' in page
            assert 'class="op op-recv state-waiting"' in page
            assert "Pending messages <span class=\"muted\">(2)</span>" in page
            assert "<code>elsewhere</code>" in page and "&quot;second&quot;" in page

            part = (await http.get("/workflow/parts",
                                   params={"id": "waiting-1", "parts": "events,messages"})).text
            assert re.findall(r'<section data-part="(\w+)"', part) == ["events", "messages"]
            every = (await http.get("/workflow/parts", params={"id": "waiting-1"})).text
            assert re.findall(r'<section data-part="(\w+)"', every) == [
                "summary", "io", "timeline", "events", "streams", "messages"]
        await app.cancel_workflow(waiting.workflow_id)


async def test_wait_first_in_the_timeline(make_app: Any) -> None:
    app = make_app()

    @app.workflow(name="racer")
    async def racer() -> Any:
        fired = await asyncflow.wait_first(asyncflow.message("a"), asyncflow.message("b"))
        return fired.value

    async with app:
        handle = await app.start_workflow(racer, workflow_id="race-1")
        async with client_for(dashboard(app)) as http:
            await app._waits.wait_for_count(1)  # parked in its wait_first
            page = (await http.get("/workflow", params={"id": "race-1"})).text
            assert 'class="op op-wait_first state-waiting"' in page and "waiting…" in page
            await app.send("race-1", "b wins", topic="b")
            assert await handle.get_result(timeout_seconds=60) == "b wins"
            page = (await http.get("/workflow", params={"id": "race-1"})).text
            assert 'class="op op-wait_first state-done"' in page
            assert "fired" in page and "&quot;b wins&quot;" in page


async def test_error_and_traceback(make_app: Any) -> None:
    async with running(make_app) as (app, flows):
        handle = await app.start_workflow(flows["broken"], "it went <wrong>", workflow_id="b-1")
        with pytest.raises(ValueError):
            await handle.get_result()
        async with client_for(dashboard(app)) as http:
            page = (await http.get("/workflow", params={"id": "b-1"})).text
        assert 'data-status="ERROR"' in page
        assert "<strong>ValueError</strong>: it went &lt;wrong&gt;" in page
        traceback = re.search(r'<pre class="traceback">(.*?)</pre>', page, re.S)
        assert traceback is not None
        assert "Traceback (most recent call last)" in traceback.group(1)
        assert "raise ValueError(text)" in traceback.group(1)


async def test_bad_requests(make_app: Any) -> None:
    async with running(make_app) as (app, _flows):
        async with client_for(dashboard(app, auth=allow)) as http:
            assert (await http.get("/workflow", params={"id": "nope"})).status_code == 404
            assert (await http.get("/workflow/parts", params={"id": "nope"})).status_code == 404
            assert (await http.get("/workflow")).status_code == 400
            assert (await http.get("/workflow", params={"id": "a\x00b"})).status_code == 400
            assert (await http.get("/nothing-here")).status_code == 404
            response = await http.post("/")
            assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
            response = await http.get("/action/cancel")
            assert response.status_code == 405 and response.headers["allow"] == "POST"
            assert (await http.post("/action/explode")).status_code == 404
            assert (await http.get("/static/nothing.js")).status_code == 404
            assert (await http.get("/live", params=[("id", "x")] * 101)).status_code == 400
            script = await http.get("/static/dashboard.js")
            assert script.status_code == 200 and "EventSource" in script.text
            assert script.headers["content-type"].startswith("text/javascript")
            again = await http.get("/static/dashboard.js",
                                   headers={"if-none-match": script.headers["etag"]})
            assert again.status_code == 304
        stopped = dashboard(asyncflow.Client("postgresql://unused.invalid/x"))
        async with client_for(stopped) as http:
            response = await http.get("/")
            assert response.status_code == 503 and "not running" in response.text
        with pytest.raises(asyncflow.ConfigurationError):
            dashboard("not an app")  # type: ignore[arg-type]


# -- auth and actions ---------------------------------------------------------------------------


async def test_auth_hooks(make_app: Any) -> None:
    async with running(make_app) as (app, flows):
        await app.start_workflow(flows["waiter"], workflow_id="w-1")
        # Default: reading allowed, every action refused (and no buttons shown).
        async with client_for(dashboard(app)) as http:
            page = (await http.get("/workflow", params={"id": "w-1"})).text
            assert 'data-action="cancel"' not in page and 'data-action="send"' not in page
            form = {"id": "w-1", "csrf": http.cookies["asyncflow_csrf"]}
            response = await http.post("/action/cancel", data=form)
            assert response.status_code == 403 and "auth" in response.text
        assert (await app.get_workflow_status("w-1")).status == "PENDING"

        seen: list[Any] = []

        async def readers(scope: Any) -> bool:  # async hooks work too
            seen.append(scope)
            return dict(scope["headers"]).get(b"x-user") == b"reader"

        def boom(_scope: Any) -> bool:
            raise RuntimeError("the hook failed")

        async with client_for(dashboard(app, read_auth=readers)) as http:
            assert (await http.get("/")).status_code == 403
            assert (await http.get("/live")).status_code == 403
            assert (await http.get("/workflow", params={"id": "w-1"})).status_code == 403
            assert (await http.get("/static/dashboard.css")).status_code == 200
            response = await http.get("/", headers={"x-user": "reader"})
            assert response.status_code == 200 and "w-1" in response.text
            assert seen and seen[-1]["type"] == "http"
        async with client_for(dashboard(app, read_auth=boom, auth=boom)) as http:
            assert (await http.get("/")).status_code == 403  # a failing hook refuses
        await app.cancel_workflow("w-1")


async def test_actions(make_app: Any) -> None:
    async with running(make_app) as (app, flows):
        handle = await app.start_workflow(flows["waiter"], workflow_id="w-1")
        async with client_for(dashboard(app, auth=allow)) as http:
            page = (await http.get("/workflow", params={"id": "w-1"})).text
            token = csrf_of(page)
            assert http.cookies["asyncflow_csrf"] == token
            assert 'data-action="cancel"' in page and 'data-action="resume"' not in page
            form = {"id": "w-1", "csrf": token}

            # CSRF: a token is needed, it must match the cookie, and the origin must be this one.
            assert (await http.post("/action/cancel", data={"id": "w-1"})).status_code == 403
            bad = await http.post("/action/cancel", data={**form, "csrf": "x" * 43})
            assert bad.status_code == 403 and "stale" in bad.text
            for headers in ({"origin": "http://evil.example"}, {"origin": "null"},
                            {"sec-fetch-site": "cross-site"}):
                response = await http.post("/action/cancel", data=form, headers=headers)
                assert response.status_code == 403, headers
            response = await http.post("/action/cancel", content=orjson.dumps(form),
                                       headers={"content-type": "application/json"})
            assert response.status_code == 415
            assert (await app.get_workflow_status("w-1")).status == "PENDING"

            response = await http.post("/action/cancel", data=form,
                                       headers={"origin": BASE, "sec-fetch-site": "same-origin"})
            assert response.status_code == 303
            assert response.headers["location"] == "/workflow?id=w-1&notice=cancelled"
            assert (await app.get_workflow_status("w-1")).status == "CANCELLED"
            page = (await http.get(response.headers["location"])).text
            assert 'data-notice="cancelled"' in page
            assert 'data-action="resume"' in page and 'data-action="cancel"' not in page
            again = await http.post("/action/cancel", data=form)
            assert again.headers["location"].endswith("notice=unchanged")

            response = await http.post("/action/resume", data=form, headers={"origin": BASE})
            assert response.headers["location"].endswith("notice=resumed")
            assert (await app.get_workflow_status("w-1")).status == "PENDING"

            bad_json = await http.post("/action/send", data={**form, "message": "{nope"})
            assert bad_json.status_code == 400 and "not valid JSON" in bad_json.text
            response = await http.post("/action/send", data={
                **form, "topic": "go", "message": '{"approved": true}', "idempotency_key": "k1"})
            assert response.headers["location"].endswith("notice=sent")
            assert await handle.get_result(timeout_seconds=60) == {"approved": True}
            # The idempotency key makes a repeated send a no-op.
            await http.post("/action/send", data={
                **form, "topic": "go", "message": '"again"', "idempotency_key": "k1"})
            page = (await http.get("/workflow", params={"id": "w-1"})).text
            assert "No messages waiting" in page

            # Fork from an operation: a new workflow with w-1's history before it.
            assert 'data-action="fork"' in page
            bad = await http.post("/action/fork", data={**form, "from_step": "x"})
            assert bad.status_code == 400
            response = await http.post("/action/fork", data={
                **form, "from_step": "0", "workflow_id": "w-1-again"})
            assert response.headers["location"] == "/workflow?id=w-1-again&notice=forked"
            assert (await app.get_workflow_status("w-1-again")).name == "waiter"
            page = (await http.get(response.headers["location"])).text
            assert 'data-notice="forked"' in page
            await app.cancel_workflow("w-1-again")


async def test_mounted_under_a_prefix(make_app: Any) -> None:
    async with running(make_app) as (app, flows):
        await app.start_workflow(flows["waiter"], workflow_id="w/1?x")
        web = Starlette(routes=[Mount("/ops/dash", dashboard(app, auth=allow))])
        async with client_for(web) as http:
            page = (await http.get("/ops/dash/")).text
            assert 'href="/ops/dash/workflow?id=w%2F1%3Fx"' in page
            assert 'href="/ops/dash/static/dashboard.css?v=' in page
            assert 'data-live="/ops/dash/live"' in page
            assert (await http.get("/ops/dash/static/dashboard.js")).status_code == 200
            page = (await http.get("/ops/dash/workflow", params={"id": "w/1?x"})).text
            assert 'action="/ops/dash/confirm"' in page  # cancel asks first
            page = (await http.get("/ops/dash/confirm",
                                   params={"action": "cancel", "id": "w/1?x"})).text
            assert 'action="/ops/dash/action/cancel"' in page
            assert http.cookies.jar and next(iter(http.cookies.jar)).path == "/ops/dash"
            response = await http.post("/ops/dash/action/cancel",
                                       data={"id": "w/1?x", "csrf": csrf_of(page)})
            assert response.headers["location"] == (
                "/ops/dash/workflow?id=w%2F1%3Fx&notice=cancelled")
        assert (await app.get_workflow_status("w/1?x")).status == "CANCELLED"


# -- live updates -------------------------------------------------------------------------------


async def test_registry_observer_hook(make_app: Any, db_url: str) -> None:
    """Observers see local wake-ups and dispatched NOTIFYs from other processes, until removed."""
    async with running(make_app) as (app, flows):
        await app.start_workflow(flows["waiter"], workflow_id="w-1")
        seen: list[tuple[str, str]] = []
        arrived = asyncio.Event()

        def observe(kind: str, workflow_id: str) -> None:
            seen.append((kind, workflow_id))
            arrived.set()

        remove = app._waits.add_observer(observe)
        await app.send("w-1", 1, topic="other")  # local: woken in-process after the commit
        assert ("m", "w-1") in seen
        async with asyncflow.Client(db_url) as client:
            arrived.clear()
            seen.clear()
            await client.cancel_workflow("w-1")  # another connection: arrives as a NOTIFY
            async with asyncio.timeout(30):
                while ("t", "w-1") not in seen:
                    await arrived.wait()
                    arrived.clear()
            remove()
            remove()  # idempotent
            seen.clear()
            await app.send("w-1", 2, topic="other")
        assert seen == []


class LiveCall:
    """One ``GET /live`` request driven by hand: what the app sends lands in a queue."""

    def __init__(self, dash: Dashboard, query: bytes = b"") -> None:
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.gone = asyncio.Event()
        scope = {"type": "http", "method": "GET", "path": "/live", "root_path": "",
                 "query_string": query, "headers": [(b"host", b"dash.test")]}
        self.task = asyncio.create_task(dash(scope, self.receive, self.sent.put))

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def event(self) -> tuple[str, Any]:
        """The next SSE event (comments skipped)."""
        while True:
            async with asyncio.timeout(30):
                message = await self.sent.get()
            if message["type"] == "http.response.start":
                assert message["status"] == 200
                continue
            body = message["body"].decode()
            fields = dict(line.split(": ", 1) for line in body.strip().split("\n")
                          if line and not line.startswith(":") and ": " in line)
            if "event" in fields:
                return fields["event"], orjson.loads(fields["data"])

    async def close(self) -> None:
        self.gone.set()
        async with asyncio.timeout(30):
            await self.task


async def test_live_events(make_app: Any, db_url: str) -> None:
    async with running(make_app) as (app, flows):
        await app.start_workflow(flows["waiter"], workflow_id="w-1")
        await app.start_workflow(flows["waiter"], workflow_id="w-2")
        dash = dashboard(app)
        everything = LiveCall(dash)
        one = LiveCall(dash, b"id=w-2")
        assert await everything.event() == ("ready", {})
        assert await one.event() == ("ready", {})
        observers = app._waits._observers
        assert len(observers) == 1  # one observer for the dashboard, whatever its connections

        await app.send("w-1", "hello", topic="elsewhere")
        assert await everything.event() == ("change", {"ids": {"w-1": "m"}, "all": False})
        async with asyncflow.Client(db_url) as client:
            await client.send("w-2", "from another process", topic="go")  # a NOTIFY
            assert (await app.retrieve_workflow("w-2")) is not None
            await (await app.retrieve_workflow("w-2")).get_result(timeout_seconds=60)
        event, data = await one.event()
        assert event == "change" and set(data["ids"]) == {"w-2"}
        assert set(data["ids"]["w-2"]) <= {"m", "t"}
        # A burst coalesces: wake-ups arriving before the connection's writer runs again become
        # one event per workflow, with every kind seen.
        burst = LiveCall(dash, b"id=w-1")
        assert await burst.event() == ("ready", {})
        for _ in range(50):
            app._waits.wake("m", "w-1")
            app._waits.wake("e", "w-1")
            app._waits.wake("m", "unrelated")
        assert await burst.event() == ("change", {"ids": {"w-1": "em"}, "all": False})
        # Too many workflows at once: the page is told to refresh everything.
        flood = LiveCall(dash)
        assert await flood.event() == ("ready", {})
        for i in range(600):
            app._waits.wake("s", f"flood-{i}")
        assert await flood.event() == ("change", {"ids": {}, "all": True})

        dash.close()  # server shutdown: live connections end
        for call in (everything, one, burst, flood):
            await call.close()
        assert len(observers) == 0  # the last connection unsubscribed from the registry
        await app.cancel_workflow("w-1")


# -- queues -------------------------------------------------------------------------------------


def queue_rows(page: str) -> dict[str, dict[str, int]]:
    """The queues table: name -> its counts."""
    import html

    found: dict[str, dict[str, int]] = {}
    for name, row in re.findall(r'<tr data-queue="([^"]*)">(.*?)</tr>', page):
        counts = dict(re.findall(r'data-count="(\w+)">([\d,]+)<', row))
        found[html.unescape(name)] = {k: int(v.replace(",", "")) for k, v in counts.items()}
    return found


@asynccontextmanager
async def queued(make_app: Any) -> AsyncIterator[tuple[asyncflow.AsyncFlow, dict[str, Any]]]:
    """An app registering queue ``work`` (with limits; not served here, so its workflows stay
    ENQUEUED or DELAYED) and serving queue ``fast``; one workflow of ``fast`` runs (PENDING),
    one finished, and a Client enqueued one on ``other``, which no app registers."""
    app = make_app(queues=["fast"])
    flows = define(app)
    work = app.queue("work", concurrency=2, worker_concurrency=1, rate_limit=(5, 60),
                     partition_concurrency=1)
    fast = app.queue("fast")

    @app.workflow(name="hold")
    async def hold() -> Any:
        await asyncflow.set_event("up", True)
        return await asyncflow.recv("go", timeout_seconds=3600)

    async with app:
        for i in range(3):
            await work.enqueue(flows["double"], i, workflow_id=f"work-{i}", priority=i)
        await work.enqueue(flows["double"], 9, workflow_id="work-later", delay_seconds=3600,
                           deduplication_id="dedup-<1>", partition_key="tenant-a", priority=-5)
        await fast.enqueue(hold, workflow_id="fast-hold")
        assert await app.get_event("fast-hold", "up", timeout_seconds=60) is True
        # Its result may be read from the database before the task that committed it wakes
        # this process's observers ("t"): the setup waits for that too, so no live page opened
        # afterwards hears of it.
        ended = asyncio.Event()
        remove = app._waits.add_observer(
            lambda kind, workflow_id: ended.set() if (kind, workflow_id) == ("t", "fast-done")
            else None)
        done = await fast.enqueue(flows["double"], 21, workflow_id="fast-done")
        assert await done.get_result(timeout_seconds=60) == 42
        async with asyncio.timeout(30):
            await ended.wait()
        remove()
        yield app, {**flows, "work": work, "fast": fast}


async def test_queue_pages(make_app: Any, db_url: str) -> None:
    async with queued(make_app) as (app, _flows):
        async with asyncflow.Client(db_url) as client:
            await client.enqueue("other", "double", 1, workflow_id="other-1")
        async with client_for(dashboard(app)) as http:
            response = await http.get("/queues")
            assert response.status_code == 200
            page = response.text
            assert 'data-live="/live"' in page and 'data-fragments="/queues/parts"' in page
            assert '<a href="/queues">Queues</a>' in page  # in the top navigation
            assert queue_rows(page) == {
                "fast": {"enqueued": 0, "delayed": 0, "running": 1},
                "other": {"enqueued": 1, "delayed": 0, "running": 0},
                "work": {"enqueued": 3, "delayed": 1, "running": 0},
            }
            work_row = re.search(r'<tr data-queue="work">(.*?)</tr>', page)
            assert work_row is not None
            cells = re.findall(r"<td>(.*?)</td>", work_row.group(1))
            assert cells[-5:] == ["2", "1", "5 per 60 s", "1", "no"]  # limits; not served here
            fast_row = re.search(r'<tr data-queue="fast">(.*?)</tr>', page)
            assert fast_row is not None and fast_row.group(1).endswith("<td>yes</td>")
            other_row = re.search(r'<tr data-queue="other">(.*?)</tr>', page)
            assert other_row is not None and "unknown here" in other_row.group(1)
            part = (await http.get("/queues/parts")).text
            assert part.startswith('<section data-part="queues">')
            assert queue_rows(part) == queue_rows(page)

            # One queue: its figures, status tabs and the list's filters.
            response = await http.get("/queue", params={"queue": "work"})
            assert response.status_code == 200
            page = response.text
            assert set(row_ids(page)) == {"work-0", "work-1", "work-2", "work-later"}
            assert 'data-fragments="/queue/parts?queue=work"' in page
            assert '<dd><span data-count="enqueued">3</span></dd>' in page
            assert "<dt>Rate limit</dt><dd>5 per 60 s</dd>" in page
            tabs = re.findall(r'data-tab="(\w+)"', page)
            assert tabs == ["all", "ENQUEUED", "DELAYED", "PENDING", "FINISHED"]

            async def ids(queue: str, **params: str) -> list[str]:
                response = await http.get("/queue", params={"queue": queue, **params})
                assert response.status_code == 200
                return row_ids(response.text)

            assert set(await ids("work", status="ENQUEUED")) == {"work-0", "work-1", "work-2"}
            assert await ids("work", status="DELAYED") == ["work-later"]
            assert await ids("work", status="PENDING") == []
            assert await ids("fast", status="PENDING") == ["fast-hold"]
            assert await ids("fast", status="finished") == ["fast-done"]
            assert await ids("work", status="ENQUEUED", id="work-1") == ["work-1"]
            assert await ids("work", name="rich") == []
            page = (await http.get("/queue", params={"queue": "work", "status": "DELAYED"})).text
            assert 'class="current" aria-current="page" data-tab="DELAYED"' in page
            assert '<input type="hidden" name="status" value="DELAYED">' in page
            parts = (await http.get("/queue/parts", params={"queue": "work"})).text
            assert parts.startswith('<section data-part="queue">')
            assert '<section data-part="list">' in parts

            # Paging stays on the queue's page.
            seen: list[str] = []
            url: str | None = "/queue?queue=work&limit=3"
            while url is not None:
                page = (await http.get(url)).text
                seen.extend(row_ids(page))
                found = re.search(r'<a href="([^"]+)">older', page)
                url = found.group(1).replace("&amp;", "&") if found else None
                assert url is None or url.startswith("/queue?")
            assert sorted(seen) == ["work-0", "work-1", "work-2", "work-later"]

            missing = await http.get("/queue", params={"queue": "nope"})
            assert missing.status_code == 404 and "no queue named" in missing.text
            assert (await http.get("/queue")).status_code == 400
            too_long = await http.get("/queue", params={"queue": "x" * 1001})
            assert too_long.status_code == 400 and "queue name" in too_long.text

            # The workflow list: a queue filter and a queue column.
            page = (await http.get("/", params={"queue": "fast"})).text
            assert set(row_ids(page)) == {"fast-hold", "fast-done"}
            assert '<a class="qname" href="/queue?queue=fast" data-queue="fast">fast</a>' in page
            assert set(row_ids((await http.get("/", params={"status": "ENQUEUED"})).text)) == {
                "work-0", "work-1", "work-2", "other-1"}
            assert row_ids((await http.get("/", params={"status": "DELAYED"})).text) == [
                "work-later"]
            assert 'name="queue" value="fast"' in page

            # A queued workflow's page: its queue fields; it follows its queue live.
            page = (await http.get("/workflow", params={"id": "work-later"})).text
            assert badge_of(page) == "DELAYED"
            for fact in ("<dt>Queue</dt><dd><a class=\"qname\" href=\"/queue?queue=work\"",
                         "<dt>Priority</dt><dd>-5</dd>",
                         "<dt>Deduplication id</dt><dd>dedup-&lt;1&gt;</dd>",
                         "<dt>Partition</dt><dd>tenant-a</dd>",
                         "<dt>Delay until</dt><dd><time",
                         "<dt>Dispatched</dt><dd><span class=\"muted\">"):
                assert fact in page, fact
            assert 'data-live="/live?id=work-later&amp;queue=work"' in page
            page = (await http.get("/workflow", params={"id": "fast-done"})).text
            assert "<dt>Dispatched</dt><dd><time" in page
        async with asyncflow.Client(db_url) as client, client_for(dashboard(client)) as http:
            page = (await http.get("/queues")).text  # a Client knows no limits
            assert set(queue_rows(page)) == {"fast", "other", "work"}
            assert page.count("unknown here") == 3 and "<td>yes</td>" not in page
            assert (await http.get("/queue", params={"queue": "work"})).status_code == 200


def badge_of(page: str) -> str:
    found = re.search(r'<span class="badge [^"]*" data-status="(\w+)"', page)
    assert found
    return found.group(1)


async def test_cancel_a_queued_workflow(make_app: Any) -> None:
    async with queued(make_app) as (app, _flows), client_for(dashboard(app, auth=allow)) as http:
        page = (await http.get("/workflow", params={"id": "work-0"})).text
        assert 'data-action="cancel"' in page
        form = {"id": "work-0", "csrf": csrf_of(page)}
        response = await http.post("/action/cancel", data=form, headers={"origin": BASE})
        assert response.headers["location"].endswith("notice=cancelled")
        assert (await app.get_workflow_status("work-0")).status == "CANCELLED"
        page = (await http.get("/queues")).text
        assert queue_rows(page)["work"] == {"enqueued": 2, "delayed": 1, "running": 0}


async def test_live_queue_kinds(make_app: Any, db_url: str) -> None:
    """Queue wake-ups reach pages by queue name: everything-pages see them under "queues", a
    page following a queue sees its queue's, and a workflow whose id equals a queue's name does
    not."""
    async with queued(make_app) as (app, flows):
        dash = dashboard(app)
        everything = LiveCall(dash)
        follows = LiveCall(dash, b"id=work-0&queue=work")
        same_id = LiveCall(dash, b"id=work")
        for call in (everything, follows, same_id):
            assert await call.event() == ("ready", {})
        await flows["work"].enqueue(flows["double"], 5, workflow_id="work-new")
        assert await everything.event() == ("change", {"ids": {}, "all": False,
                                                       "queues": {"work": "q"}})
        assert await follows.event() == ("change", {"ids": {}, "all": False,
                                                     "queues": {"work": "q"}})
        async with asyncflow.Client(db_url) as client:  # another process: a NOTIFY
            await client.cancel_workflow("work-0")
        seen: dict[str, set[str]] = {"ids": set(), "queues": set()}
        while seen != {"ids": {"work-0:t"}, "queues": {"work:f"}}:
            event, data = await follows.event()
            assert event == "change"
            for group in ("ids", "queues"):
                seen[group] |= {f"{k}:{v}" for k, kinds in data.get(group, {}).items()
                                for v in kinds}
        # The workflow named like the queue heard nothing of the queue; its own change arrives.
        app._waits.wake("m", "work")
        assert await same_id.event() == ("change", {"ids": {"work": "m"}, "all": False})
        dash.close()
        for call in (everything, follows, same_id):
            await call.close()
        assert dash._hub._remove is None and not dash._hub._by_queue


async def test_served_alone_lifespan(make_app: Any) -> None:
    """Served directly by an ASGI server, the dashboard answers the lifespan protocol, and its
    shutdown ends the open live connections (the server would otherwise wait for them)."""
    async with running(make_app) as (app, _flows):
        dash = dashboard(app)
        live = LiveCall(dash)
        assert await live.event() == ("ready", {})
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        task = asyncio.create_task(dash({"type": "lifespan"}, inbox.get, outbox.put))
        await inbox.put({"type": "lifespan.startup"})
        assert (await outbox.get())["type"] == "lifespan.startup.complete"
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task
        async with asyncio.timeout(30):
            await live.task  # ended by the shutdown, not by the client


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_cli_dashboard(make_app: Any, db_url: str) -> None:
    app = make_app()
    flows = define(app)
    async with app:
        await app.start_workflow(flows["waiter"], workflow_id="cli-<1>")
        env = python_env()
        env.pop("ASYNCFLOW_DATABASE_URL", None)
        for allow_actions in (False, True):
            args = ["--port", "0", "--database-url", db_url]
            if allow_actions:
                args.append("--allow-actions")
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "asyncflow", "dashboard", *args, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            try:
                assert process.stdout is not None
                async with asyncio.timeout(60):
                    line = (await process.stdout.readline()).decode()
                found = re.search(r"(http://\S+/)", line)
                assert found, line
                if not allow_actions:  # says every action it leaves out
                    assert "cancel, resume, send and fork" in line, line
                url = found.group(1)
                async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                    page = await http.get("/")
                    assert page.status_code == 200 and "cli-&lt;1&gt;" in page.text
                    page = await http.get("/workflow", params={"id": "cli-<1>"})
                    assert ('data-action="cancel"' in page.text) is allow_actions
                    response = await http.post("/action/send", data={
                        "id": "cli-<1>", "csrf": http.cookies["asyncflow_csrf"], "topic": "go",
                        "message": '"from the cli dashboard"'})
                    assert response.status_code == (303 if allow_actions else 403)
                    if not allow_actions:  # the refusal and the page say how to act
                        assert "restart with `--allow-actions`" in response.text
                        assert ("restart with <code>--allow-actions</code>" in page.text)
            finally:
                process.send_signal(signal.SIGINT)
                async with asyncio.timeout(60):
                    _out, err = await process.communicate()
            assert b"Traceback" not in err, err.decode()
        result = await (await app.retrieve_workflow("cli-<1>")).get_result(timeout_seconds=60)
        assert result == "from the cli dashboard"


async def test_cli_dashboard_refuses_foreign_host_names(make_app: Any, db_url: str) -> None:
    """Issue 20, item 6 (DNS rebinding). A page on evil.example whose name is made to resolve to
    127.0.0.1 reaches a loopback dashboard with ``Host: evil.example:PORT`` (and a matching
    Origin): the dashboard bound to loopback refuses every Host but its own address and port
    (and the names given with --allow-host), so such a page reads nothing and acts on nothing."""
    app = make_app()
    flows = define(app)
    async with app:
        await app.start_workflow(flows["waiter"], workflow_id="secret-input")
        env = python_env()
        env.pop("ASYNCFLOW_DATABASE_URL", None)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "asyncflow", "dashboard", "--port", "0", "--allow-actions",
            "--allow-host", "dash.example", "--database-url", db_url, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            async with asyncio.timeout(60):
                line = (await process.stdout.readline()).decode()
            found = re.search(r"(http://\S+/)", line)
            assert found, line
            url = found.group(1)
            port = url.rstrip("/").rsplit(":", 1)[1]
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                for own in (f"127.0.0.1:{port}", f"localhost:{port}", "dash.example",
                            f"DASH.example:{port}"):
                    page = await http.get("/", headers={"host": own})
                    assert page.status_code == 200 and "secret-input" in page.text, own
                token = http.cookies["asyncflow_csrf"]
                for foreign in (f"evil.example:{port}", "evil.example", f"127.0.0.2:{port}",
                                f"localhost.evil.example:{port}", f"127.0.0.1:{port}.evil"):
                    page = await http.get("/", headers={"host": foreign})
                    assert page.status_code == 400, foreign
                    assert "secret-input" not in page.text
                    page = await http.get("/workflow", params={"id": "secret-input"},
                                          headers={"host": foreign})
                    assert page.status_code == 400 and "waiter" not in page.text
                    response = await http.post(
                        "/action/cancel", data={"id": "secret-input", "csrf": token},
                        headers={"host": foreign, "origin": f"http://{foreign}",
                                 "x-forwarded-host": foreign})
                    assert response.status_code == 400, foreign
                # A forwarded host naming a foreign site is refused as well.
                page = await http.get("/", headers={"host": f"127.0.0.1:{port}",
                                                    "x-forwarded-host": "evil.example"})
                assert page.status_code == 400
        finally:
            process.send_signal(signal.SIGINT)
            async with asyncio.timeout(60):
                _out, err = await process.communicate()
        assert b"Traceback" not in err, err.decode()
        assert (await app.get_workflow_status("secret-input")).status == "PENDING"


async def test_a_mounted_dashboard_checks_the_host_against_its_allow_list(
        make_app: Any) -> None:
    async with running(make_app) as (app, flows):
        await app.start_workflow(flows["waiter"], workflow_id="w")
        board = dashboard(app, allowed_hosts=["dash.test", "other.test:8443"])
        async with client_for(board) as http:
            assert (await http.get("/")).status_code == 200  # Host: dash.test
            page = await http.get("/", headers={"host": "other.test:8443"})
            assert page.status_code == 200
            for foreign in ("evil.test", "other.test:8444", "other.test"):
                page = await http.get("/", headers={"host": foreign})
                assert page.status_code == 400 and "w" not in row_ids(page.text), foreign
        for bad in ("", "a b", 7, "http://x.test/"):
            with pytest.raises(asyncflow.InvalidSettingError):
                dashboard(app, allowed_hosts=[bad])
        with pytest.raises(asyncflow.InvalidSettingError):
            dashboard(app, allowed_hosts="dash.test")


async def test_cli_dashboard_bad_usage(db_url: str) -> None:
    env = python_env()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asyncflow", "dashboard", "--port", "70000",
        "--database-url", db_url, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _out, err = await process.communicate()
    assert process.returncode == 2 and b"not a port number" in err


# -- a real browser -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="no Chromium binary (install the Debian "
                    "package `chromium`, or set ASYNCFLOW_TEST_CHROMIUM)")
async def test_in_a_real_browser(db_url: str, procs: Any) -> None:
    """Open the list, follow a running workflow, see a stream value appear and a step complete
    live, cancel it with the button; screenshots go to tests/artifacts/."""
    binary = find_chromium()
    assert binary is not None
    server = await procs("dashboard_server.py", db_url)
    url = (await server.expect("READY")).split()[1]
    async with asyncflow.Client(db_url) as client, chromium(binary) as browser:
        page = await browser.new_page()

        # The list, live: a workflow finishing elsewhere changes its row without a reload.
        await page.goto(url)
        await page.wait_for("document.body.dataset.liveState === 'on'")
        await page.wait_for("document.querySelector('tr[data-workflow-id=\"job-1\"]')")
        await page.wait_for(
            "document.querySelector('tr[data-workflow-id=\"quick-1\"] .badge')"
            ".dataset.status === 'PENDING'")
        await page.screenshot(ARTIFACTS / "dashboard-1-list.png")
        await client.send("quick-1", "done quickly", topic="go")
        await page.wait_for(
            "document.querySelector('tr[data-workflow-id=\"quick-1\"] .badge')"
            ".dataset.status === 'SUCCESS'")
        await page.screenshot(ARTIFACTS / "dashboard-2-list-updated.png")

        # Follow the running workflow.
        await page.click('a[data-workflow-id="job-1"]', navigates=True)
        assert await page.evaluate("location.href") == f"{url}workflow?id=job-1"
        await page.wait_for("document.body.dataset.liveState === 'on'")
        await page.wait_for("document.querySelector('.stream[data-stream-key=\"progress\"]')"
                            ".textContent.includes('waiting for go')")
        await page.wait_for("document.querySelector('tr.op-recv[data-state=\"waiting\"]')")

        # Messages from elsewhere, with the page open (no reload from here on: the refresh
        # counter moves, the location stays). First one the workflow takes later: shown pending.
        # Each change to job-1 now causes exactly one refresh, started after the change.
        refreshes = "Number(document.body.dataset.refreshes || 0)"
        await page.wait_for(f"{refreshes} >= 1")  # the one every (re)connection makes
        await client.send("job-1", "for later", topic="extra")
        await page.wait_for(f"{refreshes} >= 2")
        assert "for later" in await page.evaluate(
            "document.querySelector('[data-part=\"messages\"]').textContent")
        # Then "go": the recv takes it and the step starts, but cannot end before the gate opens.
        await client.send("job-1", "abc", topic="go")
        await page.wait_for(f"{refreshes} >= 3")
        step_done = ("[...document.querySelectorAll('tr.op-step')].some(tr =>"
                     " tr.dataset.state === 'done' && tr.textContent.includes('crunch'))")
        assert not await page.evaluate(step_done)
        await page.screenshot(ARTIFACTS / "dashboard-3-workflow-waiting.png")

        # Open the gate: the step completes, the workflow takes "for later" (silently: no
        # notification) and writes the step's result to the stream. The page shows all of it.
        await client.send("gate-1", True, topic="open")
        await page.wait_for("[...document.querySelectorAll('.stream[data-stream-key=\"progress\"]"
                            " li')].some(li => li.textContent.includes('crunched abc'))")
        await page.wait_for(step_done)
        await page.wait_for("document.querySelector('[data-part=\"messages\"]')"
                            ".textContent.includes('No messages waiting')")
        await page.wait_for("document.querySelectorAll('tr.op-recv').length === 3 && "
                            "document.querySelector('tr.op-recv:last-child')"
                            ".dataset.state === 'waiting'")
        assert await page.evaluate("location.href") == f"{url}workflow?id=job-1"
        await page.screenshot(ARTIFACTS / "dashboard-4-workflow-live.png")

        # Cancel with the button, confirmed: the page comes back with the new status.
        await page.click('button[data-action="cancel"]', navigates=True)
        assert (await client.get_workflow_status("job-1")).status == "PENDING"  # asks first
        await page.click('button[data-confirm="cancel"]', navigates=True)
        await page.wait_for("document.querySelector('[data-part=\"summary\"] .badge')"
                            ".dataset.status === 'CANCELLED'")
        assert await page.evaluate(
            "document.querySelector('[data-notice]').dataset.notice") == "cancelled"
        await page.wait_for("document.body.dataset.liveState === 'on'")
        await page.screenshot(ARTIFACTS / "dashboard-5-cancelled.png")
        assert (await client.get_workflow_status("job-1")).status == "CANCELLED"

        # The queues page, live: a workflow enqueued elsewhere (on a queue nobody serves)
        # appears in its queue's row without a reload (the NOTIFY of kind "q").
        await page.goto(f"{url}queues")
        await page.wait_for("document.body.dataset.liveState === 'on'")
        await client.enqueue("browser-q", "nobody-runs-this", workflow_id="queued-1")
        await page.wait_for("(document.querySelector('tr[data-queue=\"browser-q\"] "
                            "[data-count=\"enqueued\"]') || {}).textContent === '1'")
        await page.screenshot(ARTIFACTS / "dashboard-6-queues.png")
    for name in ("1-list", "2-list-updated", "3-workflow-waiting", "4-workflow-live",
                 "5-cancelled", "6-queues"):
        shot = ARTIFACTS / f"dashboard-{name}.png"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
