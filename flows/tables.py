"""The ClickHouse tables the metric dataflow writes, their columns, and versioned (replay) names.

The DDL is in ``clickhouse/sql/0002_flow_metrics.sql`` (applied by ``coach migrate``); the column tuples here
are the order in which row tuples are built (:mod:`flows.records`, :mod:`flows.aggregate`) and inserted. A
replay writes into ``<table>_v<N>`` copies created with ``CREATE TABLE … AS <table>`` (:func:`versioned`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "DATETIME64_MAX",
    "DATETIME64_MIN",
    "check_datetimes",
    "LATE_COLUMNS",
    "LATE_EVENTS",
    "LEARNER_METRICS_WINDOWS",
    "METRIC_TABLES",
    "REPLAYS",
    "SWAP_JOURNAL",
    "NEW_SUBMISSION_COLUMNS",
    "SUBMISSION_COLUMNS",
    "SUBMISSION_METRICS",
    "WINDOW_COLUMNS",
    "WINDOW_DISTRIBUTION_METRICS",
    "WINDOW_STATISTICS",
    "TableNames",
    "before_version",
    "versioned",
]

SUBMISSION_METRICS = "submission_metrics"
LEARNER_METRICS_WINDOWS = "learner_metrics_windows"
LATE_EVENTS = "late_events"
REPLAYS = "flow_replays"
SWAP_JOURNAL = "flow_replay_swaps"
"""The replay's swap journal (``clickhouse/sql/0006_flow_replay_swaps.sql``, :mod:`flows.replay`)."""
METRIC_TABLES: tuple[str, ...] = (SUBMISSION_METRICS, LEARNER_METRICS_WINDOWS, LATE_EVENTS)
"""The tables one run of the metric dataflow writes (and a replay rebuilds and swaps)."""

NEW_SUBMISSION_COLUMNS: tuple[str, ...] = (
    "filled_pauses_per_minute",
    "voiced_hesitation_count",
    "hesitation_detection",
    "hallucinated_word_count",
    "syllable_count",
    "speech_rate_sps",
    "articulation_rate_sps",
    "mean_length_of_run_syllables",
)
"""The ``submission_metrics`` columns of metrics version 2 (``clickhouse/sql/0007_syllables_hesitations.sql``),
named as the fields of :class:`flows.metrics.SubmissionMetrics`."""

SUBMISSION_COLUMNS: tuple[str, ...] = (
    "user_id",
    "submission_id",
    "event_id",
    "occurred_at",
    "language",
    "recording_duration_s",
    "pause_threshold_s",
    "word_count",
    "total_duration_s",
    "phonation_time_s",
    "speech_rate_wpm",
    "articulation_rate_wpm",
    "silent_pause_count",
    "silent_pauses_per_minute",
    "mean_silent_pause_s",
    "silent_pause_total_s",
    "silent_pauses_s",
    "mean_length_of_run",
    "filled_pause_count",
    "filled_pauses",
    "filled_pauses_per_100_words",
    "discourse_marker_count",
    "discourse_markers",
    "repetition_count",
    "repetitions",
    "vocabulary_token_count",
    "distinct_words",
    "mattr",
    "mtld",
    "vocabulary_sufficient",
    *NEW_SUBMISSION_COLUMNS,
    "asr_model",
    "metrics_version",
    "source_topic",
    "source_partition",
    "source_offset",
    "computed_at",
)

WINDOW_DISTRIBUTION_METRICS: tuple[str, ...] = (
    "speech_rate_wpm",
    "articulation_rate_wpm",
    "silent_pauses_per_minute",
    "mean_silent_pause_s",
    "mean_length_of_run",
    "filled_pauses_per_100_words",
    "repetition_count",
    "speech_rate_sps",
    "articulation_rate_sps",
    "mean_length_of_run_syllables",
    "filled_pauses_per_minute",
)
"""Per-submission values summarised in each window (``<name>_avg|min|p50|p90|max``; the last four since migration
0007). The filled-pause values of a submission without hesitation detection are left out (unknown)."""

