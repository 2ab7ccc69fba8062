"""Who may do what: the checks every dashboard request passes before its handler runs — the
method, the ``auth``/``read_auth`` hooks, and for actions the same-origin check and the CSRF
token (a random token in each form that must match the ``SameSite=Strict`` cookie)."""

from __future__ import annotations

import hmac
import inspect
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from ._http import HTTPError, Request, Scope

logger = logging.getLogger("asyncflow")

AuthHook: TypeAlias = Callable[[Scope], bool | Awaitable[bool]]

CSRF_COOKIE = "asyncflow_csrf"
_TOKEN_LENGTH = 43  # secrets.token_urlsafe(32)


def valid_token(token: str | None) -> bool:
    """Whether ``token`` looks like a token the dashboard made."""
    return (token is not None and len(token) == _TOKEN_LENGTH
            and all(c.isascii() and (c.isalnum() or c in "-_") for c in token))


def check_method(request: Request, *allowed: str) -> None:
    """405 unless the request's method is one of ``allowed``."""
    if request.method not in allowed:
        raise HTTPError(405, f"use {' or '.join(allowed)} here", allow=", ".join(allowed))


async def allowed(hook: AuthHook | None, request: Request, *, default: bool) -> bool:
    """The verdict of an auth hook (``default`` without one); a hook that raises refuses."""
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


def same_origin(request: Request) -> bool:
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


async def checked_form(request: Request, auth: AuthHook | None, refusal: str) -> dict[str, str]:
    """The form of an action request that passed the method, origin, auth and CSRF checks;
    ``refusal``: what a request the auth hook refuses is told."""
    check_method(request, "POST")
    if not same_origin(request):
        raise HTTPError(403, "actions must come from the dashboard's own pages")
    if not await allowed(auth, request, default=False):
        raise HTTPError(403, refusal)
    form = await request.form()
    token, sent = request.cookie(CSRF_COOKIE), form.get("csrf", "")
    if not valid_token(token) or not hmac.compare_digest(token or "", sent):
        raise HTTPError(403, "the form's security token is missing or stale: reload the "
                        "page and try again")
    return form
