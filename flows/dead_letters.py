"""The dataflow's error stream sink: each dead-letter record to the dead-letter topic of its original topic
(``speech.transcripts.v1.dlq``, ``cdc.public.learners.dlq``).

Each batch is produced and acknowledged (``acks=all``) before ``write_batch`` returns, so dead letters of an
epoch are durable before the epoch's snapshot; a crash may write some of them twice (at-least-once), never lose
them.
"""

from __future__ import annotations

from collections.abc import Callable

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from runtime.kafka import EventProducer
from runtime.settings import PlatformSettings
from schemas.dead_letter import DeadLetterRecord
from schemas.topics import dlq_of

__all__ = ["DeadLetterSink"]


class _DeadLetterPartition(StatelessSinkPartition[DeadLetterRecord]):
    def __init__(self, sink: DeadLetterSink, worker_index: int) -> None:
        self._sink = sink
        self._producer = EventProducer(sink.settings, client_id=f"{sink.client_id}-{worker_index}")

    def write_batch(self, items: list[DeadLetterRecord]) -> None:
        for record in items:
            self._producer.send_dead_letter(dlq_of(record.original_topic), record)
            if self._sink.on_write is not None:
                self._sink.on_write(record)

    def close(self) -> None:
        self._producer.flush()


class DeadLetterSink(DynamicSink[DeadLetterRecord]):
    """Produce each :class:`DeadLetterRecord` to ``<original topic>.dlq`` (keyed by the original message key).

    ``on_write`` is called with each record once it is acknowledged (counters for replays).
    """

    def __init__(
        self,
        settings: PlatformSettings,
        *,
        client_id: str,
        on_write: Callable[[DeadLetterRecord], None] | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.on_write = on_write

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        """One producer per worker."""
        return _DeadLetterPartition(self, worker_index)
