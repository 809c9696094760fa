"""Kafka clients that speak the event envelope (confluent-kafka / librdkafka).

* :class:`EventProducer`: idempotent producer (``enable.idempotence=true``, ``acks=all``), keyed by
  ``user_id`` so one learner's events keep their order in one partition.
* :func:`make_consumer`: a consumer-group member that stores offsets only when told to
  (``enable.auto.offset.store=false``): a service calls ``consumer.store_offsets(msg)`` after the
  effect of ``msg`` is durable, and the auto-commit thread commits stored offsets.
* :func:`ensure_topics`: create the registry's topics, idempotently.

librdkafka configuration reference: https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from runtime.settings import PlatformSettings
from schemas.dead_letter import DeadLetterRecord
from schemas.envelope import EventEnvelope
from schemas.registry import encode_event
from schemas.topics import TopicSpec

__all__ = [
    "DeliveryFailed",
    "EventProducer",
    "ensure_topics",
    "make_consumer",
    "next_positions",
    "store_offsets_after",
]

log = logging.getLogger(__name__)


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a message (``err`` is librdkafka's error)."""

    def __init__(self, topic: str, err: KafkaError | str):
        super().__init__(f"delivery to {topic} failed: {err}")
        self.topic = topic
        self.err = err


class EventProducer:
    """Idempotent producer of envelope events and dead-letter records.

    ``send`` blocks until the broker acknowledged the message (all in-sync replicas) and raises
    :class:`DeliveryFailed` otherwise; ``produce`` is the asynchronous form for batches followed by
    :meth:`flush`. Thread-safe (librdkafka's producer is).
    """

    def __init__(self, settings: PlatformSettings | None = None, *, client_id: str, **overrides: Any):
        settings = settings or PlatformSettings()
        config: dict[str, Any] = {
            "bootstrap.servers": settings.bootstrap_servers,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "zstd",
            "message.timeout.ms": 30_000,
        }
        config.update(overrides)
        self._producer = Producer(config)
        self.client_id = client_id
        self._lock = threading.Lock()

    def produce(self, topic: str, event: EventEnvelope, *, on_delivery: Any = None) -> None:
        """Queue ``event`` on ``topic`` keyed by its ``user_id``; delivery is reported later."""
        self._producer.produce(
            topic,
            key=event.user_id.encode("utf-8"),
            value=encode_event(event),
            headers={"event_type": event.event_type, "schema_version": str(event.schema_version)},
            on_delivery=on_delivery,
        )
        self._producer.poll(0)

    def send(self, topic: str, event: EventEnvelope, *, timeout_s: float = 30.0) -> Message:
        """Produce ``event`` and wait for the broker's acknowledgement.

        Returns the delivered message (topic, partition, offset). Raises :class:`DeliveryFailed` on a
        delivery error or when no acknowledgement arrives within ``timeout_s`` seconds.
        """
        return self._send(topic, event.user_id.encode("utf-8"), encode_event(event), timeout_s, event)

    def send_dead_letter(self, topic: str, record: DeadLetterRecord, *, timeout_s: float = 30.0) -> Message:
        """Produce a dead-letter record to ``topic`` (a ``.dlq`` topic), keyed like the original."""
        key = record.original_key.encode("utf-8") if record.original_key else None
        return self._send(topic, key, record.model_dump_json().encode("utf-8"), timeout_s, None)

    def _send(
        self, topic: str, key: bytes | None, value: bytes, timeout_s: float, event: EventEnvelope | None
    ) -> Message:
        done = threading.Event()
        result: dict[str, Any] = {}

        def _on_delivery(err: KafkaError | None, msg: Message) -> None:
            result["err"], result["msg"] = err, msg
            done.set()

        headers: dict[str, str | bytes | None] = (
            {"event_type": event.event_type, "schema_version": str(event.schema_version)}
            if event
            else {"record_type": "DeadLetter"}
        )
        self._producer.produce(topic, key=key, value=value, headers=headers, on_delivery=_on_delivery)
        self._producer.flush(timeout_s)
        if not done.is_set():
            raise DeliveryFailed(topic, f"no acknowledgement within {timeout_s} s")
        if result["err"] is not None:
            raise DeliveryFailed(topic, result["err"])
        msg: Message = result["msg"]
        return msg

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still queued."""
        return int(self._producer.flush(timeout_s))


def make_consumer(
    group_id: str,
    topics: Iterable[str],
    settings: PlatformSettings | None = None,
    **overrides: Any,
) -> Consumer:
    """A subscribed consumer-group member with manual offset storage.

    Offsets start at the earliest message for a new group; ``enable.auto.offset.store`` is false,
    so nothing counts as consumed until the caller ``store_offsets`` it. ``overrides`` are raw
    librdkafka properties.
    """
    settings = settings or PlatformSettings()
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "enable.auto.offset.store": False,
        "partition.assignment.strategy": "cooperative-sticky",
    }
    config.update(overrides)
    consumer = Consumer(config)
    consumer.subscribe(list(topics))
    return consumer


def ensure_topics(specs: Iterable[TopicSpec], settings: PlatformSettings | None = None) -> dict[str, str]:
    """Create missing topics (idempotent). Returns ``{name: 'created' | 'exists'}``.

    Replication factor from ``COACH_KAFKA_REPLICATION`` (1 for the local single broker, 3 for ``coach stack up
    --brokers 3``). From replication 3 on, every created topic also gets ``min.insync.replicas=2`` (unless its spec
    sets one): an ``acks=all`` write is then on at least two brokers, one broker may be lost without losing it or
    the ability to write, and with two lost producers get errors instead of acknowledgements. Existing topics are
    left as they are. Raises ``KafkaException`` on any other error.
    """
    settings = settings or PlatformSettings()
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    replication = settings.kafka_replication
    specs = list(specs)

    def topic_config(spec: TopicSpec) -> dict[str, str]:
        config = dict(spec.config())
        if replication >= 3:
            config.setdefault("min.insync.replicas", "2")
        return config

    new = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=replication, config=topic_config(s))
        for s in specs
    ]
    result: dict[str, str] = {}
    for name, future in admin.create_topics(new, request_timeout=30).items():
        try:
            future.result()
            result[name] = "created"
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                raise
    return result


def next_positions(messages: Sequence[Message]) -> dict[tuple[str, int], int]:
    """``{(topic, partition): last offset + 1}`` over ``messages`` (the positions to store after them)."""
    positions: dict[tuple[str, int], int] = {}
    for msg in messages:
        key = (msg.topic() or "", msg.partition() or 0)
        positions[key] = max(positions.get(key, 0), (msg.offset() or 0) + 1)
    return positions


def store_offsets_after(consumer: Consumer, messages: Sequence[Message]) -> None:
    """Store the positions after ``messages`` for the auto-commit thread (``enable.auto.offset.store=false``).

    Partitions revoked while the batch ran (a rebalance) are skipped: their new owner processes those messages
    again, and consumers deduplicate downstream. Never raises for a rebalance race; logs it instead.
    """
    positions = next_positions(messages)
    assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
    offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items() if (t, p) in assigned]
    if len(offsets) < len(positions):
        log.info("not storing offsets of %d revoked partition(s)", len(positions) - len(offsets))
    if not offsets:
        return
    try:
        consumer.store_offsets(offsets=offsets)
    except KafkaException as exc:  # revoked between the check and the call
        log.warning("offsets not stored (rebalance in progress): %s", exc)
