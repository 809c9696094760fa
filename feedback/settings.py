"""Settings of the feedback worker and its providers (environment variables prefixed ``COACH_FEEDBACK_``).

One frozen object configures the provider chain (which providers, in which order), the two
OpenAI-compatible endpoints, the resilience knobs (timeouts, retries with backoff, circuit breakers,
concurrency limit) and the thresholds of the rules provider. Each rule threshold's description says
where its default comes from; the ones marked *heuristic* are starting points to calibrate on the
platform's own per-level distributions (ClickHouse), not published norms.

Examples::

    COACH_FEEDBACK_PROVIDERS=primary,secondary,rules
    COACH_FEEDBACK_PRIMARY_BASE_URL=https://api.openai.com/v1
    COACH_FEEDBACK_PRIMARY_MODEL=gpt-4o-mini
    COACH_FEEDBACK_PRIMARY_API_KEY=sk-...
    COACH_FEEDBACK_MATTR_MIN_BY_LEVEL='{"A1": 0.55, "B1": 0.65}'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flows.metrics.norms import PACE_BAND, PaceBand

__all__ = ["CEFR_LEVELS", "FeedbackSettings", "LLMEndpoint", "ProviderSlot"]

ProviderSlot = Literal["primary", "secondary", "rules"]
"""Names of the chain's slots: two OpenAI-compatible endpoints and the deterministic rules provider."""

CEFR_LEVELS: tuple[str, ...] = ("A1", "A2", "B1", "B2", "C1", "C2")
"""Common European Framework of Reference levels (Council of Europe 2001/2020), lowest first."""


@dataclass(frozen=True, slots=True)
class LLMEndpoint:
    """One OpenAI-compatible endpoint as read from the settings (see :meth:`FeedbackSettings.endpoint`)."""

    name: str
    base_url: str
    model: str
    api_key: str = field(repr=False)


