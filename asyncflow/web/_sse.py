"""Server-Sent Events of a workflow's stream.

Nothing here imports a web framework at import time. :class:`EventStream` is a plain ASGI
application, so it works under any ASGI server or framework; :func:`sse_response` wraps it in a
Starlette ``Response`` (imported on first use) for FastAPI and Starlette endpoints.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import orjson

from .. import _codec
from .._errors import (
    AsyncFlowError,
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    WorkflowNotFoundError,
)
from .._front.lifecycle import Connected as Core
from .._front.lifecycle import check_count
from . import _shutdown

if TYPE_CHECKING:
    from starlette.responses import Response

logger = logging.getLogger("asyncflow")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_MAX_OFFSET_DIGITS = 18


# -- Server-Sent Events -------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            text: str = value.decode("latin-1")
            return text
    return None


def _field(name: str, value: str) -> bytes:
    # One field per line; a value never contains a line break (callers pass ids and names).
    return f"{name}: {value}\n".encode()


class EventStream:
    """A plain ASGI application streaming a workflow's stream as ``text/event-stream``.

    Each stream value is one SSE event: ``id`` is its stream offset and ``data`` its JSON. A
    client reconnecting with ``Last-Event-ID: N`` (browsers' ``EventSource`` do this by
    themselves) resumes at offset ``N + 1``: nothing is lost or repeated. Without that header
    reading starts at ``offset``. When the stream is closed (or its workflow ends) an
    ``end_event`` event (type ``"end"`` by default, no id, ``null`` data) is sent so clients can
    stop reconnecting, and the response ends.

    ``source`` is a running :class:`~asyncflow.AsyncFlow` or :class:`~asyncflow.Client`.
    ``event`` names the event type of values (default: the unnamed ``message`` type).
    ``ping_seconds`` is the interval of keep-alive comments. An unknown workflow gets a 404 and
    a malformed ``Last-Event-ID`` a 400 (JSON ``{"detail": ...}``) before streaming starts.

    Mount or return it from any ASGI framework: ``await EventStream(...)(scope, receive, send)``.
    In FastAPI endpoints return :func:`sse_response` instead.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        source: Core,
        workflow_id: str,
        key: str,
        *,
        offset: int = 0,
        event: str | None = None,
        end_event: str | None = "end",
        ping_seconds: float = 15.0,
        retry_ms: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(source, Core):
            raise InvalidArgumentError(
                f"source must be an AsyncFlow app or a Client, not {source!r}"
            )
        _codec.check_id(workflow_id)
        _codec.check_name(key, "key")
        check_count(offset, "offset")
        for what, name in (("event", event), ("end_event", end_event)):
            _codec.check_name(name, what, optional=True)
            if name is not None and ("\n" in name or "\r" in name or not name):
                raise InvalidArgumentError(f"{what} must be a non-empty single-line name")
        ping = _codec.check_timeout(ping_seconds, "ping_seconds")
        if ping <= 0:
            raise InvalidArgumentError(f"ping_seconds must be > 0, not {ping_seconds!r}")
        if retry_ms is not None and (
            isinstance(retry_ms, bool) or not isinstance(retry_ms, int) or retry_ms < 0
        ):
            raise InvalidArgumentError(f"retry_ms must be an int >= 0, not {retry_ms!r}")
        self.source = source
        self.workflow_id = workflow_id
        self.key = key
        self.offset = offset
        self.event = event
        self.end_event = end_event
        self.ping_seconds = ping
        self.retry_ms = retry_ms
        self.headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # tell nginx-style proxies not to buffer
        ]
        for name, value in (headers or {}).items():
            self.headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))

    def start_offset(self, scope: Scope) -> int:
        """The offset to start at: right after ``Last-Event-ID`` if the request has one."""
        last = _header(scope, b"last-event-id")
        if last is None or last.strip() == "":
            return self.offset
        text = last.strip()
        if not text.isdigit() or not text.isascii() or len(text) > _MAX_OFFSET_DIGITS:
            raise InvalidArgumentError(
                f"Last-Event-ID must be a stream offset (an integer >= 0), not {last!r}"
            )
        return int(text) + 1

    def entries(self, start: int) -> AsyncIterator[tuple[int, Any]]:
        """The ``(id, value)`` pairs to send, from ``start`` on."""
        return self.source.stream_entries(self.workflow_id, self.key, offset=start)

    def encode(self, offset: int, value: Any) -> bytes:
        """One SSE event for one stream value."""
        parts = [_field("id", str(offset))]
        if self.event is not None:
            parts.append(_field("event", self.event))
        try:
            data = orjson.dumps(value)
        except TypeError:  # integers past 64 bits: the exact encoding, without its marker
            data = _codec.dumps(value).lstrip().encode()
        parts.append(b"data: " + data + b"\n\n")
        return b"".join(parts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            raise ConfigurationError(
                f"EventStream serves HTTP requests, not ASGI {scope.get('type')!r} scopes"
            )
        try:
            start = self.start_offset(scope)
            await self.source.get_workflow_status(self.workflow_id)
        except InvalidArgumentError as exc:
            await _json_error(send, 400, str(exc))
            return
        except WorkflowNotFoundError as exc:
            await _json_error(send, 404, str(exc))
            return
        except DatabaseUnavailableError as exc:
            await _json_error(send, 503, str(exc))
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        first = b": asyncflow stream\n" if self.retry_ms is None else (
            _field("retry", str(self.retry_ms))
        )
        await send({"type": "http.response.body", "body": first + b"\n", "more_body": True})
        lock = anyio.Lock()
        finished = False

        async def emit(chunk: bytes) -> None:
            async with lock:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async def produce(tg: anyio.abc.TaskGroup) -> None:
            nonlocal finished
            try:
                async for offset, value in self.entries(start):
                    await emit(self.encode(offset, value))
                if self.end_event is not None:
                    await emit(_field("event", self.end_event) + b"data: null\n\n")
            except AsyncFlowError as exc:
                # Headers are sent: report in-band; the client reconnects with Last-Event-ID.
                logger.warning("SSE of stream %r of workflow %s stopped: %s",
                               self.key, self.workflow_id, exc)
                detail = orjson.dumps({"detail": str(exc), "type": type(exc).__name__})
                await emit(b"event: error\ndata: " + detail + b"\n\n")
            finished = True
            tg.cancel_scope.cancel()

        async def keep_alive() -> None:
            # A timer, not a poll: idle connections get a comment so proxies keep them open.
            while True:
                await anyio.sleep(self.ping_seconds)
                await emit(b": ping\n\n")

        async def watch_disconnect(tg: anyio.abc.TaskGroup) -> None:
            while True:
                message = await receive()
                if message.get("type") == "http.disconnect":
                    tg.cancel_scope.cancel()
                    return

        stopping = anyio.Event()
        last = b""

        async def watch_shutdown(tg: anyio.abc.TaskGroup) -> None:
            # The server is stopping: end the response now (not the stream: no end event), so
            # the server need not wait for it; clients reconnect later with Last-Event-ID.
            nonlocal finished, last
            await stopping.wait()
            finished, last = True, b": server stopping\n\n"
            tg.cancel_scope.cancel()

        unsubscribe = _shutdown.subscribe(stopping.set)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce, tg)
                tg.start_soon(keep_alive)
                tg.start_soon(watch_disconnect, tg)
                tg.start_soon(watch_shutdown, tg)
        except BaseExceptionGroup as group:  # a failed send: raise it as itself
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            unsubscribe()
        if finished:
            await send({"type": "http.response.body", "body": last, "more_body": False})


