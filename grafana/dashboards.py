"""The Grafana dashboards, as code (grafana-foundation-sdk), over the ClickHouse tables of ``clickhouse/sql``.

* **Learner progress** (``coach-learner-progress``): one learner's windows (variable ``learner``, window kind
  ``window_kind``) — pace, pauses, fillers, vocabulary, submissions — and recent submissions.
* **Cohort overview** (``coach-cohort-overview``): a cohort's mean series and its learners' first vs latest weeks
  (cohorts come from ``learner_profiles``, mirrored from the learners' CDC stream).
* **Pipeline health** (``coach-pipeline-health``): event throughput per type, consumer lag, end-to-end and
  per-stage latency percentiles, dead letters, late events.
* **Transcription performance** (``coach-transcription``): RTFx (audio seconds per processing second), batch
  sizes, per-stage latency percentiles, audio throughput per device and model.

Every panel queries through the data source variable ``datasource`` (type grafana-clickhouse-datasource), with
unqualified table names resolved in the data source's default database. The exported JSON is under
``grafana/dashboards/`` (``coach grafana export``; a test fails when it is stale) and provisioned by
``grafana/provisioning``. Every panel's SQL is run against the ClickHouse schema with seeded data in the tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import barchart, common, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    TableCellHeight,
    TooltipDisplayMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Panel,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from grafana.clickhouse_query import PLUGIN_ID, ClickHouseQuery

__all__ = ["DASHBOARDS", "DASHBOARDS_DIR", "build_all", "export_dashboards", "render", "sql_string", "stale_dashboards"]

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
DS = DataSourceRef(type_val=PLUGIN_ID, uid="${datasource}")
TAGS = ["speech-coach"]


def sql_string(variable: str) -> str:
    """The SQL expression for the value of the single-valued template variable ``variable``, safe against any value.

    Grafana puts a variable's value into the SQL text before ClickHouse sees it, and anyone who can open a dashboard
    can choose the value (``?var-learner=...`` in the URL), so the value is never pasted between quotes. Grafana's
    ``sqlstring`` format is not enough for ClickHouse: it only doubles ``'``, while ClickHouse string literals also
    read backslash escapes, so the value ``\\' OR 1=1 --`` ends the literal. Instead the value goes through
    Grafana's ``percentencode`` format (RFC 3986 strict: only ``A-Z a-z 0-9 - _ . ~`` and ``%XX`` remain) and
    ClickHouse decodes it back (``decodeURLComponent``, UTF-8), so the literal can hold nothing but those
    characters. Returns e.g. ``decodeURLComponent('${learner:percentencode}')``.
    """
    return f"decodeURLComponent('${{{variable}:percentencode}}')"


_LEARNER = sql_string("learner")
_COHORT = sql_string("cohort")
_WINDOW_KIND = sql_string("window_kind")


class _Ids:
    """Panel ids in build order (stable JSON)."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self) -> int:
        self.next += 1
        return self.next


def _query(sql: str, *, as_table: bool = False, ref: str = "A") -> ClickHouseQuery:
    q = ClickHouseQuery().ref_id(ref).raw_sql(sql).datasource(DS)
    return q.table() if as_table else q


def _placed(panel: Any, ids: _Ids, title: str, desc: str, target: ClickHouseQuery, w: int, h: int) -> Any:
    """``panel`` (a panel builder) with what every panel here has: the next id of ``ids``, ``title``, ``desc``, the
    ClickHouse datasource, the one query ``target``, ``w`` of the 24 grid columns and ``h`` grid rows."""
    return panel.id(ids()).title(title).description(desc).datasource(DS).with_target(target).span(w).height(h)


def _timeseries(
    ids: _Ids, title: str, sql: str, unit: str, *, w: int = 12, h: int = 8, desc: str = ""
) -> Builder[Panel]:
    return (
        _placed(timeseries.Panel(), ids, title, desc, _query(sql), w, h)
        .unit(unit)
        .line_width(2)
        .point_size(4)
        .span_nulls(True)
        .legend(_legend())
        .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI))
    )


