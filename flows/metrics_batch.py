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
machine; here a batch of 500 such transcripts costs ~50 us of CPU per transcript. How it gets the same numbers:

* **Tokens.** Every distinct ASR word string gets a process-wide integer id, with its tokens
  (:func:`flows.metrics.tokenize`, memoised) stored once as token ids; every token type carries its filled-pause
  form, its role in discourse markers and its string. A batch is then one dict lookup per word and numpy
  gathers (a fast path when every word is one token).
* **Timing.** Timestamps of the whole batch are two float64 arrays. Validity (``0 <= start <= end < inf``: two
  comparisons of the bits as unsigned integers, where every negative value, ``-0.0`` included, and NaN lie above
  +inf), gaps, the pause mask (``gap + 1e-6 >= threshold``, the same IEEE operations as the scalar code) and the
  speech span (``np.minimum.reduceat`` / ``np.maximum.reduceat`` over the words with tokens) are vectorised.
  Rounding to the microsecond is Python's ``round(x, 6)`` (correctly rounded): numpy computes
  ``rint(x * 1e6) / 1e6``, which is provably the same double whenever ``|x * 1e6| < 1e12`` and ``x * 1e6`` lies
  within 0.4 of an integer (the product's error is then far below the distance to a rounding tie, and the
  division of an exact integer by 1e6 is correctly rounded like Python's decimal-to-double conversion); any
  other value (a tie such as 0.0000005) is rounded by Python. Sums of pauses are Python's ``sum`` over the same
  tuple, and the remaining per-transcript arithmetic is the scalar code's expressions on the same floats.
* **Disfluencies.** Filled pauses are a gather of the tokens' forms. Repetition candidates (a content token
  equal to the next, or a 2-gram equal to the next two) and discourse-marker candidates (``like``/``so``/
  ``well``/``y'know``, and ``you``/``ya``/``i`` only when followed by ``know``/``mean``) are found with array
  comparisons; the sequential rules of ``_repetitions`` and ``_find_markers`` then run in Python over those
  positions only, with the state the reference loop would have there (the last token that ended a run's start,
  the last run start it visits, the neighbours that are not filled pauses, whether a filled pause precedes or
  follows) taken from arrays. Other marker-first tokens (``you`` not followed by ``know``) are rejected by the
  reference without looking at their context, so they are plain tokens here.
* **Vocabulary.** MATTR and MTLD through ``flows.vocabulary.measure_lists`` (numba-compiled, the same
  loops as :func:`flows.metrics.mattr` / :func:`flows.metrics.mtld`, hence the same floats), on the batch's
  token ids.
* **Results.** ``SubmissionMetrics`` objects are filled through their slot descriptors (see
  :func:`_metrics_factory`): ~3 us less per transcript than its ``__init__``.

Anything unusual goes through :func:`flows.metrics.compute_metrics` itself for that transcript only: a timestamp
that is not a ``float`` (an ``int``, a ``bool``, ``None``, a string, a ``Decimal``; numpy floating-point scalars
count by their value, as ``compute_metrics`` converts them), an invalid timestamp (so the exact error message
comes from the scalar code), a negative zero, a ``recording_duration_s`` that is neither ``None`` nor a valid
``float``; tokens whose re-normalisation for the vocabulary is not the identity get
:func:`flows.metrics.vocabulary_metrics` of their tokens. The word registry is process-wide (cleared past
:data:`_MAX_WORD_TYPES` words); registration is locked, so threads may share it.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
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
    METRICS_VERSION,
    MIN_VOCABULARY_TOKENS,
    SubmissionMetrics,
    _check_threshold,
    _count_forms,
    _count_markers,
    _find_markers,
    _lexical_of_token,
    _tokenize_cached,
    compute_metrics,
    lexical_tokens,
    vocabulary_metrics,
)
from flows.vocabulary import measure_lists

__all__ = ["ScoredColumns", "TranscriptColumns", "compute_metrics_batch"]

TranscriptColumns = tuple[Sequence[str], Sequence[float], Sequence[float], float | None]
"""One transcript as columns: (word texts as the ASR emitted them, e.g. ``" Country."``; word starts in seconds;
word ends in seconds; the recording's duration in seconds or ``None``)."""


