"""A small Chrome DevTools Protocol client for the browser tests: headless Chromium from the
system packages, driven over its DevTools websocket (the ``websockets`` package).

Waiting is event-driven: navigations wait for ``Page.loadEventFired``, and DOM conditions are
awaited inside the page with a ``MutationObserver`` (a promise that resolves when the condition
holds, or rejects at its deadline), never by sleeping and looking again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The browser binary: ``$ASYNCFLOW_TEST_CHROMIUM``, else the first on PATH."""
    explicit = os.environ.get("ASYNCFLOW_TEST_CHROMIUM")
    if explicit:
        return explicit
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class CDPError(Exception):
    """A protocol command failed, or a page-side wait rejected."""


class Browser:
    """One browser-level websocket; commands for a page carry its session id (flat mode)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._next = 0
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, str | None, asyncio.Future[dict[str, Any]]]] = []
        self.log: list[str] = []  # console messages and page exceptions, for failure reports
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                if "id" in message:
                    future = self._replies.pop(message["id"], None)
                    if future is not None and not future.done():
                        if "error" in message:
                            future.set_exception(CDPError(message["error"]))
                        else:
                            future.set_result(message.get("result", {}))
                    continue
                method, params = message.get("method"), message.get("params", {})
                session = message.get("sessionId")
                if method == "Runtime.consoleAPICalled":
                    self.log.append("console: " + " ".join(
                        str(a.get("value", a.get("description", ""))) for a in params["args"]))
                elif method == "Runtime.exceptionThrown":
                    self.log.append("exception: " + json.dumps(params["exceptionDetails"]))
                for waiter in list(self._waiters):
                    name, wanted_session, future = waiter
                    if name == method and wanted_session in (None, session):
                        self._waiters.remove(waiter)
                        if not future.done():
                            future.set_result(params)
        finally:
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(CDPError("the browser connection closed"))

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   session: str | None = None, within: float = 60) -> dict[str, Any]:
        """Run one protocol command and return its result."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[self._next] = future
        await self.ws.send(json.dumps(message))
        async with asyncio.timeout(within):
            return await future

    def expect(self, method: str, session: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """A future for the next event ``method`` (register it before causing the event)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, session, future))
        return future

    async def new_page(self, width: int = 1280, height: int = 900) -> Page:
        """A new tab, attached, with the Page and Runtime domains enabled."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1,
                         "mobile": False})
        return page

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send("Browser.close", within=10)
        await self.ws.close()
        self._reader.cancel()


_WAIT_JS = """
new Promise((resolve, reject) => {
  const condition = () => { try { return (%s); } catch (e) { return false; } };
  let observer = null;
  const timer = setTimeout(() => {
    if (observer) observer.disconnect();
    reject(new Error("timed out waiting for: " + %s));
  }, %d);
  const check = () => {
    const value = condition();
    if (value) {
      clearTimeout(timer);
      if (observer) observer.disconnect();
      resolve(value);
      return true;
    }
    return false;
  };
  if (!check()) {
    observer = new MutationObserver(check);
    observer.observe(document, {subtree: true, childList: true, characterData: true,
                                attributes: true});
  }
})
"""


class Page:
    """One tab."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session)

    def expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        return self.browser.expect(method, self.session)

    async def goto(self, url: str, within: float = 60) -> None:
        """Navigate and wait for the load event."""
        loaded = self.expect("Page.loadEventFired")
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {result['errorText']}")
        async with asyncio.timeout(within):
            await loaded

    async def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        """The value of a JavaScript expression in the page."""
        result = await self.send("Runtime.evaluate", {
            "expression": expression, "awaitPromise": await_promise, "returnByValue": True,
        })
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"{text}\npage log:\n" + "\n".join(self.browser.log[-20:]))
        return result["result"].get("value")

    async def wait_for(self, condition: str, within: float = 60) -> Any:
        """Wait (in the page, on DOM mutations) until the JS ``condition`` is truthy."""
        script = _WAIT_JS % (condition, json.dumps(condition), int(within * 1000))
        return await self.evaluate(script, await_promise=True)

    async def click(self, selector: str, *, navigates: bool = False, within: float = 60) -> None:
        """Click the element matching ``selector`` with real mouse events at its centre;
        with ``navigates``, wait for the next page's load event."""
        at = await self.press(selector)
        await self.release(at, navigates=navigates, within=within)

    async def press(self, selector: str) -> tuple[float, float]:
        """Press the left mouse button at the centre of the element matching ``selector``
        (scrolled into view); returns the point, for :meth:`release`."""
        box = await self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            " if (!el) return null; el.scrollIntoView({block: 'center'});"
            " const r = el.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        if box is None:
            raise CDPError(f"nothing matches {selector!r}")
        await self._mouse("mousePressed", box[0], box[1])
        return box[0], box[1]

    async def release(self, at: tuple[float, float], *, navigates: bool = False,
                      within: float = 60) -> None:
        """Release the button pressed at ``at``; with ``navigates``, wait for the next page's
        load event."""
        loaded = self.expect("Page.loadEventFired") if navigates else None
        await self._mouse("mouseReleased", *at)
        if loaded is not None:
            async with asyncio.timeout(within):
                await loaded

    async def _mouse(self, kind: str, x: float, y: float) -> None:
        await self.send("Input.dispatchMouseEvent", {
            "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1,
        })

    async def screenshot(self, path: Path) -> None:
        """Save a PNG of the whole page."""
        shot = await self.send("Page.captureScreenshot",
                               {"format": "png", "captureBeyondViewport": True})
        data = base64.b64decode(shot["data"])

        def save() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        await asyncio.to_thread(save)


@contextlib.asynccontextmanager
async def chromium(binary: str) -> AsyncIterator[Browser]:
    """Start headless Chromium and connect to its DevTools websocket."""
    profile = tempfile.mkdtemp(prefix="asyncflow-chromium-")
    args = [
        binary, "--headless", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--no-default-browser-check", "--disable-extensions", "--mute-audio",
        f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    process = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    lines: list[str] = []
    drain: asyncio.Task[None] | None = None
    browser: Browser | None = None
    try:
        async with asyncio.timeout(60):
            while True:
                raw = await process.stderr.readline()
                if not raw:
                    raise CDPError("chromium exited before it listened:\n" + "\n".join(lines))
                line = raw.decode(errors="replace").rstrip()
                lines.append(line)
                found = re.search(r"DevTools listening on (ws://\S+)", line)
                if found:
                    url = found.group(1)
                    break

        async def keep_draining() -> None:
            assert process.stderr is not None
            while await process.stderr.readline():
                pass

        drain = asyncio.create_task(keep_draining())
        ws = await websockets.connect(url, max_size=None, open_timeout=60)
        browser = Browser(ws)
        yield browser
    finally:
        if browser is not None:
            await browser.close()
        if process.returncode is None:
            process.kill()
        await process.wait()
        if drain is not None:
            drain.cancel()
        shutil.rmtree(profile, ignore_errors=True)
