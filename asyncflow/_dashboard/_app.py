"""The dashboard ASGI application: routing and the pages' handlers (the checks each request passes:
``_guards``; the script and stylesheet: ``_static``).

Routes, below the mount point:

============================  ======  =============================================================
``/``                         GET     the workflow list (filters in the query string)
``/list``                     GET     its live part (same query string)
``/workflow?id=…[&ops=N]``    GET     a workflow's page (``ops``: its timeline from operation N)
``/workflow/parts?id=…``      GET     its live parts (``parts=summary,timeline,…``; default all)
``/queues``                   GET     every queue: depth, running, limits
``/queues/parts``             GET     its live part
``/queue?queue=…``            GET     a queue's page (its workflows: the list's filters, tabs)
``/queue/parts?queue=…``      GET     its live parts (same query string)
``/schedules``                GET     every schedule: state, last and next tick, actions
``/schedules/parts``          GET     its live part
``/confirm?action=…&id=…``    GET     the confirmation page of an action that asks first (cancel)
``/live[?id=…&queue=…]``      GET     Server-Sent Events: ``change`` events for every workflow and
                                      queue, or for the given workflow ids and queue names
``/action/{name}``            POST    ``cancel``, ``resume``, ``send``, ``fork`` (form: ``id``,
                                      ``csrf``, …)
``/schedule-action/{name}``   POST    ``pause``, ``resume``, ``trigger``, ``backfill``,
                                      ``delete`` (form: ``schedule``, ``csrf``, …)
``/static/{file}``            GET     the script and stylesheet, from the package
============================  ======  =============================================================

Workflow ids and queue names travel in the query string, never in the path, so any id works.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import ClassVar

from .. import _codec
from .._errors import (
    AsyncFlowError,
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    InvalidSettingError,
    NotLaunchedError,
    ScheduleNotFoundError,
    WorkflowNotFoundError,
)
from .._front.lifecycle import Connected
from . import (
    _data,
    _journal_data,
    _live,
    _pages,
    _queue_data,
    _queue_pages,
    _schedule_pages,
    _timeline_pages,
)
from ._actions import ACTIONS, FormError
from ._guards import (
    CSRF_COOKIE,
    AuthHook,
    allowed,
    check_method,
    checked_form,
    valid_token,
)
from ._html import View, message_page
from ._http import (
    ClientGone,
    HTTPError,
    Receive,
    Request,
    Scope,
    Send,
    html,
    redirect,
    split_path,
)
from ._schedule_pages import SCHEDULE_ACTIONS
from ._static import serve_static

logger = logging.getLogger("asyncflow")

_MAX_LIVE_IDS = 100


#: A Host header value: a name or IPv4 address, or a bracketed IPv6 address, with a port or not.
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


def allowed_host_set(hosts: Iterable[str] | None) -> frozenset[str] | None:
    """Validate an allow-list of Host names (``name`` or ``name:port``, lower-cased)."""
    if hosts is None:
        return None
    if isinstance(hosts, str):
        raise InvalidSettingError(
            f"allowed_hosts must be a list of host names, not the str {hosts!r}")
    checked = set()
    for host in hosts:
        if not isinstance(host, str) or not _HOST.fullmatch(host.lower()):
            raise InvalidSettingError(
                f"allowed_hosts holds {host!r}: give host names as a browser sends them in "
                "the Host header, like 'dashboard.example.com' or '127.0.0.1:8080'")
        checked.add(host.lower())
    return frozenset(checked)


def _host_allowed(value: str, allowed: frozenset[str]) -> bool:
    """Whether a Host (or X-Forwarded-Host) header names an allowed host: exactly, or by its
    name alone when the allow-list entry has no port."""
    value = value.strip().lower()
    if value in allowed:
        return True
    name, _sep, port = value.rpartition(":")
    return bool(_sep) and port.isdigit() and not name.endswith(":") and name in allowed


class Dashboard:
    """A mountable ASGI app showing an app's (or client's) workflows, live.

    Build it with :func:`dashboard`. The source must be running (``asyncflow.lifespan(app)`` or
    ``async with app``) while the dashboard serves requests.
    """

    def __init__(
        self,
        source: Connected,
        *,
        auth: AuthHook | None = None,
        read_auth: AuthHook | None = None,
        live_interval_seconds: float = 0.25,
        allowed_hosts: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(source, Connected):
            raise ConfigurationError(
                f"dashboard() shows an AsyncFlow app or a Client, not {source!r}"
            )
        for name, hook in (("auth", auth), ("read_auth", read_auth)):
            if hook is not None and not callable(hook):
                raise ConfigurationError(
                    f"{name} must be a function of the ASGI scope returning a bool, not {hook!r}"
                )
        interval = _codec.check_timeout(live_interval_seconds, "live_interval_seconds")
        self.source = source
        self.auth = auth
        self.read_auth = read_auth
        self.live_interval_seconds = interval
        #: The Host names served (``None``: any; the server or a middleware checks them).
        self.allowed_hosts = allowed_host_set(allowed_hosts)
        #: How to enable actions, said where they are refused (HTML; empty: the general
        #: advice). ``asyncflow dashboard`` sets it to restart with ``--allow-actions``.
        self.actions_hint = ""
        self._hub = _live.Hub(source)

    def close(self) -> None:
        """End the open live connections (browsers reconnect to a server that still runs).
        Call it when the server shuts down: otherwise it waits for them to close."""
        self._hub.close()

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1000})
                return
            raise ConfigurationError(f"the dashboard serves HTTP, not ASGI {kind!r} scopes")
        view = View(split_path(scope)[0], "", False)
        try:
            request = Request(scope, receive)
            await self._route(request, send)
        except ClientGone:
            return
        except HTTPError as exc:
            headers = [(b"allow", exc.allow.encode())] if exc.allow else []
            await html(send, exc.status, message_page(view, _TITLES.get(exc.status, "Error"),
                                                      exc.message, back=view.url("/")), headers)
        except (WorkflowNotFoundError, ScheduleNotFoundError) as exc:
            await html(send, 404, message_page(view, "Not found", str(exc), back=view.url("/")))
        except InvalidArgumentError as exc:
            await html(send, 400, message_page(view, "Bad request", str(exc), back=view.url("/")))
        except (NotLaunchedError, DatabaseUnavailableError) as exc:
            await html(send, 503, message_page(view, "Unavailable", str(exc)),
                       [(b"retry-after", b"5")])
        except AsyncFlowError as exc:
            logger.warning("dashboard request %s failed: %s", scope.get("path"), exc)
            await html(send, 500, message_page(view, "Error", str(exc), back=view.url("/")))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # Served on its own (``uvicorn module:dashboard``): nothing to start; on shutdown, end
        # the live connections so the server need not wait for them.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _check_host(self, request: Request) -> None:
        """Refuse a Host (or forwarded host) not on the allow-list: a page of another site
        whose name resolves to this server (DNS rebinding) must read and do nothing."""
        allowed = self.allowed_hosts
        if allowed is None:
            return
        for header in ("host", "x-forwarded-host"):
            value = request.headers.get(header)
            if value is None and header == "x-forwarded-host":
                continue
            if value is None or not _host_allowed(value, allowed):
                raise HTTPError(400, f"this dashboard does not serve the host {value!r}; open "
                                "it by its own address (or add the name to its allowed hosts)")

    async def _route(self, request: Request, send: Send) -> None:
        self._check_host(request)
        path = request.path
        if path.startswith("/static/"):
            check_method(request, "GET", "HEAD")
            await serve_static(request, send, path.removeprefix("/static/"))
            return
        if path.startswith("/action/"):
            await self._act(request, send, path.removeprefix("/action/"))
            return
        if path.startswith("/schedule-action/"):
            await self._act_on_schedule(request, send, path.removeprefix("/schedule-action/"))
            return
        handler = self._ROUTES.get(path)
        if handler is None:
            raise HTTPError(404, f"there is no dashboard page at {path!r}")
        check_method(request, "GET", "HEAD")
        if not await allowed(self.read_auth, request, default=True):
            raise HTTPError(403, "you may not view this dashboard (read_auth refused)")
        await handler(self, request, send)

    # -- pages ----------------------------------------------------------------------------------

    async def _view(self, request: Request) -> tuple[View, list[tuple[bytes, bytes]]]:
        """The request's view, and the Set-Cookie header of a new CSRF token if it had none."""
        token = request.cookie(CSRF_COOKIE)
        headers: list[tuple[bytes, bytes]] = []
        if not valid_token(token):
            token = secrets.token_urlsafe(32)
            cookie = (f"{CSRF_COOKIE}={token}; Path={request.root or '/'}; SameSite=Strict; "
                      "HttpOnly" + ("; Secure" if request.secure else ""))
            headers.append((b"set-cookie", cookie.encode("latin-1")))
        assert token is not None
        can_act = await allowed(self.auth, request, default=False)
        return View(request.root, token, can_act, self.actions_hint), headers

    async def _list_page(self, request: Request, send: Send) -> None:
        view, headers = await self._view(request)
        filters, problems = _data.Filters.parse(request.param)
        page = await _data.list_workflows(self.source, filters)
        await html(send, 200, _pages.list_page(view, filters, problems, page), headers)

    async def _list_part(self, request: Request, send: Send) -> None:
        view, headers = await self._view(request)
        filters, _problems = _data.Filters.parse(request.param)
        page = await _data.list_workflows(self.source, filters)
        await html(send, 200, _pages.list_part(view, filters, page), headers)

    @staticmethod
    def _workflow_id(request: Request) -> str:
        workflow_id = request.param("id")
        if not workflow_id:
            raise HTTPError(400, "which workflow? pass its id as ?id=…")
        return _codec.check_id(workflow_id)

    @staticmethod
    def _ops(request: Request) -> int | None:
        """The timeline page asked for (``ops``: its first operation number; None: latest)."""
        text = request.param("ops")
        if not text:
            return None
        if not text.isdigit():
            raise HTTPError(400, f"ops must be an operation number, not {text!r}")
        return int(text)

    async def _parts(
        self, view: View, workflow_id: str, wanted: set[str], ops: int | None = None
    ) -> tuple[_data.Detail, dict[str, str]]:
        source = self.source
        detail = await _data.workflow_detail(source, workflow_id)
        status = detail.status
        parts: dict[str, str] = {}
        if "summary" in wanted:
            queue = None
            if status.queue_name is not None:
                queue = await _queue_data.queue_detail(source, status.queue_name)
            parts["summary"] = _pages.summary_part(view, detail, queue)
        if "io" in wanted:
            parts["io"] = _pages.io_part(detail)
        if "timeline" in wanted:
            journal = await _journal_data.journal_page(source, status, ops)
            parts["timeline"] = _timeline_pages.timeline_part(
                view, workflow_id, journal, datetime.now(UTC), status.status == "PENDING")
        if "events" in wanted:
            parts["events"] = _pages.events_part(await _data.workflow_events(source, workflow_id))
        if "streams" in wanted:
            parts["streams"] = _pages.streams_part(*await _data.workflow_streams(source, status))
        if "messages" in wanted:
            found, total = await _data.pending_messages(source, workflow_id)
            parts["messages"] = _pages.messages_part(found, total)
        return detail, parts

    async def _workflow_page(self, request: Request, send: Send) -> None:
        workflow_id = self._workflow_id(request)
        ops = self._ops(request)
        view, headers = await self._view(request)
        detail, parts = await self._parts(view, workflow_id, set(_pages.PARTS), ops)
        page = _pages.workflow_page(view, detail, parts, request.param("notice"), ops=ops)
        await html(send, 200, page, headers)

    async def _workflow_parts(self, request: Request, send: Send) -> None:
        workflow_id = self._workflow_id(request)
        ops = self._ops(request)
        view, headers = await self._view(request)
        asked = request.param("parts")
        wanted = set(_pages.PARTS) if not asked else set(asked.split(",")) & set(_pages.PARTS)
        _detail, parts = await self._parts(view, workflow_id, wanted, ops)
        body = "".join(parts[name] for name in _pages.PARTS if name in parts)
        await html(send, 200, body, headers)

    async def _queues_page(self, request: Request, send: Send) -> None:
        view, headers = await self._view(request)
        queues = await _queue_data.list_queues(self.source)
        await html(send, 200, _queue_pages.queues_page(view, queues), headers)

    async def _queues_part(self, request: Request, send: Send) -> None:
        view, headers = await self._view(request)
        queues = await _queue_data.list_queues(self.source)
        await html(send, 200, _queue_pages.queues_part(view, queues), headers)

    async def _queue(
        self, request: Request
    ) -> tuple[_queue_data.QueueView, _data.Filters, list[str], _data.ListPage]:
        filters, problems = _data.Filters.parse(request.param)
        if filters.queue is None:
            bad = [problem for problem in problems if "queue name" in problem]
            raise HTTPError(400, bad[0] if bad else "which queue? pass its name as ?queue=…")
        queue = await _queue_data.queue_detail(self.source, filters.queue)
        if queue is None:
            raise HTTPError(404, f"no queue named {filters.queue!r} is known: no workflow of "
                            "it is active, no dispatcher ever claimed from it, and this app "
                            "does not register it")
        return queue, filters, problems, await _data.list_workflows(self.source, filters)

    async def _queue_page(self, request: Request, send: Send) -> None:
        view, headers = await self._view(request)
        queue, filters, problems, page = await self._queue(request)
        await html(send, 200, _queue_pages.queue_page(view, queue, filters, problems, page),
                   headers)

    async def _queue_parts(self, request: Request, send: Send) -> None:
        view, headers = await self._view(request)
        queue, filters, _problems, page = await self._queue(request)
        await html(send, 200, _queue_pages.queue_parts(view, queue, filters, page), headers)

    async def _schedules_page(self, request: Request, send: Send) -> None:
        view, headers = await self._view(request)
        schedules = await _schedule_pages.list_schedules(self.source)
        page = _schedule_pages.schedules_page(view, schedules, request.param("notice"),
                                              request.param("schedule"), request.param("run"),
                                              _pages.actions_off(view))
        await html(send, 200, page, headers)

    async def _schedules_part(self, request: Request, send: Send) -> None:
        view, headers = await self._view(request)
        schedules = await _schedule_pages.list_schedules(self.source)
        await html(send, 200, _schedule_pages.schedules_part(view, schedules), headers)

    async def _confirm_page(self, request: Request, send: Send) -> None:
        """The question of an action that asks first; its answer posts the action."""
        action = ACTIONS.get(request.param("action") or "")
        if action is None or not action.confirm:
            raise HTTPError(404, "there is no action to confirm by that name")
        workflow_id = self._workflow_id(request)
        view, headers = await self._view(request)
        if not view.can_act:
            raise HTTPError(403, self._refusal())
        detail = await _data.workflow_detail(self.source, workflow_id)
        await html(send, 200, _pages.confirm_page(view, action, detail), headers)

    async def _live(self, request: Request, send: Send) -> None:
        ids, queues = request.params("id"), request.params("queue")
        if len(ids) + len(queues) > _MAX_LIVE_IDS:
            raise HTTPError(400, f"follow at most {_MAX_LIVE_IDS} workflows and queues per "
                            "connection")
        for workflow_id in ids:
            _codec.check_id(workflow_id)
        for queue_name in queues:
            _codec.check_id(queue_name, "queue name")
        self.source.storage  # noqa: B018 - a 503 now rather than a live stream of nothing
        follow = None if not ids and not queues else _live.Follow(frozenset(ids),
                                                                  frozenset(queues))
        await _live.serve(self._hub, follow, request.receive, send,
                          interval=self.live_interval_seconds)

    _ROUTES: ClassVar[dict[str, Callable[[Dashboard, Request, Send], Awaitable[None]]]] = {
        "/": _list_page,
        "/list": _list_part,
        "/workflow": _workflow_page,
        "/workflow/parts": _workflow_parts,
        "/queues": _queues_page,
        "/queues/parts": _queues_part,
        "/queue": _queue_page,
        "/queue/parts": _queue_parts,
        "/schedules": _schedules_page,
        "/schedules/parts": _schedules_part,
        "/confirm": _confirm_page,
        "/live": _live,
    }

    # -- actions --------------------------------------------------------------------------------

    def _refusal(self) -> str:
        if self.actions_hint:  # as plain text
            hint = self.actions_hint.replace("<code>", "`").replace("</code>", "`")
            return f"this dashboard is read-only: {hint}"
        return ("actions are not allowed here: the dashboard's auth hook refused (without "
                "auth=, every action is refused)")

    async def _act(self, request: Request, send: Send, name: str) -> None:
        action = ACTIONS.get(name)
        if action is None:
            raise HTTPError(404, f"there is no action {name!r}")
        form = await checked_form(request, self.auth, self._refusal())
        workflow_id = _codec.check_id(form.get("id", ""), "the form's workflow id")
        try:
            notice, kind, target = await action.run(self.source, workflow_id, form)
        except FormError as failed:
            # The page again, with the form's text kept and the error shown by the form.
            view, headers = await self._view(request)
            detail, parts = await self._parts(view, workflow_id, set(_pages.PARTS))
            page = _pages.workflow_page(view, detail, parts, None, failed=failed)
            await html(send, 400, page, headers)
            return
        if kind is not None:
            self._hub.publish(kind, target or workflow_id)
        view = View(request.root, "", False)
        await redirect(send, view.url("/workflow", [("id", target or workflow_id),
                                                    ("notice", notice)]))

    async def _act_on_schedule(self, request: Request, send: Send, name: str) -> None:
        found = SCHEDULE_ACTIONS.get(name)
        if found is None:
            raise HTTPError(404, f"there is no schedule action {name!r}")
        form = await checked_form(request, self.auth, self._refusal())
        schedule = _codec.check_id(form.get("schedule", ""), "the form's schedule name")
        notice, run = await found[1](self.source, schedule, form)  # wakes live pages (c)
        view = View(request.root, "", False)
        await redirect(send, view.url("/schedules", [("notice", notice), ("schedule", schedule)]
                                      + ([("run", run)] if run else [])))


