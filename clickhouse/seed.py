"""Synthetic rows of the read side's ClickHouse tables, generated in the engine (``INSERT … SELECT FROM numbers()``):
``submission_metrics`` of learners who improve over the seeded period (speech rate and MATTR rise, pauses and
fillers fall, with deterministic noise; metrics version 2, nine in ten with hesitation detection), and
``learner_metrics_windows`` derived from them with SQL (daily, ISO-weekly and 7-day sliding, UTC): a stand-in for
the dataflow's output with the same table shape, not a test of the dataflow. What the API benchmark
(``bench/api.py``) and the read-side tests seed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flows.tables import SUBMISSION_COLUMNS

__all__ = ["SEED_START", "derive_windows", "seed_submission_metrics"]

SEED_START = datetime(2024, 1, 1, tzinfo=UTC)


_SUBMISSIONS_SQL = """
INSERT INTO {db}.submission_metrics ({columns})
SELECT
    concat({{prefix:String}}, toString(n % {{users:UInt32}})) AS user_id,
    reinterpretAsUUID(reverse(unhex(lower(hex(MD5(concat({{prefix:String}}, toString(n)))))))) AS submission_id,
    reinterpretAsUUID(reverse(unhex(lower(hex(MD5(concat('event', {{prefix:String}}, toString(n)))))))) AS event_id,
    fromUnixTimestamp64Milli({{start_ms:Int64}}, 'UTC') + toIntervalDay(day) + toIntervalSecond(slot * 10800 + h % 3600)
        AS occurred_at,
    'en' AS language,
    total_duration_s + 1.5 AS recording_duration_s,
    0.25 AS pause_threshold_s,
    word_count,
    total_duration_s,
    total_duration_s * (0.70 + 0.1 * p) AS phonation_time_s,
    speech_rate AS speech_rate_wpm,
    speech_rate / (0.70 + 0.1 * p) AS articulation_rate_wpm,
    toUInt32(round(pauses_pm * total_duration_s / 60)) AS silent_pause_count,
    pauses_pm AS silent_pauses_per_minute,
    0.95 - 0.35 * p + noise / 50 AS mean_silent_pause_s,
    total_duration_s * (0.30 - 0.1 * p) AS silent_pause_total_s,
    [0.3, 0.6, 1.1] AS silent_pauses_s,
    3.5 + 3 * p + noise / 5 AS mean_length_of_run,
    toUInt32(round(word_count * fillers / 100)) AS filled_pause_count,
    map('um', toUInt32(round(word_count * fillers / 200)), 'uh', toUInt32(round(word_count * fillers / 200)))
        AS filled_pauses,
    if(detected, fillers, NULL) AS filled_pauses_per_100_words,
    toUInt32(h % 4) AS discourse_marker_count,
    map('like', toUInt32(h % 4)) AS discourse_markers,
    toUInt32(h % 3) AS repetition_count,
    arrayResize(['the'], h % 3) AS repetitions,
    word_count - toUInt32(round(word_count * fillers / 100)) AS vocabulary_token_count,
    toUInt32(round(vocabulary_token_count * (0.45 + 0.1 * p))) AS distinct_words,
    if(vocabulary_token_count >= 50, 0.62 + 0.12 * p + noise / 200, NULL) AS mattr,
    if(vocabulary_token_count >= 50, 42 + 25 * p + noise, NULL) AS mtld,
    vocabulary_token_count >= 50 AS vocabulary_sufficient,
    if(detected, filled_pause_count / total_duration_s * 60, NULL) AS filled_pauses_per_minute,
    if(detected, toUInt32(intDiv(filled_pause_count, 3)), 0) AS voiced_hesitation_count,
    detected AS hesitation_detection,
    toUInt32(0) AS hallucinated_word_count,
    toUInt32(round(word_count * (1.35 + 0.05 * p))) AS syllable_count,
    syllable_count / total_duration_s AS speech_rate_sps,
    syllable_count / phonation_time_s AS articulation_rate_sps,
    mean_length_of_run * syllable_count / word_count AS mean_length_of_run_syllables,
    'faster-whisper/base' AS asr_model,
    2 AS metrics_version,
    'speech.transcripts.v1' AS source_topic,
    toUInt32(n % 6) AS source_partition,
    n AS source_offset,
    occurred_at + toIntervalSecond(2) AS computed_at
