"""Read-only access to the metric tables in ClickHouse (written by the dataflows, ``clickhouse/sql/0002``).

:class:`ClickHouseReader` hands out clickhouse-connect clients safely across the API's request threads:

* embedded chDB (``chdb://``, the local mode): private handles on the process's one chDB engine
  (:func:`runtime.clickhouse.get_clickhouse_client` with ``new=True``; the dataflows in the same process use their
  own), so the API's queries never share a handle with the writers;
* a ClickHouse server over HTTP: clickhouse-connect HTTP clients.

Either way a client serves one query at a time (clickhouse-connect clients are not safe to share between
threads): at most ``pool_size`` queries run at once, the others wait for a client.

Every query is sent with the ``readonly`` setting (1 by default; see ``COACH_API_CLICKHOUSE_READONLY``), which both
chDB and the server enforce: an INSERT or DDL through this reader fails with ``READONLY``. Table names are
qualified with the database, so the shared chDB client's current database does not matter.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from api.models import SubmissionMetricsOut, WindowKind, WindowPoint
from api.telemetry import QUERY_LATENCY
from flows.metrics import known_filled_pauses
from runtime.clickhouse import get_clickhouse_client, is_embedded
from runtime.settings import PlatformSettings

__all__ = [
    "ClickHouseReader",
    "fetch_headlines",
    "fetch_learner_windows",
    "fetch_submission_metrics",
    "fetch_windows",
    "utc",
]


def utc(value: datetime) -> datetime:
    """``value`` as a tz-aware UTC datetime (clickhouse-connect may return naive UTC for DateTime64 columns)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ClickHouseReader:
    """Thread-safe, read-only ClickHouse queries for the API: a pool of at most ``pool_size`` clients, each used
    by one request thread at a time. ``close()`` releases them."""

    def __init__(self, platform: PlatformSettings, *, readonly: int = 1, pool_size: int = 4) -> None:
        self.database = platform.clickhouse_database
        self.readonly = readonly
        self._platform = platform
        self._embedded = is_embedded(platform.clickhouse_dsn)
        self._idle: queue.LifoQueue[Client] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._idle.put(self._connect())  # fail fast on a bad DSN (and open chDB's data directory)

    def _connect(self) -> Client:
        return get_clickhouse_client(self._platform, new=True, create_database=self._embedded)

    def table(self, name: str) -> str:
        """``<database>.<name>``."""
        return f"{self.database}.{name}"

    @contextmanager
    def _client(self) -> Iterator[Client]:
        with self._slots:
            try:
                client = self._idle.get_nowait()
            except queue.Empty:
                client = self._connect()
            try:
                yield client
            except Exception:
                client.close()  # a client whose request failed midway is not reused
                raise
            self._idle.put(client)

    def rows(
        self, sql: str, parameters: Mapping[str, Any] | None = None, *, name: str = "other"
    ) -> list[dict[str, Any]]:
        """Run a SELECT with server-side ``{name:Type}`` parameters; rows as dicts. ClickHouse errors propagate.

        ``name`` labels the query in the ``coach_api_clickhouse_query_seconds`` histogram.
        """
        start = time.perf_counter()
        try:
            with self._client() as client:
                result = client.query(sql, parameters=dict(parameters or {}), settings={"readonly": self.readonly})
                return list(result.named_results())
        finally:
            QUERY_LATENCY.labels(name).observe(time.perf_counter() - start)

    def ping(self) -> None:
        """Raise unless ClickHouse answers a trivial query."""
        self.rows("SELECT 1", name="ping")

    def close(self) -> None:
        """Close the pooled clients (chDB's engine stays open for the process's other handles)."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


_WINDOW_COLUMNS = """
    user_id, window_kind, window_start, window_end, local_start_date, timezone, submissions, word_count,
    total_duration_s, phonation_time_s,
    speech_rate_wpm_avg AS speech_rate_wpm, articulation_rate_wpm_avg AS articulation_rate_wpm,
    silent_pauses_per_minute_avg AS silent_pauses_per_minute, mean_silent_pause_s_avg AS mean_silent_pause_s,
    mean_length_of_run_avg AS mean_length_of_run, filled_pauses_per_100_words, repetitions_per_100_words,
    distinct_words, vocabulary_token_count, mattr, mtld, vocabulary_sufficient, metrics_version,
    speech_rate_sps_avg AS speech_rate_sps, articulation_rate_sps_avg AS articulation_rate_sps,
    mean_length_of_run_syllables_avg AS mean_length_of_run_syllables, hesitation_detected_submissions,
    filled_pauses_per_minute
"""


def _window_point(row: dict[str, Any]) -> WindowPoint:
    """The :class:`WindowPoint` of a ``learner_metrics_windows`` row (``user_id`` and ``window_kind`` removed):
    its filled-pause figures unknown (:func:`flows.metrics.known_filled_pauses`) when none of its submissions had
    hesitation detection (rows of metrics version 1 included)."""
    row["window_start"], row["window_end"] = utc(row["window_start"]), utc(row["window_end"])
    known = known_filled_pauses(row | {"hesitation_detection": row["hesitation_detected_submissions"] > 0})
    del known["hesitation_detection"]
    return WindowPoint(**known)


_WINDOWS_SQL = """
SELECT {columns}
FROM {table} FINAL
WHERE user_id IN {{users:Array(String)}}
  AND ((window_kind IN {{kinds:Array(String)}}
        AND window_start >= fromUnixTimestamp64Milli({{start_ms:Int64}}, 'UTC')
        AND window_start < fromUnixTimestamp64Milli({{end_ms:Int64}}, 'UTC'))
       OR ({{with_weekly:Bool}} AND window_kind = 'weekly'
           AND window_start < fromUnixTimestamp64Milli({{end_ms:Int64}}, 'UTC')))
