"""What the test kit attaches to an app: its test clock, its armed crashes, the step runs it
counts, and which workflows are waiting.

One :class:`Control` per app object, kept across relaunches: the app calls
:meth:`Control.prepare` with each new runtime before anything runs on it, so the clock offset
and the hooks carry over into the recovery of a crashed workflow. :func:`reset` detaches it
(the pytest plugin does that after every test), so a module-level app starts the next test
clean.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from typing import Any

from .._engine.context import WorkflowContext, step_var, workflow_var
from .._engine.runtime import Runtime
from .._errors import InvalidArgumentError, _ExecutionConflict
from .._front.app import AsyncFlow
from ._until import until_event

#: Operations the engine journals under its own names (sleep, send, wait_first, …).
ENGINE_PREFIX = "asyncflow."


class SimulatedCrash(_ExecutionConflict):
    """Ends a workflow execution at a crash point armed with :func:`crash_at`.

    A ``BaseException`` (user code catching ``Exception`` cannot swallow it): the execution stops
    where it is, writes nothing more, and the workflow stays ``PENDING`` with its journal as a
    killed process would leave it, until the app is relaunched.
    """


SimulatedCrash.__module__ = "asyncflow.testing"


class Crash:
    """A crash armed by :func:`crash_at`: await :meth:`wait` for it to happen.

    After it happened, ``workflow_id`` is the crashed workflow, ``operation`` the number of the
    operation it crashed at (``step`` is its older name) and ``name`` that operation's name
    (``None`` for ``before=``: the operation had not said what it was yet).
    """

    __slots__ = ("_control", "_event", "before", "during", "name", "step", "target",
                 "workflow_id")

    def __init__(
        self,
        control: Control,
        target: str | None,
        before: int | None,
        during: str | int | None,
    ) -> None:
        self._control = control
        self.target = target
        self.before = before
        self.during = during
        self._event = asyncio.Event()
        self.workflow_id: str | None = None
        self.step: int | None = None
        self.name: str | None = None

    @property
    def operation(self) -> int | None:
        """The number of the operation it crashed at (``None`` until it happened)."""
        return self.step

    @property
    def happened(self) -> bool:
        """Whether the crash happened."""
        return self._event.is_set()

    def _fire(self, workflow_id: str, step: int, name: str | None) -> SimulatedCrash:
        self.workflow_id, self.step, self.name = workflow_id, step, name
        self._event.set()
        where = (f"before operation #{step}" if name is None
                 else f"in operation #{step} ({name})")
        return SimulatedCrash(f"simulated crash of workflow {workflow_id!r} {where}")

    def describe(self) -> str:
        """The crash point, as given to :func:`crash_at`."""
        point = f"before={self.before}" if self.before is not None else f"during={self.during!r}"
        who = f"workflow {self.target!r}" if self.target is not None else "any workflow"
        return f"{who} at {point}"

    async def wait(self, timeout_seconds: float = 60.0) -> Crash:
        """Return once the crash happened (itself). If it was armed for one workflow and that
        workflow ends first, raise ``AssertionError`` with its journal (the crash point was never
        reached); ``AsyncFlowTimeoutError`` after ``timeout_seconds``."""

        await until_event(self._control.app, self._event, self.target, timeout_seconds,
                          f"the crash {self.describe()}")
        return self

    def __repr__(self) -> str:
        state = f"happened at operation #{self.step}" if self.happened else "armed"
        return f"<Crash {self.describe()}: {state}>"


Crash.__module__ = "asyncflow.testing"


class Control:
    """The test state of one app object (see the module docstring)."""

    def __init__(self, app: AsyncFlow) -> None:
        self._app = weakref.ref(app)
        self.offset = 0.0
        self.crashes: list[Crash] = []
        self.dead: set[WorkflowContext] = set()  # executions that crashed: they do nothing more
        self.counters: list[tuple[str | None, Counter[str]]] = []
        self.parked: Counter[str] = Counter()
        #: How many times the clock was skipped, and at which of those skips each workflow last
        #: parked: a workflow parked before the latest skip may be leaving the wait it fired.
        self.skips = 0
        self.parked_at: dict[str, int] = {}
        self.park_waiters: dict[str, list[asyncio.Event]] = {}

    @property
    def app(self) -> AsyncFlow:
        app = self._app()
        assert app is not None
        return app

    # -- attaching ---------------------------------------------------------------------------

    def attach(self) -> None:
        app = self.app
        app._prepare_runtime = self.prepare
        app._waits.on_park = self.on_park
        runtime = app._runtime
        if runtime is not None:
            self.offset = runtime.clock_offset
            self.prepare(runtime)

    def detach(self) -> None:
        app = self._app()
        if app is None:
            return
        if app._prepare_runtime == self.prepare:
            app._prepare_runtime = None
        if app._waits.on_park == self.on_park:
            app._waits.on_park = None
        runtime = app._runtime
        if runtime is not None:
            runtime.on_operation = None
            runtime.on_checkpoint = None
            runtime.clock_offset = 0.0
        for events in self.park_waiters.values():
            for event in events:
                event.set()  # nobody waits for a detached app: let until_waiting look again

    def prepare(self, runtime: Runtime) -> None:
        """Give a new runtime of the app the test clock and the hooks."""
        runtime.clock_offset = self.offset
        runtime.on_operation = self.on_operation
        runtime.on_checkpoint = self.on_checkpoint

    # -- the engine's hooks (called synchronously in the workflow's task) ---------------------

    def on_operation(self, workflow_id: str, function_id: int) -> None:
        ctx = workflow_var.get()
        if ctx in self.dead:
            raise SimulatedCrash(f"workflow {workflow_id!r} crashed before: it does nothing more")
        for crash in self.crashes:
            if (crash.before == function_id and not crash.happened
                    and crash.target in (None, workflow_id)):
                self.crashes.remove(crash)
                if ctx is not None:
                    self.dead.add(ctx)
                raise crash._fire(workflow_id, function_id, None)

    def on_checkpoint(self, workflow_id: str, function_id: int, name: str) -> None:
        ctx = workflow_var.get()
        if ctx in self.dead:
            raise SimulatedCrash(f"workflow {workflow_id!r} crashed before: it does nothing more")
        if not name.startswith(ENGINE_PREFIX):
            for target, counter in self.counters:
                if target in (None, workflow_id):
                    counter[name] += 1
        for crash in self.crashes:
            if (crash.during in (name, function_id) and not crash.happened
                    and crash.target in (None, workflow_id)):
                self.crashes.remove(crash)
                if ctx is not None:
                    self.dead.add(ctx)
                raise crash._fire(workflow_id, function_id, name)

    def on_park(self, parking: bool) -> None:
        ctx = workflow_var.get()
        if ctx is None or step_var.get() is not None:
            return  # not a workflow's own wait (the test's get_result, a stream reader, …)
        workflow_id = ctx.workflow_id
        if parking:
            self.parked[workflow_id] += 1
            self.parked_at[workflow_id] = self.skips
            for event in self.park_waiters.pop(workflow_id, []):
                event.set()
        else:
            self.parked[workflow_id] -= 1
            if self.parked[workflow_id] <= 0:
                del self.parked[workflow_id]

    # -- what the helpers use ------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        """Whether this is still its app's control (:func:`reset` detaches it)."""
        app = self._app()
        return app is not None and _controls.get(app) is self

    def waiting_since_skip(self, workflow_id: str) -> bool:
        """Whether the workflow is parked in a wait it parked in after the latest skip."""
        return self.parked[workflow_id] > 0 and self.parked_at.get(workflow_id) == self.skips

    def arm(self, target: str | None, before: int | None, during: str | int | None) -> Crash:
        crash = Crash(self, target, before, during)
        self.crashes.append(crash)
        return crash

    def count_runs(self, workflow_id: str | None) -> Counter[str]:
        counter: Counter[str] = Counter()
        self.counters.append((workflow_id, counter))
        return counter


_controls: weakref.WeakKeyDictionary[AsyncFlow, Control] = weakref.WeakKeyDictionary()


def check_app(app: Any) -> AsyncFlow:
    if not isinstance(app, AsyncFlow):
        raise InvalidArgumentError(
            f"asyncflow.testing works on an AsyncFlow app (the one your workflows are registered "
            f"on), not {type(app).__name__}")
    return app


def control_of(app: AsyncFlow) -> Control:
    """The app's control, attached on first use."""
    control = _controls.get(check_app(app))
    if control is None:
        control = _controls[app] = Control(app)
        control.attach()
    return control


def reset(app: AsyncFlow | None = None) -> None:
    """Forget the test state of ``app`` (every app if ``None``): its test clock goes back to
    the real time, armed crashes are disarmed, counters stop counting. The pytest plugin calls
    it after every test."""
    apps = list(_controls) if app is None else [check_app(app)]
    for one in apps:
        control = _controls.pop(one, None)
        if control is not None:
            control.detach()
