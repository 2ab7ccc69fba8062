"""Observability: OpenTelemetry spans and metrics (the SDK's in-memory exporter and reader, a real
Postgres), trace context carried from the starter and through messages, and the logging filter.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap

import pytest
from conftest import python_env
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import asyncflow
from asyncflow._core.telemetry import format_traceparent
from asyncflow._core.wait import decode_payload


class _OnEnd(SpanProcessor):
    def __init__(self, events):
        self.events = events

    def on_end(self, span):
        event = self.events.get(span.name)
        if event is not None:
            event.set()


class Otel:
    """A tracer provider exporting to memory and a meter provider read in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = asyncflow.Telemetry(tracer_provider=self.tracer_provider,
                                             meter_provider=self.meter_provider)
        self.tracer = self.tracer_provider.get_tracer("test")

        self._ended: dict[str, asyncio.Event] = {}
        self.tracer_provider.add_span_processor(_OnEnd(self._ended))

    def ended(self, name):
        """An event set when a span named ``name`` ends."""
        return self._ended.setdefault(name, asyncio.Event())

    def spans(self, name=None):
        found = list(self.exporter.get_finished_spans())
        return [s for s in found if name is None or s.name == name]

    def span(self, name):
        found = self.spans(name)
        assert len(found) == 1, (name, [s.name for s in self.spans()])
        return found[0]

    def points(self, metric):
        """{frozenset(attributes): data point} of one metric, as collected now."""
        data = self.reader.get_metrics_data()
        points = {}
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for found in scope.metrics:
                    if found.name == metric:
                        for point in found.data.data_points:
                            points[frozenset(point.attributes.items())] = point
        return points


@pytest.fixture
def otel():
    telemetry = Otel()
    yield telemetry
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


def child_of(span, parent):
    return span.parent is not None and span.parent.span_id == parent.context.span_id


async def test_spans_of_a_workflow_its_attempts_and_operations(make_app, otel, conn):
    app = make_app(telemetry=otel.telemetry)
    tries = []

    @app.step(name="flaky", retries=1, retry_interval_seconds=0.01)
    async def flaky(x):
        tries.append(x)
        if len(tries) == 1:
            raise ValueError("first try fails")
        return x * 2

    @app.transaction(name="tx")
    async def tx():
        return await asyncflow.connection().fetchval("select 1")

    @app.workflow(name="wf")
    async def wf(x):
        y = await flaky(x)
        await tx()
        await asyncflow.set_event("e", y)
        await asyncflow.write_stream("s", y)
        await asyncflow.sleep(0.01)
        return y

    async with app:
        with otel.tracer.start_as_current_span("caller") as caller:
            handle = await app.start_workflow(wf, 21, workflow_id="w1")
        assert await handle.get_result() == 42
    trace_id = caller.get_span_context().trace_id
    assert {s.context.trace_id for s in otel.spans()} == {trace_id}

    start = otel.span("start_workflow wf")
    assert child_of(start, caller) and start.kind == SpanKind.PRODUCER
    assert start.attributes["asyncflow.workflow.id"] == "w1"
    # The starter's trace context is stored with the workflow.
    stored = await conn.fetchval("select traceparent from asyncflow.workflows")
    assert stored == format_traceparent(start.context)

    run = otel.span("workflow wf")
    assert child_of(run, start) and run.kind == SpanKind.CONSUMER
    assert dict(run.attributes) == {
        "asyncflow.workflow.id": "w1", "asyncflow.workflow.name": "wf",
        "asyncflow.execution.resumed": False, "asyncflow.workflow.status": "SUCCESS"}
    # A plain string, not a Status member: console exporters print the member's repr.
    assert type(run.attributes["asyncflow.workflow.status"]) is str
    assert '"asyncflow.workflow.status": "SUCCESS"' in run.to_json()

    first, second = sorted(otel.spans("step flaky"),
                           key=lambda s: s.attributes["asyncflow.attempt"])
    for number, attempt in enumerate((first, second), start=1):
        assert child_of(attempt, run)
        assert attempt.attributes["asyncflow.attempt"] == number
        assert attempt.attributes["asyncflow.function_id"] == 0
        assert attempt.attributes["asyncflow.step.name"] == "flaky"
        assert attempt.attributes["asyncflow.workflow.id"] == "w1"
    assert first.status.status_code == StatusCode.ERROR
    assert [e.attributes["exception.type"] for e in first.events] == ["ValueError"]
    assert second.status.status_code != StatusCode.ERROR

    operations = [("transaction tx", 1), ("asyncflow.set_event", 2),
                  ("asyncflow.write_stream", 3), ("asyncflow.sleep", 4)]
    for name, function_id in operations:
        span = otel.span(name)
        assert child_of(span, run), name
        assert span.attributes["asyncflow.function_id"] == function_id, name
        assert span.attributes["asyncflow.workflow.name"] == "wf", name
    assert otel.span("asyncflow.set_event").attributes["asyncflow.event.key"] == "e"
    assert otel.span("asyncflow.write_stream").attributes["asyncflow.stream.key"] == "s"


