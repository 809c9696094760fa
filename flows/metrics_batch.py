"""Every metric of many transcripts at once: :func:`flows.metrics.compute_metrics`, batched (numpy).

This module is an optimisation, not a definition. The metric definitions, their sources and their conventions
are those of :mod:`flows.metrics` (:func:`~flows.metrics.compute_metrics`, ``_timing``, ``_find_markers``,
``_repetitions``, :func:`~flows.metrics.mattr`, :func:`~flows.metrics.mtld`,
:func:`~flows.metrics.lexical_vocabulary`), which stay the reference; :func:`compute_metrics_batch` returns
exactly what they return (``==`` on every field, floats bit for bit, dict insertion order, tuples), and exactly the
``ValueError`` they raise for an invalid transcript. ``tests/unit/test_metrics_batch.py`` holds the two together
on thousands of random transcripts. A change of definition is made in :mod:`flows.metrics` (with a bump of
``METRICS_VERSION``) and then mirrored here until those tests pass again.

It exists for speed: the metric dataflow scores a batch of a few hundred transcripts at a time, and the
per-token Python loops of ``compute_metrics`` cost ~300 us per 120-word transcript on this project's 2-core
machine. How the batch gets the same numbers:

* **Tokens.** Every distinct ASR word string gets a process-wide integer id, with its tokens
  (:func:`flows.metrics.tokenize`) stored once as token ids; every token type carries its filled-pause form, its
  role in discourse markers and its string. A batch is then one dict lookup per word and numpy gathers.
* **Timing.** Timestamps of the whole batch are two float64 arrays. Validity (finite, non-negative,
  ``end >= start``), gaps, the pause mask (``gap + 1e-6 >= threshold``, the same IEEE operations as the scalar
  code) and the speech span (``np.minimum.reduceat`` / ``np.maximum.reduceat`` of the words with tokens) are
  vectorised. Rounding to the microsecond is Python's ``round(x, 6)`` (correctly rounded): numpy computes
  ``rint(x * 1e6) / 1e6``, which is provably the same double whenever ``|x * 1e6| < 1e12`` and ``x * 1e6`` lies
  within 0.4 of an integer (the product's error is then far below the distance to a rounding tie, and the
  division of an exact integer by 1e6 is correctly rounded like Python's decimal-to-double conversion); any
  other value is rounded by Python. Sums of pauses are Python's ``sum`` over the same tuple.
* **Disfluencies.** Filled pauses are a gather of the tokens' forms. Repetition candidates (a content token
  equal to the next, or a 2-gram equal to the next two) and discourse-marker candidates (``like``/``so``/
  ``well``/``y'know``, and ``you``/``ya``/``i`` only when followed by ``know``/``mean``) are found with array
  comparisons; the sequential rules of ``_repetitions`` and ``_find_markers`` then run in Python over those
  positions only, with the state they would have had (the last token that ended a run's start, the last
  visible run start, whether the previous token was a filled pause or ended a marker) taken from arrays.
  Other marker-first tokens (``you`` not followed by ``know``) are rejected by the reference without looking
  at their context, so they are plain tokens here.
* **Vocabulary.** MATTR in closed form and MTLD in lock-step over the transcripts of the batch, as in
  :mod:`flows.vocabulary` (whose ``_mtld_lockstep`` is reused); below :data:`flows.vocabulary.MIN_BATCH`
  transcripts with 50 lexical tokens or more, :func:`flows.metrics.lexical_vocabulary` per transcript.

Anything unusual goes through :func:`flows.metrics.compute_metrics` itself for that transcript only: a timestamp
that is not a plain ``float`` (an ``int``, a ``bool``, a numpy scalar, ``None``), an invalid timestamp (the
exact error message comes from the scalar code), a negative zero, a ``recording_duration_s`` that is not
``None`` or a valid ``float``, and tokens whose re-normalisation for the vocabulary is not the identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from flows.lexicon import (
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
from flows.metrics import (
    _MARKER_FIRST_TOKENS,
    _TIME_EPSILON_S,
    DEFAULT_PAUSE_THRESHOLD_S,
    MATTR_WINDOW,
    METRICS_VERSION,
    MIN_VOCABULARY_TOKENS,
    MTLD_THRESHOLD,
    SubmissionMetrics,
    _check_threshold,
    _count_forms,
    _count_markers,
    _find_markers,
    _lexical_of_token,
    _neighbour,
    _tokenize_cached,
    compute_metrics,
    lexical_vocabulary,
    vocabulary_metrics,
)
from flows.records import lexical_tokens

__all__ = ["MIN_VECTORISED_VOCABULARY", "ScoredColumns", "TranscriptColumns", "compute_metrics_batch"]

TranscriptColumns = tuple[Sequence[str], Sequence[float], Sequence[float], float | None]
"""One transcript as columns: (word texts as the ASR emitted them, e.g. ``" Country."``; word starts in seconds;
word ends in seconds; the recording's duration in seconds or ``None``)."""


@dataclass(frozen=True, slots=True)
class ScoredColumns:
    """The metrics of one transcript and its lexical tokens.

    ``metrics`` equals ``flows.metrics.compute_metrics(words, pause_threshold_s=...,
    recording_duration_s=...)``; ``lexical_tokens`` equals ``flows.records.lexical_tokens(texts)`` (the
    tokens the learner windows measure vocabulary over).
    """

    metrics: SubmissionMetrics
    lexical_tokens: tuple[str, ...]


class _Word(NamedTuple):
    """A :class:`flows.metrics.TimedWord` for the scalar fallback."""

    word: str
    start: float
    end: float


_Array = npt.NDArray[Any]
_INFINITY = math.inf
_MAX_WORD_TYPES = 1 << 20
"""Registry size above which it is cleared (between batches; ids only need to agree within one batch)."""
_MAX_GRID_CELLS = 2_000_000
"""Bound of one MTLD lock-step chunk (2 passes x transcripts x tokens of the longest; int32 cells)."""
MIN_VECTORISED_VOCABULARY = 32
"""Fewest transcripts with enough tokens for MATTR/MTLD for which they are computed in lock-step (a few numpy
calls per token position, whatever the number of transcripts); fewer use :func:`flows.metrics.lexical_vocabulary`
(break-even measured on this project's 2-core machine: ~20 transcripts of 114 tokens)."""


# ----------------------------------------------------------------------------------------- marker lexicon

_SINGLE_RULE_TOKENS = ("like", "so", "well")  # as hard-coded in flows.metrics._find_markers
_PAIR_SECOND = {sequence[0]: sequence[1] for sequence in MULTIWORD_DISCOURSE_MARKERS if len(sequence) == 2}
_SINGLE_SEQUENCES = {sequence[0] for sequence in MULTIWORD_DISCOURSE_MARKERS if len(sequence) == 1}
_SINGLES = _SINGLE_SEQUENCES | set(_SINGLE_RULE_TOKENS)
# The candidate-only marker pass relies on this shape of the lexicon; otherwise transcripts with a marker-first
# token go through flows.metrics._find_markers whole (same result, slower).
_FAST_MARKERS = (
    all(len(sequence) <= 2 for sequence in MULTIWORD_DISCOURSE_MARKERS)
    and len(_PAIR_SECOND) == sum(len(sequence) == 2 for sequence in MULTIWORD_DISCOURSE_MARKERS)
    and not (set(_PAIR_SECOND) & _SINGLES)
    and _MARKER_FIRST_TOKENS == frozenset(_PAIR_SECOND) | _SINGLES
    and not (set(_PAIR_SECOND.values()) & _MARKER_FIRST_TOKENS)
    and all(filled_pause_form(token) is None for token in [*_MARKER_FIRST_TOKENS, *_PAIR_SECOND.values()])
)

# --------------------------------------------------------------------------------------------- registry


class _Column:
    """A growable numpy column (amortised appends, a view of the filled part)."""

    __slots__ = ("data", "size")

    def __init__(self, dtype: Any) -> None:
        self.data: _Array = np.empty(1024, dtype=dtype)
        self.size = 0

    def extend(self, values: Sequence[Any]) -> None:
        end = self.size + len(values)
        if end > self.data.size:
            grown = np.empty(max(end, 2 * self.data.size), dtype=self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = values
        self.size = end

    def view(self) -> _Array:
        return self.data[: self.size]


class _Registry:
    """Process-wide ids of ASR word strings and token types, with what the batch needs to know of each."""

    def __init__(self) -> None:
        self.words: dict[str, int] = {}
        self.word_token_count = _Column(np.int64)
        self.word_token_offset = _Column(np.int64)
        self.token_sequence = _Column(np.int64)  # token ids of every word type, concatenated
        self.tokens: dict[str, int] = {}
        self.token_string = _Column(object)
        self.token_form = _Column(np.int64)  # index into form_names + 1; 0: not a filled pause
        self.token_kind = _Column(np.int8)  # 0: plain, 1: first of a 2-token marker, 2: a 1-token candidate
        self.token_pair_second = _Column(np.int64)  # kind 1: token id of the marker's second token
        self.token_regular = _Column(np.bool_)  # re-normalising it for the vocabulary is the identity
        self.form_names: list[str | None] = [None]
        self.form_ids: dict[str, int] = {}

    def token_id(self, token: str) -> int:
        found = self.tokens.get(token)
        if found is not None:
            return found
        form = filled_pause_form(token)
        if form is not None and form not in self.form_ids:
            self.form_ids[form] = len(self.form_names)
            self.form_names.append(form)
        second = self.token_id(_PAIR_SECOND[token]) if token in _PAIR_SECOND else -1
        kind = 1 if second >= 0 else 2 if token in _SINGLES else 0
        identifier = len(self.tokens)
        self.tokens[token] = identifier
        self.token_string.extend([token])
        self.token_form.extend([0 if form is None else self.form_ids[form]])
        self.token_kind.extend([kind])
        self.token_pair_second.extend([second])
        self.token_regular.extend([_lexical_of_token(token) == (() if form is not None else (token,))])
        return identifier

    def word_ids(self, texts: list[str]) -> _Array:
        """The word ids of ``texts`` (registering new words). Raises ``TypeError`` for a text that is not a str."""
        words = self.words
        try:
            return np.fromiter(map(words.__getitem__, texts), dtype=np.int64, count=len(texts))
        except KeyError:
            pass
        for text in texts:
            if text not in words:
                if not isinstance(text, str):
                    raise TypeError(f"word texts must be str, got {text!r}")
                token_ids = [self.token_id(token) for token in _tokenize_cached(text)]
                self.word_token_count.extend([len(token_ids)])
                self.word_token_offset.extend([self.token_sequence.size])
                self.token_sequence.extend(token_ids)
                words[text] = len(words)
        return np.fromiter(map(words.__getitem__, texts), dtype=np.int64, count=len(texts))


_REGISTRY = _Registry()


# ------------------------------------------------------------------------------------------------ entry point


def compute_metrics_batch(
    transcripts: Sequence[TranscriptColumns],
    *,
    pause_threshold_s: float = DEFAULT_PAUSE_THRESHOLD_S,
) -> list[ScoredColumns | ValueError]:
    """:func:`flows.metrics.compute_metrics` and :func:`flows.records.lexical_tokens` of many transcripts.

    ``transcripts``: ``(texts, starts, ends, recording_duration_s)`` per transcript — the words as the ASR
    emitted them (``" Country."``), their start and end times in seconds from the start of the recording (three
    sequences of equal length), and the recording's duration in seconds or ``None``. ``pause_threshold_s``:
    the silent-pause threshold in seconds, as for ``compute_metrics``.

    Returns one item per transcript, in order: a :class:`ScoredColumns` whose ``metrics`` equal
    ``compute_metrics(words, pause_threshold_s=pause_threshold_s, recording_duration_s=...)`` exactly (every
    field, floats bit for bit) and whose ``lexical_tokens`` equal ``lexical_tokens(texts)``; or, for a
    transcript ``compute_metrics`` rejects (invalid timestamps, threshold or recording duration), the
    ``ValueError`` it raises, same message. Columns of unequal length give a ``ValueError`` for that transcript.
    One bad transcript does not affect the others. Raises ``TypeError`` (for the whole batch) only when a word
    text is not a ``str``. Definitions and sources: :mod:`flows.metrics`; how it is batched: this module's
    docstring.
    """
    try:
        threshold = _check_threshold(pause_threshold_s)
    except ValueError:
        return [_scalar(transcript, pause_threshold_s) for transcript in transcripts]
    results: list[ScoredColumns | ValueError | None] = [None] * len(transcripts)
    batch: list[int] = []
    for index, (texts, starts, ends, recording) in enumerate(transcripts):
        if not len(texts) == len(starts) == len(ends):
            results[index] = ValueError(
                f"texts, starts and ends differ in length ({len(texts)}, {len(starts)}, {len(ends)})"
            )
        elif recording is None or (type(recording) is float and 0.0 <= recording < _INFINITY):
            batch.append(index)
        else:  # an int, or invalid: the scalar code converts it or raises its own error
            results[index] = _scalar(transcripts[index], pause_threshold_s)
    for index, item in zip(batch, _batch([transcripts[index] for index in batch], threshold), strict=True):
        results[index] = _scalar(transcripts[index], pause_threshold_s) if item is None else item
    return [item for item in results if item is not None]


def _scalar(transcript: TranscriptColumns, pause_threshold_s: float) -> ScoredColumns | ValueError:
    """One transcript through the reference code (the fallback for anything unusual)."""
    texts, starts, ends, recording = transcript
    words = [_Word(*word) for word in zip(texts, starts, ends, strict=True)]
    try:
        metrics = compute_metrics(words, pause_threshold_s=pause_threshold_s, recording_duration_s=recording)
    except ValueError as exc:
        return exc
    return ScoredColumns(metrics, lexical_tokens(texts))


def _round6(values: _Array) -> _Array:
    """``[round(x, 6) for x in values]`` as float64, bit for bit (see the module docstring)."""
    scaled = values * 1e6
    nearest = np.rint(scaled)
    rounded: _Array = nearest / 1e6
    unsafe = ~((np.abs(scaled - nearest) <= 0.4) & (np.abs(scaled) < 1e12))
    if unsafe.any():
        where = np.flatnonzero(unsafe)
        rounded[where] = [round(value, 6) for value in values[where].tolist()]
    return rounded


def _batch(transcripts: Sequence[TranscriptColumns], threshold: float) -> list[ScoredColumns | None]:
    """Scores of transcripts with equal-length columns and a valid float (or no) recording duration; ``None``
    for a transcript that must go through the scalar code."""
    count = len(transcripts)
    if count == 0:
        return []
    global _REGISTRY
    if len(_REGISTRY.words) > _MAX_WORD_TYPES:
        _REGISTRY = _Registry()
    registry = _REGISTRY
    text_lists = [transcript[0] for transcript in transcripts]
    start_lists = [transcript[1] for transcript in transcripts]
    end_lists = [transcript[2] for transcript in transcripts]
    word_counts = np.fromiter(map(len, text_lists), dtype=np.int64, count=count)
    starts_flat = list(chain.from_iterable(start_lists))
    ends_flat = list(chain.from_iterable(end_lists))
    transcript_index = np.arange(count)

    # Anything but plain floats, and invalid or negative-zero timestamps: the scalar code (None here).
    odd = np.zeros(count, dtype=np.bool_)
    if not set(map(type, starts_flat)) | set(map(type, ends_flat)) <= {float}:
        for index in range(count):
            odd[index] = not set(map(type, start_lists[index])) | set(map(type, end_lists[index])) <= {float}
    else:
        starts = np.array(starts_flat, dtype=np.float64)
        ends = np.array(ends_flat, dtype=np.float64)
        word_owner = np.repeat(transcript_index, word_counts)
        valid = (starts >= 0.0) & (ends >= starts) & (ends < _INFINITY) & ~np.signbit(starts) & ~np.signbit(ends)
        if not valid.all():
            odd[word_owner[~valid]] = True
    if odd.any():
        keep = np.flatnonzero(~odd).tolist()
        outer: list[ScoredColumns | None] = [None] * count
        for index, item in zip(keep, _batch([transcripts[index] for index in keep], threshold), strict=True):
            outer[index] = item
        return outer

    word_ids = registry.word_ids(list(chain.from_iterable(text_lists)))
    token_sequence = registry.token_sequence.view()
    tokens_per_word = registry.word_token_count.view()[word_ids]

    # words with tokens (the others are ignored, timing included)
    spoken = tokens_per_word > 0
    spoken_starts = starts[spoken]
    spoken_ends = ends[spoken]
    spoken_owner = word_owner[spoken]
    spoken_tokens = tokens_per_word[spoken]
    spoken_count = spoken_starts.size
    first_word = np.ones(spoken_count, dtype=np.bool_)
    np.not_equal(spoken_owner[1:], spoken_owner[:-1], out=first_word[1:])
    gaps = np.empty(spoken_count, dtype=np.float64)
    gaps[:1] = 0.0
    np.subtract(spoken_starts[1:], spoken_ends[:-1], out=gaps[1:])
    is_pause = ~first_word & (gaps + _TIME_EPSILON_S >= threshold)
    pause_values = _round6(gaps[is_pause]).tolist()
    pause_offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(spoken_owner[is_pause], minlength=count), out=pause_offsets[1:])
    spans = np.zeros(count, dtype=np.float64)
    if spoken_count:
        segment_starts = np.flatnonzero(first_word)
        low = np.minimum.reduceat(spoken_starts, segment_starts)
        high = np.maximum.reduceat(spoken_ends, segment_starts)
        spans[spoken_owner[segment_starts]] = _round6(high - low)

    # tokens
    spoken_word_ids = word_ids[spoken]
    word_offsets = registry.word_token_offset.view()[spoken_word_ids]
    token_total = int(spoken_tokens.sum())
    if token_total == spoken_count:  # every word one token
        tokens = token_sequence[word_offsets]
        token_word = np.arange(spoken_count)
        first_of_word = np.ones(token_total, dtype=np.bool_)
    else:
        token_word = np.repeat(np.arange(spoken_count), spoken_tokens)
        word_first_token = np.cumsum(spoken_tokens) - spoken_tokens
        within = np.arange(token_total) - word_first_token[token_word]
        tokens = token_sequence[word_offsets[token_word] + within]
        first_of_word = within == 0
    token_owner = spoken_owner[token_word]
    run_start = first_of_word & (first_word | is_pause)[token_word]
    token_counts = np.bincount(token_owner, minlength=count)
    token_base = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(token_counts, out=token_base[1:])
    forms = registry.token_form.view()[tokens]
    filled = forms > 0
    lexical = ~filled

    # filled pauses, in order of first occurrence
    filled_at = np.flatnonzero(filled)
    form_names = np.array(registry.form_names, dtype=object)
    filled_names = form_names[forms[filled_at]].tolist()
    filled_offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(token_owner[filled_at], minlength=count), out=filled_offsets[1:])

    # lexical tokens (= the content tokens of the repetitions and the vocabulary's tokens)
    lexical_ids = tokens[lexical]
    lexical_owner = token_owner[lexical]
    lexical_counts = np.bincount(lexical_owner, minlength=count)
    lexical_base = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(lexical_counts, out=lexical_base[1:])
    token_strings = registry.token_string.view()
    lexical_strings = token_strings[lexical_ids].tolist()
    lexical_tuples = [
        tuple(lexical_strings[a:b]) for a, b in zip(lexical_base[:-1].tolist(), lexical_base[1:].tolist(), strict=True)
    ]

    repetitions = _find_repetitions(lexical_ids, lexical_owner, lexical_base, lexical_tuples)
    all_strings: list[str] | None = None
    all_forms: list[str | None] | None = None

    def transcript_tokens(index: int) -> tuple[list[str], list[str | None]]:
        nonlocal all_strings, all_forms
        if all_strings is None or all_forms is None:
            all_strings = token_strings[tokens].tolist()
            all_forms = form_names[forms].tolist()
        a, b = int(token_base[index]), int(token_base[index + 1])
        return all_strings[a:b], all_forms[a:b]

    markers = _find_all_markers(tokens, token_owner, token_base, filled, run_start, transcript_tokens)

    # vocabulary
    irregular: set[int] = set()
    if not registry.token_regular.view()[tokens].all():
        irregular = set(np.unique(token_owner[~registry.token_regular.view()[tokens]]).tolist())
    vocabulary = _vocabulary(lexical_ids, lexical_owner, lexical_counts, lexical_base, lexical_tuples, irregular)
    for index in irregular:
        measures = vocabulary_metrics(transcript_tokens(index)[0])
        vocabulary[index] = (measures.token_count, measures.distinct_words, measures.mattr, measures.mtld)

    results: list[ScoredColumns | None] = []
    no_markers: dict[str, int] = {}
    for (
        index,
        words,
        span,
        pause_a,
        pause_b,
        filled_a,
        filled_b,
        recording,
    ) in zip(
        range(count),
        token_counts.tolist(),
        spans.tolist(),
        pause_offsets[:-1].tolist(),
        pause_offsets[1:].tolist(),
        filled_offsets[:-1].tolist(),
        filled_offsets[1:].tolist(),
        (transcript[3] for transcript in transcripts),
        strict=True,
    ):
        pauses = tuple(pause_values[pause_a:pause_b])
        filled_counts = _count_forms(filled_names[filled_a:filled_b]) if filled_b > filled_a else {}
        marker_counts = markers.get(index)
        marker_counts = dict(no_markers) if marker_counts is None else marker_counts
        found = repetitions.get(index, ())
        token_count, distinct, mattr_value, mtld_value = vocabulary[index]
        total = sum(pauses)
        phonation = round(max(0.0, span - total), 6)
        results.append(
            ScoredColumns(
                SubmissionMetrics(
                    metrics_version=METRICS_VERSION,
                    pause_threshold_s=threshold,
                    word_count=words,
                    total_duration_s=span,
                    recording_duration_s=recording,
                    phonation_time_s=phonation,
                    speech_rate_wpm=(words * 60.0 / span if span > 0 else None) if words else None,
                    articulation_rate_wpm=(words * 60.0 / phonation if phonation > 0 else None) if words else None,
                    silent_pause_count=len(pauses),
                    silent_pauses_per_minute=(len(pauses) * 60.0 / span if span > 0 else None) if words else None,
                    mean_silent_pause_s=round(total / len(pauses), 6) if pauses else None,
                    silent_pause_total_s=round(total, 6),
                    silent_pauses_s=pauses,
                    mean_length_of_run=words / (len(pauses) + 1) if words else None,
                    filled_pause_count=filled_b - filled_a,
                    filled_pauses=filled_counts,
                    discourse_marker_count=sum(marker_counts.values()),
                    discourse_markers=marker_counts,
                    repetition_count=len(found),
                    repetitions=found,
                    vocabulary_token_count=token_count,
                    distinct_words=distinct,
                    mattr=mattr_value,
                    mtld=mtld_value,
                    vocabulary_sufficient=mattr_value is not None,
                ),
                lexical_tuples[index],
            )
        )
    return results


