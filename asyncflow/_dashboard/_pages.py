"""The dashboard's pages: the workflow list and a workflow's page, and their live parts.

A live part is an element with ``data-part="name"``; the page's script re-fetches the parts a
change touches and swaps them in. Forms the user types into are never inside a live part.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from .._storage.store import VersionChange
from ._actions import ACTIONS, NOTICES, Action, FormError
from ._data import (
    FINISHED,
    PAGE_SIZE,
    SINCE,
    STATUS_CHOICES,
    STREAM_KEYS,
    Detail,
    Filters,
    ListPage,
    PendingMessage,
    StreamView,
    Value,
)
from ._html import (
    View,
    badge,
    esc,
    hidden,
    layout,
    queue_link,
    seconds,
    value_block,
    when,
    workflow_link,
)
from ._queue_data import QueueView

_ACTIVITY_HINT = ("the later of the workflow's last state change (start, claim, end) and its "
                  "last journal entry: it moves with every completed operation")


# -- the list -----------------------------------------------------------------------------------


def status_label(status: str) -> str:
    """How a status filter's value is shown (FINISHED: "finished")."""
    return "finished" if status == FINISHED else status


def filter_form(view: View, filters: Filters, problems: list[str], path: str = "/") -> str:
    """The filters' form. On a queue's page (``path`` ``/queue``) the queue and the status (its
    tabs) are fixed: they travel as hidden fields."""
    on_queue = path != "/"
    options = ['<option value="">any status</option>'] + [
        f'<option value="{esc(s)}"{" selected" if s == filters.status else ""}>'
        f"{esc(status_label(s))}</option>" for s in STATUS_CHOICES
    ]
    since = ['<option value="">any time</option>'] + [
        f'<option value="{esc(k)}"{" selected" if k == filters.since else ""}>'
        f"last {esc(label)}</option>" for k, (label, _delta) in SINCE.items()
    ]

    def field(name: str, label: str, value: str | None, placeholder: str = "") -> str:
        return (f'<label>{esc(label)}<input name="{esc(name)}" value="{esc(value or "")}" '
                f'placeholder="{esc(placeholder)}"></label>')

    def moment(value: datetime | None) -> str | None:
        return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")

    problem_list = "".join(f"<li>{esc(p)}</li>" for p in problems)
    fixed = ""
    if on_queue:
        fixed = hidden("queue", filters.queue or "") + (
            hidden("status", filters.status) if filters.status else "")
        reset = view.url(path, [("queue", filters.queue or "")] + (
            [("status", filters.status)] if filters.status else []))
        narrowed = any(v is not None for v in (filters.name, filters.id_prefix, filters.since,
                                               filters.created_from, filters.created_to,
                                               filters.attrs))
    else:
        reset, narrowed = view.url("/"), filters.active
    return (
        f'<form class="filters" method="get" action="{esc(view.url(path))}">' + fixed
        + ("" if on_queue else
           f'<label>Status<select name="status">{"".join(options)}</select></label>')
        + field("name", "Name", filters.name, "exact workflow name")
        + ("" if on_queue else field("queue", "Queue", filters.queue, "queue name"))
        + field("id", "Id prefix", filters.id_prefix, "starts with")
        + field("attr", "Attributes", filters.attrs, "customer=c-42, n:=3")
        + f'<label>Created<select name="since">{"".join(since)}</select></label>'
        + field("from", "From (UTC)", moment(filters.created_from), "2025-01-31T14:00")
        + field("to", "To (UTC)", moment(filters.created_to), "2025-01-31T15:00")
        + (hidden("limit", str(filters.limit)) if filters.limit != PAGE_SIZE else "")
        + '<button type="submit">Filter</button>'
        + (f'<a class="reset" href="{esc(reset)}">Reset</a>' if narrowed else "")
        + "</form>"
        + (f'<ul class="problems">{problem_list}</ul>' if problems else "")
    )


