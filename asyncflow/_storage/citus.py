"""Citus: an asyncflow schema distributed by workflow id (``asyncflow db distribute``,
docs/scaling.md).

:func:`distribute` runs the plan of :mod:`.sql.distribute` on a database with the ``citus``
extension: it migrates the schema, distributes the workflow-keyed tables by workflow id
(co-located), keeps the rest on the coordinator, and installs the functions a distributed
database runs. It may run again at any time (after an upgrade's migrations, say). On plain
Postgres it refuses with :class:`~asyncflow.DistributionError` and changes nothing.

A storage finds out once, when it opens, whether its schema is distributed
(``Storage.distributed``); its statements then take their Citus forms (:mod:`.sql.citus`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import DistributionError
from .database import Storage
from .driver import map_errors
from .sql import distribute as D
from .sql import quote_schema, render


@dataclass(frozen=True)
class Distribution:
    """What :func:`distribute` found and did."""

    #: The Citus version of the database.
    citus_version: str
    #: How many nodes hold shards.
    shard_nodes: int
    #: The tables it distributed now.
    distributed: tuple[str, ...]
    #: The tables that were distributed already (a second run: all of them).
    already: tuple[str, ...]


class _Plan:
    """The plan's statements as written: never a statement's Citus form (``Storage.sql`` gives
    those once the schema is distributed, as on a second run)."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

    def sql(self, template: str) -> str:
        return render(template, self.schema)


async def distribute(storage: Storage, *, shard_count: int = 32) -> Distribution:
    """Distribute ``storage``'s schema on its Citus cluster (migrating it first); idempotent.

    Raises :class:`~asyncflow.DistributionError` on a database without Citus (nothing is
    changed) or without a node to hold shards."""
    if shard_count < 1:
        raise DistributionError("shard_count must be at least 1, not " + repr(shard_count))
    version = await storage.fetchval(D.CITUS_VERSION)
    if version is None:
        raise DistributionError(
            "this database does not run Citus (no 'citus' extension): `asyncflow db distribute` "
            "distributes a schema on a Citus cluster only; on plain Postgres there is nothing to "
            "do. Install Citus, add it to shared_preload_libraries, CREATE EXTENSION citus and "
            "add the worker nodes first (docs/scaling.md)")
    nodes = int(await storage.fetchval(D.SHARD_NODES))
    if nodes == 0:
        raise DistributionError(
            "no node of this Citus cluster holds shards: add the workers with "
            "citus_add_node() (docs/scaling.md) before distributing")
    await storage.migrate()
    plan = _Plan(storage.schema)
    conn = await storage.connect(storage.url)
    try:
        with map_errors(conn):
            await conn.execute(plan.sql(D.DISTRIBUTE_LOCK), storage.namespace)
            done = {row[0] for row in await conn.fetch(plan.sql(D.DISTRIBUTED_TABLES),
                                                        storage.schema)}
            await conn.execute(plan.sql(D.CREATE_ANCHOR))
            if "workflows" not in done:
                await conn.execute(plan.sql(D.REPLACE_UNIQUE_INDEXES))
            if "messages" not in done:
                await conn.execute(plan.sql(D.MESSAGES_KEY))
            await conn.execute(D.ALLOW_TRIGGERS)
            schema = quote_schema(storage.schema)
            workflows = schema + ".workflows"
            made: list[str] = []
            for table, column in D.DISTRIBUTED:
                if table in done:
                    continue
                if table == "workflows":
                    await conn.execute(plan.sql(D.DISTRIBUTE_FIRST), workflows, shard_count)
                else:
                    await conn.execute(plan.sql(D.DISTRIBUTE_COLOCATED),
                                       schema + "." + table, column, workflows)
                made.append(table)
            for function in D.FUNCTIONS:
                await conn.execute(plan.sql(function))
    finally:
        await conn.close()
    await storage.detect_distribution()
    return Distribution(str(version), nodes, tuple(made),
                        tuple(t for t, _ in D.DISTRIBUTED if t in done))
