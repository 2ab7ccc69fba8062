"""The store's statements of executor liveness: registration with the lock, heartbeats, the
end of a lease, what the supervisor reads to tell the dead from the briefly silent, and the
self-repair of an executor's own workflows that nothing runs (see docs/operations.md,
"Liveness and fencing")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .._errors import ConfigurationError
from .base import Claimed, StoreBase
from .database import Connection, Row, map_errors
from .sql import liveness, workflows


@dataclass(frozen=True, slots=True)
class Holder:
    """The launch holding an executor id, as another launch of the same id found it."""

    lock_key: int
    instance: str | None
    host: str | None
    process: str | None
    beat_at: datetime | None
    #: Its lease is still running (it showed a sign of life within its lease).
    fresh: bool
    #: Seconds its lease still runs.
    fresh_for: float
    #: The finding session took the id's lock: no live session holds it.
    locked: bool


@dataclass(frozen=True, slots=True)
class Beat:
    """A heartbeat's outcome: whether this launch still holds its id, and (on the listener's
    connection) whether it holds the id's lock."""

    held: bool
    locked: bool | None


@dataclass(frozen=True, slots=True)
class Silent:
    """An executor on this host whose lock is free but whose lease still runs."""

    executor_id: str
    instance: str
    process: str | None
    beat_at: datetime


