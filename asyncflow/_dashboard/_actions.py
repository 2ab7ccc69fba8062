"""The dashboard's actions on a workflow: cancel, resume, send a message, fork from a step.

Each action is posted to ``{root}/action/{name}`` as a form with the workflow ``id`` and the
page's CSRF token (checked by the app before :attr:`Action.run` is called). New actions join
:data:`ACTIONS`; their buttons and forms show on the workflow page only where
:attr:`Action.applies` says they can act, actions with inputs render their own form fields
(:attr:`Action.fields`), and an action with a :attr:`Action.confirm` question is asked on a
confirmation page first (``/confirm?action=…&id=…``). Bad input in a form raises
:class:`FormError`: the page comes back with the text kept and the error shown by the form.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .._core.wait import MESSAGE, RESUMED, STARTED, TERMINAL
from .._errors import InvalidArgumentError, WorkflowConflictError
from .._front.lifecycle import Connected
from ._data import CANCELLABLE, RESUMABLE, Detail
from ._http import HTTPError


@dataclass(frozen=True, slots=True)
class Field:
    """An input of an action's form."""

    name: str
    label: str
    placeholder: str = ""
    multiline: bool = False
    required: bool = False


class FormError(HTTPError):
    """Bad input in an action's form: the workflow page comes back (400) with the form's
    text kept and ``message`` shown by the form."""

    def __init__(self, message: str, action: str, form: dict[str, str]) -> None:
        super().__init__(400, message)
        self.action = action
        self.form = form


@dataclass(frozen=True, slots=True)
class Action:
    """One action. ``run(core, workflow_id, form)`` does it and returns ``(notice, kind,
    target)``: the notice shown after the redirect, the wake-up kind to publish to live pages
    (or None), and the workflow whose page to show next (None: this one). ``applies(detail)``:
    whether it can act on the workflow (its button or form shows only then). ``confirm``: the
    question of its confirmation page (empty: none)."""

    name: str
    label: str
    applies: Callable[[Detail], bool]
    run: Callable[[Connected, str, dict[str, str]], Awaitable[tuple[str, str | None, str | None]]]
    fields: tuple[Field, ...] = ()
    danger: bool = False
    confirm: str = ""


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
        raise FormError(f"the message is not valid JSON ({exc}); quote strings, e.g. "
                        '"text" or {"approved": true}', "send", form) from None
    topic = form.get("topic") or None
    key = form.get("idempotency_key") or None
    send: Callable[..., Awaitable[None]] = getattr(core, "send")  # noqa: B009
    try:
        await send(workflow_id, message, topic, idempotency_key=key)
    except InvalidArgumentError as exc:
        raise FormError(str(exc), "send", form) from None
    return "sent", MESSAGE, None


async def _fork(core: Connected, workflow_id: str, form: dict[str, str]) -> Outcome:
    text = form.get("from_step", "").strip()
    if not text.isdigit():
        raise FormError(f"from operation # must be a number (an operation of the "
                        f"timeline), not {text!r}", "fork", form)
    fork: Callable[..., Awaitable[Any]] = getattr(core, "fork_workflow")  # noqa: B009
    try:
        handle = await fork(workflow_id, from_step=int(text),
                            workflow_id=form.get("workflow_id") or None)
    except (InvalidArgumentError, WorkflowConflictError) as exc:
        raise FormError(str(exc), "fork", form) from None
    return "forked", STARTED, handle.workflow_id


ACTIONS: dict[str, Action] = {
    action.name: action for action in (
        Action("cancel", "Cancel", lambda d: d.status.status in CANCELLABLE, _cancel,
               danger=True, confirm="Cancel this workflow? It stops at its next durable "
               "operation (a wait it is parked in wakes at once) and ends CANCELLED, with its "
               "children. Resume can continue it later from its checkpoints."),
        Action("resume", "Resume", lambda d: d.status.status in RESUMABLE, _resume),
        # A message reaches a workflow that can still receive it: one that has not ended.
        Action("send", "Send message", lambda d: d.status.status in CANCELLABLE, _send, fields=(
            Field("topic", "Topic", "none"),
            Field("message", "Message (JSON)", '{"approved": true}', multiline=True,
                  required=True),
            Field("idempotency_key", "Idempotency key", "optional"),
        )),
        # A fork copies history: a workflow with none (queued, not started) has nothing to fork.
        Action("fork", "Fork from an operation", lambda d: d.has_history, _fork, fields=(
            Field("from_step", "From operation # (of the timeline)", "3", required=True),
            Field("workflow_id", "New workflow id", "optional"),
        )),
    )
}