# ------------------------------------------------------------------------------------------------ repetitions


def _find_repetitions(
    ids: _Array, owner: _Array, base: _Array, content: list[tuple[str, ...]]
) -> dict[int, tuple[str, ...]]:
    """``flows.metrics._repetitions`` of every transcript that has any (by transcript index)."""
    size = ids.size
    same_next = np.zeros(size, dtype=np.bool_)
    if size > 1:
        same_next[:-1] = (ids[:-1] == ids[1:]) & (owner[:-1] == owner[1:])
    two_gram = np.zeros(size, dtype=np.bool_)
    if size > 3:
        two_gram[:-3] = (ids[:-3] == ids[2:-1]) & (ids[1:-2] == ids[3:]) & (owner[:-3] == owner[3:])
    candidates = np.flatnonzero(same_next | two_gram)
    found: dict[int, tuple[str, ...]] = {}
    if candidates.size == 0:
        return found
    candidate_owner = owner[candidates]
    local = (candidates - base[candidate_owner]).tolist()
    single = same_next[candidates].tolist()
    owners = candidate_owner.tolist()
    current = -1
    tokens: tuple[str, ...] = ()
    repeated: list[str] = []
    resume = 0  # the first position the reference loop visits next
    for transcript, position, is_single in zip(owners, local, single, strict=True):
        if transcript != current:
            if repeated:
                found[current] = tuple(repeated)
            current, tokens, repeated, resume = transcript, content[transcript], [], 0
        if position < resume:  # the second token of a repeated 2-gram: skipped
            continue
        if is_single:
            token = tokens[position]
            if token not in EMPHATIC_REDUPLICATIONS:
                repeated.append(token)
            resume = position + 1
        else:
            repeated.append(f"{tokens[position]} {tokens[position + 1]}")
            resume = position + 2
    if repeated:
        found[current] = tuple(repeated)
    return found