def list_part(view: View, filters: Filters, page: ListPage, path: str = "/") -> str:
    """The live table of workflows (and the link to the next page); ``path``: the page's."""
    if not page.workflows:
        what = "matching these filters" if filters.active or filters.after else "yet"
        table = f'<p class="empty">No workflows {what}.</p>'
    else:
        rows = []
        for w in page.workflows:
            ended = w.completed_at or datetime.now(UTC)
            parent = workflow_link(view, w.parent_workflow_id) if w.parent_workflow_id else ""
            queue = queue_link(view, w.queue_name) if w.queue_name else ""
            rows.append(
                f'<tr data-workflow-id="{esc(w.workflow_id)}">'
                f"<td>{workflow_link(view, w.workflow_id)}</td><td>{esc(w.name)}</td>"
                f"<td>{badge(w.status)}</td><td>{queue}</td><td>{when(w.created_at)}</td>"
                f"<td>{seconds((ended - w.created_at).total_seconds())}</td>"
                f"<td data-activity>{when(page.activity.get(w.workflow_id, w.updated_at))}</td>"
                f'<td class="small">{esc(w.executor_id) if w.executor_id else "&ndash;"}</td>'
                f"<td>{w.recovery_attempts}</td><td>{parent}</td></tr>"
            )
        table = (
            '<table class="list"><thead><tr><th>Id</th><th>Name</th><th>Status</th>'
            "<th>Queue</th><th>Created (UTC)</th><th>Duration</th>"
            f'<th title="{esc(_ACTIVITY_HINT)}">Last activity (UTC)</th>'
            "<th>Executor</th>"
            "<th>Recoveries</th><th>Parent</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>"
        )
    pager = []
    if filters.after is not None:
        pager.append(f'<a href="{esc(view.url(path, filters.params(page=False)))}">'
                     "« newest</a>")
    if page.more:
        following = filters.next_page(page.workflows[-1])
        pager.append(f'<a href="{esc(view.url(path, following.params()))}">older »</a>')
    nav = f'<nav class="pager">{" ".join(pager)}</nav>' if pager else ""
    return f'<section data-part="list">{table}{nav}</section>'


def list_page(view: View, filters: Filters, problems: list[str], page: ListPage) -> str:
    """The workflow list with its filters, updated live."""
    params = filters.params()
    body = (
        "<h1>Workflows</h1>"
        + filter_form(view, filters, problems)
        + list_part(view, filters, page)
    )
    return layout(view, "Workflows", body, live=view.url("/live"),
                  fragments=view.url("/list", params))


# -- one workflow -------------------------------------------------------------------------------

NONE = '<span class="muted">none</span>'
PARTS = ("summary", "io", "timeline", "events", "streams", "messages")


def _action_button(view: View, action: Action, workflow_id: str) -> str:
    css = "danger" if action.danger else ""
    if action.confirm:  # asked on the confirmation page first
        return (
            f'<form class="inline" method="get" action="{esc(view.url("/confirm"))}">'
            f'{hidden("action", action.name)}{hidden("id", workflow_id)}'
            f'<button type="submit" class="{css}" data-action="{esc(action.name)}">'
            f"{esc(action.label)}…</button></form>"
        )
    return (
        f'<form class="inline" method="post" action="{esc(view.url("/action/" + action.name))}">'
        f'{hidden("id", workflow_id)}{hidden("csrf", view.csrf)}'
        f'<button type="submit" class="{css}" data-action="{esc(action.name)}">'
        f"{esc(action.label)}</button></form>"
    )


def _queue_state(queue: QueueView) -> str:
    limit = "" if queue.spec is None or queue.spec.concurrency is None else (
        f" (concurrency {queue.spec.concurrency:,})")
    return (f'<span data-queue-state="{esc(queue.name)}"><span data-count="enqueued">'
            f'{queue.enqueued:,}</span> enqueued, <span data-count="delayed">{queue.delayed:,}'
            f'</span> delayed, <span data-count="running">{queue.running:,}</span> running'
            f"{limit}</span>")


