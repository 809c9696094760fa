"""The projector: events on the speech topics and their dead-letter topics → PostgreSQL read models, effectively once.

Consumes ``speech.submissions.v1``, ``speech.transcripts.v1``, ``speech.feedback.v1`` and their ``.dlq`` topics as
consumer group ``projector`` (:attr:`schemas.topics.ConsumerGroups.PROJECTOR`) in micro-batches (up to
``batch_max_messages`` messages or ``batch_max_wait_ms``), and writes each batch in **one PostgreSQL transaction**
together with the consumed positions (``projection_offsets``: topic, partition, next offset). PostgreSQL, not Kafka,
holds the projector's progress: on partition assignment the consumer seeks to the stored positions (to the
beginning when none is stored, so a projection emptied together with ``processed_events`` rebuilds itself).
Offsets are also committed to Kafka after each transaction, only so that ordinary tools show the group's lag.

Outcomes per message:

* a valid event is applied by :func:`projections.read_models.apply_event` (idempotent by ``event_id``);
* a dead letter on a ``.dlq`` topic that names a submission and comes from a pipeline stage
  (:data:`FAILING_GROUPS`) marks the submission failed with its reason;
* a malformed message on a source topic (invalid JSON, failed validation, an event type that does not belong on the
  topic, or a value PostgreSQL refuses) goes to that topic's dead-letter topic with the reason, and the projector
  goes on; the dead letter is acknowledged by Kafka before the transaction that stores the position past it commits.
  Its ``dead_letter_id`` is derived from the message's coordinates, so a batch retried after a crash re-sends the
  same record and the duplicate is ignored;
* a malformed record on a ``.dlq`` topic is logged and skipped (there is no dead-letter topic of a dead-letter topic).

When PostgreSQL or Kafka is unreachable, the batch is retried (exponential backoff up to ``retry_max_backoff_s``)
until it commits or ``stop`` is set; nothing is lost because the positions only move with the rows.

Run: :func:`run_projector` (in a thread of ``coach run``), or ``python -m projections.projector`` (SIGTERM/SIGINT
finish the current batch and exit 0).
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Histogram
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from projections.read_models import (
    apply_dead_letter,
    apply_event,
    claim_events,
    load_positions,
    prune_processed_events,
    store_positions,
)
from runtime.kafka import DeliveryFailed, EventProducer, dead_letter_for, make_consumer, next_positions
from runtime.settings import PlatformSettings
from schemas.dead_letter import DeadLetterRecord
from schemas.envelope import EventEnvelope
from schemas.events import FeedbackGenerated, SubmissionReceived, TranscriptCreated
from schemas.registry import Event, decode_event
from schemas.topics import (
    FEEDBACK,
    FEEDBACK_DLQ,
    SUBMISSIONS,
    SUBMISSIONS_DLQ,
    TRANSCRIPTS,
    TRANSCRIPTS_DLQ,
    ConsumerGroups,
)

__all__ = [
    "CONSUMER_GROUP",
    "DEAD_LETTER_TOPIC_OF",
    "FAILING_GROUPS",
    "PROJECTOR_TOPICS",
    "SOURCE_TOPICS",
    "Projector",
    "ProjectorSettings",
    "Rejection",
    "dead_letter_id_for",
    "parse_message",
    "run_projector",
]

log = logging.getLogger(__name__)

CONSUMER_GROUP = ConsumerGroups.PROJECTOR
"""Default consumer group id (``ProjectorSettings.group_id``); also the ``consumer_group`` of the rows in
``projection_offsets`` and of the projector's dead letters."""

SOURCE_TOPICS: dict[str, type[EventEnvelope]] = {
    SUBMISSIONS.name: SubmissionReceived,
    TRANSCRIPTS.name: TranscriptCreated,
    FEEDBACK.name: FeedbackGenerated,
}
"""Source topic → the only event type that belongs on it."""

DEAD_LETTER_TOPIC_OF: dict[str, str] = {
    SUBMISSIONS.name: SUBMISSIONS_DLQ.name,
    TRANSCRIPTS.name: TRANSCRIPTS_DLQ.name,
    FEEDBACK.name: FEEDBACK_DLQ.name,
}
"""Source topic → its dead-letter topic."""

PROJECTOR_TOPICS: tuple[str, ...] = (*SOURCE_TOPICS, *DEAD_LETTER_TOPIC_OF.values())
"""Every topic the projector consumes."""

