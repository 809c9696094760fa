"""Window distributions of many windows at once, compiled: the same values as :func:`flows.aggregate.distribution`.

Every closed window's row summarises each metric of ``flows.tables.WINDOW_DISTRIBUTION_METRICS`` over the
window's submissions as ``(avg, min, p50, p90, max)`` of the defined values (:func:`flows.aggregate.distribution`:
``avg`` = ``math.fsum`` / count, quantiles by linear interpolation between order statistics, Hyndman & Fan 1996
definition 7). The Python function costs ~1 µs per value plus call overhead, for 7 metrics of every window, and
each submission is in nine windows: it was the largest part of building window rows in a replay. Here one call
of a numba-compiled kernel (https://numba.readthedocs.io; ``cache=True``) computes them for all windows of a batch.

The floats are identical to the Python function's, not approximations: the kernel sorts the defined values and
applies the same interpolation arithmetic in the same order (IEEE float64, no fast-math), and ``avg`` uses
:func:`_fsum`, a port of CPython's ``math.fsum`` (Shewchuk 1997 "Adaptive precision floating-point arithmetic",
as in CPython's ``Modules/mathmodule.c``: exact partial sums, then a correctly rounded total). Unit tests hold the
kernel equal to :func:`flows.aggregate.distribution` and :func:`_fsum` equal to ``math.fsum`` on random values.
A window with a non-finite value (``math.fsum`` raises or returns ``inf``/``nan`` there) is reported as not
computed, and the caller falls back to the Python function for it.
"""

from __future__ import annotations

import numba  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt

__all__ = ["batch_distributions"]

_Floats = npt.NDArray[np.float64]
_Ints = npt.NDArray[np.int64]

STATISTICS = 5
"""``avg, min, p50, p90, max``: the statistics of one distribution, in that order."""


def batch_distributions(
    values: _Floats, members: _Ints, offsets: _Ints
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Distributions of every metric of every window.

    ``values``: ``(items, metrics)`` float64, one row per item (a submission), ``nan`` where the metric is
    undefined (``None``); window ``j``'s items are the rows ``members[offsets[j]:offsets[j + 1]]`` (``offsets`` has
    one entry more than there are windows). Returns ``(stats, computed)``: ``stats[j, m]`` is
    ``(avg, min, p50, p90, max)`` of metric ``m`` over window ``j``'s defined values, all ``nan`` when none is
    defined; ``computed[j]`` is False when window ``j`` holds an infinite value (its ``stats`` are then not
    meaningful: use :func:`flows.aggregate.distribution`). Raises ``ValueError`` on inconsistent shapes.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    members = np.ascontiguousarray(members, dtype=np.int64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if values.ndim != 2:
        raise ValueError(f"values must be (items, metrics), got shape {values.shape}")
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != members.size:
        raise ValueError("offsets must start at 0 and end at len(members)")
    if members.size and (members.min() < 0 or members.max() >= values.shape[0]):
        raise ValueError("members must index rows of values")
    return _kernel(values, members, offsets)  # type: ignore[no-any-return]


@numba.njit(cache=True, nogil=True)  # type: ignore[misc]
def _fsum(values: _Floats, count: int, partials: _Floats) -> float:
    """``math.fsum(values[:count])`` for finite values: CPython's algorithm (``Modules/mathmodule.c``,
    ``math_fsum``; Shewchuk's exact partials, then the correctly rounded sum with its half-way correction).
    ``partials``: scratch space of at least ``count`` entries."""
    n = 0
    for k in range(count):
        x = values[k]
        i = 0
        for j in range(n):
            y = partials[j]
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                partials[i] = lo
                i += 1
            x = hi
        n = i
        if x != 0.0:
            partials[n] = x
            n += 1
    hi = 0.0
    if n > 0:
        n -= 1
        hi = partials[n]
        lo = 0.0
        while n > 0:
            x = hi
            n -= 1
            y = partials[n]
            hi = x + y
            yr = hi - x
            lo = y - yr
            if lo != 0.0:
                break
        # Make half-even rounding work across multiple partials (as CPython does).
        if n > 0 and ((lo < 0.0 and partials[n - 1] < 0.0) or (lo > 0.0 and partials[n - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            yr = x - hi
            if y == yr:
                hi = x
    return hi


@numba.njit(cache=True, nogil=True)  # type: ignore[misc]
def _kernel(values: _Floats, members: _Ints, offsets: _Ints) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """See :func:`batch_distributions`."""
    windows = offsets.size - 1
    metrics = values.shape[1]
    stats = np.full((windows, metrics, 5), np.nan)
    computed = np.ones(windows, np.bool_)
    longest = 0
    for j in range(windows):
        longest = max(longest, offsets[j + 1] - offsets[j])
    defined = np.empty(max(longest, 1), np.float64)
    partials = np.empty(max(longest, 1) + 1, np.float64)
    for j in range(windows):
        for m in range(metrics):
            count = 0
            for k in range(offsets[j], offsets[j + 1]):
                value = values[members[k], m]
                if value == value:  # not nan: defined
                    if np.isinf(value):
                        computed[j] = False
                    defined[count] = value
                    count += 1
            if count == 0 or not computed[j]:
                continue
            ordered = np.sort(defined[:count])
            last = count - 1
            median_at = last * 0.5
            p90_at = last * 0.9
            low = int(np.floor(median_at))
            high = int(np.floor(p90_at))
            median_low = ordered[low]
            p90_low = ordered[high]
            stats[j, m, 0] = _fsum(ordered, count, partials) / count
            stats[j, m, 1] = ordered[0]
            stats[j, m, 2] = median_low + (ordered[min(low + 1, last)] - median_low) * (median_at - low)
            stats[j, m, 3] = p90_low + (ordered[min(high + 1, last)] - p90_low) * (p90_at - high)
            stats[j, m, 4] = ordered[last]
    return stats, computed
