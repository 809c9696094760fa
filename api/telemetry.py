"""Prometheus metrics of the progress API (exposed on ``/metrics``)."""

from prometheus_client import Counter, Histogram

__all__ = ["PROGRESS_CACHE_EVENTS", "PROGRESS_CACHE_INVALIDATIONS", "QUERY_LATENCY", "REQUEST_LATENCY"]

REQUEST_LATENCY = Histogram(
    "coach_api_request_seconds",
    "Latency of progress API HTTP requests, seconds",
    ["route", "method", "status"],
)
QUERY_LATENCY = Histogram(
    "coach_api_clickhouse_query_seconds",
    "Latency of the progress API's ClickHouse queries (including waiting for a client), seconds",
    ["query"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
PROGRESS_CACHE_EVENTS = Counter(
    "coach_api_progress_cache_events_total",
    "Progress cache lookups ('hit', 'miss') and fills not stored because the learner's data changed meanwhile or "
    "caching is suspended ('fill_skipped')",
    ["event"],
)
PROGRESS_CACHE_INVALIDATIONS = Counter(
    "coach_api_progress_cache_invalidations_total",
    "Progress cache entries dropped because the learner's windows changed (or the whole cache was dropped)",
)