async def test_a_failed_workflow_records_its_error_on_its_span(make_app, otel):
    app = make_app(telemetry=otel.telemetry)

    @app.workflow(name="bad")
    async def bad():
        raise KeyError("missing")

    async with app:
        with pytest.raises(KeyError):
            await bad()
    run = otel.span("workflow bad")
    assert run.status.status_code == StatusCode.ERROR
    assert run.attributes["asyncflow.workflow.status"] == "ERROR"
    (event,) = run.events
    assert event.name == "exception" and event.attributes["exception.type"] == "KeyError"
    assert "missing" in event.attributes["exception.stacktrace"]


async def test_send_carries_trace_context_to_the_receivers_recv(make_app, otel, conn):
    app = make_app(telemetry=otel.telemetry)
    gate = asyncio.Event()
    payloads = []
    seen = asyncio.Event()

    def on_notify(_conn, _pid, _channel, payload):
        payloads.append(payload)
        if ("m", "r") in decode_payload(payload):
            seen.set()

    @app.step(name="gate")
    async def wait_gate():
        await gate.wait()

    @app.workflow(name="receiver")
    async def receiver():
        await wait_gate()
        waiting = await asyncflow.recv("u", timeout_seconds=30)  # already in the mailbox
        parked = await asyncflow.recv("t", timeout_seconds=30)  # arrives while parked
        staged = await asyncflow.recv("v", timeout_seconds=30)  # sent from a step
        return [waiting, parked, staged]

    @app.step(name="send_from_step")
    async def send_from_step(destination):
        await asyncflow.send(destination, "from a step", "v")

    @app.workflow(name="sender")
    async def sender(destination):
        await asyncflow.send(destination, "from a workflow", "t")
        await send_from_step(destination)

    async with app:
        await conn.add_listener(app.storage.channel, on_notify)
        handle = await app.start_workflow(receiver, workflow_id="r")
        with otel.tracer.start_as_current_span("outside caller") as caller:
            await app.send("r", "from outside", "u")
        gate.set()
        await app._waits.wait_for_count(1)  # parked in recv("t")
        await app.start_workflow(sender, "r", workflow_id="s")
        assert await handle.get_result() == ["from outside", "from a workflow", "from a step"]
        await asyncio.wait_for(seen.wait(), 30)
    # NOTIFY payloads carry ids only, never trace context.
    assert payloads and not any("00-" in payload for payload in payloads)

    sends = {s.attributes["asyncflow.topic"]: s for s in otel.spans("asyncflow.send")}
    assert set(sends) == {"u", "t"}  # the step's send is staged: its attempt's span carries it
    outside = sends["u"]
    assert child_of(outside, caller) and outside.kind == SpanKind.PRODUCER
    assert outside.attributes["asyncflow.destination.id"] == "r"
    from_workflow = sends["t"]
    assert child_of(from_workflow, otel.span("workflow sender"))
    assert from_workflow.attributes["asyncflow.function_id"] == 0
    step_attempt = otel.span("step send_from_step")

    recvs = {s.attributes["asyncflow.topic"]: s for s in otel.spans("asyncflow.recv")}
    receiver_run = otel.span("workflow receiver")
    for topic, producer in (("u", outside), ("t", from_workflow), ("v", step_attempt)):
        recv = recvs[topic]
        assert child_of(recv, receiver_run) and recv.kind == SpanKind.CONSUMER
        assert [link.context.span_id for link in recv.links] == [producer.context.span_id], topic
        assert recv.links[0].context.trace_id == producer.context.trace_id
    assert await conn.fetchval("select count(*) from asyncflow.messages") == 0
    # The workflow's send reached the parked recv("t") and handed its message over: the entry
    # keeps the send's trace context, which the link above came from.
    assert await conn.fetchval(
        "select traceparent from asyncflow.operations "
        "where workflow_id = 'r' and name = 'asyncflow.recv' and topic = 't'") is not None