# ---------------------------------------------------------------------------------------------------- markers


def _find_all_markers(
    tokens: _Array,
    owner: _Array,
    base: _Array,
    filled: _Array,
    run_start: _Array,
    transcript_tokens: Any,
) -> dict[int, dict[str, int]]:
    """``_count_markers(_find_markers(...))`` of every transcript that has a candidate (by transcript index)."""
    registry = _REGISTRY
    size = tokens.size
    kind = registry.token_kind.view()[tokens]
    counts: dict[int, dict[str, int]] = {}
    if not _FAST_MARKERS:  # the reference on every transcript with a marker-first token
        for index in np.unique(owner[kind > 0]).tolist():
            strings, forms = transcript_tokens(index)
            a = int(base[index])
            starts = (np.flatnonzero(run_start[a : int(base[index + 1])])).tolist()
            found = _find_markers(strings, forms, set(starts))
            if found:
                counts[index] = _count_markers(found)
        return counts
    pair_first = np.zeros(size, dtype=np.bool_)
    if size > 1:
        pair_first[:-1] = (
            (kind[:-1] == 1)
            & (registry.token_pair_second.view()[tokens[:-1]] == tokens[1:])
            & (owner[:-1] == owner[1:])
        )
    candidate = pair_first | (kind == 2)
    candidates = np.flatnonzero(candidate)
    if candidates.size == 0:
        return counts
    second = np.zeros(size, dtype=np.bool_)
    second[1:] = pair_first[:-1]
    positions = np.arange(size)
    # the last token at or before each position that ends a run's start in the reference whatever the rules
    # decide (a token that is neither a filled pause nor a candidate nor a candidate's second token) ...
    resets = np.maximum.accumulate(np.where(~filled & ~candidate & ~second, positions, -1))
    # ... and the last run start the reference visits (a candidate's second token is consumed or resets)
    visible = np.maximum.accumulate(np.where(run_start & ~second, positions, -1))
    candidate_owner = owner[candidates]
    offset = base[candidate_owner]
    last_reset = np.where(candidates > 0, resets[candidates - 1], -1) - offset
    last_visible = visible[candidates] - offset
    current = -1
    state: _MarkerScan | None = None
    for transcript, position, pair, reset, run in zip(
        candidate_owner.tolist(),
        (candidates - offset).tolist(),
        pair_first[candidates].tolist(),
        last_reset.tolist(),
        last_visible.tolist(),
        strict=True,
    ):
        if transcript != current:
            if state is not None and state.found:
                counts[current] = _count_markers(state.found)
            current = transcript
            state = _MarkerScan(*transcript_tokens(transcript))
        assert state is not None
        state.visit(position, pair, reset, run)
    if state is not None and state.found:
        counts[current] = _count_markers(state.found)
    return counts


