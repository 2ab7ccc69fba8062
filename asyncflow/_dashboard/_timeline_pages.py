"""A workflow's journal on its page: the waterfall (each operation as a bar on a time axis) and
the timeline table (each operation with its key, topic and value), a page at a time. Both are
in the live part ``timeline``.

The waterfall is an inline SVG per row (bars placed by ``x``/``width`` attributes, coloured by
the stylesheet): no script and no inline style, so the page's strict Content-Security-Policy
holds.
"""

from __future__ import annotations

from datetime import datetime

from ._data import Value
from ._html import View, esc, seconds, when, workflow_link
from ._journal_data import WAITS, Entry, JournalPage

KIND_LABELS = {
    "step": "step", "send": "send", "recv": "recv", "get_event": "get event",
    "set_event": "set event", "write_stream": "stream write", "close_stream": "stream close",
    "sleep": "sleep", "child": "child workflow", "wait_first": "wait first",
    "set_attributes": "set attributes", "continue_as_new": "continue as new",
}
_DURATION_HINT = ("time since the previous operation ended: the journal records when each "
                  "operation completed, so this is the step's duration when operations ran one "
                  "after another")
#: Values longer than this (or on several lines) are shown cut, with an expander.
SHORT = 80
_WIDTH = 1000  # the SVG's user units across
#: The waterfall shows open up to this many operations; longer ones start collapsed.
WATERFALL_OPEN = 30


def expander(value: Value | None, ident: str) -> str:
    """A value in one line, cut to :data:`SHORT` characters; longer ones open to their whole
    (as far as the dashboard reads it) with a ``<details>`` expander."""
    if value is None:
        return '<span class="muted">none</span>'
    text = value.text
    if len(text) <= SHORT and "\n" not in text and not value.cut:
        return f'<code class="value-inline">{esc(text)}</code>'
    flat = " ".join(text.split())
    head = flat[:SHORT] + "…"
    note = ""
    if value.cut:
        note = (f'<div class="note">showing the first {len(text):,} of '
                f"{value.length:,} characters</div>")
    return (f'<details class="expander" data-expander="{esc(ident)}"><summary>'
            f'<code class="value-inline">{esc(head)}</code></summary>'
            f'<pre class="value small">{esc(text)}</pre>{note}</details>')


def _key(label: str, key: str | None) -> str:
    if key is None:
        return ""
    return f'<span class="field">{esc(label)} <code class="key">{esc(key)}</code></span> '


def _outcome(view: View, e: Entry) -> str:
    ident = f"op-{e.function_id}"
    if e.kind == "send":
        if e.target is None:  # recorded before sends described themselves
            return ""
        topic = (_key("topic", e.topic) if e.topic is not None else
                 '<span class="field">topic <span class="muted">none</span></span> ')
        return (f'<span class="field">to {workflow_link(view, e.target)}</span> {topic}'
                + expander(e.value, ident))
    if e.kind == "set_event":
        return _key("key", e.key) + (expander(e.value, ident) if e.key is not None else "")
    if e.kind == "write_stream":
        written = expander(e.value, ident) if e.value is not None else ""
        return _key("stream", e.key) + (
            f'<span class="problem">{esc(e.error)}</span>' if e.error else written)
    if e.kind == "close_stream":
        return _key("stream", e.key) + '<span class="muted">closed</span>'
    if e.error is not None:
        return f'<span class="problem">{esc(e.error)}</span>'
    if e.kind == "child" and e.child_id:
        return workflow_link(view, e.child_id)
    if e.kind == "sleep":
        return f"until {when(e.until)}" if e.until else ""
    if e.kind in WAITS:
        on = _key("topic", e.topic) if e.kind == "recv" else ""  # (recorded since migration 12)
        if e.state == "waiting":
            return on + '<span class="muted">waiting…</span>'
        if e.state == "interrupted":
            return on + '<span class="muted">ended while waiting</span>'
        verb = {"recv": "received", "get_event": "read"}.get(e.kind, "fired")
        return f"{on}{verb} {expander(e.value, ident)}"
    if e.kind in ("step", "set_attributes", "continue_as_new"):
        return expander(e.value, ident)
    return ""


def _label(e: Entry) -> str:
    # Built-in operations are named by their kind; others (send_many, …) by their own name.
    name = esc(e.name.removeprefix("asyncflow.")) if e.kind == "step" else ""
    return (f'<span class="kind">{esc(KIND_LABELS.get(e.kind, e.kind))}</span> '
            f'<span class="opname">{name}</span>')


