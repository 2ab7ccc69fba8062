"""The dashboard as a debugger, over HTTP against the ASGI app: timeline rows with their keys,
topics and values, the last activity that moves with each operation, long journals paged, the
waterfall, the workflow's queue state, the schedules page and its actions, the cancel
confirmation, actions hidden where they cannot act, and the Send form's bad JSON coming back.
(The same in a real browser: tests/web/test_dashboard_browser.py.)"""

from __future__ import annotations

import asyncio
import html
import json
import re
from datetime import datetime
from typing import Any

import pytest
from dashlib import BASE, allow, client_for, csrf_of

import asyncflow
from asyncflow._dashboard import dashboard
from asyncflow._dashboard._journal_data import JOURNAL_PAGE

EVIL = "<script>alert(1)</script>&\"'"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;"
IN_JSON = html.escape(json.dumps(EVIL)[1:-1])  # inside a JSON string, escaped


def rows(page: str) -> dict[int, str]:
    """The timeline's rows by operation number: their HTML."""
    found = re.findall(r'(<tr class="op [^"]*" data-function-id="(\d+)".*?</tr>)', page, re.S)
    return {int(number): row for row, number in found}


def times(fragment: str) -> list[datetime]:
    return [datetime.fromisoformat(html.unescape(t))
            for t in re.findall(r'<time datetime="([^"]+)"', fragment)]


def define(app: asyncflow.AsyncFlow) -> dict[str, Any]:
    @app.step(name="shout")
    async def shout(text: str) -> str:
        return text.upper()

    @app.workflow(name="talker")
    async def talker(peer: str) -> Any:
        await asyncflow.set_event(EVIL, {"html": EVIL})
        await asyncflow.write_stream(EVIL, "x" * 300 + EVIL)
        await asyncflow.close_stream(EVIL)
        await asyncflow.send(peer, {"note": EVIL}, topic=EVIL)
        got = await asyncflow.recv("go", timeout_seconds=3600)
        return await shout(got)

    @app.workflow(name="listener")
    async def listener() -> Any:
        return await asyncflow.recv(EVIL, timeout_seconds=3600)

    @app.workflow(name="stepper")
    async def stepper() -> None:
        await asyncflow.recv("first", timeout_seconds=3600)
        await shout("one")
        await asyncflow.set_event("stepped", True)
        await asyncflow.recv("never", timeout_seconds=3600)

    @app.workflow(name="long")
    async def long(count: int) -> int:
        for i in range(count):
            await asyncflow.set_event("i", i)
        return count

    return {"talker": talker, "listener": listener, "stepper": stepper, "long": long}


async def test_timeline_rows_show_keys_topics_and_values(make_app: Any) -> None:
    app = make_app()
    flows = define(app)
    async with app:
        peer = await app.start_workflow(flows["listener"], workflow_id="peer-1")
        talker = await app.start_workflow(flows["talker"], "peer-1", workflow_id="talk-1")
        assert await peer.get_result(timeout_seconds=60) == {"note": EVIL}
        await app.send("talk-1", "go on", topic="go")
        assert await talker.get_result(timeout_seconds=60) == "GO ON"
        async with client_for(dashboard(app, auth=allow)) as http:
            page = (await http.get("/workflow", params={"id": "talk-1"})).text
        assert "<script>alert" not in page
        found = rows(page)
        assert [re.search(r'class="op op-(\w+)', found[n]).group(1)  # type: ignore[union-attr]
                for n in sorted(found)] == ["set_event", "write_stream", "close_stream", "send",
                                            "recv", "step"]
        # set_event: its key and value (escaped, in one line).
        assert f'key <code class="key">{ESCAPED}</code>' in found[0]
        assert "&quot;html&quot;" in found[0] and IN_JSON in found[0]
        # A stream write: its key, and its long value cut with an expander that holds it all.
        assert f'stream <code class="key">{ESCAPED}</code>' in found[1]
        expander = re.search(r'<details class="expander" data-expander="op-1">(.*?)</details>',
                             found[1], re.S)
        assert expander is not None
        summary = re.search(r"<summary>(.*?)</summary>", expander.group(1), re.S)
        assert summary is not None and "…" in summary.group(1) and ESCAPED not in summary.group(1)
        assert "x" * 300 + IN_JSON in expander.group(1)
        # Its close, with the key; the send: destination (a link), topic and message.
        assert f'stream <code class="key">{ESCAPED}</code>' in found[2] and "closed" in found[2]
        assert 'href="/workflow?id=peer-1"' in found[3]
        assert f'topic <code class="key">{ESCAPED}</code>' in found[3]
        assert "&quot;note&quot;" in found[3]
        # The recv: its topic and the message it received; the step: its result.
        assert "received" in found[4] and "&quot;go on&quot;" in found[4]
        assert 'topic <code class="key">go</code>' in found[4]
        assert "&quot;GO ON&quot;" in found[5]


