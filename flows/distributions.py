"""Window distributions: ``(avg, min, p50, p90, max)`` of each metric over a window's submissions, compiled.

Every closed window's row summarises each metric of ``flows.tables.WINDOW_DISTRIBUTION_METRICS`` over the window's
submissions where the metric is defined (``None`` values are left out; all ``None`` when none is defined):

* ``avg``: the sum of the defined values, added in ascending order in float64, over their count;
* ``min`` and ``max``: the extreme values;
* ``p50`` and ``p90``: quantiles by linear interpolation between order statistics (Hyndman & Fan 1996, definition
  7, numpy's default): at position ``(n - 1) * q`` of the sorted values.

:func:`batch_distributions` is the implementation: one call of a kernel compiled by numba
(https://numba.readthedocs.io; ``cache=True``) for every window of a batch of closed windows (each submission is
in about nine windows, and there are seven metrics); :func:`flows.aggregate.distribution` is a batch of one.
Non-finite values follow IEEE arithmetic (an infinite value makes ``avg`` infinite, or ``nan``, reported as
undefined, when both infinities occur).
"""

from __future__ import annotations

import numba  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt

__all__ = ["STATISTICS", "batch_distributions"]

_Floats = npt.NDArray[np.float64]
_Ints = npt.NDArray[np.int64]

STATISTICS = 5
"""``avg, min, p50, p90, max``: the statistics of one distribution, in that order."""


def batch_distributions(values: _Floats, members: _Ints, offsets: _Ints) -> _Floats:
    """Distributions of every metric of every window.

    ``values``: ``(items, metrics)`` float64, one row per item (a submission), ``nan`` where the metric is
    undefined (``None``); window ``j``'s items are the rows ``members[offsets[j]:offsets[j + 1]]`` (``offsets`` has
    one entry more than there are windows). Returns ``stats`` of shape ``(windows, metrics, 5)``: ``stats[j, m]``
    is ``(avg, min, p50, p90, max)`` of metric ``m`` over window ``j``'s defined values (module docstring), all
    ``nan`` when none is defined. Raises ``ValueError`` on inconsistent shapes.
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
def _kernel(values: _Floats, members: _Ints, offsets: _Ints) -> _Floats:
    """See :func:`batch_distributions`."""
    windows = offsets.size - 1
    metrics = values.shape[1]
    stats = np.full((windows, metrics, STATISTICS), np.nan)
    longest = 0
    for j in range(windows):
        longest = max(longest, offsets[j + 1] - offsets[j])
    defined = np.empty(max(longest, 1), np.float64)
    for j in range(windows):
        for m in range(metrics):
            count = 0
            for k in range(offsets[j], offsets[j + 1]):
                value = values[members[k], m]
                if value == value:  # not nan: defined
                    defined[count] = value
                    count += 1
            if count == 0:
                continue
            ordered = np.sort(defined[:count])
            total = 0.0
            for k in range(count):
                total += ordered[k]
            last = count - 1
            median_at = last * 0.5
            p90_at = last * 0.9
            low = int(np.floor(median_at))
            high = int(np.floor(p90_at))
            median_low = ordered[low]
            p90_low = ordered[high]
            stats[j, m, 0] = total / count
            stats[j, m, 1] = ordered[0]
            stats[j, m, 2] = median_low + (ordered[min(low + 1, last)] - median_low) * (median_at - low)
            stats[j, m, 3] = p90_low + (ordered[min(high + 1, last)] - p90_low) * (p90_at - high)
            stats[j, m, 4] = ordered[last]
    return stats
