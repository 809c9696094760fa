"""The transcription consumer group: ``speech.submissions.v1`` → ``speech.transcripts.v1``.

One Whisper model per process; start several processes (``coach worker transcription --processes N``,
one per GPU) and Kafka spreads the partitions between them (consumer group ``transcription``).

Loop: gather up to ``batch_max_messages`` messages or ``batch_max_wait_ms`` after the first one →
fetch each blob → decode and resample to 16 kHz mono → :class:`~transcription.engine.BatchTranscriber`
(VAD, then Whisper on the speech chunks of *all* messages of the batch together) → produce one
``TranscriptCreated`` per message → wait for the broker's acknowledgements → only then store the
offsets (``enable.auto.offset.store=false``; the auto-commit thread commits stored offsets).

Poison input (invalid event, missing blob, undecodable/empty audio, no speech) goes to
``speech.submissions.v1.dlq`` with the reason and its offset is stored like any other, so the
partition keeps moving. Transient errors (blob store I/O, broker delivery) are retried with
exponential backoff (tenacity). SIGTERM finishes the current batch, commits and exits. Delivery is
at-least-once: after a crash a submission may be transcribed twice, and consumers deduplicate by
``submission_id``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Message
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from runtime.blobstore import BlobNotFound, BlobStore, open_blob_store
from runtime.kafka import DeliveryFailed, EventProducer, dead_letter_for, is_record, make_consumer, store_offsets_after
from runtime.settings import PlatformSettings
from schemas import (
    SUBMISSIONS,
    SUBMISSIONS_DLQ,
    TRANSCRIPTS,
    ConsumerGroups,
    StageTimings,
    SubmissionReceived,
    TranscriptCreated,
    TranscriptCreatedPayload,
    TranscriptSegment,
    TranscriptWords,
    decode_event,
    utc_now,
)
from transcription import metrics as m
from transcription.audio import AudioError, decode_audio
from transcription.engine import AudioItem, BatchTranscriber, TranscriptionFailure, TranscriptionResult
from transcription.settings import TranscriptionSettings

__all__ = ["TranscriptionWorker", "WorkerSettings", "PRODUCER_NAME"]

log = logging.getLogger(__name__)

PRODUCER_NAME = "transcription"


class WorkerSettings(BaseSettings):
    """Process-level knobs of a transcription worker (``COACH_TRANSCRIPTION_WORKER_*``)."""

    model_config = SettingsConfigDict(env_prefix="COACH_TRANSCRIPTION_WORKER_", frozen=True, extra="ignore")

    processes: int = Field(default=1, ge=1, description="COACH_TRANSCRIPTION_WORKER_PROCESSES: worker processes")
    metrics_port: int = Field(
        default=9101, ge=0, description="COACH_TRANSCRIPTION_WORKER_METRICS_PORT: first /metrics port (0 = off)"
    )
    retry_attempts: int = Field(default=5, ge=1, description="Tries for transient errors (blob fetch, delivery)")
    retry_max_wait_s: float = Field(default=10.0, gt=0, description="Longest backoff between tries, seconds")
    lag_every_s: float = Field(default=5.0, gt=0, description="How often consumer lag is measured, seconds")
    group_instance_id: str = Field(
        default="",
        description="COACH_TRANSCRIPTION_WORKER_GROUP_INSTANCE_ID: static group membership (KIP-345): a worker "
        "restarted with the same id gets its partitions back at once instead of after session.timeout.ms (45 s); "
        "unique per worker and stable across restarts (with --processes N each gets '<id>-<index>'). A stopped "
        "static member does not leave the group: its partitions wait for it until the session times out. Empty: "
        "dynamic membership",
    )


@dataclass
class _Pending:
    msg: Message
    event: SubmissionReceived
    item: AudioItem
    fetch_ms: float
    decode_ms: float


class TranscriptionWorker:
    """One member of the ``transcription`` consumer group. Not thread-safe; one per process."""

    def __init__(
        self,
        platform: PlatformSettings | None = None,
        settings: TranscriptionSettings | None = None,
        worker: WorkerSettings | None = None,
        *,
        transcriber: BatchTranscriber | None = None,
        blob_store: BlobStore | None = None,
    ):
        self.platform = platform or PlatformSettings()
        self.settings = settings or TranscriptionSettings()
        self.worker = worker or WorkerSettings()
        self.transcriber = transcriber or BatchTranscriber(self.settings)
        self.blobs = blob_store or open_blob_store(self.platform)
        self.producer = EventProducer(self.platform, client_id=f"transcription-{os.getpid()}")
        self._last_lag = 0.0

    def _retrying(self, transient: type[BaseException]) -> Retrying:
        """Exponential backoff on ``transient`` errors (tenacity), re-raising after the last attempt."""
        return Retrying(
            retry=retry_if_exception_type(transient),
            stop=stop_after_attempt(self.worker.retry_attempts),
            wait=wait_exponential(multiplier=0.2, max=self.worker.retry_max_wait_s),
            reraise=True,
        )

    def _membership(self) -> dict[str, Any]:
        """librdkafka properties of this member: client id, poll interval, static ``group.instance.id`` when set
        (KIP-345, https://cwiki.apache.org/confluence/display/KAFKA/KIP-345)."""
        props: dict[str, Any] = {"client.id": f"transcription-{os.getpid()}", "max.poll.interval.ms": 900_000}
        if self.worker.group_instance_id:
            props["group.instance.id"] = self.worker.group_instance_id
        return props

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; the batch in progress is finished, then offsets are committed."""
        consumer = make_consumer(
            ConsumerGroups.TRANSCRIPTION,
            [SUBMISSIONS.name],
            self.platform,
            **self._membership(),
        )
        self.transcriber.warmup()
        log.info("transcription worker %d consuming %s", os.getpid(), SUBMISSIONS.name)
        try:
            while not stop.is_set():
                batch = self._gather(consumer)
                if batch:
                    self.process(consumer, batch)
                self._measure_lag(consumer)
        finally:
            consumer.close()  # commits the stored offsets
            self.producer.flush(10)

    def _gather(self, consumer: Consumer) -> list[Message]:
        """Up to N messages, waiting at most T ms after the first one arrived."""
        n = self.settings.batch_max_messages
        first = consumer.consume(num_messages=n, timeout=0.5)
        messages = [msg for msg in first if is_record(msg)]
        if messages and len(messages) < n and self.settings.batch_max_wait_ms > 0:
            more = consumer.consume(num_messages=n - len(messages), timeout=self.settings.batch_max_wait_ms / 1000)
            messages += [msg for msg in more if is_record(msg)]
        return messages

    def process(self, consumer: Consumer, batch: list[Message]) -> None:
        """Transcribe one batch and store its offsets once every output is acknowledged."""
        started = time.perf_counter()
        batch_started_at = utc_now()
        m.BATCH_SIZE.observe(len(batch))
        pending: list[_Pending] = []
        for msg in batch:
            prepared = self._prepare(msg)
            if prepared is not None:
                pending.append(prepared)
        outcomes = self._transcribe([p.item for p in pending])
        audio_seconds = 0.0
        for p, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, TranscriptionFailure):
                self._dead_letter(p.msg, "NoSpeech" if "speech" in outcome.reason else "TranscriptionFailed",
                                  outcome.reason, p.event)  # fmt: skip
                continue
            event = self._transcript_event(p, outcome, batch_started_at, len(pending))
            for attempt in self._retrying(DeliveryFailed):
                with attempt:
                    self.producer.send(TRANSCRIPTS.name, event)
            m.TRANSCRIPTS.inc()
            audio_seconds += outcome.duration_s
            for stage, ms in (("fetch", p.fetch_ms), ("decode", p.decode_ms), ("vad", outcome.timings.vad_ms),
                              ("inference", outcome.timings.inference_ms)):  # fmt: skip
                m.STAGE_SECONDS.labels(stage).observe(ms / 1000)
        store_offsets_after(consumer, batch)
        wall = time.perf_counter() - started
        m.AUDIO_SECONDS.inc(audio_seconds)
        if audio_seconds and wall > 0:
            m.RTFX.observe(audio_seconds / wall)

    def _prepare(self, msg: Message) -> _Pending | None:
        try:
            event = decode_event(msg.value() or b"")
        except (ValidationError, ValueError) as exc:
            self._dead_letter(msg, type(exc).__name__, f"invalid SubmissionReceived: {exc}", None)
            return None
        if not isinstance(event, SubmissionReceived):
            self._dead_letter(msg, "UnexpectedEvent", f"{event.event_type} on {SUBMISSIONS.name}", event)
            return None
        t0 = time.perf_counter()
        try:
            for attempt in self._retrying(OSError):
                with attempt:
                    data = self.blobs.get(event.payload.blob.uri)
        except BlobNotFound as exc:
            self._dead_letter(msg, "BlobNotFound", str(exc), event)
            return None
        t1 = time.perf_counter()
        try:
            decoded = decode_audio(data)
        except AudioError as exc:
            self._dead_letter(msg, type(exc).__name__, str(exc), event)
            return None
        t2 = time.perf_counter()
        return _Pending(msg, event, AudioItem(str(event.submission_id), decoded.samples), (t1 - t0) * 1000,
                        (t2 - t1) * 1000)  # fmt: skip

    def _transcribe(self, items: list[AudioItem]) -> list[TranscriptionResult | TranscriptionFailure]:
        """The batch together; if the model fails on the batch, each item alone to isolate the culprit."""
        if not items:
            return []
        try:
            return self.transcriber.transcribe_batch(items)
        except Exception:  # noqa: BLE001 - model errors: isolate per item
            log.exception("batch of %d failed; retrying items one by one", len(items))
        outcomes: list[TranscriptionResult | TranscriptionFailure] = []
        for item in items:
            try:
                outcomes.append(self.transcriber.transcribe(item))
            except Exception as exc:  # noqa: BLE001
                outcomes.append(TranscriptionFailure(item.id, f"{type(exc).__name__}: {exc}", item.duration_s))
        return outcomes

    def _transcript_event(
        self, p: _Pending, r: TranscriptionResult, batch_started_at: Any, batch_size: int
    ) -> TranscriptCreated:
        queue_wait_ms = max(0.0, (batch_started_at - p.event.occurred_at).total_seconds() * 1000)
        return TranscriptCreated(
            **p.event.caused(producer=PRODUCER_NAME),
            payload=TranscriptCreatedPayload(
                text=r.text,
                language=r.language,
                language_probability=min(1.0, max(0.0, r.language_probability)),
                duration_s=r.duration_s,
                segments=[
                    TranscriptSegment(
                        start=s.start,
                        end=s.end,
                        text=s.text,
                        avg_logprob=s.avg_logprob,
                        no_speech_prob=min(1.0, max(0.0, s.no_speech_prob)),
                    )  # fmt: skip
                    for s in r.segments
                ],
                words=TranscriptWords(
                    text=[w.word for w in r.words],
                    start=[w.start for w in r.words],
                    end=[w.end for w in r.words],
                    probability=[min(1.0, max(0.0, w.probability)) for w in r.words],
                ),
                recorded_at=p.event.payload.recorded_at,
                asr_model=r.model_id,
                compute_type=r.compute_type,
                device=r.device,
                timings=StageTimings(
                    queue_wait_ms=queue_wait_ms,
                    fetch_ms=p.fetch_ms,
                    decode_ms=p.decode_ms,
                    vad_ms=r.timings.vad_ms,
                    inference_ms=r.timings.inference_ms,
                    batch_size=batch_size,
                ),
            ),
        )

    def _dead_letter(self, msg: Message, error_class: str, reason: str, event: Any) -> None:
        known: dict[str, Any] = {}
        if event is not None:
            known = {"user_id": event.user_id, "submission_id": event.submission_id, "event_id": event.event_id}
        record = dead_letter_for(msg, consumer_group=ConsumerGroups.TRANSCRIPTION, error=reason, **known)
        record = record.model_copy(update={"error_class": error_class})
        for attempt in self._retrying(DeliveryFailed):
            with attempt:
                self.producer.send_dead_letter(SUBMISSIONS_DLQ.name, record)
        m.DEAD_LETTERS.labels(error_class).inc()
        log.warning("dead-lettered %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), reason)

    def _measure_lag(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if now - self._last_lag < self.worker.lag_every_s:
            return
        self._last_lag = now
        try:
            for tp in consumer.position(consumer.assignment()):
                # cached=True: the watermarks librdkafka already has from fetch responses; a broker round trip
                # per partition here stalled the consume loop for seconds.
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    continue
                position = tp.offset if tp.offset >= 0 else high
                m.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - position))
        except Exception as exc:  # noqa: BLE001 - metrics must not stop the worker
            log.debug("lag measurement failed: %s", exc)
