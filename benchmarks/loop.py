"""Which event loop the benchmark's processes run on: asyncio's own (the default) or uvloop
(``--loop uvloop``, the ``bench`` extra), the loop ASGI servers such as uvicorn pick when it is
installed. The choice travels to every process of the run (the scenarios' workers, DBOS's and
pgqueuer's sides) in ``ASYNCFLOW_BENCH_LOOP``, so both sides of a comparison run on the same
loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "ASYNCFLOW_BENCH_LOOP"
LOOPS = ("asyncio", "uvloop")


def chosen() -> str:
    """The loop of this run: ``asyncio`` unless ``ASYNCFLOW_BENCH_LOOP`` says ``uvloop``."""
    name = os.environ.get(ENV, "asyncio")
    if name not in LOOPS:
        raise SystemExit(f"{ENV}={name!r}: expected one of {', '.join(LOOPS)}")
    return name


def choose(name: str) -> None:
    """Run this process and the processes it starts on ``name``'s loop."""
    os.environ[ENV] = name
    chosen()


def describe() -> str:
    """The loop and its version, for the report (``asyncio`` or ``uvloop 0.21.0``)."""
    name = chosen()
    if name == "asyncio":
        return name
    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return name


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    if chosen() == "uvloop":
        try:
            import uvloop
        except ImportError:
            main.close()
            raise SystemExit("--loop uvloop needs uvloop: pip install -e '.[bench]'") from None
        result: T = uvloop.run(main)
        return result
    return asyncio.run(main)
