"""Prunes dead executors' rows in a loop, as every supervisor does now and then: asyncflow's
own PRUNE_EXECUTORS statement through its Store (tests/faults/test_fault_liveness.py races launches
against three of these).

    pruner.py URL

Prints ``PRUNING`` once it runs, then ``PRUNED <n>`` every 200 prunes.
"""

from __future__ import annotations

import asyncio
import sys

from asyncflow._storage.database import Storage
from asyncflow._storage.sql import liveness
from asyncflow._storage.store import Store


async def main() -> None:
    storage = Storage(sys.argv[1], "asyncflow", pool_size=1)
    await storage.open()
    store = Store(storage)
    storage.lock_namespace = await storage.fetchval(liveness.SCHEMA_LOCK_NAMESPACE, "asyncflow")
    print("PRUNING", flush=True)
    pruned = 0
    while True:
        await store.prune_executors()
        pruned += 1
        if pruned % 200 == 0:
            print(f"PRUNED {pruned}", flush=True)


asyncio.run(main())