class EventWatch(EventStream):
    """A plain ASGI application following one **event** of a workflow as Server-Sent Events
    (:meth:`~asyncflow.AsyncFlow.watch_event` over HTTP).

    The event's current value (if set) is sent at once, then every new value as it is set;
    when the workflow ends the ``end_event`` event is sent and the response ends. Event ids
    count up; a client reconnecting (with ``Last-Event-ID``) gets the current value again and
    ids go on from there. Options as :class:`EventStream` (``offset`` is not used).
    """

    def start_offset(self, scope: Scope) -> int:
        """The first event id: one past ``Last-Event-ID`` when reconnecting, else 0."""
        return super().start_offset(scope) if _header(scope, b"last-event-id") else 0

    async def entries(self, start: int) -> AsyncIterator[tuple[int, Any]]:
        """Each value of the event, numbered from ``start``."""
        number = start
        async for value in self.source.watch_event(self.workflow_id, self.key):
            yield number, value
            number += 1


async def _json_error(send: Send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})


@functools.cache
def _starlette_response_class() -> Callable[[EventStream], Response]:
    try:
        from starlette.background import BackgroundTask
        from starlette.responses import Response
    except ImportError:
        raise ConfigurationError(
            "asyncflow.sse_response() needs Starlette: install the `web` extra (`pip install "
            "'asyncflow-pg[web]'`, or `pip install -e '.[web]'` in a clone of asyncflow), or serve "
            "asyncflow.EventStream as a plain ASGI app"
        ) from None

    class EventStreamResponse(Response):
        """A Starlette response that serves an :class:`EventStream`."""

        media_type = EventStream.media_type

        def __init__(self, stream: EventStream) -> None:  # no super(): there is no body
            self.stream = stream
            self.status_code = 200
            self.background: BackgroundTask | None = None
            self.raw_headers = list(stream.headers)

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.stream(scope, receive, send)
            if self.background is not None:
                await self.background()

    return EventStreamResponse


def sse_response(
    source: Core,
    workflow_id: str,
    key: str,
    **options: Any,
) -> Response:
    """A Starlette/FastAPI response streaming a workflow's stream as Server-Sent Events.

    Return it from an endpoint: ``return asyncflow.sse_response(app, workflow_id, "progress")``.
    ``options`` are those of :class:`EventStream` (``offset``, ``event``, ``end_event``,
    ``ping_seconds``, ``retry_ms``, ``headers``). Needs the ``web`` extra (Starlette).
    """
    stream = EventStream(source, workflow_id, key, **options)
    return _starlette_response_class()(stream)


def event_watch_response(
    source: Core,
    workflow_id: str,
    key: str,
    **options: Any,
) -> Response:
    """A Starlette/FastAPI response following event ``key`` of a workflow as Server-Sent
    Events (see :class:`EventWatch`). Needs the ``web`` extra (Starlette)."""
    stream = EventWatch(source, workflow_id, key, **options)
    return _starlette_response_class()(stream)