class FeedbackSettings(BaseSettings):
    """Knobs of coaching feedback; frozen, read from ``COACH_FEEDBACK_*`` variables."""

    model_config = SettingsConfigDict(
        env_prefix="COACH_FEEDBACK_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    # ------------------------------------------------------------------------------------------ the chain
    providers: Annotated[tuple[ProviderSlot, ...], NoDecode] = ("rules",)
    """the failover chain, tried in order, comma-separated or a JSON list, e.g. 'primary,secondary,rules'. 'rules' is
    appended when missing so that every transcript gets feedback. Default: rules only (no LLM is contacted)."""

    # ------------------------------------------------------------------------ OpenAI-compatible endpoints
    primary_name: str = Field(default="primary", min_length=1)
    """Provider label recorded on events for the primary endpoint"""
    primary_base_url: str = ""
    """Base URL of the primary OpenAI-compatible API, e.g. https://api.openai.com/v1"""
    primary_model: str = "gpt-4o-mini"
    """Chat model of the primary endpoint"""
    primary_api_key: SecretStr = SecretStr("")
    """API key of the primary endpoint (sent as a bearer token)"""
    secondary_name: str = Field(default="secondary", min_length=1)
    """Provider label recorded on events for the secondary one"""
    secondary_base_url: str = ""
    """Base URL of the secondary OpenAI-compatible API"""
    secondary_model: str = "gpt-4o-mini"
    """Chat model of the secondary endpoint"""
    secondary_api_key: SecretStr = SecretStr("")
    """API key of the secondary endpoint"""

    # ------------------------------------------------------------------------------------------ the LLM call
    request_timeout_s: float = Field(default=20.0, gt=0)
    """Seconds to wait for the LLM's response (httpx read/write/pool timeout)"""
    connect_timeout_s: float = Field(default=3.0, gt=0)
    """Seconds to establish the TCP/TLS connection"""
    temperature: float = Field(default=0.3, ge=0, le=2)
    """Sampling temperature of the chat completion"""
    max_completion_tokens: int = Field(default=600, ge=16)
    """Upper bound of tokens in the completion"""
    json_response_format: bool = True
    """Send response_format={'type': 'json_object'} (OpenAI JSON mode); turn off for servers that reject the parameter
    (the prompt asks for JSON either way)"""
    prompt_file: Path | None = None
    """A string.Template file replacing the built-in prompt ($level, $language, $metrics_json, $allowed_metrics,
    $transcript); see feedback.llm.DEFAULT_PROMPT"""
    max_transcript_chars: int = Field(default=6000, ge=200)
    """The transcript is cut to this many characters in the prompt"""

    # -------------------------------------------------------------------------------------- resilience
    retry_attempts: int = Field(default=3, ge=1)
    """Tries per provider on retryable errors (timeouts, connection errors, 429, 5xx)"""
    retry_initial_wait_s: float = Field(default=0.5, ge=0)
    """First backoff (exponential with jitter, doubling) when no Retry-After"""
    retry_max_wait_s: float = Field(default=8.0, ge=0)
    """Longest backoff between two tries, seconds"""
    max_retry_after_s: float = Field(default=10.0, ge=0)
    """Longest Retry-After honoured; a server asking for a longer wait makes the chain fail over at once instead of
    blocking the worker"""
    breaker_failure_threshold: int = Field(default=5, ge=1)
    """Consecutive failed calls that open a provider's circuit breaker"""
    breaker_reset_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds an open breaker waits before letting one trial call through"""
    llm_max_concurrency: int = Field(default=4, ge=1)
    """Concurrent LLM requests at most (a semaphore shared by the chain's providers)"""

    # ----------------------------------------------------------------------------------------- the worker
    worker_threads: int = Field(default=4, ge=1)
    """Transcripts of different learners processed in parallel within one batch"""
    batch_max_messages: int = Field(default=16, ge=1)
    """Transcripts consumed per batch at most; keep batch_max_messages / worker_threads x the worst chain time (tries x
    timeouts x LLM providers) under the consumer's 15 min max.poll.interval.ms"""
    metrics_port: int = Field(default=9103, ge=0)
    """Port of the worker's Prometheus /metrics (0 = off)"""
    llm_daily_budget: int = Field(default=20, ge=0)
    """Feedbacks per learner and UTC day that may ask an LLM provider; past it the rules provider answers and the event
    says so (llm_budget_exhausted). Bounds what one learner can cost (and how much a learner can steer a paid model)
    whatever they upload. 0: rules only"""
    max_feedback_chars: int = Field(default=1200, ge=100)
    """Longest feedback summary kept, characters (plain text, cut at a word)"""
    max_point_chars: int = Field(default=300, ge=50)
    """Longest message of one feedback point kept, characters (plain text)"""
    default_level: str = "B1"
    """CEFR level assumed when the learner has none in learners.target_level (B1: the middle of the scale, so that
    neither beginners nor advanced learners get extreme advice)"""

    # ----------------------------------------------------------------------------- rules: pace (words/min)
    speech_rate_min_wpm: float = Field(default=PACE_BAND.min_wpm, gt=0)
    """Below this speech rate the learner is told to speed up. Default: the platform's pace band
    (flows.metrics.norms.PACE_BAND, 130-175 wpm, with its sources), which the progress summary uses too"""
    speech_rate_max_wpm: float = Field(default=PACE_BAND.max_wpm, gt=0)
    """Above this speech rate the learner is told to slow down. Default: the upper bound of
    flows.metrics.norms.PACE_BAND"""
    min_words_for_pace: int = Field(default=10, ge=1)
    """Fewer words than this: no pace or pause feedback (rates are too noisy)"""

    # --------------------------------------------------------------------------------- rules: disfluency
    filled_pause_max_ratio: float = Field(default=0.04, ge=0, le=1)
    """Filled pauses (um, uh, er...) per word above which the learner is told to replace them by silent pauses. Basis:
    native task-oriented conversation has about 6 disfluencies of all kinds per 100 words (Bortfeld et al. 2001,
    Language and Speech 44(2); Fox Tree 1995), fillers being only part of them, so more than 4 fillers per 100 words
    stands out. Heuristic."""
    long_pause_s: float = Field(default=1.0, gt=0)
    """A silent pause at least this long counts as a long pause; a mean silent pause this long or longer is reported.
    Basis: pauses of 1 s and more are rare inside fluent L1 speech and a marker of planning trouble in L2 speech
    (Goldman-Eisler 1968; De Jong 2016 on mid-clause pauses). Heuristic."""
    max_pauses_per_minute: float = Field(default=30.0, gt=0)
    """Silent pauses (>= 250 ms) per minute above which the learner is told to speak in longer runs: 30/min is one pause
    every 2 s, i.e. runs of about 5 words at 150 wpm; mean length of run grows with proficiency (Kormos & Dénes 2004).
    Heuristic."""

    # ---------------------------------------------------------------------------------- rules: vocabulary
    mattr_min_by_level: dict[str, float] = {"A1": 0.55, "A2": 0.60, "B1": 0.65, "B2": 0.68, "C1": 0.71, "C2": 0.73}
    """Lowest MATTR (50-token window, Covington & McFall 2010) expected per CEFR level, as a JSON object. Heuristic:
    lexical diversity rises with proficiency in learner speech, and MATTR removes the length bias of plain TTR so one
    threshold per level fits answers of any length >= 50 tokens; the values are monotone starting points to be
    recalibrated on the platform's per-level distribution."""

    # -------------------------------------------------------------------------------------- validation
    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return tuple(json.loads(text))
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return value

    @field_validator("providers", mode="after")
    @classmethod
    def _rules_last(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"a provider appears twice in the chain: {value}")
        if "rules" in value and value[-1] != "rules":
            raise ValueError("'rules' is the last resort and must come last in the chain")
        return value if "rules" in value else (*value, "rules")

    @field_validator("mattr_min_by_level", mode="after")
    @classmethod
    def _known_levels(cls, value: dict[str, float]) -> dict[str, float]:
        normalised = {level.strip().upper(): float(threshold) for level, threshold in value.items()}
        unknown = set(normalised) - set(CEFR_LEVELS)
        if unknown:
            raise ValueError(f"unknown CEFR levels {sorted(unknown)}; known: {CEFR_LEVELS}")
        if any(not 0 < threshold <= 1 for threshold in normalised.values()):
            raise ValueError("MATTR thresholds are ratios in (0, 1]")
        return normalised

    @field_validator("default_level", mode="after")
    @classmethod
    def _known_default_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in CEFR_LEVELS:
            raise ValueError(f"default_level must be one of {CEFR_LEVELS}, got {value!r}")
        return level

    @model_validator(mode="after")
    def _consistent(self) -> FeedbackSettings:
        self.pace_band  # noqa: B018 - raises ValueError unless speech_rate_min_wpm < speech_rate_max_wpm
        for slot in ("primary", "secondary"):
            if slot in self.providers and not getattr(self, f"{slot}_base_url"):
                raise ValueError(
                    f"provider {slot!r} is in the chain but COACH_FEEDBACK_{slot.upper()}_BASE_URL is unset"
                )
        if self.primary_name == self.secondary_name:
            raise ValueError("primary_name and secondary_name must differ (they label breakers and events)")
        return self

    def endpoint(self, slot: Literal["primary", "secondary"]) -> LLMEndpoint:
        """The endpoint configured for ``slot`` (name, base URL, model, API key)."""
        return LLMEndpoint(
            name=getattr(self, f"{slot}_name"),
            base_url=getattr(self, f"{slot}_base_url"),
            model=getattr(self, f"{slot}_model"),
            api_key=getattr(self, f"{slot}_api_key").get_secret_value(),
        )

    @property
    def pace_band(self) -> PaceBand:
        """The pace band the rules judge ``speech_rate_wpm`` against (``flows.metrics.norms.PACE_BAND`` unless
        overridden). Raises ``ValueError`` unless ``speech_rate_min_wpm < speech_rate_max_wpm``."""
        return PaceBand(self.speech_rate_min_wpm, self.speech_rate_max_wpm)

    def mattr_minimum(self, level: str | None) -> float | None:
        """The MATTR threshold for a CEFR ``level`` (case-insensitive), or None when none is configured."""
        key = (level or self.default_level).strip().upper()
        return self.mattr_min_by_level.get(key)
