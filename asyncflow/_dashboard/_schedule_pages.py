"""The dashboard's schedules page: every stored schedule with its definition, whether it is
paused, its last tick (a link to that run) and its next one, and its actions — pause, resume,
trigger now, backfill a range of ticks, and (for a schedule made with ``create_schedule``)
delete, with a confirmation box — posted to ``/schedule-action/{name}`` with the page's CSRF
token, behind the same auth, origin and token checks as the workflow actions. Its live part is
``schedules``. Schedules are created from code or the CLI (``asyncflow schedule create``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .._errors import AsyncFlowError, InvalidArgumentError
from .._front.lifecycle import Connected
from .._operations.schedules import next_tick, tick_workflow_id
from .._specs import ScheduleSpec
from .._storage.schedules import ScheduleStatus
from ._html import View, esc, hidden, layout, queue_link, when, workflow_link

_CRONITER_MISSING = "unknown (the croniter package is not installed here)"


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """A stored schedule, its next tick (``None``: paused, or not computable here, with
    ``next_note`` saying why), and the workflow its last tick started (``None``: none, e.g. the
    tick it was registered at, or one skipped)."""

    status: ScheduleStatus
    next_tick: datetime | None
    next_note: str
    last_run: str | None


def _next(schedule: ScheduleStatus, now: datetime) -> tuple[datetime | None, str]:
    if schedule.paused:
        return None, "paused"
    spec = ScheduleSpec(schedule.name, schedule.workflow_name, schedule.cron, schedule.timezone,
                        schedule.catch_up, schedule.queue_name, 0.0)
    after = max(now, schedule.last_tick) if schedule.last_tick is not None else now
    try:
        return next_tick(spec, after), ""
    except AsyncFlowError:
        return None, _CRONITER_MISSING
    except (ValueError, KeyError) as exc:  # an expression this croniter cannot read
        return None, f"unknown ({exc})"


async def list_schedules(core: Connected) -> list[ScheduleView]:
    """Every stored schedule, by name, with its next tick on the runtime clock."""
    now = datetime.fromtimestamp(core.runtime.now(), UTC)
    schedules = await core.list_schedules()
    runs = {s.name: tick_workflow_id(s.name, s.last_tick) for s in schedules
            if s.last_tick is not None}
    started = await core.runtime.store.existing_workflow_ids(list(runs.values())) if runs else set()
    return [ScheduleView(s, *_next(s, now), runs[s.name] if runs.get(s.name) in started else None)
            for s in schedules]


# -- actions ------------------------------------------------------------------------------------


Form = dict[str, str]


async def _pause(core: Connected, name: str, form: Form) -> tuple[str, str | None]:
    await core.pause_schedule(name)
    return "paused", None


async def _resume(core: Connected, name: str, form: Form) -> tuple[str, str | None]:
    await core.resume_schedule(name)
    return "resumed", None


async def _trigger(core: Connected, name: str, form: Form) -> tuple[str, str | None]:
    return "triggered", await core.trigger_schedule(name)


def _utc(form: Form, field: str) -> datetime:
    text = form.get(field, "").strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgumentError(
            f"the backfill's {field} must be a time like 2026-01-31T14:00 (UTC), not "
            f"{text!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


async def _backfill(core: Connected, name: str, form: Form) -> tuple[str, str | None]:
    ids = await core.backfill_schedule(name, _utc(form, "start"), _utc(form, "end"))
    return ("backfilled" if ids else "backfilled-none"), (ids[0] if ids else None)


async def _delete(core: Connected, name: str, form: Form) -> tuple[str, str | None]:
    if form.get("confirm") != "yes":
        raise InvalidArgumentError(
            f"deleting schedule {name!r} needs its confirmation box ticked; nothing was deleted")
    await core.delete_schedule(name)
    return "deleted", None


#: The schedule actions by route name: ``(label, run)``; ``run`` (given the form) returns the
#: notice's key and the workflow id of the run it started (or None).
SCHEDULE_ACTIONS: dict[str, tuple[str, Callable[[Connected, str, Form],
                                                Awaitable[tuple[str, str | None]]]]] = {
    "pause": ("Pause", _pause),
    "resume": ("Resume", _resume),
    "trigger": ("Trigger now", _trigger),
    "backfill": ("Backfill", _backfill),
    "delete": ("Delete", _delete),
}

NOTICES = {
    "paused": "Paused: no tick starts in any process until it is resumed (a trigger still "
              "runs).",
    "resumed": "Resumed: it runs again from its next tick on (ticks missed while paused are "
               "not run).",
    "triggered": "Triggered: a live app serving this schedule starts the run at once.",
    "backfilled": "Backfill recorded: a live app serving this schedule runs every tick of the "
                  "range that has not run yet (ticks that ran are skipped).",
    "backfilled-none": "No tick of this schedule falls in that range: nothing to backfill.",
    "deleted": "Deleted: no tick of it starts in any process any more (runs already started go "
               "on).",
}


# -- the page -----------------------------------------------------------------------------------


def _button(view: View, action: str, name: str, fields: str = "") -> str:
    label = SCHEDULE_ACTIONS[action][0]
    return (
        f'<form class="inline" method="post" '
        f'action="{esc(view.url("/schedule-action/" + action))}">'
        f'{hidden("schedule", name)}{hidden("csrf", view.csrf)}{fields}'
        f'<button type="submit" data-schedule-action="{esc(action)}">{esc(label)}</button>'
        "</form>"
    )


_BACKFILL_FIELDS = (
    '<label>from <input type="datetime-local" name="start" step="1" required></label> '
    '<label>to <input type="datetime-local" name="end" step="1" required></label> '
    '<span class="muted">UTC</span> ')
_DELETE_FIELDS = '<label><input type="checkbox" name="confirm" value="yes" required> sure</label> '


def _row(view: View, item: ScheduleView) -> str:
    s = item.status
    last = when(s.last_tick)
    if item.last_run is not None:
        last += " " + workflow_link(view, item.last_run)
    upcoming = (when(item.next_tick) if item.next_tick is not None
                else f'<span class="muted">{esc(item.next_note)}</span>')
    state = "paused" if s.paused else "active"
    trigger = (f'<br><span class="muted">trigger pending since</span> {when(s.triggered_at)}'
               if s.triggered_at is not None else "")
    actions = ""
    if view.can_act:
        actions = (_button(view, "resume" if s.paused else "pause", s.name)
                   + _button(view, "trigger", s.name)
                   + _button(view, "backfill", s.name, _BACKFILL_FIELDS)
                   + (_button(view, "delete", s.name, _DELETE_FIELDS) if s.dynamic else ""))
    made = ' <span class="muted">(created at runtime)</span>' if s.dynamic else ""
    return (
        f'<tr data-schedule="{esc(s.name)}" data-state="{state}">'
        f'<td><code class="sname">{esc(s.name)}</code>{made}</td>'
        f"<td>{esc(s.workflow_name)}</td>"
        f"<td><code>{esc(s.cron)}</code> <span class=\"muted\">{esc(s.timezone)}</span></td>"
        f"<td>{esc(s.catch_up)}</td>"
        f"<td>{queue_link(view, s.queue_name) if s.queue_name else ''}</td>"
        f'<td><span class="badge st-{"delayed" if s.paused else "success"}">{state}</span>'
        f"</td><td>{last}{trigger}</td><td data-next>{upcoming}</td>"
        f'<td class="actions">{actions}</td></tr>'
    )


def schedules_part(view: View, schedules: list[ScheduleView]) -> str:
    """The live table of every schedule."""
    if not schedules:
        body = ('<p class="empty">No schedules: none was registered with '
                "<code>@app.scheduled</code> by an app on this database, or made with "
                "<code>create_schedule</code>.</p>")
    else:
        body = ('<table class="list schedules"><thead><tr><th>Schedule</th><th>Workflow</th>'
                "<th>Cron</th><th>Catch-up</th><th>Queue</th><th>State</th>"
                "<th>Last tick (UTC)</th><th>Next tick (UTC)</th><th>Actions</th></tr></thead>"
                f'<tbody>{"".join(_row(view, s) for s in schedules)}</tbody></table>')
    return f'<section data-part="schedules">{body}</section>'


def schedules_page(view: View, schedules: list[ScheduleView], notice: str | None,
                   schedule: str | None, run: str | None, actions_off: str) -> str:
    """Every schedule, updated live; ``notice``: the outcome of an action on ``schedule``
    (``run``: the workflow a trigger starts)."""
    flash = ""
    if notice in NOTICES and schedule:
        first = "Its first run" if notice == "backfilled" else "Its run"
        started = f" {first}: {workflow_link(view, run)}." if run else ""
        flash = (f'<p class="notice" data-notice="{esc(notice)}"><code>{esc(schedule)}</code>: '
                 f"{esc(NOTICES[notice])}{started}</p>")
    body = (
        "<h1>Schedules</h1>" + flash
        + '<p class="note">Next ticks are worked out on this process\'s clock from each '
        "schedule's cron expression and time zone.</p>"
        + schedules_part(view, schedules)
        + ("" if view.can_act else actions_off)
    )
    return layout(view, "Schedules", body, live=view.url("/live"),
                  fragments=view.url("/schedules/parts"))
