"""The dashboard's debugging pages in a real headless Chromium (as tests/web/test_dashboard.py's
browser test): timeline rows with keys, topics and values and their expanders, the waterfall,
the last activity moving live, a long journal paged, bad JSON kept in the Send form, Cancel
confirmed, Send hidden on an ended workflow, the schedules page's pause, resume and trigger, and
a read-only `asyncflow dashboard` saying how to enable actions. Screenshots go to
tests/artifacts/."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from typing import Any

import pytest
from cdp import chromium, find_chromium
from conftest import python_env
from dashlib import ARTIFACTS

import asyncflow

EVIL = "<script>alert(1)</script>&\"'"

pytestmark = [
    pytest.mark.skipif(find_chromium() is None, reason="no Chromium binary (install the Debian "
                       "package `chromium`, or set ASYNCFLOW_TEST_CHROMIUM)"),
]


def js(value: str) -> str:
    return json.dumps(value)


ROW = "document.querySelector('tr.op[data-function-id=\"%d\"]')"


async def test_debugging_in_a_real_browser(db_url: str, procs: Any) -> None:
    binary = find_chromium()
    assert binary is not None
    server = await procs("dashboard_debug_server.py", db_url)
    url = (await server.expect("READY")).split()[1]
    async with asyncflow.Client(db_url) as client, chromium(binary) as browser:
        page = await browser.new_page()
        await page.goto(f"{url}workflow?id=talk-1")
        await page.wait_for("document.body.dataset.liveState === 'on'")
        await page.wait_for("document.querySelector('tr.op-recv[data-state=\"waiting\"]')")
        # Nothing the workflow wrote became markup: the only script is the dashboard's.
        assert await page.evaluate("document.scripts.length") == 1

        # Each row: its key, topic and value, as text.
        event_row = await page.evaluate(f"{ROW % 0}.querySelector('.outcome').textContent")
        assert event_row.startswith(f"key {EVIL}")
        assert await page.evaluate(f"{ROW % 3}.querySelector('a.wid').textContent") == "sink-1"
        assert await page.evaluate(
            f"{ROW % 3}.querySelector('code.key').textContent") == EVIL  # the topic
        # A long value is cut in one line; its expander opens it whole.
        details = f"{ROW % 1}.querySelector('details.expander')"
        assert await page.evaluate(f"{details}.open") is False
        assert await page.evaluate(f"{details}.querySelector('pre').checkVisibility()") is False
        await page.click('tr.op[data-function-id="1"] details.expander > summary')
        await page.wait_for(f"{details}.open")
        shown = await page.evaluate(f"{details}.querySelector('pre').innerText")
        assert json.loads(shown) == "x" * 200 + EVIL
        assert await page.evaluate(f"{details}.querySelector('pre').checkVisibility()") is True

        # The waterfall: a bar per operation, drawn with a width.
        assert await page.evaluate("document.querySelectorAll('.wf-row').length") == 5
        widths = await page.evaluate(
            "[...document.querySelectorAll('.wf-bar')].map(r => r.getBoundingClientRect().width)")
        assert len(widths) == 5 and all(w > 0 for w in widths)
        await page.screenshot(ARTIFACTS / "dashboard-debug-1-timeline.png")

        # The last activity moves live as the workflow takes "go" and runs its step; the
        # opened expander stays open through the refresh.
        activity = "document.querySelector('[data-activity] time').getAttribute('datetime')"
        before = await page.evaluate(activity)
        await client.send("talk-1", "go on", topic="go")
        await page.wait_for(f"{activity} !== {js(before)}")
        await page.wait_for("document.querySelector('tr.op-step[data-state=\"done\"]')")
        assert await page.evaluate(f"{details}.open") is True
        # + the step and the recv (the waterfall follows the same live refresh)
        await page.wait_for("document.querySelectorAll('.wf-row').length === 7")

        # Bad JSON in the Send form comes back with the text kept and the error inline.
        typed = '{"approved": tru'
        await page.evaluate(
            "document.querySelector('form[data-action=\"send\"] textarea').value = "
            + js(typed))
        await page.click('form[data-action="send"] button[type="submit"]', navigates=True)
        assert "not valid JSON" in await page.evaluate(
            "document.querySelector('form[data-action=\"send\"] .form-error').textContent")
        assert await page.evaluate(
            "document.querySelector('form[data-action=\"send\"] textarea').value") == typed
        await page.screenshot(ARTIFACTS / "dashboard-debug-2-bad-json.png")

        # Cancel asks first; "yes" cancels. A live refresh that replaces the summary while the
        # button is held down does not swallow the click: the swap waits for it to land.
        await page.goto(f"{url}workflow?id=talk-1")
        await page.wait_for("document.body.dataset.liveState === 'on'")
        refreshes = "Number(document.body.dataset.refreshes || 0)"
        await page.wait_for(f"{refreshes} >= 1")  # the refresh on subscribing
        summary = "document.querySelector('[data-part=\"summary\"]')"
        await page.evaluate(f"window.heldSummary = {summary}")
        count = await page.evaluate(refreshes)
        pressed_at = await page.press('button[data-action="cancel"]')
        await client.send("talk-1", "not now", topic="later")  # changes the summary's duration
        await page.wait_for(f"{refreshes} > {count}")
        assert await page.evaluate(f"window.heldSummary === {summary}") is True
        await page.release(pressed_at, navigates=True)
        assert "Cancel this workflow?" in await page.evaluate("document.body.textContent")
        assert (await client.get_workflow_status("talk-1")).status == "PENDING"
        await page.screenshot(ARTIFACTS / "dashboard-debug-3-confirm.png")
        await page.click('button[data-confirm="cancel"]', navigates=True)
        await page.wait_for("document.querySelector('[data-part=\"summary\"] .badge')"
                            ".dataset.status === 'CANCELLED'")
        assert (await client.get_workflow_status("talk-1")).status == "CANCELLED"

        # An ended workflow: no Send, no Cancel; Fork stays (it has a history).
        await page.goto(f"{url}workflow?id=sink-1")
        assert await page.evaluate(
            "[!!document.querySelector('form[data-action=\"send\"]'),"
            " !!document.querySelector('[data-action=\"cancel\"]'),"
            " !!document.querySelector('form[data-action=\"fork\"]')]") == [False, False, True]

        # A queued workflow: its queue's state and the app version; no history to fork.
        await client.enqueue("nobody-q", "talk", workflow_id="queued-1")
        await page.goto(f"{url}workflow?id=queued-1")
        facts = await page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('dl.facts dt')]"
            ".map(dt => [dt.textContent, dt.nextElementSibling.textContent]))")
        assert facts["App version"] == (await client.get_workflow_status("queued-1")).app_version
        assert facts["Queue state"] == "1 enqueued, 0 delayed, 0 running"
        assert await page.evaluate(
            "[!!document.querySelector('form[data-action=\"send\"]'),"
            " !!document.querySelector('form[data-action=\"fork\"]')]") == [True, False]

        # A long journal is paged: the latest 100, then the page before.
        await page.goto(f"{url}workflow?id=long-1")
        numbers = ("[...document.querySelectorAll('tr.op')]"
                   ".map(tr => Number(tr.dataset.functionId))")
        assert await page.evaluate(numbers) == list(range(30, 130))
        # Its waterfall starts collapsed (100 bars); it opens on a click.
        waterfall = "document.querySelector('details.waterfall')"
        assert await page.evaluate(f"{waterfall}.open") is False
        await page.click("details.waterfall > summary")
        await page.wait_for(f"{waterfall}.open")
        assert await page.evaluate(
            "document.querySelector('.wf-bar').checkVisibility()") is True
        await page.click('a[data-pager="earlier"]', navigates=True)
        assert await page.evaluate(numbers) == list(range(0, 100))
        await page.screenshot(ARTIFACTS / "dashboard-debug-4-paged.png")

        # The schedules page: next tick; pause, resume and trigger with its buttons.
        await page.goto(f"{url}schedules")
        await page.wait_for("document.body.dataset.liveState === 'on'")
        row = "document.querySelector('tr[data-schedule]')"
        assert await page.evaluate(f"{row}.dataset.schedule") == EVIL
        assert await page.evaluate(f"{row}.querySelector('td[data-next] time')") is not None
        await page.click('button[data-schedule-action="pause"]', navigates=True)
        assert await page.evaluate(f"{row}.dataset.state") == "paused"
        assert (await client.list_schedules())[0].paused
        await page.screenshot(ARTIFACTS / "dashboard-debug-5-schedule-paused.png")
        await page.click('button[data-schedule-action="resume"]', navigates=True)
        assert await page.evaluate(f"{row}.dataset.state") == "active"
        await page.click('button[data-schedule-action="trigger"]', navigates=True)
        run = await page.evaluate("document.querySelector('[data-notice=\"triggered\"] a.wid')"
                                  ".dataset.workflowId")
        assert run.startswith(EVIL + "@manual-")
        # The run starts (the pending trigger leaves the row: a live update), and runs.
        await page.wait_for(f"!{row}.textContent.includes('trigger pending')")
        assert (await (await client.retrieve_workflow(run)).get_result(
            timeout_seconds=60)).startswith("20")
    for name in ("1-timeline", "2-bad-json", "3-confirm", "4-paged", "5-schedule-paused"):
        shot = ARTIFACTS / f"dashboard-debug-{name}.png"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_read_only_cli_dashboard_says_how_to_act(db_url: str, procs: Any) -> None:
    """A read-only `asyncflow dashboard`: its pages and its refusal say to restart with
    `--allow-actions`."""
    binary = find_chromium()
    assert binary is not None
    server = await procs("dashboard_debug_server.py", db_url)  # workflows to look at
    await server.expect("READY")
    env = python_env()
    env.pop("ASYNCFLOW_DATABASE_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asyncflow", "dashboard", "--port", "0", "--database-url", db_url,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            line = (await process.stdout.readline()).decode()
        found = re.search(r"(http://\S+/)", line)
        assert found, line
        url = found.group(1)
        async with chromium(binary) as browser:
            page = await browser.new_page()
            await page.goto(f"{url}workflow?id=talk-1")
            note = await page.evaluate("document.querySelector('[data-actions=\"off\"]')"
                                       ".textContent")
            assert "restart with --allow-actions" in note
            assert await page.evaluate("document.querySelector('[data-action]')") is None
            refusal = await page.evaluate(
                "fetch('/action/cancel', {method: 'POST', body: new URLSearchParams("
                "{id: 'talk-1', csrf: 'x'})}).then(r => r.text().then(t => [r.status, t]))",
                await_promise=True)
            assert refusal[0] == 403 and "restart with `--allow-actions`" in refusal[1]
            await page.goto(f"{url}schedules")
            assert "restart with --allow-actions" in await page.evaluate(
                "document.body.textContent")
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            _out, err = await process.communicate()
    assert b"Traceback" not in err, err.decode()
    assert (await _status(db_url, "talk-1")) == "PENDING"


async def _status(db_url: str, workflow_id: str) -> str:
    async with asyncflow.Client(db_url) as client:
        return (await client.get_workflow_status(workflow_id)).status