FAILING_GROUPS: frozenset[str] = frozenset(
    {ConsumerGroups.TRANSCRIPTION, ConsumerGroups.FEEDBACK, ConsumerGroups.PROJECTOR}
)
"""Consumer groups whose dead letters fail a submission: the pipeline stages (and the projector itself, for an event
it could not project). A dead letter of an analytics consumer (``flows.metrics``) does not change what the learner
got, so it leaves the submission's status alone."""

EVENTS = Counter("coach_projector_messages_total", "Messages consumed by the projector", ["topic", "outcome"])
BATCH_SECONDS = Histogram(
    "coach_projector_batch_seconds",
    "Wall time of one projector transaction (apply, dead letters, positions, commit), seconds",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter("coach_projector_retries_total", "Batches retried after PostgreSQL or Kafka errors", ["error"])


class ProjectorSettings(BaseSettings):
    """Knobs of the projector (``COACH_PROJECTOR_*``); where Kafka and PostgreSQL are comes from PlatformSettings."""

    model_config = SettingsConfigDict(env_prefix="COACH_PROJECTOR_", frozen=True, extra="ignore")

    batch_max_messages: int = Field(
        default=500, ge=1, le=100_000, description="Most messages projected in one PostgreSQL transaction"
    )
    batch_max_wait_ms: int = Field(
        default=200, ge=1, le=60_000, description="Longest wait for a batch to fill, milliseconds"
    )
    retry_initial_backoff_s: float = Field(
        default=0.2, gt=0, description="First wait before retrying a batch after a PostgreSQL/Kafka error, seconds"
    )
    retry_max_backoff_s: float = Field(default=5.0, gt=0, description="Longest wait between retries of a batch, s")
    group_id: str = Field(
        default=ConsumerGroups.PROJECTOR,
        description="Kafka consumer group, also the key of the stored positions; change it only to build a second, "
        "independent projection (e.g. into another database)",
    )
    client_id: str = Field(default="projector", description="Kafka client.id of the consumer and the DLQ producer")
    session_timeout_ms: int = Field(
        default=10_000, ge=1_000, description="Kafka consumer session.timeout.ms (how fast a dead member is noticed)"
    )
    dedup_horizon_days: float = Field(
        default=30.0,
        ge=0,
        description="How long an event id stays in processed_events (the dedup ledger), days; duplicates arrive "
        "within minutes (producer retries, a crashed worker's replayed batch). 0 keeps every id forever",
    )
    prune_every_s: float = Field(
        default=600.0, gt=0, description="How often ids older than the dedup horizon are deleted, seconds"
    )


@dataclass(frozen=True)
class Rejection:
    """A message that cannot be projected: ``reason`` for humans, ``error`` (exception or short reason) for the
    dead letter's ``error_class``, and the envelope fields that could be read (``known``)."""

    reason: str
    error: BaseException | str
    known: dict[str, Any]


def _known_fields(raw: Any) -> dict[str, Any]:
    """``user_id``, ``submission_id`` and ``event_id`` of a malformed event, when they are present and valid."""
    known: dict[str, Any] = {}
    if not isinstance(raw, dict):
        return known
    user_id = raw.get("user_id")
    if isinstance(user_id, str) and 0 < len(user_id) <= 128:
        known["user_id"] = user_id
    for field in ("submission_id", "event_id"):
        value = raw.get(field)
        if isinstance(value, str):
            try:
                known[field] = UUID(value)
            except ValueError:
                pass
    return known


def parse_message(topic: str, value: bytes | None) -> Event | DeadLetterRecord | Rejection:
    """Decode one consumed message of a :data:`PROJECTOR_TOPICS` topic.

    Source topics: the event (via :func:`schemas.registry.decode_event`) when it is valid and of the topic's event
    type. ``.dlq`` topics: the :class:`DeadLetterRecord`. Anything else: a :class:`Rejection` (never raises).
    """
    if not value:
        return Rejection("empty message value (tombstone)", "empty message value", {})
    if topic in SOURCE_TOPICS:
        try:
            raw = json.loads(value)
        except ValueError as exc:  # also UnicodeDecodeError
            return Rejection(f"invalid JSON: {exc}", exc, {})
        known = _known_fields(raw)
        try:
            event = decode_event(raw if isinstance(raw, dict) else value)
        except ValidationError as exc:
            return Rejection(f"invalid event: {exc}", exc, known)
        expected = SOURCE_TOPICS[topic]
        if not isinstance(event, expected):
            reason = f"{event.event_type} does not belong on {topic} (expected {expected.EVENT_TYPE})"
            return Rejection(reason, reason, known)
        return event  # type: ignore[return-value]
    try:
        return DeadLetterRecord.model_validate_json(value)
    except ValidationError as exc:
        return Rejection(f"invalid dead letter: {exc}", exc, {})


def dead_letter_id_for(topic: str, partition: int, offset: int, timestamp_ms: int, consumer_group: str) -> UUID:
    """Deterministic UUIDv7 of the dead letter of the message at (topic, partition, offset).

    The 48-bit time field is the message's timestamp (ms since the epoch, clamped at 0); the 74 "random" bits come
    from SHA-256 of the coordinates and the group (RFC 9562 §5.7 allows any content there). A retried batch thus
    produces the same ``dead_letter_id`` and its duplicate dead letter is recognised downstream.
    """
    digest = hashlib.sha256(f"{consumer_group}|{topic}|{partition}|{offset}".encode()).digest()
    ms = max(timestamp_ms, 0) & ((1 << 48) - 1)
    rand_a = int.from_bytes(digest[:2], "big") & 0x0FFF
    rand_b = int.from_bytes(digest[2:10], "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return UUID(int=value)


class _RetryBatchIsolated(Exception):
    """A value PostgreSQL refused somewhere in the batch: redo it with one savepoint per message."""


class Projector:
    """One member of the projector consumer group; :meth:`run` until a stop event is set.

    Not thread-safe: one thread runs it. ``on_batch`` (tests) is called after each committed batch with the messages.
    """

    def __init__(
        self,
        settings: ProjectorSettings | None = None,
        platform: PlatformSettings | None = None,
        *,
        on_batch: Any = None,
    ) -> None:
        self.settings = settings or ProjectorSettings()
        self.platform = platform or PlatformSettings()
        self._on_batch = on_batch
        self._next_prune = 0.0
        self._conn: psycopg.Connection[Any] | None = None
        self._producer: EventProducer | None = None
        self._consumer: Consumer | None = None

    # --- connections ------------------------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.platform.postgres_dsn, autocommit=True, connect_timeout=5)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def _dead_letter_producer(self) -> EventProducer:
        if self._producer is None:
            self._producer = EventProducer(self.platform, client_id=f"{self.settings.client_id}-dlq")
        return self._producer

    # --- rebalance: seek to the positions stored in PostgreSQL --------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start every newly assigned partition at its stored position (beginning when none is stored).

        If PostgreSQL cannot be read now, the partitions start at Kafka's committed offsets, which never pass the
        stored ones (they are committed after the transaction): some events are then re-read and ignored.
        """
        try:
            stored = load_positions(
                self._connection(), self.settings.group_id, [(tp.topic, tp.partition) for tp in partitions]
            )
        except psycopg.Error as exc:
            log.warning("projector: cannot read stored positions (%s); starting at committed offsets", exc)
            self._drop_connection()
            consumer.incremental_assign(partitions)
            return
        assignment = [
            TopicPartition(tp.topic, tp.partition, stored.get((tp.topic, tp.partition), OFFSET_BEGINNING))
            for tp in partitions
        ]
        log.info("projector: assigned %s", ", ".join(f"{t.topic}[{t.partition}]@{t.offset}" for t in assignment))
        consumer.incremental_assign(assignment)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every consumed batch is committed before the next poll, so there is nothing to flush here.
        log.info("projector: revoked %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions))

    def _make_consumer(self) -> Consumer:
        consumer = make_consumer(
            self.settings.group_id,
            PROJECTOR_TOPICS,
            self.platform,
            **{
                "client.id": self.settings.client_id,
                "enable.auto.commit": False,  # PostgreSQL holds the positions; Kafka gets them after each commit
                "session.timeout.ms": self.settings.session_timeout_ms,
                "partition.assignment.strategy": "cooperative-sticky",
            },
        )
        # Re-subscribe with rebalance callbacks (make_consumer subscribes without them).
        consumer.subscribe(
            list(PROJECTOR_TOPICS), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        return consumer

    # --- one batch --------------------------------------------------------------------------------------------

    def _rejection_record(self, msg: Message, rejection: Rejection) -> DeadLetterRecord:
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        _, timestamp_ms = msg.timestamp()
        record = dead_letter_for(
            msg,
            consumer_group=self.settings.group_id,
            error=rejection.error if isinstance(rejection.error, BaseException) else rejection.reason,
            dead_letter_id=dead_letter_id_for(topic, partition, offset, timestamp_ms, self.settings.group_id),
            **rejection.known,
        )
        # error_class names the exception; the reason says what was wrong ("invalid JSON: …", "invalid event: …").
        return record.model_copy(update={"reason": rejection.reason[:4000]})

    def _project(self, messages: Sequence[Message], *, isolated: bool) -> None:
        """Apply ``messages`` and store their positions in one transaction; send dead letters before it commits.

        Raises ``_RetryBatchIsolated`` (not isolated) when PostgreSQL refused a value; ``psycopg.OperationalError``,
        ``DeliveryFailed``… when an engine is unreachable (the transaction is rolled back).
        """
        conn = self._connection()
        parsed = [(msg, parse_message(msg.topic() or "", msg.value())) for msg in messages]
        dead_letters: list[tuple[str, DeadLetterRecord]] = []
        outcomes: list[tuple[str, str]] = []
        with conn.transaction():
            fresh = claim_events(
                conn,
                [
                    item.dead_letter_id if isinstance(item, DeadLetterRecord) else item.event_id
                    for _, item in parsed
                    if not isinstance(item, Rejection)
                ],
            )
            for msg, item in parsed:
                topic = msg.topic() or ""
                if isinstance(item, Rejection):
                    if topic in DEAD_LETTER_TOPIC_OF:
                        dead_letters.append((DEAD_LETTER_TOPIC_OF[topic], self._rejection_record(msg, item)))
                        outcomes.append((topic, "dead_lettered"))
                    else:
                        log.error("projector: skipping malformed record %s[%s]@%s: %s", topic, msg.partition(),
                                  msg.offset(), item.reason)  # fmt: skip
                        outcomes.append((topic, "skipped_malformed"))
                    continue
                item_id = item.dead_letter_id if isinstance(item, DeadLetterRecord) else item.event_id
                if item_id not in fresh:
                    outcomes.append((topic, "duplicate"))
                    continue
                fresh.discard(item_id)  # a second copy inside this batch is a duplicate too
                if not isolated:
                    outcomes.append((topic, self._apply(conn, item)))
                    continue
                try:
                    with conn.transaction():  # savepoint: a refused value only loses this message
                        outcomes.append((topic, self._apply(conn, item)))
                except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                    if topic not in DEAD_LETTER_TOPIC_OF:
                        log.error("projector: PostgreSQL refused dead letter %s: %s", item_id, exc)
                        outcomes.append((topic, "skipped_malformed"))
                        continue
                    rejection = Rejection(f"PostgreSQL refused the event: {exc}", exc, _known_of(item))
                    dead_letters.append((DEAD_LETTER_TOPIC_OF[topic], self._rejection_record(msg, rejection)))
                    outcomes.append((topic, "dead_lettered"))
            if dead_letters:
                producer = self._dead_letter_producer()
                for dlq_topic, record in dead_letters:
                    producer.send_dead_letter(dlq_topic, record)
                    log.warning("projector: %s[%s]@%s → %s: %s", record.original_topic, record.original_partition,
                                record.original_offset, dlq_topic, record.reason)  # fmt: skip
            positions = next_positions(messages)
            store_positions(conn, self.settings.group_id, positions)
        for topic, outcome in outcomes:
            EVENTS.labels(topic, outcome).inc()
        if self._consumer is not None:
            offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
            try:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            except KafkaException as exc:  # advisory only (lag monitoring)
                log.debug("projector: Kafka commit skipped: %s", exc)

    def _apply(self, conn: psycopg.Connection[Any], item: Event | DeadLetterRecord) -> str:
        if isinstance(item, DeadLetterRecord):
            if item.consumer_group not in FAILING_GROUPS and item.consumer_group != self.settings.group_id:
                return "ignored_dead_letter"
            return "failed" if apply_dead_letter(conn, item) else "ignored_dead_letter"
        return "projected" if apply_event(conn, item) else "duplicate"

    def _project_with_retries(self, messages: Sequence[Message], stop: threading.Event) -> bool:
        """Project ``messages``, retrying while engines are unreachable. Returns False when stopped before commit."""
        backoff = self.settings.retry_initial_backoff_s
        isolated = False
        while True:
            started = time.perf_counter()
            try:
                try:
                    self._project(messages, isolated=isolated)
                except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                    if isolated:
                        raise
                    raise _RetryBatchIsolated from exc
            except _RetryBatchIsolated as exc:
                log.warning("projector: PostgreSQL refused a value (%s); retrying the batch message by message",
                            exc.__cause__)  # fmt: skip
                isolated = True
                continue
            except (psycopg.OperationalError, psycopg.InterfaceError, DeliveryFailed, KafkaException) as exc:
                RETRIES.labels(type(exc).__name__).inc()
                log.warning("projector: batch of %d not committed (%s: %s); retrying in %.1f s",
                            len(messages), type(exc).__name__, exc, backoff)  # fmt: skip
                self._drop_connection()
                if stop.wait(backoff):
                    return False
                backoff = min(backoff * 2, self.settings.retry_max_backoff_s)
                continue
            BATCH_SECONDS.observe(time.perf_counter() - started)
            return True

    # --- the loop ---------------------------------------------------------------------------------------------

    def _prune_if_due(self) -> None:
        """Every ``prune_every_s``, delete dedup-ledger ids older than ``dedup_horizon_days`` (batches of 10,000).
        A failure is logged and retried at the next interval: pruning never stops the projection."""
        if not self.settings.dedup_horizon_days or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self.settings.prune_every_s
        try:
            pruned = prune_processed_events(
                self._connection(), older_than=timedelta(days=self.settings.dedup_horizon_days)
            )
        except psycopg.Error as exc:
            log.warning("projector: pruning processed_events failed (retried in %.0f s): %s",
                        self.settings.prune_every_s, exc)  # fmt: skip
            self._drop_connection()
            return
        if pruned:
            log.info("projector: pruned %d processed_events ids older than %g days", pruned,
                     self.settings.dedup_horizon_days)  # fmt: skip

    def run(self, stop: threading.Event) -> None:
        """Consume and project until ``stop`` is set; then close the consumer (leaving the group) and return.

        A batch interrupted by ``stop`` while retrying is not committed (it is re-read on the next start).
        """
        consumer = self._make_consumer()
        self._consumer = consumer
        timeout_s = self.settings.batch_max_wait_ms / 1000
        log.info("projector: consuming %s as group %r", ", ".join(PROJECTOR_TOPICS), self.settings.group_id)
        try:
            while not stop.is_set():
                batch = consumer.consume(num_messages=self.settings.batch_max_messages, timeout=timeout_s)
                messages = []
                for msg in batch:
                    error = msg.error()
                    if error is None:
                        messages.append(msg)
                    elif error.fatal():
                        raise KafkaException(error)
                    else:
                        log.debug("projector: consumer event %s", error)
                if not messages:
                    self._prune_if_due()
                    continue
                if not self._project_with_retries(messages, stop):
                    break
                if self._on_batch is not None:
                    self._on_batch(messages)
                self._prune_if_due()
        finally:
            self._consumer = None
            consumer.close()
            if self._producer is not None:
                self._producer.flush(10)
            self._drop_connection()
            log.info("projector: stopped")


def _known_of(item: Event | DeadLetterRecord) -> dict[str, Any]:
    if isinstance(item, DeadLetterRecord):
        return {}
    return {"user_id": item.user_id, "submission_id": item.submission_id, "event_id": item.event_id}


def run_projector(
    stop: threading.Event,
    settings: ProjectorSettings | None = None,
    platform: PlatformSettings | None = None,
) -> None:
    """Run one projector until ``stop`` is set (blocking; call it in a thread or a process of ``coach run``).

    ``settings`` default to ``ProjectorSettings()`` (``COACH_PROJECTOR_*``), ``platform`` to ``PlatformSettings()``.
    Requires the topics (``coach migrate``) and the PostgreSQL migrations; waits and retries while the engines are
    unreachable. Raises ``KafkaException`` on a fatal consumer error.
    """
    Projector(settings, platform).run(stop)


def main() -> None:
    """``python -m projections.projector``: run in the foreground; SIGTERM/SIGINT stop it after the current batch."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_projector(stop)


if __name__ == "__main__":
    main()
