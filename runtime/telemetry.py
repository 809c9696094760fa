"""Service instruments (Prometheus) of the shared plumbing: the consumer loop's counters and timings."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["CONSUMER_BATCH_SECONDS", "CONSUMER_MESSAGES", "CONSUMER_RETRIES"]

CONSUMER_MESSAGES = Counter(
    "coach_consumer_messages_total",
    "Messages of a consumer loop by outcome (processed, dead_lettered, skipped: malformed on a topic without DLQ)",
    ["group", "outcome"],
)
CONSUMER_RETRIES = Counter(
    "coach_consumer_retries_total", "Batches retried because an engine was unreachable", ["group", "error"]
)
CONSUMER_BATCH_SECONDS = Histogram(
    "coach_consumer_batch_seconds",
    "Wall time of one batch of a consumer loop (decode, process, dead letters, offsets), seconds",
    ["group"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
