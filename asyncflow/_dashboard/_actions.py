"""The dashboard's actions on a workflow: cancel, resume, send a message, fork from a step.

Each action is posted to ``{root}/action/{name}`` as a form with the workflow ``id`` and the
page's CSRF token (checked by the app before :attr:`Action.run` is called). New actions join
:data:`ACTIONS`; their buttons show on the workflow
page for the statuses :attr:`Action.applies` accepts, and actions with inputs render their own
form fields (:attr:`Action.fields`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .._errors import InvalidArgumentError, WorkflowConflictError
from .._lifecycle import Connected
from .._wait import MESSAGE, RESUMED, STARTED, TERMINAL
from ._data import CANCELLABLE, RESUMABLE
from ._http import HTTPError


@dataclass(frozen=True, slots=True)
class Field:
    """An input of an action's form."""

    name: str
    label: str
    placeholder: str = ""
    multiline: bool = False
    required: bool = False


@dataclass(frozen=True, slots=True)
class Action:
    """One action. ``run(core, workflow_id, form)`` does it and returns ``(notice, kind,
    target)``: the notice shown after the redirect, the wake-up kind to publish to live pages
    (or None), and the workflow whose page to show next (None: this one)."""

    name: str
    label: str
    applies: Callable[[str], bool]
    run: Callable[[Connected, str, dict[str, str]], Awaitable[tuple[str, str | None, str | None]]]
    fields: tuple[Field, ...] = ()
    danger: bool = False


NOTICES = {
    "cancelled": "Cancelled: the workflow stops at its next durable operation; a wait it is "
                 "parked in wakes at once.",
    "resumed": "Resumed: a running app continues it from its checkpoints.",
    "sent": "Message sent.",
    "forked": "Forked: this new workflow has the inputs and the history of the one it was "
              "forked from up to the chosen operation, and runs again from there.",
    "unchanged": "Nothing done: the workflow's status did not allow it (it changed meanwhile?).",
}


Outcome = tuple[str, str | None, str | None]


async def _cancel(core: Connected, workflow_id: str, _form: dict[str, str]) -> Outcome:
    if (await core.get_workflow_status(workflow_id)).status not in CANCELLABLE:
        return "unchanged", None, None
    await core.cancel_workflow(workflow_id)
    return "cancelled", TERMINAL, None


async def _resume(core: Connected, workflow_id: str, _form: dict[str, str]) -> Outcome:
    if (await core.get_workflow_status(workflow_id)).status not in RESUMABLE:
        return "unchanged", None, None
    resume: Callable[[str], Awaitable[Any]] = getattr(core, "resume_workflow")  # noqa: B009
    await resume(workflow_id)
    return "resumed", RESUMED, None


async def _send(core: Connected, workflow_id: str, form: dict[str, str]) -> Outcome:
    text = form.get("message", "")
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"the message is not valid JSON ({exc}); quote strings, e.g. "
                        '"text" or {"approved": true}') from None
    topic = form.get("topic") or None
    key = form.get("idempotency_key") or None
    send: Callable[..., Awaitable[None]] = getattr(core, "send")  # noqa: B009
    try:
        await send(workflow_id, message, topic, idempotency_key=key)
    except InvalidArgumentError as exc:
        raise HTTPError(400, str(exc)) from None
    return "sent", MESSAGE, None


async def _fork(core: Connected, workflow_id: str, form: dict[str, str]) -> Outcome:
    text = form.get("from_step", "").strip()
    if not text.isdigit():
        raise HTTPError(400, f"from operation # must be a number (an operation of the "
                        f"timeline), not {text!r}")
    fork: Callable[..., Awaitable[Any]] = getattr(core, "fork_workflow")  # noqa: B009
    try:
        handle = await fork(workflow_id, from_step=int(text),
                            workflow_id=form.get("workflow_id") or None)
    except (InvalidArgumentError, WorkflowConflictError) as exc:
        raise HTTPError(400, str(exc)) from None
    return "forked", STARTED, handle.workflow_id


ACTIONS: dict[str, Action] = {
    action.name: action for action in (
        Action("cancel", "Cancel", lambda status: status in CANCELLABLE, _cancel, danger=True),
        Action("resume", "Resume", lambda status: status in RESUMABLE, _resume),
        Action("send", "Send message", lambda _status: True, _send, fields=(
            Field("topic", "Topic", "none"),
            Field("message", "Message (JSON)", '{"approved": true}', multiline=True,
                  required=True),
            Field("idempotency_key", "Idempotency key", "optional"),
        )),
        Action("fork", "Fork from an operation", lambda _status: True, _fork, fields=(
            Field("from_step", "From operation # (of the timeline)", "3", required=True),
            Field("workflow_id", "New workflow id", "optional"),
        )),
    )
}
