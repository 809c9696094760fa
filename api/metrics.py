"""Prometheus metrics of the progress API (exposed on ``/metrics``)."""

from prometheus_client import Histogram

__all__ = ["REQUEST_LATENCY", "QUERY_LATENCY"]

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
