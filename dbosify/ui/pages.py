"""The web view's HTML, rendered on the server; every value goes through `esc`."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from dbosify.cli.common import fmt_time
from dbosify.cli.payloads import dumps
from dbosify.cli.task_queue import Described, ago, go_duration, go_float


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


PREVIEW_CHARS = 16_384  # a payload shown on a page is cut here; the full JSON is a link away


def run_url(workflow_id: str, run_id: str | None = None) -> str:
    params = {"wid": workflow_id, **({"rid": run_id} if run_id else {})}
    return "/run?" + urlencode(params)


def task_queue_url(name: str) -> str:
    return "/task-queue?" + urlencode({"name": name})


def event_url(workflow_id: str, run_id: str, event_id: int) -> str:
    """The full JSON of one history event (`app.Views.event_json`)."""
    return "/api/event?" + urlencode({"wid": workflow_id, "rid": run_id, "id": event_id})


def preview(value: Any, full_url: str | None, element_id: str = "") -> str:
    """``value`` as a ``<pre>``, cut at `PREVIEW_CHARS` with a note and a link to the full JSON."""
    text = value if isinstance(value, str) else dumps(value, indent=2)
    attr = f' id="{element_id}"' if element_id else ""
    if len(text) <= PREVIEW_CHARS:
        return f"<pre{attr}>{esc(text)}</pre>"
    link = f' <a class="full-json" href="{esc(full_url)}">Full JSON</a>' if full_url else ""
    return (f"<pre{attr}>{esc(text[:PREVIEW_CHARS])}…</pre><p class=\"truncated\">Truncated: the first"
            f" {PREVIEW_CHARS:,} of {len(text):,} characters.{link}</p>")


def cut(text: str, limit: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters in all)"


def badge(status: str) -> str:
    return f'<span class="status status-{esc(status.lower())}">{esc(status)}</span>'


def layout(title: str, body: str, namespace: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · dbosify</title>
<link rel="stylesheet" href="/static/ui.css">
<script src="/static/ui.js" defer></script>
</head><body>
<header><a class="brand" href="/">dbosify</a><span class="ns">namespace {esc(namespace)}</span></header>
<main>{body}</main>
</body></html>"""


# -- the run list ----------------------------------------------------------------------------


@dataclass
class Row:
    status: str
    workflow_id: str
    run_id: str
    workflow_type: str
    start: datetime | None
    close: datetime | None


def list_page(
    namespace: str, query: str, rows: Sequence[Row], *, error: str | None,
    next_token: str | None, first: bool, size: int,
) -> str:
    filt = f"""<form class="filter" method="get" action="/">
<input type="text" name="q" value="{esc(query)}" size="60"
 placeholder="List Filter, e.g. ExecutionStatus = 'Running' AND WorkflowType = 'Order'">
<input type="hidden" name="size" value="{size}">
<button type="submit">Filter</button>{'<a href="/">clear</a>' if query else ''}
</form>"""
    if error:
        return layout("Runs", f'{filt}<p class="error" id="list-error">{esc(error)}</p>', namespace)
    body_rows = "".join(
        f"""<tr><td>{badge(r.status)}</td>
<td><a class="wid" href="{esc(run_url(r.workflow_id, r.run_id))}">{esc(r.workflow_id)}</a></td>
<td class="mono">{esc(r.run_id)}</td><td>{esc(r.workflow_type)}</td>
<td>{esc(fmt_time(r.start))}</td><td>{esc(fmt_time(r.close))}</td></tr>"""
        for r in rows
    )
    empty = '<p class="empty">No runs match.</p>' if not rows else ""
    nav = []
    if not first:
        nav.append(f'<a href="/?{esc(urlencode({"q": query, "size": size}))}">First page</a>')
    if next_token:
        nav.append(
            f'<a id="next-page" href="/?{esc(urlencode({"q": query, "size": size, "next": next_token}))}">'
            "Next page</a>"
        )
    table = f"""<table class="runs" id="runs"><thead><tr><th>Status</th><th>Workflow ID</th>
<th>Run ID</th><th>Type</th><th>Start</th><th>End</th></tr></thead><tbody>{body_rows}</tbody></table>"""
    return layout("Runs", f'{filt}{table}{empty}<nav class="pages">{" ".join(nav)}</nav>', namespace)


