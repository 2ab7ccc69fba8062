"""The workflow of ``recovery``, registered the same way by the process that is killed and by
the app that recovers its workflows (same names, same ``app_version``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeAlias

import asyncflow

APP_VERSION = "bench-recovery"
Job: TypeAlias = Callable[[int], Coroutine[Any, Any, int]]


def build(
    url: str, hold: Callable[[], Awaitable[None]] | None
) -> tuple[asyncflow.AsyncFlow, Job]:
    """An app whose ``bench.recovery.job`` workflow runs one step, then a step that calls
    ``hold`` (the killed process blocks there; the recovering one passes ``None``)."""
    app = asyncflow.AsyncFlow(url, app_version=APP_VERSION)

    @app.step(name="bench.recovery.first")
    async def first(value: int) -> int:
        return value

    @app.step(name="bench.recovery.hold")
    async def held(value: int) -> int:
        if hold is not None:
            await hold()
        return value

    @app.workflow(name="bench.recovery.job")
    async def job(value: int) -> int:
        return await held(await first(value))

    return app, job


def workflow_id(index: int) -> str:
    return f"recovery-{index}"
