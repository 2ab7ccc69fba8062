"""A worker for the patching tests: one workflow in three versions of its code.

    patch_worker.py URL EXECUTOR_ID VARIANT start ID   launch (recovering), start workflow ID,
                                                       print BLOCKED once every workflow here
                                                       waits for its "go" message
    patch_worker.py URL EXECUTOR_ID VARIANT serve      launch (recovering), print READY, idle

VARIANT: ``old`` (before the change), ``new`` (the change behind ``asyncflow.patched``) or
``deprecated`` (the old branch removed, ``deprecate_patch`` in its place). Every step body
execution inserts a row into ``patch_effects``. ``build`` is imported by the tests too.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncflow

CHANGE = "fast-path"


def build(url: str, variant: str, executor_id: str | None = None,
          effects: Any = None) -> asyncflow.AsyncFlow:
    app = asyncflow.AsyncFlow(url, executor_id=executor_id, app_version="patch-test",
                              recovery_interval_seconds=0.2)

    async def effect(name: str) -> None:
        if effects is not None:
            await effects.execute("insert into patch_effects values ($1, $2)",
                                  asyncflow.workflow_id(), name)

    @app.step(name="step_a")
    async def step_a() -> str:
        await effect("a")
        return "a"

    @app.step(name="step_new")
    async def step_new() -> str:
        await effect("new")
        return "new"

    @app.step(name="step_b")
    async def step_b() -> str:
        await effect("b")
        return "b"

    @app.workflow(name="patched-flow")
    async def flow() -> dict[str, Any]:
        a = await step_a()
        if variant == "new":
            if await asyncflow.patched(CHANGE):
                extra = await step_new()
            else:
                extra = None
        elif variant == "deprecated":
            asyncflow.deprecate_patch(CHANGE)
            extra = await step_new()
        else:
            extra = None
        go = await asyncflow.recv("go", timeout_seconds=600)
        return {"path": "old" if extra is None else "new", "a": a, "go": go,
                "b": await step_b()}

    app.flow = flow  # type: ignore[attr-defined]
    return app


async def main(url: str, executor_id: str, variant: str, role: str) -> None:
    import asyncpg

    effects = await asyncpg.create_pool(url, min_size=1, max_size=2)
    app = build(url, variant, executor_id, effects)
    async with app:
        if role == "start":
            await app.start_workflow(app.flow, workflow_id=sys.argv[5])  # type: ignore[attr-defined]
            await app.runtime.waits.wait_for_count(len(app.running_workflows()))
            print("BLOCKED", flush=True)
        print("READY", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
