"""A pgqueuer worker process of the queue comparisons (:mod:`benchmarks.pgqueuer_runner`).

``python -m benchmarks.pgqueuer_worker URL``: a ``QueueManager`` with pgqueuer's defaults
(``batch_size`` 10, its LISTEN channel) over one asyncpg connection, serving

- ``bench_ping``: prints ``RAN <job id> <time.monotonic()>`` (a clock all processes share);
- ``bench_noop``: prints ``D`` (one line per job: the runner counts them);
- ``bench_ready_<pid>``: a job this worker enqueues for itself at start; it prints ``READY``, so
  the runner knows the worker is dequeuing before it times anything.

Exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import asyncpg
from pgqueuer import Job, PgQueuer, Queries

from . import loop


async def main(url: str) -> None:
    conn = await asyncpg.connect(url)
    pgq = PgQueuer.from_asyncpg_connection(conn)
    ready = f"bench_ready_{os.getpid()}"

    @pgq.entrypoint("bench_ping")
    async def ping(job: Job) -> None:
        print(f"RAN {job.id} {time.monotonic()!r}", flush=True)

    @pgq.entrypoint("bench_noop")
    async def noop(job: Job) -> None:
        print("D", flush=True)

    @pgq.entrypoint(ready)
    async def announce(job: Job) -> None:
        print("READY", flush=True)

    async def stop_when_stdin_closes() -> None:
        await asyncio.to_thread(sys.stdin.read)
        pgq.shutdown.set()

    other = await asyncpg.connect(url)
    try:
        await Queries.from_asyncpg_connection(other).enqueue(ready, None)
    finally:
        await other.close()
    stopper = asyncio.ensure_future(stop_when_stdin_closes())
    try:
        await pgq.qm.run()  # the queue manager alone: no schedules here
    finally:
        stopper.cancel()
        await conn.close()


if __name__ == "__main__":
    loop.run(main(sys.argv[1]))
