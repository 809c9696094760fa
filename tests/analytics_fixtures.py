"""Seed data for the read side (progress API, Grafana panels, API benchmark): ClickHouse metric rows generated in
the engine (``INSERT … SELECT FROM numbers()``), the observability tables of ``0005_pipeline_observability``, and
PostgreSQL learners/submissions/keys.

The metric values follow a learner who improves over the seeded period (speech rate and MATTR rise, pauses and
fillers fall) with deterministic noise, so summaries have a direction. Windows are derived from the seeded
submissions with SQL (daily, ISO-weekly and 7-day sliding, UTC): a stand-in for the dataflow's output with the
same table shape, not a test of the dataflow.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from api.models import WindowKind, WindowPoint
from clickhouse.seed import SEED_START, derive_windows, seed_submission_metrics
from runtime.principals import Role, create_api_key
from tests.thread_servers import free_port, serving

__all__ = [
    "SeededSubmission",
    "derive_windows",
    "learner_window_points",
    "seed_key",
    "seed_learner",
    "seed_observability",
    "seed_submission",
    "seed_submission_metrics",
    "served_api",
    "window_point",
]


def seed_observability(client: Any, database: str, *, start: datetime, hours: int = 6, per_hour: int = 20) -> None:
    """Rows for the pipeline-health and transcription dashboards in ``start .. start + hours``: pipeline events
    of each type (a submission's chain received → transcribed → feedback seconds apart), transcription runs,
    dead letters, consumer-lag samples, learner profiles and late events."""
    count = hours * per_hour
    params = {"start_ms": int(start.timestamp() * 1000), "count": count, "per_hour": per_hour}
    at = (
        "fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC') + toIntervalSecond(intDiv(number * 3600, {per_hour:UInt32}))"
    )
    submission = "reinterpretAsUUID(reverse(unhex(lower(hex(MD5(concat('obs', toString(number))))))))"
    client.command(
        f"""INSERT INTO {database}.pipeline_events
        SELECT reinterpretAsUUID(reverse(unhex(lower(hex(MD5(concat(t.1, toString(number)))))))), t.1,
               concat('learner-', toString(number % 5)), {submission},
               {at} + toIntervalMillisecond(t.2 * (1000 + number % 7 * 350)), t.3, toUInt16(number % 6), number
        FROM numbers({{count:UInt64}})
        ARRAY JOIN [('SubmissionReceived', 0, 'speech.submissions.v1'), ('TranscriptCreated', 3,
                    'speech.transcripts.v1'), ('FeedbackGenerated', 5, 'speech.feedback.v1')] AS t""",
        parameters=params,
    )
    client.command(
        f"""INSERT INTO {database}.transcription_runs
        SELECT reinterpretAsUUID(reverse(unhex(lower(hex(MD5(concat('tr', toString(number)))))))), {submission},
               concat('learner-', toString(number % 5)), {at} + toIntervalSecond(3),
               20 + number % 40, 'faster-whisper/base', if(number % 3 = 0, 'float16', 'int8'),
               if(number % 3 = 0, 'cuda', 'cpu'), 'en', 60 + number % 80, toUInt16(1 + number % 8),
               50 + number % 400, 5 + number % 20, 30 + number % 50, 10 + number % 15, 400 + number % 900,
               toUInt32(number % 6), number
        FROM numbers({{count:UInt64}})""",
        parameters=params,
    )
    client.command(
        f"""INSERT INTO {database}.dead_letters
        SELECT reinterpretAsUUID(reverse(unhex(lower(hex(MD5(concat('dl', toString(number)))))))), {at},
               t.1 || '.dlq', t.1, toUInt32(number % 6), number, t.2,
               ['UndecodableAudio', 'ValidationError', 'ProviderError'][1 + number % 3], 'seeded failure',
               concat('learner-', toString(number % 5)), {submission}, NULL
        FROM numbers(intDiv({{count:UInt64}}, 10) + 1)
        ARRAY JOIN [('speech.submissions.v1', 'transcription-workers'), ('speech.transcripts.v1',
                    'feedback-worker')] AS t""",
        parameters=params,
    )
    client.command(
        f"""INSERT INTO {database}.consumer_lag
        SELECT {at}, g.1, g.2, toUInt32(p), 1000 + number * 10, toInt64(1000 + number * 10 - (number * 7 + p) % 40),
               toUInt64((number * 7 + p) % 40)
        FROM numbers({{count:UInt64}})
        ARRAY JOIN [('transcription-workers', 'speech.submissions.v1'), ('feedback-worker', 'speech.transcripts.v1'),
                    ('metrics-flow', 'speech.transcripts.v1')] AS g
        ARRAY JOIN range(6) AS p""",
        parameters=params,
    )
    client.command(
        f"""INSERT INTO {database}.learner_profiles
        SELECT concat('learner-', toString(number)), concat('Learner ', toString(number)), 'UTC',
               ['spring', 'autumn'][1 + number % 2], concat('coach-', toString(number % 2)), {at}, 0
        FROM numbers(10)""",
        parameters=params,
    )
    client.command(
        f"""INSERT INTO {database}.late_events
        SELECT concat('learner-', toString(number % 5)), {submission}, {submission}, {at} - toIntervalDay(2), 'UTC',
               'daily', toDateTime64(toStartOfDay({at} - toIntervalDay(2)), 3, 'UTC'),
               toDateTime64(toStartOfDay({at} - toIntervalDay(1)), 3, 'UTC'), 'faster-whisper/base', 1,
               'speech.transcripts.v1', 0, number, {at}
        FROM numbers(intDiv({{count:UInt64}}, 20) + 1)""",
        parameters=params,
    )


def seed_learner(conn: Any, user_id: str, *, cohort: str | None, coach_id: str | None, timezone: str = "UTC") -> None:
    """Upsert a ``learners`` row."""
    conn.execute(
        "INSERT INTO learners (user_id, display_name, timezone, cohort, coach_id) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (user_id) DO UPDATE SET cohort = EXCLUDED.cohort, coach_id = EXCLUDED.coach_id,"
        " timezone = EXCLUDED.timezone",
        (user_id, user_id.replace("-", " ").title(), timezone, cohort, coach_id),
    )


def seed_key(conn: Any, user_id: str, role: Role) -> str:
    """A new bearer token for ``user_id`` with ``role``."""
    return create_api_key(conn, user_id, role)


@dataclass(frozen=True)
class SeededSubmission:
    """A submission written to the read models (and, with ``metrics``, to ``submission_metrics``)."""

    submission_id: uuid.UUID
    user_id: str
    received_at: datetime


def seed_submission(
    conn: Any, client: Any, database: str, user_id: str, received_at: datetime, *, complete: bool = True
) -> SeededSubmission:
    """A submission with its timeline; when ``complete`` also its transcript, feedback and a metrics row in
    ClickHouse (status 'feedback'), else only received."""
    sid = uuid.uuid4()
    transcribed, feedback_at = received_at + timedelta(seconds=4), received_at + timedelta(seconds=6)
    conn.execute(
        "INSERT INTO submissions (submission_id, user_id, prompt_id, status, received_at, transcribed_at,"
        " feedback_at, duration_s, asr_model, updated_at) VALUES (%s, %s, 'p1', %s, %s, %s, %s, 30.5,"
        " 'faster-whisper/base', %s)",
        (
            sid,
            user_id,
            "feedback" if complete else "received",
            received_at,
            transcribed if complete else None,
            feedback_at if complete else None,
            feedback_at if complete else received_at,
        ),
    )
    steps = [("received", received_at, "wav 30.50 s")]
    if complete:
        steps += [("transcribed", transcribed, "faster-whisper/base"), ("feedback", feedback_at, "rules")]
    for status, at, detail in steps:
        conn.execute(
            "INSERT INTO submission_timeline (event_id, submission_id, user_id, status, at, detail)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (uuid.uuid4(), sid, user_id, status, at, detail),
        )
    if not complete:
        return SeededSubmission(sid, user_id, received_at)
    words = [{"word": " Hello", "start": 0.5, "end": 0.9, "probability": 0.9}]
    conn.execute(
        "INSERT INTO transcripts (submission_id, event_id, user_id, text, language, duration_s, word_count,"
        " asr_model, occurred_at, words) VALUES (%s, %s, %s, 'Hello there.', 'en', 30.5, 2, 'faster-whisper/base',"
        " %s, %s)",
        (sid, uuid.uuid4(), user_id, transcribed, Jsonb(words)),
    )
    points = [{"kind": "went_well", "metric": "speech_rate_wpm", "value": 120.0, "message": "Good pace."}]
    conn.execute(
        "INSERT INTO feedback (submission_id, event_id, user_id, provider, model, text, points, occurred_at,"
        " latency_ms) VALUES (%s, %s, %s, 'rules', NULL, 'Good pace.', %s, %s, 3.5)",
        (sid, uuid.uuid4(), user_id, Jsonb(points), feedback_at),
    )
    client.command(
        f"INSERT INTO {database}.submission_metrics (user_id, submission_id, event_id, occurred_at, language,"
        " pause_threshold_s, word_count, total_duration_s, phonation_time_s, speech_rate_wpm, articulation_rate_wpm,"
        " silent_pause_count, silent_pause_total_s, filled_pause_count, filled_pauses, discourse_marker_count,"
        " discourse_markers, repetition_count, vocabulary_token_count, distinct_words, mattr, mtld,"
        " vocabulary_sufficient, asr_model, metrics_version, source_topic, source_partition, source_offset,"
        " computed_at) VALUES ({user:String}, {sid:UUID}, generateUUIDv4(), {at:DateTime64(6, 'UTC')}, 'en', 0.25,"
        " 62, 29.0, 22.0, 128.3, 169.1, 5, 7.0, 2, map('um', 2), 1, map('like', 1), 0, 60, 41, 0.71, 55.2, true,"
        " 'faster-whisper/base', 1, 'speech.transcripts.v1', 0, 0, now64(6))",
        parameters={"user": user_id, "sid": str(sid), "at": transcribed.replace(tzinfo=None)},
    )
    return SeededSubmission(sid, user_id, received_at)


@dataclass(frozen=True)
class ApiWorld:
    """Learners, coaches, keys and data of the progress API tests (ids prefixed, so modules do not collide).

    Cohort ``<p>c`` holds ``learner`` (coach ``coach_a``), ``other`` (coach ``coach_b``) and ``mate`` (no coach);
    cohort ``<p>d`` holds ``stranger`` (coach ``coach_c``). So ``coach_b`` reads ``other`` as its coach, ``coach_a``
    reads ``other`` through the cohort, ``coach_c`` reads neither. ``tokens`` maps a caller name (``learner``,
    ``other``, ``coach_a``, ``coach_b``, ``coach_c``, ``admin``, ``revoked``) to its bearer token.
    """

    platform: Any
    learner: str
    other: str
    mate: str
    stranger: str
    cohort: str
    stranger_cohort: str
    tokens: dict[str, str]
    submissions: tuple[SeededSubmission, ...]
    other_submission: SeededSubmission
    days: int


def seed_api_world(platform: Any, prefix: str, *, days: int = 42) -> ApiWorld:
    """Apply the ClickHouse migrations to ``platform.clickhouse_database`` and seed PostgreSQL (the stack of
    ``platform``) and ClickHouse: 4 learners with one submission a day for ``days`` days from :data:`SEED_START`
    (windows derived), 5 complete + 2 received submissions of ``learner`` and one of ``other`` in the read models,
    and keys (one revoked)."""
    import psycopg

    from clickhouse import SQL_DIR
    from runtime.clickhouse import get_clickhouse_client
    from runtime.principals import hash_token, revoke_api_key
    from runtime.sql_migrations import apply_clickhouse

    database = platform.clickhouse_database
    client = get_clickhouse_client(platform)
    apply_clickhouse(client, SQL_DIR, database)
    seed_submission_metrics(client, database, users=4, days=days, prefix=prefix)
    derive_windows(client, database, prefix=prefix)
    learner, other, mate, stranger = (f"{prefix}{i}" for i in range(4))
    cohort, stranger_cohort = f"{prefix}c", f"{prefix}d"
    with psycopg.connect(platform.postgres_dsn, autocommit=True) as conn:
        seed_learner(conn, learner, cohort=cohort, coach_id=f"{prefix}coach-a")
        seed_learner(conn, other, cohort=cohort, coach_id=f"{prefix}coach-b")
        seed_learner(conn, mate, cohort=cohort, coach_id=None)
        seed_learner(conn, stranger, cohort=stranger_cohort, coach_id=f"{prefix}coach-c")
        tokens = {
            "learner": seed_key(conn, learner, "learner"),
            "other": seed_key(conn, other, "learner"),
            "coach_a": seed_key(conn, f"{prefix}coach-a", "coach"),
            "coach_b": seed_key(conn, f"{prefix}coach-b", "coach"),
            "coach_c": seed_key(conn, f"{prefix}coach-c", "coach"),
            "admin": seed_key(conn, f"{prefix}admin", "admin"),
            "revoked": seed_key(conn, other, "learner"),
        }
        key_id = conn.execute(
            "SELECT key_id FROM api_keys WHERE token_sha256 = %s", (hash_token(tokens["revoked"]),)
        ).fetchone()
        revoke_api_key(conn, key_id[0])  # type: ignore[index]
        start = SEED_START + timedelta(days=days - 10)
        submissions = tuple(
            seed_submission(conn, client, database, learner, start + timedelta(hours=5 * i), complete=i < 5)
            for i in range(7)
        )
        other_submission = seed_submission(conn, client, database, other, start)
    return ApiWorld(
        platform, learner, other, mate, stranger, cohort, stranger_cohort, tokens, submissions, other_submission, days
    )


def auth_header(world: ApiWorld, caller: str) -> dict[str, str]:
    """The ``Authorization`` header of ``caller``: a key of ``world.tokens``, ``"none"`` (no header) or
    ``"garbage"`` (a token that was never issued)."""
    if caller == "none":
        return {}
    if caller == "garbage":
        return {"Authorization": "Bearer sc_not-a-real-token"}
    return {"Authorization": f"Bearer {world.tokens[caller]}"}


def window_point(kind: WindowKind, start: datetime, n: int) -> WindowPoint:
    """One progress-API window of ``kind`` from ``start``, values varied by ``n`` (some undefined, two timezones)."""
    length = {"daily": 1, "weekly": 7, "sliding_7d": 7}[kind]
    return WindowPoint(
        window_start=start,
        window_end=start + timedelta(days=length),
        local_start_date=date(start.year, start.month, start.day),
        timezone="Europe/Paris" if n % 2 else "UTC",
        submissions=1 + n % 3,
        word_count=100 + n,
        total_duration_s=60.5 + n,
        phonation_time_s=40.25,
        speech_rate_wpm=110.0 + n * 0.7,
        articulation_rate_wpm=None if n % 5 == 0 else 150.123456789,
        silent_pauses_per_minute=12.0 - n * 0.05,
        mean_silent_pause_s=0.8,
        mean_length_of_run=4.2,
        filled_pauses_per_100_words=2.5,
        repetitions_per_100_words=None,
        distinct_words=60,
        vocabulary_token_count=90,
        mattr=0.7 + n / 1000,
        mtld=None if n % 4 == 0 else 50.0,
        vocabulary_sufficient=n % 3 != 0,
        metrics_version=1,
    )


def learner_window_points(days: int = 60) -> dict[WindowKind, list[WindowPoint]]:
    """A learner's daily, weekly and 7-day sliding windows over ``days`` days from :data:`SEED_START` (daily ones
    newest first: readers must not rely on the order)."""
    daily = [window_point("daily", SEED_START + timedelta(days=d), d) for d in range(days)]
    weekly = [window_point("weekly", SEED_START + timedelta(days=7 * w), w) for w in range(days // 7)]
    sliding = [window_point("sliding_7d", SEED_START + timedelta(days=d - 6), d) for d in range(days + 6)]
    return {"daily": daily[::-1], "weekly": weekly, "sliding_7d": sliding}  # any order in


@contextmanager
def served_api(platform: Any) -> Iterator[int]:
    """The progress API of ``platform`` served by :func:`api.app.serve_api` on a free local port, in a thread of
    this process as ``coach run`` serves it (chDB is in-process). Yields the port once ``/healthz`` answers 200; on
    exit sets the stop event and asserts the thread ended."""
    from api.app import create_app, serve_api
    from api.settings import ApiSettings

    port = free_port()
    settings = ApiSettings(host="127.0.0.1", port=port)
    app = create_app(platform, settings)
    with serving(lambda stop: serve_api(stop, settings, app=app), port, "the API"):
        yield port
