"""HTML building blocks of the dashboard: escaping, the page layout, values, times, badges.

Every piece of data (ids, names, values, messages) goes through :func:`esc` before it reaches
the page; URLs are built with :meth:`View.url` and escaped like any other attribute value.
"""

from __future__ import annotations

import html
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime

from ._data import Value
from ._static import STATIC


def esc(value: object) -> str:
    """Escape text for HTML content and (double-quoted) attribute values."""
    return html.escape(str(value), quote=True)


@dataclass(frozen=True, slots=True)
class View:
    """What every page needs to know about its request: the mount prefix (links are absolute
    paths under it), the CSRF token its forms carry, whether actions are allowed, and (HTML)
    how to enable them where they are not (empty: the general advice)."""

    root: str
    csrf: str
    can_act: bool
    actions_hint: str = ""

    def url(self, path: str, params: list[tuple[str, str]] | None = None) -> str:
        """An absolute URL path under the mount point, with query parameters."""
        query = urllib.parse.urlencode(params or [], quote_via=urllib.parse.quote)
        return f"{self.root}{path}" + (f"?{query}" if query else "")

    def workflow_url(self, workflow_id: str) -> str:
        """The URL of a workflow's page."""
        return self.url("/workflow", [("id", workflow_id)])

    def queue_url(self, queue_name: str) -> str:
        """The URL of a queue's page."""
        return self.url("/queue", [("queue", queue_name)])

    def static(self, name: str) -> str:
        """The URL of a static asset (versioned by its content hash)."""
        return self.url(f"/static/{name}", [("v", STATIC[name][1])])


_STATUS_CLASSES = {
    "PENDING": "pending",
    "ENQUEUED": "queued",
    "DELAYED": "delayed",
    "SUCCESS": "success",
    "ERROR": "error",
    "CANCELLED": "cancelled",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED": "dead",
}


def badge(status: str) -> str:
    """A workflow status as a coloured badge."""
    css = _STATUS_CLASSES.get(status, "other")
    return f'<span class="badge st-{css}" data-status="{esc(status)}">{esc(status)}</span>'


def when(moment: datetime | None) -> str:
    """A timestamp in UTC, machine-readable in ``datetime``."""
    if moment is None:
        return '<span class="muted">&ndash;</span>'
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f'<time datetime="{esc(moment.isoformat())}">{esc(text)}</time>'


def seconds(value: float | None, *, approximate: bool = False, title: str = "") -> str:
    """A duration, human-sized."""
    if value is None:
        return '<span class="muted">&ndash;</span>'
    if value < 1:
        text = f"{value * 1000:.0f} ms"
    elif value < 120:
        text = f"{value:.2f} s"
    elif value < 7200:
        text = f"{value / 60:.1f} min"
    else:
        text = f"{value / 3600:.1f} h"
    prefix = "≈ " if approximate else ""
    attr = f' title="{esc(title)}"' if title else ""
    return f'<span class="duration"{attr}>{prefix}{esc(text)}</span>'


def value_block(value: Value | None, *, css: str = "value") -> str:
    """A stored value as preformatted JSON, with a note when it was cut short."""
    if value is None:
        return '<span class="muted">none</span>'
    note = ""
    if value.cut:
        note = (f'<div class="note">showing the first {len(value.text):,} of '
                f'{value.length:,} characters</div>')
    return f'<pre class="{css}">{esc(value.text)}</pre>{note}'


def workflow_link(view: View, workflow_id: str) -> str:
    """A link to a workflow's page, showing its id."""
    return (f'<a class="wid" href="{esc(view.workflow_url(workflow_id))}" '
            f'data-workflow-id="{esc(workflow_id)}">{esc(workflow_id)}</a>')


def queue_link(view: View, queue_name: str) -> str:
    """A link to a queue's page, showing its name."""
    return (f'<a class="qname" href="{esc(view.queue_url(queue_name))}" '
            f'data-queue="{esc(queue_name)}">{esc(queue_name)}</a>')


def hidden(name: str, value: str) -> str:
    """A hidden form field."""
    return f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">'


# Top navigation: (label, path).
NAV: list[tuple[str, str]] = [("Workflows", "/"), ("Queues", "/queues"),
                              ("Schedules", "/schedules")]


def layout(
    view: View, title: str, body: str, *, live: str | None = None, fragments: str | None = None
) -> str:
    """A whole page. ``live`` is the URL of its change events; ``fragments`` the URL the script
    re-fetches the page's live parts (``data-part`` elements) from."""
    nav = "".join(f'<a href="{esc(view.url(path))}">{esc(label)}</a>' for label, path in NAV)
    attrs = ""
    if live is not None and fragments is not None:
        attrs = f' data-live="{esc(live)}" data-fragments="{esc(fragments)}"'
    status = ('<span id="live-status" class="live-off" title="live updates">offline</span>'
              if live is not None else "")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · asyncflow</title>"
        f'<link rel="stylesheet" href="{esc(view.static("dashboard.css"))}">'
        f'<script src="{esc(view.static("dashboard.js"))}" defer></script>'
        f"</head><body{attrs}>"
        f'<header><a class="brand" href="{esc(view.url("/"))}">asyncflow</a>'
        f"<nav>{nav}</nav>{status}</header>"
        f"<main>{body}</main></body></html>\n"
    )


def message_page(view: View, title: str, message: str, *, back: str | None = None) -> str:
    """A page that only says something (errors, refusals)."""
    link = f'<p><a href="{esc(back)}">Back</a></p>' if back else ""
    return layout(view, title, f'<h1>{esc(title)}</h1><p class="problem">{esc(message)}</p>{link}')
