"""The read-only progress API (FastAPI) over ClickHouse (metrics) and PostgreSQL (read models).

Routes: ``GET /v1/submissions/{id}``, ``GET /v1/users/{user_id}/progress``, ``GET /v1/users/{user_id}/submissions``,
``GET /v1/cohorts``, ``GET /v1/cohorts/{cohort}/progress``, the learner page ``GET /progress/{user_id}``, and
``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``; one router per resource in :mod:`api.routers`
(submissions, progress, cohorts, pages, operations), the ``from``/``to`` rule in :mod:`api.time_range`.
Authentication and the 401/403/404 rule are in :mod:`api.access`. This module wires them: lifespan (pools, caches),
error handlers, the progress fast path and the servers.

Read-only by construction: PostgreSQL sessions are opened with ``default_transaction_read_only = on`` (a write
fails with ``ReadOnlySqlTransaction``) and every ClickHouse query carries the ``readonly`` setting. In the local
mode chDB is embedded, so the API must run in the process that runs the dataflows (``coach run``); with a
ClickHouse server it runs on its own (``coach serve api``).
"""

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import make_asgi_app
from psycopg_pool import ConnectionPool, PoolTimeout

from api.analytics import ClickHouseReader
from api.page import PageCache
from api.progress_cache import ProgressCache, WindowsChangeFeed
from api.progress_fastpath import FastPathAPI, ProgressFastPath
from api.routers import ROUTERS
from api.settings import ApiSettings
from api.telemetry import REQUEST_LATENCY
from api.time_range import resolve_range
from runtime.garbage_collector import freeze_startup_objects, raise_young_threshold
from runtime.http_errors import error_response, install_error_handlers
from runtime.http_latency import install_latency_histogram
from runtime.http_server import serve_uvicorn
from runtime.principals import PrincipalCache
from runtime.settings import PlatformSettings

__all__ = ["create_app", "serve_api", "tune_garbage_collector"]

log = logging.getLogger(__name__)


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

    app.state.page_cache = PageCache(
        max_entries=settings.page_cache_max_entries,
        ttl_s=settings.page_cache_ttl_s,
        threads=settings.page_render_threads,
        queue=settings.page_render_queue,
    )
    for router in ROUTERS:
        app.include_router(router.build(settings))
    return app


def serve_api(
    stop: threading.Event | None = None, settings: ApiSettings | None = None, *, app: FastAPI | None = None
) -> None:
    """Serve ``app`` (default :func:`create_app` of ``settings``) on ``COACH_API_HOST:COACH_API_PORT`` with uvicorn
    until ``stop`` is set (or, with no ``stop``, until the process is interrupted). What ``coach serve api``,
    ``coach run`` and ``bench/api.py`` call. The server is built by :mod:`runtime.http_server` with
    :meth:`ApiSettings.http_limits` (connections, requests in flight, header and body deadlines, header size)."""
    settings = settings or ApiSettings()
    app = app if app is not None else create_app(settings=settings)
    # uvicorn installs its signal handlers only in the main thread; limits: COACH_API_* (runtime.http_server)
    serve_uvicorn(app, settings.host, settings.port, settings.http_limits(), stop=stop)
