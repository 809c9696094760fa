"""Prometheus instruments of the feedback worker (served on ``COACH_FEEDBACK_METRICS_PORT``).

Named *telemetry* rather than *metrics* so that it is not confused with the speaking metrics of
:mod:`flows.metrics`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from feedback.breaker import BreakerState

__all__ = [
    "BREAKER_STATE",
    "BREAKER_STATE_VALUES",
    "DEAD_LETTERS",
    "DUPLICATES",
    "FEEDBACK_EVENTS",
    "FEEDBACK_LATENCY",
    "PROVIDER_ATTEMPTS",
]

FEEDBACK_EVENTS = Counter(
    "coach_feedback_events_total", "FeedbackGenerated events acknowledged by the broker", ["provider"]
)
PROVIDER_ATTEMPTS = Counter(
    "coach_feedback_provider_attempts_total",
    "Tries of feedback providers by outcome (ok, error, skipped_circuit_open)",
    ["provider", "outcome"],
)
FEEDBACK_LATENCY = Histogram(
    "coach_feedback_generation_seconds",
    "Wall time of the provider chain per transcript, by the provider that answered",
    ["provider"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BREAKER_STATE = Gauge(
    "coach_feedback_breaker_state", "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open", ["provider"]
)
BREAKER_STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
DUPLICATES = Counter(
    "coach_feedback_duplicates_total",
    "Transcripts whose submission already had feedback (re-deliveries), by what was done",
    ["action"],
)
DEAD_LETTERS = Counter(
    "coach_feedback_dead_letters_total", "Transcripts sent to the dead-letter topic", ["error_class"]
)
