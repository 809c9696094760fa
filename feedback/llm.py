"""An LLM feedback provider on any OpenAI-compatible chat-completions API (OpenAI, Azure OpenAI, vLLM, Ollama…).

The request is one chat completion (``POST {base_url}/chat/completions``) with a system message and a user
prompt built from :data:`DEFAULT_PROMPT` (or ``COACH_FEEDBACK_PROMPT_FILE``): the learner's level, the measured
metrics as JSON, the reference ranges of the rules provider and the transcript. The model must answer with a
JSON object ``{"summary": str, "points": [{"kind", "metric", "message"}]}``; every point must name one of
:data:`feedback.providers.FEEDBACK_METRICS`, and its ``value`` is filled in from *our* measurement, never
taken from the model. Anything else is a :class:`~feedback.providers.MalformedCompletion` and the chain fails
over.

The ``openai`` client's own retries are disabled (``max_retries=0``): :mod:`feedback.chain` owns retries,
backoff, ``Retry-After`` and the circuit breakers. Errors are mapped to :class:`~feedback.providers.ProviderError`:

* timeout, connection error, HTTP 408/409/429 and 5xx → retryable (``Retry-After``/``retry-after-ms`` kept);
* other HTTP 4xx (bad request, authentication, unknown model) → not retryable;
* an unparseable or truncated answer → :class:`~feedback.providers.MalformedCompletion`.

API reference: https://platform.openai.com/docs/api-reference/chat/create
"""

from __future__ import annotations

import email.utils
import json
import re
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from feedback.providers import (
    FEEDBACK_METRICS,
    FeedbackRequest,
    MalformedCompletion,
    ProviderError,
    ProviderResult,
    ProviderUnavailable,
    metric_value,
    metrics_for_prompt,
    says_only_what_was_measured,
)
from feedback.settings import FeedbackSettings, LLMEndpoint
from schemas.events import FeedbackPoint, TokenUsage

__all__ = [
    "DEFAULT_PROMPT",
    "SYSTEM_PROMPT",
    "OpenAIChatProvider",
    "build_messages",
    "parse_completion_text",
    "parse_retry_after",
]

SYSTEM_PROMPT = (
    "You are an encouraging, precise speaking coach for learners of English. You base every remark on the "
    "measured metrics you are given, and you answer with a single JSON object and nothing else."
)

