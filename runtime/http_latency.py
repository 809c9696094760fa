"""Request-latency histogram middleware shared by the HTTP APIs (ingestion, progress)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import Histogram

__all__ = ["install_latency_histogram"]


def install_latency_histogram(app: FastAPI, histogram: Histogram) -> None:
    """Observe every request's wall time (seconds) in ``histogram``, labelled ``(route, method, status)``;
    ``route`` is the matched path template (``"unmatched"`` for 404s), so label cardinality stays bounded."""

    @app.middleware("http")
    async def _latency(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        path = getattr(request.scope.get("route"), "path", "unmatched")
        histogram.labels(path, request.method, str(response.status_code)).observe(time.perf_counter() - start)
        return response
