"""Event contracts, current versions: ``SubmissionReceived`` v1, ``TranscriptCreated`` v3, ``FeedbackGenerated`` v1.

Events are immutable; a change that breaks readers of an existing version requires a new version
(a new class with ``schema_version = 2``) plus an upcaster ``upcast_v1_v2`` registered in
:mod:`schemas.registry`, following the eventsourcing library's convention; the superseded classes live in
:mod:`schemas.events_v1` and :mod:`schemas.events_v2`.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import Field, model_validator

from schemas.envelope import EventEnvelope, FrozenModel, UtcDatetime

__all__ = [
    "BlobRef",
    "SubmissionReceivedPayload",
    "SubmissionReceived",
    "TranscriptWords",
    "Word",
    "TranscriptSegment",
    "StageTimings",
    "HesitationKind",
    "HesitationSpan",
    "TranscriptCreatedPayload",
    "TranscriptCreated",
    "FeedbackPoint",
    "ProviderAttempt",
    "TokenUsage",
    "FeedbackGeneratedPayload",
    "FeedbackGenerated",
]


# --------------------------------------------------------------------------- SubmissionReceived
class BlobRef(FrozenModel):
    """Reference to audio in the blob store; the event never carries the audio bytes."""

    uri: str = Field(description="Blob URI, e.g. 'file:///…/blobs/ab/abcd…' or 's3://bucket/key'")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the bytes (content address)")
    size_bytes: int = Field(ge=1, description="Size of the blob in bytes")
    content_type: str = Field(description="MIME type detected from the container, e.g. 'audio/flac'")


class SubmissionReceivedPayload(FrozenModel):
    """A learner's recording was accepted by ingestion."""

    blob: BlobRef
    container: str = Field(description="Container format as probed by FFmpeg, e.g. 'flac', 'wav'")
    codec: str | None = Field(default=None, description="Audio codec, e.g. 'flac', 'opus'")
    duration_s: float = Field(gt=0, description="Duration read from the container header, seconds")
    sample_rate: int | None = Field(default=None, ge=1, description="Hz")
    channels: int | None = Field(default=None, ge=1)
    prompt_id: str | None = Field(default=None, max_length=128, description="Speaking prompt answered")
    recorded_at: UtcDatetime | None = Field(
        default=None,
        description="When the learner recorded the answer (client clock, UTC; apps that record offline upload "
        "later). Metrics windows use it as event time; None = the upload time (occurred_at).",
    )
    filename: str | None = Field(default=None, max_length=512, description="Client-supplied file name")
    idempotency_key: str | None = Field(default=None, max_length=256)


class SubmissionReceived(EventEnvelope):
    """Emitted by ingestion after the audio was stored; keyed by ``user_id``."""

    EVENT_TYPE: ClassVar[str] = "SubmissionReceived"
    SCHEMA_VERSION: ClassVar[int] = 1
    event_type: Literal["SubmissionReceived"] = "SubmissionReceived"
    schema_version: Literal[1] = 1
    payload: SubmissionReceivedPayload


# --------------------------------------------------------------------------- TranscriptCreated
class Word(NamedTuple):
    """One word of a transcript as a plain tuple: the text as the recogniser emitted it (e.g. ``" Country."``),
    ``start``/``end`` in seconds from the start of the recording, and the recogniser's probability in [0, 1].

    The one type of a timed word: what :meth:`TranscriptWords.timed` returns, what the transcription engine
    produces (``transcription.engine.TranscriptionResult.words``) and refines
    (``transcription.word_timing.snap_to_silences``); it has the attributes of ``flows.metrics.TimedWord``."""

    word: str
    start: float
    end: float
    probability: float


_Seconds = Annotated[float, Field(ge=0)]
_Probability = Annotated[float, Field(ge=0, le=1)]