ORDER BY user_id, window_kind, window_start, timezone, metrics_version DESC
LIMIT 1 BY user_id, window_kind, window_start, timezone
"""


def _ms(value: datetime) -> int:
    return int(utc(value).timestamp() * 1000)


def fetch_windows(
    reader: ClickHouseReader,
    user_ids: Sequence[str],
    kinds: Sequence[WindowKind],
    start: datetime,
    end: datetime,
    *,
    all_weekly: bool,
) -> dict[str, dict[WindowKind, list[WindowPoint]]]:
    """Windows of ``user_ids`` of ``kinds`` starting in ``[start, end)``, per user and kind, oldest first.

    With ``all_weekly`` every weekly window starting before ``end`` is included too (the progress summary's
    baseline needs the learner's first weeks). Of rows written by several metric-definition versions for the
    same window, the newest version's row is returned.
    """
    if not user_ids:
        return {}
    sql = _WINDOWS_SQL.format(columns=_WINDOW_COLUMNS, table=reader.table("learner_metrics_windows"))
    rows = reader.rows(
        sql,
        {
            "users": list(user_ids),
            "kinds": list(kinds),
            "start_ms": _ms(start),
            "end_ms": _ms(end),
            "with_weekly": all_weekly,
        },
        name="windows",
    )
    out: dict[str, dict[WindowKind, list[WindowPoint]]] = {}
    for row in rows:
        out.setdefault(row.pop("user_id"), {}).setdefault(row.pop("window_kind"), []).append(_window_point(row))
    return out


_LEARNER_WINDOWS_SQL = """
SELECT {columns}
FROM {table} FINAL
WHERE user_id = {{user:String}}
ORDER BY window_kind, window_start, timezone, metrics_version DESC
LIMIT 1 BY window_kind, window_start, timezone
"""


def fetch_learner_windows(reader: ClickHouseReader, user_id: str) -> dict[WindowKind, list[WindowPoint]]:
    """Every window of one learner (all kinds, all time), per kind, oldest first: what the progress cache keeps.

    One primary-key range of ``learner_metrics_windows`` (``ORDER BY user_id, …``); ``FINAL`` collapses rows
    written twice (measured: no slower than ``argMax``/``LIMIT BY`` without ``FINAL`` on this table, because a
    learner's rows sit in one or two granules). Of rows of several metric-definition versions for the same
    window, the newest version's row is returned (as in :func:`fetch_windows`).
    """
    sql = _LEARNER_WINDOWS_SQL.format(columns=_WINDOW_COLUMNS, table=reader.table("learner_metrics_windows"))
    out: dict[WindowKind, list[WindowPoint]] = {}
    for row in reader.rows(sql, {"user": user_id}, name="learner_windows"):
        del row["user_id"]
        out.setdefault(row.pop("window_kind"), []).append(_window_point(row))
    return out


_SUBMISSION_METRICS_SQL = """
SELECT occurred_at, language, word_count, total_duration_s, phonation_time_s, speech_rate_wpm,
       articulation_rate_wpm, silent_pause_count, silent_pauses_per_minute, mean_silent_pause_s, mean_length_of_run,
       filled_pause_count, filled_pauses, filled_pauses_per_100_words, discourse_marker_count, discourse_markers,
       repetition_count, distinct_words, mattr, mtld, vocabulary_sufficient, pause_threshold_s, asr_model,
       metrics_version, syllable_count, speech_rate_sps, articulation_rate_sps, mean_length_of_run_syllables,
       hesitation_detection, filled_pauses_per_minute, voiced_hesitation_count, hallucinated_word_count
FROM {table} FINAL
WHERE user_id = {{user:String}} AND submission_id = {{submission:UUID}}
ORDER BY metrics_version DESC
LIMIT 1
"""


def fetch_submission_metrics(reader: ClickHouseReader, user_id: str, submission_id: Any) -> SubmissionMetricsOut | None:
    """Metrics of one submission (newest metric-definition version), or None when not computed yet. Without
    hesitation detection its filled-pause figures are None (:func:`flows.metrics.known_filled_pauses`)."""
    sql = _SUBMISSION_METRICS_SQL.format(table=reader.table("submission_metrics"))
    rows = reader.rows(sql, {"user": user_id, "submission": str(submission_id)}, name="submission_metrics")
    if not rows:
        return None
    row = known_filled_pauses(rows[0])
    row["occurred_at"] = utc(row["occurred_at"])
    return SubmissionMetricsOut(**row)


_HEADLINES_SQL = """
SELECT toString(submission_id) AS sid, word_count, speech_rate_wpm, articulation_rate_wpm, speech_rate_sps,
       articulation_rate_sps, if(vocabulary_sufficient, mattr, NULL) AS mattr
FROM {table} FINAL
WHERE user_id = {{user:String}} AND submission_id IN {{submissions:Array(UUID)}}
ORDER BY sid, metrics_version DESC
LIMIT 1 BY sid
"""


def fetch_headlines(reader: ClickHouseReader, user_id: str, submission_ids: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Word count, speech/articulation rate (words per minute and syllables per second) and MATTR of some of a
    learner's submissions, by submission id."""
    if not submission_ids:
        return {}
    sql = _HEADLINES_SQL.format(table=reader.table("submission_metrics"))
    rows = reader.rows(sql, {"user": user_id, "submissions": [str(s) for s in submission_ids]}, name="headlines")
    return {row.pop("sid"): row for row in rows}
