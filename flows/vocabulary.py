"""Vocabulary measures of many token streams at once, compiled: the same values as :mod:`flows.metrics`.

:func:`batch_vocabulary` returns, for each token list, exactly :func:`flows.aggregate.window_vocabulary` of it
(token count, distinct words, MATTR over 50-token windows, bidirectional MTLD at 0.72, ``None`` below 50 tokens):
same definitions, same floating-point operations in the same order, so the floats are identical (unit tests hold
it equal to :func:`flows.metrics.mattr` / :func:`flows.metrics.mtld` and to ``lexicalrichness``). It exists for
speed: the metric dataflow computes the vocabulary of every closed window (a learner's sliding 7-day window is
~800 tokens, and every submission is in nine windows), and the per-token Python loops of ``mattr`` and ``mtld``
were the largest cost of a replay.

How: tokens become integer type ids (cached per submission's token tuple, since a submission is in several
windows), the windows' ids are concatenated, and one call of :func:`_vocabulary_kernel`, compiled to machine code
by numba (https://numba.readthedocs.io; ``cache=True``: compiled once per machine, then loaded from
``__pycache__``), walks every window with the loops of :func:`flows.metrics.mattr` (the integer sum of the distinct
counts of all 50-token windows, sliding) and :func:`flows.metrics.mtld` (``types / length`` in float64, the
partial factor ``(1 - ttr) / (1 - threshold)``), so each division is the same IEEE operation on the same integers
as in Python. MATTR is that integer sum over ``w * (n - w + 1)``, as in ``mattr``. Measured here: ~20 µs for a
window of ~470 tokens, against ~190 µs per 800-token window for the previous numpy lock-step version and ~550 µs
for the Python functions (bench/RESULTS.md, Flows).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numba  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt

from flows.metrics import MATTR_WINDOW, MIN_VOCABULARY_TOKENS, MTLD_THRESHOLD, VocabularyMetrics

__all__ = ["batch_vocabulary", "measure_lists"]

_Ints = npt.NDArray[np.int32]


def batch_vocabulary(windows: Sequence[Sequence[tuple[str, ...]]]) -> list[VocabularyMetrics]:
    """:func:`flows.aggregate.window_vocabulary` of each window's lexical tokens, in order.

    A window is given as its pieces, e.g. the ``lexical_tokens`` tuples of its submissions in order (already
    normalised, filled pauses removed): its tokens are their concatenation. Pieces are cached as integer ids,
    since one submission is in several windows. Never raises; no windows give an empty list.
    """
    results: list[VocabularyMetrics | None] = [None] * len(windows)
    sufficient: list[int] = []
    sizes = [sum(len(piece) for piece in pieces) for pieces in windows]
    for index, pieces in enumerate(windows):
        if sizes[index] >= MIN_VOCABULARY_TOKENS:
            sufficient.append(index)
        else:
            tokens = [token for piece in pieces for token in piece]
            results[index] = VocabularyMetrics(len(tokens), len(set(tokens)), None, None, False)
    if sufficient:
        if len(_TYPE_IDS) > _MAX_TYPES:  # between calls only: ids must agree within one
            _TYPE_IDS.clear()
            _piece_ids.cache_clear()
        for index, metrics in zip(sufficient, _compiled([windows[index] for index in sufficient]), strict=True):
            results[index] = metrics
    return [metrics for metrics in results if metrics is not None]


_TYPE_IDS: dict[str, int] = {}
"""Process-wide integer id of every token type seen (ids only need to agree within one call)."""
_MAX_TYPES = 1 << 20
"""Bound of :data:`_TYPE_IDS` (the kernel allocates two int64 arrays of this many entries at most: 16 MB)."""


@functools.lru_cache(maxsize=32768)
def _piece_ids(piece: tuple[str, ...]) -> npt.NDArray[np.int32]:
    """The type ids of one piece's tokens."""
    ids = _TYPE_IDS
    array = np.fromiter((ids.setdefault(token, len(ids)) for token in piece), dtype=np.int32, count=len(piece))
    array.flags.writeable = False  # shared by every window the piece is in
    return array