async def test_a_resumed_run_after_relaunch_joins_the_original_trace(make_app, otel):
    runs = []

    def build():
        app = make_app(executor_id="exec-1", app_version="v1", telemetry=otel.telemetry)

        @app.step(name="once")
        async def once():
            runs.append(1)
            return len(runs)

        @app.workflow(name="waiter")
        async def waiter():
            count = await once()
            return [count, await asyncflow.recv(timeout_seconds=60)]

        return app, waiter

    first, waiter = build()
    async with first:
        with otel.tracer.start_as_current_span("caller") as caller:
            await first.start_workflow(waiter, workflow_id="w")
        await first._waits.wait_for_count(1)  # parked in recv
    second, _ = build()
    async with second:  # its launch recovers its own PENDING workflow
        await second._waits.wait_for_count(1)
        await second.send("w", "go")
        handle = await second.retrieve_workflow("w")
        assert await handle.get_result() == [1, "go"]
    assert runs == [1]

    start = otel.span("start_workflow waiter")
    executions = sorted(otel.spans("workflow waiter"), key=lambda s: s.start_time)
    assert [s.attributes["asyncflow.execution.resumed"] for s in executions] == [False, True]
    for execution in executions:
        assert child_of(execution, start)
        assert execution.context.trace_id == caller.get_span_context().trace_id
    assert executions[1].attributes["asyncflow.workflow.status"] == "SUCCESS"
    # The step ran once; the resumed run replayed it (no span), then its recv waited again.
    assert [child_of(s, executions[0]) for s in otel.spans("step once")] == [True]
    assert any(child_of(s, executions[1]) for s in otel.spans("asyncflow.recv"))


async def test_resume_workflow_joins_the_original_trace(make_app, otel):
    app = make_app(telemetry=otel.telemetry)

    @app.workflow(name="fails_once")
    async def fails_once():
        if await asyncflow.recv(timeout_seconds=30) == "fail":
            raise RuntimeError("asked to fail")
        return "ok"

    async with app:
        with otel.tracer.start_as_current_span("caller") as caller:
            handle = await app.start_workflow(fails_once, workflow_id="f")
        await app.send("f", "fail")
        with pytest.raises(RuntimeError):
            await handle.get_result()
        with otel.tracer.start_as_current_span("operator") as operator:
            await app.resume_workflow("f")
        # The replayed recv returns "fail" again: it fails the same way.
        with pytest.raises(RuntimeError):
            await handle.get_result(timeout_seconds=30)
    executions = sorted(otel.spans("workflow fails_once"), key=lambda s: s.start_time)
    assert len(executions) == 2
    start = otel.span("start_workflow fails_once")
    assert all(child_of(e, start) for e in executions)
    assert executions[1].context.trace_id == caller.get_span_context().trace_id
    # The resumed execution links to the span that resumed it.
    assert [link.context.span_id for link in executions[1].links] == [
        operator.get_span_context().span_id]


