"""``TranscriptCreated`` v2, superseded, kept so that v2 events on the topics can still be read.

The classes are the event exactly as it was published (same class names, fields, validators and docstrings, so that
its checked-in JSON Schema, ``schemas/json/TranscriptCreated.v2.json``, stays byte-for-byte the same). Readers never
see them: :func:`schemas.registry.decode_event` validates a v2 event against them and upcasts it with
:func:`upcast_transcript_created_v2_v3` (the eventsourcing library's ``upcast_v1_v2`` convention).

* ``TranscriptCreated`` v2 (2026-11-22): words as parallel arrays. Superseded by v3 (2026-12-03), which adds the
  hesitations heard in the audio, the decoding prompt and the count of re-decoded windows; see
  ``docs/MIGRATIONS.md``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from schemas.envelope import EventEnvelope, FrozenModel, UtcDatetime
from schemas.events import StageTimings, TranscriptSegment, TranscriptWords

__all__ = ["TranscriptCreated", "TranscriptCreatedPayload", "upcast_transcript_created_v2_v3"]


class TranscriptCreatedPayload(FrozenModel):
    """The transcript of one submission with word timestamps (v2: words as parallel arrays)."""

    text: str
    language: str = Field(description="ISO 639-1 code detected or forced, e.g. 'en'")
    language_probability: float = Field(ge=0, le=1)
    duration_s: float = Field(gt=0, description="Duration of the decoded audio, seconds")
    segments: list[TranscriptSegment]
    words: TranscriptWords
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
        last = max(self.words.end, default=0.0)
        if last > self.duration_s + 0.05:
            i = self.words.end.index(last)
            raise ValueError(f"words.end[{i}] {last} s is after the clip's end {self.duration_s} s")
        return self


class TranscriptCreated(EventEnvelope):
    """Emitted by the transcription consumer group; caused by a ``SubmissionReceived``.

    Version 2 (2026-11-22): ``payload.words`` are parallel arrays (:class:`TranscriptWords`). Version 1 events
    (one object per word) are upcast on read by :func:`schemas.registry.decode_event`
    (:func:`schemas.events_v1.upcast_transcript_created_v1_v2`)."""

    EVENT_TYPE: ClassVar[str] = "TranscriptCreated"
    SCHEMA_VERSION: ClassVar[int] = 2
    event_type: Literal["TranscriptCreated"] = "TranscriptCreated"
    schema_version: Literal[2] = 2
    payload: TranscriptCreatedPayload


def upcast_transcript_created_v2_v3(raw: dict[str, Any]) -> dict[str, Any]:
    """``TranscriptCreated`` v2 -> v3 (a JSON-shaped dict in, one out): ``hesitations`` is ``None`` (no detector
    ran, so the metrics do not claim to have looked for unrecognised hesitations), ``initial_prompt`` ``None``,
    ``redecoded_chunks`` and ``unprompted_chunks`` 0 (v2 decoders had neither); ``schema_version`` becomes 3;
    nothing else changes.

    The input is validated against v2 first, so a broken v2 event is rejected with v2's own error: raises
    ``pydantic.ValidationError``.
    """
    event = TranscriptCreated.model_validate(raw)
    data = event.model_dump(mode="json")
    data["payload"].update(hesitations=None, initial_prompt=None, redecoded_chunks=0, unprompted_chunks=0)
    data["schema_version"] = 3
    return data
