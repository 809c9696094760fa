"""One JSON error shape for every HTTP API: ``{"error": <code>, "reason": <human-readable>}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ErrorBody", "install_error_handlers", "error_response"]

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "rate_limited",
          503: "unavailable"}  # fmt: skip


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: str = Field(description="Machine-readable code, e.g. 'too_long', 'unauthorized'")
    reason: str = Field(description="Why the request was refused, for humans")


def error_response(status: int, code: str, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSONResponse with an :class:`ErrorBody`."""
    return JSONResponse(ErrorBody(error=code, reason=reason).model_dump(), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Render HTTPException and request-validation errors as :class:`ErrorBody`."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            exc.status_code, _CODES.get(exc.status_code, "error"), str(exc.detail), dict(exc.headers or {})
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return error_response(422, "invalid", "; ".join(parts) or "invalid request")