async def test_last_activity_moves_with_the_journal(make_app: Any) -> None:
    app = make_app()
    flows = define(app)
    async with app:
        handle = await app.start_workflow(flows["stepper"], workflow_id="step-1")
        status = await app.get_workflow_status("step-1")
        async with client_for(dashboard(app)) as http:
            await app.send("step-1", 1, topic="first")
            assert await app.get_event("step-1", "stepped", timeout_seconds=60) is True
            await app._waits.wait_for_count(1)  # parked in recv("never"): its entry written
            steps = await app.list_workflow_steps("step-1")
            latest = max(step.created_at for step in steps)
            assert latest > status.updated_at  # the row itself did not move
            assert (await app.get_workflow_status("step-1")).updated_at == status.updated_at

            listed = (await http.get("/")).text
            cell = re.search(r'<tr data-workflow-id="step-1">.*?<td data-activity>(.*?)</td>',
                             listed, re.S)
            assert cell is not None and times(cell.group(1)) == [latest]
            page = (await http.get("/workflow", params={"id": "step-1"})).text
            fact = re.search(r"Last activity</span></dt><dd>(.*?)</dd>", page, re.S)
            assert fact is not None and times(fact.group(1)) == [latest]
        await app.cancel_workflow(handle.workflow_id)


async def test_long_journals_are_paged(make_app: Any) -> None:
    app = make_app()
    flows = define(app)
    count = JOURNAL_PAGE * 2 + 30
    async with app:
        handle = await app.start_workflow(flows["long"], count, workflow_id="long-1")
        assert await handle.get_result(timeout_seconds=120) == count
        async with client_for(dashboard(app)) as http:
            page = (await http.get("/workflow", params={"id": "long-1"})).text
            assert sorted(rows(page)) == list(range(count - JOURNAL_PAGE, count))
            assert f"operations {count - JOURNAL_PAGE} to {count - 1} of 0 to {count - 1}" in page
            earlier = re.search(r'<a href="([^"]+)" data-pager="earlier">', page)
            assert earlier is not None and 'data-pager="later"' not in page
            url = html.unescape(earlier.group(1))
            assert url == f"/workflow?id=long-1&ops={count - 2 * JOURNAL_PAGE}"
            older = (await http.get(url)).text
            assert sorted(rows(older)) == list(range(count - 2 * JOURNAL_PAGE,
                                                     count - JOURNAL_PAGE))
            for rel in ("earlier", "later", "latest"):
                assert f'data-pager="{rel}"' in older, rel
            assert 'data-pager="first"' not in older  # "earlier" is the first page
            # The live part of a page of the timeline is that page.
            assert (f'data-fragments="/workflow/parts?id=long-1&amp;ops='
                    f'{count - 2 * JOURNAL_PAGE}"') in older
            first = (await http.get("/workflow/parts",
                                    params={"id": "long-1", "ops": "0", "parts": "timeline"})).text
            assert sorted(rows(first)) == list(range(JOURNAL_PAGE))
            assert 'data-pager="earlier"' not in first
            # Each row's value is read in one line: the event's key and its value.
            assert ('key <code class="key">i</code></span> '
                    '<code class="value-inline">0</code>') in first
            bad = await http.get("/workflow", params={"id": "long-1", "ops": "x"})
            assert bad.status_code == 400