_TITLES = {400: "Bad request", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
           413: "Too large", 415: "Unsupported form"}


def dashboard(
    app_or_client: Connected,
    *,
    auth: AuthHook | None = None,
    read_auth: AuthHook | None = None,
    allowed_hosts: Iterable[str] | None = None,
) -> Dashboard:
    """A web dashboard of an app's (or client's) workflows, as a mountable ASGI app.

    Pages: the workflow list (filters: status, name, queue, id prefix, creation time; each
    workflow's last activity); a workflow's page (inputs, result or error with its traceback,
    its queue fields and its queue's state, the timeline of its operations with their keys,
    topics and values, paged, and its waterfall, its events, its streams and its pending
    messages); the queues (depth, running workflows, and the limits of the queues the source
    registers) and each queue's workflows by status; the schedules (state, last and next tick).
    Every page updates live. Live updates
    come from the source's LISTEN connection (one Server-Sent Events connection per page); there
    is no polling anywhere.

    ``auth(scope) -> bool`` (or an awaitable bool) decides whether a request may act on
    workflows (cancel, confirmed first; resume; send a message; fork) and schedules (pause,
    resume, trigger); without it every action is refused.
    ``read_auth(scope)`` decides whether a request may see the pages; without it everyone who
    reaches the dashboard may. ``scope`` is the request's ASGI scope (headers, client address,
    whatever your middleware put there). Actions are POST forms carrying a CSRF token (a
    ``SameSite=Strict`` cookie) and must come from the same origin.

    ``allowed_hosts``: the Host names it serves (``"dash.example.com"``: that name on any port;
    ``"127.0.0.1:8080"``: that name and port); a request for another Host — or with an
    ``X-Forwarded-Host`` naming another — is refused (400), so a page of another site whose
    name an attacker makes resolve to this server (DNS rebinding) can neither read the pages
    nor act. Without it, any Host is served: check Host names in front of the dashboard
    (Starlette's ``TrustedHostMiddleware``, a reverse proxy). ``asyncflow dashboard`` on a
    loopback address allows only its own address and port (and ``--allow-host`` names).

    Mount it in Starlette or FastAPI (``app.mount("/dashboard", dashboard(flow))``) with the
    source running in the server's lifespan (``asyncflow.lifespan(flow)``), or serve it alone
    with ``asyncflow dashboard --port 8080``.
    """
    return Dashboard(app_or_client, auth=auth, read_auth=read_auth,
                     allowed_hosts=allowed_hosts)
