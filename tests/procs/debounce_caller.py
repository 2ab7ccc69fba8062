"""A process calling a debouncer in bursts, for the cross-process debounce test.

    debounce_caller.py URL TAG COUNT PERIOD
        launch an app that registers workflow ``debounced`` and its debouncer (key ``burst``,
        period PERIOD seconds) but serves no queue; print READY. On each NOTIFY ``go`` (payload:
        the burst number B) call ``debounce(TAG, B, i)`` for i in 0..COUNT-1 as fast as it can,
        then print ``DONE B <id>[,<id>...]``: the distinct workflow ids the calls returned.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

import asyncflow

URL, TAG, COUNT, PERIOD = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

app = asyncflow.AsyncFlow(URL, executor_id=f"caller-{TAG}", app_version="debounce-test",
                          queues=[])


@app.workflow(name="debounced")
async def debounced(tag: str, burst: int, i: int) -> list[object]:
    return [tag, burst, i]


debouncer = app.debouncer(debounced, key="burst", period_seconds=PERIOD)


async def main() -> None:
    bursts: asyncio.Queue[int] = asyncio.Queue()
    listener = await asyncpg.connect(URL)
    await listener.add_listener("go", lambda *a: bursts.put_nowait(int(a[3])))
    async with app:
        print("READY", flush=True)
        while True:
            burst = await bursts.get()
            ids = set()
            for i in range(COUNT):
                handle = await debouncer.debounce(TAG, burst, i)
                ids.add(handle.workflow_id)
            print(f"DONE {burst} {','.join(sorted(ids))}", flush=True)


asyncio.run(main())
