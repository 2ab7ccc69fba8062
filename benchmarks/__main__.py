"""``python -m benchmarks``: run the suite, print the table, write the JSON results."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import RESULTS_FORMAT, loop
from .compare import SYSTEMS
from .model import Run
from .progress import note
from .report import render, summary, to_json, write_json
from .rounds import render_rounds, summarize
from .runner import run_suite
from .scenarios import DESCRIPTIONS, SCENARIOS

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parser() -> argparse.ArgumentParser:
    scenarios = "\n".join(f"  {name:<12} {text}" for name, text in DESCRIPTIONS.items())
    result = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark asyncflow against the floor of its Postgres server (and DBOS). "
        "Uses ASYNCFLOW_DATABASE_URL, else the embedded Postgres.",
        epilog="scenarios:\n" + scenarios,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    result.add_argument("--scenario", action="append", choices=list(SCENARIOS), metavar="NAME",
                        help="run only this scenario (repeatable)")
    result.add_argument("--quick", action="store_true",
                        help="run every scenario small (seconds): checks the suite works")
    result.add_argument("--compare", action="append", choices=list(SYSTEMS), default=[],
                        help="also run the scenarios the other system has with it, each right "
                        "next to asyncflow's (repeatable): dbos (DBOS Transact: steps to "
                        "fanout and the queues), pgqueuer (the queues); needs the `bench` extra")
    result.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="run everything N times, alternating which side goes first, and "
                        "print each figure's median and range with every round's floor and "
                        "load average")
    result.add_argument("--loop", choices=loop.LOOPS, default=None,
                        help="the event loop of every process of the run: asyncio (default) or "
                        "uvloop (the bench extra; what uvicorn runs on when installed)")
    result.add_argument("--output", type=Path, metavar="PATH",
                        help="JSON results file (default: benchmarks/results/<time>.json)")
    result.add_argument("--otel", action="store_true",
                        help="configure an OpenTelemetry SDK first (spans batched to an exporter "
                        "that drops them, metrics read in memory): measures telemetry's cost "
                        "in the scenarios that run in this process")
    return result


def configure_otel() -> None:
    """Global OpenTelemetry providers, so every app of the run has telemetry on."""
    from collections.abc import Sequence

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(args_list)
    if args.rounds < 1:
        parser().error("--rounds must be at least 1")
    names = args.scenario or list(SCENARIOS)
    names = [name for name in SCENARIOS if name in names]  # canonical order, no repeats
    compare = list(dict.fromkeys(args.compare))
    if args.loop is not None:
        loop.choose(args.loop)
    if args.otel:
        configure_otel()
    runs: list[Run] = []
    for number in range(1, args.rounds + 1):
        if args.rounds > 1:
            note(f"round {number} of {args.rounds}")
        runs.append(loop.run(run_suite(names, quick=args.quick, compare=compare,
                                       argv=args_list,
                                       round_number=number if args.rounds > 1 else None)))
    output = args.output or RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    if len(runs) == 1:
        write_json(to_json(runs[0]), output)
        print(render(runs[0]))
        targets = summary(runs[0])
        if targets:
            print()
            print(targets)
    else:
        totals = summarize(runs)
        write_json({"format": RESULTS_FORMAT, "argv": args_list, "summary": totals,
                    "rounds": [to_json(run) for run in runs]}, output)
        print(render_rounds(runs, totals))
    print(f"\nresults: {output}")
    note("finished")
    failed = [f"{name}" + (f" (round {run.round})" if run.round else "")
              for run in runs for name, result in run.results.items()
              if result.error is not None]
    failed = ["floor"] * any(run.floor is None for run in runs) + failed
    if failed:
        print(f"errors in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
