"""What the dashboard's queue pages show: every queue known to the database (or registered by the
serving app) with its depth, its running workflows and — when the serving app registers it — its
limits, read through the read-only ``DASHBOARD_QUEUE*`` queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._front.lifecycle import Connected
from .._specs import QueueSpec


@dataclass(frozen=True, slots=True)
class QueueView:
    """A queue's figures: its depth (``enqueued``, ``delayed``), its ``running`` workflows
    (PENDING), when the next DELAYED one is due, since when the oldest ENQUEUED one waits; its
    limits (``spec``) when the serving app registers it (``None``: unknown here, e.g. from a
    Client), and whether this process dispatches it (``served``)."""

    name: str
    enqueued: int
    delayed: int
    running: int
    next_due: datetime | None
    oldest_enqueued: datetime | None
    spec: QueueSpec | None
    served: bool


def queue_specs(core: Connected) -> dict[str, QueueSpec]:
    """The queues the source registers, by name (an app's ``app.queue(...)``; a Client: none)."""
    registered: dict[str, Any] = getattr(core, "_queues", None) or {}
    return {name: queue.spec for name, queue in registered.items()}


def _served(core: Connected) -> set[str]:
    dispatchers: dict[str, Any] = getattr(core, "_dispatchers", None) or {}
    return set(dispatchers)


def _queue_view(name: str, row: Any, specs: dict[str, QueueSpec], served: set[str]) -> QueueView:
    return QueueView(name, row["enqueued"], row["delayed"], row["running"], row["next_due"],
                     row["oldest_enqueued"], specs.get(name), name in served)


async def list_queues(core: Connected) -> list[QueueView]:
    """Every queue known to the database or registered by the source, by name."""
    specs = queue_specs(core)
    rows = await core.runtime.store.dashboard_queues(sorted(specs))
    served = _served(core)
    return [_queue_view(row["queue_name"], row, specs, served) for row in rows]


async def queue_detail(core: Connected, name: str) -> QueueView | None:
    """One queue's figures; ``None`` when neither the database nor the source knows it."""
    specs = queue_specs(core)
    row = await core.runtime.store.dashboard_queue(name)
    if row is None or not (row["known"] or name in specs):
        return None
    return _queue_view(name, row, specs, _served(core))