class TranscriptWords(FrozenModel):
    """The recognised words with their timestamps, as parallel arrays (one column per attribute).

    Word ``i`` is ``(text[i], start[i], end[i], probability[i])``; times are seconds from the start of the
    recording. Column-oriented because a transcript holds hundreds of words and every reader (metrics, feedback)
    scans them by attribute: decoding four arrays is cheaper than one object per word (the v1
    layout; measured in ``bench/RESULTS.md``, Flows). Raises ``pydantic.ValidationError`` when the arrays differ
    in length, a time is negative, a probability is outside [0, 1], or a word ends before it starts.
    """

    text: list[str] = Field(description="Each word as the recogniser emitted it, e.g. ' Country.'")
    start: list[_Seconds] = Field(description="Start of each word, seconds")
    end: list[_Seconds] = Field(description="End of each word, seconds (>= its start)")
    probability: list[_Probability] = Field(description="Recogniser's probability of each word")

    @model_validator(mode="after")
    def _aligned_and_ordered(self) -> TranscriptWords:
        lengths = (len(self.text), len(self.start), len(self.end), len(self.probability))
        if len(set(lengths)) != 1:
            raise ValueError(
                "text, start, end and probability must have one entry per word, got lengths "
                + ", ".join(map(str, lengths))
            )
        if any(map(operator.lt, self.end, self.start)):  # one C-level pass; the loop below only names the word
            i = next(i for i, (s, e) in enumerate(zip(self.start, self.end, strict=True)) if e < s)
            raise ValueError(f"word {i}: end ({self.end[i]}) is before start ({self.start[i]})")
        return self

    def __len__(self) -> int:
        """Number of words."""
        return len(self.text)

    def timed(self) -> list[Word]:
        """The words as :class:`Word` tuples, in order."""
        return list(map(Word, self.text, self.start, self.end, self.probability))

    @classmethod
    def of(cls, words: Iterable[Any]) -> TranscriptWords:
        """Columns from word objects with ``word``, ``start``, ``end`` and ``probability`` attributes (e.g.
        faster-whisper's ``Word``). Raises ``pydantic.ValidationError`` as the constructor does."""
        rows = list(words)
        return cls(
            text=[w.word for w in rows],
            start=[w.start for w in rows],
            end=[w.end for w in rows],
            probability=[w.probability for w in rows],
        )


class TranscriptSegment(FrozenModel):
    """A decoded segment (faster-whisper ``Segment``), times in seconds."""

    start: float = Field(ge=0)
    end: float = Field(ge=0)
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = Field(default=None, ge=0, le=1)


class StageTimings(FrozenModel):
    """Per-stage wall-clock latencies of the transcription worker, milliseconds."""

    queue_wait_ms: float = Field(ge=0, description="From SubmissionReceived.occurred_at to batch start")
    fetch_ms: float = Field(ge=0, description="Reading the blob")
    decode_ms: float = Field(ge=0, description="Decoding and resampling to 16 kHz mono")
    vad_ms: float = Field(ge=0, description="Silero VAD")
    inference_ms: float = Field(ge=0, description="Whisper inference share of the batch")
    batch_size: int = Field(ge=1, description="Messages in the batch this one was transcribed with")


HesitationKind = Literal["voiced_gap", "held_sound"]
"""What a :class:`HesitationSpan` is: ``"voiced_gap"``, voicing that no recognised word covers (a filled pause or a
lengthened sound the recogniser left out); ``"held_sound"``, recognised words that are likely hallucinated out of
one held sound (a run of very short, low-probability repeated words: "the the the" for "uhhh")."""


class HesitationSpan(FrozenModel):
    """One audible hesitation found in the audio by the transcription worker (seconds from the start of the
    recording; ``transcription.hesitation`` documents how)."""

    start: _Seconds
    end: _Seconds = Field(description="seconds, >= start")
    kind: HesitationKind
    confidence: _Probability = Field(description="How sure the detector is that this is a hesitation, 0..1")

    @model_validator(mode="after")
    def _ordered(self) -> HesitationSpan:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        return self