# -- the run page ------------------------------------------------------------------------------


@dataclass
class Summary:
    workflow_id: str
    run_id: str
    workflow_type: str
    status: str
    task_queue: str
    start: datetime | None
    close: datetime | None
    history_length: int
    parent: tuple[str, str] | None
    outcome: list[tuple[str, Any]] = field(default_factory=list)
    close_event_id: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)


def _dl(pairs: Sequence[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in pairs if v) + "</dl>"


def summary_fragment(s: Summary) -> str:
    parent = (
        f'<a id="parent-link" href="{esc(run_url(*s.parent))}">{esc(s.parent[0])}</a>' if s.parent else ""
    )
    pairs = [
        ("Status", badge(s.status)),
        ("Workflow type", esc(s.workflow_type)),
        ("Workflow ID", esc(s.workflow_id)),
        ("Run ID", f'<span class="mono">{esc(s.run_id)}</span>'),
        ("Task queue", f'<a id="task-queue-link" href="{esc(task_queue_url(s.task_queue))}">{esc(s.task_queue)}</a>'),
        ("Started", esc(fmt_time(s.start))),
        ("Closed", esc(fmt_time(s.close))),
        ("History events", esc(s.history_length)),
        ("Parent", parent),
    ]
    out = f'<div id="summary-data" data-status="{esc(s.status)}">{_dl(pairs)}'
    if s.outcome:
        full = event_url(s.workflow_id, s.run_id, s.close_event_id) if s.close_event_id else None
        out += '<h3>Outcome</h3><dl id="outcome">' + "".join(
            f"<dt>{esc(k)}</dt><dd>{preview(v, full)}</dd>" for k, v in s.outcome
        ) + "</dl>"
    if s.pending:
        rows = "".join(
            f"""<tr><td>{esc(p['activityId'])}</td><td>{esc(p['type'])}</td><td>{esc(p['state'])}</td>
<td class="attempt">{esc(p['attempt'])}</td><td class="failure">{esc(cut(p.get('lastFailure', '')))}</td></tr>"""
            for p in s.pending
        )
        out += f"""<h3>Pending activities</h3><table id="pending"><thead><tr><th>ID</th><th>Type</th>
<th>State</th><th>Attempt</th><th>Last failure</th></tr></thead><tbody>{rows}</tbody></table>"""
    if s.status == "Running":
        out += """<div class="actions" id="actions">
<form id="signal-form"><input name="name" placeholder="signal name" required>
<input name="input" placeholder='JSON input, e.g. "hi" (optional)'>
<button type="submit" id="signal-button">Signal</button></form>
<button id="cancel-button" class="warn">Cancel</button>
<input id="terminate-reason" placeholder="termination reason">
<button id="terminate-button" class="danger">Terminate</button>
<span id="action-result" role="status"></span></div>"""
    return out + "</div>"


@dataclass
class Event:
    event_id: int
    time: datetime
    event_type: str
    details: Any
    full_url: str | None = None


def event_item(ev: Event) -> str:
    return f"""<li class="event" data-id="{ev.event_id}" data-type="{esc(ev.event_type)}">
<details><summary><span class="eid">{ev.event_id}</span><span class="etime">{esc(fmt_time(ev.time))}</span>
<span class="etype">{esc(ev.event_type)}</span></summary>{preview(ev.details, ev.full_url)}
</details></li>"""


def child_link(workflow_id: str, run_id: str) -> str:
    return f'<li><a class="child" href="{esc(run_url(workflow_id, run_id))}">{esc(workflow_id)}</a></li>'


def run_page(
    namespace: str, s: Summary, summary_html: str, events: Sequence[Event], inputs: Any,
    children: Sequence[tuple[str, str]],
) -> str:
    last = events[-1].event_id if events else 0
    started = next((e for e in events if e.event_type == "WorkflowExecutionStarted"), None)
    body = f"""<section class="run" id="run" data-wid="{esc(s.workflow_id)}" data-rid="{esc(s.run_id)}"
 data-last="{last}">
<h1>{esc(s.workflow_type)} <small>{esc(s.workflow_id)}</small></h1>
<div id="summary">{summary_html}</div>
<h3>Input</h3>{preview(inputs, started.full_url if started else None, "input")}
<h3>Children</h3><ul id="children">{"".join(child_link(w, r) for w, r in children)}</ul>
<details id="stack"><summary>Stack trace (the <code>__stack_trace</code> query)</summary>
<pre id="stack-trace">…</pre></details>
<h3>History <span id="live" class="live"></span></h3>
<ol class="timeline" id="history">{"".join(event_item(e) for e in events)}</ol>
</section>"""
    return layout(f"{s.workflow_type} {s.workflow_id}", body, namespace)


# -- a task queue -----------------------------------------------------------------------------


def task_queue_page(namespace: str, d: Described) -> str:
    """Its backlog per task type and its pollers (`dbosify.cli.task_queue.describe`)."""
    now = datetime.now(timezone.utc)
    backlog = "".join(
        f"""<tr data-type="{esc(st.task_type)}"><td>{esc(st.task_type)}</td>
<td class="backlog-count">{st.backlog_count}</td><td class="backlog-age">{esc(go_duration(st.backlog_age))}</td></tr>"""
        for st in d.stats or ()
    )
    pollers = "".join(
        f"""<tr><td>{esc(p.task_type)}</td><td class="identity">{esc(p.identity)}</td>
<td title="{esc(fmt_time(p.last_access))}">{esc(ago(p.last_access, now))}</td><td>{esc(go_float(p.rate_per_second))}</td></tr>"""
        for p in d.pollers
    )
    none = '<p class="empty" id="no-pollers">No worker polled this task queue in the last 5 minutes.</p>'
    body = f"""<section class="task-queue" id="task-queue"><h1>Task queue <small>{esc(d.task_queue)}</small></h1>
<p><a href="{esc(task_queue_url(d.task_queue))}">Refresh</a></p>
<h3>Backlog</h3><p class="note">Tasks ready and not yet taken by a worker, and the age of the oldest.</p>
<table id="backlog"><thead><tr><th>Type</th><th>Tasks</th><th>Oldest</th></tr></thead><tbody>{backlog}</tbody></table>
<h3>Pollers</h3><p class="note">Workers that polled in the last 5 minutes; a live worker's last access is at
most a second old.</p>
<table id="pollers"><thead><tr><th>Type</th><th>Identity</th><th>Last access</th><th>Rate per second</th></tr>
</thead><tbody>{pollers}</tbody></table>{"" if d.pollers else none}
</section>"""
    return layout(f"Task queue {d.task_queue}", body, namespace)


def message_page(namespace: str, title: str, message: str) -> str:
    return layout(title, f'<h1>{esc(title)}</h1><p class="error">{esc(cut(message, 500))}</p>', namespace)


def login_page(target: str, failed: bool) -> str:
    """The sign-in form (`gate.Gate`): the token, then back to ``target``."""
    note = '<p class="error" id="login-error">That token is not the right one.</p>' if failed else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · dbosify</title>
<link rel="stylesheet" href="/static/ui.css"></head><body>
<header><span class="brand">dbosify</span></header><main><h1>Sign in</h1>{note}
<form class="login" method="post" action="/login"><input type="hidden" name="next" value="{esc(target)}">
<input type="password" name="token" placeholder="the token of dbosify ui" autocomplete="current-password"
 required autofocus> <button type="submit">Sign in</button></form>
<p class="empty">The token is the value of DBOSIFY_UI_TOKEN, or the contents of the token file.</p>
</main></body></html>"""
