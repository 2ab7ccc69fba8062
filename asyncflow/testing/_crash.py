"""Simulated crashes and recovery of a workflow at a chosen step, and counting step runs.

Operations are numbered as in ``app.list_workflow_operations(workflow_id)``: every durable
operation of a workflow (step, transaction, send, recv, sleep, event, child start, …) takes the
next number, from 0, in call order. Two crash points:

* ``before=N`` -- the process dies just before operation #N starts: #0…#N-1 are checkpointed and
  are never run again; nothing of #N ran. (The engine's ``on_operation`` hook.)
* ``during=NAME or N`` -- the process dies inside that step, after its body ran and before its
  checkpoint committed (with a step's sends and events, or a transaction's own writes, which
  commit with it): the body runs again on recovery -- steps run at least once, so make them
  idempotent. (The engine's ``on_checkpoint`` hook.)

Recovery is :func:`relaunch`: the app shuts down and launches again with the same executor id,
which resumes the workflow from its journal, as a restarted process would.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .._codec import check_id
from .._errors import InvalidArgumentError
from .._front.app import AsyncFlow
from .._primitives.handle import WorkflowHandle
from ._control import ENGINE_PREFIX, Crash, check_app, control_of
from ._launch import relaunch

R = TypeVar("R")


def _crash_point(before: object, during: object) -> tuple[int | None, str | int | None]:
    if (before is None) == (during is None):
        raise InvalidArgumentError(
            "give exactly one crash point: before=N (before operation #N starts) or "
            "during=NAME_OR_N (after that step's body ran, before its checkpoint)")
    if before is not None:
        if isinstance(before, bool) or not isinstance(before, int) or before < 0:
            raise InvalidArgumentError(
                f"before= is an operation number >= 0 (as in app.list_workflow_operations), not "
                f"{before!r}; to crash in a step by its name use during=")
        return before, None
    if callable(during) and hasattr(during, "__qualname__"):
        during = during.__qualname__  # a decorated step: its default name
    if isinstance(during, bool) or not isinstance(during, str | int) or (
            isinstance(during, int) and during < 0):
        raise InvalidArgumentError(
            f"during= is a step's name, the step function, or an operation number >= 0, not "
            f"{during!r}")
    return None, during


def _check_step_name(app: AsyncFlow, name: str) -> None:
    """Refuse a crash point no step of ``app`` can reach: it would only time out."""
    if name in app._step_names or name.startswith(ENGINE_PREFIX):
        return
    known = ", ".join(repr(one) for one in sorted(app._step_names)) or "none yet"
    raise InvalidArgumentError(
        f"during={name!r} names no step or transaction registered on this app (registered: "
        f"{known}); give a registered step's name, the step function, or an operation number")


def crash_at(
    app: AsyncFlow,
    workflow_id: str | None = None,
    *,
    before: int | None = None,
    during: str | int | Callable[..., Any] | None = None,
) -> Crash:
    """Arm a simulated crash of a workflow of ``app``; returns the :class:`Crash`.

    ``workflow_id``: the workflow to crash (``None``: the first workflow to reach the point).
    ``before=N``: just before its operation #N starts. ``during=``: inside a step, after its body
    ran and before its checkpoint committed -- a step name, the step function (its default
    name, ``__qualname__``) or an operation number. The crash fires once: the execution stops
    there and does nothing more, and the workflow stays ``PENDING`` with its journal as it was,
    until :func:`relaunch` recovers it. Arm it before the workflow gets there. A ``during=``
    name that no step or transaction of ``app`` is registered under raises
    ``InvalidArgumentError`` at once (it could never fire).
    """
    first, second = _crash_point(before, during)
    if workflow_id is not None:
        check_id(workflow_id)
    if isinstance(second, str):
        _check_step_name(check_app(app), second)
    return control_of(app).arm(workflow_id, first, second)


async def crash_and_recover(
    app: AsyncFlow,
    workflow: Callable[..., Coroutine[Any, Any, R]],
    *args: Any,
    workflow_id: str | None = None,
    before: int | None = None,
    during: str | int | Callable[..., Any] | None = None,
    timeout_seconds: float = 60.0,
    **kwargs: Any,
) -> WorkflowHandle[R]:
    """Start ``workflow(*args, **kwargs)``, crash it at the chosen point (see :func:`crash_at`),
    relaunch the app, and return the workflow's handle: it is being recovered.

    Raises ``AssertionError`` with the workflow's journal if it ends without reaching the crash
    point, ``AsyncFlowTimeoutError`` if neither happens within ``timeout_seconds`` (say it waits
    for a message: then arm :func:`crash_at`, start it and send the message yourself).
    """
    target = workflow_id or f"crash-test-{secrets.token_hex(8)}"
    crash = crash_at(app, target, before=before, during=during)
    handle = await app.start_workflow(workflow, *args, workflow_id=target, **kwargs)
    await crash.wait(timeout_seconds)
    await relaunch(app)
    return handle


def step_runs(app: AsyncFlow, workflow_id: str | None = None) -> Counter[str]:
    """Count, from now on, how many times each step or transaction body of ``app``'s workflows
    ran to its end (a result, or its final error after retries) -- of ``workflow_id`` only, if
    given. Returns a live ``Counter`` keyed by step name; a step replayed from its checkpoint
    does not run, so does not count. After a crash ``during`` a step, that step counts 2 and
    the checkpointed ones 1.
    """
    if workflow_id is not None:
        check_id(workflow_id)
    return control_of(app).count_runs(workflow_id)
