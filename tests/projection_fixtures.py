"""Shared by the projector and CDC tests (integration and drills): valid pipeline events (one recording's
SubmissionReceived → TranscriptCreated → FeedbackGenerated chain; caused events share user, submission and
correlation ids), reading a whole topic back with its keys, waiting for PostgreSQL to show something, and dumping
read-model tables for comparisons."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from psycopg import sql

from runtime.settings import PlatformSettings
from schemas import (
    BlobRef,
    EventEnvelope,
    FeedbackGenerated,
    FeedbackGeneratedPayload,
    FeedbackPoint,
    StageTimings,
    SubmissionReceived,
    SubmissionReceivedPayload,
    TranscriptCreated,
    TranscriptCreatedPayload,
    TranscriptWords,
    Word,
    new_event_id,
)
from schemas.topics import FEEDBACK, SUBMISSIONS, TRANSCRIPTS

BASE_TIME = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def submission_received(
    user_id: str, *, at: datetime = BASE_TIME, prompt_id: str | None = "p1", recorded_at: datetime | None = None
) -> SubmissionReceived:
    """A SubmissionReceived of a fresh submission of ``user_id`` at ``at``."""
    submission_id = uuid4()
    sha = hashlib.sha256(submission_id.bytes).hexdigest()
    event_id = new_event_id()
    return SubmissionReceived(
        event_id=event_id,
        occurred_at=at,
        user_id=user_id,
        submission_id=submission_id,
        producer="ingestion",
        correlation_id=event_id,
        payload=SubmissionReceivedPayload(
            blob=BlobRef(
                uri=f"file:///blobs/{sha[:2]}/{sha}", sha256=sha, size_bytes=48_000, content_type="audio/flac"
            ),
            container="flac",
            codec="flac",
            duration_s=3.0,
            sample_rate=16_000,
            channels=1,
            prompt_id=prompt_id,
            recorded_at=recorded_at,
        ),
    )


def transcript_created(
    cause: SubmissionReceived, *, text: str = "well I think so", delay_s: float = 2.0
) -> TranscriptCreated:
    """The TranscriptCreated caused by ``cause``, ``delay_s`` seconds later."""
    tokens = text.split()
    step = min(0.5, 2.9 / max(len(tokens), 1))  # inside the 2.95 s clip
    words = [Word(word=w, start=step * i, end=step * i + step * 0.8, probability=0.9) for i, w in enumerate(tokens)]
    return TranscriptCreated(
        **cause.caused(producer="transcription"),
        occurred_at=cause.occurred_at + timedelta(seconds=delay_s),
        payload=TranscriptCreatedPayload(
            text=text,
            language="en",
            language_probability=0.99,
            duration_s=2.95,
            segments=[],
            words=TranscriptWords.of(words),
            asr_model="faster-whisper/tiny.en",
            compute_type="int8",
            device="cpu",
            recorded_at=cause.payload.recorded_at,
            timings=StageTimings(queue_wait_ms=5, fetch_ms=1, decode_ms=2, vad_ms=3, inference_ms=100, batch_size=1),
        ),
    )


def feedback_generated(cause: TranscriptCreated, *, delay_s: float = 1.0) -> FeedbackGenerated:
    """The FeedbackGenerated caused by ``cause``, ``delay_s`` seconds later."""
    return FeedbackGenerated(
        **cause.caused(producer="feedback"),
        occurred_at=cause.occurred_at + timedelta(seconds=delay_s),
        payload=FeedbackGeneratedPayload(
            provider="rules",
            latency_ms=1.5,
            text="Good pace.",
            points=[FeedbackPoint(kind="went_well", metric="speech_rate_wpm", value=120.0, message="Good pace.")],
            metrics_version=1,
            asr_model=cause.payload.asr_model,
        ),
    )


def recordings(users: list[str], per_user: int, *, start: int = 0) -> list[tuple[str, EventEnvelope]]:
    """(topic, event) for ``per_user`` recordings of each user, each with submission, transcript and feedback, in a
    realistic interleaving (plus a redelivered transcript every 7th recording)."""
    out: list[tuple[str, EventEnvelope]] = []
    for n in range(start, start + per_user):
        for user in users:
            received = submission_received(user, at=BASE_TIME.replace(minute=n % 60, hour=9 + n // 60))
            transcript = transcript_created(received, text=f"recording {n} of {user}")
            out += [(SUBMISSIONS.name, received), (TRANSCRIPTS.name, transcript)]
            if n % 7 == 0:
                out.append((TRANSCRIPTS.name, transcript))
            out.append((FEEDBACK.name, feedback_generated(transcript)))
    return out


def user_id(prefix: str = "u") -> str:
    """A user id unique to the test run."""
    return f"{prefix}-{uuid4().hex[:10]}"


def as_uuid(value: str | UUID) -> UUID:
    """``value`` as a UUID."""
    return value if isinstance(value, UUID) else UUID(value)


T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], *, what: str, timeout_s: float = 90.0, interval_s: float = 0.25) -> T:
    """Call ``probe`` until it returns something truthy and return that; ``TimeoutError`` naming ``what`` otherwise
    (the last value is in the message)."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


