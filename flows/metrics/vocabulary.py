"""Vocabulary measures: lexical diversity of a token stream (one transcript, or a learner's window of transcripts).

Part of the metric definitions (a change needs a bump of :data:`flows.metrics.METRICS_VERSION`). The measures are
computed over *lexical* tokens (:func:`flows.metrics.tokens.lexical_tokens`: normalised, filled pauses removed):

* **distinct words**: the number of types;
* **MATTR** (Covington & McFall 2010): the mean type-token ratio of every window of :data:`MATTR_WINDOW` (50)
  consecutive tokens;
* **MTLD** (McCarthy & Jarvis 2010): the bidirectional measure of textual lexical diversity at threshold
  :data:`MTLD_THRESHOLD` (0.72);
* MATTR and MTLD are ``None`` below :data:`MIN_VOCABULARY_TOKENS` (50) tokens (``sufficient=False``): with so little
  text the indices are not comparable (plain TTR is length-biased, which is why it is not reported at all).

:func:`batch_vocabulary` is the implementation: the measures of many token streams in one call of a kernel compiled
by numba (https://numba.readthedocs.io; ``cache=True``: compiled once per machine, then loaded from
``__pycache__``), which walks each stream with the loops written out below (:func:`_mattr_numerator`,
:func:`_mtld_pass`). Every transcript of a scored batch and every closed window of the dataflow goes through it;
:func:`mattr`, :func:`mtld`, :func:`vocabulary_metrics` and :func:`lexical_vocabulary` are batches of one. Tokens
become integer type ids first (cached per submission's token tuple, since a submission is in several windows). Its
cost against plain Python loops is in ``bench/RESULTS.md`` (Flows).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

import numba  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt

from flows.metrics.tokens import lexical_word_tokens

__all__ = [
    "MATTR_WINDOW",
    "MIN_VOCABULARY_TOKENS",
    "MTLD_THRESHOLD",
    "VocabularyMetrics",
    "batch_vocabulary",
    "lexical_vocabulary",
    "mattr",
    "mtld",
    "vocabulary_metrics",
]

MATTR_WINDOW = 50
"""MATTR moving-window size in tokens (Covington & McFall 2010)."""

MTLD_THRESHOLD = 0.72
"""MTLD factor threshold (McCarthy & Jarvis 2010)."""

MIN_VOCABULARY_TOKENS = 50
"""Fewer lexical tokens than this: MATTR and MTLD are not reported (``vocabulary_sufficient=False``)."""

_Ints = npt.NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class VocabularyMetrics:
    """Lexical diversity of a token stream (one transcript, or a learner's window of transcripts).

    ``token_count`` and ``distinct_words`` count lexical tokens (filled pauses removed). ``mattr`` (ratio in (0, 1],
    50-token window) and ``mtld`` (tokens) are ``None`` and ``sufficient`` is ``False`` below
    :data:`MIN_VOCABULARY_TOKENS` tokens.
    """

    token_count: int
    distinct_words: int
    mattr: float | None
    mtld: float | None
    sufficient: bool


def mattr(tokens: Sequence[str], *, window_size: int = MATTR_WINDOW) -> float:
    """Moving-average type-token ratio (Covington & McFall 2010), a ratio in (0, 1].

    The mean of the type-token ratios of every window of ``window_size`` consecutive tokens (tokens 1..w,
    2..w+1, ...): the integer sum of the windows' distinct counts over ``w * (n - w + 1)``. Computed on the tokens as
    given (same definition as ``lexicalrichness``'s ``mattr``). Raises ``ValueError`` when ``window_size`` is not a
    positive integer or exceeds the number of tokens.
    """
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
        raise ValueError(f"window_size must be a positive integer, got {window_size!r}")
    if window_size > len(tokens):
        raise ValueError(f"MATTR needs at least {window_size} tokens, got {len(tokens)}")
    return _measure([tuple(tokens)], window_size, MTLD_THRESHOLD)[0][1]


def mtld(tokens: Sequence[str], *, threshold: float = MTLD_THRESHOLD) -> float:
    """Measure of textual lexical diversity (McCarthy & Jarvis 2010), in tokens.

    Forward pass: tokens are read in order while the running type-token ratio of the current segment stays
    above ``threshold`` (0.72); when it falls to or below it, one factor is complete and a new segment starts.
    The remainder adds a partial factor ``(1 - TTR) / (1 - threshold)``. MTLD = tokens / factors; the result
    is the mean of the forward and the backward (reversed text) pass. A text whose tokens are all distinct has
    one factor (MTLD = its length). Same definition as ``lexicalrichness``'s ``mtld``. Raises ``ValueError``
    on an empty token list or a threshold outside (0, 1).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"MTLD threshold must be in (0, 1), got {threshold!r}")
    if not tokens:
        raise ValueError("MTLD is undefined for an empty token list")
    return _measure([tuple(tokens)], MATTR_WINDOW, float(threshold))[0][2]


def vocabulary_metrics(tokens: Iterable[str]) -> VocabularyMetrics:
    """Vocabulary measures of a token stream, e.g. the concatenated tokens of a learner's transcripts.

    ``tokens`` are normalised again (:func:`flows.metrics.tokens.lexical_word_tokens`: a no-op for tokens from
    :func:`flows.metrics.transcript_tokens`, so raw words are accepted too) and filled pauses are removed; then the
    measures of the module docstring. Never raises on short or empty input.
    """
    return lexical_vocabulary(tuple(chain.from_iterable(map(lexical_word_tokens, tokens))))


def lexical_vocabulary(lexical: Sequence[str]) -> VocabularyMetrics:
    """:func:`vocabulary_metrics` of tokens that are already lexical tokens (normalised, filled pauses removed, e.g.
    from :func:`flows.metrics.lexical_tokens`), without normalising them again. Never raises."""
    return batch_vocabulary([[tuple(lexical)]])[0]


def batch_vocabulary(windows: Sequence[Sequence[tuple[str, ...]]]) -> list[VocabularyMetrics]:
    """:func:`lexical_vocabulary` of each stream, in order, in one call of the compiled kernel.

    A stream is given as its pieces, e.g. the ``lexical_tokens`` tuples of a window's submissions in order
    (already lexical tokens): its tokens are their concatenation. Pieces are cached as integer ids, since one
    submission is in several windows. Never raises; no streams give an empty list.
    """
    sizes = [sum(map(len, pieces)) for pieces in windows]
    sufficient = [index for index, size in enumerate(sizes) if size >= MIN_VOCABULARY_TOKENS]
    measured = dict(zip(sufficient, _measure_pieces([windows[i] for i in sufficient]), strict=True))
    results = []
    for index, pieces in enumerate(windows):
        found = measured.get(index)
        if found is None:
            tokens = set(chain.from_iterable(pieces))
            results.append(VocabularyMetrics(sizes[index], len(tokens), None, None, False))
        else:
            distinct, mattr_value, mtld_value = found
            results.append(VocabularyMetrics(sizes[index], distinct, mattr_value, mtld_value, True))
    return results


# ------------------------------------------------------------------------------------------------- type ids

_TYPE_IDS: dict[str, int] = {}
"""Process-wide integer id of every token type seen (ids only need to agree within one call)."""
_MAX_TYPES = 1 << 20
"""Bound of :data:`_TYPE_IDS` (the kernel allocates two int64 arrays of this many entries at most: 16 MB)."""


@functools.lru_cache(maxsize=32768)
def _piece_ids(piece: tuple[str, ...]) -> _Ints:
    """The type ids of one piece's tokens."""
    ids = _TYPE_IDS
    array = np.fromiter((ids.setdefault(token, len(ids)) for token in piece), dtype=np.int32, count=len(piece))
    array.flags.writeable = False  # shared by every window the piece is in
    return array


_Measures = tuple[int, float, float]
"""``(distinct words, MATTR, MTLD)`` of one stream."""


def _measure_pieces(streams: Sequence[Sequence[tuple[str, ...]]]) -> list[_Measures]:
    """The measures of streams given as pieces, every stream at least ``MATTR_WINDOW`` tokens long."""
    if not streams:
        return []
    if len(_TYPE_IDS) > _MAX_TYPES:  # between calls only: ids must agree within one
        _TYPE_IDS.clear()
        _piece_ids.cache_clear()
    flat = np.concatenate([_piece_ids(piece) for pieces in streams for piece in pieces])
    lengths = np.fromiter((sum(map(len, pieces)) for pieces in streams), np.int64, len(streams))
    return _run(flat, lengths, len(_TYPE_IDS), MATTR_WINDOW, MTLD_THRESHOLD)


def _measure(streams: Sequence[tuple[str, ...]], window: int, threshold: float) -> list[_Measures]:
    """The measures of streams of at least one token each with a given MATTR window and MTLD threshold (streams
    shorter than ``window`` get a MATTR of ``nan``), with ids local to this call."""
    ids: dict[str, int] = {}
    flat = np.fromiter(
        (ids.setdefault(token, len(ids)) for stream in streams for token in stream),
        dtype=np.int32,
        count=sum(map(len, streams)),
    )
    return _run(flat, np.fromiter(map(len, streams), np.int64, len(streams)), len(ids), window, threshold)


def _run(ids: _Ints, lengths: npt.NDArray[np.int64], types: int, window: int, threshold: float) -> list[_Measures]:
    """The kernel over ``ids`` (stream ``j``: the next ``lengths[j]`` ids, every id below ``types``)."""
    starts = np.zeros(lengths.size, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    distinct, numerators, forward, backward = _kernel(ids, starts, lengths, types, window, threshold)
    return [
        (kinds, numerator / (window * (count - window + 1)) if count >= window else float("nan"), (ahead + behind) / 2)
        for count, kinds, numerator, ahead, behind in zip(
            lengths.tolist(), distinct.tolist(), numerators.tolist(), forward.tolist(), backward.tolist(), strict=True
        )
    ]


# ------------------------------------------------------------------------------------------------ the kernel


@numba.njit(cache=True, nogil=True)  # type: ignore[misc]
def _mattr_numerator(ids: _Ints, begin: int, end: int, window: int, counts: npt.NDArray[np.int64]) -> int:
    """MATTR's numerator over ``ids[begin:end]`` (at least ``window`` ids): the sum over every window of ``window``
    consecutive tokens of its number of distinct types, the window sliding one token at a time. ``counts``: zeros
    for every type id, left zeroed."""
    current = 0
    for i in range(begin, begin + window):
        if counts[ids[i]] == 0:
            current += 1
        counts[ids[i]] += 1
    total = current
    for i in range(begin + window, end):
        leaving = ids[i - window]
        counts[leaving] -= 1
        if counts[leaving] == 0:
            current -= 1
        if counts[ids[i]] == 0:
            current += 1
        counts[ids[i]] += 1
        total += current
    for i in range(end - window, end):
        counts[ids[i]] = 0
    return total


@numba.njit(cache=True, nogil=True)  # type: ignore[misc]
def _mtld_pass(
    ids: _Ints, begin: int, end: int, reverse: bool, threshold: float, stamps: npt.NDArray[np.int64], stamp: int
) -> tuple[float, int]:
    """One MTLD pass over ``ids[begin:end]`` (reversed if ``reverse``): ``(tokens / factors, next unused stamp)``.

    The running TTR of the current segment is ``types / length``; at or below ``threshold`` a factor is complete
    and a new segment starts; the remainder adds ``(1 - ttr) / (1 - threshold)``; no factor at all counts as one.
    A type is in the current segment when ``stamps[type] == stamp``; a new segment takes a new stamp."""
    factors = 0.0
    types = 0
    length = 0
    ttr = 1.0
    total = end - begin
    for k in range(total):
        token = ids[end - 1 - k] if reverse else ids[begin + k]
        length += 1
        if stamps[token] != stamp:
            stamps[token] = stamp
            types += 1
        ttr = types / length
        if ttr <= threshold:
            factors += 1.0
            types = 0
            length = 0
            stamp += 1
    if length > 0:
        factors += (1 - ttr) / (1 - threshold)
    if factors == 0:  # every token distinct: the TTR never fell, one (whole) factor by convention
        factors = 1.0
    return total / factors, stamp + 1


@numba.njit(cache=True, nogil=True)  # type: ignore[misc]
def _kernel(
    ids: _Ints, starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64], types: int, window: int, threshold: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per stream ``j`` (tokens ``ids[starts[j]:starts[j] + lengths[j]]``, at least one, type ids < ``types``):
    ``(distinct types, MATTR numerator (0 when shorter than window), forward MTLD pass, backward MTLD pass)``."""
    streams = lengths.size
    distinct = np.zeros(streams, np.int64)
    numerators = np.zeros(streams, np.int64)
    forward = np.zeros(streams, np.float64)
    backward = np.zeros(streams, np.float64)
    counts = np.zeros(types, np.int64)
    stamps = np.zeros(types, np.int64)
    stamp = 1
    for j in range(streams):
        begin = starts[j]
        end = begin + lengths[j]
        for i in range(begin, end):
            if stamps[ids[i]] != stamp:
                stamps[ids[i]] = stamp
                distinct[j] += 1
        stamp += 1
        if lengths[j] >= window:
            numerators[j] = _mattr_numerator(ids, begin, end, window, counts)
        forward[j], stamp = _mtld_pass(ids, begin, end, False, threshold, stamps, stamp)
        backward[j], stamp = _mtld_pass(ids, begin, end, True, threshold, stamps, stamp)
    return distinct, numerators, forward, backward