class TranscriptCreatedPayload(FrozenModel):
    """The transcript of one submission with word timestamps (v3: words as parallel arrays, hesitations heard in
    the audio, what the decoder did)."""

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
    hesitations: list[HesitationSpan] | None = Field(
        default=None,
        description="Hesitations heard in the audio, in order of start; None when the detector did not run (every "
        "event before v3), [] when it ran and found none",
    )
    initial_prompt: str | None = Field(
        default=None, description="The text the decoder was prompted with (the disfluency prompt), None for none"
    )
    redecoded_chunks: int = Field(
        default=0,
        ge=0,
        description="Whisper windows whose first decode stopped well before their speech did and that were "
        "decoded again",
    )
    unprompted_chunks: int = Field(
        default=0,
        ge=0,
        description="Whisper windows decoded without initial_prompt, because with it their decode was doubtful",
    )
    packed_with: int = Field(
        default=0,
        ge=0,
        description="Other answers whose speech shared this answer's Whisper window (window packing); 0 when it "
        "was decoded alone, as every answer was before packing",
    )

    @model_validator(mode="after")
    def _words_inside_clip(self) -> TranscriptCreatedPayload:
        # 50 ms tolerance: decoders round timestamps to 20 ms frames.
        last = max(self.words.end, default=0.0)
        if last > self.duration_s + 0.05:
            i = self.words.end.index(last)
            raise ValueError(f"words.end[{i}] {last} s is after the clip's end {self.duration_s} s")
        for i, span in enumerate(self.hesitations or ()):
            if span.end > self.duration_s + 0.05:
                raise ValueError(f"hesitations[{i}].end {span.end} s is after the clip's end {self.duration_s} s")
        return self


class TranscriptCreated(EventEnvelope):
    """Emitted by the transcription consumer group; caused by a ``SubmissionReceived``.

    Version 3 (2026-12-03): ``payload.hesitations`` (:class:`HesitationSpan`), ``payload.initial_prompt`` and
    ``payload.redecoded_chunks``; later, the optional ``payload.packed_with`` (window packing). Older versions are
    upcast on read by :func:`schemas.registry.decode_event`: v1 (one object per word;
    :func:`schemas.events_v1.upcast_transcript_created_v1_v2`) and v2 (words as parallel arrays;
    :func:`schemas.events_v2.upcast_transcript_created_v2_v3`: no hesitations, since no detector ran)."""

    EVENT_TYPE: ClassVar[str] = "TranscriptCreated"
    SCHEMA_VERSION: ClassVar[int] = 3
    event_type: Literal["TranscriptCreated"] = "TranscriptCreated"
    schema_version: Literal[3] = 3
    payload: TranscriptCreatedPayload


# --------------------------------------------------------------------------- FeedbackGenerated
class FeedbackPoint(FrozenModel):
    """One actionable point tied to a metric and its measured value."""

    kind: Literal["went_well", "work_on"]
    metric: str = Field(description="Metric name as in flows.metrics, e.g. 'speech_rate_wpm'")
    value: float | None = Field(description="Measured value of the metric, in its unit")
    message: str


class ProviderAttempt(FrozenModel):
    """One try of one provider in the failover chain."""

    provider: str
    outcome: Literal["ok", "error", "skipped_circuit_open"]
    error: str | None = None
    latency_ms: float = Field(ge=0)


class TokenUsage(FrozenModel):
    """Token counts reported by an LLM provider (zero for the rules provider)."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)


class FeedbackGeneratedPayload(FrozenModel):
    """Coaching feedback on one transcript."""

    provider: str = Field(description="Provider that produced the feedback, e.g. 'rules', 'openai'")
    model: str | None = Field(default=None, description="LLM model name, None for rules")
    latency_ms: float = Field(ge=0)
    usage: TokenUsage = TokenUsage()
    text: str
    points: list[FeedbackPoint]
    attempts: list[ProviderAttempt] = Field(default_factory=list, description="The failover taken")
    metrics_version: int = Field(ge=1, description="Metric-definition version used")
    asr_model: str
    llm_budget_exhausted: bool = Field(
        default=False, description="True when the learner's daily LLM budget was spent, so no LLM was asked"
    )


class FeedbackGenerated(EventEnvelope):
    """Emitted by the feedback worker; caused by a ``TranscriptCreated``."""

    EVENT_TYPE: ClassVar[str] = "FeedbackGenerated"
    SCHEMA_VERSION: ClassVar[int] = 1
    event_type: Literal["FeedbackGenerated"] = "FeedbackGenerated"
    schema_version: Literal[1] = 1
    payload: FeedbackGeneratedPayload
