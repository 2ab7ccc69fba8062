"""Offers a 100 MB value at every place asyncflow stores values and reports the memory cost.

    fault_bigvalue.py URL

Prints one ``REJECTED <where> <error type>`` line per attempt, then ``PEAK_GROWTH_MB <n>``: how
far the process's peak RSS rose above its level with the value already built.
"""

from __future__ import annotations

import asyncio
import resource
import sys

import asyncflow

URL = sys.argv[1]
BIG = "x" * (100 * 1024 * 1024)

app = asyncflow.AsyncFlow(URL, recovery_interval_seconds=0.2)


@app.workflow()
async def offers(where: str) -> object:
    try:
        if where == "message":
            await asyncflow.send(asyncflow.workflow_id(), BIG)
        elif where == "event":
            await asyncflow.set_event("k", BIG)
        elif where == "stream":
            await asyncflow.write_stream("k", BIG)
    except asyncflow.AsyncFlowError as exc:
        return type(exc).__name__
    return BIG if where == "result" else "accepted?"


def peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


async def main() -> None:
    async with app:
        baseline = peak_mb()
        for label, attempt in [
            ("args", lambda: app.start_workflow(offers, BIG)),
            ("send", lambda: app.send("nowhere", BIG)),
        ]:
            try:
                await attempt()
                print("ACCEPTED", label, flush=True)
            except asyncflow.AsyncFlowError as exc:
                print("REJECTED", label, type(exc).__name__, flush=True)
        for where in ("message", "event", "stream"):
            outcome = await (await app.start_workflow(offers, where)).get_result(60)
            print("REJECTED" if outcome != "accepted?" else "ACCEPTED", where, outcome,
                  flush=True)
        handle = await app.start_workflow(offers, "result")
        try:
            await handle.get_result(60)
            print("ACCEPTED result", flush=True)
        except asyncflow.AsyncFlowError as exc:
            status = (await handle.get_status()).status
            print("REJECTED result", type(exc).__name__, status, flush=True)
        print("PEAK_GROWTH_MB", peak_mb() - baseline, flush=True)


asyncio.run(main())