class _MarkerScan:
    """``flows.metrics._find_markers`` of one transcript, visiting only its candidate positions in order."""

    __slots__ = ("tokens", "forms", "found", "reset", "marker_end")

    def __init__(self, tokens: list[str], forms: list[str | None]) -> None:
        self.tokens = tokens
        self.forms = forms
        self.found: list[tuple[int, str]] = []
        self.reset = -1  # the last candidate position that ended a run's start (a rejected candidate)
        self.marker_end = -2  # the last token of the last marker found

    def visit(self, index: int, pair: bool, last_reset: int, last_run_start: int) -> None:
        """Apply the rules at candidate ``index`` (``pair``: it is followed by its marker's second token);
        ``last_reset``: the last plain token before it, ``last_run_start``: the last run start visited."""
        tokens, forms = self.tokens, self.forms
        at_run_start = last_run_start > max(last_reset, self.reset)
        after_disfluency = self.marker_end == index - 1 or (index > 0 and forms[index - 1] is not None)
        token = tokens[index]
        previous = _neighbour(tokens, forms, index, -1)
        marker: str | None = None
        length = 1
        sequence_length = 2 if pair else 1 if token in _SINGLE_SEQUENCES else 0
        if sequence_length:
            name = MULTIWORD_DISCOURSE_MARKERS[tuple(tokens[index : index + sequence_length])]
            following = _neighbour(tokens, forms, index + sequence_length - 1, +1)
            if name == "you know":
                accepted = previous not in YOU_KNOW_BLOCK_PREVIOUS and following not in YOU_KNOW_BLOCK_NEXT
            else:  # "i mean"
                accepted = previous not in I_MEAN_BLOCK_PREVIOUS and following not in I_MEAN_BLOCK_NEXT
            if accepted:
                marker, length = name, sequence_length
        if marker is None and token in _SINGLE_RULE_TOKENS:
            before_filled_pause = index + 1 < len(tokens) and forms[index + 1] is not None
            following = _neighbour(tokens, forms, index, +1)
            if token == "like":
                if previous not in LIKE_BLOCK_PREVIOUS and (after_disfluency or before_filled_pause):
                    marker = "like"
            elif at_run_start or before_filled_pause:
                blocked = SO_BLOCK_NEXT if token == "so" else WELL_BLOCK_NEXT
                if following not in blocked:
                    marker = token
        if marker is not None:
            self.found.append((index, marker))
            self.marker_end = index + length - 1
        else:  # a rejected pair's second token is visited next and ends the run's start too
            self.reset = index + 1 if pair else index


