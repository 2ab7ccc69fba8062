"""Shared by the liveness fault workers (tests/procs/liveness_worker.py, launcher.py): an app
whose workflow ``chain`` runs its steps in order, each step body recording its run in the side
table ``step_runs`` (tests/bodycount.py) before anything else, and returning its run id.

Lines printed (the tests' clock, never a sleep):
    GATED <workflow> <step> <run>   a body reached the gate step and waits for SIGUSR1
    EXIT <workflow> <ok|exception>  an execution of the workflow function ended
    LISTENER <executor> <pid>       the listener (re)connected and holds the executor's lock
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from typing import Any

import asyncpg

import asyncflow

#: Opened by SIGUSR1: gated step bodies of this process go on.
gate = asyncio.Event()


def open_gate_on_sigusr1() -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, gate.set)


async def open_side(url: str) -> asyncpg.Pool:
    """The side table's pool: exempt from an idle_session_timeout set for the app's sake."""
    return await asyncpg.create_pool(
        url, min_size=1, max_size=4,
        server_settings={"idle_session_timeout": "0", "application_name": "step-runs"})


def build_app(url: str, executor_id: str, liveness: str, **options: Any) -> asyncflow.AsyncFlow:
    """An app with this executor id; ``liveness`` is its liveness timeout ("-": the default)."""
    options.setdefault("recovery_interval_seconds", 0.2)
    if liveness != "-":
        options["liveness_timeout_seconds"] = float(liveness)
    return asyncflow.AsyncFlow(url, executor_id=executor_id, app_version="liveness", **options)


def register(app: asyncflow.AsyncFlow, side: asyncpg.Pool, executor_id: str) -> Any:
    """Register ``body`` and ``chain`` on ``app``; returns ``chain``."""

    @app.step(name="body")
    async def body(step: int, gate_step: int, step_ms: int) -> str:
        workflow_id = asyncflow.workflow_id()
        run_id = uuid.uuid4().hex
        await side.execute(
            "insert into step_runs values ($1, $2, $3, $4, $5, clock_timestamp())",
            workflow_id, step, executor_id, os.getpid(), run_id)
        if step == gate_step and not gate.is_set():
            print(f"GATED {workflow_id} {step} {run_id}", flush=True)
            await gate.wait()
        elif step_ms:
            await asyncio.sleep(step_ms / 1000)  # the work itself: a real duration
        return run_id

    @app.workflow(name="chain", max_recovery_attempts=10_000)
    async def chain(steps: int, gate_step: int, step_ms: int) -> list[str]:
        workflow_id = asyncflow.workflow_id()
        try:
            out = [await body(step, gate_step, step_ms) for step in range(steps)]
        except BaseException as exc:
            print(f"EXIT {workflow_id} {type(exc).__name__}", flush=True)
            raise
        print(f"EXIT {workflow_id} ok", flush=True)
        return out

    return chain


async def report_listener(app: asyncflow.AsyncFlow, executor_id: str) -> None:
    """Print a LISTENER line each time the listener is connected on a new backend with the
    executor's lock."""
    pid = None
    while True:
        await app.listener.wait_connected(not_pid=pid, lock=True)
        pid = app.listener.backend_pid
        print(f"LISTENER {executor_id} {pid}", flush=True)
