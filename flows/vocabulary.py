"""Vocabulary measures of many token streams at once (numpy): the same values as :mod:`flows.metrics`.

:func:`batch_vocabulary` returns, for each token list, exactly :func:`flows.aggregate.window_vocabulary` of it
(token count, distinct words, MATTR over 50-token windows, bidirectional MTLD at 0.72, ``None`` below 50 tokens):
same definitions, same floating-point operations in the same order, so the floats are identical (unit tests hold
it equal to :func:`flows.metrics.mattr` / :func:`flows.metrics.mtld` and to ``lexicalrichness``). It exists for
speed: the metric dataflow computes the vocabulary of every closed window (a learner's sliding 7-day window is
~800 tokens, and every submission is in nine windows), and the per-token Python loops of ``mattr`` and ``mtld``
were the largest cost of a replay.

How (tokens become integer ids; ``prev[i]`` is the position of the previous occurrence of token ``i``'s type in
its list, -1 for none; one stable sort of ``(list, id)`` gives it for every list at once):

* **MATTR** (Covington & McFall 2010) is the mean over windows of the number of types per window. Summed over
  windows, a type counts in a window once, at its first position there: position ``i`` is the first of its type
  in the windows starting in ``[max(prev[i] + 1, i - w + 1), min(i, n - w)]``. So the integer sum of distinct
  counts is a sum over positions without any loop, and MATTR is that sum over ``w * (n - w + 1)`` — the same
  integer numerator and denominator as the sliding-window count of :func:`flows.metrics.mattr`.
* **MTLD** (McCarthy & Jarvis 2010) is sequential within a list (a factor ends where the running TTR of the
  segment falls to the threshold, and the next segment starts afresh), but independent across lists: every list,
  forward and reversed, advances one token per step in lock-step, and a token is new in its segment exactly when
  ``prev[i]`` lies before the segment's start. The TTR is ``types / length`` of integers in float64 and the partial
  factor ``(1 - ttr) / (1 - threshold)``, as in :func:`flows.metrics.mtld`.

Lock-step costs a few numpy calls per token position of the longest list, whatever the number of lists, so it
pays off for batches; below :data:`MIN_BATCH` sufficient lists the plain functions of :mod:`flows.metrics` are
used (same values).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from flows.metrics import MATTR_WINDOW, MIN_VOCABULARY_TOKENS, MTLD_THRESHOLD, VocabularyMetrics, mattr, mtld

__all__ = ["MIN_BATCH", "batch_vocabulary"]

MIN_BATCH = 64
"""Fewest windows with enough tokens for which the vectorised path is taken: on this project's 2-core EPYC the
break-even is ~60 windows (of 114 or 800 tokens); 1,000 windows of 800 tokens take ~190 us each instead of
~530 us. Smaller batches use :func:`flows.metrics.mattr` / :func:`flows.metrics.mtld`."""

_MAX_GRID_CELLS = 2_000_000
"""Bound of one chunk's lock-step grid (int32 cells: 8 MB)."""

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
    if len(sufficient) < MIN_BATCH:
        for index in sufficient:
            tokens = [token for piece in windows[index] for token in piece]
            results[index] = VocabularyMetrics(
                len(tokens),
                len(set(tokens)),
                mattr(tokens, window_size=MATTR_WINDOW),
                mtld(tokens, threshold=MTLD_THRESHOLD),
                True,
            )
    else:
        if len(_TYPE_IDS) > _MAX_TYPES:  # between batches only: ids must agree within one
            _TYPE_IDS.clear()
            _piece_ids.cache_clear()
        # Windows of similar length together, in chunks of bounded size (the lock-step grid is tokens of the
        # longest window x windows).
        sufficient.sort(key=sizes.__getitem__)
        chunk: list[int] = []
        for index in sufficient:
            if chunk and sizes[index] * (len(chunk) + 1) > _MAX_GRID_CELLS:
                _fill(results, windows, chunk)
                chunk = []
            chunk.append(index)
        _fill(results, windows, chunk)
    return [metrics for metrics in results if metrics is not None]


_TYPE_IDS: dict[str, int] = {}
"""Process-wide integer id of every token type seen (ids only need to agree within one call)."""
_MAX_TYPES = 1 << 22


@functools.lru_cache(maxsize=32768)
def _piece_ids(piece: tuple[str, ...]) -> npt.NDArray[np.int32]:
    """The type ids of one piece's tokens."""
    ids = _TYPE_IDS
    array = np.fromiter((ids.setdefault(token, len(ids)) for token in piece), dtype=np.int32, count=len(piece))
    array.flags.writeable = False  # shared by every window the piece is in
    return array


