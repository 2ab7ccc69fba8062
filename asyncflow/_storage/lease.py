"""This launch's hold on its executor id: registration together with the liveness lock,
heartbeats that renew its lease, and the end of the lease at shutdown.

An executor is taken for dead only when its lock is free *and* it has shown no sign of life for
its lease (``liveness_timeout_seconds``): a reconnect drops the lock for a moment, a stalled
statement delays a heartbeat, but neither alone makes a live process look dead. See
docs/operations.md, "Liveness and fencing".
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from .._core.health import Monitor
from .._core.process import host_identity, process_gone, process_identity
from .._errors import ExecutorIdInUseError
from .database import Connection
from .store import Holder, Store

logger = logging.getLogger("asyncflow")

#: Heartbeats per lease: a lease survives this many lost heartbeats less one.
BEATS_PER_LEASE = 5


class Liveness:
    """An app's executor id as this launch holds it: the id, this launch's instance token, its
    lease, the identity of its host and process, and the app version it runs (registered with
    the id: a workflow of a version no live executor runs may be adopted by another)."""

    def __init__(self, store: Store, executor_id: str, lease: float,
                 app_version: str | None = None) -> None:
        self._store = store
        self.executor_id = executor_id
        self.app_version = app_version
        self.lease = lease
        self.interval = lease / BEATS_PER_LEASE
        self.instance = secrets.token_hex(8)
        self.host = host_identity()
        self.process = process_identity()
        self.monitor = Monitor("liveness")
        #: Another launch took this executor id over (this one was silent past its lease).
        self.replaced = False
        #: Loop time of the last renewed heartbeat.
        self.last_beat: float | None = None

    def _in_use(self, detail: str) -> ExecutorIdInUseError:
        return ExecutorIdInUseError(
            f"executor id {self.executor_id!r} is already in use by another live process on "
            f"this database ({detail}); give each process its own executor_id (or leave it "
            "unset for a generated one)")

    async def register(self, conn: Connection) -> None:
        """Take the executor id with its lock on ``conn`` (the listener's connection), or raise
        :class:`ExecutorIdInUseError`. An id whose lock is free but whose lease still runs is
        taken over only once its holder's process is certainly gone (same host) or its lease
        ran out without a sign of life."""
        store = self._store
        while True:
            locked = await store.register_executor(conn, self.executor_id, self.instance,
                                                   self.lease, self.host, self.process,
                                                   self.app_version)
            if locked is not None:
                if not locked:  # cannot happen for a new row's own key; refuse rather than run
                    raise self._in_use("its lock is held")
                self._renewed()
                return
            holder = await store.executor_holder(conn, self.executor_id)
            if holder is None:
                continue  # forgotten meanwhile: register it anew
            if not holder.locked:
                raise self._in_use("its liveness lock is held")
            if await self._take_over(conn, holder):
                self._renewed()
                return
            raise self._in_use("it showed a sign of life while this process waited")

    async def _take_over(self, conn: Connection, holder: Holder) -> bool:
        """This session holds the id's lock; pass the id over once its holder is known gone."""
        gone = holder.host is not None and holder.host == self.host and process_gone(
            holder.process)
        if holder.fresh and not gone:
            logger.warning(
                "asyncflow executor id %s was in use by a process that showed a sign of life "
                "within its lease; waiting up to %.1f s for it to show another before taking "
                "the id over", self.executor_id, holder.fresh_for)
            # Waiting out a lease (not polling state): the take-over below re-checks the holder.
            await asyncio.sleep(holder.fresh_for + 0.05)
        return await self._store.take_over_executor(
            conn, self.executor_id, self.instance, self.lease, self.host, self.process, holder,
            self.app_version)

    def _renewed(self) -> None:
        self.last_beat = asyncio.get_running_loop().time()
        self.monitor.ok()

    async def beat(self, conn: Connection | None) -> bool | None:
        """Renew the lease (on ``conn``, the listener's connection, also check and re-take the
        lock; ``None``: through the pool). Returns whether the lock is held (``None``: not
        checked)."""
        beat = await self._store.heartbeat(conn, self.executor_id, self.instance, self.lease)
        if not beat.held:
            self._lost_id()
            return False
        self._renewed()
        return beat.locked

    def _lost_id(self) -> None:
        if not self.replaced:
            self.replaced = True
            logger.error(
                "asyncflow executor id %s was taken over by another process while this one was "
                "cut off from the database for longer than its lease; this process runs no "
                "workflows any more: restart it", self.executor_id)
        self.monitor.failed(ExecutorIdInUseError(
            f"executor id {self.executor_id!r} was taken over by another process; restart "
            "this one"))

    def connected_for(self, since: float | None, now: float) -> bool:
        """Whether ``since`` (the listener's last reconnect; ``None``: never lost) is a whole
        lease ago: only then may this process declare others dead (right after an outage,
        others may not have renewed their leases yet)."""
        return not self.replaced and (since is None or now - since >= self.lease)

    async def retire(self) -> None:
        """End the lease now (a clean shutdown: what this launch leaves is recovered at once)."""
        if not self.replaced:
            await self._store.retire_executor(self.executor_id, self.instance)