def _legend() -> common.VizLegendOptions:
    return (
        common.VizLegendOptions()
        .show_legend(True)
        .display_mode(LegendDisplayMode.LIST)
        .placement(LegendPlacement.BOTTOM)
        .calcs([])
    )


def _stat(ids: _Ids, title: str, sql: str, unit: str, *, w: int = 6, h: int = 4, desc: str = "") -> Builder[Panel]:
    return (
        _placed(stat.Panel(), ids, title, desc, _query(sql, as_table=True), w, h)
        .unit(unit)
        .graph_mode(BigValueGraphMode.NONE)
        .color_mode(BigValueColorMode.VALUE)
    )


def _table(ids: _Ids, title: str, sql: str, *, w: int = 24, h: int = 9, desc: str = "") -> Builder[Panel]:
    return (
        _placed(table.Panel(), ids, title, desc, _query(sql, as_table=True), w, h)
        .show_header(True)
        .cell_height(TableCellHeight.SM)
    )


def _bars(ids: _Ids, title: str, sql: str, unit: str, *, w: int = 12, h: int = 8, desc: str = "") -> Builder[Panel]:
    return (
        _placed(barchart.Panel(), ids, title, desc, _query(sql, as_table=True), w, h)
        .unit(unit)
        .orientation(VizOrientation.VERTICAL)
        .legend(_legend())
        .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.SINGLE))
    )


def _base(uid: str, title: str, description: str) -> db.Dashboard:
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh("1m")
        .with_variable(
            db.DatasourceVariable("datasource").label("ClickHouse").type(PLUGIN_ID).regex("").include_all(False)
        )
    )