FROM
(
    SELECT
        number AS n,
        cityHash64(number, {{prefix:String}}) AS h,
        intDiv(number, {{users:UInt32}}) AS k,
        intDiv(k, {{per_day:UInt32}}) AS day,
        k % {{per_day:UInt32}} AS slot,
        day / greatest({{days:UInt32}} - 1, 1) AS p,
        ((h % 2001) / 100.0) - 10 AS noise,
        toUInt32(70 + h % 90) AS word_count,
        100 + 28 * p + noise AS speech_rate,
        word_count / speech_rate * 60 AS total_duration_s,
        greatest(13 - 6 * p + noise / 4, 0.5) AS pauses_pm,
        greatest(6 - 3.5 * p + noise / 10, 0) AS fillers,
        h % 10 != 0 AS detected
    FROM numbers({{count:UInt64}})
)
"""


def seed_submission_metrics(
    client: Any,
    database: str,
    *,
    users: int,
    days: int,
    per_day: int = 1,
    prefix: str = "learner-",
    start: datetime = SEED_START,
) -> int:
    """Insert ``users × days × per_day`` rows into ``submission_metrics``: user ids ``<prefix><i>``, ``per_day``
    submissions a day (3 h apart) from ``start``. Returns the number of rows. Deterministic per arguments."""
    count = users * days * per_day
    client.command(
        _SUBMISSIONS_SQL.format(db=database, columns=", ".join(SUBMISSION_COLUMNS)),
        parameters={
            "prefix": prefix,
            "users": users,
            "per_day": per_day,
            "days": days,
            "count": count,
            "start_ms": int(start.timestamp() * 1000),
        },
        settings={"max_partitions_per_insert_block": 1000},
    )
    return count


_WINDOWS_SQL = """
INSERT INTO {db}.learner_metrics_windows
    (user_id, window_kind, window_start, window_end, timezone, local_start_date, submissions, first_occurred_at,
     last_occurred_at, word_count, total_duration_s, phonation_time_s,
     speech_rate_wpm_avg, speech_rate_wpm_min, speech_rate_wpm_p50, speech_rate_wpm_p90, speech_rate_wpm_max,
     articulation_rate_wpm_avg, articulation_rate_wpm_p50, silent_pauses_per_minute_avg,
     silent_pauses_per_minute_p50, mean_silent_pause_s_avg, mean_length_of_run_avg,
     filled_pauses_per_100_words_avg, repetition_count_avg,
     filled_pause_count, filled_pauses_per_100_words, repetition_count, repetitions_per_100_words,
     vocabulary_token_count, distinct_words, mattr, mtld, vocabulary_sufficient,
     speech_rate_sps_avg, speech_rate_sps_p50, articulation_rate_sps_avg, articulation_rate_sps_p50,
     mean_length_of_run_syllables_avg, filled_pauses_per_minute_avg, syllable_count,
     hesitation_detected_submissions, filled_pauses_per_minute, asr_models, metrics_version, computed_at)
SELECT
    user_id, w.1 AS kind, w.2 AS start, start + toIntervalDay(w.3), 'UTC', toDate(start), count(),
    min(occurred_at), max(occurred_at), sum(word_count), sum(total_duration_s), sum(phonation_time_s),
    avg(speech_rate_wpm), min(speech_rate_wpm), quantile(0.5)(speech_rate_wpm), quantile(0.9)(speech_rate_wpm),
    max(speech_rate_wpm), avg(articulation_rate_wpm), quantile(0.5)(articulation_rate_wpm),
    avg(silent_pauses_per_minute), quantile(0.5)(silent_pauses_per_minute), avg(mean_silent_pause_s),
    avg(mean_length_of_run), avg(filled_pauses_per_100_words), avg(repetition_count),
    sumIf(filled_pause_count, hesitation_detection),
    if(countIf(hesitation_detection) > 0,
       100 * sumIf(filled_pause_count, hesitation_detection) / sumIf(word_count, hesitation_detection), NULL),
    sum(repetition_count), 100 * sum(repetition_count) / sum(word_count), sum(vocabulary_token_count),
    max(distinct_words), avgIf(mattr, vocabulary_sufficient), avgIf(mtld, vocabulary_sufficient),
    sum(vocabulary_token_count) >= 50,
    avg(speech_rate_sps), quantile(0.5)(speech_rate_sps), avg(articulation_rate_sps),
    quantile(0.5)(articulation_rate_sps), avg(mean_length_of_run_syllables), avg(filled_pauses_per_minute),
    sum(syllable_count), countIf(hesitation_detection),
    if(countIf(hesitation_detection) > 0,
       60 * sumIf(filled_pause_count, hesitation_detection) / sumIf(total_duration_s, hesitation_detection), NULL),
    groupUniqArray(asr_model), max(metrics_version), max(computed_at)
FROM
(
    SELECT *, toDateTime64(toStartOfDay(occurred_at), 3, 'UTC') AS day_start,
        arrayJoin(arrayConcat(
            [('daily', day_start, 1), ('weekly', toDateTime64(toMonday(occurred_at), 3, 'UTC'), 7)],
            arrayMap(d -> ('sliding_7d', day_start - toIntervalDay(d), 7), range(7))
        )) AS w
    FROM {db}.submission_metrics
    WHERE user_id LIKE {{pattern:String}}
)
GROUP BY user_id, w
"""


def derive_windows(client: Any, database: str, *, prefix: str = "learner-") -> int:
    """Fill ``learner_metrics_windows`` from the ``submission_metrics`` rows of users ``<prefix>…`` (UTC
    calendar). Returns the number of window rows of those users."""
    client.command(
        _WINDOWS_SQL.format(db=database),
        parameters={"pattern": prefix.replace("%", r"\%").replace("_", r"\_") + "%"},
        settings={"max_partitions_per_insert_block": 1000},
    )
    rows = client.query(
        f"SELECT count() FROM {database}.learner_metrics_windows WHERE startsWith(user_id, {{prefix:String}})",
        parameters={"prefix": prefix},
    )
    return int(rows.result_rows[0][0])
