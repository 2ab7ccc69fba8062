"""The store's statements of deploying new code: workflows stranded on a version no live executor
runs, their adoption by another version (journaled in ``version_changes``), and what the versions
view shows (see docs/deploying.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .base import Claimed, StoreBase
from .sql import versions


@dataclass(frozen=True, slots=True)
class Stranded:
    """A workflow waiting for an executor of its version, which no live executor runs."""

    workflow_id: str
    name: str
    status: str
    app_version: str
    #: Its ownership epoch and how many operations it recorded, when read (an adoption is
    #: guarded by both: it happens only if neither changed since the replay).
    epoch: int
    operations: int
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Adopted:
    """A workflow this app adopted: ``claimed`` (a PENDING one, to run here now) or, for a queued
    one (``queue_name``), left in its queue with the new version for a dispatcher."""

    claimed: Claimed
    status: str


@dataclass(frozen=True, slots=True)
class VersionCount:
    """Unfinished workflows of one version in one status, and how many of them are stranded."""

    app_version: str
    status: str
    workflows: int
    stranded: int


@dataclass(frozen=True, slots=True)
class VersionChange:
    """One adoption of a workflow by another version (``replayed``: operations replayed against
    the new code; ``None``: adopted without replay)."""

    epoch: int
    from_version: str
    to_version: str
    executor_id: str | None
    replayed: int | None
    changed_at: datetime


class VersionStatements(StoreBase):
    """Stranded workflows, their adoption, and the versions view."""

    __slots__ = ()

    async def stranded_workflows(self, app_version: str, names: list[str],
                                 limit: int) -> list[Stranded]:
        """Workflows of other versions than ``app_version`` (and of the ``names`` it registers)
        that no live executor of their version can run, oldest first."""
        rows = await self.storage.fetch(versions.STRANDED_WORKFLOWS, app_version, names, limit,
                                        await self._lock_namespace())
        return [Stranded(r["workflow_id"], r["name"], r["status"], r["app_version"], r["epoch"],
                         r["operations"]) for r in rows]

    async def adopt_workflow(self, workflow: Stranded, app_version: str, executor_id: str,
                             replayed: int | None) -> Adopted | None:
        """Adopt a stranded workflow for ``app_version`` if it is still as it was read (same
        version, epoch and journal length, still stranded); ``None``: it was not (another
        process adopted or claimed it, or it moved on)."""
        row = await self.storage.fetchrow(
            versions.ADOPT_WORKFLOW, workflow.workflow_id, app_version, workflow.app_version,
            workflow.epoch, executor_id, workflow.operations, replayed, self.channel,
            await self._lock_namespace())
        if row is None:
            return None
        return Adopted(Claimed(row["workflow_id"], row["name"], row["inputs"],
                               row["recovery_attempts"], row["epoch"], row["queue_name"],
                               row["deadline"]), row["status"])

    async def live_executor_versions(self) -> dict[str | None, int]:
        """How many live executors run each app version (``None``: an older release's)."""
        rows = await self.storage.fetch(versions.LIVE_EXECUTOR_VERSIONS,
                                        await self._lock_namespace())
        return {r["app_version"]: r["executors"] for r in rows}

    async def version_counts(self) -> list[VersionCount]:
        """Unfinished workflows per version and status, with how many are stranded."""
        rows = await self.storage.fetch(versions.VERSION_COUNTS, await self._lock_namespace())
        return [VersionCount(r["app_version"], r["status"], r["workflows"], r["stranded"])
                for r in rows]

    async def stranded_ids(self, limit: int) -> list[Stranded]:
        """The first stranded workflows, oldest first (epoch and journal length left at 0)."""
        rows = await self.storage.fetch(versions.STRANDED_IDS, await self._lock_namespace(), limit)
        return [Stranded(r["workflow_id"], r["name"], r["status"], r["app_version"], 0, 0,
                         r["created_at"]) for r in rows]

    async def workflow_stranded(self, workflow_id: str) -> bool:
        """Whether the workflow waits for an executor of its version that is not there."""
        value = await self.storage.fetchval(versions.WORKFLOW_STRANDED,
                                            await self._lock_namespace(),
                                            workflow_id)
        return bool(value)

    async def version_changes(self, workflow_id: str) -> list[VersionChange]:
        """The adoptions of a workflow by other versions, oldest first."""
        rows = await self.storage.fetch(versions.VERSION_CHANGES, workflow_id)
        return [VersionChange(r["epoch"], r["from_version"], r["to_version"], r["executor_id"],
                              r["replayed"], r["changed_at"]) for r in rows]
