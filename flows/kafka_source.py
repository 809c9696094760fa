"""A Bytewax source over one Kafka topic: one partition reader per topic partition, offsets in the snapshots.

Like ``bytewax.connectors.kafka.KafkaSource`` (``assign`` without a consumer group; Bytewax's recovery store
holds the next offset of every partition), plus what the metric flow and replays need:

* ``stop_at``: end offsets captured before the run; a partition reaching its end offset ends (a replay stops
  there even while producers keep writing);
* ``stop_event``: a graceful stop; every partition ends at its next poll (no exception, so the final epoch is
  snapshotted and a restart resumes exactly there);
* ``progress``: offsets consumed and messages per key, for the replay's progress bar and its verification;
* idle partitions back off (``next_awake``) instead of blocking the worker in ``poll``.

Kafka errors reported by ``consume`` (broker down, rebalancing…) are transient in librdkafka: they are logged
and the partition keeps polling; they never become data.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from flows.records import SourceMessage

__all__ = ["KafkaPartitionSource", "SourceProgress", "end_offsets", "partition_ids"]

log = logging.getLogger(__name__)


@dataclass
class SourceProgress:
    """What the source partitions of one run have read (thread-safe; shared by the readers of a process)."""

    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages_by_key: Counter[tuple[str, str]] = field(default_factory=Counter)
    """``(topic, key)`` -> messages read (a missing key counts as ``""``)."""
    messages: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, topic: str, partition: int, next_offset: int, keys: list[str]) -> None:
        """Note that ``topic``/``partition`` was read up to ``next_offset`` and which keys came with it."""
        with self._lock:
            self.next_offsets[(topic, partition)] = next_offset
            self.messages += len(keys)
            self.messages_by_key.update((topic, key) for key in keys)

    def snapshot(self) -> tuple[dict[tuple[str, int], int], int]:
        """A consistent copy of ``(next_offsets, messages)``."""
        with self._lock:
            return dict(self.next_offsets), self.messages


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def partition_ids(bootstrap: str, topic: str, *, timeout_s: float = 30.0) -> list[int]:
    """The partition ids of ``topic``. Raises ``RuntimeError`` when the topic does not exist."""
    metadata = _admin(bootstrap).list_topics(topic, timeout=timeout_s)
    topic_metadata = metadata.topics.get(topic)
    if topic_metadata is None or topic_metadata.error is not None:
        error = topic_metadata.error if topic_metadata is not None else "missing"
        raise RuntimeError(f"Kafka topic {topic!r} unavailable: {error}")
    return sorted(topic_metadata.partitions)


def end_offsets(bootstrap: str, topic: str, *, timeout_s: float = 30.0) -> dict[int, int]:
    """``{partition: high watermark}`` of ``topic`` now: the offset the next produced message will get."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "flows-end-offsets", "enable.auto.commit": False})
    try:
        result = {}
        for partition in partition_ids(bootstrap, topic, timeout_s=timeout_s):
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            result[partition] = int(high)
        return result
    finally:
        consumer.close()


class _PartitionReader(StatefulSourcePartition[SourceMessage, int]):
    def __init__(
        self,
        source: KafkaPartitionSource,
        partition: int,
        resume_offset: int | None,
    ) -> None:
        self._source = source
        self._topic = source.topic
        self._partition = partition
        self._end = None if source.stop_at is None else source.stop_at.get(partition, 0)
        self._idle_until: datetime | None = None
        config: dict[str, Any] = {
            "bootstrap.servers": source.bootstrap,
            "group.id": source.group_id,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "queued.max.messages.kbytes": 65536,
        }
        config.update(source.consumer_overrides)
        self._consumer: Consumer | None = Consumer(config)
        if resume_offset is not None:
            self._next = resume_offset
        else:  # the earliest offset still in the log (retention may have removed older ones)
            low, _high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, partition), timeout=30)
            self._next = max(int(low), 0)
        if self._end is not None and self._next >= self._end:
            self._consumer.close()  # nothing to read: next_batch ends at once
            self._consumer = None
        else:
            self._consumer.assign([TopicPartition(self._topic, partition, self._next)])

    def _finished(self) -> bool:
        if self._source.stop_event is not None and self._source.stop_event.is_set():
            return True
        return self._end is not None and self._next >= self._end

    def next_batch(self) -> list[SourceMessage]:
        if self._consumer is None or self._finished():
            raise StopIteration
        messages = self._consumer.consume(self._source.batch_size, 0)
        batch: list[SourceMessage] = []
        keys: list[str] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka error on %s[%d]: %s", self._topic, self._partition, error)
                continue
            offset = message.offset()
            if offset is None:
                continue
            if self._end is not None and offset >= self._end:
                self._next = self._end
                break
            key = message.key()
            batch.append(SourceMessage(self._topic, self._partition, offset, key, message.value()))
            keys.append(key.decode("utf-8", "replace") if key is not None else "")
            self._next = offset + 1
        if not batch and self._end is not None:
            # Offsets without a delivered message (transaction markers, compacted tails) still count as read.
            position = self._consumer.position([TopicPartition(self._topic, self._partition)])[0].offset
            if position > self._next:
                self._next = min(position, self._end)
        if self._source.progress is not None:
            self._source.progress.record(self._topic, self._partition, self._next, keys)
        self._idle_until = None if batch else datetime.now(UTC) + self._source.idle_poll
        return batch

    def next_awake(self) -> datetime | None:
        return self._idle_until

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class KafkaPartitionSource(FixedPartitionedSource[SourceMessage, int]):
    """Every partition of ``topic``, read from the snapshot's offset (else the earliest) as
    :class:`~flows.records.SourceMessage` tuples.

    ``stop_at``: ``{partition: end offset}`` (exclusive) at which a partition ends, ``None`` to tail;
    ``stop_event``: set it to end every partition at its next poll; ``progress``: shared progress counters;
    ``group_id`` only names the client (offsets are never committed to Kafka); ``consumer_overrides``: raw
    librdkafka properties.
    """

    def __init__(
        self,
        topic: str,
        *,
        bootstrap: str,
        group_id: str,
        stop_at: Mapping[int, int] | None = None,
        stop_event: threading.Event | None = None,
        progress: SourceProgress | None = None,
        batch_size: int = 1000,
        idle_poll_s: float = 0.1,
        consumer_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.stop_at = dict(stop_at) if stop_at is not None else None
        self.stop_event = stop_event
        self.progress = progress
        self.batch_size = batch_size
        self.idle_poll = timedelta(seconds=idle_poll_s)
        self.consumer_overrides = dict(consumer_overrides or {})

    def list_parts(self) -> list[str]:
        """One Bytewax partition per Kafka partition: ``"<partition>-<topic>"``."""
        return [f"{partition}-{self.topic}" for partition in partition_ids(self.bootstrap, self.topic)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _PartitionReader:
        """A reader of one partition, resuming at ``resume_state`` (the next offset) when given."""
        index, topic = for_part.split("-", 1)
        if topic != self.topic:
            raise ValueError(f"step {step_id}: partition {for_part!r} is not of topic {self.topic!r}")
        return _PartitionReader(self, int(index), resume_state)