# ------------------------------------------------------------------------------------------------- vocabulary

_Vocabulary = tuple[int, int, float | None, float | None]


def _vocabulary(
    ids: _Array,
    owner: _Array,
    lengths: _Array,
    base: _Array,
    lexical: list[tuple[str, ...]],
    skip: set[int],
) -> list[_Vocabulary]:
    """``(token_count, distinct_words, mattr, mtld)`` of :func:`flows.metrics.lexical_vocabulary` of each
    transcript's lexical tokens (``ids``: their type ids, transcript after transcript; ``lengths``/``base``:
    tokens per transcript and where each starts in ``ids``; ``skip``: transcripts left as placeholders)."""
    count = lengths.size
    sufficient = (lengths >= MIN_VOCABULARY_TOKENS).tolist()
    if sum(sufficient) - len(skip) < MIN_VECTORISED_VOCABULARY:
        results: list[_Vocabulary] = []
        for index, tokens in enumerate(lexical):
            if index in skip:
                results.append((0, 0, None, None))
            else:
                measures = lexical_vocabulary(tokens)
                results.append((measures.token_count, measures.distinct_words, measures.mattr, measures.mtld))
        return results
    size = ids.size
    types = int(ids.max()) + 1
    # previous / next occurrence of the same type in the same transcript (flat positions; -1: none)
    key = owner * types + ids
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    same = sorted_key[1:] == sorted_key[:-1]
    later = order[1:][same]
    earlier = order[:-1][same]
    previous = np.full(size, -1, dtype=np.int64)
    previous[later] = earlier
    following = np.full(size, -1, dtype=np.int64)
    following[earlier] = later
    distinct = (lengths - np.bincount(owner[later], minlength=count)).tolist()
    start = base[:-1][owner]
    position = np.arange(size) - start
    n = lengths[owner]
    forward_previous = np.where(previous >= 0, previous - start, -1)
    # MATTR in closed form (see flows.vocabulary): a position is the first of its type in the windows starting
    # in [max(prev + 1, i - w + 1), min(i, n - w)]; the integer sum of distinct counts over all windows.
    w = MATTR_WINDOW
    windows_counted = np.maximum(
        np.minimum(position, n - w) - np.maximum(forward_previous + 1, position - w + 1) + 1, 0
    )
    distinct_sums = np.bincount(owner, weights=windows_counted, minlength=count).tolist()  # exact (< 2**53)
    # MTLD: both passes of every transcript in lock-step; reversed, the previous occurrence of position
    # n - 1 - i is the next occurrence of i.
    backward_previous = np.where(following >= 0, n - 1 - (following - start), -1)
    backward_position = n - 1 - position
    if 2 * count * int(lengths.max()) <= _MAX_GRID_CELLS:  # all in one (short ones give values left unused)
        passes = _mtld_passes(forward_previous, position, backward_previous, backward_position, owner, lengths, count)
        mtld_values = (passes[:count] + passes[count:]) / 2
    else:  # transcripts of similar length together, in chunks of bounded size
        mtld_values = np.zeros(count, dtype=np.float64)
        chosen = [index for index in range(count) if sufficient[index] and index not in skip]
        chosen.sort(key=lengths.__getitem__)
        chunk: list[int] = []
        for index in chosen:
            if chunk and int(lengths[index]) * 2 * (len(chunk) + 1) > _MAX_GRID_CELLS:
                _mtld_chunk(chunk, owner, lengths, position, forward_previous, backward_previous, mtld_values)
                chunk = []
            chunk.append(index)
        _mtld_chunk(chunk, owner, lengths, position, forward_previous, backward_previous, mtld_values)
    mtld_list = mtld_values.tolist()
    results = []
    for index, (token_count, enough) in enumerate(zip(lengths.tolist(), sufficient, strict=True)):
        if enough:
            mattr_value = int(distinct_sums[index]) / (w * (token_count - w + 1))
            results.append((token_count, distinct[index], mattr_value, mtld_list[index]))
        else:
            results.append((token_count, distinct[index], None, None))
    return results


