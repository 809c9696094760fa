"""The projector: events on the speech topics and their dead-letter topics → PostgreSQL read models, effectively once.

Consumes ``speech.submissions.v1``, ``speech.transcripts.v1``, ``speech.feedback.v1`` and their ``.dlq`` topics as
consumer group ``projector`` (:attr:`schemas.topics.ConsumerGroups.PROJECTOR`) in micro-batches (up to
``batch_max_messages`` messages or ``batch_max_wait_ms``) through the platform's one consumer loop
(:class:`runtime.consumer.ConsumerLoop`; this module is its handler, which owns its offsets), and writes each batch
in **one PostgreSQL transaction** together with the consumed positions (``projection_offsets``: topic, partition,
next offset). PostgreSQL, not Kafka, holds the projector's progress: on partition assignment the consumer seeks to
the stored positions (to the beginning when none is stored, so a projection emptied together with
``processed_events`` rebuilds itself).
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

When PostgreSQL or Kafka is unreachable, the loop retries the batch (exponential backoff up to
``retry_max_backoff_s``) until it commits or ``stop`` is set; nothing is lost because the positions only move with
the rows.

Run: :func:`run_projector` (in a thread of ``coach run``), or ``python -m projections.projector`` (SIGTERM/SIGINT
finish the current batch and exit 0).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from prometheus_client import Counter, Histogram
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from projections.read_models import (
    apply_dead_letter,
    apply_event,
    claim_events,
    load_positions,
    prune_processed_events,
    store_positions,
)
from runtime.consumer import ConsumerLoop, LoopSettings, Positions, Received
from runtime.settings import PlatformSettings
from schemas.dead_letter import DeadLetterRecord, PoisonMessage
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


class ProjectorSettings(BaseSettings):
    """Knobs of the projector (``COACH_PROJECTOR_*``); where Kafka and PostgreSQL are comes from PlatformSettings."""

    model_config = SettingsConfigDict(
        env_prefix="COACH_PROJECTOR_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    batch_max_messages: int = Field(default=500, ge=1, le=100_000)
    """Most messages projected in one PostgreSQL transaction"""
    batch_max_wait_ms: int = Field(default=200, ge=1, le=60_000)
    """Longest wait for a batch to fill, milliseconds"""
    retry_initial_backoff_s: float = Field(default=0.2, gt=0)
    """First wait before retrying a batch after a PostgreSQL/Kafka error, seconds"""
    retry_max_backoff_s: float = Field(default=5.0, gt=0)
    """Longest wait between retries of a batch, s"""
    group_id: str = ConsumerGroups.PROJECTOR
    """Kafka consumer group, also the key of the stored positions; change it only to build a second, independent
    projection (e.g. into another database)"""
    client_id: str = "projector"
    """Kafka client.id of the consumer and the DLQ producer"""
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    """Kafka consumer session.timeout.ms (how fast a dead member is noticed)"""
    dedup_horizon_days: float = Field(default=30.0, ge=0)
    """How long an event id stays in processed_events (the dedup ledger), days; duplicates arrive within minutes
    (producer retries, a crashed worker's replayed batch). 0 keeps every id forever"""
    prune_every_s: float = Field(default=600.0, gt=0)
    """How often ids older than the dedup horizon are deleted, seconds"""


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


def parse_message(topic: str, value: bytes | None) -> Event | DeadLetterRecord:
    """Decode one consumed message of a :data:`PROJECTOR_TOPICS` topic (the projector's decode step).

    Source topics: the event (via :func:`schemas.registry.decode_event`) when it is valid and of the topic's event
    type. ``.dlq`` topics: the :class:`DeadLetterRecord`. Raises :class:`PoisonMessage` for anything else (and
    nothing else, whatever the bytes), with the envelope ids that could be read from a malformed event.
    """
    if not value:
        raise PoisonMessage("EmptyValue", "empty message value (tombstone)")
    if topic in SOURCE_TOPICS:
        try:
            raw = json.loads(value)
        except Exception as exc:  # noqa: BLE001 - not UTF-8, not JSON, nested too deep (RecursionError)…
            raise PoisonMessage.of(exc, "invalid JSON") from exc
        known = _known_fields(raw)
        try:
            event = decode_event(raw if isinstance(raw, dict) else value)
        except Exception as exc:  # noqa: BLE001 - a validation failure, or whatever else the contract raises
            raise PoisonMessage.of(exc, "invalid event", **known) from exc
        expected = SOURCE_TOPICS[topic]
        if not isinstance(event, expected):
            reason = f"{event.event_type} does not belong on {topic} (expected {expected.EVENT_TYPE})"
            raise PoisonMessage("UnexpectedEvent", reason, **known)
        return event  # type: ignore[return-value]
    try:
        return DeadLetterRecord.model_validate_json(value)
    except Exception as exc:  # noqa: BLE001
        raise PoisonMessage.of(exc, "invalid dead letter") from exc


class Projector:
    """The projector's handler of the consumer loop; :meth:`run` until a stop event is set.

    Not thread-safe: one thread runs it. ``on_batch`` (tests) is called after each committed batch with the messages.
    """

    owns_offsets = True
    """The positions are stored in PostgreSQL, in the transaction of the rows."""

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
        self._loop: ConsumerLoop[Event | DeadLetterRecord] | None = None

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

    # --- the handler ------------------------------------------------------------------------------------------

    def decode(self, msg: Message) -> Event | DeadLetterRecord:
        """:func:`parse_message` of a consumed message."""
        return parse_message(msg.topic() or "", msg.value())

    def process(
        self, batch: Sequence[Received[Event | DeadLetterRecord]], positions: Positions
    ) -> list[PoisonMessage | None]:
        """Apply ``batch`` and store ``positions`` in one transaction (a value PostgreSQL refuses: the batch again,
        one savepoint per message, the refused one dead-lettered before the commit). Raises
        ``psycopg.OperationalError``/``InterfaceError``/``DeliveryFailed`` when an engine is unreachable."""
        started = time.perf_counter()
        try:
            try:
                self._project(batch, positions, isolated=False)
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                log.warning("projector: PostgreSQL refused a value (%s); retrying the batch message by message", exc)
                self._project(batch, positions, isolated=True)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            self._drop_connection()
            raise
        BATCH_SECONDS.observe(time.perf_counter() - started)
        return [None] * len(batch)

    def _project(
        self, batch: Sequence[Received[Event | DeadLetterRecord]], positions: Positions, *, isolated: bool
    ) -> None:
        conn = self._connection()
        outcomes: list[tuple[str, str]] = []
        with conn.transaction():
            fresh = claim_events(
                conn,
                [r.value.dead_letter_id if isinstance(r.value, DeadLetterRecord) else r.value.event_id for r in batch],
            )
            for received in batch:
                msg, item = received.msg, received.value
                topic = msg.topic() or ""
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
                    assert self._loop is not None
                    poison = PoisonMessage.of(
                        exc,
                        "PostgreSQL refused the event",
                        **({} if isinstance(item, DeadLetterRecord) else item.ids()),
                    )
                    self._loop.dead_letter(msg, poison)  # acknowledged before the transaction commits
                    outcomes.append((topic, "dead_lettered"))
            store_positions(conn, self.settings.group_id, positions)
        for topic, outcome in outcomes:
            EVENTS.labels(topic, outcome).inc()

    def _apply(self, conn: psycopg.Connection[Any], item: Event | DeadLetterRecord) -> str:
        if isinstance(item, DeadLetterRecord):
            if item.consumer_group not in FAILING_GROUPS and item.consumer_group != self.settings.group_id:
                return "ignored_dead_letter"
            return "failed" if apply_dead_letter(conn, item) else "ignored_dead_letter"
        return "projected" if apply_event(conn, item) else "duplicate"

    # --- the loop ---------------------------------------------------------------------------------------------

    def _prune_if_due(self, _consumer: Consumer | None = None) -> None:
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

    def loop(self) -> ConsumerLoop[Event | DeadLetterRecord]:
        """The consumer loop running this projector (its dead letters keep the ids of the message coordinates)."""
        return ConsumerLoop(
            self,
            self.settings.group_id,
            PROJECTOR_TOPICS,
            self.platform,
            LoopSettings(
                batch_max_messages=self.settings.batch_max_messages,
                batch_max_wait_ms=self.settings.batch_max_wait_ms,
                retry_initial_backoff_s=self.settings.retry_initial_backoff_s,
                retry_max_backoff_s=self.settings.retry_max_backoff_s,
                poll_timeout_s=self.settings.batch_max_wait_ms / 1000,
            ),
            transient=(psycopg.OperationalError, psycopg.InterfaceError),
            dead_letter_topic=DEAD_LETTER_TOPIC_OF.get,
            consumer_config={
                "client.id": self.settings.client_id,
                "session.timeout.ms": self.settings.session_timeout_ms,
                "partition.assignment.strategy": "cooperative-sticky",
            },
            on_assign=self._on_assign,
            on_batch=self._on_batch,
            tick=self._prune_if_due,
        )

    def run(self, stop: threading.Event) -> None:
        """Consume and project until ``stop`` is set; then close the consumer (leaving the group) and return.

        A batch interrupted by ``stop`` while retrying is not committed (it is re-read on the next start).
        """
        self._loop = self.loop()
        try:
            self._loop.run(stop)
        finally:
            self._loop = None
            self._drop_connection()
            log.info("projector: stopped")


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
    from runtime.logs import configure_logging

    configure_logging("projector")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_projector(stop)


if __name__ == "__main__":
    main()
