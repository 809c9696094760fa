"""Prometheus instruments of the ingestion API (exposed on ``/metrics``).

Named *telemetry* rather than *metrics* so that it is not confused with the speaking metrics of
:mod:`flows.metrics`.
"""

from prometheus_client import Counter, Histogram

__all__ = ["REQUEST_LATENCY", "UPLOADS", "REJECTS", "UPLOAD_BYTES"]

REQUEST_LATENCY = Histogram(
    "coach_ingestion_request_seconds",
    "Latency of ingestion HTTP requests, seconds",
    ["route", "method", "status"],
)
UPLOADS = Counter("coach_ingestion_uploads_total", "Accepted uploads (202)")
REJECTS = Counter("coach_ingestion_rejects_total", "Refused uploads by reason code", ["reason"])
UPLOAD_BYTES = Counter("coach_ingestion_upload_bytes_total", "Bytes of accepted audio")
