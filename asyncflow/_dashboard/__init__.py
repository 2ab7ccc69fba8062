"""A live web dashboard of workflows, as a mountable ASGI app (re-exported by ``asyncflow.web``).

Server-rendered HTML, a small script and a stylesheet served from this package (no CDN, no build
step), and live updates over Server-Sent Events fed by the app's own LISTEN connection.
"""

from ._app import Dashboard, dashboard
from ._guards import AuthHook

__all__ = ["AuthHook", "Dashboard", "dashboard"]
