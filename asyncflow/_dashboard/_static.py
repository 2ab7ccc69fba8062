"""The dashboard's static files, the script and the stylesheet: read from the package once,
versioned by a hash of their content (pages link ``…?v=<hash>``, cached for good), and served
to everyone (they hold no data)."""

from __future__ import annotations

import hashlib
from importlib import resources

from ._http import SECURITY_HEADERS, HTTPError, Request, Send, respond

STATIC_FILES = ("dashboard.css", "dashboard.js")
_CONTENT_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def _load_static() -> dict[str, tuple[bytes, str]]:
    files = resources.files(__package__).joinpath("static")
    out: dict[str, tuple[bytes, str]] = {}
    for name in STATIC_FILES:
        data = files.joinpath(name).read_bytes()
        out[name] = (data, hashlib.sha256(data).hexdigest()[:12])
    return out


#: Each file's content and its version (the first 12 hex digits of its SHA-256), by name.
STATIC = _load_static()


async def serve_static(request: Request, send: Send, name: str) -> None:
    """Serve a static file: cached for good when asked by its versioned URL, else revalidated
    by its ETag."""
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

