"""The learner progress page (``GET /progress/{user_id}``): server-rendered HTML with inline SVG charts.

Each chart is a ``<figure class="chart" id="chart-<id>" data-metric="<id>">`` holding an ``<svg>``; the change
summary is ``<table id="summary">``. No scripts: the page works in any browser and in a webview.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import urlencode

from api.charts import CHARTS, render_chart_svg
from api.models import WINDOW_KINDS, ProgressSummary, WindowKind, WindowPoint

__all__ = ["render_progress_page"]

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2433}
header{background:#243b53;color:#fff;padding:16px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;opacity:.8;font-size:13px}main{padding:16px 24px;max-width:1400px}
nav a{margin-right:12px;color:#243b53}nav a.current{font-weight:700;text-decoration:none}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:16px;margin-top:16px}
figure.chart{background:#fff;border:1px solid #d9e2ec;border-radius:6px;margin:0;padding:8px}
figure.chart svg{width:100%;height:auto}figcaption{font-size:12px;color:#52606d;padding:4px}
table{border-collapse:collapse;background:#fff;margin-top:12px;font-size:13px}
th,td{border:1px solid #d9e2ec;padding:4px 10px;text-align:right}th:first-child,td:first-child{text-align:left}
.improved{color:#1b7f3b}.declined{color:#b42318}.unchanged,.unknown{color:#52606d}.empty{margin-top:24px}
"""

_LABELS = {"daily": "Daily", "weekly": "Weekly", "sliding_7d": "7-day sliding"}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _summary_table(summary: ProgressSummary) -> str:
    if summary.baseline is None:
        return ""
    recent = summary.recent
    head = (
        f"<p>First {summary.baseline.weeks} week(s) from {summary.baseline.start:%Y-%m-%d} "
        + (f"against the latest {recent.weeks} week(s) to {recent.end:%Y-%m-%d}" if recent else "(no later weeks)")
        + "</p>"
    )
    rows = "".join(
        f'<tr data-metric="{c.metric}"><td>{escape(c.label)} ({escape(c.unit)})</td><td>{_fmt(c.baseline)}</td>'
        f'<td>{_fmt(c.recent)}</td><td>{_fmt(c.change)}</td><td class="{c.direction}">{c.direction}</td></tr>'
        for c in summary.changes
    )
    return (
        f'<section><h2>Change since the first weeks</h2>{head}<table id="summary"><thead><tr><th>metric</th>'
        f"<th>first weeks</th><th>latest weeks</th><th>change</th><th></th></tr></thead><tbody>{rows}</tbody>"
        "</table></section>"
    )


def render_progress_page(
    user_id: str,
    window: WindowKind,
    windows: Sequence[WindowPoint],
    summary: ProgressSummary,
    *,
    token_in_query: str | None = None,
) -> str:
    """The HTML document of a learner's progress over ``windows`` of kind ``window``.

    ``token_in_query`` (when the page was opened with ``?token=``) is carried into the window-kind links.
    """
    links = []
    for kind in WINDOW_KINDS:
        query = {"window": kind} | ({"token": token_in_query} if token_in_query else {})
        cls = ' class="current"' if kind == window else ""
        links.append(f'<a{cls} href="?{escape(urlencode(query))}">{_LABELS[kind]}</a>')
    if windows:
        figures = "".join(
            f'<figure class="chart" id="chart-{c.id}" data-metric="{c.id}">{render_chart_svg(c, windows)}'
            f"<figcaption>{escape(c.title)}, {_LABELS[window].lower()} windows</figcaption></figure>"
            for c in CHARTS
        )
        body = f'<div class="charts">{figures}</div>'
    else:
        body = '<p class="empty" id="no-data">No progress yet: metrics appear once recordings are transcribed.</p>'
    first, last = (windows[0].window_start, windows[-1].window_end) if windows else (None, None)
    span = f"{first:%Y-%m-%d} to {last:%Y-%m-%d}, " if first and last else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Progress of {escape(user_id)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>Speaking progress of {escape(user_id)}</h1><p>{span}{len(windows)} "
        f"{_LABELS[window].lower()} windows</p></header><main><nav>{''.join(links)}</nav>"
        f"{_summary_table(summary)}{body}</main></body></html>"
    )