WINDOW_STATISTICS: tuple[str, ...] = ("avg", "min", "p50", "p90", "max")

WINDOW_COLUMNS: tuple[str, ...] = (
    "user_id",
    "window_kind",
    "window_start",
    "window_end",
    "timezone",
    "local_start_date",
    "submissions",
    "first_occurred_at",
    "last_occurred_at",
    "word_count",
    "total_duration_s",
    "phonation_time_s",
    *(f"{metric}_{stat}" for metric in WINDOW_DISTRIBUTION_METRICS for stat in WINDOW_STATISTICS),
    "filled_pause_count",
    "filled_pauses_per_100_words",
    "repetition_count",
    "repetitions_per_100_words",
    "vocabulary_token_count",
    "distinct_words",
    "mattr",
    "mtld",
    "vocabulary_sufficient",
    "syllable_count",
    "hesitation_detected_submissions",
    "filled_pauses_per_minute",
    "asr_models",
    "metrics_version",
    "computed_at",
)

LATE_COLUMNS: tuple[str, ...] = (
    "user_id",
    "submission_id",
    "event_id",
    "occurred_at",
    "timezone",
    "window_kind",
    "window_start",
    "window_end",
    "asr_model",
    "metrics_version",
    "source_topic",
    "source_partition",
    "source_offset",
    "recorded_at",
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def versioned(table: str, version: int) -> str:
    """Name of the replay target of ``table`` for version ``version``: ``submission_metrics_v3``."""
    if version < 1:
        raise ValueError(f"versions start at 1, got {version}")
    return f"{table}_v{version}"


def before_version(table: str, version: int) -> str:
    """Name under which the tables that were live before version ``version`` are kept after its swap."""
    return f"{table}_before_v{version}"


@dataclass(frozen=True)
class TableNames:
    """Where one run of the dataflow writes: a database and the three metric tables (live or ``_vN``)."""

    database: str
    submission_metrics: str = SUBMISSION_METRICS
    learner_metrics_windows: str = LEARNER_METRICS_WINDOWS
    late_events: str = LATE_EVENTS

    def __post_init__(self) -> None:
        for name in (self.database, self.submission_metrics, self.learner_metrics_windows, self.late_events):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"not a plain ClickHouse identifier: {name!r}")

    @classmethod
    def for_version(cls, database: str, version: int | None) -> TableNames:
        """The live tables (``version=None``) or the replay targets of ``version``."""
        if version is None:
            return cls(database)
        return cls(
            database,
            versioned(SUBMISSION_METRICS, version),
            versioned(LEARNER_METRICS_WINDOWS, version),
            versioned(LATE_EVENTS, version),
        )

    def qualified(self, table: str) -> str:
        """``database.table``."""
        return f"{self.database}.{table}"

    def all(self) -> tuple[str, str, str]:
        """The three table names, in :data:`METRIC_TABLES` order."""
        return (self.submission_metrics, self.learner_metrics_windows, self.late_events)


DATETIME64_MIN = datetime(1900, 1, 1, tzinfo=UTC)
DATETIME64_MAX = datetime(2299, 12, 31, 23, 59, 59, tzinfo=UTC)
"""The range of ClickHouse's ``DateTime64`` (https://clickhouse.com/docs/sql-reference/data-types/datetime64)."""


def check_datetimes(row: Sequence[object], *, margin: timedelta = timedelta(0)) -> None:
    """Raise ``ValueError`` when a datetime of ``row`` lies outside ``DateTime64``'s range shrunk by ``margin``
    on both sides (windows derived from an instant reach up to a week away from it). A row ClickHouse would refuse
    must be rejected with its message, before it can fail a whole insert."""
    for value in row:
        if isinstance(value, datetime) and not (DATETIME64_MIN + margin <= value <= DATETIME64_MAX - margin):
            raise ValueError(f"{value.isoformat()} is outside the instants ClickHouse stores (DateTime64)")