@dataclass(frozen=True, slots=True)
class ScoredColumns:
    """The metrics of one transcript and its lexical tokens.

    ``metrics`` equals ``flows.metrics.compute_metrics(words, pause_threshold_s=...,
    recording_duration_s=...)``; ``lexical_tokens`` equals ``flows.metrics.lexical_tokens(texts)`` (the
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


# ------------------------------------------------------------------------------------- building the results

_METRIC_FIELDS = (
    "metrics_version", "pause_threshold_s", "word_count", "total_duration_s", "recording_duration_s",
    "phonation_time_s", "speech_rate_wpm", "articulation_rate_wpm", "silent_pause_count",
    "silent_pauses_per_minute", "mean_silent_pause_s", "silent_pause_total_s", "silent_pauses_s",
    "mean_length_of_run", "filled_pause_count", "filled_pauses", "discourse_marker_count", "discourse_markers",
    "repetition_count", "repetitions", "vocabulary_token_count", "distinct_words", "mattr", "mtld",
    "vocabulary_sufficient",
)  # fmt: skip
"""The values :func:`_new_metrics` takes, in this order."""


def _metrics_factory() -> Callable[..., SubmissionMetrics]:
    """A function of the :data:`_METRIC_FIELDS` values (positional) that returns the ``SubmissionMetrics``.

    ``SubmissionMetrics`` is a frozen dataclass with slots, whose ``__init__`` sets each field through
    ``object.__setattr__`` (~6 us for 25 fields here, a tenth of the batch's cost per transcript). When the
    class is exactly such a dataclass (same fields in the same order, slots, no ``__post_init__``), the fields
    are set straight through their slot descriptors, which gives the same object (checked here on a sample);
    otherwise the class is called with keywords.
    """
    fields = dataclasses.fields(SubmissionMetrics)
    descriptors = [SubmissionMetrics.__dict__.get(name) for name in _METRIC_FIELDS]
    usual = (
        tuple(field.name for field in fields) == _METRIC_FIELDS
        and all(field.init for field in fields)
        and not hasattr(SubmissionMetrics, "__post_init__")
        and all(isinstance(descriptor, types.MemberDescriptorType) for descriptor in descriptors)
    )
    if usual:
        namespace: dict[str, Any] = {"_new": object.__new__, "_cls": SubmissionMetrics}
        lines = [f"def build({', '.join(_METRIC_FIELDS)}):", "    metrics = _new(_cls)"]
        for index, (name, descriptor) in enumerate(zip(_METRIC_FIELDS, descriptors, strict=True)):
            namespace[f"_set{index}"] = descriptor.__set__  # type: ignore[union-attr]
            lines.append(f"    _set{index}(metrics, {name})")
        lines.append("    return metrics")
        exec("\n".join(lines), namespace)  # noqa: S102 (generated from the field names above only)
        build: Callable[..., SubmissionMetrics] = namespace["build"]
        sample: list[Any] = [object() for _ in _METRIC_FIELDS]
        built, constructed = build(*sample), SubmissionMetrics(*sample)
        if all(getattr(built, name) is getattr(constructed, name) for name in _METRIC_FIELDS):
            return build

    def by_keywords(*values: Any) -> SubmissionMetrics:
        return SubmissionMetrics(**dict(zip(_METRIC_FIELDS, values, strict=True)))

    return by_keywords


_new_metrics = _metrics_factory()


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
        self.word_token_count = _Column(np.int32)
        self.word_token_offset = _Column(np.int64)
        self.word_first_token = _Column(np.int32)  # -1: none
        self.token_sequence = _Column(np.int32)  # token ids of every word type, concatenated
        self.tokens: dict[str, int] = {}
        self.token_string = _Column(object)
        self.token_form = _Column(np.int8)  # index into form_names; 0: not a filled pause
        self.token_kind = _Column(np.int8)  # 0: plain, 1: first of a 2-token marker, 2: a 1-token candidate
        self.token_pair_second = _Column(np.int32)  # kind 1: token id of the marker's second token, else -1
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

    def word_ids(self, text_lists: list[Sequence[str]], total: int) -> _Array:
        """The word ids of the texts (registering new words). Raises ``TypeError`` for a text that is not a
        str."""
        words = self.words
        try:
            return np.fromiter(map(words.__getitem__, chain.from_iterable(text_lists)), dtype=np.int32, count=total)
        except KeyError:
            pass
        with _REGISTRATION:
            self._register(text_lists)
        return np.fromiter(map(words.__getitem__, chain.from_iterable(text_lists)), dtype=np.int32, count=total)

    def _register(self, text_lists: list[Sequence[str]]) -> None:
        words = self.words
        for text in chain.from_iterable(text_lists):
            if text not in words:
                if not isinstance(text, str):
                    raise TypeError(f"word texts must be str, got {text!r}")
                token_ids = [self.token_id(token) for token in _tokenize_cached(text)]
                self.word_token_count.extend([len(token_ids)])
                self.word_token_offset.extend([self.token_sequence.size])
                self.word_first_token.extend([token_ids[0] if token_ids else -1])
                self.token_sequence.extend(token_ids)
                words[text] = len(words)


_REGISTRY = _Registry()
_REGISTRATION = threading.Lock()
"""Held while words are registered or the registry replaced (lookups need no lock: a batch keeps the registry it
started with, and its ids are in it)."""


def _registry() -> _Registry:
    """The registry, a new one when it has grown past :data:`_MAX_WORD_TYPES` (ids only agree within a batch)."""
    global _REGISTRY
    if len(_REGISTRY.words) > _MAX_WORD_TYPES:
        with _REGISTRATION:
            if len(_REGISTRY.words) > _MAX_WORD_TYPES:
                _REGISTRY = _Registry()
    return _REGISTRY


# ------------------------------------------------------------------------------------------------ entry point

_TEXTS, _STARTS, _ENDS, _RECORDING = (itemgetter(index) for index in range(4))
_FLOAT = {float}
_INFINITY_BITS = np.float64(np.inf).view(np.uint64)


def compute_metrics_batch(
    transcripts: Sequence[TranscriptColumns],
    *,
    pause_threshold_s: float = DEFAULT_PAUSE_THRESHOLD_S,
) -> list[ScoredColumns | ValueError]:
    """:func:`flows.metrics.compute_metrics` and :func:`flows.metrics.lexical_tokens` of many transcripts.

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
    docstring. Cost: ~50 us of CPU per 120-word transcript in batches of 500 on this project's 2-core machine,
    against ~350 us for ``compute_metrics`` and ``lexical_tokens`` one by one.
    """
    try:
        threshold = _check_threshold(pause_threshold_s)
    except ValueError:
        return [_scalar(transcript, pause_threshold_s) for transcript in transcripts]
    count = len(transcripts)
    texts = list(map(_TEXTS, transcripts))
    lengths = list(map(len, texts))
    usual = [
        length == len(starts) == len(ends)
        and (recording is None or (type(recording) is float and 0.0 <= recording < _INFINITY))
        for length, starts, ends, recording in zip(
            lengths, map(_STARTS, transcripts), map(_ENDS, transcripts), map(_RECORDING, transcripts), strict=True
        )
    ]
    if all(usual):
        scored = _batch(transcripts, texts, lengths, threshold)
    else:
        scored = _batch_of([index for index in range(count) if usual[index]], transcripts, texts, lengths, threshold)
    results: list[ScoredColumns | ValueError] = []
    for index, item in enumerate(scored):
        if item is not None:
            results.append(item)
            continue
        texts_of, starts, ends, _ = transcripts[index]
        if not len(texts_of) == len(starts) == len(ends):
            results.append(
                ValueError(f"texts, starts and ends differ in length ({len(texts_of)}, {len(starts)}, {len(ends)})")
            )
        else:  # anything unusual: the scalar code converts it or raises its own error
            results.append(_scalar(transcripts[index], pause_threshold_s))
    return results


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
    np.subtract(scaled, nearest, out=scaled)
    unsafe = ~((np.abs(scaled) <= 0.4) & (np.abs(nearest) < 1e12))
    if unsafe.any():
        where = np.flatnonzero(unsafe)
        rounded[where] = [round(value, 6) for value in values[where].tolist()]
    return rounded


def _floats(lists: list[Sequence[float]], total: int) -> _Array | None:
    """The values of ``lists`` concatenated as float64, or ``None`` when any is not a float: an ``int`` or a
    ``bool`` (which ``compute_metrics`` converts or rejects), ``None``, a string, a ``Decimal``... (numpy
    floating-point scalars count by their value, as ``compute_metrics`` converts them with ``float()``)."""
    flat = list(chain.from_iterable(lists))
    try:
        values = np.array(flat)  # float64 only for floats, ints and bools (and numpy numbers)
    except (ValueError, TypeError):
        return None
    if values.shape != (total,) or (total and values.dtype != np.float64):
        return None
    integral = np.flatnonzero(np.trunc(values) == values)  # where an int or a bool could be
    if integral.size and not all([type(flat[index]) is float for index in integral.tolist()]):
        return None
    return values.astype(np.float64, copy=False)


def _offsets(counts: _Array) -> _Array:
    """``[0, c0, c0 + c1, ...]``: where each transcript's items start in a flat array, and the end."""
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _batch_of(
    keep: list[int],
    transcripts: Sequence[TranscriptColumns],
    text_lists: list[Sequence[str]],
    lengths: list[int],
    threshold: float,
) -> list[ScoredColumns | None]:
    """:func:`_batch` of the transcripts at the indices ``keep`` only, as a list as long as ``transcripts`` (``None``
    at every other index)."""
    scored: list[ScoredColumns | None] = [None] * len(transcripts)
    inner = _batch(
        [transcripts[index] for index in keep],
        [text_lists[index] for index in keep],
        [lengths[index] for index in keep],
        threshold,
    )
    for index, item in zip(keep, inner, strict=True):
        scored[index] = item
    return scored


def _batch(
    transcripts: Sequence[TranscriptColumns], text_lists: list[Sequence[str]], lengths: list[int], threshold: float
) -> list[ScoredColumns | None]:
    """Scores of transcripts with equal-length columns and a valid float (or no) recording duration; ``None``
    for a transcript that must go through the scalar code (a timestamp that is not a valid plain float)."""
    count = len(transcripts)
    if count == 0:
        return []
    registry = _registry()
    start_lists = list(map(_STARTS, transcripts))
    end_lists = list(map(_ENDS, transcripts))
    word_counts = np.array(lengths, dtype=np.int64)
    total = int(word_counts.sum())

    # Anything but plain floats, and invalid or negative-zero timestamps: the scalar code (None here).
    odd: list[bool] | None = None
    starts = _floats(start_lists, total)
    ends = _floats(end_lists, total) if starts is not None else None
    if starts is None or ends is None:
        odd = [
            not set(map(type, starts)) | set(map(type, ends)) <= _FLOAT
            for starts, ends in zip(start_lists, end_lists, strict=True)
        ]
    else:
        # As unsigned integers, non-negative floats keep their order and every negative one (-0.0 included)
        # and NaN lies above +inf: 0 <= start <= end < inf in two comparisons.
        end_bits = ends.view(np.uint64)
        valid = end_bits < _INFINITY_BITS
        valid &= starts.view(np.uint64) <= end_bits
        if not valid.all():
            odd = [False] * count
            for index in np.unique(
                np.searchsorted(_offsets(word_counts), np.flatnonzero(~valid), "right") - 1
            ).tolist():
                odd[index] = True
    if odd is not None:
        if not any(odd):  # cannot happen (a non-float has a type); all to the scalar code rather than loop
            odd = [True] * count
        return _batch_of(
            [index for index in range(count) if not odd[index]], transcripts, text_lists, lengths, threshold
        )
    assert starts is not None and ends is not None

    word_ids = registry.word_ids(text_lists, total)
    word_owner = np.repeat(np.arange(count, dtype=np.int32), word_counts)
    tokens_per_word = registry.word_token_count.view()[word_ids]
    one_each = bool((tokens_per_word == 1).all())
    if one_each:  # the usual case: every word one token
        spoken_starts, spoken_ends, spoken_owner = starts, ends, word_owner
        tokens = registry.word_first_token.view()[word_ids]
    else:  # words without tokens are ignored, timing included; a word of several tokens shares its timing
        spoken = tokens_per_word > 0
        spoken_starts, spoken_ends, spoken_owner = starts[spoken], ends[spoken], word_owner[spoken]
        spoken_tokens = tokens_per_word[spoken]
        token_word = np.repeat(np.arange(spoken_owner.size), spoken_tokens)
        within = np.arange(token_word.size) - (np.cumsum(spoken_tokens) - spoken_tokens)[token_word]
        tokens = registry.token_sequence.view()[
            registry.word_token_offset.view()[word_ids[spoken]][token_word] + within
        ]

    # timing: pauses between consecutive words (with tokens) of a transcript, runs, span
    spoken_count = spoken_owner.size
    same_transcript = spoken_owner[1:] == spoken_owner[:-1]
    gaps = spoken_starts[1:] - spoken_ends[:-1]
    long_gap = gaps + _TIME_EPSILON_S >= threshold
    run_start = np.empty(spoken_count, dtype=np.bool_)  # first word of a transcript, or after a pause
    run_start[:1] = True
    np.greater_equal(long_gap, same_transcript, out=run_start[1:])  # (not same) or long gap
    long_gap &= same_transcript
    pause_at = np.flatnonzero(long_gap)
    pause_values = _round6(gaps[pause_at]).tolist()
    pause_offsets = _offsets(np.bincount(spoken_owner[pause_at + 1], minlength=count)).tolist()
    spans = np.zeros(count, dtype=np.float64)
    if spoken_count:
        first = np.concatenate([[0], np.flatnonzero(~same_transcript) + 1])
        spans[spoken_owner[first]] = _round6(
            np.maximum.reduceat(spoken_ends, first) - np.minimum.reduceat(spoken_starts, first)
        )
    if not one_each:
        run_start = run_start[token_word] & (within == 0)
        spoken_owner = spoken_owner[token_word]
    token_owner = spoken_owner
    token_counts = word_counts if one_each else np.bincount(token_owner, minlength=count)
    token_base = _offsets(token_counts)

    # filled pauses (in order of first occurrence) and lexical tokens (the rest: the content tokens of the
    # repetitions and the vocabulary's tokens)
    forms = registry.token_form.view()[tokens]
    filled = forms.astype(np.bool_)
    filled_at = np.flatnonzero(filled)
    if filled_at.size:
        filled_names = np.array(registry.form_names, dtype=object)[forms[filled_at]].tolist()
        filled_offsets = _offsets(np.bincount(token_owner[filled_at], minlength=count)).tolist()
        lexical = ~filled
        lexical_ids = tokens[lexical]
        lexical_owner = token_owner[lexical]
        lexical_counts = np.bincount(lexical_owner, minlength=count)
    else:
        filled_names = []
        filled_offsets = [0] * (count + 1)
        lexical_ids, lexical_owner, lexical_counts = tokens, token_owner, token_counts
    lexical_base = _offsets(lexical_counts)
    lexical_strings = registry.token_string.view()[lexical_ids].tolist()
    bounds = lexical_base.tolist()
    lexical_tuples = [tuple(lexical_strings[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]

    repetitions = _find_repetitions(lexical_ids, lexical_owner, bounds, lexical_tuples)
    markers = _find_all_markers(
        registry, tokens, token_owner, token_base, filled, filled_at, run_start, lexical_strings, bounds, forms
    )
    del lexical_strings  # a large young list: the collections triggered while the results are built skip it

    # vocabulary
    irregular: set[int] = set()
    regular = registry.token_regular.view()[lexical_ids]
    if not regular.all():
        irregular = set(np.unique(lexical_owner[~regular]).tolist())
    vocabulary = _vocabulary(lexical_ids, lexical_counts, lexical_base, lexical_tuples, irregular, len(registry.tokens))
    for index in irregular:
        a, b = int(token_base[index]), int(token_base[index + 1])
        measures = vocabulary_metrics(registry.token_string.view()[tokens[a:b]].tolist())
        vocabulary[index] = (measures.token_count, measures.distinct_words, measures.mattr, measures.mtld)

    results: list[ScoredColumns | None] = []
    metrics_version = METRICS_VERSION
    for index, words, span, pause_a, pause_b, filled_a, filled_b, recording in zip(
        range(count),
        token_counts.tolist(),
        spans.tolist(),
        pause_offsets,
        pause_offsets[1:],
        filled_offsets,
        filled_offsets[1:],
        map(_RECORDING, transcripts),
        strict=False,
    ):
        pauses = tuple(pause_values[pause_a:pause_b])
        pause_count = pause_b - pause_a
        marker_counts = markers.get(index)
        if marker_counts is None:
            marker_counts = {}
        found = repetitions.get(index, ())
        token_count, distinct, mattr_value, mtld_value = vocabulary[index]
        total_pauses = sum(pauses)
        phonation = round(max(0.0, span - total_pauses), 6)
        results.append(
            ScoredColumns(
                _new_metrics(
                    metrics_version,
                    threshold,
                    words,
                    span,
                    recording,
                    phonation,
                    (words * 60.0 / span if span > 0 else None) if words else None,
                    (words * 60.0 / phonation if phonation > 0 else None) if words else None,
                    pause_count,
                    (pause_count * 60.0 / span if span > 0 else None) if words else None,
                    round(total_pauses / pause_count, 6) if pause_count else None,
                    round(total_pauses, 6),
                    pauses,
                    words / (pause_count + 1) if words else None,
                    filled_b - filled_a,
                    _count_forms(filled_names[filled_a:filled_b]) if filled_b > filled_a else {},
                    sum(marker_counts.values()),
                    marker_counts,
                    len(found),
                    found,
                    token_count,
                    distinct,
                    mattr_value,
                    mtld_value,
                    mattr_value is not None,
                ),
                lexical_tuples[index],
            )
        )
    return results


# ------------------------------------------------------------------------------------------------ repetitions


def _find_repetitions(
    ids: _Array, owner: _Array, bounds: list[int], content: list[tuple[str, ...]]
) -> dict[int, tuple[str, ...]]:
    """``flows.metrics._repetitions`` of every transcript that has any (by transcript index)."""
    size = ids.size
    if size < 2:
        return {}
    same_next = ids[1:] == ids[:-1]  # candidates across transcripts are dropped below
    candidate = np.zeros(size, dtype=np.bool_)
    candidate[:-1] = same_next
    if size > 3:
        two_apart = ids[2:] == ids[:-2]
        candidate[:-3] |= two_apart[:-1] & two_apart[1:]
    candidates = np.flatnonzero(candidate)
    found: dict[int, tuple[str, ...]] = {}
    if candidates.size == 0:
        return found
    current = -1
    tokens: tuple[str, ...] = ()
    repeated: list[str] = []
    resume = 0  # the first position the reference loop visits next
    base = 0
    end = 0
    for transcript, position in zip(owner[candidates].tolist(), candidates.tolist(), strict=True):
        if transcript != current:
            if repeated:
                found[current] = tuple(repeated)
            current, tokens, repeated = transcript, content[transcript], []
            base, end = bounds[transcript], bounds[transcript + 1]
            resume = base
        if position < resume:  # the second token of a repeated 2-gram: skipped
            continue
        local = position - base
        token = tokens[local]
        if position + 1 < end and token == tokens[local + 1]:
            if token not in EMPHATIC_REDUPLICATIONS:
                repeated.append(token)
            resume = position + 1
        elif position + 3 < end and token == tokens[local + 2] and tokens[local + 1] == tokens[local + 3]:
            repeated.append(f"{token} {tokens[local + 1]}")
            resume = position + 2
    if repeated:
        found[current] = tuple(repeated)
    return found


# ---------------------------------------------------------------------------------------------------- markers


def _find_all_markers(
    registry: _Registry,
    tokens: _Array,
    owner: _Array,
    token_base: _Array,
    filled: _Array,
    filled_at: _Array,
    run_start: _Array,
    lexical_strings: list[str],
    lexical_bounds: list[int],
    forms: _Array,
) -> dict[int, dict[str, int]]:
    """``_count_markers(_find_markers(...))`` of every transcript that has a marker (by transcript index).

    ``tokens``/``owner``/``filled``/``forms``/``run_start``: per token of the batch; ``filled_at``: the filled
    pauses' positions; ``lexical_strings``: the strings of the other tokens, in order (``lexical_bounds``: where
    each transcript's start)."""
    first_tokens = np.flatnonzero(registry.token_kind.view()[tokens])
    counts: dict[int, dict[str, int]] = {}
    if first_tokens.size == 0:
        return counts
    if not _FAST_MARKERS:  # the reference on every transcript with a marker-first token
        form_names = np.array(registry.form_names, dtype=object)
        for index in np.unique(owner[first_tokens]).tolist():
            a, b = int(token_base[index]), int(token_base[index + 1])
            strings = registry.token_string.view()[tokens[a:b]].tolist()
            found = _find_markers(
                strings, form_names[forms[a:b]].tolist(), set(np.flatnonzero(run_start[a:b]).tolist())
            )
            if found:
                counts[index] = _count_markers(found)
        return counts
    size = tokens.size
    kind = registry.token_kind.view()[tokens[first_tokens]]
    following_at = np.minimum(first_tokens + 1, size - 1)
    transcript = owner[first_tokens]
    pair = (
        (kind == 1)
        & (registry.token_pair_second.view()[tokens[first_tokens]] == tokens[following_at])
        & (owner[following_at] == transcript)
        & (following_at > first_tokens)
    )
    keep = pair | (kind == 2)
    if not keep.any():
        return counts
    candidates = first_tokens[keep]
    pair = pair[keep]
    transcript = transcript[keep]
    start = token_base[transcript]
    end = token_base[transcript + 1]
    # The reference's state at a candidate, from the tokens before it: the last token that ended a run's
    # start whatever the rules decide there (not a filled pause, a candidate or a candidate's second token) ...
    holding = filled.copy()
    holding[candidates] = True
    seconds = candidates[pair] + 1
    holding[seconds] = True
    held = np.flatnonzero(holding)
    # (held positions form runs of consecutive integers: the reset is right before the run that ends at p - 1)
    run_begins = np.ones(held.size, dtype=np.bool_)
    np.not_equal(held[1:] - held[:-1], 1, out=run_begins[1:])
    run_first = held[np.maximum.accumulate(np.where(run_begins, np.arange(held.size), 0))]
    at = np.minimum(np.searchsorted(held, candidates - 1), held.size - 1)
    last_reset = np.where(held[at] == candidates - 1, run_first[at], candidates) - 1 - start
    # ... the last run start it visits (a candidate's second token is consumed, or it resets) ...
    if seconds.size:
        run_start = run_start.copy()
        run_start[seconds] = False
    starts = np.flatnonzero(run_start)
    last_run_start = starts[np.searchsorted(starts, candidates, "right") - 1] - start
    # ... and the neighbours that are not filled pauses, by their rank among those of the batch
    rank = candidates - np.searchsorted(filled_at, candidates)
    before_filled = (candidates + 1 < end) & filled[np.minimum(candidates + 1, size - 1)]
    after_filled = (candidates > start) & filled[np.maximum(candidates - 1, 0)]
    current = -1
    scan: _MarkerScan | None = None
    bounds = lexical_bounds
    for owner_of, position, is_pair, reset, run, r, before, after in zip(
        transcript.tolist(),
        (candidates - start).tolist(),
        pair.tolist(),
        last_reset.tolist(),
        last_run_start.tolist(),
        rank.tolist(),
        before_filled.tolist(),
        after_filled.tolist(),
        strict=True,
    ):
        if owner_of != current:
            if scan is not None and scan.found:
                counts[current] = _count_markers(scan.found)
            current = owner_of
            scan = _MarkerScan(lexical_strings, bounds[owner_of], bounds[owner_of + 1])
        assert scan is not None
        scan.visit(position, is_pair, reset, run, r, before, after)
    if scan is not None and scan.found:
        counts[current] = _count_markers(scan.found)
    return counts


class _MarkerScan:
    """``flows.metrics._find_markers`` of one transcript, visiting only its candidate positions in order."""

    __slots__ = ("strings", "low", "high", "found", "reset", "marker_end")

    def __init__(self, strings: list[str], low: int, high: int) -> None:
        self.strings = strings  # the batch's lexical strings; this transcript's are strings[low:high]
        self.low = low
        self.high = high
        self.found: list[tuple[int, str]] = []
        self.reset = -1  # the last candidate position that ended a run's start (a rejected candidate)
        self.marker_end = -2  # the last token of the last marker found

    def visit(
        self, index: int, pair: bool, last_reset: int, last_run_start: int, rank: int, before: bool, after: bool
    ) -> None:
        """Apply the rules at candidate ``index`` (``pair``: followed by its marker's second token).

        ``last_reset``: the last plain token before it; ``last_run_start``: the last run start the reference
        visits; ``rank``: its position among the batch's lexical strings; ``before``/``after``: a filled pause
        follows / precedes it.
        """
        strings = self.strings
        at_run_start = last_run_start > max(last_reset, self.reset)
        after_disfluency = after or self.marker_end == index - 1
        token = strings[rank]
        previous = strings[rank - 1] if rank > self.low else None
        marker: str | None = None
        length = 1
        sequence_length = 2 if pair else 1 if token in _SINGLE_SEQUENCES else 0
        if sequence_length:
            name = MULTIWORD_DISCOURSE_MARKERS[tuple(strings[rank : rank + sequence_length])]
            following_rank = rank + sequence_length
            following = strings[following_rank] if following_rank < self.high else None
            if name == "you know":
                accepted = previous not in YOU_KNOW_BLOCK_PREVIOUS and following not in YOU_KNOW_BLOCK_NEXT
            else:  # "i mean"
                accepted = previous not in I_MEAN_BLOCK_PREVIOUS and following not in I_MEAN_BLOCK_NEXT
            if accepted:
                marker, length = name, sequence_length
        if marker is None and token in _SINGLE_RULE_TOKENS:
            following = strings[rank + 1] if rank + 1 < self.high else None
            if token == "like":
                if previous not in LIKE_BLOCK_PREVIOUS and (after_disfluency or before):
                    marker = "like"
            elif at_run_start or before:
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
    lengths: _Array,
    base: _Array,
    lexical: list[tuple[str, ...]],
    skip: set[int],
    types: int,
) -> list[_Vocabulary]:
    """``(token_count, distinct_words, mattr, mtld)`` of :func:`flows.metrics.lexical_vocabulary` of each
    transcript's lexical tokens (``ids``: their type ids, below ``types``, transcript after transcript;
    ``lengths``/``base``: tokens per transcript and where each starts in ``ids``; ``lexical``: the tokens;
    ``skip``: transcripts left as placeholders).

    MATTR and MTLD of the transcripts with 50 tokens or more through ``flows.vocabulary.measure_lists``
    (compiled, the loops of :func:`flows.metrics.mattr` and :func:`flows.metrics.mtld` with the same integer
    numerators and float operations; the windows' vocabulary uses it too); the distinct words of the others in
    Python."""
    chosen = [
        index
        for index, enough in enumerate((lengths >= MIN_VOCABULARY_TOKENS).tolist())
        if enough and index not in skip
    ]
    measured: dict[int, _Vocabulary] = {}
    if chosen:
        for index, metrics in zip(chosen, measure_lists(ids, base[chosen], lengths[chosen], types), strict=True):
            measured[index] = (metrics.token_count, metrics.distinct_words, metrics.mattr, metrics.mtld)
    results: list[_Vocabulary] = []
    for index, tokens in enumerate(lexical):
        found = measured.get(index)
        results.append((len(tokens), len(set(tokens)), None, None) if found is None else found)
    return results