def summary_part(view: View, detail: Detail, queue: QueueView | None = None) -> str:
    """Status, timestamps, its queue's state and the buttons of the actions that apply now."""
    w = detail.status
    ended = w.completed_at or datetime.now(UTC)
    rows = [
        ("Status", badge(w.status)),
        ("Name", esc(w.name)),
        ("Created", when(w.created_at)),
        (f'<span title="{esc(_ACTIVITY_HINT)}">Last activity</span>',
         f'<span data-activity>{when(detail.last_activity)}</span>'),
        ("Completed", when(w.completed_at)),
        ("Duration", seconds((ended - w.created_at).total_seconds())),
        ("Executor", esc(w.executor_id or "unassigned")),
        ("App version", _version(detail)),
        ("Recovery attempts", str(w.recovery_attempts)),
    ]
    rows += [("Adopted", _adoption(change)) for change in detail.version_changes]
    if w.run > 1 or w.run_of is not None:
        rows.append(("Run", str(w.run) + (
            f" (continued as new: {workflow_link(view, w.run_of)})" if w.run_of else "")))
    if w.attributes:
        rows.append(("Attributes", _attributes(view, w.attributes)))
    if w.parent_workflow_id:
        rows.append(("Parent", workflow_link(view, w.parent_workflow_id)))
    if w.queue_name is not None:
        rows += [
            ("Queue", queue_link(view, w.queue_name)),
            ("Priority", str(w.priority)),
            ("Deduplication id", esc(w.deduplication_id) if w.deduplication_id else NONE),
            ("Partition", esc(w.partition_key) if w.partition_key else NONE),
            ("Delay until", when(w.delay_until)),
            ("Dispatched", when(w.dispatched_at)),
        ]
        if queue is not None:
            rows.append(("Queue state", _queue_state(queue)))
    facts = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    buttons = "".join(
        _action_button(view, action, w.workflow_id)
        for action in ACTIONS.values() if not action.fields and action.applies(detail)
    )
    actions = ""
    if view.can_act and buttons:
        actions = f'<div class="actions">{buttons}</div>'
    return f'<section data-part="summary"><dl class="facts">{facts}</dl>{actions}</section>'


def _attributes(view: View, attributes: dict[str, Any]) -> str:
    """Each attribute as a link to the list of workflows having it (scalar values)."""
    items = []
    for key, value in attributes.items():
        if isinstance(value, str):
            typed = f"{key}={value}"
        else:
            typed = f"{key}:=" + orjson.dumps(value).decode()
        shown = esc(typed)
        if not isinstance(value, list | dict) and "," not in typed:
            shown = f'<a href="{esc(view.url("/", [("attr", typed)]))}">{shown}</a>'
        items.append(f'<code class="attribute">{shown}</code>')
    return " ".join(items)


def _version(detail: Detail) -> str:
    """The workflow's app version, and whether it waits for a process of that version."""
    shown = esc(detail.status.app_version)
    if detail.stranded:
        shown += (' <span class="stranded" data-stranded="yes">waiting for an executor of this '
                  "version: none is live (start one, or deploy code its history replays "
                  "against)</span>")
    return shown


def _adoption(change: VersionChange) -> str:
    """One adoption of the workflow by another app version."""
    how = ("without replay" if change.replayed is None
           else f"after replaying {change.replayed} operations")
    by = f" by executor {esc(change.executor_id)}" if change.executor_id else ""
    return (f'<span data-adopted="{esc(change.to_version)}">from version '
            f"{esc(change.from_version)} to {esc(change.to_version)}{by}, {how}, "
            f"{when(change.changed_at)}</span>")


def io_part(detail: Detail) -> str:
    """Inputs, and the result or the error with its traceback."""
    parts = [f'<div class="io"><h3>Inputs</h3>{value_block(detail.inputs)}</div>']
    if detail.status.status == "SUCCESS":
        parts.append(f'<div class="io"><h3>Result</h3>{value_block(detail.output)}</div>')
    if detail.error is not None:
        error = detail.error
        trace = (f'<details open><summary>Traceback</summary><pre class="traceback">'
                 f"{esc(error.traceback)}</pre></details>" if error.traceback else "")
        parts.append(
            f'<div class="io error"><h3>Error</h3><p class="problem"><strong>'
            f"{esc(error.type_name)}</strong>: {esc(error.message)}</p>{trace}</div>"
        )
    return f'<section data-part="io" class="columns">{"".join(parts)}</section>'


