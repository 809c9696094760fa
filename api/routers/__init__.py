"""The API's routes, one router per resource: submissions, progress, cohorts, pages, operations.

Each module has ``build(settings) -> APIRouter`` (its routes close over ``settings``: page sizes, ranges, the
baseline). None of them uses ``from __future__ import annotations``: FastAPI evaluates the routes' annotations, and
some of those refer to ``settings``."""

from __future__ import annotations

from api.routers import cohorts, operations, pages, progress, submissions

__all__ = ["ROUTERS"]

ROUTERS = (submissions, progress, cohorts, pages, operations)
"""The router modules, in the order their routes are included (each has ``build(settings) -> APIRouter``)."""
