"""Batched Whisper transcription across many messages: Silero VAD, then one generate call per batch.

faster-whisper's ``BatchedInferencePipeline`` batches the ≤30 s VAD chunks of *one* file. A worker
that consumes a queue has many short recordings (speaking answers are mostly under 30 s, i.e. a single
chunk each), so batching within a file gives batch size ~1. :class:`BatchTranscriber` batches across
messages instead:

1. **VAD** per message with faster-whisper's Silero VAD (``faster_whisper.vad.get_speech_timestamps``,
   :meth:`TranscriptionSettings.vad_options`). Only speech regions are kept, which trims leading and
   trailing silence and long inner pauses; a message with no speech region becomes a
   :class:`TranscriptionFailure` (``reason="no speech detected"``).
2. **Chunks**: the speech regions of each message are merged into ≤30 s chunks with
   ``faster_whisper.vad.collect_chunks`` (exactly as ``BatchedInferencePipeline.transcribe`` does) and
   turned into log-mel features (``WhisperModel.feature_extractor``, padded to 3000 frames).
3. **Batched inference**: the chunks of *all* messages (sorted by length, so decode lengths in one
   batch are similar) are stacked ``inference_batch_size`` at a time and decoded by
   ``BatchedInferencePipeline.generate_segment_batched``, one encoder pass and one
   ``ctranslate2.models.Whisper.generate`` call per stack. Word alignment for the same stack is one
   ``WhisperModel.find_alignment`` call (``ctranslate2`` ``align`` on the stacked encoder output).
4. **Mapping back**: each chunk's decoded tokens and alignment go back to its message. Word timings
   are post-processed per message, in chunk order, by faster-whisper's own
   ``WhisperModel.add_word_timestamps`` (fed the precomputed alignments), which places them on the
   message's speech-only timeline; ``SpeechTimestampsMap`` (as in ``restore_speech_timestamps``)
   then moves them to the original, untrimmed timeline and they are clamped to ``[0, duration]``.
   **Window packing** (``pack_windows``): the single-chunk messages of a language group whose speech is at most
   ``pack_max_s`` long are placed first-fit, longest first, into shared ≤30 s windows, with ``pack_gap_s`` of
   silence between two answers (faster-whisper's maintainers' advice for many short files, #915, done inside the
   engine). A window is decoded and aligned once, like any chunk; each aligned word then goes back to the answer
   whose span in the window holds its midpoint (or is nearest to it), its times moved to that answer's own
   timeline and kept inside it, so no answer receives another's words. Each answer is then assembled as if
   decoded alone. The answers of a window judged silent by the no-speech rule, an answer that got no words or
   whose words stop early, and one with words squeezed into no time are decoded again alone, in one stack (and,
   should that stop early too, by the sequential decoder, below). ``TranscriptionResult.packed_with`` records how
   many other answers shared the window (0 for an answer decoded again alone).
5. **Hesitations** heard in the audio (``hesitation_detection``): :func:`transcription.hesitation.hear` of the
   message's audio, its words and its VAD regions (seconds) moves each recognised filled pause onto its sound
   (the words the result carries) and finds the hesitation spans.

Decoding uses one temperature without fallback and no timestamp tokens, like
``BatchedInferencePipeline``, with the disfluency prompt (``TranscriptionSettings.disfluency_prompt``) as every
chunk's initial prompt. A chunk whose decode stops early (``BatchTranscriber._stopped_early``) is decoded again by
faster-whisper's sequential decoder, timestamp tokens and seek included (``TranscriptionResult.redecoded_chunks``).
Whisper's no-speech rule (``no_speech_threshold`` with
``log_prob_threshold``) drops chunks the model considers silent, as ``WhisperModel.transcribe`` does.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ctranslate2
import numpy as np
import numpy.typing as npt
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions, get_compression_ratio, get_suppressed_tokens
from faster_whisper.vad import SpeechTimestampsMap, collect_chunks, get_speech_timestamps, get_vad_model

from schemas.events import HesitationSpan, Word
from transcription.audio import TARGET_SAMPLE_RATE
from transcription.hesitation import HesitationSettings, Voicing, frame_voicing, hear
from transcription.models import ResolvedModel, resolve_model
from transcription.settings import WHISPER_WINDOW_S, TranscriptionSettings
from transcription.word_timing import snap_to_silences

__all__ = [
    "AudioItem",
    "PreparedItem",
    "DecodedSegment",
    "EngineTimings",
    "TranscriptionResult",
    "TranscriptionFailure",
    "LoadedModel",
    "resolve_device",
    "load_whisper_model",
    "BatchTranscriber",
    "NO_SPEECH",
]

log = logging.getLogger(__name__)

NO_SPEECH = "no speech detected"
"""``TranscriptionFailure.reason`` when VAD (or Whisper's no-speech rule) finds no speech."""

_PREPEND_PUNCTUATIONS = "\"'“¿([{-"
_APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
_SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")


# --------------------------------------------------------------------------- public data types


@dataclass(frozen=True, slots=True)
class AudioItem:
    """One message's audio to transcribe.

    Attributes:
        id: caller's identifier (e.g. the submission id), echoed in the result.
        audio: float32 array of shape ``(n_samples,)``, mono, 16 kHz, nominally in ``[-1, 1]``
            (what :func:`transcription.audio.decode_audio` returns). Other float dtypes are converted.

    Raises:
        ValueError: ``audio`` is not one-dimensional.
    """

    id: str
    audio: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        array = np.ascontiguousarray(self.audio, dtype=np.float32)
        if array.ndim != 1:
            raise ValueError(f"AudioItem {self.id!r}: audio must be 1-D mono, got shape {array.shape}")
        object.__setattr__(self, "audio", array)

    @property
    def duration_s(self) -> float:
        """Duration in seconds (``n_samples / 16000``)."""
        return self.audio.shape[0] / TARGET_SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class PreparedItem:
    """One item with the engine's per-item audio work done ahead of its batch (:meth:`BatchTranscriber.prepare`):
    Silero VAD's speech regions (sample indices), the speech chunks, the log-mel features of the chunks that window
    packing cannot take (the others get theirs when they are decoded alone), and the hesitation detector's frame
    voicing. Nothing in it is changed by a batch, so a retried batch starts from the same state.

    Attributes:
        item: the :class:`AudioItem`.
        speech: VAD regions, ``[{"start": sample, "end": sample}, ...]``.
        chunks: ``(offset_s, duration_s, samples, features or None)`` per ≤30 s chunk, on the speech-only timeline.
        voicing: :func:`transcription.hesitation.frame_voicing` of the audio, or ``None`` without
            ``hesitation_detection``.
        vad_ms, features_ms: milliseconds spent on VAD and on chunking and features.
    """

    item: AudioItem
    speech: list[dict[str, int]]
    chunks: list[tuple[float, float, npt.NDArray[np.float32], npt.NDArray[np.float32] | None]]
    voicing: Voicing | None
    vad_ms: float
    features_ms: float


@dataclass(frozen=True, slots=True)
class DecodedSegment:
    """A sentence of the transcript, times in seconds on the original timeline.

    The engine's own segment (a plain dataclass, unclamped); the worker turns it into the event's
    :class:`schemas.events.TranscriptSegment`.

    With word timestamps, a chunk's words are split after sentence-final punctuation (``. ? !``), so
    ``start``/``end`` are the first/last word's times; without them, one segment per decoded chunk.
    ``avg_logprob`` and ``no_speech_prob`` are those of the decoded chunk the segment belongs to.
    """

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float


@dataclass(frozen=True, slots=True)
class EngineTimings:
    """Wall-clock milliseconds per engine stage for one message.

    The engine's part of the worker's :class:`schemas.events.StageTimings` (which adds queue wait, fetch and
    decode).

    Attributes:
        vad_ms: Silero VAD on this message.
        features_ms: chunking and log-mel features of this message.
        inference_ms: this message's share of the batched encoder + decoder + alignment time
            (each stack's time split evenly between the chunks in it).
        batch_inference_ms: wall time of all inference calls of the whole batch.
    """

    vad_ms: float
    features_ms: float
    inference_ms: float
    batch_inference_ms: float


@dataclass(frozen=True, slots=True)
class TranscriptionResult:
    """The transcript of one :class:`AudioItem`.

    Attributes:
        id: the item's id.
        text: full transcript (chunk texts joined, stripped).
        language: ISO 639-1 code, forced by settings or detected; ``language_probability`` is 1.0
            when forced.
        duration_s: duration of the item's audio in seconds.
        speech_duration_s: seconds of audio VAD kept (sum of speech regions).
        segments: :class:`DecodedSegment` list in time order.
        words: :class:`schemas.events.Word` list in time order (empty if word timestamps are off); every
            ``start``/``end`` lies in ``[0, duration_s]``.
        model_id / device / compute_type: e.g. ``"faster-whisper/tiny.en"``, ``"cpu"``, ``"int8"``.
        num_chunks: ≤30 s chunks decoded for this item.
        batch_size: items in the batch it was transcribed with.
        timings: :class:`EngineTimings`.
        redecoded_chunks: chunks whose one-pass decode stopped before their speech did and that were
            decoded again by the sequential decoder.
        initial_prompt: the prompt the chunks were decoded with (``disfluency_prompt``), or ``None``.
        unprompted_chunks: chunks decoded without it, because it made their decode doubtful.
        hesitations: voiced gaps and held sounds heard in the audio
            (:func:`transcription.hesitation.hear`), or ``None`` when ``hesitation_detection`` is off.
        packed_with: how many other answers' speech shared this answer's Whisper window (``pack_windows``);
            0 when it was decoded alone.
    """

    id: str
    text: str
    language: str
    language_probability: float
    duration_s: float
    speech_duration_s: float
    segments: list[DecodedSegment]
    words: list[Word]
    model_id: str
    device: str
    compute_type: str
    num_chunks: int
    batch_size: int
    timings: EngineTimings
    redecoded_chunks: int = 0
    initial_prompt: str | None = None
    unprompted_chunks: int = 0
    hesitations: list[HesitationSpan] | None = None
    packed_with: int = 0


@dataclass(frozen=True, slots=True)
class TranscriptionFailure:
    """An item that could not be transcribed; the rest of the batch is unaffected.

    ``reason`` is :data:`NO_SPEECH` for silence, or says what was wrong with the audio.
    """

    id: str
    reason: str
    duration_s: float
    timings: EngineTimings | None = None


_NO_TIMINGS = EngineTimings(vad_ms=0.0, features_ms=0.0, inference_ms=0.0, batch_inference_ms=0.0)


# --------------------------------------------------------------------------- model loading


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A ``faster_whisper.WhisperModel`` with how it was resolved and placed."""

    model: WhisperModel
    resolved: ResolvedModel
    device: str
    compute_type: str
    cpu_threads: int


def resolve_device(settings: TranscriptionSettings) -> tuple[str, str]:
    """Pick ``(device, compute_type)``: CUDA float16 when a GPU is visible, else CPU int8.

    ``device="auto"`` means CUDA when ``ctranslate2.get_cuda_device_count() > 0``. ``compute_type
    ="auto"`` means the first of float16/int8_float16/float32 (CUDA) or int8/int8_float32/float32
    (CPU) that ``ctranslate2.get_supported_compute_types`` lists for the device.
    """
    device = settings.device
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute_type = settings.compute_type
    if compute_type == "auto":
        preferred = ("float16", "int8_float16", "float32") if device == "cuda" else ("int8", "int8_float32")
        supported = ctranslate2.get_supported_compute_types(device, settings.device_index)
        compute_type = next((c for c in preferred if c in supported), "float32")
    return device, compute_type


def load_whisper_model(settings: TranscriptionSettings) -> LoadedModel:
    """Resolve the model directory and load it as a ``faster_whisper.WhisperModel``.

    This is also how benchmarks should build the sequential baseline, so that both use the same
    weights, device, compute type and thread count.

    Raises:
        transcription.models.ModelUnavailable: see :func:`transcription.models.resolve_model`.
    """
    resolved = resolve_model(settings.model, cache_dir=settings.cache_dir)
    device, compute_type = resolve_device(settings)
    cpu_threads = settings.cpu_threads or len(os.sched_getaffinity(0))
    model = WhisperModel(
        str(resolved.path),
        device=device,
        device_index=settings.device_index,
        compute_type=compute_type,
        cpu_threads=cpu_threads,
    )
    log.info(
        "loaded %s from %s on %s/%s (%d CPU threads)",
        resolved.model_id,
        resolved.path,
        device,
        compute_type,
        cpu_threads,
    )
    return LoadedModel(model, resolved, device, compute_type, cpu_threads)


# --------------------------------------------------------------------------- internals


@dataclass(slots=True)
class _Chunk:
    """One ≤30 s chunk of one message (times on the message's speech-only timeline), or a packed window.

    A packed window has no message of its own: ``members`` holds the chunks placed in it, each with the second at
    which its speech starts in the window.
    """

    message: _Message | None
    offset_s: float
    duration_s: float
    features: npt.NDArray[np.float32] | None  # (n_mels, 3000) until decoded
    samples: npt.NDArray[np.float32] | None = None  # the chunk's speech audio, until decoded (for a re-decode)
    redecoded: list[dict[str, Any]] | None = None  # segments of the sequential re-decode, when the first stopped early
    unprompted: bool = False  # decoded without the disfluency prompt, which made its decode doubtful
    tokens: list[int] = field(default_factory=list)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    silent: bool = False
    alignment: list[dict[str, Any]] = field(default_factory=list)
    members: list[tuple[_Chunk, float]] = field(default_factory=list)  # a packed window's chunks and their starts
    packed_with: int = 0  # other chunks that shared this chunk's packed window

    def owners(self) -> list[_Message]:
        """The messages whose speech this chunk holds: its own, or those of a packed window's members."""
        if self.members:
            return [member.message for member, _ in self.members if member.message is not None]
        return [] if self.message is None else [self.message]


@dataclass(slots=True)
class _Message:
    """Per-item state while a batch is in flight."""

    item: AudioItem
    speech: list[dict[str, int]]
    voicing: Voicing | None = None
    chunks: list[_Chunk] = field(default_factory=list)
    language: str = "en"
    language_probability: float = 1.0
    vad_ms: float = 0.0
    features_ms: float = 0.0
    inference_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class _Decoded:
    """What one decode of a chunk produced, kept while the chunk is decoded another way."""

    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    silent: bool
    alignment: list[dict[str, Any]]

    @classmethod
    def of(cls, chunk: _Chunk) -> _Decoded:
        return cls(chunk.tokens, chunk.avg_logprob, chunk.no_speech_prob, chunk.silent, chunk.alignment)

    def restore(self, chunk: _Chunk) -> None:
        chunk.tokens, chunk.avg_logprob, chunk.no_speech_prob = self.tokens, self.avg_logprob, self.no_speech_prob
        chunk.silent, chunk.alignment = self.silent, self.alignment


class _PrecomputedAlignment:
    """Stands in for ``WhisperModel`` inside ``WhisperModel.add_word_timestamps``.

    ``add_word_timestamps`` calls ``self.find_alignment`` (one ctranslate2 ``align`` call over the
    segments it is given) and reads ``self.frames_per_second``. The alignments were already computed
    for the whole cross-message stack, so this returns them for one message's chunks; the rest of
    faster-whisper's word post-processing (punctuation merging, long-word truncation, pause
    heuristics seeded with ``last_speech_timestamp=0``) then runs per message, unchanged.
    """

    def __init__(self, frames_per_second: int, alignments: list[list[dict[str, Any]]]) -> None:
        self.frames_per_second = frames_per_second
        self._alignments = alignments

    def find_alignment(self, *_args: object, **_kwargs: object) -> list[list[dict[str, Any]]]:
        return self._alignments


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


# --------------------------------------------------------------------------- the engine


class BatchTranscriber:
    """Transcribes batches of messages with one Whisper model, batching chunks across messages.

    One instance per process (it holds the model); not thread-safe. See the module docstring for
    the pipeline and :meth:`transcribe_batch` for the contract.

    Args:
        settings: engine settings; default ``TranscriptionSettings()`` (environment).
        loaded: an already loaded model (e.g. shared with a benchmark baseline); default loads one
            with :func:`load_whisper_model`.

    Raises:
        transcription.models.ModelUnavailable: the configured model cannot be found.
    """

    def __init__(self, settings: TranscriptionSettings | None = None, *, loaded: LoadedModel | None = None) -> None:
        self.settings = settings or TranscriptionSettings()
        self.loaded = loaded or load_whisper_model(self.settings)
        self._hesitation_settings = HesitationSettings()
        self.model = self.loaded.model
        self._pipeline = BatchedInferencePipeline(self.model)
        self._multilingual = bool(self.model.model.is_multilingual)
        self._vad_options = self.settings.vad_options()
        forced = self.settings.language
        if not self._multilingual and forced not in (None, "en"):
            log.warning("model %s is English-only; ignoring language=%r", self.model_id, forced)
        self._forced_language = forced if self._multilingual else "en"
        self._tokenizers: dict[str, Tokenizer] = {}

    @property
    def model_id(self) -> str:
        """Model identifier recorded with transcripts, e.g. ``"faster-whisper/tiny.en"``."""
        return self.loaded.resolved.model_id

    def warmup(self) -> None:
        """Load Silero VAD and run one encode/decode on silence so the first batch is not slow."""
        get_vad_model()
        silence = np.zeros((1, self.model.model.n_mels, 3000), dtype=np.float32)
        tokenizer = self._tokenizer(self._forced_language or "en")
        options = dataclasses.replace(self._options(tokenizer), max_new_tokens=4)
        self._pipeline.generate_segment_batched(silence, tokenizer, options)

    def transcribe(self, item: AudioItem | PreparedItem) -> TranscriptionResult | TranscriptionFailure:
        """Transcribe one item (a batch of one)."""
        return self.transcribe_batch([item])[0]

    def transcribe_batch(
        self, items: Sequence[AudioItem | PreparedItem]
    ) -> list[TranscriptionResult | TranscriptionFailure]:
        """Transcribe ``items`` together; one result per item, in the same order.

        Items without speech, or with empty or non-finite audio, yield a :class:`TranscriptionFailure`
        and do not affect the others. Errors of the model itself (e.g. CUDA out of memory) propagate
        for the whole batch, for the caller to retry or dead-letter.

        Args:
            items: :class:`AudioItem` s holding 16 kHz mono float32 audio, or what :meth:`prepare` made of them.

        Returns:
            ``list[TranscriptionResult | TranscriptionFailure]`` of ``len(items)``.
        """
        outcomes: list[TranscriptionResult | TranscriptionFailure | _Message] = []
        for item in items:
            prepared = item if isinstance(item, PreparedItem) else self.prepare(item)
            outcomes.append(prepared if isinstance(prepared, TranscriptionFailure) else self._message(prepared))
        messages = [m for m in outcomes if isinstance(m, _Message)]

        batch_started = time.perf_counter()
        if messages:
            self._assign_languages(messages)
            by_language: dict[str, list[_Chunk]] = defaultdict(list)
            for message in messages:
                for chunk in message.chunks:
                    by_language[message.language].append(chunk)
            for language, chunks in by_language.items():
                self._infer(chunks, self._tokenizer(language))
        batch_inference_ms = _ms(time.perf_counter() - batch_started)

        results: list[TranscriptionResult | TranscriptionFailure] = []
        for outcome in outcomes:
            if isinstance(outcome, _Message):
                results.append(self._assemble(outcome, len(items), batch_inference_ms))
            else:
                results.append(outcome)
        return results

    # ------------------------------------------------------------------ stages

    def prepare(self, item: AudioItem) -> PreparedItem | TranscriptionFailure:
        """The per-item audio work of a batch, done ahead of it (e.g. while a worker waits for the batch to fill):
        VAD, chunking, the features of chunks that will be decoded alone, and the voicing the hesitation detector
        reads (source: ``BatchedInferencePipeline.transcribe``). Returns a :class:`TranscriptionFailure` for empty
        or non-finite audio and for audio without speech."""
        audio = item.audio
        if audio.size == 0:
            return TranscriptionFailure(item.id, "empty audio", 0.0, _NO_TIMINGS)
        if not np.isfinite(audio).all():
            reason = "audio contains NaN or infinite samples"
            return TranscriptionFailure(item.id, reason, item.duration_s, _NO_TIMINGS)

        started = time.perf_counter()
        speech = get_speech_timestamps(audio, self._vad_options, sampling_rate=TARGET_SAMPLE_RATE)
        vad_ms = _ms(time.perf_counter() - started)
        if not speech:
            timings = EngineTimings(vad_ms=vad_ms, features_ms=0.0, inference_ms=0.0, batch_inference_ms=0.0)
            return TranscriptionFailure(item.id, NO_SPEECH, item.duration_s, timings)

        started = time.perf_counter()
        audio_chunks, chunks_metadata = collect_chunks(
            audio, speech, sampling_rate=TARGET_SAMPLE_RATE, max_duration=WHISPER_WINDOW_S
        )
        spans = [
            (float(metadata["offset"]), float(metadata["duration"]), samples)
            for samples, metadata in zip(audio_chunks, chunks_metadata, strict=True)
            if samples.size
        ]
        packable = len(spans) == 1 and self._packable(spans[0][1])
        chunks = [(offset, length, samples, None if packable else self._features(samples))
                  for offset, length, samples in spans]  # fmt: skip
        features_ms = _ms(time.perf_counter() - started)
        if not chunks:
            timings = EngineTimings(vad_ms, features_ms, inference_ms=0.0, batch_inference_ms=0.0)
            return TranscriptionFailure(item.id, NO_SPEECH, item.duration_s, timings)
        voicing = None
        if self.settings.hesitation_detection:
            voicing = frame_voicing(audio, TARGET_SAMPLE_RATE, self._hesitation_settings)
        return PreparedItem(item, speech, chunks, voicing, vad_ms, features_ms)

    def _message(self, prepared: PreparedItem) -> _Message:
        """A fresh in-flight state of ``prepared`` for one batch."""
        message = _Message(prepared.item, prepared.speech, prepared.voicing, vad_ms=prepared.vad_ms,
                           features_ms=prepared.features_ms)  # fmt: skip
        for offset, length, samples, features in prepared.chunks:
            message.chunks.append(_Chunk(message, offset, length, features, samples))
        return message

    def _packable(self, speech_s: float) -> bool:
        """Whether the only chunk of a message, ``speech_s`` seconds long, may share a window (:meth:`_pack`)."""
        s = self.settings
        return s.pack_windows and s.word_timestamps and speech_s <= s.pack_max_s

    def _features(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Log-mel features of ``samples`` for one window, shape ``(n_mels, 3000)`` (as
        ``BatchedInferencePipeline.transcribe``: the extractor's last frame dropped, padded to 30 s)."""
        return np.asarray(pad_or_trim(self.model.feature_extractor(samples)[..., :-1]), dtype=np.float32)

    def _features_of(self, chunk: _Chunk) -> npt.NDArray[np.float32]:
        """``chunk``'s features, computed from its samples the first time they are needed."""
        if chunk.features is None:
            assert chunk.samples is not None
            chunk.features = self._features(chunk.samples)
        return chunk.features

    def _assign_languages(self, messages: list[_Message]) -> None:
        """Forced language, or Whisper language detection on each message's first chunk.

        Detection (multilingual models with ``language`` unset) encodes the first chunks of the
        messages as one stack and calls ``ctranslate2`` ``detect_language`` on it: one extra encoder
        pass per message. Chunks are then grouped by language so each generate call has one prompt.
        """
        if self._forced_language is not None:
            for message in messages:
                message.language, message.language_probability = self._forced_language, 1.0
            return
        size = self.settings.inference_batch_size
        for start in range(0, len(messages), size):
            group = messages[start : start + size]
            features = np.stack([self._features_of(m.chunks[0]) for m in group])
            detected = self.model.model.detect_language(self.model.encode(features))
            for message, ranking in zip(group, detected, strict=True):
                token, probability = ranking[0]
                message.language, message.language_probability = token[2:-2], float(probability)

    def _infer(self, chunks: list[_Chunk], tokenizer: Tokenizer) -> None:
        """Decode and align ``chunks`` (from many messages) in stacks (:meth:`_decode`), with the disfluency
        prompt; decode without it the chunks that it made doubtful (:meth:`_doubtful`: Whisper's no-speech rule
        fired or the average log-probability fell below ``log_prob_threshold``), keeping whichever decode is more
        probable; then decode again, one by one, the chunks whose decode stopped early (:meth:`_stopped_early`,
        :meth:`_redecode`). Short chunks are first packed into shared windows (:meth:`_pack`), and the words of
        each window are given back to its chunks (:meth:`_unpack`) before the early-stop check."""
        prompt = self.settings.disfluency_prompt
        windows = self._pack(chunks)
        self._decode(windows, tokenizer, prompt)
        doubtful = [chunk for chunk in windows if prompt is not None and self._doubtful(chunk)]
        if doubtful:
            prompted = {id(chunk): _Decoded.of(chunk) for chunk in doubtful}
            self._decode(doubtful, tokenizer, None)
            for chunk in doubtful:
                first = prompted[id(chunk)]
                if first.avg_logprob >= chunk.avg_logprob:
                    first.restore(chunk)
                else:
                    chunk.unprompted = True
        alone = [member for window in windows if window.members for member in self._unpack(window)]
        if alone:
            self._decode(alone, tokenizer, prompt)
        for chunk in chunks:
            samples, chunk.samples, chunk.features = chunk.samples, None, None
            if samples is not None and self._stopped_early(chunk):
                self._redecode(chunk, samples, tokenizer)

    def _pack(self, chunks: list[_Chunk]) -> list[_Chunk]:
        """Place the packable chunks (their message's only chunk, speech ≤ ``pack_max_s``) first-fit, longest first,
        into windows of at most ``WHISPER_WINDOW_S`` with ``pack_gap_s`` of silence between two chunks; return the
        chunks to decode: the unpackable ones, the windows of two or more, and the chunks left alone. Nothing is
        packed without ``pack_windows`` and ``word_timestamps`` (words are given back by time)."""
        s = self.settings
        alone: list[_Chunk] = []
        bins: list[list[_Chunk]] = []
        loads: list[float] = []
        for chunk in sorted(chunks, key=lambda c: c.duration_s, reverse=True):
            message = chunk.message
            if message is None or len(message.chunks) != 1 or not self._packable(chunk.duration_s):
                alone.append(chunk)
                continue
            for index, load in enumerate(loads):
                if load + s.pack_gap_s + chunk.duration_s <= WHISPER_WINDOW_S:
                    bins[index].append(chunk)
                    loads[index] = load + s.pack_gap_s + chunk.duration_s
                    break
            else:
                bins.append([chunk])
                loads.append(chunk.duration_s)
        return alone + [members[0] if len(members) == 1 else self._window(members) for members in bins]

    def _window(self, members: list[_Chunk]) -> _Chunk:
        """One packed window of ``members``: their speech samples in order, ``pack_gap_s`` of zeros between two,
        and the log-mel features of the whole (padded to 3000 frames)."""
        gap = np.zeros(round(self.settings.pack_gap_s * TARGET_SAMPLE_RATE), dtype=np.float32)
        parts: list[npt.NDArray[np.float32]] = []
        placed: list[tuple[_Chunk, float]] = []
        position = 0
        for member in members:
            if parts:
                parts.append(gap)
                position += gap.size
            assert member.samples is not None
            placed.append((member, position / TARGET_SAMPLE_RATE))
            parts.append(member.samples)
            position += member.samples.size
            member.packed_with = len(members) - 1
        samples = np.concatenate(parts)
        return _Chunk(None, 0.0, samples.size / TARGET_SAMPLE_RATE, self._features(samples), members=placed)

    def _unpack(self, window: _Chunk) -> list[_Chunk]:
        """Give each aligned word of a decoded ``window`` to the member whose span in the window holds its midpoint
        (or is nearest to it; a word without a leading space goes with the word before it), with its times moved
        onto the member's timeline and kept inside ``[0, duration]``. Each member's tokens are those of its words,
        and it shares the window's log-probability, no-speech probability and prompt choice. A window the
        no-speech rule judged silent, since its first tokens speak for its first member only, a member with a run
        of words the alignment squeezed into no time (:func:`_squeezed`) or a member whose words stop early
        (:meth:`_stopped_early`; the decoder can pass over a whole answer of a window, and the alignment then
        stretches a neighbour's words over it) make the window's members be returned, all of them, to be decoded
        alone with the batched decoder (their ``packed_with`` is then 0)."""
        members = [member for member, _ in window.members]
        if window.silent:
            for member in members:
                member.packed_with = 0
            return members
        spans = [(start, start + member.duration_s) for member, start in window.members]
        words: list[list[dict[str, Any]]] = [[] for _ in members]
        nearest = 0
        for index, word in enumerate(window.alignment):
            # A word that does not start with a space (punctuation, a word's continuation) belongs with the word
            # before it: DTW often times a sentence-final stop at the next speech, after the gap.
            if index == 0 or str(word["word"]).startswith(" "):
                middle = (float(word["start"]) + float(word["end"])) / 2
                nearest = min(range(len(spans)), key=lambda i: max(spans[i][0] - middle, middle - spans[i][1], 0.0))
            words[nearest].append(word)
        for (member, start), own in zip(window.members, words, strict=True):
            member.tokens = [token for word in own for token in word["tokens"]]
            member.alignment = [
                {
                    **word,
                    "start": min(max(float(word["start"]) - start, 0.0), member.duration_s),
                    "end": min(max(float(word["end"]) - start, 0.0), member.duration_s),
                }
                for word in own
            ]
            member.avg_logprob, member.no_speech_prob = window.avg_logprob, window.no_speech_prob
            member.silent, member.unprompted = False, window.unprompted
        if not any(_squeezed(member.alignment) or self._stopped_early(member) for member in members):
            return []
        # The decoder passed over part of the window: the alignment stretched the words it wrote over the speech
        # it skipped, so words at a boundary may sit with the wrong answer. Every answer of it is decoded alone.
        for member in members:
            member.packed_with = 0
        return members

    def _doubtful(self, chunk: _Chunk) -> bool:
        """Whether a decode is doubtful: Whisper's no-speech rule dropped the chunk (VAD found speech in it), or
        its average log-probability is below ``log_prob_threshold``."""
        bound = self.settings.log_prob_threshold
        return chunk.silent or (bound is not None and chunk.avg_logprob < bound)

    def _decode(self, chunks: list[_Chunk], tokenizer: Tokenizer, prompt: str | None) -> None:
        """Decode and align ``chunks`` in stacks of ``inference_batch_size``, with ``prompt`` as the initial prompt.

        Source: ``BatchedInferencePipeline.forward`` (generate, then split and align), with the
        alignment computed for the whole stack here and its post-processing deferred per message.
        """
        options = dataclasses.replace(self._options(tokenizer), initial_prompt=prompt)
        size = self.settings.inference_batch_size
        ordered = sorted(chunks, key=lambda c: c.duration_s, reverse=True)
        fps = self.model.frames_per_second
        for start in range(0, len(ordered), size):
            stack = ordered[start : start + size]
            started = time.perf_counter()
            features = np.stack([self._features_of(c) for c in stack])
            encoder_output, outputs = self._pipeline.generate_segment_batched(features, tokenizer, options)
            for chunk, output in zip(stack, outputs, strict=True):
                chunk.tokens = list(output["tokens"])
                chunk.avg_logprob = float(output["avg_logprob"])
                chunk.no_speech_prob = float(output["no_speech_prob"])
                chunk.silent = self._is_silent(chunk)
                chunk.alignment = []
            if options.word_timestamps:
                text_tokens = [[] if c.silent else [t for t in c.tokens if t < tokenizer.eot] for c in stack]
                if any(text_tokens):
                    num_frames = [int(math.ceil(c.duration_s) * fps) for c in stack]
                    alignments = self.model.find_alignment(tokenizer, text_tokens, encoder_output, num_frames)
                    for chunk, alignment in zip(stack, alignments, strict=True):
                        chunk.alignment = alignment
            share = _ms(time.perf_counter() - started) / len(stack)
            for chunk in stack:
                owners = chunk.owners()
                for owner in owners:
                    owner.inference_ms += share / len(owners)

    def _stopped_early(self, chunk: _Chunk) -> bool:
        """Whether the one-pass decode of ``chunk`` ended before its speech did (the decoder emitted end-of-text
        while speech went on). The chunk holds speech only (VAD's regions joined), so its decoded words should
        reach its end, and start at its start. Signs, from the word alignment: the last word ends
        ``redecode_tail_s`` or more before the chunk does, the first word starts that long or more after the chunk
        does (the decoder passed over the opening speech), or one word lasts longer than that (the alignment
        stretches the last words it has over speech it has no words for). A member of a packed window (its
        ``packed_with`` > 0) has stopped early too when it got no words, or fewer than one word per
        ``redecode_tail_s`` of its speech (the decoder can pass over a whole answer of a window but for a stray
        word). Never for a silent chunk or without word timestamps."""
        if chunk.silent or not self.settings.word_timestamps:
            return False
        if not chunk.alignment:
            return chunk.packed_with > 0
        tail = self.settings.redecode_tail_s
        first_start = min(float(word["start"]) for word in chunk.alignment)
        last_end = max(float(word["end"]) for word in chunk.alignment)
        longest = max(float(word["end"]) - float(word["start"]) for word in chunk.alignment)
        sparse = chunk.packed_with > 0 and len(chunk.alignment) * tail < chunk.duration_s
        return chunk.duration_s - last_end >= tail or first_start >= tail or longest >= tail or sparse

    def _redecode(self, chunk: _Chunk, samples: npt.NDArray[np.float32], tokenizer: Tokenizer) -> None:
        """Decode ``chunk`` again with faster-whisper's sequential decoder (``WhisperModel.transcribe``: timestamp
        tokens, and a seek past the last timestamp after each window, so an early end-of-text does not end the
        transcript), with the baseline's decoding choices (:meth:`TranscriptionSettings.transcribe_kwargs`: beam,
        temperature, prompt, no-speech rule), the chunk's language, and no VAD since the chunk is speech only.
        Its segments, with words on the chunk's speech-only timeline, replace the first decode's
        (``chunk.redecoded``)."""
        started = time.perf_counter()
        options = {
            **self.settings.transcribe_kwargs(),
            "language": tokenizer.language_code,
            "word_timestamps": True,
            "vad_filter": False,
            "vad_parameters": None,
            "prepend_punctuations": _PREPEND_PUNCTUATIONS,
            "append_punctuations": _APPEND_PUNCTUATIONS,
        }
        segments, _info = self.model.transcribe(samples, **options)
        chunk.redecoded = [
            {
                "text": segment.text,
                "start": chunk.offset_s + segment.start,
                "end": chunk.offset_s + segment.end,
                "words": [
                    {
                        "word": word.word,
                        "start": chunk.offset_s + word.start,
                        "end": chunk.offset_s + word.end,
                        "probability": word.probability,
                    }
                    for word in segment.words or ()
                ],
            }
            for segment in segments
        ]
        for owner in chunk.owners():
            owner.inference_ms += _ms(time.perf_counter() - started)

    def _is_silent(self, chunk: _Chunk) -> bool:
        """Whisper's no-speech rule, as in ``WhisperModel.generate_segments``."""
        threshold = self.settings.no_speech_threshold
        if threshold is None or chunk.no_speech_prob <= threshold:
            return False
        bound = self.settings.log_prob_threshold
        return bound is None or chunk.avg_logprob <= bound

    def _assemble(
        self, message: _Message, batch_size: int, batch_inference_ms: float
    ) -> TranscriptionResult | TranscriptionFailure:
        """Map one message's decoded chunks back to its original timeline."""
        tokenizer = self._tokenizer(message.language)
        fps = self.model.frames_per_second
        duration = message.item.duration_s
        timings = EngineTimings(
            vad_ms=message.vad_ms,
            features_ms=message.features_ms,
            inference_ms=round(message.inference_ms, 3),
            batch_inference_ms=batch_inference_ms,
        )

        # Chunk-level segments in the shape BatchedInferencePipeline.forward builds.
        decoded: list[tuple[_Chunk, list[dict[str, Any]]]] = []
        for chunk in message.chunks:
            if chunk.redecoded is not None:
                decoded.append((chunk, chunk.redecoded))
                continue
            if chunk.silent or not tokenizer.decode(chunk.tokens).strip():
                continue
            segment_size = int(math.ceil(chunk.duration_s) * fps)
            subsegments, _, _ = self.model._split_segments_by_timestamps(
                tokenizer=tokenizer,
                tokens=chunk.tokens,
                time_offset=chunk.offset_s,
                segment_size=segment_size,
                segment_duration=chunk.duration_s,
                seek=0,
            )
            decoded.append(
                (
                    chunk,
                    [
                        {
                            "text": tokenizer.decode(sub["tokens"]),
                            "tokens": sub["tokens"],
                            "start": sub["start"],
                            "end": sub["end"],
                            "seek": int(chunk.offset_s * fps),
                            "avg_logprob": chunk.avg_logprob,
                            "no_speech_prob": chunk.no_speech_prob,
                            "compression_ratio": get_compression_ratio(tokenizer.decode(sub["tokens"])),
                        }
                        for sub in subsegments
                    ],
                )
            )
        if not decoded:
            return TranscriptionFailure(message.item.id, NO_SPEECH, duration, timings)

        aligned = [(chunk, subsegments) for chunk, subsegments in decoded if chunk.redecoded is None]
        if self.settings.word_timestamps and aligned:
            WhisperModel.add_word_timestamps(
                _PrecomputedAlignment(fps, [chunk.alignment for chunk, _ in aligned]),  # type: ignore[arg-type]
                [subsegments for _, subsegments in aligned],
                tokenizer,
                None,
                [int(math.ceil(chunk.duration_s) * fps) for chunk, _ in aligned],
                _PREPEND_PUNCTUATIONS,
                _APPEND_PUNCTUATIONS,
                0.0,
            )

        ts_map = SpeechTimestampsMap(message.speech, TARGET_SAMPLE_RATE)
        segments: list[DecodedSegment] = []
        words: list[Word] = []
        word_chunks: list[_Chunk] = []
        for chunk, subsegments in decoded:
            for sub in subsegments:
                sub_words = sub.get("words") or []
                if not self.settings.word_timestamps or not sub_words:
                    start = _clamp(ts_map.get_original_time(sub["start"]), duration)
                    end = _clamp(ts_map.get_original_time(sub["end"], is_end=True), duration)
                    segments.append(
                        DecodedSegment(start, max(start, end), sub["text"], chunk.avg_logprob, chunk.no_speech_prob)
                    )
                    continue
                # Words restored to the original timeline (as restore_speech_timestamps does: both
                # ends in the VAD region of the word's midpoint); segments are built after refinement.
                for word in sub_words:
                    region = ts_map.get_chunk_index((word["start"] + word["end"]) / 2)
                    start = _clamp(ts_map.get_original_time(word["start"], region), duration)
                    end = _clamp(ts_map.get_original_time(word["end"], region), duration)
                    timing = Word(word["word"], start, max(start, end), round(float(word["probability"]), 4))
                    words.append(timing)
                    word_chunks.append(chunk)

        if self.settings.snap_words_to_silence and words:
            words = snap_to_silences(words, message.item.audio, TARGET_SAMPLE_RATE)
        hesitations = None
        if self.settings.hesitation_detection:
            regions = [(r["start"] / TARGET_SAMPLE_RATE, r["end"] / TARGET_SAMPLE_RATE) for r in message.speech]
            words, hesitations = hear(
                message.item.audio,
                words,
                regions,
                sample_rate=TARGET_SAMPLE_RATE,
                settings=self._hesitation_settings,
                voicing=message.voicing,
            )
        sentence: list[Word] = []
        for index, (timing, chunk) in enumerate(zip(words, word_chunks, strict=True)):
            sentence.append(timing)
            chunk_ends = index + 1 == len(words) or word_chunks[index + 1] is not chunk
            if timing.word.rstrip().endswith(_SENTENCE_END) or chunk_ends:
                segments.append(_sentence_segment(sentence, chunk))
                sentence = []
        segments.sort(key=lambda seg: seg.start)

        return TranscriptionResult(
            id=message.item.id,
            text="".join(sub["text"] for _, subsegments in decoded for sub in subsegments).strip(),
            language=message.language,
            language_probability=message.language_probability,
            duration_s=duration,
            speech_duration_s=sum(s["end"] - s["start"] for s in message.speech) / TARGET_SAMPLE_RATE,
            segments=segments,
            words=words,
            model_id=self.model_id,
            device=self.loaded.device,
            compute_type=self.loaded.compute_type,
            num_chunks=len(message.chunks),
            batch_size=batch_size,
            timings=timings,
            redecoded_chunks=sum(chunk.redecoded is not None for chunk in message.chunks),
            initial_prompt=self.settings.disfluency_prompt,
            unprompted_chunks=sum(chunk.unprompted for chunk in message.chunks),
            hesitations=hesitations,
            packed_with=max((chunk.packed_with for chunk in message.chunks), default=0),
        )

    # ------------------------------------------------------------------ helpers

    def _tokenizer(self, language: str) -> Tokenizer:
        tokenizer = self._tokenizers.get(language)
        if tokenizer is None:
            tokenizer = Tokenizer(self.model.hf_tokenizer, self._multilingual, task="transcribe", language=language)
            self._tokenizers[language] = tokenizer
        return tokenizer

    def _options(self, tokenizer: Tokenizer) -> TranscriptionOptions:
        """Decoding options as ``BatchedInferencePipeline.transcribe`` builds them."""
        s = self.settings
        return TranscriptionOptions(
            beam_size=s.beam_size,
            best_of=1,
            patience=1.0,
            length_penalty=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            log_prob_threshold=s.log_prob_threshold,
            no_speech_threshold=s.no_speech_threshold,
            compression_ratio_threshold=None,
            condition_on_previous_text=False,
            prompt_reset_on_temperature=0.5,
            temperatures=[s.temperature],
            initial_prompt=s.disfluency_prompt,
            prefix=None,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            without_timestamps=True,
            max_initial_timestamp=0.0,
            word_timestamps=s.word_timestamps,
            prepend_punctuations=_PREPEND_PUNCTUATIONS,
            append_punctuations=_APPEND_PUNCTUATIONS,
            multilingual=False,
            max_new_tokens=None,
            clip_timestamps=[],
            hallucination_silence_threshold=None,
            hotwords=None,
        )


SQUEEZED_RUN = 3
"""Consecutive words (punctuation aside) that the alignment gives less than one 20-ms frame each: the decoder wrote
words for which the audio has no time, as when it repeats a phrase it has just heard (Whisper's repetition
hallucination, which two answers with the same text in one window can set off)."""


def _squeezed(alignment: list[dict[str, Any]]) -> bool:
    """Whether ``alignment`` (faster-whisper's ``find_alignment`` words, seconds) holds :data:`SQUEEZED_RUN` words
    in a row that last under 0.02 s, words without a letter or digit skipped."""
    run = 0
    for word in alignment:
        if not any(character.isalnum() for character in str(word["word"])):
            continue
        run = run + 1 if float(word["end"]) - float(word["start"]) < 0.02 else 0
        if run >= SQUEEZED_RUN:
            return True
    return False


def _sentence_segment(words: list[Word], chunk: _Chunk) -> DecodedSegment:
    return DecodedSegment(
        words[0].start, words[-1].end, "".join(w.word for w in words), chunk.avg_logprob, chunk.no_speech_prob
    )


def _clamp(value: float, duration: float) -> float:
    return round(min(max(float(value), 0.0), duration), 3)