async def test_metrics(make_app, otel, conn):
    app = make_app(executor_id="exec-m", telemetry=otel.telemetry)

    @app.step(name="double")
    async def double(x):
        return 2 * x

    @app.workflow(name="ok")
    async def ok(x):
        return await double(x)

    @app.workflow(name="bad")
    async def bad():
        raise ValueError("no")

    @app.workflow(name="parked")
    async def parked():
        return await asyncflow.recv(timeout_seconds=60)

    async with app:
        assert await ok(1) == 2 and await ok(2) == 4
        with pytest.raises(ValueError):
            await bad()
        handle = await app.start_workflow(parked)
        await app._waits.wait_for_count(1)
        here = frozenset({("asyncflow.executor.id", "exec-m")})
        assert otel.points("asyncflow.waiters.parked")[here].value == 1
        assert otel.points("asyncflow.workflows.running")[here].value == 1
        stopped = otel.ended("workflow parked")
        await app.cancel_workflow(handle.workflow_id)
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await handle.get_result()
        await asyncio.wait_for(stopped.wait(), 30)  # its execution stopped (and counted it)
        # A lost LISTEN connection: the listener reconnects, and the metric counts it.
        listener = app.listener
        old = listener.backend_pid
        assert otel.points("asyncflow.listener.reconnects")[here].value == 0
        assert await conn.fetchval("select pg_terminate_backend($1::int)", old)
        await listener.wait_connected(not_pid=old)
        assert otel.points("asyncflow.listener.reconnects")[here].value == 1

    def by_name(points, *keys):
        return {tuple(dict(k)[key] for key in keys): p.value for k, p in points.items()}

    assert by_name(otel.points("asyncflow.workflows.started"), "asyncflow.workflow.name") == {
        ("ok",): 2, ("bad",): 1, ("parked",): 1}
    finished = otel.points("asyncflow.workflows.finished")
    assert by_name(finished, "asyncflow.workflow.name", "asyncflow.workflow.status") == {
        ("ok", "SUCCESS"): 2, ("bad", "ERROR"): 1, ("parked", "CANCELLED"): 1}
    assert {type(dict(k)["asyncflow.workflow.status"]) for k in finished} == {str}
    (steps,) = otel.points("asyncflow.step.duration").items()
    attributes, histogram = steps
    assert dict(attributes) == {"asyncflow.step.name": "double", "asyncflow.step.kind": "step",
                                "asyncflow.outcome": "success"}
    assert histogram.count == 2 and histogram.sum >= 0
    # A stopped app reports nothing any more.
    assert here not in otel.points("asyncflow.waiters.parked")


async def test_dead_letters_are_counted(make_app, otel, conn):
    app = make_app(executor_id="exec-d", app_version="v1", telemetry=otel.telemetry)

    @app.workflow(name="doomed", max_recovery_attempts=0)
    async def doomed():
        return 1

    await conn.execute(
        "insert into asyncflow.workflows (workflow_id, name, status, inputs, executor_id, "
        "app_version, recovery_attempts) values ('d', 'doomed', 'PENDING', "
        "'{\"args\": [], \"kwargs\": {}}', null, 'v1', 0)")
    async with app:  # the launch's sweep claims it (attempt 1 > 0) and dead-letters it
        handle = await app.retrieve_workflow("d")
        with pytest.raises(asyncflow.MaxRecoveryAttemptsExceededError):
            await handle.get_result(timeout_seconds=30)
    finished = otel.points("asyncflow.workflows.finished")
    assert [p.value for k, p in finished.items()
            if dict(k)["asyncflow.workflow.status"] == "MAX_RECOVERY_ATTEMPTS_EXCEEDED"] == [1]


async def test_client_sends_carry_the_callers_trace_context(make_app, otel, db_url):
    app = make_app()  # no telemetry in the app: the client's trace context is stored anyway

    @app.workflow(name="inbox")
    async def inbox():
        return await asyncflow.recv(timeout_seconds=30)

    async with app, asyncflow.Client(db_url, telemetry=otel.telemetry) as client:
        handle = await app.start_workflow(inbox, workflow_id="i")
        await app._waits.wait_for_count(1)
        with otel.tracer.start_as_current_span("request") as request:
            await client.send("i", "hello")
            row = await client.get_event("i", "never", timeout_seconds=0.01)
        assert row is None
        assert await handle.get_result() == "hello"
    send = otel.span("asyncflow.send")
    assert child_of(send, request)
    assert otel.span("asyncflow.get_event").attributes["asyncflow.workflow.id"] == "i"


async def test_telemetry_off_costs_an_attribute(make_app):
    app = make_app(telemetry=False)
    async with app:
        assert app.runtime.telemetry is None


def test_bad_telemetry_option_fails_at_construction():
    with pytest.raises(asyncflow.InvalidSettingError, match="telemetry must be"):
        asyncflow.AsyncFlow("postgresql://x/y", telemetry="yes")


