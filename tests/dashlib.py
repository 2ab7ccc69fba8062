"""Driving the dashboard's ASGI app over HTTP in tests (httpx), and where screenshots go."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx
from conftest import ROOT

ARTIFACTS = Path(os.environ.get("ASYNCFLOW_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))
BASE = "http://dash.test"


def client_for(asgi: Any, base: str = BASE) -> httpx.AsyncClient:
    """An HTTP client of the ASGI app ``asgi``."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url=base)


def allow(_scope: Any) -> bool:
    """An auth callable that lets every request in."""
    return True


def csrf_of(page: str) -> str:
    """The CSRF token of a page's action forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)
