"""The dashboard ASGI application: routing, the auth hooks, CSRF protection, static assets.

Routes, below the mount point:

========================  ======  ===============================================================
``/``                     GET     the workflow list (filters in the query string)
``/list``                 GET     its live part (same query string)
``/workflow?id=…``        GET     a workflow's page
``/workflow/parts?id=…``  GET     its live parts (``parts=summary,timeline,…``; default all)
``/queues``               GET     every queue: depth, running, limits
``/queues/parts``         GET     its live part
``/queue?queue=…``        GET     a queue's page (its workflows: the list's filters, status tabs)
``/queue/parts?queue=…``  GET     its live parts (same query string)
``/live[?id=…&queue=…]``  GET     Server-Sent Events: ``change`` events for every workflow and
                                  queue, or for the given workflow ids and queue names
``/action/{name}``        POST    ``cancel``, ``resume``, ``send`` (form: ``id``, ``csrf``, …)
``/static/{file}``        GET     the script and stylesheet, from the package
========================  ======  ===============================================================

Workflow ids and queue names travel in the query string, never in the path, so any id works.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import ClassVar, TypeAlias

from .. import _codec
from .._errors import (
    AsyncFlowError,
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    InvalidSettingError,
    NotLaunchedError,
    WorkflowNotFoundError,
)
from .._lifecycle import Connected
from . import _data, _live, _pages, _queue_data, _queue_pages
from ._actions import ACTIONS
from ._html import STATIC, View, message_page
from ._http import (
    SECURITY_HEADERS,
    ClientGone,
    HTTPError,
    Receive,
    Request,
    Scope,
    Send,
    html,
    redirect,
    respond,
    split_path,
)

logger = logging.getLogger("asyncflow")

AuthHook: TypeAlias = Callable[[Scope], bool | Awaitable[bool]]

CSRF_COOKIE = "asyncflow_csrf"
_TOKEN_LENGTH = 43  # secrets.token_urlsafe(32)
_MAX_LIVE_IDS = 100
_CONTENT_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


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


def _valid_token(token: str | None) -> bool:
    return (token is not None and len(token) == _TOKEN_LENGTH
            and all(c.isascii() and (c.isalnum() or c in "-_") for c in token))


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
        except WorkflowNotFoundError as exc:
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
            self._method(request, "GET", "HEAD")
            await self._static(request, send, path.removeprefix("/static/"))
            return
        if path.startswith("/action/"):
            await self._act(request, send, path.removeprefix("/action/"))
            return
        handler = self._ROUTES.get(path)
        if handler is None:
            raise HTTPError(404, f"there is no dashboard page at {path!r}")
        self._method(request, "GET", "HEAD")
        if not await self._allowed(self.read_auth, request, default=True):
            raise HTTPError(403, "you may not view this dashboard (read_auth refused)")
        await handler(self, request, send)

    @staticmethod
    def _method(request: Request, *allowed: str) -> None:
        if request.method not in allowed:
            raise HTTPError(405, f"use {' or '.join(allowed)} here", allow=", ".join(allowed))

    @staticmethod
    async def _allowed(hook: AuthHook | None, request: Request, *, default: bool) -> bool:
        if hook is None:
            return default
        try:
            verdict = hook(request.scope)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception:
            logger.exception("dashboard auth hook failed; refusing the request")
            return False
        return bool(verdict)

    # -- pages ----------------------------------------------------------------------------------

    async def _view(self, request: Request) -> tuple[View, list[tuple[bytes, bytes]]]:
        """The request's view, and the Set-Cookie header of a new CSRF token if it had none."""
        token = request.cookie(CSRF_COOKIE)
        headers: list[tuple[bytes, bytes]] = []
        if not _valid_token(token):
            token = secrets.token_urlsafe(32)
            cookie = (f"{CSRF_COOKIE}={token}; Path={request.root or '/'}; SameSite=Strict; "
                      "HttpOnly" + ("; Secure" if request.secure else ""))
            headers.append((b"set-cookie", cookie.encode("latin-1")))
        assert token is not None
        can_act = await self._allowed(self.auth, request, default=False)
        return View(request.root, token, can_act), headers

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

    async def _parts(
        self, view: View, workflow_id: str, wanted: set[str]
    ) -> tuple[_data.Detail, dict[str, str]]:
        source = self.source
        detail = await _data.workflow_detail(source, workflow_id)
        status = detail.status
        parts: dict[str, str] = {}
        if "summary" in wanted:
            parts["summary"] = _pages.summary_part(view, detail)
        if "io" in wanted:
            parts["io"] = _pages.io_part(detail)
        if "timeline" in wanted:
            entries, omitted = await _data.workflow_timeline(source, status)
            parts["timeline"] = _pages.timeline_part(view, entries, omitted)
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
        view, headers = await self._view(request)
        detail, parts = await self._parts(view, workflow_id, set(_pages.PARTS))
        page = _pages.workflow_page(view, detail, parts, request.param("notice"))
        await html(send, 200, page, headers)

    async def _workflow_parts(self, request: Request, send: Send) -> None:
        workflow_id = self._workflow_id(request)
        view, headers = await self._view(request)
        asked = request.param("parts")
        wanted = set(_pages.PARTS) if not asked else set(asked.split(",")) & set(_pages.PARTS)
        _detail, parts = await self._parts(view, workflow_id, wanted)
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
        "/live": _live,
    }

    # -- actions --------------------------------------------------------------------------------

    @staticmethod
    def _same_origin(request: Request) -> bool:
        """Refuse requests a browser marks as sent from another site. Browsers send ``Origin``
        with every POST; it must name this host (as the client sees it)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        if origin is None:
            return True  # not a browser (or a very old one): the CSRF token still applies
        netloc = urllib.parse.urlsplit(origin).netloc.lower()
        hosts = {request.headers.get("host", "").lower(),
                 request.headers.get("x-forwarded-host", "").lower()}
        return bool(netloc) and netloc in hosts

    async def _act(self, request: Request, send: Send, name: str) -> None:
        action = ACTIONS.get(name)
        if action is None:
            raise HTTPError(404, f"there is no action {name!r}")
        self._method(request, "POST")
        if not self._same_origin(request):
            raise HTTPError(403, "actions must come from the dashboard's own pages")
        if not await self._allowed(self.auth, request, default=False):
            raise HTTPError(403, "actions are not allowed here: the dashboard's auth hook "
                            "refused (without auth=, every action is refused)")
        form = await request.form()
        token, sent = request.cookie(CSRF_COOKIE), form.get("csrf", "")
        if not _valid_token(token) or not hmac.compare_digest(token or "", sent):
            raise HTTPError(403, "the form's security token is missing or stale: reload the "
                            "page and try again")
        workflow_id = _codec.check_id(form.get("id", ""), "the form's workflow id")
        notice, kind, target = await action.run(self.source, workflow_id, form)
        if kind is not None:
            self._hub.publish(kind, target or workflow_id)
        view = View(request.root, "", False)
        await redirect(send, view.url("/workflow", [("id", target or workflow_id),
                                                    ("notice", notice)]))

    # -- static files ---------------------------------------------------------------------------

    async def _static(self, request: Request, send: Send, name: str) -> None:
        found = STATIC.get(name)
        if found is None:
            raise HTTPError(404, f"there is no static file {name!r}")
        data, digest = found
        suffix = name[name.rfind("."):]
        cache = (b"public, max-age=31536000, immutable" if request.param("v") == digest
                 else b"no-cache")
        etag = f'"{digest}"'.encode()
        if request.headers.get("if-none-match", "").encode() == etag:
            await send({"type": "http.response.start", "status": 304,
                        "headers": [(b"etag", etag), (b"cache-control", cache)]})
            await send({"type": "http.response.body", "body": b""})
            return
        await respond(send, 200, data, _CONTENT_TYPES[suffix], [
            (b"cache-control", cache), (b"etag", etag), *SECURITY_HEADERS[1:2],
        ])


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

    Pages: the workflow list (filters: status, name, queue, id prefix, creation time); a
    workflow's page (inputs, result or error with its traceback, its queue fields, the timeline
    of its operations, its events, its streams and its pending messages); the queues (depth,
    running workflows, and the limits of the queues the source registers) and each queue's
    workflows by status. Every page updates live. Live updates
    come from the source's LISTEN connection (one Server-Sent Events connection per page); there
    is no polling anywhere.

    ``auth(scope) -> bool`` (or an awaitable bool) decides whether a request may act on
    workflows (cancel, resume, send a message); without it every action is refused.
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
