"""A process using the embedded Postgres of DATA_DIR (argv[1]): it launches an app there, runs a
workflow, prints ``ready <url>``, and exits normally when a line (or EOF) arrives on stdin."""

from __future__ import annotations

import asyncio
import sys

import asyncflow


async def main(data_dir: str) -> None:
    app = asyncflow.AsyncFlow(data_dir=data_dir)

    @app.workflow()
    async def hello() -> str:
        return "hello"

    async with app:
        assert await hello() == "hello"
        print("ready", app.database_url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print("bye", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