class LivenessStatements(StoreBase):
    """Executor registration, heartbeats and what supervisors read of others' liveness."""

    __slots__ = ()

    async def _fetchrow(self, conn: Connection | None, template: str, *args: object) -> Row | None:
        if conn is None:
            return await self.storage.fetchrow(template, *args)
        with map_errors(conn):
            return await conn.fetchrow(self.storage.sql(template), *args)

    async def lock_namespace_on(self, conn: Connection) -> int:
        """The schema's lock namespace, read on ``conn`` (and remembered)."""
        with map_errors(conn):
            namespace: int = await conn.fetchval(liveness.SCHEMA_LOCK_NAMESPACE,
                                                 self.storage.schema)
        self.storage.lock_namespace = namespace
        return namespace

    async def register_executor(
        self, conn: Connection, executor_id: str, instance: str, lease: float,
        host: str | None, process: str | None, app_version: str | None = None,
    ) -> bool | None:
        """Insert a new executor id (running ``app_version``) with a fresh lease and take its
        lock on ``conn``, in one statement: whether the lock was taken (``None``: the id exists
        already)."""
        namespace = await self.lock_namespace_on(conn)
        row = await self._fetchrow(conn, liveness.REGISTER_EXECUTOR, executor_id, instance,
                                   lease, host,
                                   process, namespace, app_version)
        return None if row is None else bool(row["locked"])

    async def executor_holder(self, conn: Connection, executor_id: str) -> Holder | None:
        """The current holder of an existing executor id, trying its lock on ``conn``."""
        namespace = await self.lock_namespace_on(conn)
        row = await self._fetchrow(conn, liveness.EXECUTOR_STATE, executor_id, namespace)
        if row is None:
            return None
        return Holder(row["lock_key"], row["instance"], row["host"], row["process"],
                      row["beat_at"], bool(row["fresh"]), float(row["fresh_for"]),
                      bool(row["locked"]))

    async def take_over_executor(
        self, conn: Connection, executor_id: str, instance: str, lease: float,
        host: str | None, process: str | None, holder: Holder, app_version: str | None = None,
    ) -> bool:
        """Pass the id to this launch (running ``app_version``) unless its holder showed a sign
        of life meanwhile."""
        row = await self._fetchrow(conn, liveness.TAKE_OVER_EXECUTOR, executor_id, instance, lease,
                                   host, process, holder.instance, holder.beat_at, app_version)
        return row is not None

    async def release_executor_lock(self, conn: Connection, lock_key: int) -> None:
        assert self.storage.lock_namespace is not None
        await self._fetchrow(conn, liveness.RELEASE_EXECUTOR_LOCK, self.storage.lock_namespace,
                             lock_key)

    async def heartbeat(
        self, conn: Connection | None, executor_id: str, instance: str, lease: float
    ) -> Beat:
        """Renew this launch's lease (on ``conn``, the listener's connection: and check or
        re-take its lock; ``None``: on the pool, no lock)."""
        namespace = self.storage.lock_namespace if conn is not None else None
        row = await self._fetchrow(conn, liveness.HEARTBEAT, executor_id, instance, namespace,
                                   lease)
        assert row is not None
        locked = row["locked"]
        return Beat(row["lock_key"] is not None, None if locked is None else bool(locked))

    async def retire_executor(self, executor_id: str, instance: str) -> None:
        """End this launch's lease now (a clean shutdown)."""
        await self.storage.execute(liveness.RETIRE_EXECUTOR, executor_id, instance)

    async def unlocked_on_host(self, host: str, executor_id: str) -> list[Silent]:
        """Executors on ``host`` (other than this one) with a running lease but a free lock."""
        rows = await self.storage.fetch(liveness.UNLOCKED_ON_HOST, host, executor_id,
                                        await self._lock_namespace())
        return [Silent(r["executor_id"], r["instance"], r["process"], r["beat_at"])
                for r in rows]

    async def declare_executor_dead(self, silent: Silent) -> bool:
        """End the lease of an executor whose process is provably gone (unless it beat since)."""
        result = await self.storage.execute(liveness.DECLARE_EXECUTOR_DEAD, silent.executor_id,
                                            silent.instance, silent.beat_at)
        return not result.endswith(" 0")

    # -- self-repair: this executor's own PENDING workflows that nothing runs here ----------

    async def own_pending(self, executor_id: str, min_age: float) -> list[str]:
        """This executor's PENDING workflows untouched for ``min_age`` seconds."""
        rows = await self.storage.fetch(workflows.OWN_PENDING, executor_id, min_age)
        return [row["workflow_id"] for row in rows]

    async def own_pending_count(self, executor_id: str) -> int:
        """How many workflows are PENDING on this executor."""
        count: int = await self.storage.fetchval(workflows.OWN_PENDING_COUNT, executor_id)
        return count

    async def claim_own(
        self, executor_id: str, workflow_ids: list[str], names: list[str], app_version: str
    ) -> list[Claimed]:
        """Claim again (a new epoch) this executor's PENDING ``workflow_ids`` of a registered
        function and this version: the self-repair of workflows nothing runs here."""
        rows = await self.storage.fetch(workflows.CLAIM_OWN, executor_id, workflow_ids, names,
                                        app_version)
        return [
            Claimed(row["workflow_id"], row["name"], row["inputs"], row["recovery_attempts"],
                    row["epoch"], row["queue_name"], row["deadline"])
            for row in rows
        ]

    async def server_identity(self, conn: Connection) -> str:
        """What identifies the server ``conn`` is on (cluster, timeline, start time)."""
        try:
            row = await self._fetchrow(conn, liveness.SERVER_IDENTITY)
        except ConfigurationError:  # pg_control_* not granted here: the start time alone
            row = await self._fetchrow(conn, liveness.SERVER_START)
        assert row is not None
        identity: str = row["identity"]
        return identity

    async def keepalive(self, conn: Connection) -> None:
        """One cheap statement on ``conn``, so the server never finds the session idle."""
        await self._fetchrow(conn, liveness.KEEPALIVE)

    async def probe_wakeups(self, token: str) -> None:
        """Send the listener's probe NOTIFY through the pool."""
        await self.storage.execute(liveness.NOTIFY_PROBE, self.channel, token)

    async def idle_session_timeout(self, conn: Connection) -> float | None:
        """The server's idle_session_timeout in seconds (``None``: off or unknown)."""
        row = await self._fetchrow(conn, liveness.IDLE_SESSION_TIMEOUT)
        if row is None or not row[0]:
            return None
        return float(row[0]) / 1000