def _mtld_chunk(
    chunk: list[int],
    owner: _Array,
    lengths: _Array,
    position: _Array,
    forward_previous: _Array,
    backward_previous: _Array,
    out: _Array,
) -> None:
    """MTLD (mean of the forward and the backward pass) of the transcripts in ``chunk``, into ``out``."""
    rows = np.full(lengths.size, -1, dtype=np.int64)
    rows[chunk] = np.arange(len(chunk))
    row = rows[owner]
    member = row >= 0
    chunk_row = row[member]
    chunk_position = position[member]
    chunk_lengths = lengths[chunk]
    passes = _mtld_passes(
        forward_previous[member],
        chunk_position,
        backward_previous[member],
        chunk_lengths[chunk_row] - 1 - chunk_position,
        chunk_row,
        chunk_lengths,
        len(chunk),
    )
    out[chunk] = (passes[: len(chunk)] + passes[len(chunk) :]) / 2


def _mtld_passes(
    forward_previous: _Array,
    forward_position: _Array,
    backward_previous: _Array,
    backward_position: _Array,
    row: _Array,
    lengths: _Array,
    count: int,
) -> _Array:
    """The forward (rows ``0..count-1``) and backward (rows ``count..2*count-1``) MTLD pass (tokens / factors,
    McCarthy & Jarvis 2010) of ``count`` token lists, all stepping together.

    Per token, in each pass's reading order: the position of the previous occurrence of its type in its list
    (-1: none) and its own position; ``row``: its list; ``lengths``: tokens per list. The same floating-point
    operations as ``flows.metrics._mtld_pass``: TTR = types / length of integers, a factor ends where
    TTR <= 0.72, the remainder adds ``(1 - TTR) / (1 - 0.72)``, no factor at all counts as one.
    """
    rows = 2 * count
    longest = int(lengths.max())
    grid = np.full((longest, rows), np.iinfo(np.int32).max, dtype=np.int32)  # padding never starts a type
    grid[forward_position, row] = forward_previous
    grid[backward_position, row + count] = backward_previous
    segment_start = np.zeros(rows, dtype=np.int32)
    types = np.zeros(rows, dtype=np.int32)
    factors = np.zeros(rows, dtype=np.float64)
    ttr = np.ones(rows, dtype=np.float64)
    length = np.empty(rows, dtype=np.int32)
    ended = np.empty(rows, dtype=np.bool_)
    new = np.empty(rows, dtype=np.bool_)
    threshold = MTLD_THRESHOLD
    # the state of each row after its last token (rows keep stepping past their end, ignored)
    both = np.concatenate([lengths, lengths])
    last_length = np.zeros(rows, dtype=np.int32)
    last_ttr = np.ones(rows, dtype=np.float64)
    last_factors = np.zeros(rows, dtype=np.float64)
    ending = {size - 1: np.flatnonzero(both == size) for size in np.unique(lengths).tolist()}
    for step in range(longest):
        np.less(grid[step], segment_start, out=new)
        np.add(types, new, out=types)
        np.subtract(step + 1, segment_start, out=length)
        np.divide(types, length, out=ttr)
        np.less_equal(ttr, threshold, out=ended)
        np.add(factors, ended, out=factors)
        np.copyto(segment_start, step + 1, where=ended)
        np.copyto(types, 0, where=ended)
        done = ending.get(step)
        if done is not None:
            last_factors[done] = factors[done]
            last_length[done] = np.where(ended[done], 0, length[done])
            last_ttr[done] = ttr[done]
    partial = last_length > 0
    last_factors[partial] += (1 - last_ttr[partial]) / (1 - threshold)
    last_factors[last_factors == 0] = 1.0
    result: _Array = both / last_factors
    return result