def _compiled(windows: Sequence[Sequence[tuple[str, ...]]]) -> list[VocabularyMetrics]:
    """The measures of windows that all have at least ``MATTR_WINDOW`` tokens (see the module docstring)."""
    flat = np.concatenate([_piece_ids(piece) for pieces in windows for piece in pieces])
    lengths = np.fromiter((sum(len(piece) for piece in pieces) for pieces in windows), np.int64, len(windows))
    starts = np.zeros(len(windows), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return measure_lists(flat, starts, lengths, len(_TYPE_IDS))


def measure_lists(
    ids: npt.NDArray[np.integer], starts: npt.NDArray[np.integer], lengths: npt.NDArray[np.integer], types: int
) -> list[VocabularyMetrics]:
    """:func:`flows.metrics.lexical_vocabulary` of token lists given as integer type ids: list ``j`` is
    ``ids[starts[j]:starts[j] + lengths[j]]``, every id below ``types``, every list at least ``MATTR_WINDOW``
    tokens long (else ``ValueError``). One call of the compiled kernel for all lists; identical values. When the
    id space is much larger than the ids given (a process-wide registry), the ids are first renumbered densely,
    because the kernel zeroes two arrays of ``types`` entries."""
    counts = np.asarray(lengths, dtype=np.int64)
    if counts.size and int(counts.min()) < MATTR_WINDOW:
        raise ValueError(f"every list needs at least {MATTR_WINDOW} tokens")
    if types > 64 * ids.size:
        ids = np.unique(ids, return_inverse=True)[1].reshape(-1)
        types = int(ids.max()) + 1 if ids.size else 0
    distinct, distinct_sums, forward, backward = _vocabulary_kernel(
        np.ascontiguousarray(ids, dtype=np.int32),
        np.asarray(starts, dtype=np.int64),
        counts,
        types,
        MATTR_WINDOW,
        MTLD_THRESHOLD,
    )
    w = MATTR_WINDOW
    return [
        VocabularyMetrics(count, kinds, sums / (w * (count - w + 1)), (ahead + behind) / 2, True)
        for count, kinds, sums, ahead, behind in zip(
            counts.tolist(),
            distinct.tolist(),
            distinct_sums.tolist(),
            forward.tolist(),
            backward.tolist(),
            strict=True,
        )
    ]


@numba.njit(cache=True, nogil=True)  # type: ignore[misc]
def _mtld_pass(
    ids: _Ints, begin: int, end: int, reverse: bool, threshold: float, stamps: npt.NDArray[np.int64], stamp: int
) -> tuple[float, int]:
    """:func:`flows.metrics._mtld_pass` over ``ids[begin:end]`` (reversed if ``reverse``): ``(tokens / factors,
    next unused stamp)``. A type is in the current segment when ``stamps[type] == stamp``; a new segment takes a
    new stamp instead of clearing a set."""
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
    if factors == 0:  # every token distinct: one (whole) factor by convention, as in flows.metrics
        factors = 1.0
    return total / factors, stamp + 1


@numba.njit(cache=True, nogil=True)  # type: ignore[misc]
def _vocabulary_kernel(
    ids: _Ints, starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64], types: int, window: int, threshold: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per list ``j`` (tokens ``ids[starts[j]:starts[j] + lengths[j]]``, type ids < ``types``, each list at least
    ``window`` long): ``(distinct types, integer sum over the MATTR windows of their distinct types, forward MTLD
    pass, backward MTLD pass)``."""
    lists = lengths.size
    distinct = np.zeros(lists, np.int64)
    distinct_sums = np.zeros(lists, np.int64)
    forward = np.zeros(lists, np.float64)
    backward = np.zeros(lists, np.float64)
    counts = np.zeros(types, np.int64)
    stamps = np.zeros(types, np.int64)
    stamp = 1
    for j in range(lists):
        begin = starts[j]
        end = begin + lengths[j]
        for i in range(begin, end):
            if stamps[ids[i]] != stamp:
                stamps[ids[i]] = stamp
                distinct[j] += 1
        stamp += 1
        # MATTR's numerator: the window slides one token at a time, as in flows.metrics.mattr
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
        distinct_sums[j] = total
        forward[j], stamp = _mtld_pass(ids, begin, end, False, threshold, stamps, stamp)
        backward[j], stamp = _mtld_pass(ids, begin, end, True, threshold, stamps, stamp)
    return distinct, distinct_sums, forward, backward
