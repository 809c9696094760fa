"""Response models of the progress API (the OpenAPI schemas). Every datetime is UTC and tz-aware."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flows.metrics.windows import KIND_ORDER, WindowKind

__all__ = [
    "WINDOW_KINDS",
    "Change",
    "CohortLearner",
    "CohortList",
    "CohortPoint",
    "CohortProgress",
    "CohortSummary",
    "FeedbackOut",
    "FeedbackPoint",
    "Period",
    "ProgressResponse",
    "ProgressSummary",
    "SubmissionDetail",
    "SubmissionMetricsOut",
    "SubmissionPage",
    "SubmissionSummary",
    "TimelineEntry",
    "TranscriptOut",
    "TranscriptWordOut",
    "WindowKind",
    "WindowPoint",
]

WINDOW_KINDS: tuple[WindowKind, ...] = KIND_ORDER
"""Every window kind, in the order the API returns series (:data:`flows.metrics.windows.KIND_ORDER`)."""
Status = Literal["received", "transcribed", "feedback", "failed"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class TimelineEntry(_Out):
    """One status change of a submission (``submission_timeline``), oldest first."""

    status: str = Field(description="received | transcribed | feedback | failed (or a producer-specific step)")
    at: datetime = Field(description="Event time of the change")
    detail: str | None = Field(default=None, description="e.g. the failure reason")
    event_id: uuid.UUID = Field(description="The event that made the change")


class TranscriptWordOut(_Out):
    """A word with its timestamps, seconds from the start of the recording."""

    word: str
    start: float
    end: float
    probability: float | None = None


class TranscriptOut(_Out):
    """The transcript projected from ``TranscriptCreated``."""

    text: str
    language: str | None = None
    duration_s: float | None = Field(default=None, description="Duration of the decoded audio, s")
    word_count: int | None = None
    asr_model: str | None = None
    occurred_at: datetime
    words: list[TranscriptWordOut] | None = Field(
        default=None, description="Word timestamps; only with ?include_words=true"
    )


class SubmissionMetricsOut(_Out):
    """Metrics of one submission (ClickHouse ``submission_metrics``, newest metric definition)."""

    occurred_at: datetime = Field(description="Event time of the transcript the metrics come from")
    language: str
    word_count: int
    total_duration_s: float = Field(description="Speech span: first word start to last word end, s")
    phonation_time_s: float = Field(description="Speaking time (span minus silent pauses), s")
    speech_rate_wpm: float | None = Field(description="Words per minute over the total time")
    articulation_rate_wpm: float | None = Field(description="Words per minute over speaking time only")
    silent_pause_count: int
    silent_pauses_per_minute: float | None
    mean_silent_pause_s: float | None
    mean_length_of_run: float | None = Field(description="Mean words between silent pauses")
    syllable_count: int = Field(default=0, description="Syllables of the recognised words (0 before metrics v2)")
    speech_rate_sps: float | None = Field(default=None, description="Syllables per second over the total time")
    articulation_rate_sps: float | None = Field(default=None, description="Syllables per second of speaking time")
    mean_length_of_run_syllables: float | None = Field(default=None, description="Mean syllables between silent pauses")
    hesitation_detection: bool = Field(
        default=False,
        description="Whether a hesitation detector listened for filled pauses; false: every filled-pause figure is"
        " null (unknown, not zero)",
    )
    filled_pause_count: int | None = Field(
        description="um, uh, er… (merged spans, recognised or heard by the detector); null without detection"
    )
    filled_pauses: dict[str, int] | None = Field(description="Recognised fillers per form; null without detection")
    filled_pauses_per_100_words: float | None
    filled_pauses_per_minute: float | None = Field(default=None, description="Over the total time")
    voiced_hesitation_count: int | None = Field(
        default=None, description="Filled pauses heard only by the detector (not in the transcript)"
    )
    hallucinated_word_count: int = Field(
        default=0, description="Recognised words inside held sounds (likely invented by the recogniser)"
    )
    discourse_marker_count: int = Field(description="like, you know…")
    discourse_markers: dict[str, int]
    repetition_count: int = Field(description="Immediate repetitions")
    distinct_words: int
    mattr: float | None = Field(description="Moving-average type-token ratio, 50-token window")
    mtld: float | None = Field(description="Measure of textual lexical diversity")
    vocabulary_sufficient: bool = Field(description="False below 50 tokens: MATTR/MTLD are not meaningful")
    pause_threshold_s: float = Field(description="Silent-pause threshold the metrics were computed with, s")
    asr_model: str
    metrics_version: int


class FeedbackPoint(_Out):
    """One point of the feedback: something that went well or to work on."""

    kind: str = Field(description="went_well | work_on")
    metric: str | None = None
    value: float | None = None
    message: str


class FeedbackOut(_Out):
    """The coaching feedback projected from ``FeedbackGenerated``."""

    provider: str
    model: str | None = None
    text: str
    points: list[FeedbackPoint]
    occurred_at: datetime
    latency_ms: float | None = None


class SubmissionDetail(_Out):
    """Everything known about one submission."""

    submission_id: uuid.UUID
    user_id: str
    prompt_id: str | None = None
    status: str = Field(description="received | transcribed | feedback | failed")
    received_at: datetime | None = None
    recorded_at: datetime | None = Field(default=None, description="When the learner recorded it (client clock)")
    transcribed_at: datetime | None = None
    feedback_at: datetime | None = None
    failed_at: datetime | None = None
    failure_reason: str | None = None
    duration_s: float | None = None
    asr_model: str | None = None
    timeline: list[TimelineEntry]
    transcript: TranscriptOut | None = None
    metrics: SubmissionMetricsOut | None = Field(
        default=None, description="None until the metric dataflow has processed the transcript"
    )
    feedback: FeedbackOut | None = None


class SubmissionSummary(_Out):
    """One submission in a learner's list, with its headline metrics when computed."""

    submission_id: uuid.UUID
    prompt_id: str | None = None
    status: str
    received_at: datetime | None = None
    recorded_at: datetime | None = None
    duration_s: float | None = None
    word_count: int | None = None
    speech_rate_wpm: float | None = None
    articulation_rate_wpm: float | None = None
    speech_rate_sps: float | None = Field(default=None, description="Syllables per second over the total time")
    articulation_rate_sps: float | None = Field(default=None, description="Syllables per second of speaking time")
    mattr: float | None = None