async def test_waterfall(make_app: Any) -> None:
    app = make_app()

    @app.step(name="slow")
    async def slow() -> int:
        await asyncflow.get_event("gate-w", "open", timeout_seconds=60)  # the test opens it
        return 1

    @app.workflow(name="flow")
    async def flow() -> int:
        await asyncflow.sleep(0.2)
        return await slow()

    @app.workflow(name="gate")
    async def gate() -> None:
        await asyncflow.set_event("open", await asyncflow.recv("open", timeout_seconds=60))

    async with app:
        await app.start_workflow(gate, workflow_id="gate-w")
        handle = await app.start_workflow(flow, workflow_id="wf-1")
        async with client_for(dashboard(app)) as http:
            page = (await http.get("/workflow", params={"id": "wf-1"})).text
            assert re.findall(r'<li class="wf-row" data-function-id="(\d+)" '
                              r'data-state="(\w+)">', page) in ([], [("0", "sleeping")],
                                                               [("0", "done")])
            await app.send("gate-w", True, topic="open")
            assert await handle.get_result(timeout_seconds=60) == 1
            page = (await http.get("/workflow", params={"id": "wf-1"})).text
        bars = re.findall(r'<rect class="wf-bar k-(\w+) s-(\w+)" x="([\d.]+)" y="1" '
                          r'width="([\d.]+)"', page)
        assert [(kind, state) for kind, state, _x, _w in bars] == [("sleep", "done"),
                                                                    ("step", "done")]
        (_k, _s, sleep_x, sleep_w), (_k2, _s2, step_x, step_w) = bars
        assert float(sleep_x) == 0.0 and float(sleep_w) > 3
        # The step began when the sleep ended: its bar starts where the sleep's ends.
        assert float(step_x) == pytest.approx(float(sleep_x) + float(sleep_w), abs=1.0)
        assert float(step_w) > 3 and float(step_x) + float(step_w) <= 1000.0
        assert "<title>#1 step slow (done)</title>" in page


async def test_the_workflow_page_shows_its_queue_state_and_app_version(
    make_app: Any, db_url: str
) -> None:
    app = make_app()

    @app.workflow(name="hold")
    async def hold() -> Any:
        return await asyncflow.recv("go", timeout_seconds=3600)

    async with app:
        async with asyncflow.Client(db_url) as client:  # a queue nobody serves: it waits
            await client.enqueue("nobody-q", "hold", workflow_id="q-1")
            await client.enqueue("nobody-q", "hold", workflow_id="q-2")
        async with client_for(dashboard(app, auth=allow)) as http:
            page = (await http.get("/workflow", params={"id": "q-2"})).text
            state = re.search(r'<dt>Queue state</dt><dd>(.*?)</dd>', page, re.S)
            assert state is not None
            assert re.findall(r'data-count="(\w+)">(\d+)', state.group(1)) == [
                ("enqueued", "2"), ("delayed", "0"), ("running", "0")]
            assert "<dt>App version</dt><dd>" in page
            # Queued, not started: no history to fork; a message can still reach it.
            assert 'data-action="fork"' not in page and 'data-action="send"' in page
        await app.cancel_workflow("q-1")
        await app.cancel_workflow("q-2")


