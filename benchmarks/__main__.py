"""``python -m benchmarks``: run the suite, print the table, write the JSON results."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from .progress import note
from .report import render, summary, write_json
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
    result.add_argument("--compare", choices=["dbos"],
                        help="also run scenarios 1-5 with DBOS Transact (needs `dbos`)")
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
    names = args.scenario or list(SCENARIOS)
    names = [name for name in SCENARIOS if name in names]  # canonical order, no repeats
    if args.otel:
        configure_otel()
    run = asyncio.run(run_suite(names, quick=args.quick, compare=args.compare, argv=args_list))
    output = args.output or RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(run, output)
    print(render(run))
    targets = summary(run)
    if targets:
        print()
        print(targets)
    print(f"\nresults: {output}")
    note("finished")
    failed = [name for name, result in run.results.items() if result.error is not None]
    if run.floor is None or failed:
        print(f"errors in: {', '.join(['floor'] * (run.floor is None) + failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
