"""Running the ``asyncflow`` command line as a subprocess, for the tests of its commands."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from conftest import python_env


def cli_env(db_url: str | None, **extra: str) -> dict[str, str]:
    env = python_env()
    env.pop("ASYNCFLOW_DATABASE_URL", None)
    env.pop("ASYNCFLOW_DATA_DIR", None)
    if db_url is not None:
        env["ASYNCFLOW_DATABASE_URL"] = db_url
    env.update(extra)
    return env


async def start_cli(db_url: str | None, *args: str, cwd: Path | None = None,
                   env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asyncflow", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env if env is not None else cli_env(db_url), cwd=cwd,
    )


async def cli(db_url: str | None, *args: str, **kwargs: Any) -> tuple[int, str, str]:
    """Run ``python -m asyncflow ARGS``; its exit code, stdout and stderr."""
    process = await start_cli(db_url, *args, **kwargs)
    raw_out, raw_err = await asyncio.wait_for(process.communicate(), 60)
    out, err = raw_out.decode(), raw_err.decode()
    assert process.returncode is not None
    assert "Traceback" not in err, err
    return process.returncode, out, err


async def cli_json(db_url: str, *args: str) -> Any:
    code, out, err = await cli(db_url, "--json", *args)
    assert code == 0, err
    return json.loads(out)


async def read_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line, "the command exited early"
    return line.decode().rstrip("\n")


async def run_cli(*args: str, cwd: Path, db_url: str | None = None) -> tuple[int, str, str]:
    """``python -m asyncflow ARGS`` in ``cwd`` (where an app module lives)."""
    return await cli(db_url, *args, cwd=cwd)
