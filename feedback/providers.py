"""What every feedback provider takes and returns, and the errors that drive the failover chain.

A provider turns a :class:`FeedbackRequest` (the transcript, its metrics from
:func:`flows.metrics.compute_metrics`, the learner's CEFR level) into a :class:`ProviderResult`
(text, structured points, token usage). Errors are :class:`ProviderError` subclasses; ``retryable``
tells the chain whether trying the same provider again may help (timeouts, connection errors, 429,
5xx) or whether it should fail over at once (malformed output, 4xx, an open circuit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

from flows.metrics import FILLED_PAUSE_MEASURES, SubmissionMetrics, known_filled_pauses
from schemas.events import FeedbackPoint, TokenUsage

__all__ = [
    "FEEDBACK_METRICS",
    "RULES_PROVIDER",
    "CircuitOpen",
    "FeedbackProvider",
    "FeedbackRequest",
    "MalformedCompletion",
    "ProviderError",
    "ProviderResult",
    "ProviderUnavailable",
    "NOT_PRAISED",
    "metric_value",
    "metrics_for_prompt",
    "says_only_what_was_measured",
]

RULES_PROVIDER = "rules"
"""Provider label of the deterministic rules provider (on events, breakers and Prometheus metrics)."""

FEEDBACK_METRICS: tuple[str, ...] = (
    "word_count",
    "total_duration_s",
    "phonation_time_s",
    "speech_rate_wpm",
    "articulation_rate_wpm",
    "silent_pause_count",
    "silent_pauses_per_minute",
    "mean_silent_pause_s",
    "mean_length_of_run",
    "filled_pause_count",
    "discourse_marker_count",
    "repetition_count",
    "distinct_words",
    "mattr",
    "mtld",
)
"""Scalar fields of :class:`flows.metrics.SubmissionMetrics` a feedback point may refer to (names as there)."""


@dataclass(frozen=True, slots=True)
class FeedbackRequest:
    """Input of a provider: one transcript and its metrics.

    ``level`` is the learner's CEFR level ('A1'..'C2'); ``language`` ISO 639-1; ``asr_model`` the
    model that produced the transcript (for the record only).
    """

    transcript: str
    metrics: SubmissionMetrics
    level: str
    language: str = "en"
    asr_model: str = ""


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """Output of a provider: ``text`` (a short paragraph), ``points`` (each tied to a metric and its
    measured value), the model (None for rules) and the token usage (zero for rules)."""

    provider: str
    model: str | None
    text: str
    points: tuple[FeedbackPoint, ...]
    usage: TokenUsage = TokenUsage()


@runtime_checkable
class FeedbackProvider(Protocol):
    """A source of feedback. ``name`` labels it on events, breakers and metrics; ``model`` is None for rules."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str | None: ...

    def generate(self, request: FeedbackRequest) -> ProviderResult:
        """Return feedback for ``request`` or raise :class:`ProviderError`."""
        ...


class ProviderError(RuntimeError):
    """A provider could not give feedback.

    ``retryable``: whether the same provider may succeed if tried again (timeouts, connection errors,
    429, 5xx). ``retry_after_s``: the server's ``Retry-After`` in seconds, when it sent one.
    """

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None, retry_after_s: float | None = None):
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable
        self.retry_after_s = retry_after_s


class ProviderUnavailable(ProviderError):
    """The provider did not answer usefully: timeout, connection error or an HTTP error status."""


class MalformedCompletion(ProviderError):
    """The LLM answered, but not with the JSON the prompt asks for (never retried: fail over)."""

    retryable = False


class CircuitOpen(ProviderError):
    """The provider's circuit breaker is open: the call was not attempted."""

    retryable = False


NOT_PRAISED: frozenset[str] = frozenset({"filled_pause_count"})
"""Metrics whose low value is not evidence of good speech, so no ``went_well`` point may name them.

Filled pauses: Whisper leaves most "um"/"uh" out of its transcripts (faster-whisper issues #319 and #901), so a count
of zero or a few means "not heard", not "not said"; a high count is still real (the fillers were transcribed) and is
reported with its rate. Praise needs a hesitation detector measuring them from the audio."""


def says_only_what_was_measured(point: FeedbackPoint, metrics: SubmissionMetrics | None = None) -> bool:
    """Whether ``point`` claims no more than was measured: ``False`` for a ``went_well`` point about a metric in
    :data:`NOT_PRAISED`, and, given the ``metrics`` it is about, for any point about filled pauses
    (:data:`flows.metrics.FILLED_PAUSE_MEASURES`) when they are unknown (no hesitation detection:
    :func:`flows.metrics.known_filled_pauses`). The one rule both providers follow (the rules provider never makes
    such a point; points of an LLM's answer that break it are dropped)."""
    if point.kind == "went_well" and point.metric in NOT_PRAISED:
        return False
    return not (metrics is not None and point.metric in FILLED_PAUSE_MEASURES and not metrics.hesitation_detection)


def metric_value(metrics: SubmissionMetrics, name: str) -> float | None:
    """The measured value of metric ``name`` (one of :data:`FEEDBACK_METRICS`), as a float or None.

    Raises ``KeyError`` for a name that is not a scalar feedback metric.
    """
    if name not in FEEDBACK_METRICS:
        raise KeyError(f"{name!r} is not a feedback metric; known: {', '.join(FEEDBACK_METRICS)}")
    value = getattr(metrics, name)
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def metrics_for_prompt(metrics: SubmissionMetrics) -> dict[str, float | int | None]:
    """The scalar feedback metrics as a name → value dict (floats rounded to 3 decimals), for prompts; the
    filled-pause ones ``None`` (unknown) without hesitation detection (:func:`flows.metrics.known_filled_pauses`)."""
    known = {f.name for f in fields(metrics)}
    values = known_filled_pauses({f.name: getattr(metrics, f.name) for f in fields(metrics)})
    out: dict[str, float | int | None] = {}
    for name in FEEDBACK_METRICS:
        if name in known:
            value = values[name]
            out[name] = round(value, 3) if isinstance(value, float) else value
    return out