class SubmissionPage(_Out):
    """A page of a learner's submissions, newest first."""

    items: list[SubmissionSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class WindowPoint(_Out):
    """One learner window (ClickHouse ``learner_metrics_windows``): averages over its submissions."""

    window_start: datetime = Field(description="UTC instant of the local window start")
    window_end: datetime = Field(description="UTC instant of the local window end (exclusive)")
    local_start_date: date = Field(description="First local day of the window")
    timezone: str = Field(description="IANA zone the window is local to")
    submissions: int
    word_count: int
    total_duration_s: float
    phonation_time_s: float
    speech_rate_wpm: float | None = Field(description="Mean over the window's submissions")
    articulation_rate_wpm: float | None
    silent_pauses_per_minute: float | None
    mean_silent_pause_s: float | None
    mean_length_of_run: float | None
    speech_rate_sps: float | None = Field(default=None, description="Mean over the window's submissions, syllables/s")
    articulation_rate_sps: float | None = Field(default=None, description="Mean, syllables per second of speaking")
    mean_length_of_run_syllables: float | None = Field(default=None, description="Mean syllables between pauses")
    hesitation_detected_submissions: int = Field(
        default=0, description="Submissions with hesitation detection: the filled-pause figures are over these only"
    )
    filled_pauses_per_100_words: float | None = Field(
        description="Pooled: 100 × filled pauses / words; null when no submission had hesitation detection"
    )
    filled_pauses_per_minute: float | None = Field(
        default=None, description="Pooled: filled pauses per minute of total time; null without hesitation detection"
    )
    repetitions_per_100_words: float | None = Field(description="Pooled: 100 × repetitions / words")
    distinct_words: int
    vocabulary_token_count: int
    mattr: float | None = Field(description="Over the window's concatenated tokens")
    mtld: float | None
    vocabulary_sufficient: bool
    metrics_version: int


class Period(_Out):
    """Submission-weighted means of the headline metrics over some weekly windows."""

    weeks: int = Field(description="Weekly windows in the period")
    start: datetime
    end: datetime
    submissions: int
    values: dict[str, float | None] = Field(description="Metric name -> mean (see 'changes' for the names)")


class Change(_Out):
    """How one metric moved from the baseline to the recent period."""

    metric: str
    label: str
    unit: str
    baseline: float | None
    recent: float | None
    change: float | None = Field(description="recent - baseline")
    change_pct: float | None = Field(description="100 × change / baseline")
    better: Literal["higher", "lower", "toward_range"] = Field(
        description="Which direction counts as progress; 'toward_range': closer to 'target'"
    )
    target: list[float] | None = Field(
        default=None, description="[low, high] band of a 'toward_range' metric, in its unit (speech rate: words/min)"
    )
    direction: Literal["improved", "declined", "unchanged", "unknown"] = Field(
        description="'unchanged' within 2 % of the baseline; 'unknown' when a side has no value"
    )


class ProgressSummary(_Out):
    """The learner's first weeks against the latest weeks."""

    baseline: Period | None = Field(description="The first weekly windows; null without data")
    recent: Period | None = Field(description="The latest weekly windows up to 'to'; null without data")
    changes: list[Change]


class ProgressResponse(_Out):
    """A learner's metric series per window kind, and the change since the first weeks."""

    user_id: str
    range_from: datetime = Field(alias="from", serialization_alias="from")
    range_to: datetime = Field(alias="to", serialization_alias="to")
    series: dict[WindowKind, list[WindowPoint]] = Field(description="Windows starting in [from, to), oldest first")
    summary: ProgressSummary

    model_config = ConfigDict(frozen=True, populate_by_name=True)


class CohortSummary(_Out):
    """A cohort the caller may read."""

    cohort: str
    learners: int


class CohortList(_Out):
    """Cohorts visible to the caller."""

    items: list[CohortSummary]


class CohortLearner(_Out):
    """One learner of a cohort with the change since the first weeks."""

    user_id: str
    display_name: str | None = None
    coach_id: str | None = None
    submissions: int = Field(description="Submissions in the requested range")
    last_window_start: datetime | None = None
    changes: list[Change]


class CohortPoint(_Out):
    """Cohort mean of a metric for windows starting at one instant."""

    window_start: datetime
    learners: int
    submissions: int
    values: dict[str, float | None]


class CohortProgress(_Out):
    """Progress of every learner of a cohort, and the cohort's mean series."""

    cohort: str
    window: WindowKind
    range_from: datetime = Field(alias="from", serialization_alias="from")
    range_to: datetime = Field(alias="to", serialization_alias="to")
    learners: list[CohortLearner]
    series: list[CohortPoint]

    model_config = ConfigDict(frozen=True, populate_by_name=True)
