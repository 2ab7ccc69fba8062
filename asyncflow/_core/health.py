"""Health of background components: each records its successes and failures here, and
``app.health()`` reports them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from .._status import ComponentHealth

logger = logging.getLogger("asyncflow")


class Monitor:
    """The health record of one background component (listener, supervisor, …)."""

    __slots__ = ("_detail", "_error", "_failures", "_healthy", "_since", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._healthy = False
        self._error: str | None = None
        self._since: datetime | None = None
        self._failures = 0
        self._detail: str | None = None

    def note(self, detail: str | None) -> None:
        """What the component reports besides working or failing (``None``: nothing)."""
        self._detail = detail

    def ok(self) -> None:
        """The component works (again)."""
        if not self._healthy and self._failures:
            logger.info("asyncflow %s recovered after %d failed attempts", self.name,
                        self._failures)
        self._healthy = True
        self._error = None
        self._since = None
        self._failures = 0

    def failed(self, exc: BaseException) -> None:
        """An attempt failed; the component retries on its own. Logged once per streak, then
        every tenth failure."""
        if self._failures == 0:
            self._since = datetime.now(UTC)
        self._healthy = False
        self._failures += 1
        self._error = f"{type(exc).__name__}: {exc}"
        if self._failures == 1 or self._failures % 10 == 0:
            logger.warning("asyncflow %s failing (attempt %d), retrying: %s", self.name,
                           self._failures, self._error)

    def snapshot(self) -> ComponentHealth:
        return ComponentHealth(self._healthy, self._error, self._since, self._failures,
                               self._detail)