async def run_script(script, *args):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(script), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=python_env())
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_without_opentelemetry_installed(db_url):
    # opentelemetry is made unimportable: asyncflow imports, runs workflows, and explains what
    # to install when asked for telemetry.
    output = await run_script("""
        import asyncio, sys
        for name in [m for m in sys.modules if m.startswith("opentelemetry")]:
            del sys.modules[name]
        sys.modules["opentelemetry"] = None
        import asyncflow
        try:
            asyncflow.Telemetry()
        except asyncflow.ConfigurationError as exc:
            print("refused:", exc)
        app = asyncflow.AsyncFlow(sys.argv[1])

        @app.step()
        async def one():
            return 1

        @app.workflow()
        async def wf():
            return await one() + 1

        async def main():
            async with app:
                print("result", await wf(), app.runtime.telemetry)
            print("otel imported:", any(m.startswith("opentelemetry.") for m in sys.modules))

        asyncio.run(main())
    """, db_url)
    assert "refused: OpenTelemetry is not installed: install the `otel` extra" in output
    assert "result 2 None" in output
    assert "otel imported: False" in output


async def test_global_providers_turn_telemetry_on(db_url):
    output = await run_script("""
        import asyncio, sys
        import asyncflow
        from opentelemetry import trace
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        async def run(app):
            @app.workflow(name="wf")
            async def wf():
                return 1

            async with app:
                await wf()
                return app.runtime.telemetry is not None

        async def main():
            print("unconfigured:", await run(asyncflow.AsyncFlow(sys.argv[1])))
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            print("configured:", await run(asyncflow.AsyncFlow(sys.argv[1])))
            print("off:", await run(asyncflow.AsyncFlow(sys.argv[1], telemetry=False)))
            print("spans:", sorted({s.name for s in exporter.get_finished_spans()}))

        asyncio.run(main())
    """, db_url)
    assert "unconfigured: False" in output
    assert "configured: True" in output
    assert "off: False" in output
    assert "spans: ['start_workflow wf', 'workflow wf']" in output


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


async def test_logging_filter_attaches_workflow_and_step(make_app):
    app = make_app()
    handler = Records()
    handler.addFilter(asyncflow.logging_filter())
    mine = logging.getLogger("my.app.orders")
    mine.addHandler(handler)
    mine.setLevel(logging.INFO)

    @app.step(name="charge")
    async def charge():
        mine.info("charging")

    @app.workflow(name="order")
    async def order():
        mine.info("starting")
        await charge()

        async def helper():  # a task started by the workflow inherits its context
            mine.info("in a task")

        await asyncio.create_task(helper())

    try:
        async with app:
            mine.info("outside")
            await app.start_workflow(order, workflow_id="o-1")
            await (await app.retrieve_workflow("o-1")).get_result()
    finally:
        mine.removeHandler(handler)
    seen = {r.getMessage(): (r.workflow_id, r.workflow_name, r.step_name, r.function_id)
            for r in handler.records}
    assert seen == {
        "outside": (None, None, None, None),
        "starting": ("o-1", "order", None, None),
        "charging": ("o-1", "order", "charge", 0),
        "in a task": ("o-1", "order", None, None),
    }
    # In a format string, with a default for records logged outside workflows.
    formatted = logging.Handler()
    formatted.setFormatter(logging.Formatter("%(workflow_id)s %(step_name)s %(message)s"))
    formatted.addFilter(asyncflow.logging_filter(default="-"))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    assert formatted.filter(record)
    assert formatted.format(record) == "- - hello"


async def test_concurrent_sends_keep_their_own_trace_context(make_app, otel, conn):
    # Sends in flight together share one statement (group commit): each message still carries
    # the trace context of its own send.
    app = make_app(telemetry=otel.telemetry)

    @app.workflow(name="mailbox")
    async def mailbox():
        return await asyncflow.recv("never", timeout_seconds=60)

    async def send(n):
        with otel.tracer.start_as_current_span(f"caller {n}"):
            await app.send("mb", n, "later")

    async with app:
        await app.start_workflow(mailbox, workflow_id="mb")
        await asyncio.gather(*(send(n) for n in range(20)))
        rows = await conn.fetch("select message, traceparent from asyncflow.messages")
        await app.cancel_workflow("mb")
    sends = {s.parent.span_id: s for s in otel.spans("asyncflow.send")}
    callers = {s.name: s for s in otel.spans() if s.name.startswith("caller ")}
    stored = {row["message"]: row["traceparent"] for row in rows}
    assert len(stored) == 20
    for n in range(20):
        send_span = sends[callers[f"caller {n}"].context.span_id]
        assert stored[str(n)] == format_traceparent(send_span.context), n


