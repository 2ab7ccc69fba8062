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
    return result


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(args_list)
    names = args.scenario or list(SCENARIOS)
    names = [name for name in SCENARIOS if name in names]  # canonical order, no repeats
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