@dataclass(frozen=True)
class Record:
    """One consumed message: raw key, decoded JSON value (``None`` for a tombstone), coordinates."""

    key: bytes | None
    value: dict[str, Any] | None
    partition: int
    offset: int


def read_topic(
    topic: str,
    done: Callable[[list[Record]], bool],
    *,
    settings: PlatformSettings | None = None,
    timeout_s: float = 90.0,
) -> list[Record]:
    """Read every partition of ``topic`` from the beginning (waiting for the topic to exist) until ``done(records)``.

    No consumer group membership (partitions are assigned directly, nothing committed). Raises ``TimeoutError``.
    """
    settings = settings or PlatformSettings()
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"test-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    deadline = time.monotonic() + timeout_s
    records: list[Record] = []
    try:

        def partitions() -> list[int] | None:
            meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                return None
            return sorted(meta.partitions)

        found = wait_for(partitions, what=f"topic {topic} exists", timeout_s=timeout_s)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in found])
        while time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                if msg.error() is None:
                    try:
                        value = json.loads(msg.value()) if msg.value() else None
                    except (ValueError, RecursionError):  # the poison drill's hostile records on shared topics
                        value = None
                    records.append(Record(msg.key(), value, msg.partition() or 0, msg.offset() or 0))
            if done(records):
                return records
    finally:
        consumer.close()
    raise TimeoutError(f"{topic}: condition not met within {timeout_s:.0f} s after {len(records)} records")


def scalar(dsn: str, query: str, params: Sequence[Any] = ()) -> Any:
    """First column of the first row of ``query`` (``None`` when no row or PostgreSQL is unreachable)."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    except psycopg.OperationalError:
        return None
    return None if row is None else row[0]


READ_MODEL_ORDER = {
    "submissions": "submission_id",
    "submission_timeline": "event_id",
    "transcripts": "submission_id",
    "feedback": "submission_id",
}
"""Read-model tables of the projector and the key to order a dump by."""


def dump_read_models(dsn: str, user_ids: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every column of every read-model row of ``user_ids``, per table, ordered by primary key."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {
            table: conn.execute(
                sql.SQL("SELECT * FROM {} WHERE user_id = ANY(%s) ORDER BY {}").format(
                    sql.Identifier(table), sql.Identifier(order)
                ),
                (list(user_ids),),
            ).fetchall()
            for table, order in READ_MODEL_ORDER.items()
        }


def prepare_projections(settings: PlatformSettings) -> None:
    """What ``coach migrate`` does for this component: topics, PostgreSQL migrations, the Debezium connector."""
    from projections import SQL_DIR
    from projections.debezium import register_connector
    from runtime.kafka import ensure_topics
    from runtime.sql_migrations import apply_postgres
    from schemas.topics import TOPICS

    ensure_topics(TOPICS, settings)
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        apply_postgres(conn, SQL_DIR)
    register_connector(settings)


def create_database(settings: PlatformSettings, name: str) -> PlatformSettings:
    """A new database ``name`` on the same server with the projections migrations applied; returns settings that
    point at it (no connector captures it)."""
    from projections import SQL_DIR
    from runtime.sql_migrations import apply_postgres

    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    target = settings.model_copy(update={"pg_database": name})
    with psycopg.connect(target.postgres_dsn, autocommit=True) as conn:
        apply_postgres(conn, SQL_DIR)
    return target


def drop_database(settings: PlatformSettings, name: str) -> None:
    """Drop database ``name`` (connections to it are terminated)."""
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
