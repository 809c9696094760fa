"""The read-only progress API (FastAPI) over ClickHouse (metrics) and PostgreSQL (read models).

Routes: ``GET /v1/submissions/{id}``, ``GET /v1/users/{user_id}/progress``, ``GET /v1/users/{user_id}/submissions``,
``GET /v1/cohorts``, ``GET /v1/cohorts/{cohort}/progress``, the learner page ``GET /progress/{user_id}``, and
``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``. Authentication and the 401/403/404 rule are in
:mod:`api.access`.

Read-only by construction: PostgreSQL sessions are opened with ``default_transaction_read_only = on`` (a write
fails with ``ReadOnlySqlTransaction``) and every ClickHouse query carries the ``readonly`` setting. In the local
mode chDB is embedded, so the API must run in the process that runs the dataflows (``coach run``); with a
ClickHouse server it runs on its own (``coach serve api``).
"""

import logging
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import FastAPI, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import make_asgi_app
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.concurrency import run_in_threadpool

from api.access import (
    Caller,
    ClickHouse,
    PageReadableUser,
    Postgres,
    ReadableCohort,
    ReadableUser,
)
from api.access import can_read_user as _can_read_user
from api.analytics import ClickHouseReader, fetch_headlines, fetch_submission_metrics, fetch_windows
from api.encoding import accepts_gzip, progress_header_map
from api.models import (
    WINDOW_KINDS,
    CohortLearner,
    CohortList,
    CohortPoint,
    CohortProgress,
    CohortSummary,
    ProgressResponse,
    SubmissionDetail,
    SubmissionPage,
    SubmissionSummary,
    WindowKind,
    WindowPoint,
)
from api.page import PageCache, PageQueueFull, RenderedPage, render_page_parts
from api.progress import HEADLINE_METRICS, summarize
from api.progress_cache import ProgressCache, WindowsChangeFeed
from api.progress_fastpath import FastPathAPI, ProgressFastPath
from api.readmodels import (
    Cursor,
    InvalidCursor,
    coach_cohorts,
    cohort_learners,
    fetch_feedback,
    fetch_submission,
    fetch_timeline,
    fetch_transcript,
    list_cohorts,
    list_submissions,
)
from api.settings import ApiSettings
from api.telemetry import REQUEST_LATENCY
from runtime.garbage_collector import freeze_startup_objects, raise_young_threshold
from runtime.http_errors import ErrorBody, error_response, install_error_handlers
from runtime.http_latency import install_latency_histogram
from runtime.http_server import LimitsMiddleware, granian_limits, serve_uvicorn
from runtime.principals import PrincipalCache
from runtime.readiness import postgres_probe, readiness_response
from runtime.settings import PlatformSettings

__all__ = ["EARLIEST", "LATEST", "create_app", "serve_api", "tune_garbage_collector"]

log = logging.getLogger(__name__)

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
"""'from'/'to' must lie in [EARLIEST, LATEST] (inside ClickHouse's DateTime64 range)."""

_ERROR_TEXT = {
    401: "Missing, invalid or revoked bearer token",
    403: "The caller's role may not use this endpoint",
    404: "Not found, or outside what the caller may read",
    422: "Invalid parameters",
    503: "PostgreSQL or ClickHouse unavailable; retry",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _ERROR_TEXT[code]} for code in codes}


