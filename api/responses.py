"""OpenAPI documentation of the API's error responses (every error body is :class:`runtime.http_errors.ErrorBody`)."""

from __future__ import annotations

from typing import Any

from runtime.http_errors import ErrorBody

__all__ = ["errors", "json_errors"]

_ERROR_TEXT = {
    401: "Missing, invalid or revoked bearer token",
    403: "The caller's role may not use this endpoint",
    404: "Not found, or outside what the caller may read",
    422: "Invalid parameters",
    503: "PostgreSQL or ClickHouse unavailable; retry",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a JSON route for these status codes."""
    return {code: {"model": ErrorBody, "description": _ERROR_TEXT[code]} for code in codes}


def json_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error responses of a route whose success is not JSON (the errors still are)."""
    schema = {"$ref": "#/components/schemas/ErrorBody"}
    return {
        code: {"description": _ERROR_TEXT[code], "content": {"application/json": {"schema": schema}}} for code in codes
    }