async def test_actions_confirm_hide_and_keep_bad_input(make_app: Any) -> None:
    app = make_app()
    flows = define(app)
    async with app:
        waiting = await app.start_workflow(flows["listener"], workflow_id="act-1")
        async with client_for(dashboard(app, auth=allow)) as http:
            page = (await http.get("/workflow", params={"id": "act-1"})).text
            # Cancel asks first: its button opens the confirmation page, which posts.
            button = re.search(r'<form class="inline" method="get" action="/confirm">'
                               r'(.*?)</form>', page, re.S)
            assert button is not None and 'data-action="cancel"' in button.group(1)
            confirm = await http.get("/confirm", params={"action": "cancel", "id": "act-1"})
            assert confirm.status_code == 200
            assert "Cancel this workflow?" in confirm.text
            assert 'action="/action/cancel"' in confirm.text
            assert 'href="/workflow?id=act-1" data-confirm="no"' in confirm.text
            assert (await app.get_workflow_status("act-1")).status == "PENDING"
            assert (await http.get("/confirm", params={"action": "resume", "id": "act-1"})
                    ).status_code == 404  # resume does not ask

            # Bad JSON in the Send form: the page again, the text kept, the error by the form.
            token = csrf_of(page)
            typed = '{"approved": tru <b>'
            response = await http.post("/action/send", data={
                "id": "act-1", "csrf": token, "topic": EVIL, "message": typed})
            assert response.status_code == 400
            form = re.search(r'<form class="action-form" method="post" data-action="send".*?'
                             r"</form>", response.text, re.S)
            assert form is not None
            assert "not valid JSON" in form.group(0) and 'role="alert"' in form.group(0)
            assert "<textarea name=\"message\"" in form.group(0)
            assert ">{&quot;approved&quot;: tru &lt;b&gt;</textarea>" in form.group(0)
            assert f'name="topic" placeholder="none" value="{ESCAPED}"' in form.group(0)
            assert "<b>" not in form.group(0)

            # Sent properly: it goes; the workflow ends; Send and Cancel are gone, Fork stays.
            response = await http.post("/action/send", data={
                "id": "act-1", "csrf": token, "topic": EVIL, "message": '"fine"'})
            assert response.status_code == 303
            assert await waiting.get_result(timeout_seconds=60) == "fine"
            page = (await http.get("/workflow", params={"id": "act-1"})).text
            assert 'data-action="send"' not in page and 'data-action="cancel"' not in page
            assert 'data-action="fork"' in page
            confirm = await http.get("/confirm", params={"action": "cancel", "id": "act-1"})
            assert "Nothing to do" in confirm.text
        async with client_for(dashboard(app)) as http:  # no auth: no confirmation page either
            assert (await http.get("/confirm", params={"action": "cancel", "id": "act-1"})
                    ).status_code == 403


async def test_schedules_page_and_actions(make_app: Any) -> None:
    app = make_app()
    name = "nightly" + EVIL

    @app.scheduled("0 3 * * *", name=name, timezone="Europe/Paris")
    @app.workflow(name="report")
    async def report(at: str) -> str:
        return at

    async with app:
        async with client_for(dashboard(app)) as http:  # read-only: no buttons
            page = (await http.get("/schedules")).text
            assert "<script>alert" not in page
            assert f'<tr data-schedule="nightly{ESCAPED}" data-state="active">' in page
            assert "data-schedule-action" not in page and "Actions are disabled" in page
            row = re.search(r"<tr data-schedule=.*?</tr>", page, re.S)
            assert row is not None and 'class="wid"' not in row.group(0)  # no tick ran yet
            assert 'data-live="/live"' in page and 'data-fragments="/schedules/parts"' in page
            nxt = re.search(r"<td data-next>(.*?)</td>", page, re.S)
            assert nxt is not None
            (tick,) = times(nxt.group(1))
            assert tick > datetime.now(tick.tzinfo) and tick.minute == 0
            assert tick.hour in (1, 2)  # 03:00 in Paris is 01:00 or 02:00 UTC
            response = await http.post("/schedule-action/pause", data={
                "schedule": name, "csrf": http.cookies["asyncflow_csrf"]})
            assert response.status_code == 403
        async with client_for(dashboard(app, auth=allow)) as http:
            page = (await http.get("/schedules")).text
            token = csrf_of(page)
            assert 'data-schedule-action="pause"' in page
            assert 'data-schedule-action="trigger"' in page
            form = {"schedule": name, "csrf": token}
            for bad in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}):
                response = await http.post("/schedule-action/pause", data=form, headers=bad)
                assert response.status_code == 403
            bad_token = await http.post("/schedule-action/pause", data={**form, "csrf": "y" * 43})
            assert bad_token.status_code == 403
            assert not (await app.list_schedules())[0].paused

            response = await http.post("/schedule-action/pause", data=form,
                                       headers={"origin": BASE})
            assert response.status_code == 303
            assert (await app.list_schedules())[0].paused
            page = (await http.get(response.headers["location"])).text
            assert 'data-notice="paused"' in page and f"<code>nightly{ESCAPED}</code>" in page
            assert f'<tr data-schedule="nightly{ESCAPED}" data-state="paused">' in page
            assert 'data-schedule-action="resume"' in page
            assert "<td data-next><span class=\"muted\">paused</span>" in page

            response = await http.post("/schedule-action/resume", data=form)
            assert response.headers["location"].startswith("/schedules?notice=resumed")
            assert not (await app.list_schedules())[0].paused

            response = await http.post("/schedule-action/trigger", data=form)
            location = response.headers["location"]
            assert location.startswith("/schedules?notice=triggered")
            page = (await http.get(location)).text
            run = re.search(r'data-notice="triggered">.*?<a class="wid" href="[^"]+" '
                            r'data-workflow-id="([^"]+)"', page, re.S)
            assert run is not None
            assert html.unescape(run.group(1)).startswith(name + "@manual-")

            missing = await http.post("/schedule-action/pause", data={**form, "schedule": "no"})
            assert missing.status_code == 404
            assert (await http.post("/schedule-action/explode", data=form)).status_code == 404