def events_part(events: list[tuple[str, Value]]) -> str:
    """The workflow's current events."""
    if not events:
        body = '<p class="empty">No events set.</p>'
    else:
        body = '<table class="kv"><thead><tr><th>Key</th><th>Value</th></tr></thead><tbody>' + \
            "".join(f'<tr data-event-key="{esc(k)}"><td><code>{esc(k)}</code></td>'
                    f"<td>{value_block(v, css='value small')}</td></tr>"
                    for k, v in events) + "</tbody></table>"
    return f'<section data-part="events"><h2>Events</h2>{body}</section>'


def _stream(view: StreamView) -> str:
    state = "closed" if view.closed else ("ended" if view.ended else "open")
    first = view.entries[0][0] if view.entries else view.count
    skipped = (f'<li class="note">{first:,} earlier entries not shown</li>' if first else "")
    items = "".join(f'<li data-offset="{offset}"><span class="offset">{offset}</span>'
                    f"{value_block(value, css='value small')}</li>"
                    for offset, value in view.entries)
    return (
        f'<div class="stream" data-stream-key="{esc(view.key)}" data-state="{state}">'
        f'<h3><code>{esc(view.key)}</code> <span class="muted">{view.count:,} '
        f'{"entry" if view.count == 1 else "entries"}, '
        f'{state}</span></h3><ol class="stream-entries" data-stream-key="{esc(view.key)}">'
        f"{skipped}{items}</ol></div>"
    )


def streams_part(streams: list[StreamView], more: bool) -> str:
    """The workflow's streams, each with its last entries."""
    if not streams:
        body = '<p class="empty">No streams written.</p>'
    else:
        body = "".join(_stream(s) for s in streams)
        if more:
            body += f'<p class="note">Only the first {STREAM_KEYS} streams are shown.</p>'
    return f'<section data-part="streams"><h2>Streams</h2>{body}</section>'


def messages_part(messages: list[PendingMessage], total: int) -> str:
    """The messages waiting in the workflow's mailboxes."""
    if not messages:
        body = '<p class="empty">No messages waiting.</p>'
    else:
        rows = "".join(
            f'<tr data-message-id="{m.message_id}"><td>{when(m.created_at)}</td><td>'
            + ("<span class=\"muted\">none</span>" if m.topic is None
               else f"<code>{esc(m.topic)}</code>")
            + f"</td><td>{value_block(m.value, css='value small')}</td></tr>"
            for m in messages
        )
        more = (f'<p class="note">{total - len(messages):,} more not shown.</p>'
                if total > len(messages) else "")
        body = ('<table class="kv"><thead><tr><th>Sent (UTC)</th><th>Topic</th>'
                f"<th>Message</th></tr></thead><tbody>{rows}</tbody></table>{more}")
    return (f'<section data-part="messages"><h2>Pending messages '
            f'<span class="muted">({total:,})</span></h2>{body}</section>')


def actions_off(view: View) -> str:
    """Why there are no actions, and how to get them."""
    how = view.actions_hint or ("pass <code>auth=</code> to the dashboard (or restart "
                                "<code>asyncflow dashboard</code> with "
                                "<code>--allow-actions</code>) to enable them")
    return f'<p class="note" data-actions="off">Actions are disabled: {how}.</p>'


