"""Superseded event versions, kept so that old events on the topics can still be read.

Each class here is an event exactly as it was published (same class names, fields, validators and docstrings, so
that its checked-in JSON Schema, ``schemas/json/<EventType>.v<N>.json``, stays byte-for-byte the same). Readers
never see them: :func:`schemas.registry.decode_event` validates an old event against its class here and upcasts
it to the current version (the eventsourcing library's ``upcast_v1_v2`` convention; the upcasters are below).

* ``TranscriptCreated`` v1 (2026-11-21): ``payload.words`` as a list of objects, one per word. Superseded by v2
  (2026-11-22), whose words are parallel arrays (:class:`schemas.events.TranscriptWords`); see
  ``docs/MIGRATIONS.md``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from schemas.envelope import EventEnvelope, FrozenModel, UtcDatetime
from schemas.events import StageTimings, TranscriptSegment

__all__ = [
    "TranscriptCreated",
    "TranscriptCreatedPayload",
    "TranscriptWord",
    "upcast_transcript_created_v1_v2",
]


class TranscriptWord(FrozenModel):
    """One recognised word with its timestamps (seconds from the start of the recording)."""

    word: str
    start: float = Field(ge=0, description="seconds")
    end: float = Field(ge=0, description="seconds")
    probability: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> TranscriptWord:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        return self


class TranscriptCreatedPayload(FrozenModel):
    """The transcript of one submission with word timestamps."""

    text: str
    language: str = Field(description="ISO 639-1 code detected or forced, e.g. 'en'")
    language_probability: float = Field(ge=0, le=1)
    duration_s: float = Field(gt=0, description="Duration of the decoded audio, seconds")
    segments: list[TranscriptSegment]
    words: list[TranscriptWord]
    asr_model: str = Field(description="Model id, e.g. 'faster-whisper/tiny.en'")
    compute_type: str = Field(description="CTranslate2 compute type, e.g. 'int8', 'float16'")
    device: str = Field(description="'cpu' or 'cuda'")
    timings: StageTimings
    recorded_at: UtcDatetime | None = Field(
        default=None, description="Copied from SubmissionReceived.payload.recorded_at: the event time of metrics"
    )

    @model_validator(mode="after")
    def _words_inside_clip(self) -> TranscriptCreatedPayload:
        # 50 ms tolerance: decoders round timestamps to 20 ms frames.
        for i, w in enumerate(self.words):
            if w.end > self.duration_s + 0.05:
                raise ValueError(f"words[{i}].end {w.end} s is after the clip's end {self.duration_s} s")
        return self


class TranscriptCreated(EventEnvelope):
    """Emitted by the transcription consumer group; caused by a ``SubmissionReceived``."""

    EVENT_TYPE: ClassVar[str] = "TranscriptCreated"
    SCHEMA_VERSION: ClassVar[int] = 1
    event_type: Literal["TranscriptCreated"] = "TranscriptCreated"
    schema_version: Literal[1] = 1
    payload: TranscriptCreatedPayload


def upcast_transcript_created_v1_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """``TranscriptCreated`` v1 -> v2 (a JSON-shaped dict in, one out): the list of word objects becomes the
    parallel arrays of :class:`schemas.events.TranscriptWords` (``word`` -> ``text[i]``, ``start`` ->
    ``start[i]``…), same values and order; ``schema_version`` becomes 2; nothing else changes.

    The input is validated against v1 first, so a broken v1 event is rejected with v1's own error (e.g.
    ``payload.words.3: end (1.0) is before start (2.0)``): raises ``pydantic.ValidationError``.
    """
    event = TranscriptCreated.model_validate(raw)
    data = event.model_dump(mode="json")
    words = event.payload.words
    data["payload"]["words"] = {
        "text": [w.word for w in words],
        "start": [w.start for w in words],
        "end": [w.end for w in words],
        "probability": [w.probability for w in words],
    }
    data["schema_version"] = 2
    return data