def _fill(
    results: list[VocabularyMetrics | None], windows: Sequence[Sequence[tuple[str, ...]]], chunk: list[int]
) -> None:
    for index, metrics in zip(chunk, _vectorised([windows[index] for index in chunk]), strict=True):
        results[index] = metrics


def _vectorised(windows: Sequence[Sequence[tuple[str, ...]]]) -> list[VocabularyMetrics]:
    """The measures of windows that all have at least ``MATTR_WINDOW`` tokens (see the module docstring)."""
    flat = np.concatenate([_piece_ids(piece) for pieces in windows for piece in pieces])
    types = len(_TYPE_IDS)
    lengths = np.fromiter((sum(len(piece) for piece in pieces) for pieces in windows), np.int32, len(windows))
    lists = len(windows)
    starts = np.zeros(lists, dtype=np.int32)
    np.cumsum(lengths[:-1], out=starts[1:])
    owner = np.repeat(np.arange(lists, dtype=np.int32), lengths)
    position = np.arange(flat.size, dtype=np.int32) - starts[owner]
    # previous / next occurrence of the same type in the same list (global positions; -1: none)
    order = np.argsort(owner.astype(np.int64) * types + flat, kind="stable")
    same = (owner[order[1:]] == owner[order[:-1]]) & (flat[order[1:]] == flat[order[:-1]])
    previous = np.full(flat.size, -1, dtype=np.int32)
    following = np.full(flat.size, -1, dtype=np.int32)
    previous[order[1:][same]] = order[:-1][same]
    following[order[:-1][same]] = order[1:][same]
    local_previous = np.where(previous >= 0, previous - starts[owner], -1)
    distinct = np.bincount(owner, weights=(previous < 0), minlength=lists)

    # MATTR: integer sum of the distinct counts of all windows, per list
    w = MATTR_WINDOW
    n = lengths[owner]
    low = np.maximum(local_previous + 1, position - w + 1)
    high = np.minimum(position, n - w)
    windows_counted = np.maximum(high - low + 1, 0)
    distinct_sums = np.add.reduceat(windows_counted, starts)

    # MTLD: forward pass on `local_previous`; the backward pass reads each list reversed, where the previous
    # occurrence of position r = n - 1 - i is the next occurrence of i.
    backward_previous = np.where(following >= 0, n - 1 - (following - starts[owner]), -1)
    backward_position = n - 1 - position
    forward_pass = _mtld_lockstep(local_previous, position, owner, lengths)
    backward_pass = _mtld_lockstep(backward_previous, backward_position, owner, lengths)

    results = []
    for index in range(len(windows)):
        count = int(lengths[index])
        results.append(
            VocabularyMetrics(
                count,
                int(distinct[index]),
                int(distinct_sums[index]) / (w * (count - w + 1)),
                (float(forward_pass[index]) + float(backward_pass[index])) / 2,
                True,
            )
        )
    return results


def _mtld_lockstep(previous: _Ints, position: _Ints, owner: _Ints, lengths: _Ints) -> npt.NDArray[np.float64]:
    """One MTLD pass (tokens / factors) of every list, all lists stepping together.

    ``previous[k]``/``position[k]``: for flat index ``k``, the position (in this pass's reading order) of the
    previous occurrence of its type and its own position; ``owner``: its list; ``lengths``: tokens per list.
    """
    lists = lengths.size
    longest = int(lengths.max())
    # rows sorted by length, longest first: the lists still running at step t are a prefix of the rows
    rows = np.argsort(-lengths, kind="stable")
    row_of = np.empty(lists, dtype=np.int32)
    row_of[rows] = np.arange(lists, dtype=np.int32)
    grid = np.full((longest, lists), -1, dtype=np.int32)  # grid[t, row]: previous occurrence of token t
    grid[position, row_of[owner]] = previous
    running = np.searchsorted(-lengths[rows], -np.arange(longest), side="left")  # rows with length > t

    segment_start = np.zeros(lists, dtype=np.int32)
    types = np.zeros(lists, dtype=np.int32)
    length = np.zeros(lists, dtype=np.int32)
    ttr = np.ones(lists, dtype=np.float64)
    factors = np.zeros(lists, dtype=np.float64)
    threshold = MTLD_THRESHOLD
    for step in range(longest):
        k = int(running[step])
        types[:k] += grid[step, :k] < segment_start[:k]
        length[:k] += 1
        np.divide(types[:k], length[:k], out=ttr[:k])
        ended = ttr[:k] <= threshold
        if ended.any():
            factors[:k] += ended
            segment_start[:k][ended] = step + 1
            types[:k][ended] = 0
            length[:k][ended] = 0
    partial = length > 0
    factors[partial] += (1 - ttr[partial]) / (1 - threshold)
    factors[factors == 0] = 1.0
    by_row = lengths[rows] / factors
    result = np.empty(lists, dtype=np.float64)
    result[rows] = by_row
    return result
