"""Refinement of Whisper word timestamps at pauses, from the audio's short-time energy.

Whisper's word timestamps come from cross-attention alignment (dynamic time warping over 20 ms frames)
and are often off at word boundaries (by how much: ``bench/RESULTS.md``, "Moved from docstrings"), which biases
silent-pause lengths. Runs of low-energy
frames in the audio are the pauses: word boundaries that fall into one are moved onto its edges; words
elsewhere keep Whisper's timestamps. This is the energy-based endpoint idea of Rabiner
& Sambur (1975, "An algorithm for determining the endpoints of isolated utterances"), applied the way
stable-ts's ``suppress_silence`` adjusts Whisper timestamps to detected silence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from schemas.events import Word

__all__ = ["frame_energy_db", "snap_to_silences"]


def frame_energy_db(audio: npt.NDArray[np.float32], sample_rate: int, frame_s: float) -> npt.NDArray[np.float64]:
    """Mean-square energy of consecutive frames of ``frame_s`` seconds, in dB (10·log10, floor -120 dB).

    Shape ``(n_frames,)`` with ``n_frames = len(audio) // frame_len``.
    """
    frame_len = max(1, int(round(sample_rate * frame_s)))
    n = len(audio) // frame_len
    if n == 0:
        return np.zeros(0)
    frames = np.asarray(audio[: n * frame_len], dtype=np.float64).reshape(n, frame_len)
    return np.asarray(10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-12))


def snap_to_silences(
    words: Sequence[Word],
    audio: npt.NDArray[np.float32],
    sample_rate: int = 16000,
    *,
    frame_s: float = 0.01,
    floor_margin_db: float = 6.0,
    max_below_peak_db: float = 35.0,
    min_below_peak_db: float = 15.0,
    min_silence_s: float = 0.15,
    edge_search_s: float = 0.5,
) -> list[Word]:
    """Return ``words`` (:class:`schemas.events.Word`, ``start``/``end`` in seconds) with boundaries at pauses refined.

    A frame is silent below an adaptive threshold: the noise floor (10th percentile of the clip's frame
    energies) plus ``floor_margin_db``, but at least ``max_below_peak_db`` and at most ``min_below_peak_db``
    below the speech level (95th percentile) — digital silence and a noisy room both work. Every silent run
    of at least ``min_silence_s`` inside the utterance is a pause: the last word starting before it ends where
    it starts, the next word (and any word Whisper placed inside the silence) starts where it ends. Words away
    from pauses keep Whisper's timestamps. Word order and text
    are unchanged; every word keeps ``start <= end``. The utterance's endpoints are refined too (Rabiner &
    Sambur's use): the first word starts at the first voiced frame within ``edge_search_s`` around its start,
    the last word ends at the last voiced frame within ``edge_search_s`` around its end (Whisper tends to
    start the first word early, in the leading silence).
    """
    energy = frame_energy_db(audio, sample_rate, frame_s)
    if not words or energy.size == 0:
        return list(words)
    peak, floor = float(np.percentile(energy, 95)), float(np.percentile(energy, 10))
    threshold = min(peak - min_below_peak_db, max(floor + floor_margin_db, peak - max_below_peak_db))
    silent = energy < threshold
    out = list(words)
    _snap_edges(out, silent, frame_s, edge_search_s)
    min_frames = max(1, int(round(min_silence_s / frame_s)))
    span_lo = int(out[0].start / frame_s)
    span_hi = int(out[-1].end / frame_s)
    for run_start, run_end in _runs(silent, span_lo, span_hi, min_frames):
        rs, re_ = run_start * frame_s, run_end * frame_s
        starts = [w.start for w in out]
        before = [i for i, st in enumerate(starts) if st < rs]
        if not before or before[-1] + 1 >= len(out):
            continue
        # The pause lies between the last word starting before it and the next one: the first ends where the
        # silence starts, the next (and any word Whisper put inside the silence) starts where it ends.
        b = before[-1]
        out[b] = out[b]._replace(end=round(max(starts[b], rs), 3))
        for i in range(b + 1, len(out)):
            if i > b + 1 and starts[i] >= re_:
                break
            end = out[i].end
            out[i] = out[i]._replace(start=round(re_, 3), end=round(max(re_, end), 3))
    return out


def _runs(silent: npt.NDArray[np.bool_], lo: int, hi: int, min_frames: int) -> list[tuple[int, int]]:
    """``[start, end)`` frame ranges of silent runs of at least ``min_frames`` inside ``[lo, hi)``."""
    runs, start = [], None
    for i in range(max(0, lo), min(silent.size, hi) + 1):
        value = i < min(silent.size, hi) and bool(silent[i])
        if value and start is None:
            start = i
        elif not value and start is not None:
            if i - start >= min_frames:
                runs.append((start, i))
            start = None
    return runs


def _snap_edges(words: list[Word], silent: npt.NDArray[np.bool_], frame_s: float, search_s: float) -> None:
    """Move the first word's start / last word's end onto the first / last voiced frame near them (in place)."""
    n = silent.size
    first, last = words[0], words[-1]
    f_start, f_end = first.start, first.end
    lo, hi = max(0, int((f_start - search_s) / frame_s)), min(n, int(f_end / frame_s))
    voiced = np.flatnonzero(~silent[lo:hi])
    if voiced.size:
        words[0] = first._replace(start=round(min(f_end, (lo + voiced[0]) * frame_s), 3))
    last = words[-1]
    l_start, l_end = last.start, last.end
    lo, hi = max(0, int(l_start / frame_s)), min(n, int((l_end + search_s) / frame_s) + 1)
    voiced = np.flatnonzero(~silent[lo:hi])
    if voiced.size:
        words[-1] = last._replace(end=round(max(l_start, (lo + voiced[-1] + 1) * frame_s), 3))
