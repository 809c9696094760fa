"""The one consumer loop of the platform: every Kafka consumer (transcription, feedback, projector…) runs it.

A component supplies a :class:`BatchHandler` (how to decode one message, how to process a batch of decoded ones);
the loop owns everything else, the same way for all of them:

1. **consume a batch**: up to ``batch_max_messages`` messages, waiting at most ``batch_max_wait_ms`` after the
   first one arrived (and, with ``batch_idle_ms``, at most that long for each next one);
2. **decode each message** with ``handler.decode`` as it arrives, and show it to the ``on_arrival`` hook, which may
   start per-message work while the batch gathers. Whatever decoding raises, the message is poison
   (:class:`~schemas.dead_letter.PoisonMessage`): it goes to ``<topic>.dlq`` with its error class and reason
   (:func:`dead_letter_record`), and the partition moves on;
3. **process** the decoded messages together with ``handler.process``, which returns one outcome per message
   (``None``: done, or a :class:`PoisonMessage` of its own, e.g. no speech). Exceptions of the handler's
   ``transient`` types (an engine unreachable: broker, PostgreSQL, ClickHouse, the blob store) retry the whole
   batch with exponential backoff until it succeeds or the loop is stopped; any other exception
   (a defect, or one message the model chokes on) re-runs the batch one message at a time, and the message that
   still raises alone is poison (batch-then-isolate, as the transcription worker did first);
4. **store offsets only after** every result and every dead letter is acknowledged: in Kafka
   (``store_offsets``, then the auto-commit thread commits them), or, when the handler ``owns_offsets``, by the
   handler itself inside its own transaction (the projector keeps them in PostgreSQL with its rows; the loop
   passes it the positions to store and commits them to Kafka afterwards only for lag monitoring).

Delivery is at-least-once: after a crash a batch may be processed again, so handlers (or their consumers) are
idempotent. A dead letter's ``dead_letter_id`` is derived from the message's coordinates and the consumer group,
so a redone batch re-sends the same record and downstream readers recognise the duplicate.

Why not FastStream (named in the design card): its Kafka subscribers are asyncio handlers, while our handlers
block on a model, PostgreSQL and the broker's acknowledgement in worker threads; its batch subscriber acks or
nacks a batch as a whole (no per-message isolation of poison inside it); and it has no hook to seek partitions to
offsets kept in PostgreSQL on assignment, which the projector's exactly-once projection needs. It still writes the
AsyncAPI document (:mod:`projections.asyncapi`).

librdkafka consumer semantics: https://github.com/confluentinc/librdkafka/blob/master/INTRODUCTION.md#consumer
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from runtime import telemetry
from runtime.kafka import DeliveryFailed, EventProducer, make_consumer, next_positions, store_offsets_after
from runtime.service_states import mark_ready
from runtime.settings import PlatformSettings
from schemas.dead_letter import MAX_ORIGINAL_VALUE_BYTES, DeadLetterRecord, PoisonMessage
from schemas.topics import dlq_of

__all__ = [
    "BatchHandler",
    "ConsumerLoop",
    "LoopSettings",
    "Positions",
    "Gathered",
    "Received",
    "dead_letter_at",
    "dead_letter_id_for",
    "dead_letter_record",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

Positions = dict[tuple[str, int], int]
"""``{(topic, partition): next offset to read}``."""


@dataclass(frozen=True)
class Received(Generic[T]):
    """One consumed message and what ``handler.decode`` made of it."""

    msg: Message
    value: T


@dataclass
class Gathered(Generic[T]):
    """One batch as :meth:`ConsumerLoop.gather` consumed it: every record in order, each decoded once as it came
    (``decoded``), or poison (``poison``: whatever ``handler.decode`` raised)."""

    messages: list[Message] = field(default_factory=list)
    decoded: list[Received[T]] = field(default_factory=list)
    poison: list[tuple[Message, PoisonMessage]] = field(default_factory=list)


class BatchHandler(Protocol[T]):
    """What a component gives the loop.

    ``decode(msg) -> T``: parse and validate one message (pure; anything it raises makes the message poison).
    ``process(batch, positions) -> outcomes``: one outcome per element of ``batch`` (``None`` or a
    :class:`PoisonMessage`); raises one of the loop's ``transient`` types when an engine is unreachable (the batch
    is retried). ``positions`` are what to store when ``owns_offsets`` is true (else ignore them).
    """

    owns_offsets: bool

    def decode(self, msg: Message) -> T: ...

    def process(self, batch: Sequence[Received[T]], positions: Positions) -> Sequence[PoisonMessage | None]: ...


@dataclass(frozen=True)
class LoopSettings:
    """Batching and retry knobs of one loop (each component's settings class fills them)."""

    batch_max_messages: int = 100
    batch_max_wait_ms: int = 200
    batch_idle_ms: int | None = None
    retry_initial_backoff_s: float = 0.2
    retry_max_backoff_s: float = 10.0
    poll_timeout_s: float = 0.5


def dead_letter_id_for(topic: str, partition: int, offset: int, timestamp_ms: int, consumer_group: str) -> UUID:
    """Deterministic UUIDv7 of the dead letter of the message at (topic, partition, offset) for ``consumer_group``.

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


def dead_letter_record(msg: Message, poison: PoisonMessage, *, consumer_group: str) -> DeadLetterRecord:
    """The dead-letter record of consumed message ``msg``, rejected by ``consumer_group`` for ``poison``
    (:func:`dead_letter_at` its coordinates)."""
    _, timestamp_ms = msg.timestamp()
    return dead_letter_at(
        msg.topic() or "",
        msg.partition() or 0,
        msg.offset() or 0,
        msg.key(),
        msg.value(),
        poison,
        consumer_group=consumer_group,
        timestamp_ms=timestamp_ms,
    )


def dead_letter_at(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    poison: PoisonMessage,
    *,
    consumer_group: str,
    timestamp_ms: int = 0,
) -> DeadLetterRecord:
    """The dead-letter record of the message at ``topic``/``partition``/``offset`` (its ``key`` and ``value``,
    the value truncated past :data:`~schemas.dead_letter.MAX_ORIGINAL_VALUE_BYTES`), rejected by
    ``consumer_group`` for ``poison``: its error class and reason, the ids it knows, and a deterministic
    :func:`dead_letter_id_for` the coordinates (``timestamp_ms``: the message's timestamp, 0 when unknown)."""
    user_id, submission_id, event_id = (poison.known.get(k) for k in ("user_id", "submission_id", "event_id"))
    return DeadLetterRecord(
        dead_letter_id=dead_letter_id_for(topic, partition, offset, timestamp_ms, consumer_group),
        original_topic=topic,
        original_partition=partition,
        original_offset=offset,
        original_key=key.decode("utf-8", "replace")[:1024] if key else None,
        original_value_b64=DeadLetterRecord.encode_value(value),
        original_value_truncated=len(value or b"") > MAX_ORIGINAL_VALUE_BYTES,
        consumer_group=consumer_group,
        error_class=poison.error_class[:200] or "PoisonMessage",
        reason=poison.reason[:4000] or poison.error_class,
        user_id=user_id[:128] if isinstance(user_id, str) and user_id else None,
        submission_id=submission_id if isinstance(submission_id, UUID) else None,
        event_id=event_id if isinstance(event_id, UUID) else None,
    )


@dataclass
class ConsumerLoop(Generic[T]):
    """One consumer-group member running ``handler`` over ``topics`` until stopped (see the module docstring).

    ``transient``: the exception types that mean "an engine is unreachable, retry" (:class:`DeliveryFailed` and
    ``KafkaException`` are always among them). ``dead_letter_topic(topic)``: where poison of ``topic`` goes
    (default ``<topic>.dlq``; ``None``: nowhere, the message is logged at ERROR and counted, for dead-letter topics
    themselves). ``consumer_config``: extra librdkafka properties. ``on_assign``: a rebalance callback that assigns
    the given partitions itself (e.g. seeking to positions kept elsewhere). ``on_batch``: called with the messages
    of every completed batch (tests); ``tick(consumer)``: called once per turn of the loop, batch or not
    (housekeeping: lag gauges, pruning). ``on_arrival(received)``: called with each decoded record as soon as it is
    consumed, while its batch is still gathering, so a handler can start per-message work (the transcription
    worker fetches and decodes the audio) while it waits; ``process`` must not rely on it having run. Not
    thread-safe: one thread runs :meth:`run`.
    """

    handler: BatchHandler[T]
    group_id: str
    topics: Sequence[str]
    platform: PlatformSettings = field(default_factory=PlatformSettings)
    settings: LoopSettings = field(default_factory=LoopSettings)
    transient: tuple[type[BaseException], ...] = ()
    dead_letter_topic: Callable[[str], str | None] = dlq_of
    consumer_config: dict[str, Any] = field(default_factory=dict)
    producer: EventProducer | None = None
    on_assign: Callable[[Consumer, list[TopicPartition]], None] | None = None
    on_batch: Callable[[Sequence[Message]], None] | None = None
    tick: Callable[[Consumer], None] | None = None
    on_arrival: Callable[[Received[T]], None] | None = None
    consumer: Consumer | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.transient = (*self.transient, DeliveryFailed, KafkaException)
        if self.producer is None:
            self.producer = EventProducer(self.platform, client_id=f"{self.group_id}-dlq")

    # ------------------------------------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event) -> None:
        """Consume, process and store offsets until ``stop`` is set. The batch in progress is finished (or, while
        its engines are unreachable, abandoned uncommitted: it is read again on the next start); then the consumer
        leaves the group (committing stored offsets). Raises ``KafkaException`` on a fatal consumer error."""
        config = dict(self.consumer_config)
        if self.handler.owns_offsets:
            config["enable.auto.commit"] = False
        consumer = make_consumer(self.group_id, self.topics, self.platform, **config)
        if self.on_assign is not None:
            consumer.subscribe(list(self.topics), on_assign=self.on_assign)
        self.consumer = consumer
        log.info("consumer group %s reading %s", self.group_id, ", ".join(self.topics))
        try:
            while not stop.is_set():
                batch = self.gather(consumer)
                mark_ready()  # joined the group and polled (the service running this thread, in coach run)
                if batch.messages and not self.run_batch(batch, stop):
                    break
                if self.tick is not None:
                    self.tick(consumer)
        finally:
            self.consumer = None
            consumer.close()
            assert self.producer is not None
            self.producer.flush(10)

    def gather(self, consumer: Consumer) -> Gathered[T]:
        """Up to ``batch_max_messages`` records, waiting at most ``batch_max_wait_ms`` after the first one, and,
        when ``batch_idle_ms`` is set, no longer than that for each next one; each is decoded as it comes
        (:meth:`_arrived`). ``on_arrival``'s time counts towards ``batch_max_wait_ms`` (which bounds the first
        record's wait) but not towards the idle wait, which starts after it.

        Records are awaited one at a time (``consume(num_messages=1)``, then what is already queued with a zero
        timeout): librdkafka's ``consume`` returns only when it holds ``num_messages`` or its timeout has passed,
        so asking for a whole batch at once would hold a lone record for the rest of the timeout."""
        s = self.settings
        batch: Gathered[T] = Gathered()
        first = self._records(consumer.consume(num_messages=1, timeout=s.poll_timeout_s))
        if not first:
            return batch
        deadline = time.monotonic() + s.batch_max_wait_ms / 1000
        self._arrived(batch, first)
        while len(batch.messages) < s.batch_max_messages:
            wanted = s.batch_max_messages - len(batch.messages)
            queued = self._records(consumer.consume(num_messages=wanted, timeout=0))
            if not queued:
                wait = deadline - time.monotonic()
                if s.batch_idle_ms is not None:
                    wait = min(wait, s.batch_idle_ms / 1000)
                if wait <= 0:
                    break
                queued = self._records(consumer.consume(num_messages=1, timeout=wait))
                if not queued:
                    break
            self._arrived(batch, queued)
        return batch

    def _arrived(self, batch: Gathered[T], records: list[Message]) -> None:
        """Decode each of ``records`` into ``batch`` (whatever ``handler.decode`` raises makes it poison) and show
        the decoded ones to ``on_arrival``; what the hook raises is logged and ignored (the batch then does that
        work itself)."""
        for msg in records:
            batch.messages.append(msg)
            try:
                received = Received(msg, self.handler.decode(msg))
            except Exception as exc:  # noqa: BLE001 - whatever decoding raises, this message is poison
                batch.poison.append((msg, PoisonMessage.of(exc, "undecodable message")))
                continue
            batch.decoded.append(received)
            if self.on_arrival is not None:
                try:
                    self.on_arrival(received)
                except Exception:  # noqa: BLE001 - the hook is an optimisation; process() does the work anyway
                    log.exception("consumer group %s: on_arrival failed", self.group_id)

    def _records(self, messages: list[Message]) -> list[Message]:
        records = []
        for msg in messages:
            err = msg.error()
            if err is None:
                records.append(msg)
            elif err.fatal():
                raise KafkaException(err)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer group %s: %s", self.group_id, err)
        return records

    # ------------------------------------------------------------------------------------------------ one batch
    def run_batch(self, batch: Gathered[T], stop: threading.Event) -> bool:
        """Process, dead-letter and store the offsets of one gathered batch. Returns ``False`` when ``stop`` was set
        while an engine was unreachable (nothing of the batch was committed)."""
        started = time.perf_counter()
        messages, decoded, poison = batch.messages, batch.decoded, list(batch.poison)
        positions = next_positions(messages)
        backoff = self.settings.retry_initial_backoff_s
        while True:
            try:
                while poison:  # acknowledged before anything stores a position past them
                    self.dead_letter(*poison[0])
                    poison.pop(0)
                outcomes = self._process_isolating(decoded, positions)
                for item, outcome in zip(decoded, outcomes, strict=True):
                    if outcome is not None:
                        self.dead_letter(item.msg, outcome)
                break
            except self.transient as exc:
                telemetry.CONSUMER_RETRIES.labels(self.group_id, type(exc).__name__).inc()
                log.warning("consumer group %s: batch of %d not done (%s: %s); retrying in %.1f s", self.group_id,
                            len(messages), type(exc).__name__, exc, backoff)  # fmt: skip
                if stop.wait(backoff):
                    return False
                backoff = min(backoff * 2, self.settings.retry_max_backoff_s)
        self._store(messages, positions)
        telemetry.CONSUMER_MESSAGES.labels(self.group_id, "processed").inc(len(decoded))
        telemetry.CONSUMER_BATCH_SECONDS.labels(self.group_id).observe(time.perf_counter() - started)
        if self.on_batch is not None:
            self.on_batch(messages)
        return True

    def _process_isolating(self, decoded: list[Received[T]], positions: Positions) -> list[PoisonMessage | None]:
        """``handler.process`` over the batch; on a non-transient error, one message at a time."""
        if not decoded and not self.handler.owns_offsets:
            return []
        try:
            return self._checked(decoded, self.handler.process(decoded, positions))
        except self.transient:
            raise
        except Exception:  # noqa: BLE001 - isolate the message that causes it
            log.exception("consumer group %s: batch of %d failed; processing its messages one by one",
                          self.group_id, len(decoded))  # fmt: skip
        outcomes: list[PoisonMessage | None] = []
        for item in decoded:
            single = {(item.msg.topic() or "", item.msg.partition() or 0): (item.msg.offset() or 0) + 1}
            try:
                outcomes.extend(self._checked([item], self.handler.process([item], single)))
            except self.transient:
                raise
            except Exception as exc:  # noqa: BLE001 - this message alone fails: poison
                outcomes.append(PoisonMessage.of(exc, "processing failed"))
        if self.handler.owns_offsets:  # the positions of the whole batch, poison included
            self._checked([], self.handler.process([], positions))
        return outcomes

    @staticmethod
    def _checked(batch: Sequence[Received[T]], outcomes: Sequence[PoisonMessage | None]) -> list[PoisonMessage | None]:
        if len(outcomes) != len(batch):
            raise RuntimeError(f"handler returned {len(outcomes)} outcomes for {len(batch)} messages")
        return list(outcomes)

    def dead_letter(self, msg: Message, poison: PoisonMessage) -> None:
        """Send ``msg``'s dead letter to its topic's dead-letter topic and wait for the acknowledgement.

        Raises :class:`DeliveryFailed` when the broker does not acknowledge it (a transient error of the batch).
        A message of a topic without a dead-letter topic is logged at ERROR instead."""
        topic = msg.topic() or ""
        target = self.dead_letter_topic(topic)
        telemetry.CONSUMER_MESSAGES.labels(self.group_id, "dead_lettered" if target else "skipped").inc()
        if target is None:
            log.error("consumer group %s: skipping malformed record %s[%s]@%s: %s", self.group_id, topic,
                      msg.partition(), msg.offset(), poison)  # fmt: skip
            return
        record = dead_letter_record(msg, poison, consumer_group=self.group_id)
        assert self.producer is not None
        self.producer.send_dead_letter(target, record)
        log.warning(
            "dead-lettered %s[%s]@%s to %s: %s: %.500s",
            topic,
            msg.partition(),
            msg.offset(),
            target,
            record.error_class,
            record.reason,
            extra={
                "consumer_group": self.group_id,
                "topic": topic,
                "partition": msg.partition(),
                "offset": msg.offset(),
                "error_class": record.error_class,
                "submission_id": record.submission_id,
                "event_id": record.event_id,
                "user_id": record.user_id,
            },
        )

    def _store(self, messages: Sequence[Message], positions: Positions) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        if not self.handler.owns_offsets:
            store_offsets_after(consumer, messages)
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:  # advisory only: the handler stored the positions; this shows the group's lag to ordinary tools
            consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.debug("consumer group %s: Kafka commit skipped: %s", self.group_id, exc)
