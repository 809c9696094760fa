"""The API's routes, one router per resource: submissions, progress, cohorts, pages, operations."""

from __future__ import annotations

from api.routers import cohorts, operations, pages, progress, submissions

__all__ = ["ROUTERS"]

ROUTERS = (submissions, progress, cohorts, pages, operations)
"""The router modules, in the order their routes are included (each has ``build(settings) -> APIRouter``)."""
