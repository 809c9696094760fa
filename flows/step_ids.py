"""Stable identifiers of the metric dataflow: the flow id and every step id, the topics it reads.

Bytewax keys its recovery snapshots by step id: renaming a step (or the flow) orphans its saved state, so a
running flow would resume that step from scratch. Change these only together with a fresh recovery directory
(a new metric version gets one automatically) and a note in docs/MIGRATIONS.md.
"""

from __future__ import annotations

from schemas.topics import LEARNERS_CDC_TOPIC as _LEARNERS_CDC_TOPIC
from schemas.topics import TRANSCRIPTS

__all__ = [
    "FLOW_ID",
    "STATE_VERSION",
    "LEARNERS_CDC_TOPIC",
    "STEP_ASSIGN_TIMEZONE",
    "STEP_CDC_IN",
    "STEP_DEAD_LETTERS_OUT",
    "STEP_KEY_SCORED",
    "STEP_KEY_WINDOWS",
    "STEP_MERGE_TIMEZONES",
    "STEP_LATE_OUT",
    "STEP_LATE_ROWS",
    "STEP_PARSE_CDC",
    "STEP_SPLIT_CDC_ERRORS",
    "STEP_MERGE_ERRORS",
    "STEP_SCORE",
    "STEP_SPLIT_ERRORS",
    "STEP_SUBMISSION_ROWS",
    "STEP_SUBMISSIONS_OUT",
    "STEP_TRANSCRIPTS_IN",
    "STEP_WINDOW_ROWS",
    "STEP_WINDOWS",
    "STEP_WINDOWS_OUT",
    "TRANSCRIPTS_TOPIC",
    "OBSERVABILITY_FLOW",
    "OBS_INPUT",
    "OBS_MERGE",
    "OBS_ROWS",
    "OBS_SELECT",
    "OBS_OUTPUT",
]

FLOW_ID = "metrics"
"""The dataflow's id (``coach replay metrics``); prefixes every step id in recovery snapshots."""

STATE_VERSION = 2
"""Version of what the recovery snapshots hold (pickled :class:`flows.records.WindowItem`,
:class:`flows.calendar.TimezoneHistory`, clock and windower states). Bump it when one of those classes changes:
the live flow then starts from a fresh recovery directory (``…-s<STATE_VERSION>``), rebuilding its state from
the earliest offsets with idempotent writes. History: 1; 2 (issue 18): :class:`~flows.records.WindowItem` gained
the metrics version 2 fields."""

TRANSCRIPTS_TOPIC = TRANSCRIPTS.name
LEARNERS_CDC_TOPIC = _LEARNERS_CDC_TOPIC
"""Debezium change events of the ``learners`` read model: the learners' timezones."""

STEP_TRANSCRIPTS_IN = "transcripts_in"
STEP_SCORE = "score"
STEP_SPLIT_ERRORS = "split_errors"
STEP_DEAD_LETTERS_OUT = "dead_letters_out"
STEP_SUBMISSION_ROWS = "submission_rows"
STEP_SUBMISSIONS_OUT = "submission_metrics_out"
STEP_CDC_IN = "learners_cdc_in"
STEP_PARSE_CDC = "parse_learner_changes"
STEP_SPLIT_CDC_ERRORS = "split_learner_change_errors"
STEP_MERGE_ERRORS = "merge_errors"
STEP_KEY_SCORED = "key_scored_by_learner"
STEP_MERGE_TIMEZONES = "merge_timezone_changes"
STEP_ASSIGN_TIMEZONE = "assign_timezone"
STEP_KEY_WINDOWS = "key_by_learner_timezone"
STEP_WINDOWS = "learner_windows"
STEP_WINDOW_ROWS = "window_rows"
STEP_WINDOWS_OUT = "learner_metrics_windows_out"
STEP_LATE_ROWS = "late_rows"
STEP_LATE_OUT = "late_events_out"

# --- the observability dataflow (flows/observability.py) -------------------------------------------------------
OBSERVABILITY_FLOW = "observability"
"""Id of the dataflow mirroring events, dead letters and learner profiles into ClickHouse for Grafana."""
OBS_INPUT = "in"
"""Prefix of its input steps: ``in_<topic with dots as underscores>``."""
OBS_MERGE = "merge"
OBS_ROWS = "rows"
OBS_SELECT = "select"
"""Prefix of the per-table selection steps: ``select_<table>``."""
OBS_OUTPUT = "out"
"""Prefix of the per-table sink steps: ``out_<table>``."""
