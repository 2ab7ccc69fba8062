"""Plain-ASGI requests and responses for the dashboard: no web framework needed at runtime.

Routes are matched on the path below the mount point: under Starlette's ``Mount`` (which keeps
the full ``path`` and extends ``root_path``) and under servers started with a root path alike.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_FORM_BYTES = 1 << 20
MAX_FIELDS = 200

# Pages load nothing but the package's own script and stylesheet; no inline code or styles.
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class HTTPError(Exception):
    """Ends a request with ``status`` and a short explanation shown to the user."""

    def __init__(self, status: int, message: str, *, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.allow = allow


class ClientGone(Exception):
    """The client disconnected while its request body was being read."""


def split_path(scope: Scope) -> tuple[str, str]:
    """``(mount prefix without a trailing slash, route path starting with a slash)``."""
    path: str = scope.get("path") or "/"
    root: str = scope.get("root_path") or ""
    route = path
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        route = path[len(root):]
    return root.rstrip("/"), route or "/"


def _parse_pairs(text: str) -> list[tuple[str, str]]:
    try:
        return urllib.parse.parse_qsl(
            text, keep_blank_values=True, encoding="utf-8", errors="replace",
            max_num_fields=MAX_FIELDS,
        )
    except ValueError:
        raise HTTPError(400, f"too many parameters (at most {MAX_FIELDS})") from None


class Request:
    """One HTTP request: method, route path, query parameters, headers and cookies."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope.get("method", "GET")
        self.root, self.path = split_path(scope)
        raw = scope.get("query_string", b"")
        self.query = _parse_pairs(raw.decode("latin-1"))
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", ()):
            name = key.decode("latin-1").lower()
            text = value.decode("latin-1")
            if name == "cookie" and name in headers:  # HTTP/2 may split cookies over headers
                text = f"{headers[name]}; {text}"
            headers[name] = text
        self.headers = headers

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        for key, value in self.query:
            if key == name:
                return value
        return None

    def params(self, name: str) -> list[str]:
        """Every value of query parameter ``name``."""
        return [value for key, value in self.query if key == name]

    def cookie(self, name: str) -> str | None:
        """The value of cookie ``name``, or None."""
        for part in self.headers.get("cookie", "").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
        return None

    @property
    def secure(self) -> bool:
        """Whether the request came over HTTPS."""
        return self.scope.get("scheme") == "https"

    async def body(self, limit: int = MAX_FORM_BYTES) -> bytes:
        """The whole request body; 413 beyond ``limit`` bytes."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"the form is larger than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def form(self) -> dict[str, str]:
        """The fields of an ``application/x-www-form-urlencoded`` body (first value of each)."""
        kind = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise HTTPError(415, "actions take an application/x-www-form-urlencoded form")
        pairs = _parse_pairs((await self.body()).decode("latin-1"))
        fields: dict[str, str] = {}
        for key, value in pairs:
            fields.setdefault(key, value)
        return fields


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a complete response."""
    all_headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def html(
    send: Send, status: int, page: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send an HTML page (never cached: it shows live data)."""
    await respond(send, status, page.encode(), "text/html; charset=utf-8", [
        (b"cache-control", b"no-store"), *SECURITY_HEADERS, *(headers or []),
    ])


async def redirect(send: Send, location: str) -> None:
    """A 303 See Other (the answer to a successful action)."""
    safe = urllib.parse.quote(location, safe="/?&=%:#;,+@!$'()*~")  # non-ASCII mount paths
    await respond(send, 303, b"", "text/plain", [
        (b"location", safe.encode("ascii")), (b"cache-control", b"no-store"),
    ])
