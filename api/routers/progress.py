"""A learner's progress: metric series per window kind, from the per-learner cache."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.access import ReadableUser
from api.encoding import accepts_gzip, progress_header_map
from api.models import WINDOW_KINDS, ProgressResponse, WindowKind
from api.progress_cache import ProgressCache
from api.responses import errors
from api.settings import ApiSettings
from api.time_range import FromQuery, ToQuery, resolve_range

__all__ = ["build"]


def build(settings: ApiSettings) -> APIRouter:
    """The progress routes (see :mod:`api.routers`)."""
    router = APIRouter(tags=["progress"])

    @router.get(
        "/v1/users/{user_id}/progress",
        response_model=ProgressResponse,
        responses=errors(401, 404, 422, 503),
        summary="Metric series per window kind and the change since the first weeks",
    )
    async def get_progress(
        request: Request,
        user_id: ReadableUser,
        window: Annotated[
            list[WindowKind] | None, Query(description="Window kinds to return (repeatable); default all three")
        ] = None,
        start: FromQuery = None,
        end: ToQuery = None,
    ) -> Response:
        """The learner's windows starting in ``[from, to)`` per kind, oldest first, and a summary comparing the
        learner's first weekly windows with the latest ones up to ``to``.

        Served from the per-learner cache (:mod:`api.progress_cache`; windows written by the dataflow show at
        most ``COACH_API_PROGRESS_CACHE_POLL_S`` plus one poll plus one reload later, see
        ``COACH_API_PROGRESS_CACHE_STALE_S``); a miss reads ClickHouse in a thread. gzip-compressed when the request's
        ``Accept-Encoding`` accepts it (:mod:`api.encoding`; ``Vary: Accept-Encoding`` either way)."""
        range_from, range_to = resolve_range(start, end, settings)
        kinds = tuple(dict.fromkeys(window)) if window else WINDOW_KINDS
        cache: ProgressCache = request.app.state.progress_cache
        entry = cache.get(user_id)
        if entry is None:
            entry = await run_in_threadpool(cache.load, user_id)
        # Pre-serialised windows joined as bytes: the same body as ProgressResponse.model_dump_json(by_alias=True).
        gzip = accepts_gzip(",".join(request.headers.getlist("accept-encoding")))
        body, gzipped = cache.body(entry, kinds, range_from, range_to, gzip=gzip, remember=end is not None)
        return Response(body, media_type="application/json", headers=progress_header_map(gzipped))

    return router