async def test_every_new_value_is_escaped(make_app: Any, db_url: str) -> None:
    """Step and workflow names in the timeline, the waterfall and the confirmation page, and a
    queue's name in a workflow's queue state, are escaped like every other value."""
    app = make_app()

    @app.step(name="step" + EVIL)
    async def step() -> str:
        return EVIL

    @app.workflow(name="flow" + EVIL)
    async def flow() -> Any:
        await step()
        return await asyncflow.recv(EVIL, timeout_seconds=3600)

    async with app:
        await app.start_workflow(flow, workflow_id="esc-1")
        async with asyncflow.Client(db_url) as client:
            await client.enqueue("q" + EVIL, "flow" + EVIL, workflow_id="esc-2")
        async with client_for(dashboard(app, auth=allow)) as http:
            await app._waits.wait_for_count(1)  # esc-1 parked in its recv: its step recorded
            pages = [(await http.get("/workflow", params={"id": "esc-1"})).text,
                     (await http.get("/workflow", params={"id": "esc-2"})).text,
                     (await http.get("/confirm", params={"action": "cancel", "id": "esc-1"})
                      ).text]
            for page in pages:
                assert "<script>alert" not in page
            timeline, queued, confirm = pages
            assert f'<span class="opname">step{ESCAPED}</span>' in timeline
            assert f"<title>#0 step step{ESCAPED} (done)</title>" in timeline
            assert f"&quot;{IN_JSON}&quot;" in timeline  # the step's result
            assert f'data-queue-state="q{ESCAPED}"' in queued
            assert f"(flow{ESCAPED})" in confirm
        await app.cancel_workflow("esc-1")
        await app.cancel_workflow("esc-2")


def test_the_routes_table_lists_every_route() -> None:
    """docs/dashboard.md's routes table names every page, action and asset the app serves."""
    from conftest import ROOT

    from asyncflow._dashboard._actions import ACTIONS
    from asyncflow._dashboard._app import Dashboard
    from asyncflow._dashboard._schedule_pages import SCHEDULE_ACTIONS
    from asyncflow._dashboard._static import STATIC_FILES

    text = (ROOT / "docs" / "dashboard.md").read_text()
    table = text[text.index("## Routes"):]
    documented = set(re.findall(r"`(/[^`?\[]*)", table))
    served = {*Dashboard._ROUTES, *(f"/action/{name}" for name in ACTIONS),
              *(f"/schedule-action/{name}" for name in SCHEDULE_ACTIONS),
              *(f"/static/{name}" for name in STATIC_FILES)}
    assert served - documented == set()


async def test_entries_recorded_before_they_described_themselves(make_app: Any, conn: Any
                                                                 ) -> None:
    """Journals written before sends, events and stream writes recorded what they did (output
    NULL) still show: the rows, without keys or values."""
    app = make_app()
    flows = define(app)
    async with app:
        peer = await app.start_workflow(flows["listener"], workflow_id="peer-1")
        talker = await app.start_workflow(flows["talker"], "peer-1", workflow_id="talk-1")
        await peer.get_result(timeout_seconds=60)
        await app.send("talk-1", "go on", topic="go")
        await talker.get_result(timeout_seconds=60)
        await conn.execute(
            "UPDATE asyncflow.operations SET output = NULL WHERE workflow_id = 'talk-1' AND name "
            "IN ('asyncflow.set_event', 'asyncflow.send', 'asyncflow.write_stream', "
            "'asyncflow.close_stream')")
        async with client_for(dashboard(app)) as http:
            response = await http.get("/workflow", params={"id": "talk-1"})
        assert response.status_code == 200
        found = rows(response.text)
        assert sorted(found) == [0, 1, 2, 3, 4, 5]
        for number in (0, 1, 3):
            assert 'class="key"' not in found[number] and "value-inline" not in found[number]
        assert "closed" in found[2] and "&quot;GO ON&quot;" in found[5]


