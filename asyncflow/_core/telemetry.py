"""OpenTelemetry plumbing: the spans and metrics of one app or client, when telemetry is on.

``opentelemetry`` is imported here only, and only when telemetry is turned on (at launch):
``import asyncflow`` never imports it, and with telemetry off the runtime's ``telemetry`` is
``None``, so every hook in the engine is one attribute check. This module knows nothing of
workflows: its callers (``_engine.observe``, the runner) hand it ids and names.

Trace context is stored and carried as a W3C ``traceparent`` string
(``00-<trace id>-<span id>-<flags>``): with the workflow row (the context of the span that
started it) and with each message (the context of the span that sent it).
"""

from __future__ import annotations

import json
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from .._errors import ConfigurationError, InvalidSettingError

R = TypeVar("R")

SCOPE = "asyncflow"

# Span and metric attributes.
WORKFLOW_ID = "asyncflow.workflow.id"
WORKFLOW_NAME = "asyncflow.workflow.name"
WORKFLOW_STATUS = "asyncflow.workflow.status"
FUNCTION_ID = "asyncflow.function_id"
ATTEMPT = "asyncflow.attempt"
STEP_NAME = "asyncflow.step.name"
STEP_KIND = "asyncflow.step.kind"
OUTCOME = "asyncflow.outcome"
RESUMED = "asyncflow.execution.resumed"
EXECUTOR_ID = "asyncflow.executor.id"
QUEUE_NAME = "asyncflow.queue.name"

INSTALL_HINT = ("OpenTelemetry is not installed: install the `otel` extra "
                "(pip install 'asyncflow-pg[otel]'), or opentelemetry-api and an SDK")

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def available() -> bool:
    """Whether the OpenTelemetry API can be imported."""
    try:
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


class Telemetry:
    """Where an app or client sends its OpenTelemetry spans and metrics.

    ``tracer_provider`` / ``meter_provider``: an OpenTelemetry ``TracerProvider`` /
    ``MeterProvider``; ``None`` (the default) means the global one
    (``opentelemetry.trace.set_tracer_provider`` …). Pass it as ``AsyncFlow(telemetry=…)`` or
    ``Client(telemetry=…)``. Needs the ``otel`` extra (``opentelemetry-api``); without a
    configured SDK the spans and metrics go nowhere.
    """

    __slots__ = ("meter_provider", "tracer_provider")

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        if not available():
            raise ConfigurationError(INSTALL_HINT)
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider

    def __repr__(self) -> str:
        return (f"Telemetry(tracer_provider={self.tracer_provider!r}, "
                f"meter_provider={self.meter_provider!r})")


def check_option(option: object) -> None:
    """Validate the ``telemetry=`` argument of an app or client (at construction)."""
    if option is not None and not isinstance(option, bool | Telemetry):
        raise InvalidSettingError(
            "telemetry must be None (on when OpenTelemetry is configured globally), True, False "
            f"or an asyncflow.Telemetry(...), not {option!r}")
    if option is True and not available():
        raise ConfigurationError(INSTALL_HINT)


