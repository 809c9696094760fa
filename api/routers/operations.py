"""Operations: liveness and readiness (``/metrics`` is mounted by the app)."""

from typing import Any

from fastapi import APIRouter, Request

from api.settings import ApiSettings
from runtime.http_errors import ErrorBody
from runtime.readiness import postgres_probe, readiness_response

__all__ = ["build"]


def build(settings: ApiSettings) -> APIRouter:
    """The operations routes (see :mod:`api.routers`)."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness")
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: PostgreSQL and ClickHouse answer",
        responses={503: {"model": ErrorBody}},
    )
    def readyz(request: Request) -> Any:
        """200 when PostgreSQL and ClickHouse answer a trivial query."""
        return readiness_response(
            {"postgres": postgres_probe(request.app.state.pg_pool), "clickhouse": request.app.state.clickhouse.ping}
        )

    return router