async def test_group_committed_stream_writes_record_their_key(make_app: Any, conn: Any) -> None:
    """Stream writes of several workflows written in one group-commit statement record their
    key like a write on its own, and show it."""
    app = make_app()
    flows = define(app)
    async with app:
        for workflow_id in ("gc-1", "gc-2"):
            await app.start_workflow(flows["listener"], workflow_id=workflow_id)
        await app._waits.wait_for_count(2)  # both parked in their recv
        epochs = [await conn.fetchval("SELECT epoch FROM asyncflow.workflows WHERE workflow_id "
                                      "= $1", w) for w in ("gc-1", "gc-2")]
        store = app.runtime.store
        written = await store._write_many([  # what the batcher runs for concurrent writes
            (w, 100, "asyncflow.write_stream", f"key-{w}<", f'"entry of {w}"', "{}", epoch)
            for w, epoch in zip(("gc-1", "gc-2"), epochs, strict=True)])
        assert [result[:2] for result in written] == [(True, 0), (True, 0)]  # type: ignore[index]
        async with client_for(dashboard(app)) as http:
            for w in ("gc-1", "gc-2"):
                page = (await http.get("/workflow", params={"id": w})).text
                row = rows(page)[100]
                assert f'stream <code class="key">key-{w}&lt;</code>' in row
                assert f"&quot;entry of {w}&quot;" in row
        for w in ("gc-1", "gc-2"):
            await app.cancel_workflow(w)


async def test_schedules_page_backfills_and_deletes_runtime_schedules(make_app: Any) -> None:
    """Issue 26: a schedule made with create_schedule can be backfilled and deleted from the
    page (delete only with its confirmation box); an @app.scheduled one is never deletable."""
    app = make_app()
    ran = asyncio.Event()

    @app.scheduled("0 3 * * *", name="decorated")
    @app.workflow(name="report")
    async def report(at: str) -> str:
        ran.set()
        return at

    async with app:
        await app.create_schedule("rt" + EVIL, report, "0 * * * *")
        async with client_for(dashboard(app, auth=allow)) as http:
            page = (await http.get("/schedules")).text
            token = csrf_of(page)
            rows = {m.group(1): m.group(0) for m in re.finditer(
                r'<tr data-schedule="([^"]*)".*?</tr>', page, re.S)}
            assert 'data-schedule-action="delete"' not in rows["decorated"]
            assert 'data-schedule-action="backfill"' in rows["decorated"]
            assert 'data-schedule-action="delete"' in rows[f"rt{ESCAPED}"]
            assert "(created at runtime)" in rows[f"rt{ESCAPED}"]
            form = {"schedule": "rt" + EVIL, "csrf": token}
            response = await http.post("/schedule-action/backfill", data={
                **form, "start": "2026-01-01T00:00", "end": "2026-01-01T02:00"})
            assert response.status_code == 303
            page = (await http.get(response.headers["location"])).text
            assert 'data-notice="backfilled"' in page
            await asyncio.wait_for(ran.wait(), 30)
            first = await app.retrieve_workflow(f"rt{EVIL}@2026-01-01T00:00:00+00:00")
            assert await first.get_result(timeout_seconds=30) == "2026-01-01T00:00:00+00:00"
            bad = await http.post("/schedule-action/backfill", data={
                **form, "start": "2026-01-02T00:00", "end": "2026-01-01T00:00"})
            assert bad.status_code == 400 and "before start" in html.unescape(bad.text)
            unconfirmed = await http.post("/schedule-action/delete", data=form)
            assert unconfirmed.status_code == 400
            assert len(await app.list_schedules()) == 2
            refused = await http.post("/schedule-action/delete", data={
                "schedule": "decorated", "csrf": token, "confirm": "yes"})
            assert refused.status_code == 400 and "@app.scheduled" in refused.text
            response = await http.post("/schedule-action/delete",
                                       data={**form, "confirm": "yes"})
            assert response.status_code == 303
            assert [s.name for s in await app.list_schedules()] == ["decorated"]