DEFAULT_PROMPT = string.Template(
    """Give coaching feedback on a learner's spoken answer.

Learner's CEFR level: $level
Language of the answer: $language

Measured metrics (JSON; rates in words per minute, durations in seconds, mattr is a ratio in (0, 1],
null means it was not measured: too little speech, or for filled pauses no hesitation detector ran; say
nothing about a metric that is null):
$metrics_json

Reference ranges: a comfortable pace is $rate_min-$rate_max words per minute; filled pauses (um, uh) should stay
under $filled_max_per_100 per 100 words; silent pauses should average under $long_pause_s s.
The speech recogniser leaves most filled pauses out, so filled_pause_count is a lower bound: mention filled pauses
only when the count is above the reference, and never praise a low count.

Transcript (automatic speech recognition; it may contain recognition errors):
\"\"\"
$transcript
\"\"\"

Answer with one JSON object, no text around it:
{"summary": "<2 to 4 encouraging sentences addressed to the learner>",
 "points": [{"kind": "went_well" or "work_on", "metric": "<one of: $allowed_metrics>",
             "message": "<one specific, actionable sentence>"}]}
Give 2 to 5 points, at least one of each kind when possible. Each point names exactly one metric from the list,
and its message must agree with that metric's measured value.
"""
)
"""The user prompt (a :class:`string.Template`). Placeholders: ``$level``, ``$language``, ``$metrics_json``,
``$rate_min``, ``$rate_max``, ``$filled_max_per_100``, ``$long_pause_s``, ``$allowed_metrics``, ``$transcript``."""

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class _Point(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: Literal["went_well", "work_on"]
    metric: str
    message: str = Field(min_length=1, max_length=1000)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in FEEDBACK_METRICS:
            raise ValueError(f"unknown metric {value!r}")
        return value


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    summary: str = Field(min_length=1, max_length=4000)
    points: list[_Point] = Field(min_length=1, max_length=10)


def build_messages(
    request: FeedbackRequest, settings: FeedbackSettings, template: string.Template = DEFAULT_PROMPT
) -> list[dict[str, str]]:
    """The chat messages (system + user) for ``request``; the transcript is cut to ``max_transcript_chars``."""
    transcript = request.transcript.strip()
    if len(transcript) > settings.max_transcript_chars:
        transcript = transcript[: settings.max_transcript_chars] + " […]"
    prompt = template.safe_substitute(
        level=request.level,
        language=request.language,
        metrics_json=json.dumps(metrics_for_prompt(request.metrics), indent=1),
        rate_min=f"{settings.speech_rate_min_wpm:g}",
        rate_max=f"{settings.speech_rate_max_wpm:g}",
        filled_max_per_100=f"{100 * settings.filled_pause_max_ratio:g}",
        long_pause_s=f"{settings.long_pause_s:g}",
        allowed_metrics=", ".join(FEEDBACK_METRICS),
        transcript=transcript,
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]


def parse_completion_text(content: str | None, request: FeedbackRequest) -> tuple[str, tuple[FeedbackPoint, ...]]:
    """Parse the model's answer into ``(text, points)``; point values come from ``request.metrics``.

    Accepts the JSON object bare or inside a Markdown code fence. Raises :class:`MalformedCompletion` when the
    content is empty, not JSON, or does not match the schema (unknown metric, bad kind, no points).
    """
    if not content or not content.strip():
        raise MalformedCompletion("the completion is empty")
    fenced = _FENCE.match(content)
    raw = fenced.group(1) if fenced else content.strip()
    try:
        answer = _Answer.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "answer"
        raise MalformedCompletion(f"completion does not match the feedback schema at {where}: {first['msg']}") from exc
    made = (
        FeedbackPoint(
            kind=p.kind, metric=p.metric, value=_rounded(metric_value(request.metrics, p.metric)), message=p.message
        )
        for p in answer.points
    )
    points = tuple(point for point in made if says_only_what_was_measured(point, request.metrics))
    return answer.summary.strip(), points


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (RFC 9110 §10.2.3: seconds or an
    HTTP-date). None when absent or unparseable; never negative."""
    lowered = {key.lower(): value for key, value in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class OpenAIChatProvider:
    """Feedback from one OpenAI-compatible endpoint. Thread-safe (the ``openai`` client is)."""

    def __init__(
        self,
        endpoint: LLMEndpoint,
        settings: FeedbackSettings | None = None,
        *,
        client: openai.OpenAI | None = None,
    ) -> None:
        self.settings = settings or FeedbackSettings()
        self.endpoint = endpoint
        self._template = (
            string.Template(self.settings.prompt_file.read_text(encoding="utf-8"))
            if self.settings.prompt_file
            else DEFAULT_PROMPT
        )
        self._client = client or openai.OpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key or "not-needed",  # local servers accept any key; the client requires one
            max_retries=0,  # retries belong to feedback.chain
            timeout=openai.Timeout(self.settings.request_timeout_s, connect=self.settings.connect_timeout_s),
        )

    @property
    def name(self) -> str:
        """Provider label (``COACH_FEEDBACK_<SLOT>_NAME``)."""
        return self.endpoint.name

    @property
    def model(self) -> str:
        """Chat model name sent to the endpoint."""
        return self.endpoint.model

    def generate(self, request: FeedbackRequest) -> ProviderResult:
        """One chat completion → :class:`ProviderResult`. Raises :class:`ProviderError` (see the module doc)."""
        kwargs: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": build_messages(request, self.settings, self._template),
            "temperature": self.settings.temperature,
            "max_completion_tokens": self.settings.max_completion_tokens,
        }
        if self.settings.json_response_format:
            kwargs["response_format"] = {"type": "json_object"}
        try:
            completion = self._client.chat.completions.create(**kwargs)
        except openai.APITimeoutError as exc:
            raise ProviderUnavailable(f"timeout after {self.settings.request_timeout_s:g} s", retryable=True) from exc
        except openai.APIConnectionError as exc:
            raise ProviderUnavailable(f"connection error: {exc}", retryable=True) from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            retryable = status in _RETRYABLE_STATUS or status >= 500
            retry_after = parse_retry_after(exc.response.headers) if retryable else None
            raise ProviderUnavailable(
                f"HTTP {status}: {_short(exc.message)}", retryable=retryable, retry_after_s=retry_after
            ) from exc
        except openai.APIError as exc:  # e.g. a response body that is not a chat completion
            raise MalformedCompletion(f"{type(exc).__name__}: {_short(str(exc))}") from exc
        except openai.OpenAIError as exc:
            raise ProviderError(f"{type(exc).__name__}: {_short(str(exc))}") from exc
        if not completion.choices:
            raise MalformedCompletion("the completion has no choices")
        choice = completion.choices[0]
        if choice.finish_reason == "length":
            raise MalformedCompletion("the completion was cut at max_completion_tokens")
        text, points = parse_completion_text(choice.message.content, request)
        usage = completion.usage
        return ProviderResult(
            provider=self.name,
            model=completion.model or self.endpoint.model,
            text=text,
            points=points,
            usage=TokenUsage(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
            ),
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
