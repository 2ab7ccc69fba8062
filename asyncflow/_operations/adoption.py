"""Deploying new code: this app adopts workflows stranded on other app versions.

A workflow is stranded when it waits for an executor of its app version (PENDING with nobody
live running it, or ENQUEUED/DELAYED after it ran before) and no live executor runs that
version: its processes are gone (a deploy replaced them, or the program was edited and run
again). At launch and on each recovery sweep the app (``upgrade="replay"``, the default) loads
each stranded workflow of a function it registers through the store, replays its journal against
its own registered code in the history-replay sandbox (``replay``: no database, no
effects), and adopts it only when the replay reaches the end of the recorded operations without
diverging: the adoption stamps the app's version with a new epoch, in one guarded statement
(``Store.adopt_workflow``: the version, epoch and journal length that were replayed, and still
stranded), so two processes never both adopt one workflow and nothing recorded after the replay
is adopted unchecked. It is journaled (``version_changes``). An adopted PENDING workflow runs
here at once; a queued one stays in its queue with the new version for a dispatcher.

A workflow whose replay diverges or fails is left for its own version: one warning names the
count and the first ids with the divergence point, and ``health()`` (component ``adoption``)
reports them, as do the dashboard and ``asyncflow versions``. ``upgrade="always"`` adopts
without replay; ``"never"`` adopts nothing (every workflow waits for its own version).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from .._core.health import Monitor
from .._core.wait import QUEUE
from .._engine.runtime import Runtime
from .._engine.supervisor import Supervisor
from .._errors import AsyncFlowError, InvalidSettingError, NonDeterministicWorkflowError
from .._specs import WorkflowSpec
from .._status import PENDING
from .._storage.store import Claimed, Outcome, Stranded
from .archive import WorkflowHistory, from_rows
from .replay import OK, ReplayResult, replay_workflow

logger = logging.getLogger("asyncflow")

REPLAY = "replay"
NEVER = "never"
ALWAYS = "always"
UPGRADE_MODES = (REPLAY, NEVER, ALWAYS)
#: Stranded workflows replayed per sweep (the rest wait for the next sweep).
ADOPT_BATCH = 100
#: Workflows left for their versions that are remembered (not replayed again while unchanged).
MAX_LEFT = 10_000
#: A replay that takes longer fails (the workflow is left for its version).
REPLAY_TIMEOUT = 10.0
#: Workflows named in a warning or in health.
SHOWN = 3


def check_upgrade(value: object) -> str:
    """The ``upgrade=`` setting: ``"replay"``, ``"never"`` or ``"always"``."""
    if not isinstance(value, str) or value not in UPGRADE_MODES:
        raise InvalidSettingError(
            f"upgrade must be 'replay' (adopt workflows of other versions whose history replays "
            f"cleanly against this code), 'never' (each workflow runs only on its own version) "
            f"or 'always' (adopt without replay), not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Left:
    """A stranded workflow this app did not adopt, and why (as replayed: epoch, journal)."""

    workflow_id: str
    app_version: str
    epoch: int
    operations: int
    reason: str

    def describe(self) -> str:
        return f"{self.workflow_id} left for version {self.app_version}: {self.reason}"


def divergence_point(result: ReplayResult) -> str:
    """Why a replay does not allow adoption, in a few words (the divergence point first)."""
    error = result.error
    if isinstance(error, NonDeterministicWorkflowError) and error.function_id is not None:
        called, recorded = error.called_name, error.recorded_name
        if called is not None and recorded is not None:
            return (f"diverges at operation {error.function_id} ({called} vs {recorded} "
                    "recorded)")
        if recorded is not None:
            return (f"diverges at operation {error.function_id} (the new code ends before "
                    f"{recorded})")
        return f"diverges at operation {error.function_id} ({called} past the recorded end)"
    if result.outcome == OK:
        return "replays cleanly"
    return f"cannot be replayed ({result.outcome}): {result.detail}"


class Adopter:
    """This app's adoption of stranded workflows (one per launch; ``sweep`` runs in the
    supervisor's sweeps)."""

    def __init__(self, runtime: Runtime, specs: Mapping[str, WorkflowSpec], app_version: str,
                 mode: str) -> None:
        self._runtime = runtime
        self._specs = specs
        self.app_version = app_version
        self.mode = mode
        self.monitor = Monitor("adoption")
        self.monitor.ok()
        #: Stranded workflows left for their versions, by id.
        self.left: dict[str, Left] = {}
        #: Workflows adopted by this launch.
        self.adopted = 0

    async def sweep(self, may_adopt: bool = True) -> list[Claimed]:
        """Adopt what replays cleanly (``upgrade="always"``: everything) of the stranded
        workflows; returns the PENDING ones adopted, for the caller to run. A failing sweep is
        reported through health and tried again at the next one. Not ``may_adopt`` (the
        supervisor reconnected less than a lease ago: who is stranded is not known yet): nothing
        is adopted, and an earlier failure is no longer reported (the database answers)."""
        claimed: list[Claimed] = []
        if not may_adopt:
            self.monitor.ok()
            return claimed
        try:
            await self._sweep(claimed)
        except AsyncFlowError as exc:
            self.monitor.failed(exc)
        else:
            self._report()
        return claimed

    async def _sweep(self, claimed: list[Claimed]) -> None:
        store = self._runtime.store
        limit = min(ADOPT_BATCH + len(self.left), MAX_LEFT)
        stranded = await store.stranded_workflows(self.app_version, list(self._specs), limit)
        if len(stranded) < limit:  # every stranded one was read: forget those no longer so
            current = {s.workflow_id: s for s in stranded}
            self.left = {wid: left for wid, left in self.left.items()
                         if wid in current and self._unchanged(left, current[wid])}
        fresh = [s for s in stranded if s.workflow_id not in self.left
                 or not self._unchanged(self.left[s.workflow_id], s)][:ADOPT_BATCH]
        if not fresh:
            return
        histories = await self._load([s.workflow_id for s in fresh])
        outcomes = {h.workflow_id: h.outcome() for h in histories.values()}
        adopted: list[tuple[Stranded, int | None]] = []
        newly_left: list[Left] = []
        for candidate in fresh:
            history = histories.get(candidate.workflow_id)
            if history is None:
                continue  # deleted meanwhile
            as_read = _as_read(candidate, history)
            replayed, reason = await self._check(history, outcomes)
            if reason is not None:
                left = Left(as_read.workflow_id, as_read.app_version, as_read.epoch,
                            as_read.operations, reason)
                if len(self.left) < MAX_LEFT:
                    self.left[left.workflow_id] = left
                newly_left.append(left)
                continue
            got = await store.adopt_workflow(as_read, self.app_version,
                                             self._executor_id(), replayed)
            if got is None:
                continue  # adopted or claimed elsewhere, or it moved on: the next sweep sees
            self.adopted += 1
            adopted.append((as_read, replayed))
            if got.status == PENDING:
                claimed.append(got.claimed)
            elif got.claimed.queue_name is not None:
                self._runtime.waits.wake(QUEUE, got.claimed.queue_name)
        self._log(adopted, newly_left)

    @staticmethod
    def _unchanged(left: Left, now: Stranded) -> bool:
        return left.epoch == now.epoch and left.operations == now.operations

    def _executor_id(self) -> str:
        executor_id = self._runtime.executor_id
        assert executor_id is not None
        return executor_id

    async def _load(self, workflow_ids: list[str]) -> dict[str, WorkflowHistory]:
        """The histories to replay (workflow rows and journals, with the rows of the children
        they started), read in one snapshot through the store."""
        store = self._runtime.store
        async with store.snapshot():
            histories = from_rows(await store.export_rows(workflow_ids, ("workflow", "operation")),
                                  workflow_ids)
            loaded = {h.workflow_id for h in histories}
            children = sorted({c for h in histories for c in h.child_ids()} - loaded)
            others = from_rows(await store.export_rows(children, ("workflow",))) \
                if children else []
        by_id = {h.workflow_id: h for h in histories}
        by_id.update({h.workflow_id: h for h in others if h.workflow_id not in by_id})
        return {wid: by_id[wid] for wid in workflow_ids if wid in by_id}

    async def _check(self, history: WorkflowHistory,
                     outcomes: Mapping[str, Outcome]) -> tuple[int | None, str | None]:
        """``(operations replayed, None)`` when the workflow may be adopted (``None``
        operations: adopted without replay), else ``(None, why not)``."""
        if self.mode != REPLAY:
            return None, None
        try:
            result = await replay_workflow(self._specs, history, outcomes, REPLAY_TIMEOUT)
        except Exception as exc:  # a bug of the sandbox itself: never adopt on a guess
            logger.exception("asyncflow could not replay workflow %s to check it against the "
                             "new code", history.workflow_id)
            return None, f"the replay failed: {type(exc).__name__}: {exc}"
        if result.outcome != OK:
            return None, divergence_point(result)
        return result.operations, None

    def _log(self, adopted: list[tuple[Stranded, int | None]], newly_left: list[Left]) -> None:
        if adopted:
            first, replayed = adopted[0]
            how = ("adopted without replay (upgrade='always')" if replayed is None else
                   f"replayed {replayed} operations against the new code")
            if len(adopted) == 1:
                logger.warning("asyncflow adopted workflow %s of version %s (now %s): %s",
                               first.workflow_id, first.app_version, self.app_version, how)
            else:
                versions = ", ".join(sorted({s.app_version for s, _ in adopted}))
                logger.warning("asyncflow adopted %d workflows of version(s) %s (now %s), "
                               "each after its history replayed cleanly; e.g. %s: %s",
                               len(adopted), versions, self.app_version, first.workflow_id,
                               how)
        if newly_left:
            logger.warning(
                "asyncflow left %d workflow(s) for their own app version (their histories do "
                "not replay against this code, and no live process runs their version: start "
                "one to finish them, see docs/deploying.md): %s", len(self.left) or
                len(newly_left), "; ".join(left.describe() for left in newly_left[:SHOWN]))

    def _report(self) -> None:
        if not self.left:
            self.monitor.ok()
            self.monitor.note(None)
            return
        shown = "; ".join(left.describe() for left in list(self.left.values())[:SHOWN])
        self.monitor.ok()
        self.monitor.note(f"{len(self.left)} workflow(s) left for their own app version: "
                          f"{shown}")


def _as_read(candidate: Stranded, history: WorkflowHistory) -> Stranded:
    """The candidate as its loaded history has it (the adoption is guarded by these)."""
    row = history.row
    return Stranded(candidate.workflow_id, candidate.name, str(row["status"]),
                    str(row["app_version"]), int(row.get("epoch", 0)),
                    len(history.rows.get("operation", [])))


def attach(supervisor: Supervisor, runtime: Runtime, specs: Mapping[str, WorkflowSpec],
           app_version: str, mode: str) -> Adopter | None:
    """Give a launch's supervisor its adoption (none with ``upgrade="never"``)."""
    if mode == NEVER:
        return None
    adopter = Adopter(runtime, specs, app_version, mode)
    runtime.monitors[adopter.monitor.name] = adopter.monitor
    supervisor.adopt = adopter.sweep
    return adopter
