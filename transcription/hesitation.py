"""Hesitations heard in the audio that the recognised words do not show (issue 18).

Whisper leaves out filled pauses ("um", "uh") unless its prompt shows them, and a held sound ("is, uhhhh, the")
can come back as words that were never said ("the the the"). :func:`hear` looks for both, from the
audio, the words with their timings and the VAD speech regions:

* **retimed fillers** (:func:`retime_filled_pauses`): Whisper's cross-attention timing often puts a transcribed
  "um" hundreds of milliseconds away from its sound and stretches a neighbouring word over it. Each recognised
  filled pause is moved onto the nearest *steady* voiced stretch (voiced, with little spectral change:
  :func:`steady_stretches`), and its neighbours are trimmed, so that its time is the sound's and pauses next to it
  are measured right.
* **voiced gaps** (``kind="voiced_gap"``), found two ways and merged where they overlap:
  stretches inside VAD speech that no word covers (each word widened by :attr:`HesitationSettings.word_margin_s`)
  where the signal is voiced for at least :attr:`HesitationSettings.min_voiced_gap_s`; and *isolated steady
  segments*: a voiced sound with a pause on both sides (:attr:`HesitationSettings.isolation_min_s`), mostly
  steady (:attr:`HesitationSettings.steady_min_share`), that no recognised one-syllable word lies in (an "a" or
  "I" sounds just like "uh"). The second finds the fillers Whisper leaves out, prompt or not: it stretches a
  neighbouring word over the sound, so coverage alone never sees them. Neither is reported next to a recognised
  filled pause (within :attr:`HesitationSettings.filler_reach_s` of the retimed filler), so a transcribed "um"
  is never counted again.
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
"Fluency". Steadiness is the spectral flux of Whisper's log-mel features (:func:`spectral_flux`): a filled pause
keeps its fundamental frequency and spectral envelope nearly constant, the cue of Goto, Itou & Hayamizu (1999).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.metrics import syllable_count, word_tokens
from flows.metrics.lexicon import filled_pause_form
from schemas.events import HesitationSpan, Word

__all__ = [
    "HesitationSettings",
    "Voicing",
    "frame_voicing",
    "spectral_flux",
    "steady_stretches",
    "retime_filled_pauses",
    "Heard",
    "hear",
    "voiced_gaps",
    "held_sounds",
]

FRAME_S = 0.04
"""Analysis window in seconds: three periods of the lowest pitch (75 Hz), as Boersma (1993) advises."""
HOP_S = 0.01
"""Hop between analysis frames in seconds (the time resolution of voiced gaps)."""
MAX_HOLE_S = 0.03
"""Unvoiced holes up to this long inside a voiced stretch are bridged (a creaky or breathy frame or two)."""
HELD_MAX_GAP_S = 0.3
"""Words of a held-sound run are at most this far apart (end of one to start of the next)."""
PHRASE_FINAL_LENGTHENING = 1.5
"""How much longer a word at the end of a phrase may be than :attr:`HesitationSettings.explain_max_word_s`:
syllables before a phrase boundary are lengthened (Wightman, Shattuck-Hufnagel, Ostendorf & Price 1992,
"Segmental durations in the vicinity of prosodic phrase boundaries", JASA 91(3), 1707-1717)."""
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
    steady_max_flux: float = Field(default=0.08, gt=0.0)
    """A voiced frame is steady when its spectral flux (mean absolute change of Whisper's normalised log-mel
    bands from one 10 ms frame to the next, averaged over 50 ms) is below this"""
    steady_min_s: float = Field(default=0.12, gt=0.0)
    """Shortest steady voiced stretch that can hold a filled pause, seconds"""
    steady_min_share: float = Field(default=0.5, gt=0.0, le=1.0)
    """An isolated voiced segment (silence on both sides) is a filled pause when at least this share of its frames
    is steady and no recognised word lies mostly inside it"""
    isolated_max_s: float = Field(default=2.0, gt=0.0)
    """Longest isolated segment considered a filled pause, seconds"""
    isolation_min_s: float = Field(default=0.05, ge=0.0)
    """An isolated segment has at least this much quieter signal (seconds) on each side (the clip's edge counts);
    shorter dips are the closures of stop consonants inside words"""
    explain_max_word_s: float = Field(default=0.4, gt=0.0)
    """A recognised one-syllable word at most this long (seconds) that lies in an isolated steady segment is
    taken to be its sound ("a", "I"), so the segment is no filled pause; a word before punctuation (the end of a
    phrase) may be :data:`PHRASE_FINAL_LENGTHENING` times longer"""
    filler_search_s: float = Field(default=1.0, ge=0.0)
    """A recognised filled pause is moved onto the nearest steady voiced stretch whose centre lies at most this
    far (seconds) from the word's centre; 0 keeps the recogniser's timing"""

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
    flux: npt.NDArray[np.float64] | None = None
    """Spectral flux at each frame (see :func:`spectral_flux`); ``None`` when not computed"""


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
    n_fft = 1 << (win + max_lag).bit_length()  # no circular wrap at lags <= max_lag
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
    return Voicing(times, strength, energy_db, voiced, HOP_S, spectral_flux(signal, sample_rate, times))


def spectral_flux(
    audio: npt.NDArray[np.floating], sample_rate: int, times: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Spectral flux of ``audio`` at ``times`` (seconds, shape ``(n,)``), shape ``(n,)``: the mean absolute change
    of the 80 log-mel bands Whisper sees (``faster_whisper.feature_extractor.FeatureExtractor``: 25 ms window,
    10 ms hop, log10 clamped 8 below the clip's maximum, scaled by 1/4) between consecutive frames, averaged over
    five frames (50 ms). Low flux over a voiced stretch is a steady spectral envelope, the mark of a filled pause:
    Goto, Itou & Hayamizu (1999), "A real-time filled pause detection system for spontaneous speech
    recognition", Proc. Eurospeech, 227-230 (small fundamental-frequency and spectral-envelope change)."""
    from faster_whisper.feature_extractor import FeatureExtractor

    if times.size == 0:
        return np.zeros(0)
    features = np.asarray(FeatureExtractor(feature_size=80, sampling_rate=sample_rate)(audio), dtype=np.float64)
    change = np.concatenate(([0.0], np.abs(np.diff(features, axis=1)).mean(axis=0)))
    smoothed = np.convolve(change, np.ones(5) / 5, mode="same")
    frame_times = np.arange(smoothed.size) * (160 / sample_rate)  # frame j is centred at j hops
    return np.asarray(np.interp(times, frame_times, smoothed), dtype=np.float64)


def steady_stretches(voicing: Voicing, settings: HesitationSettings | None = None) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of the runs of voiced frames whose spectral flux is below
    :attr:`HesitationSettings.steady_max_flux`, at least :attr:`HesitationSettings.steady_min_s` long, in time
    order; each is widened by the flux's averaging half-width (20 ms) on both sides. Empty without flux."""
    settings = settings or HesitationSettings()
    if voicing.flux is None or voicing.times.size == 0:
        return []
    steady = voicing.voiced & (voicing.flux < settings.steady_max_flux)
    min_frames = settings.steady_min_s / voicing.hop_s - 1e-9
    half = voicing.hop_s / 2 + 0.02
    return [
        (max(0.0, float(voicing.times[lo]) - half), float(voicing.times[hi - 1]) + half)
        for lo, hi in _runs(steady)
        if hi - lo >= min_frames
    ]


def retime_filled_pauses(
    voicing: Voicing, words: Sequence[Word], settings: HesitationSettings | None = None
) -> list[Word]:
    """``words`` with each recognised filled pause ("um", "uh": :func:`flows.metrics.lexicon.filled_pause_form`)
    moved onto the steady voiced stretch (:func:`steady_stretches`) nearest to it, where one lies within
    :attr:`HesitationSettings.filler_search_s` (centre to centre), between the start of the word two before
    and the end of the word two after, and that no other recognised word explains (a one-syllable word lying in
    it, see :func:`voiced_gaps`). A stretch the filler already covers for at least half comes first, then one that
    the word just before or after it is stretched over (:func:`_stretched_over`), nearer or not. Each stretch takes
    at most one filler. Whisper's cross-attention timing often puts a filler hundreds of milliseconds off and lets
    a neighbouring word cover the sound; the words before the moved filler are cut to end at its start, those
    after it to start at its end, so that times stay in word order and no word overlaps the filler (each keeps
    ``start <= end``). Word order and text are unchanged; a filler without a stretch near it keeps its timing.
    Raises nothing."""
    settings = settings or HesitationSettings()
    out = list(words)
    if settings.filler_search_s <= 0 or not any(_is_filled_pause(w.word) for w in out):
        return out
    free = steady_stretches(voicing, settings)
    for index, word in enumerate(out):
        if not _is_filled_pause(word.word):
            continue
        lower = out[index - 2].start if index >= 2 else 0.0
        upper = out[index + 2].end if index + 2 < len(out) else math.inf
        centre = (word.start + word.end) / 2
        neighbours = [out[j] for j in (index - 1, index + 1) if 0 <= j < len(out)]
        near = [
            (
                _priority(word, neighbours, start, end, settings),
                abs((start + end) / 2 - centre),
                start,
                end,
            )
            for start, end in free
            if start >= lower
            and end <= upper
            and abs((start + end) / 2 - centre) <= settings.filler_search_s
            and not any(_explains(other, start, end, settings) for other in out)
        ]
        if not near:
            continue
        _, _, start, end = min(near)
        free.remove((start, end))
        start, end = round(start, 3), round(end, 3)
        out[index] = word._replace(start=start, end=end)
        for before in range(index):
            if out[before].end > start:
                out[before] = out[before]._replace(start=min(out[before].start, start), end=start)
        for after in range(index + 1, len(out)):
            if out[after].start < end:
                out[after] = out[after]._replace(start=end, end=max(out[after].end, end))
    return out


def voiced_gaps(
    voicing: Voicing,
    words: Sequence[Word],
    speech: Sequence[tuple[float, float]],
    settings: HesitationSettings | None = None,
    retimed: Sequence[Word] | None = None,
) -> list[HesitationSpan]:
    """The ``voiced_gap`` spans of :func:`hear` from a precomputed :class:`Voicing`: voiced stretches
    that the recogniser's ``words`` leave uncovered, and isolated steady segments that no word explains, merged
    where they overlap. ``retimed``: the words after :func:`retime_filled_pauses` (default ``words``), which place
    the recognised fillers whose neighbourhood is not reported and explain isolated segments; coverage is judged
    on the recogniser's own timing, since the trimmed neighbours of a moved filler would leave false gaps."""
    settings = settings or HesitationSettings()
    placed = words if retimed is None else retimed
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
    fillers = [(w.start, w.end) for w in placed if _is_filled_pause(w.word)]
    reach = settings.filler_reach_s
    spans = [_gap_span(voicing, lo, hi) for lo, hi in merged if hi - lo >= min_frames]
    spans += _isolated_steady(voicing, inside, placed, settings)
    kept: list[HesitationSpan] = []
    for span in sorted(spans, key=lambda span: (span.start, span.end)):
        if any(start - reach <= span.end and span.start <= end + reach for start, end in fillers):
            continue
        if kept and span.start <= kept[-1].end:  # the two searches found the same sound
            last = kept[-1]
            kept[-1] = last.model_copy(
                update={"end": max(last.end, span.end), "confidence": max(last.confidence, span.confidence)}
            )
            continue
        kept.append(span)
    return kept


def _isolated_steady(
    voicing: Voicing, inside: npt.NDArray[np.bool_], words: Sequence[Word], settings: HesitationSettings
) -> list[HesitationSpan]:
    """Voiced gaps that the recogniser's timing hides: segments of frames within
    :attr:`HesitationSettings.energy_below_peak_db` of the speech level, with at least
    :attr:`HesitationSettings.isolation_min_s` of quieter frames (a pause) on both sides,
    :attr:`HesitationSettings.min_voiced_gap_s` to :attr:`HesitationSettings.isolated_max_s` long, inside VAD
    speech, of which at least :attr:`HesitationSettings.steady_min_share` of the frames are voiced and steady
    (:attr:`HesitationSettings.steady_max_flux`), and that no recognised word explains (:func:`_explains`).
    Whisper stretches a neighbouring word over a filler it leaves out, so such a word straddles the segment rather
    than lying in it. Confidence: the steady share."""
    if voicing.flux is None or voicing.times.size == 0:
        return []
    level = float(np.percentile(voicing.energy_db, 95))
    loud = voicing.energy_db >= level - settings.energy_below_peak_db
    steady = voicing.voiced & (voicing.flux < settings.steady_max_flux)
    half = voicing.hop_s / 2
    quiet = int(math.ceil(settings.isolation_min_s / voicing.hop_s - 1e-9))
    runs = _runs(loud)
    spans = []
    for index, (lo, hi) in enumerate(runs):
        before = lo - runs[index - 1][1] if index > 0 else quiet
        after = runs[index + 1][0] - hi if index + 1 < len(runs) else quiet
        start, end = max(0.0, float(voicing.times[lo]) - half), float(voicing.times[hi - 1]) + half
        if min(before, after) < quiet or not inside[lo:hi].all():
            continue
        if not settings.min_voiced_gap_s - 1e-9 <= end - start <= settings.isolated_max_s:
            continue
        share = float(steady[lo:hi].mean())
        if share < settings.steady_min_share or any(_explains(w, start, end, settings) for w in words):
            continue
        spans.append(
            HesitationSpan(start=round(start, 3), end=round(end, 3), kind="voiced_gap", confidence=round(share, 3))
        )
    return spans


def _phrase_final(text: str) -> bool:
    return text.rstrip().endswith((".", ",", "?", "!", ";", ":"))


def _explains(word: Word, start: float, end: float, settings: HesitationSettings) -> bool:
    """Whether ``word`` could be the sound of the steady segment ``[start, end]``: a word of one syllable
    (:func:`flows.metrics.syllable_count`; not a filled pause) no longer than
    :attr:`HesitationSettings.explain_max_word_s`, at least half inside the segment, with its midpoint in it. A
    longer word has sounds that are not steady; a word stretched over much more than one syllable's time is
    Whisper's stretch over a filler it left out."""
    tokens = word_tokens(word.word)
    duration = word.end - word.start
    if (
        len(tokens) != 1
        or filled_pause_form(tokens[0]) is not None
        or syllable_count(tokens[0]) > 1
        or duration > settings.explain_max_word_s * (PHRASE_FINAL_LENGTHENING if _phrase_final(word.word) else 1.0)
        or not start <= (word.start + word.end) / 2 <= end
    ):
        return False
    return duration <= 0 or min(word.end, end) - max(word.start, start) >= duration / 2


def _priority(filler: Word, neighbours: Sequence[Word], start: float, end: float, settings: HesitationSettings) -> int:
    """Rank of the steady segment ``[start, end]`` as the sound of ``filler`` (lower first): 0 when the filler
    covers at least half of it, 1 when a neighbouring word is stretched over it (:func:`_stretched_over`), else 2."""
    if min(filler.end, end) - max(filler.start, start) >= (end - start) / 2:
        return 0
    return 1 if any(_stretched_over(other, start, end, settings) for other in neighbours) else 2


def _stretched_over(word: Word, start: float, end: float, settings: HesitationSettings) -> bool:
    """Whether ``word`` (not a filled pause) covers at least half of the steady segment ``[start, end]`` and lasts
    longer than :attr:`HesitationSettings.explain_max_word_s` per syllable (1.5x before punctuation, as in
    :func:`_explains`): the alignment has stretched it over a sound it has no word for."""
    tokens = word_tokens(word.word)
    if not tokens or any(filled_pause_form(t) is not None for t in tokens):
        return False
    syllables = max(1, sum(syllable_count(t) for t in tokens))
    allowance = (
        settings.explain_max_word_s * syllables * (PHRASE_FINAL_LENGTHENING if _phrase_final(word.word) else 1.0)
    )
    covered = min(word.end, end) - max(word.start, start)
    return word.end - word.start > allowance and covered >= (end - start) / 2


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
    """The ``held_sound`` spans of :func:`hear` (words only, no audio needed).

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


class Heard(NamedTuple):
    """What :func:`hear` found in one recording: the words with the recognised filled pauses retimed
    (:func:`retime_filled_pauses`) and the hesitation spans, sorted by start."""

    words: list[Word]
    hesitations: list[HesitationSpan]


def hear(
    audio: npt.NDArray[np.floating],
    words: Sequence[Word],
    speech: Sequence[tuple[float, float]],
    *,
    sample_rate: int = 16000,
    settings: HesitationSettings | None = None,
    voicing: Voicing | None = None,
) -> Heard:
    """Retime the recognised filled pauses of one recording and find its voiced gaps and held sounds (see the module
    docstring). Held sounds are judged on the recogniser's words.

    Args:
        audio: float mono samples at ``sample_rate`` (what :func:`transcription.audio.decode_audio` gives), shape
            ``(n_samples,)``.
        words: the recognised words (:class:`schemas.events.Word`, seconds on the same timeline), in time order.
        speech: VAD speech regions as ``(start_s, end_s)`` pairs; voicing outside them is ignored.
        sample_rate: Hz.
        settings: thresholds; default ``HesitationSettings()`` (environment).
        voicing: :func:`frame_voicing` of ``audio`` with the same ``sample_rate`` and ``settings``, when the caller
            computed it already (the engine does, ahead of the batch); default: computed here.

    Returns:
        :class:`Heard`: the words, fillers retimed, and the :class:`schemas.events.HesitationSpan` list (possibly
        empty), sorted by ``start``.

    Raises:
        ValueError: ``audio`` is not one-dimensional.
    """
    settings = settings or HesitationSettings()
    if voicing is None:
        voicing = frame_voicing(audio, sample_rate, settings)
    retimed = retime_filled_pauses(voicing, words, settings)
    spans = voiced_gaps(voicing, words, speech, settings, retimed) + held_sounds(words, settings)
    return Heard(retimed, sorted(spans, key=lambda span: (span.start, span.end)))
