"""Running a scenario's helper process: ``python -m benchmarks.scenarios.<module>``.

Helpers speak in stdout lines ``KIND payload``; the parent reads them as they come (no polling)
and keeps stderr for the error report.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cpu_seconds(pids: list[int]) -> float:
    """The CPU time (user and system, every thread) the processes have used so far."""
    import psutil  # type: ignore[import-untyped,unused-ignore]  # the `bench` extra, and `dev`

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


class Helper:
    """A helper subprocess whose stdout lines are awaited one by one."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, module: str, *args: str, package: str = "benchmarks.scenarios") -> Helper:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"{package}.{module}", *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT),
        )
        return cls(process)

    async def line(self) -> tuple[str, str]:
        """The next ``(kind, payload)`` line; raises with the helper's stderr if it exited."""
        assert self.process.stdout is not None
        raw = await self.process.stdout.readline()
        if not raw:
            await self.process.wait()
            assert self.process.stderr is not None
            errors = (await self.process.stderr.read()).decode(errors="replace")
            raise RuntimeError(
                f"helper exited with {self.process.returncode} before finishing:\n{errors[-4000:]}"
            )
        kind, _, payload = raw.decode().rstrip("\n").partition(" ")
        return kind, payload

    async def finish(self, grace_s: float = 30) -> int:
        """Close its stdin (the signal to exit) and wait for it; kill it if it hangs."""
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        try:
            async with asyncio.timeout(grace_s):
                return await self.process.wait()
        except TimeoutError:
            self.kill()
            return await self.process.wait()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