def _span(e: Entry) -> float | None:
    if e.start is None or e.end is None:
        return None
    return max(0.0, (e.end - e.start).total_seconds())


def waterfall(entries: list[Entry], now: datetime, running: bool) -> str:
    """The entries as bars on one time axis (the page's first start to its last end)."""
    starts = [e.start or e.created_at for e in entries]
    ends = [e.end or e.created_at for e in entries]
    t0 = min(starts)
    t1 = max([*ends, now] if running else ends)
    total = max((t1 - t0).total_seconds(), 1e-6)
    rows = []
    for e, start, end in zip(entries, starts, ends, strict=True):
        x = (start - t0).total_seconds() / total * _WIDTH
        width = max((end - start).total_seconds() / total * _WIDTH, 3.0)
        x = min(x, _WIDTH - width)
        span = _span(e)
        took = seconds(span, approximate=e.approximate or e.kind in WAITS) if span else ""
        title = f"#{e.function_id} {KIND_LABELS.get(e.kind, e.kind)} {e.name} ({e.state})"
        rows.append(
            f'<li class="wf-row" data-function-id="{e.function_id}" data-state="{esc(e.state)}">'
            f'<span class="wf-label">{e.function_id} {_label(e)}</span>'
            f'<svg class="wf-track" viewBox="0 0 {_WIDTH} 12" preserveAspectRatio="none" '
            f'role="img"><title>{esc(title)}</title>'
            f'<rect class="wf-bar k-{esc(e.kind)} s-{esc(e.state)}" x="{x:.1f}" y="1" '
            f'width="{width:.1f}" height="10"></rect></svg>'
            f'<span class="wf-took">{took}</span></li>'
        )
    scale = seconds(total)
    opened = " open" if len(entries) <= WATERFALL_OPEN else ""
    return (f'<details class="waterfall" data-expander="waterfall"{opened}><summary>'
            f"Waterfall of the {len(entries):,} operations below: {when(t0)} to {when(t1)} "
            f'({scale} across)</summary><ol class="wf">{"".join(rows)}</ol></details>')


def _pager(view: View, workflow_id: str, page: JournalPage) -> str:
    links = []

    def link(label: str, first: int | None, rel: str) -> None:
        params = [("id", workflow_id)] + ([] if first is None else [("ops", str(first))])
        links.append(f'<a href="{esc(view.url("/workflow", params))}" data-pager="{rel}">'
                     f"{esc(label)}</a>")

    if page.earlier is not None:
        if page.earlier != page.start:
            link("first", page.start, "first")
        link("« earlier", page.earlier, "earlier")
    if page.later is not None:
        link("later »", page.later, "later")
        link("latest", None, "latest")
    if not links:
        return ""
    shown = (f"operations {page.entries[0].function_id} to {page.entries[-1].function_id} "
             f"of {page.start} to {page.last}")
    return f'<nav class="pager timeline-pager"><span class="muted">{shown}</span> ' + \
        " ".join(links) + "</nav>"


def timeline_part(view: View, workflow_id: str, page: JournalPage, now: datetime,
                  running: bool) -> str:
    """The journal page: its waterfall and its table, one row per operation."""
    if not page.entries:
        return ('<section data-part="timeline"><h2>Timeline</h2>'
                '<p class="empty">No operations recorded yet.</p></section>')
    rows = []
    for e in page.entries:
        duration = seconds(e.duration, approximate=e.approximate,
                           title=_DURATION_HINT if e.approximate else "")
        rows.append(
            f'<tr class="op op-{esc(e.kind)} state-{esc(e.state)}" '
            f'data-function-id="{e.function_id}" data-state="{esc(e.state)}">'
            f"<td>{e.function_id}</td><td>{when(e.created_at)}</td>"
            f"<td>{_label(e)}</td>"
            f'<td><span class="state">{esc(e.state)}</span></td><td>{duration}</td>'
            f'<td class="outcome">{_outcome(view, e)}</td></tr>'
        )
    pager = _pager(view, workflow_id, page)
    return (
        '<section data-part="timeline"><h2>Timeline</h2>' + pager
        + waterfall(page.entries, now, running)
        + '<table class="timeline"><thead><tr><th>#</th><th>Recorded (UTC)</th>'
        "<th>Operation</th><th>State</th><th>Duration</th><th>Outcome</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table>" + pager + "</section>"
    )
