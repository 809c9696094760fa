"""The time range of a read: ``from``/``to`` query parameters and their defaults and limits (one rule for every
route and for the progress fast path)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import HTTPException, Query

from api.models import WindowPoint
from api.settings import ApiSettings

__all__ = ["EARLIEST", "LATEST", "FromQuery", "ToQuery", "in_range", "resolve_range"]

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
"""'from'/'to' must lie in [EARLIEST, LATEST] (inside ClickHouse's DateTime64 range)."""


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


def in_range(windows: list[WindowPoint], start: datetime, end: datetime) -> list[WindowPoint]:
    """The windows of ``windows`` starting in ``[start, end)``."""
    return [w for w in windows if start <= w.window_start < end]


FromQuery = Annotated[
    datetime | None,
    Query(alias="from", description="Windows starting at or after this instant (ISO 8601; naive = UTC)"),
]
ToQuery = Annotated[
    datetime | None, Query(alias="to", description="Windows starting before this instant (naive = UTC); default now")
]
