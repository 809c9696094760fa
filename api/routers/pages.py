"""Pages: the learner's progress page (HTML with inline SVG charts), cached and rendered off the request pool."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from api.access import ClickHouse, PageReadableUser
from api.analytics import fetch_windows
from api.models import WindowKind
from api.page import PageQueueFull, RenderedPage, render_page_parts
from api.progress import summarize
from api.progress_cache import ProgressCache
from api.responses import json_errors
from api.settings import ApiSettings
from api.time_range import FromQuery, ToQuery, in_range, resolve_range
from runtime.http_errors import error_response

_PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "The progress page"},
    **json_errors(401, 404, 422, 503),
}

__all__ = ["build"]


def build(settings: ApiSettings) -> APIRouter:
    """The pages routes (see :mod:`api.routers`)."""
    router = APIRouter(tags=["pages"])

    @router.get(
        "/progress/{user_id}",
        response_class=HTMLResponse,
        responses=_PAGE_RESPONSES,
        summary="The learner's progress page (HTML with inline SVG charts)",
    )
    async def progress_page(
        request: Request,
        user_id: PageReadableUser,
        reader: ClickHouse,
        window: Annotated[WindowKind, Query(description="Window kind of the charts")] = WindowKind.WEEKLY,
        start: FromQuery = None,
        end: ToQuery = None,
    ) -> Response:
        """Charts of speech rate, articulation rate, pauses, fillers and vocabulary over time. Token by
        ``Authorization: Bearer`` or ``?token=`` (which then appears in server logs and browser history:
        prefer the header where the client can set it).

        Cached per learner, window kind and range while the learner's progress-cache entry is unchanged (at most
        ``COACH_API_PAGE_CACHE_TTL_S``); a miss reads and renders in the page executor (:mod:`api.page`), not the
        shared thread pool; 503 with ``Retry-After`` when too many pages wait to be rendered."""
        range_from, range_to = resolve_range(start, end, settings)
        cache: ProgressCache = request.app.state.progress_cache
        entry = cache.get(user_id) if cache.enabled else None
        if entry is None and cache.enabled:
            entry = await run_in_threadpool(cache.load, user_id)

        def render() -> RenderedPage:
            windows = fetch_windows(reader, [user_id], (window,), range_from, range_to, all_weekly=True).get(
                user_id, {}
            )
            series = in_range(windows.get(window, []), range_from, range_to)
            summary = summarize(windows.get(WindowKind.WEEKLY, []), baseline_weeks=settings.baseline_weeks)
            return render_page_parts(user_id, window, series, summary)

        # 'to' absent: the range ends now; such a page drifts by at most COACH_API_PAGE_CACHE_TTL_S
        key = (user_id, window, start, end)
        try:
            page = await request.app.state.page_cache.get(key, entry.serial if entry is not None else None, render)
        except PageQueueFull as exc:
            return error_response(503, "unavailable", f"{exc}; retry", {"Retry-After": "1"})
        html = page.html(token_in_query=request.query_params.get("token"))
        return HTMLResponse(html, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    return router
