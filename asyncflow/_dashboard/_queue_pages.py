"""The dashboard's queue pages: every queue with its depth, running workflows and limits, and one
queue's page listing its workflows by status tab. Their live parts are ``queues`` (the table),
``queue`` (one queue's figures) and ``list`` (its workflows)."""

from __future__ import annotations

from dataclasses import replace

from .._specs import QueueSpec
from .._status import DELAYED, ENQUEUED, PENDING
from ._data import FINISHED, Filters, ListPage
from ._html import View, esc, layout, queue_link, when
from ._pages import filter_form, list_part, status_label
from ._queue_data import QueueView

#: The queue page's status tabs (``None``: every status).
TABS: tuple[str | None, ...] = (None, ENQUEUED, DELAYED, PENDING, FINISHED)
QUEUE_PARTS = ("queue", "list")

_UNKNOWN = ('<span class="muted" title="the app serving this dashboard does not register this '
            'queue (a Client knows no queue limits)">unknown here</span>')
_NO_LIMIT = '<span class="muted">none</span>'


def _limit(value: int | None) -> str:
    return _NO_LIMIT if value is None else f"{value:,}"


def _rate(spec: QueueSpec) -> str:
    if spec.rate_limit is None:
        return _NO_LIMIT
    count, per = spec.rate_limit
    return f"{count:,} per {per:g} s"


def _limits(spec: QueueSpec | None) -> list[tuple[str, str]]:
    if spec is None:
        return [("Limits", _UNKNOWN)]
    return [
        ("Concurrency", _limit(spec.concurrency)),
        ("Per worker", _limit(spec.worker_concurrency)),
        ("Rate limit", _rate(spec)),
        ("Per partition", _limit(spec.partition_concurrency)),
    ]


def _cells(spec: QueueSpec | None) -> str:
    if spec is None:
        return f'<td colspan="4">{_UNKNOWN}</td>'
    return "".join(f"<td>{value}</td>" for _label, value in _limits(spec))


def queues_part(view: View, queues: list[QueueView]) -> str:
    """The live table of every queue."""
    if not queues:
        body = ('<p class="empty">No queues yet: none is registered by this app, and no '
                "workflow was ever enqueued.</p>")
    else:
        rows = "".join(
            f'<tr data-queue="{esc(q.name)}"><td>{queue_link(view, q.name)}</td>'
            f'<td class="num" data-count="enqueued">{q.enqueued:,}</td>'
            f'<td class="num" data-count="delayed">{q.delayed:,}</td>'
            f'<td class="num" data-count="running">{q.running:,}</td>'
            f"<td>{when(q.oldest_enqueued)}</td><td>{when(q.next_due)}</td>"
            + _cells(q.spec) + f"<td>{'yes' if q.served else 'no'}</td></tr>"
            for q in queues
        )
        body = (
            '<table class="list queues"><thead><tr><th>Queue</th><th>Enqueued</th>'
            "<th>Delayed</th><th>Running</th><th>Oldest waiting since (UTC)</th>"
            "<th>Next delayed due (UTC)</th><th>Concurrency</th><th>Per worker</th>"
            "<th>Rate limit</th><th>Per partition</th><th>Served here</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    return f'<section data-part="queues">{body}</section>'


def queues_page(view: View, queues: list[QueueView]) -> str:
    """Every queue, updated live."""
    body = (
        "<h1>Queues</h1>"
        '<p class="note">Depth counts ENQUEUED and DELAYED workflows; running counts PENDING '
        "ones. Limits show for the queues the app serving this dashboard registers.</p>"
        + queues_part(view, queues)
    )
    return layout(view, "Queues", body, live=view.url("/live"),
                  fragments=view.url("/queues/parts"))


def queue_part(view: View, queue: QueueView) -> str:
    """One queue's figures and limits."""
    rows = [
        ("Enqueued", f'<span data-count="enqueued">{queue.enqueued:,}</span>'),
        ("Delayed", f'<span data-count="delayed">{queue.delayed:,}</span>'),
        ("Running", f'<span data-count="running">{queue.running:,}</span>'),
        ("Oldest waiting since", when(queue.oldest_enqueued)),
        ("Next delayed due", when(queue.next_due)),
        *_limits(queue.spec),
        ("Served here", "yes" if queue.served else "no"),
    ]
    facts = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    return f'<section data-part="queue"><dl class="facts">{facts}</dl></section>'


def _tabs(view: View, filters: Filters) -> str:
    links = []
    for tab in TABS:
        chosen = replace(filters, status=tab, after=None)
        label = "all" if tab is None else status_label(tab)
        current = ' class="current" aria-current="page"' if tab == filters.status else ""
        links.append(f'<a href="{esc(view.url("/queue", chosen.params()))}"{current} '
                     f'data-tab="{esc(tab or "all")}">{esc(label)}</a>')
    return f'<nav class="tabs">{"".join(links)}</nav>'


def queue_parts(view: View, queue: QueueView, filters: Filters, page: ListPage) -> str:
    """The queue page's live parts."""
    return queue_part(view, queue) + list_part(view, filters, page, "/queue")


def queue_page(
    view: View, queue: QueueView, filters: Filters, problems: list[str], page: ListPage
) -> str:
    """A queue's page: its figures and its workflows (status tabs and the list's filters)."""
    body = (
        f'<p class="crumbs"><a href="{esc(view.url("/queues"))}">Queues</a> &rsaquo;</p>'
        f'<h1>Queue <code class="qname">{esc(queue.name)}</code></h1>'
        + queue_part(view, queue)
        + _tabs(view, filters)
        + filter_form(view, filters, problems, "/queue")
        + list_part(view, filters, page, "/queue")
    )
    return layout(view, f"Queue {queue.name}", body, live=view.url("/live"),
                  fragments=view.url("/queue/parts", filters.params()))
