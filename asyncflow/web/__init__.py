"""asyncflow in web servers: run apps and clients with the server, and serve workflow streams.

* :func:`lifespan` -- an ASGI lifespan (Starlette, FastAPI) that launches apps and clients
  before the server takes requests and shuts them down after the last one.
* :class:`EventStream` -- a plain ASGI application streaming a workflow's stream as
  Server-Sent Events, resumable with ``Last-Event-ID``; :func:`sse_response` wraps it in a
  Starlette response for FastAPI and Starlette endpoints. Open streams end at once when the
  server is asked to stop (SIGINT/SIGTERM), so shutdown does not wait for them.
* :class:`EventWatch` / :func:`event_watch_response` -- one event of a workflow followed live
  as Server-Sent Events (``watch_event`` over HTTP).
* :func:`stream_snapshot` -- everything a stream holds right now (:class:`StreamSnapshot`),
  without waiting.
* :func:`dashboard` -- a live web dashboard of workflows (a mountable ASGI app).

Nothing here imports a web framework until it is used.
"""

from .._dashboard import AuthHook, Dashboard, dashboard
from ._lifespan import lifespan
from ._snapshot import StreamSnapshot, stream_snapshot
from ._sse import EventStream, EventWatch, event_watch_response, sse_response

__all__ = [
    "AuthHook",
    "Dashboard",
    "EventStream",
    "EventWatch",
    "StreamSnapshot",
    "dashboard",
    "event_watch_response",
    "lifespan",
    "sse_response",
    "stream_snapshot",
]
