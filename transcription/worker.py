"""The transcription consumer group: ``speech.submissions.v1`` → ``speech.transcripts.v1``.

One Whisper model per process; start several processes (``coach worker transcription --processes N``,
one per GPU) and Kafka spreads the partitions between them (consumer group ``transcription``).

The batch loop is the platform's one consumer loop (:class:`runtime.consumer.ConsumerLoop`: up to
``batch_max_messages`` messages, ``batch_max_wait_ms`` after the first one at most and ``batch_idle_ms`` without a
new one, offsets stored only after every output is acknowledged). This module is its handler: decode each
``SubmissionReceived`` (:func:`schemas.registry.decode_expected`), fetch its blob → decode and resample to 16 kHz
mono → :meth:`~transcription.engine.BatchTranscriber.prepare` (VAD, chunks, voicing), each message as soon as it
arrives while the batch is still gathering (the loop's ``on_arrival``); then for the batch
:class:`~transcription.engine.BatchTranscriber` runs Whisper on the speech chunks of *all* its messages together
(each message alone if the batch fails) → produce one ``TranscriptCreated`` per message and wait for the broker's
acknowledgement.

Poison input (an invalid event, a missing blob or one that names a directory, undecodable or empty audio, no speech)
goes to ``speech.submissions.v1.dlq`` with the reason, and the partition keeps moving. Transient errors (the blob
store unreachable, broker delivery) retry the batch with exponential backoff. SIGTERM finishes the current batch,
commits and exits. Delivery is at-least-once: after a crash a submission may be transcribed twice, and consumers
deduplicate by ``submission_id``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Message
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.blobstore import BlobNotFound, BlobStore, BlobStoreUnavailable, open_blob_store
from runtime.consumer import ConsumerLoop, LoopSettings, Positions, Received
from runtime.kafka import EventProducer
from runtime.settings import PlatformSettings
from schemas import (
    SUBMISSIONS,
    TRANSCRIPTS,
    ConsumerGroups,
    PoisonMessage,
    StageTimings,
    SubmissionReceived,
    TranscriptCreated,
    TranscriptCreatedPayload,
    TranscriptSegment,
    TranscriptWords,
    decode_expected,
    utc_now,
)
from transcription import telemetry
from transcription.audio import AudioError, decode_audio
from transcription.engine import AudioItem, BatchTranscriber, PreparedItem, TranscriptionFailure, TranscriptionResult
from transcription.settings import TranscriptionSettings

__all__ = ["TranscriptionWorker", "WorkerSettings", "PRODUCER_NAME"]

_DECODE_RECORD = ("initial_prompt", "redecoded_chunks", "unprompted_chunks", "packed_with", "hesitations")
"""Fields of :class:`transcription.engine.TranscriptionResult` that ``TranscriptCreated`` carries under the same
name: how the answer was decoded (prompt, re-decodes, window packing) and what was heard."""

log = logging.getLogger(__name__)

PRODUCER_NAME = "transcription"


class WorkerSettings(BaseSettings):
    """Process-level knobs of a transcription worker (``COACH_TRANSCRIPTION_WORKER_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="COACH_TRANSCRIPTION_WORKER_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    processes: int = Field(default=1, ge=1)
    """worker processes"""
    metrics_port: int = Field(default=9101, ge=0)
    """first /metrics port (0 = off)"""
    retry_max_wait_s: float = Field(default=10.0, gt=0)
    """Longest backoff between retries of a batch while the blob store or the broker is unreachable, seconds (retried
    until it succeeds or the worker is stopped)"""
    lag_every_s: float = Field(default=5.0, gt=0)
    """How often consumer lag is measured, seconds"""
    group_instance_id: str = ""
    """static group membership (KIP-345): a worker restarted with the same id gets its partitions back at once instead
    of after session.timeout.ms (45 s); unique per worker and stable across restarts (with --processes N each gets
    '<id>-<index>'). A stopped static member does not leave the group: its partitions wait for it until the session
    times out. Empty: dynamic membership"""


@dataclass
class _Pending:
    msg: Message
    event: SubmissionReceived
    item: AudioItem | PreparedItem
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
        self._ready: dict[tuple[str | None, int | None, int | None], _Pending | PoisonMessage] = {}

    def _membership(self) -> dict[str, Any]:
        """librdkafka properties of this member: client id, poll interval, static ``group.instance.id`` when set
        (KIP-345, https://cwiki.apache.org/confluence/display/KAFKA/KIP-345)."""
        props: dict[str, Any] = {"client.id": f"transcription-{os.getpid()}", "max.poll.interval.ms": 900_000}
        if self.worker.group_instance_id:
            props["group.instance.id"] = self.worker.group_instance_id
        return props

    owns_offsets = False
    """Offsets are stored in Kafka by the consumer loop."""

    def loop(self) -> ConsumerLoop[SubmissionReceived]:
        """The consumer loop running this worker (group ``transcription`` on ``speech.submissions.v1``)."""
        return ConsumerLoop(
            self,
            ConsumerGroups.TRANSCRIPTION,
            [SUBMISSIONS.name],
            self.platform,
            LoopSettings(
                batch_max_messages=self.settings.batch_max_messages,
                batch_max_wait_ms=self.settings.batch_max_wait_ms,
                batch_idle_ms=self.settings.batch_idle_ms,
                retry_max_backoff_s=self.worker.retry_max_wait_s,
            ),
            transient=(BlobStoreUnavailable,),
            consumer_config=self._membership(),
            producer=self.producer,
            tick=self._measure_lag,
            on_arrival=self._prefetch,
        )

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; the batch in progress is finished, then offsets are committed."""
        self.transcriber.warmup()
        log.info("transcription worker %d consuming %s", os.getpid(), SUBMISSIONS.name)
        self.loop().run(stop)

    def decode(self, msg: Message) -> SubmissionReceived:
        """The ``SubmissionReceived`` of ``msg``; raises :class:`PoisonMessage` for anything else."""
        return decode_expected(msg.value(), SubmissionReceived, topic=SUBMISSIONS.name)

    def process(
        self, batch: Sequence[Received[SubmissionReceived]], positions: Positions
    ) -> list[PoisonMessage | None]:
        """Transcribe one batch and produce its transcripts (each acknowledged); one outcome per message.

        Raises :class:`BlobStoreUnavailable` or :class:`~runtime.kafka.DeliveryFailed` (the loop retries the batch).
        """
        started = time.perf_counter()
        batch_started_at = utc_now()
        telemetry.BATCH_SIZE.observe(len(batch))
        outcomes: list[PoisonMessage | None] = [None] * len(batch)
        pending: list[tuple[int, _Pending]] = []
        ready, self._ready = self._ready, {}
        for index, received in enumerate(batch):
            prepared = ready.get(_coordinates(received.msg)) or self._prepare(received.msg, received.value)
            if isinstance(prepared, PoisonMessage):
                outcomes[index] = prepared
                telemetry.DEAD_LETTERS.labels(prepared.error_class).inc()
            else:
                pending.append((index, prepared))
        results = self._transcribe([p.item for _, p in pending])
        audio_seconds = 0.0
        for (index, p), outcome in zip(pending, results, strict=True):
            if isinstance(outcome, TranscriptionFailure):
                error_class = "NoSpeech" if "speech" in outcome.reason else "TranscriptionFailed"
                outcomes[index] = PoisonMessage(error_class, outcome.reason, **p.event.ids())
                telemetry.DEAD_LETTERS.labels(error_class).inc()
                continue
            self.producer.send(TRANSCRIPTS.name, self._transcript_event(p, outcome, batch_started_at, len(pending)))
            telemetry.TRANSCRIPTS.inc()
            audio_seconds += outcome.duration_s
            for stage, ms in (("fetch", p.fetch_ms), ("decode", p.decode_ms), ("vad", outcome.timings.vad_ms),
                              ("inference", outcome.timings.inference_ms)):  # fmt: skip
                telemetry.STAGE_SECONDS.labels(stage).observe(ms / 1000)
        wall = time.perf_counter() - started
        telemetry.AUDIO_SECONDS.inc(audio_seconds)
        if audio_seconds and wall > 0:
            telemetry.RTFX.observe(audio_seconds / wall)
        return outcomes

    def _prefetch(self, received: Received[SubmissionReceived]) -> None:
        """The loop's ``on_arrival``: fetch, decode and prepare (:meth:`BatchTranscriber.prepare`) one submission's
        audio while its batch is still gathering; :meth:`process` takes the result. Nothing is kept while the blob
        store is unreachable: :meth:`process` meets that again and retries."""
        try:
            prepared = self._prepare(received.msg, received.value)
        except BlobStoreUnavailable:
            return
        if isinstance(prepared, _Pending) and isinstance(prepared.item, AudioItem):
            try:
                ahead = self.transcriber.prepare(prepared.item)
            except Exception:  # noqa: BLE001 - a model error: the batch meets it again and isolates the message
                ahead = None
            if isinstance(ahead, PreparedItem):
                prepared.item = ahead
        self._ready[_coordinates(received.msg)] = prepared

    def _prepare(self, msg: Message, event: SubmissionReceived) -> _Pending | PoisonMessage:
        """Fetch and decode the audio of one submission, or say why it never can be."""
        known = event.ids()
        t0 = time.perf_counter()
        try:
            data = self.blobs.get(event.payload.blob.uri)
        except BlobNotFound as exc:
            return PoisonMessage("BlobNotFound", str(exc), **known)
        except BlobStoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a URI the store cannot even parse, a backend defect: poison
            return PoisonMessage.of(exc, "blob fetch failed", **known)
        t1 = time.perf_counter()
        try:
            decoded = decode_audio(data, max_duration_s=event.payload.duration_s)
        except AudioError as exc:
            return PoisonMessage(type(exc).__name__, str(exc), **known)
        except Exception as exc:  # noqa: BLE001 - whatever the demuxer/decoder raises on this file: poison
            return PoisonMessage.of(exc, "audio decoding failed", **known)
        t2 = time.perf_counter()
        return _Pending(msg, event, AudioItem(str(event.submission_id), decoded.samples), (t1 - t0) * 1000,
                        (t2 - t1) * 1000)  # fmt: skip

    def _transcribe(self, items: list[AudioItem | PreparedItem]) -> list[TranscriptionResult | TranscriptionFailure]:
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
                audio = item.item if isinstance(item, PreparedItem) else item
                outcomes.append(TranscriptionFailure(audio.id, f"{type(exc).__name__}: {exc}", audio.duration_s))
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
                **{name: getattr(r, name) for name in _DECODE_RECORD},
            ),
        )

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
                telemetry.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - position))
        except Exception as exc:  # noqa: BLE001 - metrics must not stop the worker
            log.debug("lag measurement failed: %s", exc)


def _coordinates(msg: Message) -> tuple[str | None, int | None, int | None]:
    """Where ``msg`` sits: ``(topic, partition, offset)``."""
    return msg.topic(), msg.partition(), msg.offset()
