"""Hesitations heard in the audio that the recognised words do not show (issue 18).

Whisper leaves out filled pauses ("um", "uh") unless its prompt shows them, and a held sound ("is, uhhhh, the")
can come back as words that were never said ("the the the"). :func:`find_hesitations` looks for both, from the
audio, the words with their timings and the VAD speech regions:

* **voiced gaps** (``kind="voiced_gap"``): stretches inside VAD speech that no word covers (each word widened by
  :attr:`HesitationSettings.word_margin_s`) where the signal is voiced for at least
  :attr:`HesitationSettings.min_voiced_gap_s`: an unrecognised filled pause or a lengthened sound. Words the
  recogniser did emit, filled pauses included, cover their own time, so a transcribed "um" is never reported
  again here; nor is a voiced stretch next to a recognised filled pause (within
  :attr:`HesitationSettings.filler_reach_s`): Whisper often misplaces a filler's timing beside the sound it heard.
* **held sounds** (``kind="held_sound"``): runs of at least :attr:`HesitationSettings.held_min_words` consecutive
  identical words (normalised with :func:`flows.metrics.word_tokens`) that are each shorter than
  :attr:`HesitationSettings.held_max_word_s` and less probable than :attr:`HesitationSettings.held_max_probability`,
  close together in time: the recogniser's way of spelling one held sound. The span runs from the first word's
  start to the last word's end.

Voicing is the normalised autocorrelation method of Boersma (1993, "Accurate short-term analysis of the fundamental
frequency and the harmonics-to-noise ratio of a sampled sound", Proc. Institute of Phonetic Sciences 17, 97-110),
the voicing decision of Praat's pitch tracker, without its path finder: each 40 ms Hann-windowed frame (10 ms hop)
is autocorrelated (FFT), divided by the window's own autocorrelation, and its highest peak at a lag inside the pitch
range (:attr:`HesitationSettings.min_pitch_hz` .. :attr:`HesitationSettings.max_pitch_hz`) is the frame's
periodicity strength (1 = perfectly periodic). A frame is voiced when the strength reaches
:attr:`HesitationSettings.voicing_threshold` (Praat's default 0.45) and its energy is no more than
:attr:`HesitationSettings.energy_below_peak_db` below the clip's speech level (95th percentile of frame energies):
silence, breath and noise are not. numpy only; why not librosa's ``pyin`` and what this costs: ``bench/RESULTS.md``,
"Fluency".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.metrics import word_tokens
from flows.metrics.lexicon import filled_pause_form
from schemas.events import HesitationSpan, Word

__all__ = ["HesitationSettings", "Voicing", "frame_voicing", "find_hesitations", "voiced_gaps", "held_sounds"]

FRAME_S = 0.04
"""Analysis window in seconds: three periods of the lowest pitch (75 Hz), as Boersma (1993) advises."""
HOP_S = 0.01
"""Hop between analysis frames in seconds (the time resolution of voiced gaps)."""
MAX_HOLE_S = 0.03
"""Unvoiced holes up to this long inside a voiced stretch are bridged (a creaky or breathy frame or two)."""
HELD_MAX_GAP_S = 0.3
"""Words of a held-sound run are at most this far apart (end of one to start of the next)."""
CONFIDENCE_TIME_S = 0.3
"""A voiced gap's confidence is its mean strength times ``1 - exp(-duration / CONFIDENCE_TIME_S)``."""