def _action_forms(view: View, detail: Detail, failed: FormError | None) -> str:
    if not view.can_act:
        return f'<section class="forms">{actions_off(view)}</section>'
    forms = []
    for action in ACTIONS.values():
        if not action.fields or not action.applies(detail):
            continue
        kept = failed.form if failed is not None and failed.action == action.name else {}
        inputs = []
        for f in action.fields:
            required = " required" if f.required else ""
            text = kept.get(f.name, "")
            control = (
                f'<textarea name="{esc(f.name)}" placeholder="{esc(f.placeholder)}" rows="3"'
                f"{required}>{esc(text)}</textarea>" if f.multiline else
                f'<input name="{esc(f.name)}" placeholder="{esc(f.placeholder)}" '
                f'value="{esc(text)}"{required}>'
            )
            inputs.append(f"<label>{esc(f.label)}{control}</label>")
        problem = ""
        if failed is not None and failed.action == action.name:
            problem = f'<p class="problem form-error" role="alert">{esc(failed.message)}</p>'
        forms.append(
            f'<form class="action-form" method="post" data-action="{esc(action.name)}" '
            f'action="{esc(view.url("/action/" + action.name))}"><h3>{esc(action.label)}</h3>'
            f'{problem}{hidden("id", detail.status.workflow_id)}{hidden("csrf", view.csrf)}'
            f'{"".join(inputs)}<button type="submit">{esc(action.label)}</button></form>'
        )
    return f'<section class="forms">{"".join(forms)}</section>'


def workflow_page(view: View, detail: Detail, parts: dict[str, str], notice: str | None,
                  *, failed: FormError | None = None, ops: int | None = None) -> str:
    """A workflow's page; ``parts`` are its rendered live parts; ``failed``: a form's bad input
    (shown by its form, its text kept); ``ops``: the timeline page shown (None: the latest)."""
    w = detail.status
    flash = ""
    if notice in NOTICES:
        flash = f'<p class="notice" data-notice="{esc(notice)}">{esc(NOTICES[notice])}</p>'
    body = (
        f'<p class="crumbs"><a href="{esc(view.url("/"))}">Workflows</a> &rsaquo;</p>'
        f'<h1>Workflow <code class="wid">{esc(w.workflow_id)}</code></h1>{flash}'
        + "".join(parts[name] for name in PARTS if name in parts)
        + _action_forms(view, detail, failed)
    )
    follow = [("id", w.workflow_id)] + ([("queue", w.queue_name)] if w.queue_name else [])
    page = [("id", w.workflow_id)] + ([] if ops is None else [("ops", str(ops))])
    return layout(view, f"Workflow {w.workflow_id}", body,
                  live=view.url("/live", follow),
                  fragments=view.url("/workflow/parts", page))


def confirm_page(view: View, action: Action, detail: Detail) -> str:
    """The question of an action that asks first: yes posts it, no goes back."""
    w = detail.status
    back = view.workflow_url(w.workflow_id)
    if not action.applies(detail):
        body = (f'<h1>{esc(action.label)} <code class="wid">{esc(w.workflow_id)}</code></h1>'
                f'<p class="problem">Nothing to do: the workflow is {badge(w.status)} now.</p>'
                f'<p><a href="{esc(back)}">Back to the workflow</a></p>')
        return layout(view, f"{action.label} {w.workflow_id}", body)
    body = (
        f'<p class="crumbs"><a href="{esc(view.url("/"))}">Workflows</a> &rsaquo; '
        f"{workflow_link(view, w.workflow_id)} &rsaquo;</p>"
        f'<h1>{esc(action.label)} workflow <code class="wid">{esc(w.workflow_id)}</code>?</h1>'
        f'<p class="question">{esc(action.confirm)}</p>'
        f'<p>It is {badge(w.status)} ({esc(w.name)}).</p>'
        f'<form class="inline confirm" method="post" '
        f'action="{esc(view.url("/action/" + action.name))}">'
        f'{hidden("id", w.workflow_id)}{hidden("csrf", view.csrf)}'
        f'<button type="submit" class="danger" data-confirm="{esc(action.name)}">'
        f"Yes, {esc(action.label.lower())} it</button></form> "
        f'<a class="button" href="{esc(back)}" data-confirm="no">No, go back</a>'
    )
    return layout(view, f"{action.label} {w.workflow_id}?", body)