async def test_queued_workflows_join_the_enqueuers_trace_and_report_queue_depth(
        make_app, otel, db_url):
    app = make_app(executor_id="exec-q", telemetry=otel.telemetry)
    app.queue("jobs", concurrency=1)
    gate = asyncio.Event()
    entered = {n: asyncio.Event() for n in range(3)}

    @app.step(name="hold")
    async def hold(n):
        entered[n].set()
        await gate.wait()

    @app.workflow(name="job")
    async def job(n):
        await hold(n)
        return n

    async with asyncflow.Client(db_url, telemetry=otel.telemetry) as client:
        with otel.tracer.start_as_current_span("producer") as producer:
            for n in range(3):  # enqueued before any app serves the queue
                await client.enqueue("jobs", "job", n, workflow_id=f"job-{n}")
    here = frozenset({("asyncflow.executor.id", "exec-q"), ("asyncflow.queue.name", "jobs")})
    async with app:
        await asyncio.wait_for(entered[0].wait(), 30)  # claimed one (concurrency 1), counted
        assert otel.points("asyncflow.queue.depth")[here].value == 2
        gate.set()
        for n in range(3):
            assert await (await app.retrieve_workflow(f"job-{n}")).get_result() == n
        assert otel.points("asyncflow.queue.depth")[here].value == 0
    enqueues = {s.attributes["asyncflow.workflow.id"]: s for s in otel.spans("enqueue job")}
    assert set(enqueues) == {"job-0", "job-1", "job-2"}
    executions = {s.attributes["asyncflow.workflow.id"]: s for s in otel.spans("workflow job")}
    for workflow_id, enqueue in enqueues.items():
        assert child_of(enqueue, producer) and enqueue.kind == SpanKind.PRODUCER
        assert enqueue.attributes["asyncflow.queue.name"] == "jobs"
        assert child_of(executions[workflow_id], enqueue)
        assert executions[workflow_id].attributes["asyncflow.execution.resumed"] is False
        assert not executions[workflow_id].links  # the dispatcher spawned it: no caller
    started = otel.points("asyncflow.workflows.started")
    assert [p.value for k, p in started.items() if dict(k)["asyncflow.workflow.name"] == "job"] \
        == [3]


async def test_enqueue_many_is_one_span_whose_workflows_join_its_trace(make_app, otel, conn):
    app = make_app(telemetry=otel.telemetry)
    queue = app.queue("jobs")

    @app.workflow(name="job")
    async def job(n):
        return n

    async with app:
        with otel.tracer.start_as_current_span("producer") as producer:
            handles = await queue.enqueue_many(job, [(n,) for n in range(3)])
        assert [await h.get_result(timeout_seconds=20) for h in handles] == [0, 1, 2]
    [enqueue] = otel.spans("enqueue job")
    assert child_of(enqueue, producer) and enqueue.kind == SpanKind.PRODUCER
    assert enqueue.attributes["asyncflow.queue.name"] == "jobs"
    executions = otel.spans("workflow job")
    assert len(executions) == 3 and all(child_of(e, enqueue) for e in executions)
    started = otel.points("asyncflow.workflows.started")
    assert [p.value for k, p in started.items() if dict(k)["asyncflow.workflow.name"] == "job"] \
        == [3]


async def test_send_many_carries_trace_context(make_app, otel, conn):
    app = make_app(telemetry=otel.telemetry)

    @app.workflow(name="inbox")
    async def inbox():
        return await asyncflow.recv(timeout_seconds=30)

    async with app:
        handles = [await app.start_workflow(inbox, workflow_id=f"i{n}") for n in range(2)]
        await app._waits.wait_for_count(2)
        with otel.tracer.start_as_current_span("broadcast"):
            assert await app.send_many([("i0", "hi"), ("i1", "hi")]) == [True, True]
        for handle in handles:
            assert await handle.get_result() == "hi"
    send_many = otel.span("asyncflow.send_many")
    for recv in otel.spans("asyncflow.recv"):
        assert [link.context.span_id for link in recv.links] == [send_many.context.span_id]
