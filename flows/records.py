"""What flows through the metric dataflow, and how one transcript becomes a metric row.

Engine-agnostic: plain functions over Kafka message tuples. :func:`score_batch` decodes ``TranscriptCreated``
messages and runs :func:`flows.metrics.compute_metrics_batch` on their words; anything that cannot be scored becomes a
:class:`~schemas.dead_letter.DeadLetterRecord` (the dataflow's error stream, written to
``speech.transcripts.v1.dlq``) instead of failing the flow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from flows.calendar import WindowBounds, local_wall_time, wall_to_instant
from flows.metrics import SubmissionMetrics, compute_metrics_batch, lexical_tokens
from flows.tables import NEW_SUBMISSION_COLUMNS, check_datetimes
from runtime.consumer import dead_letter_at
from schemas.dead_letter import DeadLetterRecord, PoisonMessage
from schemas.events import TranscriptCreated
from schemas.registry import decode_expected
from schemas.topics import ConsumerGroups

log = logging.getLogger(__name__)

__all__ = [
    "Scored",
    "SourceMessage",
    "WindowItem",
    "dead_letter",
    "decode_transcript",
    "late_row",
    "lexical_tokens",
    "per_100_words",
    "score_batch",
    "submission_row",
]


class SourceMessage(NamedTuple):
    """One Kafka message as read by :class:`flows.kafka_source.KafkaPartitionSource`."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Scored(NamedTuple):
    """A transcript with its metrics and where it came from."""

    user_id: str
    submission_id: str
    event_id: str
    occurred_at: datetime
    language: str
    recording_duration_s: float
    asr_model: str
    metrics: SubmissionMetrics
    lexical_tokens: tuple[str, ...]
    """The transcript's lexical tokens (:func:`lexical_tokens`): windows compute vocabulary over their
    concatenation."""
    source_topic: str
    source_partition: int
    source_offset: int


class WindowItem(NamedTuple):
    """What a learner's windows keep of one scored transcript, placed in the learner's timezone.

    Flat and immutable (the windows' recovery snapshots copy and pickle lists of these): the metric values the
    windows summarise, the words for the window's vocabulary, and the provenance for late rows.
    """

    user_id: str
    submission_id: str
    event_id: str
    occurred_at: datetime
    timezone: str
    local_time: datetime
    """``occurred_at`` as local wall-clock time, UTC-tagged (see :func:`flows.calendar.local_wall_time`)."""
    word_count: int
    total_duration_s: float
    phonation_time_s: float
    speech_rate_wpm: float | None
    articulation_rate_wpm: float | None
    silent_pauses_per_minute: float | None
    mean_silent_pause_s: float | None
    mean_length_of_run: float | None
    filled_pause_count: int
    repetition_count: int
    lexical_tokens: tuple[str, ...]
    asr_model: str
    metrics_version: int
    source_topic: str
    source_partition: int
    source_offset: int
    # metrics version 2 (defaults: items pickled in recovery snapshots before them still load)
    syllable_count: int = 0
    speech_rate_sps: float | None = None
    articulation_rate_sps: float | None = None
    mean_length_of_run_syllables: float | None = None
    filled_pauses_per_100_words: float | None = None
    filled_pauses_per_minute: float | None = None
    hesitation_detection: bool = False
    """Whether a hesitation detector ran on the transcript: windows count filled pauses only over those that had
    one (see :func:`flows.metrics.known_filled_pauses`)."""

    @classmethod
    def of(cls, scored: Scored, timezone: str) -> WindowItem:
        """The window item of ``scored`` for a learner in ``timezone``."""
        m = scored.metrics
        return cls(
            scored.user_id,
            scored.submission_id,
            scored.event_id,
            scored.occurred_at,
            timezone,
            local_wall_time(scored.occurred_at, timezone),
            m.word_count,
            m.total_duration_s,
            m.phonation_time_s,
            m.speech_rate_wpm,
            m.articulation_rate_wpm,
            m.silent_pauses_per_minute,
            m.mean_silent_pause_s,
            m.mean_length_of_run,
            m.filled_pause_count,
            m.repetition_count,
            scored.lexical_tokens,
            scored.asr_model,
            m.metrics_version,
            scored.source_topic,
            scored.source_partition,
            scored.source_offset,
            m.syllable_count,
            m.speech_rate_sps,
            m.articulation_rate_sps,
            m.mean_length_of_run_syllables,
            m.filled_pauses_per_100_words,
            m.filled_pauses_per_minute,
            m.hesitation_detection,
        )

    @property
    def position(self) -> str:
        """``topic:partition:offset`` of the message it came from."""
        return f"{self.source_topic}:{self.source_partition}:{self.source_offset}"


def dead_letter(message: SourceMessage, error: BaseException | str, **known: object) -> DeadLetterRecord:
    """The dead-letter record of a message the flow could not score (``error``: the exception or a reason), with
    a dead-letter id derived from the message's coordinates (a flow resumed from a snapshot re-sends the same)."""
    if isinstance(error, BaseException):
        poison = PoisonMessage.of(error)
        poison.known.update({k: v for k, v in known.items() if v is not None})
    else:
        poison = PoisonMessage("Rejected", error, **known)
    return dead_letter_at(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        poison,
        consumer_group=ConsumerGroups.METRICS_FLOW,
    )


def decode_transcript(message: SourceMessage) -> TranscriptCreated:
    """The ``TranscriptCreated`` of a transcripts-topic message (the flow's decode step). Raises
    :class:`~schemas.dead_letter.PoisonMessage`, and nothing else, for any other value (see
    :func:`schemas.registry.decode_expected`)."""
    return decode_expected(message.value, TranscriptCreated, topic=message.topic)


