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

import math
import numbers
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, compress
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from flows.metrics.lexicon import (
    EMPHATIC_REDUPLICATIONS,
    FILLED_PAUSE_FORMS,
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
from flows.metrics.tokens import word_tokens
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


class _Timing(NamedTuple):
    """The timing of one transcript (what the single-measure functions read)."""

    threshold_s: float
    word_count: int
    span_s: float
    pauses_s: tuple[float, ...]
    tokens: tuple[str, ...]

    @property
    def phonation_s(self) -> float:
        return _phonation(self.span_s, self.pauses_s)


def _phonation(span_s: float, pauses_s: Sequence[float]) -> float:
    """Phonation time in seconds: the speech span minus the silent pauses (de Jong & Wempe 2009), at least 0."""
    return _seconds(max(0.0, span_s - sum(pauses_s)))


class _Batch(NamedTuple):
    """The timing of a batch of transcripts (:func:`_batch_timing`), over the batch's concatenated tokens.

    Token ``k`` of the batch is ``tokens[k]``, of transcript ``owner[k]``, its word from ``token_starts[k]`` to
    ``token_ends[k]`` seconds; transcript ``t``'s tokens are ``token_bounds[t]:token_bounds[t + 1]``;
    ``run_starts`` holds the batch indices of the tokens that begin a run (each transcript's first token, and each
    one after a silent pause). ``spans_s`` and ``pauses_s``: each transcript's speech span and silent pauses, s.
    """

    threshold_s: float
    tokens: list[str]
    ids: _Array  # int64, per token: its id in lookups (:func:`_word_token_ids`)
    lookups: _Lookups
    owner: _Array  # int64, per token
    token_starts: _Array  # float64, per token, s
    token_ends: _Array
    token_bounds: list[int]  # count + 1 offsets
    spans_s: list[float]
    pauses_s: list[tuple[float, ...]]
    run_starts: set[int]


def _seconds(value: float) -> float:
    return round(value, _TIME_DECIMALS)


def _timing(words: TimedWords, threshold_s: float) -> _Timing:
    """The timing of one transcript: :func:`_batch_timing` of a batch of one (raises its ``ValueError``)."""
    batch = _batch_timing([words], _check_threshold(threshold_s), None)
    tokens = tuple(batch.tokens)
    return _Timing(batch.threshold_s, len(tokens), batch.spans_s[0], batch.pauses_s[0], tokens)


def _batch_timing(
    transcripts: Sequence[TimedWords], threshold_s: float, voiced: Sequence[Sequence[_Span]] | None
) -> _Batch:
    """Tokens, silent pauses, runs and speech span of each transcript (``threshold_s`` already checked), computed
    over the concatenated words of all ``transcripts``.

    Each word's timestamps are checked (``ValueError`` naming the word by its index in the batch's words, see
    :func:`_check_time`; columns of unequal length are a ``ValueError`` too): an invalid word raises for the whole
    batch (a batch of one names the word within its transcript). A word without tokens is ignored, timing
    included. A pause is the gap between consecutive words with tokens (the next one's start minus the previous
    one's end) when it is ``>= threshold_s`` (sub-microsecond tolerance); the span runs from the earliest start
    to the latest end of those words. ``voiced``: per transcript, its ``voiced_gap`` spans (sorted, merged;
    ``None``: none for any): a pause's gap loses the parts they cover, and each part left is a pause when it is
    itself ``>= threshold_s`` (a gap whose parts are all shorter is no pause: the voiced hesitation is phonation).
    """
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
    tokens, ids, counts, lookups = _word_token_ids(list(chain.from_iterable(words.text for words in transcripts)))
    owner = np.repeat(np.arange(count, dtype=np.int64), lengths)  # each word's transcript
    token_ends = np.cumsum(counts)
    first_token = token_ends - counts  # each word's first token, in the batch's tokens
    word_offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
    token_offsets = np.concatenate(([0], token_ends))[word_offsets]  # each transcript's first token
    token_owner = np.repeat(owner, counts)
    token_starts, token_ends = np.repeat(starts, counts), np.repeat(ends, counts)
    spoken = counts > 0
    starts, ends, owner, first_token = starts[spoken], ends[spoken], owner[spoken], first_token[spoken]
    gaps = starts[1:] - ends[:-1]
    # The spoken words that begin a run after a pause: a gap within one transcript of at least the threshold.
    after_pause = np.flatnonzero((owner[1:] == owner[:-1]) & (gaps + _TIME_EPSILON_S >= threshold_s)) + 1
    pause_owner = owner[after_pause]
    pauses = _round_to_microseconds(gaps[after_pause - 1]).tolist()
    run_starts = first_token[after_pause].tolist()
    pause_offsets = np.concatenate(([0], np.cumsum(np.bincount(pause_owner, minlength=count)))).tolist()
    spoken_words = np.bincount(owner, minlength=count)
    with_words = spoken_words > 0
    spans = np.zeros(count, dtype=np.float64)
    if starts.size:
        first_word = (np.cumsum(spoken_words) - spoken_words)[with_words]
        spans[with_words] = _round_to_microseconds(
            np.maximum.reduceat(ends, first_word) - np.minimum.reduceat(starts, first_word)
        )
    token_bounds = token_offsets.tolist()
    own_pauses = [tuple(pauses[low:high]) for low, high in zip(pause_offsets[:-1], pause_offsets[1:], strict=True)]
    starting = set(token_offsets[:-1][with_words].tolist())  # each transcript's first token
    if voiced is None or not any(voiced):
        starting.update(run_starts)
    else:  # each pause's gap: the previous word's end, the next one's start
        gap_starts, gap_ends = ends[after_pause - 1].tolist(), starts[after_pause].tolist()
        for index, spans_here in enumerate(voiced):
            first, last = pause_offsets[index], pause_offsets[index + 1]
            if not spans_here:
                starting.update(run_starts[first:last])
                continue
            kept: list[float] = []
            for at in range(first, last):
                silences = _silences(gap_starts[at], gap_ends[at], spans_here, threshold_s)
                if silences:
                    kept.extend(silences)
                    starting.add(run_starts[at])
            own_pauses[index] = tuple(kept)
    return _Batch(
        threshold_s,
        tokens,
        ids,
        lookups,
        token_owner,
        token_starts,
        token_ends,
        token_bounds,
        spans.tolist(),
        own_pauses,
        starting,
    )


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


# ------------------------------------------------------------------------------------------------ token ids

_FORM_NAMES: tuple[str, ...] = tuple(FILLED_PAUSE_FORMS)  # a token's form code indexes these; -1: no filled pause
_SINGLE_MARKERS = ("like", "so", "well")
_MAX_TOKEN_IDS = 1 << 16
"""Bound of the token table (:func:`_token_ids`): past it, a batch with new tokens starts a fresh table."""


class _Lookups(NamedTuple):
    """An immutable token table: the id of each token and word string seen, by token id what every rule asks of a
    token, and by word id the token ids of the word (:func:`~flows.metrics.tokens.word_tokens`)."""

    ids: dict[str, int]  # token -> id
    names: _Array  # object: the token of each id
    forms: _Array  # int8: index of filled_pause_form(token) in _FORM_NAMES, -1 for no filled pause
    syllables: _Array  # int64: syllable_count(token)
    single: _Array  # bool: the token is "like", "so" or "well"
    sequences: tuple[tuple[int, ...], ...]  # the ids of each marker sequence of _MULTIWORD_ORDER
    words: dict[str, int]  # ASR word string -> word id
    word_first: _Array  # int64, by word id: where its token ids begin in word_tokens
    word_counts: _Array  # int64, by word id: its number of tokens
    word_tokens: _Array  # int64: the token ids of every word, word after word


def _grown(base: _Lookups | None, tokens: Iterable[str], texts: Iterable[str]) -> _Lookups:
    """``base`` with the ``tokens`` and word strings ``texts`` it lacks (a fresh table when there is no ``base`` or
    it holds more than :data:`_MAX_TOKEN_IDS` tokens or words)."""
    if base is not None and max(len(base.ids), len(base.words)) > _MAX_TOKEN_IDS:
        base = None
    ids: dict[str, int] = {} if base is None else dict(base.ids)
    words: dict[str, int] = {} if base is None else dict(base.words)
    for sequence, _name in _MULTIWORD_ORDER:  # the markers' tokens always have ids (:func:`_find_markers`)
        for token in sequence:
            ids.setdefault(token, len(ids))
    flat: list[int] = []
    counts: list[int] = []
    for text in texts:
        if text not in words:
            words[text] = len(words)
            own = word_tokens(text)
            for token in own:
                ids.setdefault(token, len(ids))
            flat.extend(ids[token] for token in own)
            counts.append(len(own))
    for token in tokens:
        ids.setdefault(token, len(ids))
    names = list(ids)[0 if base is None else len(base.ids) :]
    arrays = [
        np.array(names, dtype=object),
        np.array(
            [-1 if (form := filled_pause_form(name)) is None else _FORM_NAMES.index(form) for name in names],
            dtype=np.int8,
        ),
        np.array(list(map(syllable_count, names)), dtype=np.int64),
        np.array([name in _SINGLE_MARKERS for name in names], dtype=bool),
        np.array(counts, dtype=np.int64),
        np.array(flat, dtype=np.int64),
    ]
    if base is not None:
        previous = (base.names, base.forms, base.syllables, base.single, base.word_counts, base.word_tokens)
        arrays = [np.concatenate((old, new)) for old, new in zip(previous, arrays, strict=True)]
    names_array, forms, syllables, single, word_counts, word_token_ids = arrays
    sequences = tuple(tuple(ids[token] for token in sequence) for sequence, _name in _MULTIWORD_ORDER)
    first = np.cumsum(word_counts) - word_counts
    return _Lookups(ids, names_array, forms, syllables, single, sequences, words, first, word_counts, word_token_ids)


_LOOKUPS_LOCK = threading.Lock()
_LOOKUPS: _Lookups | None = None  # the current table (built on first use: the syllable dictionary loads then)


def _token_ids(tokens: Sequence[str]) -> tuple[_Array, _Lookups]:
    """The int64 id of each token and the table they index (:class:`_Lookups`): a dict lookup per token, each new
    token measured once (its filled-pause form, :func:`~flows.metrics.syllables.syllable_count`, whether it is a
    one-word marker). Tables are never changed, only replaced, so that concurrent callers each see one."""
    global _LOOKUPS
    lookups = _LOOKUPS
    found: list[int | None] = [None] if lookups is None else list(map(lookups.ids.get, tokens))
    if lookups is None or None in found:
        with _LOOKUPS_LOCK:
            lookups = _LOOKUPS = _grown(_LOOKUPS, tokens, ())
        found = list(map(lookups.ids.__getitem__, tokens))
    return np.array(found, dtype=np.int64), lookups


def _word_token_ids(texts: Sequence[str]) -> tuple[list[str], _Array, _Array, _Lookups]:
    """The tokens of ASR words (:func:`~flows.metrics.tokens.word_tokens` of each, concatenated), their ids, each
    word's number of tokens (int64) and the table (see :func:`_token_ids`): a dict lookup per word."""
    global _LOOKUPS
    lookups = _LOOKUPS
    wids: list[int | None] = [None] if lookups is None else list(map(lookups.words.get, texts))
    if lookups is None or None in wids:
        with _LOOKUPS_LOCK:
            lookups = _LOOKUPS = _grown(_LOOKUPS, (), texts)
        wids = list(map(lookups.words.__getitem__, texts))
    word_ids = np.array(wids, dtype=np.int64)
    counts = lookups.word_counts[word_ids]
    ends = np.cumsum(counts)
    size = int(ends[-1]) if ends.size else 0
    ids = lookups.word_tokens[np.repeat(lookups.word_first[word_ids] - (ends - counts), counts) + np.arange(size)]
    return lookups.names[ids].tolist(), ids, counts, lookups


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
    ids, lookups = _token_ids(tokens)
    return _count_forms(lookups.forms[ids], np.zeros(len(tokens), dtype=np.int64), 1)[0]


def _count_forms(forms: _Array, owner: _Array, count: int) -> list[dict[str, int]]:
    """Per transcript (``owner``: each token's, of ``count``), the occurrences of each filled-pause form among the
    tokens (``forms``: each token's form code, :class:`_Lookups`), in order of first occurrence."""
    counts: list[dict[str, int]] = [{} for _ in range(count)]
    filled = forms >= 0
    for code, transcript in zip(forms[filled].tolist(), owner[filled].tolist(), strict=True):
        form = _FORM_NAMES[code]
        here = counts[transcript]
        here[form] = here.get(form, 0) + 1
    return counts


def _neighbour(tokens: Sequence[str], filled: Sequence[bool], index: int, step: int, low: int, high: int) -> str | None:
    """The nearest token of ``tokens[low:high]`` from ``index`` in direction ``step`` that is not a filled pause
    (``filled``: whether each token is one)."""
    index += step
    while low <= index < high:
        if not filled[index]:
            return tokens[index]
        index += step
    return None


# The multi-word markers, longest sequences first, so that a longer spelling wins.
_MULTIWORD_ORDER: list[tuple[tuple[str, ...], str]] = sorted(
    MULTIWORD_DISCOURSE_MARKERS.items(), key=lambda item: -len(item[0])
)


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
    first token. :func:`compute_metrics` passes the runs it found. A batch of one of :func:`_find_markers`.
    """
    tokens = list(tokens)
    starts = {0} if run_starts is None else set(run_starts)
    ids, lookups = _token_ids(tokens)
    return _find_markers(tokens, ids, lookups, [0, len(tokens)], starts)[0]


def _find_markers(
    tokens: Sequence[str], ids: _Array, lookups: _Lookups, bounds: Sequence[int], starts: Collection[int]
) -> list[list[tuple[int, str]]]:
    """:func:`find_discourse_markers` of each transcript of a batch: ``tokens`` are the batch's tokens, ``ids``
    and ``lookups`` their :func:`_token_ids`, transcript ``t``'s are ``bounds[t]:bounds[t + 1]``; ``starts`` the
    batch indices that begin a run. Indices in the result are within each transcript."""
    size = len(tokens)
    filled_array, single = lookups.forms[ids] >= 0, lookups.single[ids]
    # The multi-word marker each token begins (an index of _MULTIWORD_ORDER; -1: none), within its transcript.
    offsets = np.asarray(bounds, dtype=np.int64)
    ends = np.repeat(offsets[1:], offsets[1:] - offsets[:-1])
    begins = np.full(size, -1, dtype=np.int64)
    for number, sequence_ids in enumerate(lookups.sequences):
        span = len(sequence_ids)
        if size < span:
            continue
        match = np.arange(size - span + 1) + span <= ends[: size - span + 1]
        for offset, token_id in enumerate(sequence_ids):
            match &= ids[offset : size - span + 1 + offset] == token_id
        where = np.flatnonzero(match & (begins[: size - span + 1] < 0))
        begins[where] = number
    # Any other token just clears both states of the scan, so it visits only filled pauses, the tokens that begin
    # a multi-word marker and "like", "so", "well", and clears the states when it skips over other tokens.
    read = np.flatnonzero(filled_array | (begins >= 0) | single)
    visits = read.tolist()
    sequences = begins[read].tolist()
    cuts = np.searchsorted(read, bounds).tolist()
    filled = filled_array.tolist()
    found_all: list[list[tuple[int, str]]] = []
    for transcript in range(len(bounds) - 1):
        found: list[tuple[int, str]] = []
        found_all.append(found)
        first, last = cuts[transcript], cuts[transcript + 1]
        if first == last:
            continue
        low, high = bounds[transcript], bounds[transcript + 1]
        at_run_start = False  # only filled pauses and markers since the start of the run
        after_disfluency = False  # the previous token was a filled pause or ended a marker
        index = low  # the next token to read
        for visited, begun in zip(visits[first:last], sequences[first:last], strict=True):
            if visited < index:  # inside a multi-word marker just found
                continue
            if visited > index:
                at_run_start = False
                after_disfluency = False
            index = visited
            if index in starts:
                at_run_start = True
            if filled[index]:
                after_disfluency = True
                index += 1
                continue
            token = tokens[index]
            marker: str | None = None
            length = 1
            if begun >= 0:
                sequence, name = _MULTIWORD_ORDER[begun]
                previous = _neighbour(tokens, filled, index, -1, low, high)
                following = _neighbour(tokens, filled, index + len(sequence) - 1, +1, low, high)
                if name == "you know":
                    accepted = previous not in YOU_KNOW_BLOCK_PREVIOUS and following not in YOU_KNOW_BLOCK_NEXT
                else:  # "i mean"
                    accepted = previous not in I_MEAN_BLOCK_PREVIOUS and following not in I_MEAN_BLOCK_NEXT
                if accepted:
                    marker, length = name, len(sequence)
            if marker is None and token in _SINGLE_MARKERS:
                before_filled_pause = index + 1 < high and filled[index + 1]
                if token == "like":
                    if (after_disfluency or before_filled_pause) and _neighbour(
                        tokens, filled, index, -1, low, high
                    ) not in LIKE_BLOCK_PREVIOUS:
                        marker = "like"
                elif at_run_start or before_filled_pause:
                    blocked = SO_BLOCK_NEXT if token == "so" else WELL_BLOCK_NEXT
                    if _neighbour(tokens, filled, index, +1, low, high) not in blocked:
                        marker = token
            if marker is not None:
                found.append((index - low, marker))
                after_disfluency = True
                index += length
                continue
            at_run_start = False
            after_disfluency = False
            index += 1
    return found_all


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
    that") cannot be told apart and are counted. A batch of one of :func:`_repetitions`.
    """
    tokens = list(tokens)
    ids, lookups = _token_ids(tokens)
    return _repetitions(tokens, ids, np.zeros(len(tokens), dtype=np.int64), lookups.forms[ids] < 0, 1)[0]


def _repetitions(tokens: Sequence[str], ids: _Array, owner: _Array, content: _Array, count: int) -> list[list[str]]:
    """:func:`find_repetitions` of each of ``count`` transcripts of a batch: ``tokens``, their :func:`_token_ids`
    and ``owner`` (each token's transcript) are the batch's; ``content`` (bool, per token) marks the tokens the
    rule looks at (the lexical tokens: filled pauses removed)."""
    repetitions: list[list[str]] = [[] for _ in range(count)]
    where = np.flatnonzero(content)
    kept, kept_owner = ids[where], owner[where]
    size = kept.size
    # Every repetition begins at a token equal to the next one (a repeated token) or at a 2-gram equal to the next
    # two tokens, within one transcript; the scan visits only those, left to right, and skips the second token of
    # a repeated 2-gram.
    doubled = np.zeros(size, dtype=bool)
    doubled[:-1] = (kept[:-1] == kept[1:]) & (kept_owner[:-1] == kept_owner[1:])
    paired = np.zeros(size, dtype=bool)
    if size > 3:
        paired[:-3] = (kept[:-3] == kept[2:-1]) & (kept[1:-2] == kept[3:]) & (kept_owner[:-3] == kept_owner[3:])
    visits = np.flatnonzero(doubled | paired)
    if not visits.size:
        return repetitions
    index = 0  # the next token that can begin a repetition
    for visited, single, first, second, transcript in zip(
        visits.tolist(),
        doubled[visits].tolist(),
        where[visits].tolist(),
        where[visits + 1].tolist(),
        kept_owner[visits].tolist(),
        strict=True,
    ):
        if visited < index:
            continue
        token = tokens[first]
        if single:
            if token not in EMPHATIC_REDUPLICATIONS:
                repetitions[transcript].append(token)
            index = visited + 1
        else:
            repetitions[transcript].append(f"{token} {tokens[second]}")
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
    ``transcripts``. Every measure is computed for the whole batch at once: the timing (checks, gaps, pauses, runs,
    spans) over the transcripts' concatenated words (:func:`_batch_timing`), each rule over their concatenated
    tokens as integer ids (:func:`_word_token_ids`: what a rule asks of a token is looked up once per distinct
    token), visiting in Python only the tokens a rule can apply to (:func:`_score`), and the vocabulary in one call
    of the compiled kernel (:func:`flows.metrics.vocabulary.batch_vocabulary`). When a transcript's words are
    invalid, each transcript's words are checked alone (so that the error names the word within its transcript)
    and the valid ones are measured together.
    """
    threshold = _check_threshold(pause_threshold_s)
    recordings = [None] * len(transcripts) if recording_durations_s is None else list(recording_durations_s)
    if len(recordings) != len(transcripts):
        raise ValueError(f"{len(recordings)} recording durations for {len(transcripts)} transcripts")
    heard: Sequence[Sequence[Hesitation] | None] = [None] * len(transcripts) if hesitations is None else hesitations
    if len(heard) != len(transcripts):
        raise ValueError(f"{len(heard)} hesitation lists for {len(transcripts)} transcripts")
    spans: list[tuple[list[_Span], list[_Span]] | None] = []  # (voiced, held) of each transcript
    errors: list[ValueError | None] = [None] * len(transcripts)  # each transcript's first error
    span_errors: list[ValueError | None] = []
    for items in heard:
        try:
            spans.append(
                None
                if not items
                else (_merge(_spans(items, VOICED_GAP), FILLED_PAUSE_MERGE_GAP_S), _spans(items, HELD_SOUND))
            )
            span_errors.append(None)
        except ValueError as error:
            spans.append(None)
            span_errors.append(error)
    voiced = [() if item is None else item[0] for item in spans]
    measured = list(range(len(transcripts)))  # the transcripts whose words are valid
    try:
        batch = _batch_timing(transcripts, threshold, voiced)
    except ValueError:  # find the invalid transcripts (each as a batch of one: the error names its word), then
        for index, words in enumerate(transcripts):  # measure the others together
            try:
                _batch_timing([words], threshold, None)
            except ValueError as error:
                errors[index] = error
        measured = [index for index in measured if errors[index] is None]
        batch = _batch_timing([transcripts[i] for i in measured], threshold, [voiced[i] for i in measured])
    checked: list[float | None] = []
    for index in measured:
        recording = recordings[index]
        try:
            if span_errors[index] is not None:
                raise span_errors[index]  # type: ignore[misc]  # not None
            checked.append(None if recording is None else _check_time(recording, "recording_duration_s"))
        except ValueError as error:
            errors[index] = error
            checked.append(None)
    # A transcript with invalid hesitations or recording duration is measured too, and its measures dropped.
    scored = dict(
        zip(
            measured,
            _score(batch, checked, [heard[i] is not None for i in measured], [spans[i] for i in measured]),
            strict=True,
        )
    )
    return [scored[index] if error is None else error for index, error in enumerate(errors)]


def _score(
    batch: _Batch,
    recordings_s: Sequence[float | None],
    detected: Sequence[bool],
    spans: Sequence[tuple[Sequence[_Span], Sequence[_Span]] | None],
) -> list[ScoredTranscript]:
    """The :class:`ScoredTranscript` of each transcript of ``batch`` (:func:`_batch_timing`) given its recording
    duration (checked, s), whether the detector ran and its used ``(voiced_gap, held_sound)`` spans (``voiced_gap``
    merged; ``None``: none). Each rule runs once over the batch's tokens (:func:`_token_ids`)."""
    count = len(recordings_s)
    tokens, ids, lookups, owner, bounds = batch.tokens, batch.ids, batch.lookups, batch.owner, batch.token_bounds
    forms = lookups.forms[ids]
    filled = forms >= 0
    lexical = ~filled
    # The lexical tokens: the tokens without filled pauses. They equal lexical_tokens(words.text), since a token
    # tokenizes to itself (tokenize is idempotent), and they are what the repetitions look at.
    lexical_all = list(compress(tokens, lexical.tolist()))
    lexical_bounds = np.concatenate(([0], np.cumsum(np.bincount(owner[lexical], minlength=count)))).tolist()
    lexicals = [tuple(lexical_all[low:high]) for low, high in zip(lexical_bounds[:-1], lexical_bounds[1:], strict=True)]
    content = lexical
    hallucinated = [0] * count
    held_in = [index for index, found in enumerate(spans) if found is not None and found[1]]
    if held_in:  # lexical tokens whose word's midpoint lies inside a held sound are not repetitions
        content = lexical.copy()
        for index in held_in:
            low, high = bounds[index], bounds[index + 1]
            middles = (batch.token_starts[low:high] + batch.token_ends[low:high]) / 2
            inside = np.zeros(middles.shape, dtype=bool)
            for start, end in spans[index][1]:  # type: ignore[index]  # held_in has spans
                inside |= (middles >= start) & (middles <= end)
            content[low:high] &= ~inside
            hallucinated[index] = int(np.count_nonzero(lexical[low:high] & inside))
    filled_spans, voiced_only = _filled_pause_spans(batch, filled, [() if s is None else s[0] for s in spans])
    syllables = np.bincount(owner, weights=lookups.syllables[ids], minlength=count).astype(np.int64).tolist()
    markers = _find_markers(tokens, ids, lookups, bounds, batch.run_starts)
    repetitions = _repetitions(tokens, ids, owner, content, count)
    vocabularies = batch_vocabulary([[own] for own in lexicals])
    return [
        ScoredTranscript(
            _metrics(
                batch.threshold_s,
                bounds[index + 1] - bounds[index],
                batch.spans_s[index],
                batch.pauses_s[index],
                recordings_s[index],
                syllables[index],
                filled_spans[index],
                filled_forms,
                voiced_only[index],
                detected[index],
                _count_markers(markers[index]),
                tuple(repetitions[index]),
                hallucinated[index],
                vocabularies[index],
            ),
            lexicals[index],
        )
        for index, filled_forms in enumerate(_count_forms(forms, owner, count))
    ]


def _filled_pause_spans(
    batch: _Batch, filled: _Array, voiced: Sequence[Sequence[_Span]]
) -> tuple[list[int], list[int]]:
    """Per transcript, ``(merged filled-pause spans, of which without a lexical filler)``: its lexical fillers' word
    spans (``filled``: whether each token of ``batch`` is one) and its ``voiced_gap`` spans (merged), merged within
    :data:`FILLED_PAUSE_MERGE_GAP_S`, in order of ``(start, end)`` (a voiced span before a filler's equal span)."""
    count = len(voiced)
    where = np.flatnonzero(filled)
    starts, ends, owners = batch.token_starts[where], batch.token_ends[where], batch.owner[where]
    lexical = np.ones(where.size, dtype=bool)
    if any(voiced):
        extra = [(start, end, index) for index, own in enumerate(voiced) for start, end in own]
        starts = np.concatenate((starts, np.array([item[0] for item in extra], dtype=np.float64)))
        ends = np.concatenate((ends, np.array([item[1] for item in extra], dtype=np.float64)))
        owners = np.concatenate((owners, np.array([item[2] for item in extra], dtype=np.int64)))
        lexical = np.concatenate((lexical, np.zeros(len(extra), dtype=bool)))
    order = np.lexsort((lexical, ends, starts, owners))
    spans = [0] * count
    without_filler = [0] * count
    current = -1
    reach = -_INFINITY
    has_filler = False
    for start, end, is_filler, transcript in zip(
        starts[order].tolist(), ends[order].tolist(), lexical[order].tolist(), owners[order].tolist(), strict=True
    ):
        if transcript != current:
            if current >= 0 and not has_filler:
                without_filler[current] += 1
            current, reach, has_filler = transcript, -_INFINITY, False
        if start > reach + FILLED_PAUSE_MERGE_GAP_S + _TIME_EPSILON_S:  # a new merged span
            if spans[transcript] and not has_filler:
                without_filler[transcript] += 1
            spans[transcript] += 1
            has_filler = False
            reach = end
        reach = max(reach, end)
        has_filler = has_filler or is_filler
    if current >= 0 and not has_filler:
        without_filler[current] += 1
    return spans, without_filler


def _metrics(
    threshold_s: float,
    words: int,
    span_s: float,
    pauses: tuple[float, ...],
    recording_s: float | None,
    syllables: int,
    filled_spans: int,
    filled: dict[str, int],
    voiced_only: int,
    detected: bool,
    markers: dict[str, int],
    repetitions: tuple[str, ...],
    hallucinated: int,
    vocabulary: VocabularyMetrics,
) -> SubmissionMetrics:
    """The :class:`SubmissionMetrics` of one transcript's measures (definitions in :func:`compute_metrics_batch`)."""
    total_pauses = sum(pauses)
    phonation = _phonation(span_s, pauses)
    return SubmissionMetrics(
        metrics_version=METRICS_VERSION,
        pause_threshold_s=threshold_s,
        word_count=words,
        total_duration_s=span_s,
        recording_duration_s=recording_s,
        phonation_time_s=phonation,
        speech_rate_wpm=_per_minute(words, span_s) if words else None,
        articulation_rate_wpm=_per_minute(words, phonation) if words else None,
        silent_pause_count=len(pauses),
        silent_pauses_per_minute=_per_minute(len(pauses), span_s) if words else None,
        mean_silent_pause_s=_seconds(total_pauses / len(pauses)) if pauses else None,
        silent_pause_total_s=_seconds(total_pauses),
        silent_pauses_s=pauses,
        mean_length_of_run=words / (len(pauses) + 1) if words else None,
        syllable_count=syllables,
        speech_rate_sps=_per_second(syllables, span_s) if words else None,
        articulation_rate_sps=_per_second(syllables, phonation) if words else None,
        mean_length_of_run_syllables=syllables / (len(pauses) + 1) if words else None,
        filled_pause_count=filled_spans,
        filled_pauses=filled,
        filled_pauses_per_minute=_per_minute(filled_spans, span_s) if words else None,
        filled_pauses_per_100_words=100.0 * filled_spans / words if words else None,
        voiced_hesitation_count=voiced_only,
        hesitation_detection=detected,
        discourse_marker_count=sum(markers.values()),
        discourse_markers=markers,
        repetition_count=len(repetitions),
        repetitions=repetitions,
        hallucinated_word_count=hallucinated,
        vocabulary_token_count=vocabulary.token_count,
        distinct_words=vocabulary.distinct_words,
        mattr=vocabulary.mattr,
        mtld=vocabulary.mtld,
        vocabulary_sufficient=vocabulary.sufficient,
    )