class HesitationSettings(BaseSettings):
    """Thresholds of the hesitation detector; frozen, read from ``COACH_HESITATION_*`` variables."""

    model_config = SettingsConfigDict(
        env_prefix="COACH_HESITATION_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    word_margin_s: float = Field(default=0.05, ge=0.0, le=0.5)
    """Seconds on each side of a recognised word that count as covered by it (word timings are approximate)"""
    min_voiced_gap_s: float = Field(default=0.15, gt=0.0)
    """Shortest uncovered voiced stretch reported as a voiced gap, seconds"""
    voicing_threshold: float = Field(default=0.45, gt=0.0, lt=1.0)
    """Periodicity strength (normalised autocorrelation peak, 0..1) from which a frame is voiced"""
    energy_below_peak_db: float = Field(default=30.0, gt=0.0)
    """A voiced frame is at most this many dB below the clip's speech level (95th percentile of frame energies)"""
    min_pitch_hz: float = Field(default=75.0, gt=0.0)
    """Lowest fundamental frequency searched, Hz (the 40 ms frame holds three periods of 75 Hz)"""
    max_pitch_hz: float = Field(default=500.0, gt=0.0)
    """Highest fundamental frequency searched, Hz"""
    filler_reach_s: float = Field(default=0.3, ge=0.0)
    """A voiced gap this close (seconds, edge to edge) to a recognised filled pause ("um", "uh": the
    flows.metrics lexicon) is taken to be that filler, whose word timing is off, and is not reported"""
    held_max_word_s: float = Field(default=0.2, gt=0.0)
    """A word of a held-sound run is shorter than this, seconds"""
    held_max_probability: float = Field(default=0.5, gt=0.0, le=1.0)
    """A word of a held-sound run has a recogniser probability below this"""
    held_min_words: int = Field(default=2, ge=2)
    """Fewest identical short, improbable words in a row that make a held sound"""

    @model_validator(mode="after")
    def _pitch_range(self) -> HesitationSettings:
        if self.max_pitch_hz <= self.min_pitch_hz:
            raise ValueError(f"max_pitch_hz ({self.max_pitch_hz}) must exceed min_pitch_hz ({self.min_pitch_hz})")
        if self.min_pitch_hz < 3 / FRAME_S:
            raise ValueError(f"min_pitch_hz below {3 / FRAME_S:g} Hz needs a longer analysis frame than {FRAME_S} s")
        return self


@dataclass(frozen=True, slots=True)
class Voicing:
    """Frame-wise voicing of a clip: frame ``i`` is centred at ``times[i]`` seconds (covering ``times[i] ± hop/2``
    for the masks built from it); ``strength`` is the periodicity strength in [0, 1], ``energy_db`` the frame's
    mean-square energy in dB (floor -120), ``voiced`` the decision. All arrays have shape ``(n_frames,)``."""

    times: npt.NDArray[np.float64]
    strength: npt.NDArray[np.float64]
    energy_db: npt.NDArray[np.float64]
    voiced: npt.NDArray[np.bool_]
    hop_s: float


def frame_voicing(
    audio: npt.NDArray[np.floating], sample_rate: int = 16000, settings: HesitationSettings | None = None
) -> Voicing:
    """Voicing of every 40 ms frame (10 ms hop) of ``audio`` (1-D float mono at ``sample_rate``), see the module
    docstring. A clip shorter than one frame gives empty arrays.

    Raises:
        ValueError: ``audio`` is not one-dimensional, or the pitch range does not fit the sample rate.
    """
    settings = settings or HesitationSettings()
    signal = np.asarray(audio, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {signal.shape}")
    win = int(round(FRAME_S * sample_rate))
    hop = int(round(HOP_S * sample_rate))
    min_lag = max(1, int(math.floor(sample_rate / settings.max_pitch_hz)))
    max_lag = int(math.ceil(sample_rate / settings.min_pitch_hz))
    if max_lag >= win // 2 + 1:
        raise ValueError(
            f"pitch range {settings.min_pitch_hz}-{settings.max_pitch_hz} Hz does not fit {sample_rate} Hz"
        )
    if signal.size < win:
        empty = np.zeros(0)
        return Voicing(empty, empty, empty, np.zeros(0, dtype=bool), HOP_S)
    frames = np.lib.stride_tricks.sliding_window_view(signal, win)[::hop]
    energy_db = 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)
    window = np.hanning(win)
    n_fft = 1 << (2 * win - 1).bit_length()
    window_ac = np.fft.irfft(np.abs(np.fft.rfft(window, n_fft)) ** 2, n_fft)[: max_lag + 1]
    window_ac /= window_ac[0]
    strength = np.zeros(frames.shape[0])
    for lo in range(0, frames.shape[0], 512):  # blocks bound the temporary arrays
        block = frames[lo : lo + 512]
        centred = (block - block.mean(axis=1, keepdims=True)) * window
        ac = np.fft.irfft(np.abs(np.fft.rfft(centred, n_fft, axis=1)) ** 2, n_fft, axis=1)[:, : max_lag + 1]
        zero = ac[:, 0]
        valid = zero > 1e-20
        ratio = np.zeros((block.shape[0], max_lag + 1 - min_lag))
        ratio[valid] = ac[valid, min_lag:] / zero[valid, None] / window_ac[None, min_lag:]
        strength[lo : lo + 512] = np.clip(ratio.max(axis=1), 0.0, 1.0)
    level = float(np.percentile(energy_db, 95))
    voiced = (strength >= settings.voicing_threshold) & (energy_db >= level - settings.energy_below_peak_db)
    times = (np.arange(frames.shape[0]) * hop + win / 2) / sample_rate
    return Voicing(times, strength, energy_db, voiced, HOP_S)


def voiced_gaps(
    voicing: Voicing,
    words: Sequence[Word],
    speech: Sequence[tuple[float, float]],
    settings: HesitationSettings | None = None,
) -> list[HesitationSpan]:
    """The ``voiced_gap`` spans of :func:`find_hesitations` from a precomputed :class:`Voicing`."""
    settings = settings or HesitationSettings()
    times = voicing.times
    if times.size == 0:
        return []
    inside = np.zeros(times.size, dtype=bool)
    for start, end in speech:
        inside |= (times >= start) & (times < end)
    covered = np.zeros(times.size, dtype=bool)
    margin = settings.word_margin_s
    for word in words:
        covered |= (times >= word.start - margin) & (times <= word.end + margin)
    free = inside & ~covered
    candidate = free & voicing.voiced
    # Bridge short unvoiced holes that are themselves free (never across a word).
    max_hole = int(round(MAX_HOLE_S / voicing.hop_s))
    merged: list[tuple[int, int]] = []
    for lo, hi in _runs(candidate):
        if merged and lo - merged[-1][1] <= max_hole and free[merged[-1][1] : lo].all():
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    min_frames = settings.min_voiced_gap_s / voicing.hop_s - 1e-9
    fillers = [(w.start, w.end) for w in words if _is_filled_pause(w.word)]
    reach = settings.filler_reach_s
    spans = []
    for lo, hi in merged:
        if hi - lo < min_frames:
            continue
        span = _gap_span(voicing, lo, hi)
        if not any(start - reach <= span.end and span.start <= end + reach for start, end in fillers):
            spans.append(span)
    return spans


def _is_filled_pause(text: str) -> bool:
    tokens = word_tokens(text)
    return bool(tokens) and all(filled_pause_form(t) is not None for t in tokens)


def _gap_span(voicing: Voicing, lo: int, hi: int) -> HesitationSpan:
    half = voicing.hop_s / 2
    start = max(0.0, float(voicing.times[lo]) - half)
    end = float(voicing.times[hi - 1]) + half
    strength = float(np.mean(voicing.strength[lo:hi]))
    confidence = strength * (1.0 - math.exp(-(end - start) / CONFIDENCE_TIME_S))
    return HesitationSpan(start=round(start, 3), end=round(end, 3), kind="voiced_gap", confidence=round(confidence, 3))


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of the True runs of ``mask``."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def held_sounds(words: Sequence[Word], settings: HesitationSettings | None = None) -> list[HesitationSpan]:
    """The ``held_sound`` spans of :func:`find_hesitations` (words only, no audio needed).

    Confidence: ``1 - mean probability`` of the run's words, times ``min(1, (n - 1) / 2)`` for a run of ``n``.
    """
    settings = settings or HesitationSettings()
    spans: list[HesitationSpan] = []
    run: list[Word] = []
    key: str | None = None

    def close() -> None:
        if len(run) >= settings.held_min_words:
            mean_p = sum(w.probability for w in run) / len(run)
            confidence = (1.0 - mean_p) * min(1.0, (len(run) - 1) / 2)
            spans.append(
                HesitationSpan(
                    start=round(run[0].start, 3), end=round(run[-1].end, 3), kind="held_sound", confidence=confidence
                )
            )

    for word in words:
        tokens = word_tokens(word.word)
        short = (
            len(tokens) == 1
            and word.end - word.start < settings.held_max_word_s
            and word.probability < settings.held_max_probability
        )
        if short and run and tokens[0] == key and word.start - run[-1].end <= HELD_MAX_GAP_S:
            run.append(word)
            continue
        close()
        run, key = ([word], tokens[0]) if short else ([], None)
    close()
    return spans


def find_hesitations(
    audio: npt.NDArray[np.floating],
    words: Sequence[Word],
    speech: Sequence[tuple[float, float]],
    *,
    sample_rate: int = 16000,
    settings: HesitationSettings | None = None,
) -> list[HesitationSpan]:
    """Voiced gaps and held sounds of one recording, in order of start (see the module docstring).

    Args:
        audio: float mono samples at ``sample_rate`` (what :func:`transcription.audio.decode_audio` gives), shape
            ``(n_samples,)``.
        words: the recognised words (:class:`schemas.events.Word`, seconds on the same timeline), in time order.
        speech: VAD speech regions as ``(start_s, end_s)`` pairs; voicing outside them is ignored.
        sample_rate: Hz.
        settings: thresholds; default ``HesitationSettings()`` (environment).

    Returns:
        :class:`schemas.events.HesitationSpan` list (possibly empty), sorted by ``start``.

    Raises:
        ValueError: ``audio`` is not one-dimensional.
    """
    settings = settings or HesitationSettings()
    spans = voiced_gaps(frame_voicing(audio, sample_rate, settings), words, speech, settings)
    spans += held_sounds(words, settings)
    return sorted(spans, key=lambda span: (span.start, span.end))
