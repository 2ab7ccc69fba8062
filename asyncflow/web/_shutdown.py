"""Hear that the web server is stopping, so open event streams end at once.

ASGI tells an application nothing about a server shutdown while a response is in flight: uvicorn
(like other servers) stops accepting connections on SIGINT/SIGTERM, then waits for the running
responses to finish before the lifespan shutdown. An event stream never finishes by itself, so
the server would wait for its graceful-shutdown timeout and then cancel it.

While streams are open, this module puts a handler in front of the process's SIGINT and SIGTERM
handlers (the server's own): it tells every open stream to end, then calls the handler it
replaced, so the server shuts down as it always does, only without a stream to wait for.
Handlers can only be set from the main thread; elsewhere (a server run in a thread) nothing is
installed and streams end when the server cancels them.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_subscribers: dict[int, tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = {}
_next_id = [0]
_requested = [False]


class _Chained:
    """A signal handler that ends the open streams, then runs the handler it replaced."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        _requested[0] = True
        for loop, callback in list(_subscribers.values()):
            if not loop.is_closed():
                loop.call_soon_threadsafe(callback)
        previous = self.previous
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            # What the default would have done (SIGTERM: end the process).
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        # SIG_IGN, or a handler not set from Python (None): nothing more to do.


def _install() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if not isinstance(current, _Chained):
            signal.signal(signum, _Chained(current))


def subscribe(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` (in the running loop) when the process is asked to stop; returns the
    function that cancels the subscription. Must be called from a running asyncio loop."""
    loop = asyncio.get_running_loop()
    _install()
    _next_id[0] += 1
    key = _next_id[0]
    _subscribers[key] = (loop, callback)
    if _requested[0]:  # the server is already stopping: end at once
        loop.call_soon(callback)

    def unsubscribe() -> None:
        _subscribers.pop(key, None)

    return unsubscribe
