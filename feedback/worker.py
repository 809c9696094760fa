"""The feedback consumer group: ``speech.transcripts.v1`` → ``speech.feedback.v1``.

Loop: consume up to ``batch_max_messages`` transcripts → group them by key (``user_id``) so that one learner's
transcripts are handled in order, different learners in parallel (``worker_threads``) → for each transcript:

1. decode and validate the ``TranscriptCreated``; compute its metrics with :func:`flows.metrics.compute_metrics`
   (the one implementation, shared with the dataflows);
2. a transcript that cannot get feedback (invalid event, another event type, no words, invalid timestamps) goes
   to ``speech.transcripts.v1.dlq`` with the reason;
3. deduplicate by ``submission_id`` with the PostgreSQL ledger (see :mod:`feedback.store`): a submission whose
   feedback was already published is skipped without calling any provider;
4. generate feedback with the provider chain (:mod:`feedback.chain`: primary → secondary → rules), reserve the
   ``FeedbackGenerated`` in the ledger, produce it and wait for the broker's acknowledgement, mark it published.

Offsets are stored (``consumer.store_offsets``) only after every transcript of the batch was acknowledged on the
feedback topic or the dead-letter topic; the auto-commit thread commits stored offsets. Transient PostgreSQL and
broker errors are retried with exponential backoff (tenacity); when they persist the worker raises, leaving
the batch uncommitted, so a restarted worker redoes it (the ledger makes that safe).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from confluent_kafka import Consumer, Message
from psycopg_pool import PoolTimeout
from pydantic import ValidationError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from feedback import telemetry
from feedback.chain import AllProvidersFailed, ProviderChain, build_chain
from feedback.providers import FeedbackRequest
from feedback.settings import FeedbackSettings
from feedback.store import FeedbackStore
from flows.metrics import compute_metrics
from runtime.kafka import DeliveryFailed, EventProducer, dead_letter_for, is_record, make_consumer, store_offsets_after
from runtime.settings import PlatformSettings
from schemas import (
    FEEDBACK,
    TRANSCRIPTS,
    TRANSCRIPTS_DLQ,
    ConsumerGroups,
    FeedbackGenerated,
    FeedbackGeneratedPayload,
    TranscriptCreated,
    decode_event,
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
        self._retry: dict[str, Any] = dict(
            stop=stop_after_attempt(self.settings.delivery_retry_attempts),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            reraise=True,
        )

    # ------------------------------------------------------------------------------------------------ loop
    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; the batch in progress is finished and its offsets committed."""
        consumer = make_consumer(
            ConsumerGroups.FEEDBACK,
            [TRANSCRIPTS.name],
            self.platform,
            **{"client.id": f"feedback-{os.getpid()}", "max.poll.interval.ms": 900_000},
        )
        pool = ThreadPoolExecutor(self.settings.worker_threads, thread_name_prefix="feedback")
        log.info("feedback worker %d consuming %s (providers: %s)", os.getpid(), TRANSCRIPTS.name,
                 ", ".join(p.name for p in self.chain.providers))  # fmt: skip
        try:
            while not stop.is_set():
                messages = consumer.consume(num_messages=self.settings.batch_max_messages, timeout=0.5)
                batch = [msg for msg in messages if is_record(msg)]
                if batch:
                    self.process(consumer, batch, pool)
        finally:
            pool.shutdown(wait=True)
            consumer.close()  # commits the stored offsets
            self.producer.flush(10)

    def process(self, consumer: Consumer, batch: list[Message], pool: ThreadPoolExecutor | None = None) -> None:
        """Handle a batch (learners in parallel, each learner's messages in order), then store its offsets.

        Raises the first error of any message (offsets of the batch are then not stored).
        """
        by_key: OrderedDict[bytes | None, list[Message]] = OrderedDict()
        for msg in batch:
            by_key.setdefault(msg.key(), []).append(msg)
        if pool is None or len(by_key) == 1:
            for messages in by_key.values():
                self._handle_in_order(messages)
        else:
            futures = [pool.submit(self._handle_in_order, messages) for messages in by_key.values()]
            for future in futures:
                future.result()
        store_offsets_after(consumer, batch)

    def _handle_in_order(self, messages: list[Message]) -> None:
        for msg in messages:
            self.handle(msg)

    # ------------------------------------------------------------------------------------- one transcript
    def handle(self, msg: Message) -> FeedbackGenerated | None:
        """Process one consumed message; returns the feedback event produced (None: skipped or dead-lettered)."""
        try:
            event = decode_event(msg.value() or b"")
        except (ValidationError, ValueError) as exc:
            self._dead_letter(msg, type(exc).__name__, f"invalid TranscriptCreated: {exc}", None)
            return None
        if not isinstance(event, TranscriptCreated):
            self._dead_letter(msg, "UnexpectedEvent", f"{event.event_type} on {TRANSCRIPTS.name}", event)
            return None
        try:
            metrics = compute_metrics(event.payload.words.timed(), recording_duration_s=event.payload.duration_s)
        except ValueError as exc:
            self._dead_letter(msg, "InvalidTimestamps", f"metrics cannot be computed: {exc}", event)
            return None
        if metrics.word_count == 0:
            self._dead_letter(msg, "NoWords", "the transcript has no words: there is nothing to give feedback on",
                              event)  # fmt: skip
            return None

        existing = self._db(self.store.find, event.submission_id)
        if existing is not None and existing.published:
            telemetry.DUPLICATES.labels("skipped").inc()
            log.info("feedback for submission %s already published (event %s); skipping transcript %s",
                     event.submission_id, existing.event_id, event.event_id)  # fmt: skip
            return None
        if existing is not None:
            telemetry.DUPLICATES.labels("republished").inc()
            return self._publish(_decode_feedback(existing.event_json))

        level = self._db(self.store.learner_level, event.user_id) or self.settings.default_level
        request = FeedbackRequest(
            transcript=event.payload.text,
            metrics=metrics,
            level=level,
            language=event.payload.language,
            asr_model=event.payload.asr_model,
        )
        try:
            outcome = self.chain.generate(request)
        except AllProvidersFailed as exc:
            self._dead_letter(msg, "NoFeedback", str(exc), event)
            return None
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
            ),
        )
        entry = self._db(self.store.reserve, feedback, transcript_event_id=event.event_id)
        if entry.event_id != feedback.event_id:  # another worker reserved this submission first
            telemetry.DUPLICATES.labels("raced").inc()
            if entry.published:
                return None
            feedback = _decode_feedback(entry.event_json)
        return self._publish(feedback)

    def _publish(self, feedback: FeedbackGenerated) -> FeedbackGenerated:
        for attempt in Retrying(retry=retry_if_exception_type(DeliveryFailed), **self._retry):
            with attempt:
                self.producer.send(FEEDBACK.name, feedback)
        self._db(self.store.mark_published, feedback.submission_id)
        telemetry.FEEDBACK_EVENTS.labels(feedback.payload.provider).inc()
        return feedback

    def _db(self, operation: Any, *args: Any, **kwargs: Any) -> Any:
        for attempt in Retrying(retry=retry_if_exception_type((psycopg.OperationalError, PoolTimeout)), **self._retry):
            with attempt:
                return operation(*args, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    def _dead_letter(self, msg: Message, error_class: str, reason: str, event: Any) -> None:
        known: dict[str, Any] = {}
        if event is not None:
            known = {"user_id": event.user_id, "submission_id": event.submission_id, "event_id": event.event_id}
        record = dead_letter_for(msg, consumer_group=ConsumerGroups.FEEDBACK, error=reason, **known)
        record = record.model_copy(update={"error_class": error_class})
        for attempt in Retrying(retry=retry_if_exception_type(DeliveryFailed), **self._retry):
            with attempt:
                self.producer.send_dead_letter(TRANSCRIPTS_DLQ.name, record)
        telemetry.DEAD_LETTERS.labels(error_class).inc()
        log.warning("dead-lettered %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), reason)

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