def _configured_globally() -> bool:
    """Whether the application set a global tracer or meter provider (the API's defaults are
    proxies that do nothing until one is set)."""
    from opentelemetry import metrics, trace

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return True
    return type(metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider"


def activate(option: bool | Telemetry | None) -> Instruments | None:
    """The instruments for a launch, or ``None`` when telemetry is off.

    ``None`` (auto): on when OpenTelemetry is installed and a global tracer or meter provider
    is set; ``True``: on with the global providers; ``False``: off.
    """
    if option is False:
        return None
    if option is None:
        if not available() or not _configured_globally():
            return None
        option = True
    if option is True:
        option = Telemetry()
    assert isinstance(option, Telemetry)
    return Instruments(option.tracer_provider, option.meter_provider)


@contextmanager
def detached(instruments: Instruments | None) -> Iterator[None]:
    """With telemetry on, run the block outside any trace (no current span): tasks started in
    it do not inherit the caller's span."""
    if instruments is None:
        yield
        return
    from opentelemetry import context

    token = context.attach(context.Context())
    try:
        yield
    finally:
        context.detach(token)


# -- trace context -------------------------------------------------------------------------------


def format_traceparent(span_context: Any) -> str | None:
    """The W3C traceparent of a span context, or ``None`` if it is not valid."""
    if not span_context.is_valid:
        return None
    return (f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
            f"{int(span_context.trace_flags):02x}")


def parse_traceparent(text: str | None) -> Any:
    """The (remote) span context of a traceparent, or ``None`` if it is absent or malformed."""
    if not text:
        return None
    match = _TRACEPARENT.fullmatch(text)
    if match is None:
        return None
    from opentelemetry.trace import SpanContext, TraceFlags

    context = SpanContext(int(match[1], 16), int(match[2], 16), is_remote=True,
                          trace_flags=TraceFlags(int(match[3], 16)))
    return context if context.is_valid else None


# -- metrics shared by every app and client on one meter ----------------------------------------


class Source:
    """What one launched app or client reports through the observable instruments. Each
    callable is read at collection time; ``None``: not reported by this source."""

    __slots__ = ("attributes", "parked", "queue_depths", "reconnects", "running")

    def __init__(
        self,
        executor_id: str | None,
        *,
        parked: Callable[[], int],
        reconnects: Callable[[], int],
        running: Callable[[], int | None] | None = None,
    ) -> None:
        self.attributes = {EXECUTOR_ID: executor_id or "client"}
        self.parked = parked
        self.reconnects = reconnects
        self.running = running
        #: ``{queue name: workflows waiting}`` (an app: as its dispatchers last counted them).
        #: Read synchronously at collection time, so it returns numbers already known.
        self.queue_depths: Callable[[], Mapping[str, int]] | None = None


class _Meters:
    """The instruments of one meter (created once: OpenTelemetry keeps the first instrument of
    a name, with its callbacks) and the sources its observable instruments read."""

    def __init__(self, meter: Any) -> None:
        from opentelemetry.metrics import Observation

        self.sources: list[Source] = []
        self._observation = Observation
        self.started = meter.create_counter(
            "asyncflow.workflows.started", unit="{workflow}",
            description="Workflows started (created) by this process")
        self.finished = meter.create_counter(
            "asyncflow.workflows.finished", unit="{workflow}",
            description="Workflows that reached a terminal status in this process, by status")
        self.step_duration = meter.create_histogram(
            "asyncflow.step.duration", unit="s",
            description="Duration of each attempt of a step or transaction body")
        meter.create_observable_up_down_counter(
            "asyncflow.waiters.parked", [self._parked], unit="{waiter}",
            description="Blocking calls parked right now (recv, get_event, sleep, reads, ...)")
        meter.create_observable_up_down_counter(
            "asyncflow.workflows.running", [self._running], unit="{workflow}",
            description="Workflows executing in this process right now")
        meter.create_observable_counter(
            "asyncflow.listener.reconnects", [self._reconnects], unit="{reconnect}",
            description="Reconnects of the LISTEN connection since launch")
        meter.create_observable_up_down_counter(
            "asyncflow.queue.depth", [self._queue_depth], unit="{workflow}",
            description="Workflows waiting in each queue")

    def _observe(self, read: Callable[[Source], int | None]) -> Iterator[Any]:
        for source in list(self.sources):
            value = read(source)
            if value is not None:
                yield self._observation(value, source.attributes)

    def _parked(self, _options: Any) -> Iterable[Any]:
        return self._observe(lambda s: s.parked())

    def _running(self, _options: Any) -> Iterable[Any]:
        return self._observe(lambda s: None if s.running is None else s.running())

    def _reconnects(self, _options: Any) -> Iterable[Any]:
        return self._observe(lambda s: s.reconnects())

    def _queue_depth(self, _options: Any) -> Iterable[Any]:
        for source in list(self.sources):
            if source.queue_depths is not None:
                for queue, depth in source.queue_depths().items():
                    yield self._observation(depth, {**source.attributes, QUEUE_NAME: queue})


_meters: weakref.WeakKeyDictionary[Any, _Meters] = weakref.WeakKeyDictionary()


def _meters_of(meter: Any) -> _Meters:
    try:
        found = _meters.get(meter)
    except TypeError:  # a meter that cannot be weakly referenced: not shared
        return _Meters(meter)
    if found is None:
        found = _meters[meter] = _Meters(meter)
    return found


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("asyncflow-pg")
    except PackageNotFoundError:
        return None


# -- the instruments of one launch ---------------------------------------------------------------


class Instruments:
    """The tracer and meters one launched app or client uses (``runtime.telemetry``)."""

    __slots__ = ("_kinds", "_trace", "meters", "tracer")

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        from opentelemetry import metrics, trace

        version = _version()
        tracer_provider = tracer_provider or trace.get_tracer_provider()
        meter_provider = meter_provider or metrics.get_meter_provider()
        self.tracer = tracer_provider.get_tracer(SCOPE, version)
        self.meters = _meters_of(meter_provider.get_meter(SCOPE, version))
        self._trace = trace
        kind = trace.SpanKind
        self._kinds = {"internal": kind.INTERNAL, "producer": kind.PRODUCER,
                       "consumer": kind.CONSUMER}

    # -- traces ----------------------------------------------------------------------------------

    def traceparent(self) -> str | None:
        """The traceparent of the current span (``None`` outside any valid span)."""
        return format_traceparent(self._trace.get_current_span().get_span_context())

    def link(self, traceparent: str | None) -> None:
        """Link the current span to the span of ``traceparent`` (e.g. a message's sender)."""
        context = parse_traceparent(traceparent)
        if context is not None:
            self._trace.get_current_span().add_link(context)

    def span(
        self,
        name: str,
        attributes: Mapping[str, Any],
        *,
        kind: str = "internal",
        parent: str | None = None,
        new_trace: bool = False,
        link_current: bool = False,
    ) -> AbstractContextManager[Any]:
        """A span made current for a ``with`` block (exceptions are recorded on it).

        ``parent``: a traceparent to start the span under (instead of the current span);
        ``new_trace``: without a usable ``parent``, start a new trace rather than a child of
        the current span; ``link_current``: link to the current span when not its child.
        """
        context = None
        links = None
        if parent is not None or new_trace:
            trace = self._trace
            current = trace.get_current_span().get_span_context()
            remote = parse_traceparent(parent)
            from opentelemetry.context import Context

            context = (Context() if remote is None
                       else trace.set_span_in_context(trace.NonRecordingSpan(remote), Context()))
            if link_current and current.is_valid and (
                    remote is None or current.span_id != remote.span_id):
                links = [trace.Link(current)]
        started: AbstractContextManager[Any] = self.tracer.start_as_current_span(
            name, context=context, kind=self._kinds[kind], attributes=attributes, links=links)
        return started

    async def run(
        self, awaitable: Awaitable[R], name: str, attributes: Mapping[str, Any], kind: str
    ) -> R:
        """Await ``awaitable`` in a span."""
        with self.span(name, attributes, kind=kind):
            return await awaitable

    async def attempt(
        self, awaitable: Awaitable[R], step_kind: str, step_name: str,
        attributes: Mapping[str, Any],
    ) -> R:
        """Await one attempt of a step or transaction body in a span, and record its duration."""
        started = time.perf_counter()
        outcome = "error"
        try:
            with self.span(f"{step_kind} {step_name}", attributes):
                result = await awaitable
            outcome = "success"
            return result
        finally:
            self.meters.step_duration.record(
                time.perf_counter() - started,
                {STEP_NAME: step_name, STEP_KIND: step_kind, OUTCOME: outcome})

    # -- metrics ---------------------------------------------------------------------------------

    def workflow_started(self, name: str) -> None:
        self.meters.started.add(1, {WORKFLOW_NAME: name})

    def workflow_finished(
        self, name: str, status: str, error: str | None = None, *, in_execution: bool = False
    ) -> None:
        """Count a terminal status written by this process. ``in_execution``: written by the
        workflow's execution, whose span (the current one) gets the status and the recorded
        error (JSON from ``_codec.encode_error``), if any."""
        # The plain string: an exporter prints a Status member as <Status.SUCCESS: 'SUCCESS'>.
        status = str(status)
        self.meters.finished.add(1, {WORKFLOW_NAME: name, WORKFLOW_STATUS: status})
        span = self._trace.get_current_span()
        if not in_execution or not span.is_recording():
            return
        span.set_attribute(WORKFLOW_STATUS, status)
        if error is not None:
            try:
                record = json.loads(error)
            except ValueError:
                record = {}
            kind = str(record.get("type") or "error")
            message = str(record.get("message") or "")
            span.add_event("exception", {
                "exception.type": kind, "exception.message": message,
                "exception.stacktrace": str(record.get("traceback") or ""),
            })
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR,
                                               f"{kind}: {message}"))

    def observe(self, source: Source) -> Callable[[], None]:
        """Report ``source`` through the observable instruments until the returned function is
        called (at shutdown)."""
        sources = self.meters.sources
        sources.append(source)

        def remove() -> None:
            if source in sources:
                sources.remove(source)

        return remove
