"""Every speaking metric of a transcript, computed from its word timestamps.

Engine-free (numpy and the vocabulary kernel of :mod:`flows.metrics.vocabulary`, no Bytewax or Kafka): the
metric dataflow scores batches of transcripts with :func:`compute_metrics_batch`, and ``feedback/`` scores one with
:func:`compute_metrics`, which is a batch of one. The smaller functions are public so that other components can
compute a single measure.

Input is a transcript's words: one at a time as :class:`TimedWord` (``word``, ``start``, ``end`` in seconds), e.g.
:class:`schemas.events.Word` or faster-whisper's ``word_timestamps=True`` words (``" country."``, ``" I'm"``), or
as columns (:class:`TimedWords`: ``text``, ``start``, ``end``), e.g. :class:`schemas.events.TranscriptWords`.

Conventions (part of the metric definitions; a change needs a bump of :data:`METRICS_VERSION`):

* **Tokens.** Each ASR word is normalised with :func:`~flows.metrics.tokens.tokenize` (lower case; punctuation
  removed; apostrophes and hyphens inside a word kept: ``" Don't,"`` -> ``don't``, ``"well-known"`` ->
  ``well-known``). An ASR word that is only punctuation yields no token and is ignored, timing included; an ASR
  word that yields several tokens (rare) counts as several words sharing its timing. Every count of "words" is a
  count of these tokens.
* **Words and syllables.** The fluency literature counts syllables (de Jong & Wempe 2009; de Jong & Bosker
  2013); ASR gives words. Rates are given in words per minute (``_wpm``) and in syllables per second (``_sps``),
  the syllables of each token counted by :func:`~flows.metrics.syllables.syllable_count` (CMU Pronouncing
  Dictionary, rule-based fallback). Filled pauses are counted in the word and syllable counts and in the runs
  (the measures are *unpruned*); they are reported separately so that pruned figures can be derived, and they
  are left out of the vocabulary measures (they are not lexical items).
* **Hesitations heard in the audio** (optional, per transcript: :class:`Hesitation`, e.g.
  :class:`schemas.events.HesitationSpan`; ``None`` when no detector ran, then ``hesitation_detection`` is
  false and every measure is the word-only one). Spans with ``confidence >=``
  :data:`HESITATION_MIN_CONFIDENCE` are used: a ``voiced_gap`` (voicing no recognised word covers: an unrecognised
  filled pause) is a filled pause and phonation, not silence; a ``held_sound`` (recognised words likely
  hallucinated out of one held sound, "the the the" for "uhhh") removes the words inside it from the
  repetitions.
* **Times.** Durations are in seconds, rounded to the microsecond; rates are per minute. Timestamps must be
  finite and non-negative with ``end >= start`` (else ``ValueError``). Overlapping or out-of-order words are
  tolerated: a negative gap is simply not a pause, and the speech span runs from the earliest start to the
  latest end.
* **Undefined values.** :func:`compute_metrics` never raises for empty or degenerate input: a measure whose
  denominator is zero (a rate over 0 s, a mean over no pauses, a diversity index over fewer than 50 tokens) is
  ``None``, counts are 0. The single-measure functions instead raise ``ValueError`` where their value is
  undefined.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, compress, repeat
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from flows.metrics.lexicon import (
    EMPHATIC_REDUPLICATIONS,
    I_MEAN_BLOCK_NEXT,
    I_MEAN_BLOCK_PREVIOUS,
    LIKE_BLOCK_PREVIOUS,
    MULTIWORD_DISCOURSE_MARKERS,
    SO_BLOCK_NEXT,
    WELL_BLOCK_NEXT,
    YOU_KNOW_BLOCK_NEXT,
    YOU_KNOW_BLOCK_PREVIOUS,
    filled_pause_form,
)
from flows.metrics.syllables import syllable_count
from flows.metrics.tokens import is_filled_pause, word_tokens
from flows.metrics.vocabulary import VocabularyMetrics, batch_vocabulary

__all__ = [
    "DEFAULT_PAUSE_THRESHOLD_S",
    "FILLED_PAUSE_MEASURES",
    "FILLED_PAUSE_MERGE_GAP_S",
    "HESITATION_MIN_CONFIDENCE",
    "Hesitation",
    "METRICS_VERSION",
    "ScoredTranscript",
    "SubmissionMetrics",
    "TimedWord",
    "TimedWords",
    "articulation_rate",
    "compute_metrics",
    "compute_metrics_batch",
    "count_discourse_markers",
    "count_filled_pauses",
    "find_discourse_markers",
    "find_repetitions",
    "known_filled_pauses",
    "mean_length_of_run",
    "phonation_time",
    "silent_pauses",
    "speech_rate",
    "total_duration",
    "transcript_tokens",
    "word_count",
]

METRICS_VERSION = 2
"""Version of the metric definitions of this package; every metric row records it. Bump on any change of
meaning.