def _json_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error responses of a route whose success is not JSON (the errors still are)."""
    schema = {"$ref": "#/components/schemas/ErrorBody"}
    return {
        code: {"description": _ERROR_TEXT[code], "content": {"application/json": {"schema": schema}}} for code in codes
    }


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def resolve_range(start: datetime | None, end: datetime | None, settings: ApiSettings) -> tuple[datetime, datetime]:
    """The ``[from, to)`` of a request: ``to`` defaults to now, ``from`` to ``to`` minus
    ``default_range_days``; a naive time is UTC. Raises 422 when outside [EARLIEST, LATEST], not increasing, or
    longer than ``max_range_days``."""
    end = _as_utc(end) if end is not None else datetime.now(UTC)
    start = _as_utc(start) if start is not None else None
    for name, value in (("from", start), ("to", end)):
        if value is not None and not EARLIEST <= value <= LATEST:
            raise HTTPException(422, f"'{name}' must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    if start is None:
        start = max(EARLIEST, end - timedelta(days=settings.default_range_days))
    if start >= end:
        raise HTTPException(422, "'from' must be before 'to'")
    if end - start > timedelta(days=settings.max_range_days):
        raise HTTPException(422, f"'from'..'to' spans more than {settings.max_range_days} days")
    return start, end


def _in_range(windows: list[WindowPoint], start: datetime, end: datetime) -> list[WindowPoint]:
    return [w for w in windows if start <= w.window_start < end]


_PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "The progress page"},
    **_json_errors(401, 404, 422, 503),
}

FromQuery = Annotated[
    datetime | None,
    Query(alias="from", description="Windows starting at or after this instant (ISO 8601; naive = UTC)"),
]
ToQuery = Annotated[
    datetime | None, Query(alias="to", description="Windows starting before this instant (naive = UTC); default now")
]


def tune_garbage_collector(settings: ApiSettings) -> tuple[int, int, int]:
    """At the end of the API's startup (its lifespan): move the startup objects out of the cyclic garbage
    collector's reach (:func:`runtime.garbage_collector.freeze_startup_objects`, once per process) and raise the
    young-generation threshold to ``COACH_API_GC_YOUNG_THRESHOLD`` (0: the interpreter's, CPython 700; never lowered,
    see :func:`runtime.garbage_collector.raise_young_threshold`). Process-wide. Returns the thresholds in force.

    Why: a collection stops the event loop, i.e. every request in flight waits for it (bench/RESULTS.md, API)."""
    freeze_startup_objects()
    return raise_young_threshold(settings.gc_young_threshold)


def create_app(platform: PlatformSettings | None = None, settings: ApiSettings | None = None) -> FastAPI:
    """Build the progress API. The PostgreSQL pool and the ClickHouse reader open in the lifespan (so building
    the app touches nothing: ``create_app().openapi()`` works offline)."""
    platform = platform or PlatformSettings()
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pg_pool = ConnectionPool(
            platform.postgres_dsn,
            min_size=settings.pg_pool_min,
            max_size=settings.pg_pool_max,
            timeout=settings.pg_timeout_s,
            kwargs={"autocommit": True, "options": "-c default_transaction_read_only=on"},
            open=True,
        )
        app.state.clickhouse = ClickHouseReader(
            platform, readonly=settings.clickhouse_readonly, pool_size=settings.clickhouse_pool_size
        )
        app.state.principals = PrincipalCache(settings.principal_cache_ttl_s)
        app.state.principals.start_refresh(app.state.pg_pool)
        app.state.progress_cache = ProgressCache(
            app.state.clickhouse,
            baseline_weeks=settings.baseline_weeks,
            max_bytes=settings.progress_cache_max_bytes,
            ttl_s=settings.progress_cache_ttl_s,
            stale_s=settings.progress_cache_stale_s,
            gzip_max_bytes=settings.progress_gzip_max_bytes,
        )
        app.state.progress_feed = feed = WindowsChangeFeed(
            app.state.clickhouse, app.state.progress_cache, interval_s=settings.progress_cache_poll_s
        )
        if app.state.progress_cache.enabled:
            feed.start()
        tune_garbage_collector(settings)
        try:
            yield
        finally:
            feed.stop()
            app.state.progress_cache.close()
            app.state.principals.stop_refresh()
            app.state.clickhouse.close()
            app.state.pg_pool.close()

    app = FastPathAPI(
        title="Speech Coach progress API",
        version="1",
        lifespan=lifespan,
        description=(
            "Read-only views of learners' progress: submissions with their status timeline, transcript, metrics "
            "and feedback; metric series per window (daily, weekly, 7-day sliding) with the change since the "
            "learner's first weeks; cohort views for coaches; and an HTML progress page.\n\n"
            "Authentication: `Authorization: Bearer <token>` (from `coach keys create`). A learner reads only "
            "itself; a coach its learners and the cohorts it coaches; an admin everything. 403 when the role may "
            "never use an endpoint, 404 for anything outside what the caller may read (as if it did not exist)."
        ),
    )
    install_error_handlers(app)
    app.mount("/metrics", make_asgi_app())

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(ClickHouseError)
    async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("store unavailable: %s", exc)
        return error_response(503, "unavailable", f"a store is unavailable ({type(exc).__name__}); retry later")

    install_latency_histogram(app, REQUEST_LATENCY)
    # Before everything: warm progress reads are answered ahead of FastAPI's whole stack (api.progress_fastpath).
    app.fast_path = ProgressFastPath(fastapi_app=app, settings=settings, resolve_range=resolve_range)

    @app.get(
        "/v1/submissions/{submission_id}",
        response_model=SubmissionDetail,
        responses=_errors(401, 404, 422, 503),
        summary="One submission: status timeline, transcript, metrics, feedback",
        tags=["submissions"],
    )
    def get_submission(
        submission_id: Annotated[uuid.UUID, Path(description="The id returned by POST /v1/submissions")],
        caller: Caller,
        pool: Postgres,
        reader: ClickHouse,
        include_words: Annotated[bool, Query(description="Include the transcript's word timestamps")] = False,
    ) -> SubmissionDetail:
        """Everything known about a submission the caller may read (404 otherwise)."""
        with pool.connection() as conn:
            row = fetch_submission(conn, submission_id)
        if row is None or not _can_read_user(pool, caller, row["user_id"]):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"submission {submission_id} not found")
        with pool.connection() as conn:
            timeline = fetch_timeline(conn, submission_id)
            transcript = fetch_transcript(conn, submission_id, words=include_words)
            feedback = fetch_feedback(conn, submission_id)
        metrics = fetch_submission_metrics(reader, row["user_id"], submission_id)
        return SubmissionDetail(**row, timeline=timeline, transcript=transcript, metrics=metrics, feedback=feedback)

    @app.get(
        "/v1/users/{user_id}/progress",
        response_model=ProgressResponse,
        responses=_errors(401, 404, 422, 503),
        summary="Metric series per window kind and the change since the first weeks",
        tags=["progress"],
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

    @app.get(
        "/v1/users/{user_id}/submissions",
        response_model=SubmissionPage,
        responses=_errors(401, 404, 422, 503),
        summary="A learner's submissions, newest first (cursor pagination)",
        tags=["submissions"],
    )
    def get_submissions(
        user_id: ReadableUser,
        pool: Postgres,
        reader: ClickHouse,
        limit: Annotated[int | None, Query(ge=1, le=settings.max_page_size, description="Page size")] = None,
        cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
        status_filter: Annotated[
            Literal["received", "transcribed", "feedback", "failed"] | None,
            Query(alias="status", description="Only submissions in this status"),
        ] = None,
    ) -> SubmissionPage:
        """A page of the learner's submissions with headline metrics where computed."""
        try:
            after = Cursor.decode(cursor) if cursor else None
        except InvalidCursor as exc:
            raise HTTPException(422, str(exc)) from exc
        with pool.connection() as conn:
            rows, next_cursor = list_submissions(
                conn, user_id, limit=limit or settings.page_size, after=after, status=status_filter
            )
        headlines = fetch_headlines(reader, user_id, [r["submission_id"] for r in rows])
        items = [SubmissionSummary(**r, **headlines.get(str(r["submission_id"]), {})) for r in rows]
        return SubmissionPage(items=items, next_cursor=next_cursor.encode() if next_cursor else None)

    @app.get(
        "/v1/cohorts",
        response_model=CohortList,
        responses=_errors(401, 403, 503),
        summary="Cohorts the caller may read (coaches: the cohorts they coach; admins: all)",
        tags=["cohorts"],
    )
    def get_cohorts(caller: Caller, pool: Postgres) -> CohortList:
        """Cohort names with their number of learners."""
        if caller.role == "learner":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "cohort views are for coaches and admins")
        with pool.connection() as conn:
            only = coach_cohorts(conn, caller.user_id) if caller.role == "coach" else None
            cohorts = list_cohorts(conn, only)
        return CohortList(items=[CohortSummary(cohort=c, learners=n) for c, n in cohorts])

    @app.get(
        "/v1/cohorts/{cohort}/progress",
        response_model=CohortProgress,
        responses=_errors(401, 403, 404, 422, 503),
        summary="Every learner of a cohort with its change since the first weeks, and the cohort's mean series",
        tags=["cohorts"],
    )
    def get_cohort_progress(
        cohort: ReadableCohort,
        pool: Postgres,
        reader: ClickHouse,
        window: Annotated[WindowKind, Query(description="Window kind of the series")] = WindowKind.WEEKLY,
        start: FromQuery = None,
        end: ToQuery = None,
    ) -> CohortProgress:
        """Per learner: submissions in range, last window, changes; per window start: the mean over learners."""
        range_from, range_to = resolve_range(start, end, settings)
        with pool.connection() as conn:
            learners = cohort_learners(conn, cohort)
        windows = fetch_windows(
            reader, [lr.user_id for lr in learners], (window,), range_from, range_to, all_weekly=True
        )
        out: list[CohortLearner] = []
        by_start: dict[datetime, list[WindowPoint]] = {}
        for learner in learners:
            own = windows.get(learner.user_id, {})
            series = _in_range(own.get(window, []), range_from, range_to)
            summary = summarize(own.get(WindowKind.WEEKLY, []), baseline_weeks=settings.baseline_weeks)
            out.append(
                CohortLearner(
                    user_id=learner.user_id,
                    display_name=learner.display_name,
                    coach_id=learner.coach_id,
                    submissions=sum(w.submissions for w in series),
                    last_window_start=series[-1].window_start if series else None,
                    changes=summary.changes,
                )
            )
            for w in series:
                by_start.setdefault(w.window_start, []).append(w)
        points = [
            CohortPoint(
                window_start=at,
                learners=len(group),
                submissions=sum(w.submissions for w in group),
                values={m.name: _mean([getattr(w, m.name) for w in group]) for m in HEADLINE_METRICS},
            )
            for at, group in sorted(by_start.items())
        ]
        return CohortProgress.model_validate(
            {"cohort": cohort, "window": window, "from": range_from, "to": range_to, "learners": out, "series": points}
        )

    page_cache = PageCache(
        max_entries=settings.page_cache_max_entries,
        ttl_s=settings.page_cache_ttl_s,
        threads=settings.page_render_threads,
        queue=settings.page_render_queue,
    )
    app.state.page_cache = page_cache

    @app.get(
        "/progress/{user_id}",
        response_class=HTMLResponse,
        responses=_PAGE_RESPONSES,
        summary="The learner's progress page (HTML with inline SVG charts)",
        tags=["pages"],
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
            series = _in_range(windows.get(window, []), range_from, range_to)
            summary = summarize(windows.get(WindowKind.WEEKLY, []), baseline_weeks=settings.baseline_weeks)
            return render_page_parts(user_id, window, series, summary)

        # 'to' absent: the range ends now; such a page drifts by at most COACH_API_PAGE_CACHE_TTL_S
        key = (user_id, window, start, end)
        try:
            page = await page_cache.get(key, entry.serial if entry is not None else None, render)
        except PageQueueFull as exc:
            return error_response(503, "unavailable", f"{exc}; retry", {"Retry-After": "1"})
        html = page.html(token_in_query=request.query_params.get("token"))
        return HTMLResponse(html, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    @app.get("/healthz", summary="Liveness", tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: PostgreSQL and ClickHouse answer",
        responses={503: {"model": ErrorBody}},
        tags=["operations"],
    )
    def readyz(request: Request) -> Any:
        """200 when PostgreSQL and ClickHouse answer a trivial query."""
        return readiness_response(
            {"postgres": postgres_probe(request.app.state.pg_pool), "clickhouse": request.app.state.clickhouse.ping}
        )

    return app


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 4) if present else None


def serve_api(
    stop: threading.Event | None = None, settings: ApiSettings | None = None, *, app: FastAPI | None = None
) -> None:
    """Serve ``app`` (default :func:`create_app` of ``settings``) on ``COACH_API_HOST:COACH_API_PORT`` with
    ``COACH_API_SERVER`` (granian or uvicorn) until ``stop`` is set (or, with no ``stop``, until the process is
    interrupted). What ``coach serve api``, ``coach run`` and ``bench/api.py`` call. The server is built by
    :mod:`runtime.http_server` with :meth:`ApiSettings.http_limits` (connections, requests in flight, header and
    body deadlines, header size). Raises ``OSError`` when the address cannot be bound (granian)."""
    settings = settings or ApiSettings()
    app = app if app is not None else create_app(settings=settings)
    if settings.server == "granian":
        _serve_granian(app, settings, stop)
        return
    # uvicorn installs its signal handlers only in the main thread; limits: COACH_API_* (runtime.http_server)
    serve_uvicorn(app, settings.host, settings.port, settings.http_limits(), stop=stop)


def _serve_granian(app: FastAPI, settings: ApiSettings, stop: threading.Event | None) -> None:
    """Serve ``app`` with granian's embedded server (https://github.com/emmett-framework/granian,
    ``granian.server.embed``) on an event loop of this thread (uvloop when installed), so the app shares the
    process, as the local mode requires (chDB opens its data directory in one process only). Granian's Rust
    runtime parses HTTP and writes responses outside the Python thread. Granian marks the embedded server
    experimental; ``COACH_API_SERVER=uvicorn`` is the fallback. ``stop`` (or, in the main thread, SIGINT/SIGTERM)
    ends it gracefully. Limits: granian's own header deadline and backpressure plus the ASGI body deadline and
    in-flight limit (:func:`runtime.http_server.granian_limits`, :class:`~runtime.http_server.LimitsMiddleware`)."""
    import asyncio
    import signal

    from granian.constants import Interfaces
    from granian.server.embed import Server

    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio works the same, slower
        loop = asyncio.new_event_loop()
    limits = settings.http_limits()
    server = Server(
        LimitsMiddleware(app, limits),
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        log_enabled=False,
        **granian_limits(limits),
    )
    asyncio.set_event_loop(loop)
    if stop is not None:

        def watch() -> None:
            stop.wait()
            if not loop.is_closed():
                loop.call_soon_threadsafe(server.stop)

        threading.Thread(target=watch, name="api-stop-watcher", daemon=True).start()
    elif threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, server.stop)
    try:
        loop.run_until_complete(server.serve())
    finally:
        loop.close()
