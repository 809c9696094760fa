"""The feedback consumer group: ``speech.transcripts.v1`` → ``speech.feedback.v1``.

The batch loop is the platform's one consumer loop (:class:`runtime.consumer.ConsumerLoop`); this module is its
handler. Each message is decoded and validated as a ``TranscriptCreated`` (:func:`schemas.registry.decode_expected`;
anything else goes to ``speech.transcripts.v1.dlq`` with the reason). A batch of up to ``batch_max_messages``
transcripts is grouped by key (``user_id``) so that one learner's transcripts are handled in order, different
learners in parallel (``worker_threads``); for each transcript:

1. compute its metrics with :func:`flows.metrics.compute_metrics` (the one implementation, shared with the
   dataflows);
2. a transcript that cannot get feedback (no words, invalid timestamps, every provider failed) goes to
   ``speech.transcripts.v1.dlq`` with the reason;
3. deduplicate by ``submission_id`` with the PostgreSQL ledger (see :mod:`feedback.store`): a submission whose
   feedback was already published is skipped without calling any provider;
4. generate feedback with the provider chain (:mod:`feedback.chain`: primary → secondary → rules), reserve the
   ``FeedbackGenerated`` in the ledger, produce it and wait for the broker's acknowledgement, mark it published.

Offsets are stored only after every transcript of the batch was acknowledged on the feedback topic or the
dead-letter topic. While PostgreSQL or the broker is unreachable the loop retries the batch with exponential
backoff until it succeeds or the worker is stopped, leaving it uncommitted; a restarted worker redoes it (the
ledger makes that safe).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from confluent_kafka import Message
from psycopg_pool import PoolTimeout

from feedback import telemetry
from feedback.chain import AllProvidersFailed, ProviderChain, build_chain
from feedback.providers import FeedbackRequest
from feedback.settings import FeedbackSettings
from feedback.store import FeedbackStore
from flows.metrics import compute_metrics
from runtime.consumer import ConsumerLoop, LoopSettings, Positions, Received
from runtime.kafka import EventProducer
from runtime.settings import PlatformSettings
from schemas import (
    FEEDBACK,
    TRANSCRIPTS,
    ConsumerGroups,
    FeedbackGenerated,
    FeedbackGeneratedPayload,
    PoisonMessage,
    TranscriptCreated,
    decode_event,
    decode_expected,
    utc_now,
)

__all__ = ["PRODUCER_NAME", "FeedbackWorker", "run_feedback_worker"]

log = logging.getLogger(__name__)

PRODUCER_NAME = "feedback"
"""``producer`` of the events this worker emits."""


class FeedbackWorker:
    """One member of the ``feedback`` consumer group (see the module docstring).

    ``chain``, ``store`` and ``producer`` are built from the settings unless given. :meth:`handle` processes one
    consumed message completely and is what the batch loop runs per message.
    """

    def __init__(
        self,
        platform: PlatformSettings | None = None,
        settings: FeedbackSettings | None = None,
        *,
        chain: ProviderChain | None = None,
        store: FeedbackStore | None = None,
        producer: EventProducer | None = None,
    ) -> None:
        self.platform = platform or PlatformSettings()
        self.settings = settings or FeedbackSettings()
        self.chain = chain or build_chain(self.settings)
        self.store = store or FeedbackStore(self.platform.postgres_dsn, max_size=self.settings.worker_threads + 1)
        self.producer = producer or EventProducer(self.platform, client_id=f"feedback-{os.getpid()}")
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------------------------------------ loop
    owns_offsets = False
    """Offsets are stored in Kafka by the consumer loop."""

    def loop(self) -> ConsumerLoop[TranscriptCreated]:
        """The consumer loop running this worker (group ``feedback`` on ``speech.transcripts.v1``)."""
        return ConsumerLoop(
            self,
            ConsumerGroups.FEEDBACK,
            [TRANSCRIPTS.name],
            self.platform,
            LoopSettings(batch_max_messages=self.settings.batch_max_messages, batch_max_wait_ms=0),
            transient=(psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout),
            consumer_config={"client.id": f"feedback-{os.getpid()}", "max.poll.interval.ms": 900_000},
            producer=self.producer,
        )

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; the batch in progress is finished and its offsets committed."""
        self._pool = ThreadPoolExecutor(self.settings.worker_threads, thread_name_prefix="feedback")
        log.info("feedback worker %d consuming %s (providers: %s)", os.getpid(), TRANSCRIPTS.name,
                 ", ".join(p.name for p in self.chain.providers))  # fmt: skip
        try:
            self.loop().run(stop)
        finally:
            self._pool.shutdown(wait=True)
            self._pool = None

    def decode(self, msg: Message) -> TranscriptCreated:
        """The ``TranscriptCreated`` of ``msg``; raises :class:`PoisonMessage` for anything else."""
        return decode_expected(msg.value(), TranscriptCreated, topic=TRANSCRIPTS.name)

    def process(self, batch: Sequence[Received[TranscriptCreated]], positions: Positions) -> list[PoisonMessage | None]:
        """Feedback for a batch: learners in parallel, each learner's transcripts in order; one outcome each.

        Raises ``psycopg.OperationalError``/``PoolTimeout``/``DeliveryFailed`` while an engine is unreachable."""
        by_key: OrderedDict[bytes | None, list[int]] = OrderedDict()
        for index, received in enumerate(batch):
            by_key.setdefault(received.msg.key(), []).append(index)
        outcomes: list[PoisonMessage | None] = [None] * len(batch)

        def in_order(indices: list[int]) -> None:
            for index in indices:
                outcomes[index] = self.handle(batch[index].value)

        if self._pool is None or len(by_key) == 1:
            for indices in by_key.values():
                in_order(indices)
        else:
            for future in [self._pool.submit(in_order, indices) for indices in by_key.values()]:
                future.result()
        for outcome in outcomes:
            if outcome is not None:
                telemetry.DEAD_LETTERS.labels(outcome.error_class).inc()
        return outcomes

    # ------------------------------------------------------------------------------------- one transcript
    def handle(self, event: TranscriptCreated) -> PoisonMessage | None:
        """Give feedback on one transcript (produced and acknowledged, or already published: skipped); returns the
        reason it never can get any (no words, invalid timestamps, every provider failed) as a poison, else None."""
        known = event.ids()
        try:
            metrics = compute_metrics(
                event.payload.words.timed(),
                recording_duration_s=event.payload.duration_s,
                hesitations=event.payload.hesitations,
            )
        except ValueError as exc:
            return PoisonMessage("InvalidTimestamps", f"metrics cannot be computed: {exc}", **known)
        if metrics.word_count == 0:
            return PoisonMessage(
                "NoWords", "the transcript has no words: there is nothing to give feedback on", **known
            )

        existing = self._db(self.store.find, event.submission_id)
        if existing is not None and existing.published:
            telemetry.DUPLICATES.labels("skipped").inc()
            log.info("feedback for submission %s already published (event %s); skipping transcript %s",
                     event.submission_id, existing.event_id, event.event_id)  # fmt: skip
            return None
        if existing is not None:
            telemetry.DUPLICATES.labels("republished").inc()
            self._publish(_decode_feedback(existing.event_json))
            return None

        level = self._db(self.store.learner_level, event.user_id) or self.settings.default_level
        request = FeedbackRequest(
            transcript=event.payload.text,
            metrics=metrics,
            level=level,
            language=event.payload.language,
            asr_model=event.payload.asr_model,
        )
        budget_spent = self.chain.asks_llm and not self._db(
            self.store.take_llm_budget,
            event.user_id,
            event.submission_id,
            utc_now().date(),
            self.settings.llm_daily_budget,
        )
        try:
            outcome = self.chain.generate(request, rules_only=budget_spent)
        except AllProvidersFailed as exc:
            return PoisonMessage("NoFeedback", str(exc), **known)
        result = outcome.result
        feedback = FeedbackGenerated(
            **event.caused(producer=PRODUCER_NAME),
            payload=FeedbackGeneratedPayload(
                provider=result.provider,
                model=result.model,
                latency_ms=outcome.latency_ms,
                usage=result.usage,
                text=result.text,
                points=list(result.points),
                attempts=list(outcome.attempts),
                metrics_version=metrics.metrics_version,
                asr_model=event.payload.asr_model,
                llm_budget_exhausted=budget_spent,
            ),
        )
        entry = self._db(self.store.reserve, feedback, transcript_event_id=event.event_id)
        if entry.event_id != feedback.event_id:  # another worker reserved this submission first
            telemetry.DUPLICATES.labels("raced").inc()
            if entry.published:
                return None
            feedback = _decode_feedback(entry.event_json)
        self._publish(feedback)
        return None

    def _publish(self, feedback: FeedbackGenerated) -> FeedbackGenerated:
        self.producer.send(FEEDBACK.name, feedback)
        self._db(self.store.mark_published, feedback.submission_id)
        telemetry.FEEDBACK_EVENTS.labels(feedback.payload.provider).inc()
        return feedback

    @staticmethod
    def _db(operation: Any, *args: Any, **kwargs: Any) -> Any:
        """One ledger operation (unreachable PostgreSQL raises; the loop retries the batch)."""
        return operation(*args, **kwargs)

    def close(self) -> None:
        """Release the chain's HTTP clients and the PostgreSQL pool."""
        self.chain.close()
        self.store.close()


def _decode_feedback(event_json: str) -> FeedbackGenerated:
    event = decode_event(event_json)
    if not isinstance(event, FeedbackGenerated):  # pragma: no cover - only the worker writes the ledger
        raise TypeError(f"ledger holds a {event.event_type}, not a FeedbackGenerated")
    return event


def run_feedback_worker(
    stop: threading.Event,
    *,
    platform: PlatformSettings | None = None,
    settings: FeedbackSettings | None = None,
    metrics_port: int | None = None,
) -> None:
    """Run one feedback worker in this thread until ``stop`` is set (for ``coach run`` and ``coach feedback
    worker``). Serves Prometheus /metrics on ``metrics_port`` (default ``COACH_FEEDBACK_METRICS_PORT``; 0 = off).

    Raises ``psycopg.OperationalError`` when PostgreSQL is unreachable at start-up, and whatever persistent
    broker/PostgreSQL error stopped the loop (after the in-flight batch was abandoned uncommitted).
    """
    settings = settings or FeedbackSettings()
    port = settings.metrics_port if metrics_port is None else metrics_port
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr="127.0.0.1")
    worker = FeedbackWorker(platform, settings)
    try:
        worker.run(stop)
    finally:
        worker.close()