def score_batch(messages: Sequence[SourceMessage], *, pause_threshold_s: float) -> list[Scored | DeadLetterRecord]:
    """Decode a batch of transcripts-topic messages and compute their metrics (the dataflow's ``score`` step, run
    on each batch Bytewax hands it; one message is a batch of one).

    Returns one result per message, in order: a :class:`Scored`, or a :class:`DeadLetterRecord` when the value is
    not a valid ``TranscriptCreated`` (bad JSON, contract violation, another event type, a tombstone), its word
    timestamps are rejected by :func:`flows.metrics.compute_metrics_batch`, or its event time cannot be stored.
    Never raises for bad input. The metrics of the batch's transcripts are computed together; should that raise
    (a defect, not bad input: ``pause_threshold_s`` itself is invalid, say), the batch is logged and every message
    is scored as a batch of one, so that the dataflow neither stops nor restarts into the same failure, and only
    the messages that still fail are dead-lettered.
    """
    results: list[Scored | DeadLetterRecord | None] = []
    decoded: list[tuple[int, TranscriptCreated]] = []
    for message in messages:
        try:
            event = decode_transcript(message)
        except PoisonMessage as poison:
            results.append(dead_letter(message, poison))
            continue
        decoded.append((len(results), event))
        results.append(None)
    try:
        computed = compute_metrics_batch(
            [e.payload.words for _, e in decoded],
            recording_durations_s=[e.payload.duration_s for _, e in decoded],
            hesitations=[e.payload.hesitations for _, e in decoded],
            pause_threshold_s=pause_threshold_s,
        )
    except Exception as exc:  # noqa: BLE001 - a defect must not stop the flow (a restart would repeat it)
        if len(decoded) > 1:
            log.exception("batched metrics failed; scoring this batch of %d message(s) one by one", len(messages))
            return [result for one in messages for result in score_batch([one], pause_threshold_s=pause_threshold_s)]
        for index, event in decoded:
            results[index] = dead_letter(messages[index], exc, **event.ids())
        return results  # type: ignore[return-value]  # every None was replaced
    for (index, event), outcome in zip(decoded, computed, strict=True):
        message = messages[index]
        if isinstance(outcome, ValueError):
            results[index] = dead_letter(message, outcome, **event.ids())
            continue
        try:
            results[index] = _scored(message, event, outcome.metrics, outcome.lexical_tokens)
        except Exception as exc:  # noqa: BLE001 - a value the row cannot hold: this message only
            results[index] = dead_letter(message, exc, **event.ids())
    return results  # type: ignore[return-value]  # every None was replaced above


def _scored(
    message: SourceMessage, event: TranscriptCreated, metrics: SubmissionMetrics, tokens: tuple[str, ...]
) -> Scored:
    payload = event.payload
    occurred_at = payload.recorded_at or event.occurred_at
    check_datetimes((occurred_at,), margin=timedelta(days=8))  # its windows reach a week from it
    return Scored(
        user_id=event.user_id,
        submission_id=str(event.submission_id),
        event_id=str(event.event_id),
        # Event time: when the learner recorded the answer (apps may upload later), else the transcript's time.
        occurred_at=occurred_at,
        language=payload.language,
        recording_duration_s=payload.duration_s,
        asr_model=payload.asr_model,
        metrics=metrics,
        lexical_tokens=tokens,
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
    )


def per_100_words(count: int, words: int) -> float | None:
    """``100 * count / words``; ``None`` without words."""
    return 100.0 * count / words if words else None


def submission_row(scored: Scored, computed_at: datetime) -> tuple[object, ...]:
    """The ``submission_metrics`` row of a scored transcript (columns: :data:`flows.tables.SUBMISSION_COLUMNS`)."""
    m = scored.metrics
    return (
        scored.user_id,
        scored.submission_id,
        scored.event_id,
        scored.occurred_at,
        scored.language,
        scored.recording_duration_s,
        m.pause_threshold_s,
        m.word_count,
        m.total_duration_s,
        m.phonation_time_s,
        m.speech_rate_wpm,
        m.articulation_rate_wpm,
        m.silent_pause_count,
        m.silent_pauses_per_minute,
        m.mean_silent_pause_s,
        m.silent_pause_total_s,
        list(m.silent_pauses_s),
        m.mean_length_of_run,
        m.filled_pause_count,
        m.filled_pauses,
        m.filled_pauses_per_100_words,
        m.discourse_marker_count,
        m.discourse_markers,
        m.repetition_count,
        list(m.repetitions),
        m.vocabulary_token_count,
        m.distinct_words,
        m.mattr,
        m.mtld,
        m.vocabulary_sufficient,
        *(getattr(m, name) for name in NEW_SUBMISSION_COLUMNS),
        scored.asr_model,
        m.metrics_version,
        scored.source_topic,
        scored.source_partition,
        scored.source_offset,
        computed_at,
    )


def late_row(item: WindowItem, bounds: WindowBounds, recorded_at: datetime) -> tuple[object, ...]:
    """The ``late_events`` row of a submission that missed window ``bounds`` (columns: ``LATE_COLUMNS``)."""
    return (
        item.user_id,
        item.submission_id,
        item.event_id,
        item.occurred_at,
        item.timezone,
        bounds.kind.value,
        wall_to_instant(bounds.start, item.timezone),
        wall_to_instant(bounds.end, item.timezone),
        item.asr_model,
        item.metrics_version,
        item.source_topic,
        item.source_partition,
        item.source_offset,
        recorded_at,
    )