def _query_variable(name: str, label: str, sql: str) -> db.QueryVariable:
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query(sql)
        .refresh(VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def _window_kind_variable() -> db.CustomVariable:
    return (
        db.CustomVariable("window_kind")
        .label("Window")
        .values("weekly,daily,sliding_7d")
        .current(VariableOption(selected=True, text="weekly", value="weekly"))
    )


# One learner's windows of the chosen kind, newest metric definition per window.
_LEARNER_WINDOWS = f"""
FROM learner_metrics_windows FINAL
WHERE user_id = {_LEARNER} AND window_kind = {_WINDOW_KIND} AND $__timeFilter(window_start)
ORDER BY time, metrics_version DESC
LIMIT 1 BY time, timezone
"""


def learner_progress() -> db.Dashboard:
    """One learner's metric windows over time."""
    ids = _Ids()

    def series(title: str, columns: str, unit: str, *, desc: str = "", w: int = 12) -> Builder[Panel]:
        return _timeseries(
            ids, title, f"SELECT window_start AS time, {columns}{_LEARNER_WINDOWS}", unit, desc=desc, w=w
        )

    latest_submissions = f"""
SELECT occurred_at AS time, word_count AS words, round(speech_rate_wpm, 1) AS "speech rate (wpm)",
       round(articulation_rate_wpm, 1) AS "articulation rate (wpm)", round(speech_rate_sps, 2) AS "speech rate (syl/s)",
       round(articulation_rate_sps, 2) AS "articulation rate (syl/s)",
       round(silent_pauses_per_minute, 1) AS "pauses / min",
       if(hesitation_detection, round(filled_pauses_per_100_words, 1), NULL) AS "fillers / 100 w",
       if(hesitation_detection, round(filled_pauses_per_minute, 1), NULL) AS "fillers / min",
       round(mattr, 3) AS mattr, asr_model, metrics_version
FROM submission_metrics FINAL
WHERE user_id = {_LEARNER} AND $__timeFilter(occurred_at)
ORDER BY time DESC, metrics_version DESC
LIMIT 1 BY submission_id
LIMIT 50
"""
    return (
        _base("coach-learner-progress", "Learner progress", "One learner's speaking metrics per window over time.")
        .time("now-90d", "now")
        .with_variable(
            _query_variable(
                "learner", "Learner", "SELECT DISTINCT user_id FROM learner_metrics_windows ORDER BY user_id"
            )
        )
        .with_variable(_window_kind_variable())
        .with_panel(
            _stat(
                ids,
                "Submissions",
                "SELECT uniqExact(submission_id) AS submissions FROM submission_metrics FINAL"
                f" WHERE user_id = {_LEARNER} AND $__timeFilter(occurred_at)",
                "none",
            )
        )
        .with_panel(
            _stat(
                ids,
                "Speaking time",
                "SELECT sum(phonation_time_s) AS speaking_time FROM (SELECT phonation_time_s FROM submission_metrics"
                f" FINAL WHERE user_id = {_LEARNER} AND $__timeFilter(occurred_at)"
                " ORDER BY metrics_version DESC LIMIT 1 BY submission_id)",
                "s",
                desc="Phonation time: the span of speech minus silent pauses, summed over submissions",
            )
        )
        .with_panel(
            _stat(
                ids,
                "Words spoken",
                "SELECT sum(word_count) AS words FROM (SELECT word_count FROM submission_metrics FINAL"
                f" WHERE user_id = {_LEARNER} AND $__timeFilter(occurred_at)"
                " ORDER BY metrics_version DESC LIMIT 1 BY submission_id)",
                "none",
            )
        )
        .with_panel(
            _stat(
                ids,
                "Median speech rate",
                "SELECT quantile(0.5)(speech_rate_wpm) AS speech_rate FROM submission_metrics FINAL"
                f" WHERE user_id = {_LEARNER} AND $__timeFilter(occurred_at)",
                "none",
                desc="Words per minute over the whole response, median over the submissions in range",
            )
        )
        .with_panel(
            series(
                "Pace",
                'speech_rate_wpm_avg AS "speech rate", articulation_rate_wpm_avg AS "articulation rate"',
                "none",
                desc="Words per minute: speech rate over the total time, articulation rate over speaking time only"
                " (window means)",
            )
        )
        .with_panel(
            series(
                "Pace in syllables",
                'speech_rate_sps_avg AS "speech rate", articulation_rate_sps_avg AS "articulation rate"',
                "none",
                desc="Syllables per second: speech rate over the total time, articulation rate over speaking time"
                " only (window means; metrics version 2 on)",
            )
        )
        .with_panel(
            series(
                "Silent pauses per minute",
                'silent_pauses_per_minute_avg AS "silent pauses / min"',
                "none",
                desc="Silent pauses at or above the threshold (default 250 ms) per minute of speech",
            )
        )
        .with_panel(series("Mean pause length", 'mean_silent_pause_s_avg AS "mean silent pause"', "s"))
        .with_panel(
            series(
                "Mean length of run",
                'mean_length_of_run_avg AS "words between pauses",'
                ' mean_length_of_run_syllables_avg AS "syllables between pauses"',
                "none",
            )
        )
        .with_panel(
            series(
                "Filled pauses (hesitation detection)",
                'filled_pauses_per_100_words AS "filled pauses / 100 words",'
                ' filled_pauses_per_minute AS "filled pauses / min"',
                "none",
                desc="Pooled over the window's submissions whose audio the hesitation detector heard; blank when it"
                " heard none of them (a zero would not be known)",
            )
        )
        .with_panel(
            series(
                "Fillers and repetitions",
                'filled_pauses_per_100_words AS "filled pauses / 100 words",'
                ' repetitions_per_100_words AS "repetitions / 100 words"',
                "none",
                desc="Filled pauses (um, uh, er) and immediate repetitions per 100 words, pooled over the window",
            )
        )
        .with_panel(
            series(
                "Vocabulary diversity",
                'if(vocabulary_sufficient, mattr, NULL) AS "MATTR"',
                "none",
                desc="Moving-average type-token ratio (50-token window) over the window's tokens; blank below 50",
            )
        )
        .with_panel(
            series(
                "Lexical diversity (MTLD)",
                'if(vocabulary_sufficient, mtld, NULL) AS "MTLD"',
                "none",
                desc="Measure of textual lexical diversity over the window's tokens; blank below 50 tokens",
            )
        )
        .with_panel(series("Submissions per window", 'submissions AS "submissions"', "none"))
        .with_panel(_table(ids, "Latest submissions", latest_submissions))
    )


# Windows of the cohort's learners (newest metric definition per window).
_COHORT_WINDOWS = f"""(
    SELECT * FROM learner_metrics_windows FINAL
    WHERE window_kind = {_WINDOW_KIND} AND $__timeFilter(window_start)
      AND user_id IN (SELECT user_id FROM learner_profiles FINAL WHERE deleted = 0 AND cohort = {_COHORT})
    ORDER BY metrics_version DESC
    LIMIT 1 BY user_id, window_start, timezone
)"""


def cohort_overview() -> db.Dashboard:
    """A cohort's learners and mean series."""
    ids = _Ids()

    def series(title: str, columns: str, unit: str, *, desc: str = "") -> Builder[Panel]:
        sql = f"SELECT window_start AS time, {columns}\nFROM {_COHORT_WINDOWS}\nGROUP BY time ORDER BY time"
        return _timeseries(ids, title, sql, unit, desc=desc)

    learners = f"""
SELECT w.user_id AS learner, any(p.display_name) AS name, any(p.coach_id) AS coach, sum(w.submissions) AS submissions,
       round(argMin(w.speech_rate_wpm_avg, w.window_start), 1) AS "first speech rate",
       round(argMax(w.speech_rate_wpm_avg, w.window_start), 1) AS "latest speech rate",
       round(argMin(w.silent_pauses_per_minute_avg, w.window_start), 1) AS "first pauses / min",
       round(argMax(w.silent_pauses_per_minute_avg, w.window_start), 1) AS "latest pauses / min",
       round(argMax(w.mattr, w.window_start), 3) AS "latest MATTR", max(w.window_start) AS "last window"
FROM {_COHORT_WINDOWS} AS w
LEFT JOIN (SELECT user_id, display_name, coach_id FROM learner_profiles FINAL) AS p ON p.user_id = w.user_id
GROUP BY learner
ORDER BY learner
"""
    return (
        _base("coach-cohort-overview", "Cohort overview", "A cohort's learners: mean series and first vs latest.")
        .time("now-90d", "now")
        .with_variable(
            _query_variable(
                "cohort",
                "Cohort",
                "SELECT DISTINCT cohort FROM learner_profiles FINAL WHERE deleted = 0 AND cohort IS NOT NULL"
                " ORDER BY cohort",
            )
        )
        .with_variable(_window_kind_variable())
        .with_panel(
            _stat(
                ids,
                "Learners",
                f"SELECT count() AS learners FROM learner_profiles FINAL WHERE deleted = 0 AND cohort = {_COHORT}",
                "none",
            )
        )
        .with_panel(
            _stat(
                ids,
                "Active learners",
                f"SELECT uniqExact(user_id) AS active FROM {_COHORT_WINDOWS}",
                "none",
                desc="Learners with at least one window in the time range",
            )
        )
        .with_panel(_stat(ids, "Submissions", f"SELECT sum(submissions) AS submissions FROM {_COHORT_WINDOWS}", "none"))
        .with_panel(
            _stat(
                ids,
                "Speaking time",
                f"SELECT sum(phonation_time_s) AS speaking_time FROM {_COHORT_WINDOWS}",
                "s",
            )
        )
        .with_panel(
            series(
                "Mean pace",
                'avg(speech_rate_wpm_avg) AS "speech rate", avg(articulation_rate_wpm_avg) AS "articulation rate"',
                "none",
                desc="Mean over the cohort's learners of their window means, words per minute",
            )
        )
        .with_panel(
            series(
                "Mean pace in syllables",
                'avg(speech_rate_sps_avg) AS "speech rate", avg(articulation_rate_sps_avg) AS "articulation rate"',
                "none",
                desc="Mean over the cohort's learners of their window means, syllables per second",
            )
        )
        .with_panel(
            series(
                "Mean filled pauses (hesitation detection)",
                'avg(filled_pauses_per_100_words) AS "filled pauses / 100 words",'
                ' avg(filled_pauses_per_minute) AS "filled pauses / min"',
                "none",
                desc="Mean over the learners whose windows had hesitation detection (others are blank, not zero)",
            )
        )
        .with_panel(
            series(
                "Mean pauses and fillers",
                'avg(silent_pauses_per_minute_avg) AS "silent pauses / min",'
                ' avg(filled_pauses_per_100_words) AS "filled pauses / 100 words"',
                "none",
            )
        )
        .with_panel(series("Mean vocabulary diversity", 'avgIf(mattr, vocabulary_sufficient) AS "MATTR"', "none"))
        .with_panel(
            series(
                "Submissions and active learners",
                'sum(submissions) AS "submissions", uniqExact(user_id) AS "active learners"',
                "none",
            )
        )
        .with_panel(_table(ids, "Learners: first and latest window", learners, h=10))
    )


# A submission's milestones from pipeline_events (minIf of a missing type is the epoch: filtered by HAVING).
_SUBMISSION_MILESTONES = """(
    SELECT submission_id,
           minIf(occurred_at, event_type = 'SubmissionReceived') AS received,
           minIf(occurred_at, event_type = 'TranscriptCreated') AS transcribed,
           minIf(occurred_at, event_type = 'FeedbackGenerated') AS done
    FROM pipeline_events
    WHERE occurred_at >= $__fromTime - INTERVAL 1 DAY AND occurred_at <= $__toTime
    GROUP BY submission_id
    HAVING countIf(event_type = 'SubmissionReceived') > 0 AND countIf(event_type = 'TranscriptCreated') > 0
       AND countIf(event_type = 'FeedbackGenerated') > 0
)"""


def pipeline_health() -> db.Dashboard:
    """Throughput, lag, latency and failures of the event pipeline."""
    ids = _Ids()
    count_of = (
        "SELECT count() AS {alias} FROM pipeline_events FINAL"
        " WHERE event_type = '{type}' AND $__timeFilter(occurred_at)"
    )
    return (
        _base("coach-pipeline-health", "Pipeline health", "Throughput, consumer lag, latency and dead letters.")
        .time("now-24h", "now")
        .with_panel(_stat(ids, "Submissions", count_of.format(alias="submissions", type="SubmissionReceived"), "none"))
        .with_panel(_stat(ids, "Transcripts", count_of.format(alias="transcripts", type="TranscriptCreated"), "none"))
        .with_panel(_stat(ids, "Feedback", count_of.format(alias="feedback", type="FeedbackGenerated"), "none"))
        .with_panel(
            _stat(
                ids,
                "Dead letters",
                "SELECT count() AS dead_letters FROM dead_letters FINAL WHERE $__timeFilter(failed_at)",
                "none",
            )
        )
        .with_panel(
            _timeseries(
                ids,
                "Throughput by event type",
                """
SELECT $__timeInterval(occurred_at) AS time, event_type, count() AS events
FROM pipeline_events FINAL
WHERE $__timeFilter(occurred_at)
GROUP BY time, event_type
ORDER BY time
""",
                "none",
                desc="Events per interval on speech.submissions.v1, speech.transcripts.v1 and speech.feedback.v1",
            )
        )
        .with_panel(
            _timeseries(
                ids,
                "Consumer lag",
                """
SELECT time, consumer, sum(lag) AS lag
FROM (
    SELECT $__timeInterval(sampled_at) AS time, concat(consumer_group, ' / ', topic) AS consumer, partition,
           max(lag) AS lag
    FROM consumer_lag FINAL
    WHERE $__timeFilter(sampled_at)
    GROUP BY time, consumer, partition
)
GROUP BY time, consumer
ORDER BY time
""",
                "none",
                desc="Messages behind the end of the topic, summed over partitions, per consumer group",
            )
        )
        .with_panel(
            _timeseries(
                ids,
                "End-to-end latency",
                f"""
SELECT $__timeInterval(done) AS time,
       quantile(0.5)(latency_s) AS p50, quantile(0.9)(latency_s) AS p90, quantile(0.99)(latency_s) AS p99
FROM (SELECT done, dateDiff('millisecond', received, done) / 1000 AS latency_s FROM {_SUBMISSION_MILESTONES})
WHERE $__timeFilter(done)
GROUP BY time
ORDER BY time
""",
                "s",
                desc="SubmissionReceived to FeedbackGenerated (event times), percentiles per interval",
            )
        )
        .with_panel(
            _timeseries(
                ids,
                "Latency per stage (median)",
                f"""
SELECT $__timeInterval(done) AS time,
       quantile(0.5)(dateDiff('millisecond', received, transcribed) / 1000) AS "received → transcribed",
       quantile(0.5)(dateDiff('millisecond', transcribed, done) / 1000) AS "transcribed → feedback"
FROM {_SUBMISSION_MILESTONES}
WHERE $__timeFilter(done)
GROUP BY time
ORDER BY time
""",
                "s",
            )
        )
        .with_panel(
            _timeseries(
                ids,
                "Dead letters by topic",
                """
SELECT $__timeInterval(failed_at) AS time, original_topic AS topic, count() AS dead_letters
FROM dead_letters FINAL
WHERE $__timeFilter(failed_at)
GROUP BY time, topic
ORDER BY time
""",
                "none",
            )
        )
        .with_panel(
            _timeseries(
                ids,
                "Late events",
                """
SELECT $__timeInterval(recorded_at) AS time, window_kind, count() AS late
FROM late_events FINAL
WHERE $__timeFilter(recorded_at)
GROUP BY time, window_kind
ORDER BY time
""",
                "none",
                desc="Submissions that reached the metric dataflow after their window had closed",
            )
        )
        .with_panel(
            _table(
                ids,
                "Dead letters by cause",
                """
SELECT original_topic AS topic, consumer_group, error_class, count() AS messages, max(failed_at) AS last_seen,
       any(reason) AS example_reason
FROM dead_letters FINAL
WHERE $__timeFilter(failed_at)
GROUP BY topic, consumer_group, error_class
ORDER BY messages DESC
""",
            )
        )
    )


_PROCESSING_S = "(fetch_ms + decode_ms + vad_ms + inference_ms) / 1000"


def transcription_performance() -> db.Dashboard:
    """RTFx, batching and per-stage latency of the transcription workers."""
    ids = _Ids()
    runs = "FROM transcription_runs FINAL\nWHERE $__timeFilter(occurred_at)"
    return (
        _base(
            "coach-transcription",
            "Transcription performance",
            "Real-time factor, batch sizes and per-stage latency of the transcription consumer group.",
        )
        .time("now-24h", "now")
        .with_panel(_stat(ids, "Transcripts", f"SELECT count() AS transcripts {runs}", "none"))
        .with_panel(_stat(ids, "Audio transcribed", f"SELECT sum(duration_s) AS audio {runs}", "s"))
        .with_panel(
            _stat(
                ids,
                "RTFx",
                f"SELECT sum(duration_s) / sum({_PROCESSING_S}) AS rtfx {runs} AND {_PROCESSING_S} > 0",
                "none",
                desc="Seconds of audio per second of processing (fetch + decode + VAD + inference share)",
            )
        )
        .with_panel(_stat(ids, "Mean batch size", f"SELECT avg(batch_size) AS batch_size {runs}", "none"))
        .with_panel(
            _timeseries(
                ids,
                "RTFx by device",
                f"""
SELECT $__timeInterval(occurred_at) AS time, device, quantile(0.5)(duration_s / ({_PROCESSING_S})) AS rtfx
{runs} AND {_PROCESSING_S} > 0
GROUP BY time, device
ORDER BY time
""",
                "none",
                desc="Median over messages of audio seconds per processing second",
            )
        )
        .with_panel(
            _timeseries(
                ids,
                "Audio throughput",
                f"""
SELECT $__timeInterval(occurred_at) AS time, device, sum(duration_s) AS "audio seconds"
{runs}
GROUP BY time, device
ORDER BY time
""",
                "s",
            )
        )
        .with_panel(
            _bars(
                ids,
                "Batch sizes",
                f"SELECT toString(batch_size) AS batch_size, count() AS messages {runs}\n"
                "GROUP BY batch_size ORDER BY toUInt16(batch_size)",
                "none",
                desc="Messages per size of the cross-message batch they were transcribed in",
            )
        )
        .with_panel(
            _timeseries(
                ids,
                "Mean batch size",
                f"SELECT $__timeInterval(occurred_at) AS time, avg(batch_size) AS batch_size {runs}\n"
                "GROUP BY time ORDER BY time",
                "none",
            )
        )
        .with_panel(
            _timeseries(
                ids,
                "Stage latency p50",
                f"""
SELECT $__timeInterval(occurred_at) AS time,
       quantile(0.5)(queue_wait_ms) AS "queue wait", quantile(0.5)(fetch_ms) AS fetch,
       quantile(0.5)(decode_ms) AS decode, quantile(0.5)(vad_ms) AS vad, quantile(0.5)(inference_ms) AS inference
{runs}
GROUP BY time
ORDER BY time
""",
                "ms",
            )
        )
        .with_panel(
            _timeseries(
                ids,
                "Stage latency p95",
                f"""
SELECT $__timeInterval(occurred_at) AS time,
       quantile(0.95)(queue_wait_ms) AS "queue wait", quantile(0.95)(fetch_ms) AS fetch,
       quantile(0.95)(decode_ms) AS decode, quantile(0.95)(vad_ms) AS vad, quantile(0.95)(inference_ms) AS inference
{runs}
GROUP BY time
ORDER BY time
""",
                "ms",
            )
        )
        .with_panel(
            _table(
                ids,
                "By model and device",
                f"""
SELECT asr_model, device, compute_type, count() AS transcripts, round(sum(duration_s) / 3600, 2) AS audio_hours,
       round(sum(duration_s) / sum({_PROCESSING_S}), 1) AS rtfx, round(avg(batch_size), 1) AS mean_batch,
       round(quantile(0.5)(inference_ms)) AS p50_inference_ms, round(quantile(0.95)(queue_wait_ms)) AS p95_queue_ms
{runs} AND {_PROCESSING_S} > 0
GROUP BY asr_model, device, compute_type
ORDER BY transcripts DESC
""",
                h=7,
            )
        )
    )


DASHBOARDS: dict[str, Callable[[], db.Dashboard]] = {
    "coach-learner-progress": learner_progress,
    "coach-cohort-overview": cohort_overview,
    "coach-pipeline-health": pipeline_health,
    "coach-transcription": transcription_performance,
}
"""Dashboard uid -> builder. The exported file is ``grafana/dashboards/<uid>.json``."""


def render(builder: db.Dashboard) -> str:
    """The dashboard model as stable JSON text (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(builder.build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build_all() -> dict[str, str]:
    """``{file name: JSON text}`` of every dashboard."""
    return {f"{uid}.json": render(make()) for uid, make in DASHBOARDS.items()}


def export_dashboards(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    """Write every dashboard's JSON into ``directory`` (created if missing); returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in build_all().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_dashboards(directory: Path = DASHBOARDS_DIR) -> list[str]:
    """Names of dashboard files in ``directory`` that are missing, differ from the code, or have no builder."""
    expected = build_all()
    stale = [n for n, text in expected.items() if not (directory / n).is_file() or (directory / n).read_text() != text]
    stale += [p.name for p in sorted(directory.glob("*.json")) if p.name not in expected]
    return stale
