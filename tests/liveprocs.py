"""Driving the liveness fault workers (tests/procs/liveness_worker.py, launcher.py, pruner.py)
from a test: start them, follow their output lines, find and kill their backends."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import asyncpg


class Lines:
    """Reads a worker's output lines in order, per prefix, without missing one that another
    wait already read (every line read is kept in ``proc.lines``)."""

    def __init__(self, proc: Any) -> None:
        self.proc = proc
        self._cursor: dict[str, int] = {}

    def seen(self, prefix: str) -> list[str]:
        return [line for line in self.proc.lines if line.startswith(prefix)]

    async def next(self, prefix: str, within: float = 60) -> str:
        lines = self.proc.lines
        for i in range(self._cursor.get(prefix, 0), len(lines)):
            if lines[i].startswith(prefix):
                self._cursor[prefix] = i + 1
                return str(lines[i])
        line = await self.proc.expect(prefix, within)
        self._cursor[prefix] = len(self.proc.lines)
        return str(line)

    async def listener(self, not_pid: int | None = None, within: float = 60) -> int:
        """The pid of the worker's next listener backend (holding its executor lock) other than
        ``not_pid``."""
        while True:
            pid = int((await self.next("LISTENER", within)).split()[2])
            if pid != not_pid:
                return pid

    async def watch(self, seconds: float) -> None:
        """Read whatever the worker prints for ``seconds`` (into ``proc.lines``): the window in
        which a test checks that something bad does *not* happen."""
        stdout = self.proc.process.stdout
        try:
            async with asyncio.timeout(seconds):
                while raw := await stdout.readline():
                    self.proc.lines.append(raw.decode().rstrip("\n"))
        except TimeoutError:
            pass

    def open_gate(self) -> None:
        self.proc.process.send_signal(signal.SIGUSR1)


async def start(procs: Callable[..., Any], script: str, *args: object,
                ready: str = "READY") -> Lines:
    proc = await procs(script, *(str(a) for a in args))
    lines = Lines(proc)
    await lines.next(ready)
    return lines


async def start_worker(procs: Callable[..., Any], app_url: str, side_url: str, executor: str,
                       liveness: str, gated: int, steps: int, gate_step: int,
                       running: tuple[int, int, int] = (0, 0, 0)) -> Lines:
    """A liveness_worker.py, READY: its workflows started (see that script)."""
    return await start(procs, "liveness_worker.py", app_url, side_url, executor, liveness,
                       gated, steps, gate_step, *running)


def expected_steps(executor: str, gated: int, steps: int,
                   running: tuple[int, int, int] = (0, 0, 0)) -> dict[str, int]:
    """The workflows a liveness_worker.py starts: id -> step count."""
    out = {f"{executor}-g{n}": steps for n in range(gated)}
    out.update({f"{executor}-r{n}": running[1] for n in range(running[0])})
    return out


async def terminate_listener(conn: asyncpg.Connection, executor: str, pid: int) -> None:
    """Kill an executor's listener backend, found by its ``application_name``: the one whose
    pid the worker printed last."""
    named = [r["pid"] for r in await conn.fetch(
        "select pid from pg_stat_activity where application_name = $1",
        f"asyncflow-listener:{executor}")]
    # (A backend just terminated may still be listed for a moment under the same name.)
    assert pid in named, (named, pid)
    assert await conn.fetchval("select pg_terminate_backend($1::int)", pid), pid


async def results(url: str, ids: list[str], within: float = 60) -> dict[str, Any]:
    """Wait for every workflow's outcome (an exception counts as one)."""
    import asyncflow

    async with asyncflow.Client(url) as client:
        handles = [await client.retrieve_workflow(wid) for wid in ids]
        values = await asyncio.gather(*(h.get_result(timeout_seconds=within) for h in handles),
                                      return_exceptions=True)
    return dict(zip(ids, values, strict=True))
