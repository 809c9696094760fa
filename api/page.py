"""The learner progress page (``GET /progress/{user_id}``): server-rendered HTML with inline SVG charts.

Each chart is a ``<figure class="chart" id="chart-<id>" data-metric="<id>">`` holding an ``<svg>``; the change
summary is ``<table id="summary">``. No scripts: the page works in any browser and in a webview.

Rendered pages are cached (:class:`PageCache`): per learner, window kind and requested range, valid while the
learner's entry of the progress cache (:class:`api.progress_cache.ProgressCache`) is the one the page was built
from, so new windows invalidate a page exactly when they invalidate the progress endpoint's entry (same staleness
bound), and for at most ``COACH_API_PAGE_CACHE_TTL_S``. A miss reads the windows and renders the charts in a
dedicated small executor (``COACH_API_PAGE_RENDER_THREADS``), never in the thread pool shared by the request
handlers; identical concurrent misses share one rendering, and more than ``COACH_API_PAGE_RENDER_QUEUE`` distinct
pages waiting get 503. The ``?token=`` a page was opened with is put into its links per request, never cached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html import escape
from urllib.parse import urlencode

from cachetools import TTLCache

from api.charts import CHARTS, render_chart_svg
from api.models import WINDOW_KINDS, ProgressSummary, WindowKind, WindowPoint

__all__ = ["PageCache", "PageQueueFull", "RenderedPage", "render_page_parts", "render_progress_page"]

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


@dataclass(frozen=True)
class RenderedPage:
    """A rendered progress page without its window-kind links (which carry the request's ``?token=``): the HTML
    before and after the ``<nav>`` and the page's window kind."""

    head: str
    tail: str
    window: WindowKind

    def html(self, token_in_query: str | None = None) -> str:
        """The whole HTML document; ``token_in_query`` (the page was opened with ``?token=``) goes into the links."""
        links = []
        for kind in WINDOW_KINDS:
            query = {"window": kind} | ({"token": token_in_query} if token_in_query else {})
            cls = ' class="current"' if kind == self.window else ""
            links.append(f'<a{cls} href="?{escape(urlencode(query))}">{_LABELS[kind]}</a>')
        return f"{self.head}<nav>{''.join(links)}</nav>{self.tail}"


def render_page_parts(
    user_id: str, window: WindowKind, windows: Sequence[WindowPoint], summary: ProgressSummary
) -> RenderedPage:
    """The page of a learner's progress over ``windows`` of kind ``window`` (matplotlib charts: CPU-bound, tens to
    hundreds of milliseconds; call it from :class:`PageCache`'s executor)."""
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
    head = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Progress of {escape(user_id)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>Speaking progress of {escape(user_id)}</h1><p>{span}{len(windows)} "
        f"{_LABELS[window].lower()} windows</p></header><main>"
    )
    return RenderedPage(head, f"{_summary_table(summary)}{body}</main></body></html>", window)


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
    return render_page_parts(user_id, window, windows, summary).html(token_in_query)


class PageQueueFull(Exception):
    """More distinct pages are waiting to be rendered than the queue bound allows (answer 503)."""


class PageCache:
    """Rendered pages by key and version, rendered in a dedicated executor (see the module).

    ``max_entries`` (0: nothing kept, every request renders, still in the executor), ``ttl_s`` (longest life of
    a page, seconds), ``threads`` (executor threads, named ``progress-page-render``), ``queue`` (distinct
    renderings pending at most), ``timer`` (monotonic seconds). Use from one event loop (the server's).
    """

    def __init__(
        self,
        *,
        max_entries: int,
        ttl_s: float,
        threads: int = 1,
        queue: int = 16,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = max_entries > 0
        self.queue = queue
        self._pages: TTLCache[tuple[Hashable, Hashable], RenderedPage] = TTLCache(
            maxsize=max(max_entries, 1), ttl=ttl_s, timer=timer
        )
        self._pending: dict[tuple[Hashable, Hashable], asyncio.Future[RenderedPage]] = {}
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._queued = 0  # renderings submitted and not finished
        self.renders = 0

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="progress-page-render")
        return self._executor

    async def get(self, key: Hashable, version: Hashable | None, render: Callable[[], RenderedPage]) -> RenderedPage:
        """The page of ``key`` built from data ``version`` (the learner's progress-cache entry serial; None: the
        data has no version, so nothing is cached): cached, or rendered once by ``render`` in the executor (one
        rendering for concurrent callers). Raises :class:`PageQueueFull` when too many distinct renderings are
        pending; ``render``'s errors propagate to every caller waiting for it."""
        cacheable = self.enabled and version is not None
        slot = (key, version)
        if cacheable:
            page = self._pages.get(slot)
            if page is not None:
                return page
        pending = self._pending.get(slot) if cacheable else None
        if pending is None:
            if self._queued >= self.queue:
                raise PageQueueFull(f"{self._queued} progress pages are being rendered")
            self._queued += 1
            pending = asyncio.get_running_loop().run_in_executor(self._pool(), self._render, render)
            pending.add_done_callback(self._finished)
            if cacheable:
                self._pending[slot] = pending
                pending.add_done_callback(lambda done: self._settle(slot, done))
        return await asyncio.shield(pending)

    def _finished(self, _: asyncio.Future[RenderedPage]) -> None:
        self._queued -= 1

    def _render(self, render: Callable[[], RenderedPage]) -> RenderedPage:
        self.renders += 1
        return render()

    def _settle(self, slot: tuple[Hashable, Hashable], done: asyncio.Future[RenderedPage]) -> None:
        self._pending.pop(slot, None)
        if not done.cancelled() and done.exception() is None:
            self._pages[slot] = done.result()

    def clear(self) -> None:
        """Drop every cached page."""
        self._pages.clear()

    def close(self) -> None:
        """Stop the executor (waits for a running rendering)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