History: 1 (issues 4-17): word-based measures. 2 (issue 18): hesitations heard in the audio (``voiced_gap`` spans
are filled pauses and phonation, so they split or remove silent pauses; ``held_sound`` words are not repetitions);
``filled_pause_count`` counts merged filled-pause spans (lexical fillers within :data:`FILLED_PAUSE_MERGE_GAP_S`
of each other or of a voiced hesitation count once); new fields: syllable counts and rates, filled pauses per
minute and per 100 words, ``voiced_hesitation_count``, ``hallucinated_word_count``, ``hesitation_detection``."""

DEFAULT_PAUSE_THRESHOLD_S = 0.25
"""Silent-pause threshold in seconds (250 ms: Goldman-Eisler 1968; De Jong & Bosker 2013)."""

# Timestamps are ms-granular; comparisons with the pause threshold tolerate float noise below a microsecond,
# so that a gap of 0.35 - 0.10 s (= 0.24999999999999997 in binary floating point) counts as a 250 ms pause.
_TIME_EPSILON_S = 1e-6
_TIME_DECIMALS = 6

HESITATION_MIN_CONFIDENCE = 0.5
"""A hesitation span of the detector is used when its ``confidence`` is at least this (both kinds)."""

FILLED_PAUSE_MERGE_GAP_S = 0.1
"""Filled-pause spans (lexical fillers' word spans, ``voiced_gap`` spans) that overlap or lie at most this far
apart are one filled pause: the recogniser and the detector hearing the same "um", or one "umm" split in two."""

VOICED_GAP = "voiced_gap"
HELD_SOUND = "held_sound"


@runtime_checkable
class TimedWord(Protocol):
    """One recognised word with its timing: :class:`schemas.events.Word`, faster-whisper's ``Word``...

    ``word`` is the text as the recogniser emitted it (it may carry a leading space, punctuation and
    capitals); ``start`` and ``end`` are seconds from the beginning of the recording.
    """

    @property
    def word(self) -> str: ...

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...


@runtime_checkable
class Hesitation(Protocol):
    """One hesitation the detector heard in the audio, e.g. :class:`schemas.events.HesitationSpan`: ``start`` and
    ``end`` in seconds from the beginning of the recording, ``kind`` ``"voiced_gap"`` (voicing that no recognised
    word covers: an unrecognised filled pause) or ``"held_sound"`` (recognised words likely hallucinated out of one
    held sound), ``confidence`` 0..1. Other kinds are ignored."""

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    @property
    def kind(self) -> str: ...

    @property
    def confidence(self) -> float: ...


_Span = tuple[float, float]


def _spans(hesitations: Iterable[Hesitation], kind: str) -> list[_Span]:
    """The ``(start, end)`` of the hesitations of ``kind`` that are used (confidence at least
    :data:`HESITATION_MIN_CONFIDENCE`), checked like word timestamps, in order of start."""
    spans = []
    for span in hesitations:
        if span.kind == kind and span.confidence >= HESITATION_MIN_CONFIDENCE:
            start, end = _check_time(span.start, "hesitation start"), _check_time(span.end, "hesitation end")
            if end < start:
                raise ValueError(f"hesitation ends ({end}) before it starts ({start})")
            spans.append((start, end))
    spans.sort()
    return spans


def _merge(spans: Sequence[_Span], gap_s: float) -> list[_Span]:
    """Sorted ``spans`` with those that overlap or lie at most ``gap_s`` apart merged into one."""
    merged: list[_Span] = []
    for start, end in spans:
        if merged and start <= merged[-1][1] + gap_s + _TIME_EPSILON_S:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _silences(gap_start: float, gap_end: float, voiced: Sequence[_Span], threshold_s: float) -> list[float]:
    """The silent pauses of one gap between words: the parts of ``[gap_start, gap_end]`` that no span of ``voiced``
    (sorted, merged) covers, each kept only when it is at least ``threshold_s`` long."""
    pieces = []
    at = gap_start
    for start, end in voiced:
        if end <= at or start >= gap_end:
            continue
        pieces.append(min(start, gap_end) - at)
        at = max(at, end)
    pieces.append(gap_end - at)
    return [_seconds(piece) for piece in pieces if piece + _TIME_EPSILON_S >= threshold_s]


class TimedWords(Protocol):
    """A transcript's words as columns, e.g. :class:`schemas.events.TranscriptWords`: word ``i`` is ``text[i]``
    (as the recogniser emitted it) from ``start[i]`` to ``end[i]`` (seconds from the beginning of the recording)."""

    @property
    def text(self) -> Sequence[str]: ...

    @property
    def start(self) -> Sequence[float]: ...

    @property
    def end(self) -> Sequence[float]: ...


class _Columns(NamedTuple):
    """:class:`TimedWords` of a sequence of :class:`TimedWord` (what :func:`compute_metrics` hands the batch)."""

    text: Sequence[str]
    start: Sequence[float]
    end: Sequence[float]


def _columns(words: Iterable[TimedWord]) -> _Columns:
    rows = list(words)
    return _Columns([w.word for w in rows], [w.start for w in rows], [w.end for w in rows])


def _check_time(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of seconds, got {value!r}")
    return seconds


def _check_threshold(threshold_s: float) -> float:
    if isinstance(threshold_s, bool) or not isinstance(threshold_s, numbers.Real):
        raise ValueError(f"pause threshold must be a number of seconds, got {threshold_s!r}")
    threshold = float(threshold_s)
    if not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"pause threshold must be a finite, positive number of seconds, got {threshold_s!r}")
    return threshold


def transcript_tokens(words: Sequence[TimedWord]) -> list[str]:
    """The normalised tokens of a transcript, in order (see :func:`~flows.metrics.tokens.tokenize`), filled pauses
    included.

    Raises ``ValueError`` on invalid timestamps (like every function that takes timed words).
    """
    return list(_timing(_columns(words), DEFAULT_PAUSE_THRESHOLD_S).tokens)


# -------------------------------------------------------------------------------------------------- timing

_INFINITY = math.inf
_FLOAT = frozenset({float})
_Array = npt.NDArray[Any]
_NO_TIMES: _Array = np.zeros(0, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class _Timing:
    threshold_s: float
    word_count: int
    span_s: float
    pauses_s: tuple[float, ...]
    run_starts: frozenset[int]  # token indices that begin a run: the first one and each after a pause
    tokens: tuple[str, ...]
    token_starts: _Array  # each token's word's start and end, s (views into the batch's arrays)
    token_ends: _Array

    @property
    def phonation_s(self) -> float:
        return _seconds(max(0.0, self.span_s - sum(self.pauses_s)))


def _seconds(value: float) -> float:
    return round(value, _TIME_DECIMALS)


def _timing(words: TimedWords, threshold_s: float) -> _Timing:
    """The timing of one transcript: :func:`_timings` of a batch of one (raises its ``ValueError``)."""
    (timing,) = _timings([words], _check_threshold(threshold_s))
    if isinstance(timing, ValueError):
        raise timing
    return timing


def _timings(
    transcripts: Sequence[TimedWords], threshold_s: float, voiced: Sequence[Sequence[_Span]] | None = None
) -> list[_Timing | ValueError]:
    """Tokens, silent pauses, runs and speech span of each transcript (``threshold_s`` already checked).

    Each word's timestamps are checked (``ValueError`` naming the word, see :func:`_check_time`; columns of unequal
    length are a ``ValueError`` too); a word without tokens is ignored, timing included. A pause is the gap between
    consecutive words with tokens (the next one's start minus the previous one's end) when it is ``>= threshold_s``
    (sub-microsecond tolerance); the span runs from the earliest start to the latest end of those words.
    ``voiced``: per transcript, its ``voiced_gap`` spans (sorted, merged; ``None``: none for any): a pause's gap
    loses the parts they cover, and each part left is a pause when it is itself ``>= threshold_s`` (a gap whose
    parts are all shorter is no pause: the voiced hesitation is phonation).

    Returns one item per transcript: its :class:`_Timing`, or the ``ValueError`` of its words. The batch's words are
    measured together, as one concatenation of their columns; when a word of the batch is invalid, each transcript
    is measured as a batch of one, so that the error names the word within its transcript and the others are
    unaffected.
    """
    try:
        timings: list[_Timing | ValueError] = list(_concatenated_timings(transcripts, threshold_s, voiced))
        return timings
    except ValueError as error:
        if len(transcripts) == 1:
            return [error]
        return [
            timing
            for index, words in enumerate(transcripts)
            for timing in _timings([words], threshold_s, None if voiced is None else [voiced[index]])
        ]


def _concatenated_timings(
    transcripts: Sequence[TimedWords], threshold_s: float, voiced: Sequence[Sequence[_Span]] | None
) -> list[_Timing]:
    """:func:`_timings` over the concatenated words of all ``transcripts``; raises ``ValueError`` for the batch."""
    count = len(transcripts)
    lengths: list[int] = []
    for words in transcripts:
        texts, start_list, end_list = words.text, words.start, words.end
        if not len(texts) == len(start_list) == len(end_list):
            raise ValueError(f"text, start and end differ in length ({len(texts)}, {len(start_list)}, {len(end_list)})")
        lengths.append(len(texts))
    starts, ends = _checked_times(
        list(chain.from_iterable(words.start for words in transcripts)),
        list(chain.from_iterable(words.end for words in transcripts)),
    )
    per_word = list(map(word_tokens, chain.from_iterable(words.text for words in transcripts)))
    counts = np.fromiter(map(len, per_word), dtype=np.int64, count=len(per_word))
    owner = np.repeat(np.arange(count, dtype=np.int64), lengths)  # each word's transcript
    token_ends = np.cumsum(counts)
    first_token = token_ends - counts  # each word's first token, in the batch's tokens
    word_offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
    token_offsets = np.concatenate(([0], token_ends))[word_offsets]  # each transcript's first token
    token_starts, token_ends = np.repeat(starts, counts), np.repeat(ends, counts)
    spoken = counts > 0
    starts, ends, owner, first_token = starts[spoken], ends[spoken], owner[spoken], first_token[spoken]
    gaps = starts[1:] - ends[:-1]
    # The spoken words that begin a run after a pause: a gap within one transcript of at least the threshold.
    after_pause = np.flatnonzero((owner[1:] == owner[:-1]) & (gaps + _TIME_EPSILON_S >= threshold_s)) + 1
    pause_owner = owner[after_pause]
    pauses = _round_to_microseconds(gaps[after_pause - 1]).tolist()
    run_starts = (first_token[after_pause] - token_offsets[pause_owner]).tolist()
    pause_offsets = np.concatenate(([0], np.cumsum(np.bincount(pause_owner, minlength=count)))).tolist()
    if voiced is not None and any(voiced):  # each pause's gap: the previous word's end, the next one's start
        gap_starts, gap_ends = ends[after_pause - 1].tolist(), starts[after_pause].tolist()
    spoken_words = np.bincount(owner, minlength=count)
    with_words = spoken_words > 0
    spans = np.zeros(count, dtype=np.float64)
    if starts.size:
        first_word = (np.cumsum(spoken_words) - spoken_words)[with_words]
        spans[with_words] = _round_to_microseconds(
            np.maximum.reduceat(ends, first_word) - np.minimum.reduceat(starts, first_word)
        )
    tokens = list(chain.from_iterable(per_word))
    token_bounds = token_offsets.tolist()
    timings: list[_Timing] = []
    for index, span in enumerate(spans.tolist()):
        low, high = token_bounds[index], token_bounds[index + 1]
        own = tuple(tokens[low:high])
        if not own:
            timings.append(_Timing(threshold_s, 0, 0.0, (), frozenset(), (), _NO_TIMES, _NO_TIMES))
            continue
        first, last = pause_offsets[index], pause_offsets[index + 1]
        own_pauses, own_starts = pauses[first:last], run_starts[first:last]
        spans_here = voiced[index] if voiced is not None else None
        if spans_here and first != last:
            own_pauses, own_starts = [], []
            for at in range(first, last):
                silences = _silences(gap_starts[at], gap_ends[at], spans_here, threshold_s)
                if silences:
                    own_pauses.extend(silences)
                    own_starts.append(run_starts[at])
        timings.append(
            _Timing(
                threshold_s,
                len(own),
                span,
                tuple(own_pauses),
                frozenset([0, *own_starts]),
                own,
                token_starts[low:high],
                token_ends[low:high],
            )
        )
    return timings


def _round_to_microseconds(values: _Array) -> _Array:
    """``[round(x, 6) for x in values]`` (Python's correctly rounded ``round``) as float64, without a Python call per
    value where that is provably the same double: numpy's ``rint(x * 1e6) / 1e6`` equals it whenever
    ``|x * 1e6| < 1e12`` and ``x * 1e6`` lies within 0.4 of an integer (the product's error is then far below the
    distance to a rounding tie, and an exact integer divided by 1e6 is correctly rounded, like Python's
    decimal-to-double conversion). Any other value (a tie such as 0.0000005) is rounded by Python."""
    scaled = values * 1e6
    nearest = np.rint(scaled)
    rounded: _Array = nearest / 1e6
    unsafe = ~((np.abs(scaled - nearest) <= 0.4) & (np.abs(nearest) < 1e12))
    if unsafe.any():
        where = np.flatnonzero(unsafe)
        rounded[where] = [round(value, _TIME_DECIMALS) for value in values[where].tolist()]
    return rounded


def _checked_times(starts: Sequence[float], ends: Sequence[float]) -> tuple[_Array, _Array]:
    """The timestamps as float64 arrays, checked: each finite and non-negative (an ``int`` or another real number is
    converted, a ``bool`` or anything else is not a number of seconds) and every end at or after its start. Raises
    ``ValueError`` naming the first bad word."""
    if _FLOAT >= set(map(type, starts)) | set(map(type, ends)):
        start_array = np.array(starts, dtype=np.float64)
        end_array = np.array(ends, dtype=np.float64)
        # NaN fails every comparison, so the checks below also reject it.
        if (start_array >= 0.0).all() and (end_array < _INFINITY).all() and (end_array >= start_array).all():
            return start_array, end_array
    checked_starts: list[float] = []
    checked_ends: list[float] = []
    for index, (start, end) in enumerate(zip(starts, ends, strict=True)):
        start = _check_time(start, f"words[{index}].start")
        end = _check_time(end, f"words[{index}].end")
        if end < start:
            raise ValueError(f"words[{index}] ends before it starts ({start} > {end})")
        checked_starts.append(start)
        checked_ends.append(end)
    return np.array(checked_starts, dtype=np.float64), np.array(checked_ends, dtype=np.float64)


def _defined(rate: float | None, name: str, zero: str) -> float:
    """``rate``, or ``ValueError`` naming ``name`` when it is undefined (no words, or ``zero``)."""
    if rate is None:
        raise ValueError(f"{name} is undefined for a transcript without words or with {zero}")
    return rate


def _per_minute(count: float, seconds: float) -> float | None:
    return count * 60.0 / seconds if seconds > 0 else None


def _per_second(count: float, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None


def word_count(words: Sequence[TimedWord]) -> int:
    """Number of word tokens in the transcript (filled pauses included; see :func:`~flows.metrics.tokens.tokenize`).

    Raises ``ValueError`` on invalid timestamps.
    """
    return len(transcript_tokens(words))


def total_duration(words: Sequence[TimedWord]) -> float:
    """Total duration of the response in seconds: the speech span, first word's start to last word's end.

    Leading and trailing silence of the recording is not included (the recording's own length is passed to
    :func:`compute_metrics` separately). 0.0 for a transcript without words. Raises ``ValueError`` on invalid
    timestamps.
    """
    return _timing(_columns(words), DEFAULT_PAUSE_THRESHOLD_S).span_s


def silent_pauses(words: Sequence[TimedWord], *, threshold_s: float = DEFAULT_PAUSE_THRESHOLD_S) -> list[float]:
    """Lengths in seconds of the silent pauses: gaps between consecutive words ``>= threshold_s``, in order.

    The gap is the next word's start minus the previous word's end. The default threshold of 250 ms follows
    Goldman-Eisler (1968) and De Jong & Bosker (2013), who found 250 ms the best threshold for predicting L2
    fluency. A gap of 249 ms is not a pause, one of 250 ms is (comparison tolerant to sub-microsecond float
    noise). Silence before the first or after the last word is not counted. Raises ``ValueError`` on invalid
    timestamps or a threshold that is not a positive number.
    """
    return list(_timing(_columns(words), threshold_s).pauses_s)


def phonation_time(words: Sequence[TimedWord], *, threshold_s: float = DEFAULT_PAUSE_THRESHOLD_S) -> float:
    """Phonation (speaking) time in seconds: the speech span minus the silent pauses ``>= threshold_s``.

    de Jong & Wempe (2009) — phonation time is the total duration without silent pauses; gaps shorter than the
    threshold belong to speaking time. 0.0 for a transcript without words. Raises ``ValueError`` on invalid
    timestamps or threshold.
    """
    return _timing(_columns(words), threshold_s).phonation_s


def speech_rate(words: Sequence[TimedWord]) -> float:
    """Speech rate in words per minute: word count / speech span (:func:`total_duration`) x 60.

    de Jong & Wempe (2009) define speech rate as syllables over total duration, pauses included; this is the
    word version over the speech span. Raises ``ValueError`` when it is undefined (no words, or a span of 0 s)
    or on invalid timestamps.
    """
    timing = _timing(_columns(words), DEFAULT_PAUSE_THRESHOLD_S)
    return _defined(_per_minute(timing.word_count, timing.span_s), "speech rate", "a speech span of 0 s")


def articulation_rate(words: Sequence[TimedWord], *, threshold_s: float = DEFAULT_PAUSE_THRESHOLD_S) -> float:
    """Articulation rate in words per minute: word count / phonation time (:func:`phonation_time`) x 60.

    de Jong & Wempe (2009): syllables over phonation time, i.e. speed of speaking with silent pauses excluded;
    here in words. Raises ``ValueError`` when undefined (no words, or 0 s of phonation) or on invalid input.
    """
    timing = _timing(_columns(words), threshold_s)
    return _defined(_per_minute(timing.word_count, timing.phonation_s), "articulation rate", "0 s of phonation time")


def mean_length_of_run(words: Sequence[TimedWord], *, threshold_s: float = DEFAULT_PAUSE_THRESHOLD_S) -> float:
    """Mean length of run: the mean number of words between silent pauses ``>= threshold_s``.

    Kormos & Dénes (2004); Tavakoli & Skehan (2005) — mean number of syllables (here: words) produced between
    pauses. Equals word count / (number of silent pauses + 1); filled pauses do not end a run and count as
    words. Raises ``ValueError`` for a transcript without words or on invalid input.
    """
    timing = _timing(_columns(words), threshold_s)
    if timing.word_count == 0:
        raise ValueError("mean length of run is undefined for a transcript without words")
    return timing.word_count / (len(timing.pauses_s) + 1)


# ---------------------------------------------------------------------------------------------- disfluencies


def count_filled_pauses(tokens: Sequence[str]) -> dict[str, int]:
    """Count filled pauses per canonical form (``{"um": 2, "uh": 1}``); forms that do not occur are absent.

    Clark & Fox Tree (2002): *uh* and *um* (British *er*, *erm*), plus the hesitation vocalisations hmm, mm
    and ah. A token is a filled pause only as a whole token, lengthened spellings included (``umm`` -> ``um``,
    ``uhh`` -> ``uh``); see :data:`flows.metrics.lexicon.FILLED_PAUSE_FORMS`. ``tokens`` are normalised tokens
    (:func:`tokenize`).
    """
    return _count_forms([filled_pause_form(token) for token in tokens])


def _count_forms(forms: Iterable[str | None]) -> dict[str, int]:
    """Occurrences of each filled-pause form (``None``: not a filled pause), in order of first occurrence."""
    counts: dict[str, int] = {}
    for form in forms:
        if form is not None:
            counts[form] = counts.get(form, 0) + 1
    return counts


def _neighbour(tokens: Sequence[str], forms: Sequence[str | None], index: int, step: int) -> str | None:
    """The nearest token from ``index`` in direction ``step`` that is not a filled pause (``forms``: the
    tokens' filled-pause forms)."""
    index += step
    while 0 <= index < len(tokens):
        if forms[index] is None:
            return tokens[index]
        index += step
    return None


# The multi-word markers by their first token, longest sequences first, so that a longer spelling wins.
_MULTIWORD_BY_FIRST: dict[str, list[tuple[tuple[str, ...], str]]] = {}
for _sequence, _name in sorted(MULTIWORD_DISCOURSE_MARKERS.items(), key=lambda item: -len(item[0])):
    _MULTIWORD_BY_FIRST.setdefault(_sequence[0], []).append((_sequence, _name))


def find_discourse_markers(
    tokens: Sequence[str], *, run_starts: Collection[int] | None = None
) -> list[tuple[int, str]]:
    """Find discourse markers as ``(index of the marker's first token, canonical marker)`` pairs, in order.

    Markers (Schiffrin 1987; Fung & Carter 2007): *you know* (also *ya know*, *y'know*), *I mean*, *like*,
    *well*, *so*. Multi-word markers are matched as token sequences. Filled pauses are never markers (they are
    counted apart). The rules are conservative — they rather miss a marker than count a verb, a preposition or
    an adverb — and look at the nearest neighbours that are not filled pauses (word lists in
    :mod:`flows.metrics.lexicon`):

    * *you know* — not after an auxiliary, modal, complementiser or wh-word ("do you know", "if you know",
      "what you know", "as you know") and not before an object or complement ("you know him", "you know how");
    * *I mean* — not after "what/do/did/if/that/…" ("what I mean") and not before
      "it/to/that/by/for/what/this";
    * *like* — only next to another disfluency: right after a filled pause or a discourse marker ("um like",
      "you know like") or right before a filled pause ("like uh"), and never after a word that makes it a verb
      or preposition ("I like", "would like", "looks like", "something like", "was like"). Bare "like"
      elsewhere is not counted, so its marker use is undercounted by design;
    * *well*, *so* — only at the start of a run (the first word, or the first after a silent pause, skipping
      filled pauses and other markers) or right before a filled pause ("so um"), and not in "so
      much/many/that/…" or "well done/known/as/…".

    ``run_starts`` are the token indices that begin a run (after a silent pause); ``None`` means only the
    first token. :func:`compute_metrics` passes the runs it found.
    """
    starts = {0} if run_starts is None else set(run_starts)
    return _find_markers(tokens, [filled_pause_form(token) for token in tokens], starts)


# The first token of every marker: any other token that is not a filled pause just ends a run's start.
_MARKER_FIRST_TOKENS = frozenset({sequence[0] for sequence in MULTIWORD_DISCOURSE_MARKERS} | {"like", "so", "well"})


@functools.lru_cache(maxsize=65536)
def _read_by_marker_scan(token: str) -> bool:
    """Whether the discourse-marker scan must read ``token``: a filled pause, or a token a marker can begin with."""
    return token in _MARKER_FIRST_TOKENS or filled_pause_form(token) is not None


def _find_markers(tokens: Sequence[str], forms: Sequence[str | None], starts: Collection[int]) -> list[tuple[int, str]]:
    """:func:`find_discourse_markers` given the tokens' filled-pause forms and the run starts."""
    found: list[tuple[int, str]] = []
    if _MARKER_FIRST_TOKENS.isdisjoint(tokens):  # no token can begin a marker
        return found
    at_run_start = False  # only filled pauses and markers since the start of the run
    after_disfluency = False  # the previous token was a filled pause or ended a marker
    index = 0  # the next token to read
    count = len(tokens)
    # Any other token just clears both states, so the scan visits only filled pauses and the tokens a marker
    # can begin with, and clears the states when it skips over other tokens.
    for visited in list(compress(range(count), map(_read_by_marker_scan, tokens))):
        if visited < index:  # inside a multi-word marker just found
            continue
        if visited > index:
            at_run_start = False
            after_disfluency = False
        index = visited
        if index in starts:
            at_run_start = True
        if forms[index] is not None:
            after_disfluency = True
            index += 1
            continue
        token = tokens[index]
        marker: str | None = None
        length = 1
        for sequence, name in _MULTIWORD_BY_FIRST.get(token, ()):
            if tuple(tokens[index : index + len(sequence)]) == sequence:
                previous = _neighbour(tokens, forms, index, -1)
                following = _neighbour(tokens, forms, index + len(sequence) - 1, +1)
                if name == "you know":
                    accepted = previous not in YOU_KNOW_BLOCK_PREVIOUS and following not in YOU_KNOW_BLOCK_NEXT
                else:  # "i mean"
                    accepted = previous not in I_MEAN_BLOCK_PREVIOUS and following not in I_MEAN_BLOCK_NEXT
                if accepted:
                    marker, length = name, len(sequence)
                break
        if marker is None and token in ("like", "so", "well"):
            before_filled_pause = index + 1 < count and forms[index + 1] is not None
            if token == "like":
                if (after_disfluency or before_filled_pause) and _neighbour(
                    tokens, forms, index, -1
                ) not in LIKE_BLOCK_PREVIOUS:
                    marker = "like"
            elif at_run_start or before_filled_pause:
                blocked = SO_BLOCK_NEXT if token == "so" else WELL_BLOCK_NEXT
                if _neighbour(tokens, forms, index, +1) not in blocked:
                    marker = token
        if marker is not None:
            found.append((index, marker))
            after_disfluency = True
            index += length
            continue
        at_run_start = False
        after_disfluency = False
        index += 1
    return found


def _count_markers(found: Iterable[tuple[int, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, marker in found:
        counts[marker] = counts.get(marker, 0) + 1
    return counts


def count_discourse_markers(tokens: Sequence[str], *, run_starts: Collection[int] | None = None) -> dict[str, int]:
    """Count discourse markers per canonical marker (``{"you know": 2, "i mean": 1}``).

    See :func:`find_discourse_markers` for the list and the rules. Markers that do not occur are absent.
    """
    return _count_markers(find_discourse_markers(tokens, run_starts=run_starts))


def find_repetitions(tokens: Sequence[str]) -> list[str]:
    """Immediate repetitions: each extra copy of a token or a 2-gram repeated right after itself, in order.

    Definition (repetition disfluencies, Kormos & Dénes 2004; Foster, Tonkyn & Wigglesworth 2000): filled
    pauses are removed first, so they neither count nor interrupt a repetition ("I um I think" repeats "i");
    then, left to right, a token equal to the next one is a repetition of that token ("the the" ->
    ``["the"]``, "I I I" -> ``["i", "i"]``), else a 2-gram equal to the next two tokens is a repetition of the
    2-gram ("I think I think" -> ``["i think"]``). Emphatic doublings ("very very", "no no";
    :data:`flows.metrics.lexicon.EMPHATIC_REDUPLICATIONS`) are not counted. Grammatical doublings ("had had", "that
    that") cannot be told apart and are counted.
    """
    return _repetitions([token for token in tokens if not is_filled_pause(token)])


def _repetitions(content: Sequence[str]) -> list[str]:
    """:func:`find_repetitions` of the tokens without filled pauses."""
    repetitions: list[str] = []
    # Every repetition begins at a token equal to the next one (a repeated token) or to the one after it (maybe a
    # repeated 2-gram); the scan visits only those, left to right, and skips the second token of a repeated 2-gram.
    count = len(content)
    doubled = set(compress(range(count), map(operator.eq, content, content[1:])))
    spaced = list(compress(range(count), map(operator.eq, content, content[2:])))
    if not doubled and not spaced:
        return repetitions
    index = 0  # the next token that can begin a repetition
    for visited in sorted(doubled.union(spaced)):
        if visited < index:
            continue
        token = content[visited]
        if visited in doubled:
            if token not in EMPHATIC_REDUPLICATIONS:
                repetitions.append(token)
            index = visited + 1
        elif visited + 3 < count and content[visited + 1] == content[visited + 3]:
            repetitions.append(f"{token} {content[visited + 1]}")
            index = visited + 2
    return repetitions


# ------------------------------------------------------------------------------------------------ entry points


@dataclass(frozen=True, slots=True)
class SubmissionMetrics:
    """Every metric of one transcript (units in the field names: ``_s`` seconds, ``_wpm`` words per minute,
    ``_sps`` syllables per second).

    ``None`` marks a value that is undefined for this transcript (a rate over 0 s, a mean over nothing, a
    diversity index below 50 tokens). The ASR model is not known here: the caller records it next to these
    values, as it records :attr:`metrics_version`. ``dataclasses.asdict`` turns it into a plain dict.
    """

    metrics_version: int
    pause_threshold_s: float
    # response length
    word_count: int
    total_duration_s: float  # speech span: first word start -> last word end
    recording_duration_s: float | None  # as given by the caller, not derived from the words
    phonation_time_s: float
    # pace
    speech_rate_wpm: float | None
    articulation_rate_wpm: float | None
    # silent pauses
    silent_pause_count: int
    silent_pauses_per_minute: float | None  # over the speech span
    mean_silent_pause_s: float | None
    silent_pause_total_s: float
    silent_pauses_s: tuple[float, ...]
    mean_length_of_run: float | None  # words
    # syllables (de Jong & Wempe 2009; de Jong & Bosker 2013; Kormos & Dénes 2004)
    syllable_count: int  # syllables of the tokens (flows.metrics.syllables), filled pauses 1 each
    speech_rate_sps: float | None  # syllables / speech span
    articulation_rate_sps: float | None  # syllables / phonation time
    mean_length_of_run_syllables: float | None  # syllables / (silent pauses + 1)
    # disfluencies (counted apart)
    filled_pause_count: int  # merged filled-pause spans: lexical fillers and voiced hesitations, each once
    filled_pauses: dict[str, int]  # lexical fillers per canonical form (tokens, not merged)
    filled_pauses_per_minute: float | None  # over the speech span
    filled_pauses_per_100_words: float | None
    voiced_hesitation_count: int  # filled pauses heard only by the detector (no lexical filler in the span)
    hesitation_detection: bool  # whether a hesitation detector ran on this transcript
    discourse_marker_count: int
    discourse_markers: dict[str, int]
    repetition_count: int
    repetitions: tuple[str, ...]
    hallucinated_word_count: int  # lexical tokens inside held_sound spans (left out of the repetitions)
    # vocabulary (filled pauses removed)
    vocabulary_token_count: int
    distinct_words: int
    mattr: float | None
    mtld: float | None
    vocabulary_sufficient: bool


FILLED_PAUSE_MEASURES: tuple[str, ...] = (
    "filled_pause_count",
    "filled_pauses",
    "filled_pauses_per_minute",
    "filled_pauses_per_100_words",
    "voiced_hesitation_count",
)
"""The fields of :class:`SubmissionMetrics` (and the stored columns of the same names) that count filled pauses.
Without hesitation detection (``hesitation_detection`` false) they are unknown, not zero: the recogniser leaves
most fillers out, and no detector listened for them (:func:`known_filled_pauses`)."""


def known_filled_pauses(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` (a metric row or ``dataclasses.asdict`` of :class:`SubmissionMetrics`: field name ->
    value) in which the :data:`FILLED_PAUSE_MEASURES` present are ``None`` unless ``values["hesitation_detection"]``
    is true (missing or ``None`` counts as false). The one rule for showing filled pauses as unknown; other keys
    are unchanged. Never raises."""
    out = dict(values)
    if not out.get("hesitation_detection"):
        for name in FILLED_PAUSE_MEASURES:
            if name in out:
                out[name] = None
    return out


@dataclass(frozen=True, slots=True)
class ScoredTranscript:
    """What :func:`compute_metrics_batch` returns for one transcript: its :class:`SubmissionMetrics` and its
    lexical tokens (:func:`flows.metrics.lexical_tokens` of its words: what the learner windows measure vocabulary
    over)."""

    metrics: SubmissionMetrics
    lexical_tokens: tuple[str, ...]


def compute_metrics(
    words: Sequence[TimedWord],
    *,
    pause_threshold_s: float = DEFAULT_PAUSE_THRESHOLD_S,
    recording_duration_s: float | None = None,
    hesitations: Sequence[Hesitation] | None = None,
) -> SubmissionMetrics:
    """Compute every speaking metric of one transcript (definitions and sources in the functions above).

    * response length: :func:`word_count`, :func:`total_duration` (speech span), :func:`phonation_time`, and
      the recording's own duration when the caller knows it;
    * pace: :func:`speech_rate` and :func:`articulation_rate` (de Jong & Wempe 2009), words per minute, and in
      syllables per second (``speech_rate_sps``, ``articulation_rate_sps``; syllables:
      :func:`~flows.metrics.syllables.syllable_count`);
    * fluency: :func:`silent_pauses` >= ``pause_threshold_s`` (Goldman-Eisler 1968; De Jong & Bosker 2013) as
      a count, per minute of speech span, mean length and list; :func:`mean_length_of_run` (Kormos & Dénes
      2004; Tavakoli & Skehan 2005), in words and in syllables; filled pauses (Clark & Fox Tree 2002), discourse
      markers and immediate repetitions, each counted apart.

    ``hesitations``: what the hesitation detector heard in the audio (:class:`Hesitation`, e.g.
    ``TranscriptCreated.payload.hesitations``), ``None`` when it did not run; see :func:`compute_metrics_batch`
    for what they change.
    * vocabulary: :func:`~flows.metrics.vocabulary.vocabulary_metrics` of the transcript's tokens.

    A batch of one of :func:`compute_metrics_batch`. Empty or degenerate input does not raise: with no words every
    count is 0, durations are 0.0 and rates, means, MATTR and MTLD are ``None`` (``vocabulary_sufficient=False``).
    Raises ``ValueError`` on invalid timestamps (negative, non-finite, ``end < start``), a threshold that is not a
    positive number of seconds, or a negative or non-finite ``recording_duration_s``.
    """
    (result,) = compute_metrics_batch(
        [_columns(words)],
        recording_durations_s=[recording_duration_s],
        hesitations=[hesitations],
        pause_threshold_s=pause_threshold_s,
    )
    if isinstance(result, ValueError):
        raise result
    return result.metrics


class _Measured(NamedTuple):
    """The metrics of one transcript but its vocabulary (:func:`_measure`)."""

    timing: _Timing
    recording_s: float | None
    filled: dict[str, int]
    filled_spans: int  # merged filled-pause spans
    voiced_only: int  # of which without a lexical filler
    markers: dict[str, int]
    repetitions: tuple[str, ...]
    hallucinated: int
    syllables: int
    detected: bool  # the detector ran
    lexical_tokens: tuple[str, ...]  # lexical_tokens(words): the vocabulary's tokens, and the windows'


def compute_metrics_batch(
    transcripts: Sequence[TimedWords],
    *,
    recording_durations_s: Sequence[float | None] | None = None,
    hesitations: Sequence[Sequence[Hesitation] | None] | None = None,
    pause_threshold_s: float = DEFAULT_PAUSE_THRESHOLD_S,
) -> list[ScoredTranscript | ValueError]:
    """:func:`compute_metrics` and :func:`flows.metrics.lexical_tokens` of many transcripts: the implementation.

    ``transcripts``: each transcript's words as columns (:class:`TimedWords`: texts as the ASR emitted them, start
    and end times in seconds); ``recording_durations_s``: the recordings' durations in seconds (``None``: unknown;
    the argument ``None``: all unknown); ``hesitations``: per transcript, the hesitations the detector heard
    (:class:`Hesitation`; ``None``: the detector did not run; the argument ``None``: it ran for none);
    ``pause_threshold_s``: the silent-pause threshold in seconds.

    Definitions that use the hesitations (spans with ``confidence >=`` :data:`HESITATION_MIN_CONFIDENCE`):

    * **Filled pauses** (Clark & Fox Tree 2002: *uh*, *um* as words of their own). The filled-pause spans are
      the word spans of the lexical filled-pause tokens (:func:`count_filled_pauses`) together with the
      ``voiced_gap`` spans; spans that overlap or lie within :data:`FILLED_PAUSE_MERGE_GAP_S` of each other merge,
      and ``filled_pause_count`` is the number of merged spans, so a filler the recogniser wrote and the detector
      heard counts once (and so do adjacent fillers, "um um", within 0.1 s). ``filled_pauses`` stays the count
      of lexical fillers per form; ``voiced_hesitation_count`` is the merged spans without a lexical filler
      (heard only by the detector). ``filled_pauses_per_minute`` is over the speech span (like
      ``silent_pauses_per_minute``), ``filled_pauses_per_100_words`` per 100 tokens of ``word_count``. Discourse
      markers are never filled pauses (counted apart, :func:`find_discourse_markers`).
    * **Silent pauses** (de Jong & Bosker 2013: silences >= 250 ms between words): a gap between words loses
      the parts ``voiced_gap`` spans cover; each part left counts as a silent pause only when it is itself
      ``>= pause_threshold_s`` (a 1.2 s gap holding a 0.6 s "um" in its middle is two 0.3 s pauses; with a
      0.8 s "um", none). Phonation time (span minus silent pauses, de Jong & Wempe 2009) thereby counts voiced
      hesitations as phonation, and runs (Kormos & Dénes 2004: stretches between silent pauses) follow the
      pauses.
    * **Repetitions**: lexical tokens whose word's midpoint lies inside a ``held_sound`` span are removed before
      the repetition rule (:func:`find_repetitions`), as filled pauses are; ``hallucinated_word_count`` counts
      them. They stay in the word, syllable and vocabulary counts (what was recognised).
    * ``hesitation_detection`` is whether the detector ran (its item is not ``None``): without it, no filled
      pause heard in the audio was looked for, and a low count of filled pauses says little.

    Syllables (de Jong & Wempe 2009; de Jong & Bosker 2013): ``syllable_count`` is the sum of
    :func:`~flows.metrics.syllables.syllable_count` over the tokens (a filled pause is 1; voiced hesitations the
    recogniser did not write are not counted); ``speech_rate_sps`` is syllables per second of speech span,
    ``articulation_rate_sps`` syllables per second of phonation time, ``mean_length_of_run_syllables`` syllables
    per run (silent pauses + 1; Kormos & Dénes 2004).

    Returns one item per transcript, in order: a :class:`ScoredTranscript`, or the ``ValueError`` that makes the
    transcript's metrics undefined (invalid timestamps, columns of unequal length, an invalid recording duration
    or hesitation span), so that one bad transcript does not affect the others. Raises ``ValueError`` for the
    whole batch on an invalid threshold or when ``recording_durations_s`` or ``hesitations`` is not as long as
    ``transcripts``. The timing of all transcripts
    (checks, gaps, pauses, runs, spans) is computed over their concatenated words (:func:`_timings`), their
    vocabulary in one call of the compiled kernel (:func:`flows.metrics.vocabulary.batch_vocabulary`), and the
    disfluencies transcript by transcript, visiting only the tokens a rule can apply to.
    """
    threshold = _check_threshold(pause_threshold_s)
    recordings = [None] * len(transcripts) if recording_durations_s is None else list(recording_durations_s)
    if len(recordings) != len(transcripts):
        raise ValueError(f"{len(recordings)} recording durations for {len(transcripts)} transcripts")
    heard: Sequence[Sequence[Hesitation] | None] = [None] * len(transcripts) if hesitations is None else hesitations
    if len(heard) != len(transcripts):
        raise ValueError(f"{len(heard)} hesitation lists for {len(transcripts)} transcripts")
    spans: list[tuple[list[_Span], list[_Span]] | ValueError | None] = []  # (voiced, held) of each transcript
    for items in heard:
        try:
            spans.append(
                None
                if not items
                else (_merge(_spans(items, VOICED_GAP), FILLED_PAUSE_MERGE_GAP_S), _spans(items, HELD_SOUND))
            )
        except ValueError as error:
            spans.append(error)
    voiced = [item[0] if isinstance(item, tuple) else () for item in spans]
    measured: list[_Measured | ValueError] = []
    for timing, recording, items, found in zip(
        _timings(transcripts, threshold, voiced), recordings, heard, spans, strict=True
    ):
        try:
            if isinstance(timing, ValueError):
                raise timing
            if isinstance(found, ValueError):
                raise found
            measured.append(_measure(timing, recording, items is not None, found))
        except ValueError as error:
            measured.append(error)
    good = [item for item in measured if not isinstance(item, ValueError)]
    vocabularies = iter(batch_vocabulary([[item.lexical_tokens] for item in good]))
    return [
        item
        if isinstance(item, ValueError)
        else ScoredTranscript(_metrics(item, next(vocabularies)), item.lexical_tokens)
        for item in measured
    ]


def _measure(
    timing: _Timing,
    recording_duration_s: float | None,
    detected: bool,
    spans: tuple[Sequence[_Span], Sequence[_Span]] | None,
) -> _Measured:
    """Disfluencies and syllables of one transcript given its timing and its used ``(voiced_gap, held_sound)``
    spans (``voiced_gap`` merged; ``None``: none); ``ValueError`` on an invalid recording duration."""
    recording = None if recording_duration_s is None else _check_time(recording_duration_s, "recording_duration_s")
    tokens = timing.tokens
    forms = list(map(filled_pause_form, tokens))  # the same tokens' forms serve every disfluency measure
    not_filled = list(map(operator.is_, forms, repeat(None)))
    # The lexical tokens: the tokens without filled pauses. They equal lexical_tokens(words.text), since a token
    # tokenizes to itself (tokenize is idempotent), and they are what the repetitions look at.
    lexical = tuple(compress(tokens, not_filled))
    filled = _count_forms(forms)
    lexical_fillers = len(tokens) - len(lexical)
    voiced, held = spans if spans is not None else ((), ())
    filled_spans, voiced_only = lexical_fillers, 0
    if voiced or lexical_fillers > 1:
        filled_spans, voiced_only = _filled_pause_spans(timing, not_filled, voiced)
    repeated, hallucinated = lexical, 0
    if held and lexical:
        middles = (timing.token_starts + timing.token_ends) / 2
        inside = np.zeros(middles.shape, dtype=bool)
        for start, end in held:
            inside |= (middles >= start) & (middles <= end)
        keep = (~inside).tolist()
        repeated = tuple(compress(tokens, map(operator.and_, not_filled, keep)))
        hallucinated = len(lexical) - len(repeated)
    return _Measured(
        timing,
        recording,
        filled,
        filled_spans,
        voiced_only,
        _count_markers(_find_markers(tokens, forms, timing.run_starts)),
        tuple(_repetitions(repeated)),
        hallucinated,
        sum(map(syllable_count, tokens)),
        detected,
        lexical,
    )


def _filled_pause_spans(timing: _Timing, not_filled: Sequence[bool], voiced: Sequence[_Span]) -> tuple[int, int]:
    """``(merged filled-pause spans, of which without a lexical filler)`` of one transcript: its lexical fillers'
    word spans and its ``voiced_gap`` spans (merged), merged within :data:`FILLED_PAUSE_MERGE_GAP_S`."""
    where = [index for index, lexical in enumerate(not_filled) if not lexical]
    starts, ends = timing.token_starts[where].tolist(), timing.token_ends[where].tolist()
    tagged = sorted(
        [(start, end, True) for start, end in zip(starts, ends, strict=True)] + [(*s, False) for s in voiced]
    )
    count = without_filler = 0
    reach = -_INFINITY
    has_filler = False
    for start, end, lexical in tagged:
        if start > reach + FILLED_PAUSE_MERGE_GAP_S + _TIME_EPSILON_S:  # a new merged span
            if count and not has_filler:
                without_filler += 1
            count += 1
            has_filler = False
            reach = end
        reach = max(reach, end)
        has_filler = has_filler or lexical
    if count and not has_filler:
        without_filler += 1
    return count, without_filler


def _metrics(measured: _Measured, vocabulary: VocabularyMetrics) -> SubmissionMetrics:
    timing = measured.timing
    words = timing.word_count
    pauses = timing.pauses_s
    total_pauses = sum(pauses)
    phonation = timing.phonation_s
    syllables = measured.syllables
    return SubmissionMetrics(
        metrics_version=METRICS_VERSION,
        pause_threshold_s=timing.threshold_s,
        word_count=words,
        total_duration_s=timing.span_s,
        recording_duration_s=measured.recording_s,
        phonation_time_s=phonation,
        speech_rate_wpm=_per_minute(words, timing.span_s) if words else None,
        articulation_rate_wpm=_per_minute(words, phonation) if words else None,
        silent_pause_count=len(pauses),
        silent_pauses_per_minute=_per_minute(len(pauses), timing.span_s) if words else None,
        mean_silent_pause_s=_seconds(total_pauses / len(pauses)) if pauses else None,
        silent_pause_total_s=_seconds(total_pauses),
        silent_pauses_s=pauses,
        mean_length_of_run=words / (len(pauses) + 1) if words else None,
        syllable_count=syllables,
        speech_rate_sps=_per_second(syllables, timing.span_s) if words else None,
        articulation_rate_sps=_per_second(syllables, phonation) if words else None,
        mean_length_of_run_syllables=syllables / (len(pauses) + 1) if words else None,
        filled_pause_count=measured.filled_spans,
        filled_pauses=measured.filled,
        filled_pauses_per_minute=_per_minute(measured.filled_spans, timing.span_s) if words else None,
        filled_pauses_per_100_words=100.0 * measured.filled_spans / words if words else None,
        voiced_hesitation_count=measured.voiced_only,
        hesitation_detection=measured.detected,
        discourse_marker_count=sum(measured.markers.values()),
        discourse_markers=measured.markers,
        repetition_count=len(measured.repetitions),
        repetitions=measured.repetitions,
        hallucinated_word_count=measured.hallucinated,
        vocabulary_token_count=vocabulary.token_count,
        distinct_words=vocabulary.distinct_words,
        mattr=vocabulary.mattr,
        mtld=vocabulary.mtld,
        vocabulary_sufficient=vocabulary.sufficient,
    )
