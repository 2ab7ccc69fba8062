"""Retention: finished workflows are deleted once they are older, or more, than the app keeps.

A pass finds its bound once — finished before now minus ``max_age_seconds``, or beyond the
newest ``max_count`` finished ones, by completion time — then deletes everything at or before it
in batches of ``batch_size``, oldest first, each batch one short statement that locks its rows
with ``FOR UPDATE SKIP LOCKED``: nothing waits on it, and a row busy elsewhere (being resumed,
say) is left for the next pass. Unfinished workflows are never deleted, nor the children of a
workflow the pass keeps (it may still read their results, when it runs, is resumed or is
replayed): a child goes with its parent. Every app with a retention setting runs
passes every ``interval_seconds``; several apps doing so share the work safely.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

import anyio
import anyio.abc

from .._core.health import Monitor
from .._core.wait import wait_until
from .._errors import InvalidSettingError
from .._filters import Cursor
from .._storage.store import Store

logger = logging.getLogger("asyncflow")

MAX_BATCH = 10_000
MAX_AGE_SECONDS = 100 * 366 * 24 * 3600.0  # a century: what a Postgres interval holds easily


def _check_seconds(value: object, what: str, *, optional: bool, positive: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value) or value < 0 or (positive and value == 0):
        limit = "> 0" if positive else ">= 0"
        raise InvalidSettingError(f"{what} must be a finite number of seconds {limit}, "
                                   f"not {value!r}")


def _check_int(value: object, what: str, low: int, high: int | None, *,
               optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        upper = "" if high is None else f" and at most {high:,}"
        raise InvalidSettingError(f"{what} must be an int >= {low}{upper}, not {value!r}")


@dataclass(frozen=True, slots=True)
class Retention:
    """How long finished workflows are kept (``AsyncFlow(retention=…)``, ``asyncflow gc``).

    ``max_age_seconds``: delete workflows finished longer ago than this. ``max_count``: keep at
    most this many finished workflows (the most recently finished). Either or both; a workflow
    is deleted when either says so. Deleting a workflow deletes its journal, messages, events
    and streams. Unfinished workflows, and children of workflows kept, are never deleted (a
    child goes with its parent). The app applies it every ``interval_seconds`` (first right
    after launch), in batches of ``batch_size`` workflows.
    """

    max_age_seconds: float | None = None
    max_count: int | None = None
    interval_seconds: float = 60.0
    batch_size: int = 500

    def __post_init__(self) -> None:
        _check_seconds(self.max_age_seconds, "max_age_seconds", optional=True, positive=False)
        if self.max_age_seconds is not None and self.max_age_seconds > MAX_AGE_SECONDS:
            raise InvalidSettingError(
                f"max_age_seconds must be at most {MAX_AGE_SECONDS:.0f} (a century), not "
                f"{self.max_age_seconds!r}")
        _check_int(self.max_count, "max_count", 0, 2**63 - 1, optional=True)
        if self.max_age_seconds is None and self.max_count is None:
            raise InvalidSettingError(
                "Retention needs max_age_seconds, max_count or both (what to delete)")
        _check_seconds(self.interval_seconds, "interval_seconds", optional=False,
                       positive=True)
        _check_int(self.batch_size, "batch_size", 1, MAX_BATCH, optional=False)


async def retention_bound(store: Store, retention: Retention) -> Cursor | None:
    """The last (completed_at, workflow_id) a pass deletes, or ``None``: nothing to delete."""
    age_bound, keep_bound = await store.retention_bounds(retention.max_age_seconds,
                                                         retention.max_count)
    bounds: list[Cursor] = []
    if age_bound is not None:
        bounds.append((age_bound, ""))  # "" sorts first: every workflow finished before
    if keep_bound is not None:
        bounds.append(keep_bound)
    return max(bounds) if bounds else None


async def retention_pass(store: Store, retention: Retention, *, dry_run: bool = False) -> int:
    """Apply ``retention`` once: the number of workflows deleted (with ``dry_run``, the number
    that would be, and nothing is deleted)."""
    bound = await retention_bound(store, retention)
    if bound is None:
        return 0
    if dry_run:
        return await store.retention_count(bound)
    total = 0
    while True:
        # Until a batch finds nothing: deleting parents makes their children due next.
        deleted = await store.retention_delete(bound, retention.batch_size)
        total += len(deleted)
        if not deleted:
            if total:
                logger.info("asyncflow retention deleted %d finished workflows", total)
            return total


class RetentionWorker:
    """Runs retention passes in the background, reported as health component ``retention``."""

    def __init__(self, store: Store, retention: Retention) -> None:
        self._store = store
        self.retention = retention
        self._wakeup = asyncio.Event()
        self.monitor = Monitor("retention")
        self.monitor.ok()  # nothing has failed yet
        self.passes = 0
        self.deleted = 0
        self._targets: list[tuple[int, asyncio.Event]] = []

    def poke(self) -> None:
        """Run a pass now."""
        self._wakeup.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        loop = asyncio.get_running_loop()
        interval = self.retention.interval_seconds
        delay = 0.0
        while True:
            await wait_until(self._wakeup, loop.time() + delay)
            self._wakeup.clear()
            try:
                self.deleted += await retention_pass(self._store, self.retention)
                self.monitor.ok()
                delay = interval
            except Exception as exc:  # any database error: log, report, retry with backoff
                self.monitor.failed(exc)
                delay = min(max(delay * 2, 1.0), interval)
            self.passes += 1
            for target in [t for t in self._targets if self.passes >= t[0]]:
                target[1].set()

    async def wait_for_passes(self, count: int) -> None:
        """Wait until ``count`` passes have run since launch (for tests)."""
        if self.passes >= count:
            return
        done = asyncio.Event()
        target = (count, done)
        self._targets.append(target)
        try:
            await done.wait()
        finally:
            self._targets.remove(target)
