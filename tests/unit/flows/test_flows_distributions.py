"""The window distributions (flows.distributions): the definitions of avg, min, p50, p90 and max."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from flows.aggregate import distribution
from flows.distributions import batch_distributions

pytestmark = pytest.mark.unit


def _as_python(stats: np.ndarray) -> list[float | None]:
    return [None if value != value else value for value in stats.tolist()]


def test_distribution_of_known_values() -> None:
    assert distribution([None, 3.0, 1.0, None, 2.0]) == (2.0, 1.0, 2.0, pytest.approx(2.8), 3.0)
    assert distribution([1.0, 2.0, 3.0, 4.0])[2] == 2.5  # the median interpolates between the middle values
    assert distribution([1.0, 2.0, 3.0, 4.0, 5.0])[3] == pytest.approx(4.6)
    assert distribution([7.0]) == (7.0, 7.0, 7.0, 7.0, 7.0)
    assert distribution([None, None]) == (None,) * 5
    assert distribution([]) == (None,) * 5


def test_batch_distributions_follow_the_definitions() -> None:
    """avg is the mean (within rounding of the summation order), quantiles are numpy's default (Hyndman & Fan
    definition 7), min and max exact; each window's defined values only."""
    rng = random.Random(7)
    items, metrics = 400, 7
    table = [
        [
            rng.choice([None, rng.uniform(0, 300), float(rng.randint(0, 5)), rng.uniform(0, 1e-3)])
            for _ in range(metrics)
        ]
        for _ in range(items)
    ]
    values = np.array(table, dtype=np.float64)
    members: list[int] = []
    offsets = [0]
    windows = []
    for _ in range(600):
        chosen = [rng.randrange(items) for _ in range(rng.randint(1, 12))]
        windows.append(chosen)
        members.extend(chosen)
        offsets.append(len(members))
    stats = batch_distributions(values, np.array(members), np.array(offsets))
    assert stats.shape == (len(windows), metrics, 5)
    for j, chosen in enumerate(windows):
        for m in range(metrics):
            defined = [table[i][m] for i in chosen if table[i][m] is not None]
            got = _as_python(stats[j, m])
            if not defined:
                assert got == [None] * 5
                continue
            avg, low, p50, p90, high = got
            assert avg == pytest.approx(math.fsum(defined) / len(defined), rel=1e-12, abs=1e-15)
            assert (low, high) == (min(defined), max(defined))
            assert p50 == pytest.approx(float(np.percentile(defined, 50)), rel=1e-12, abs=1e-15)
            assert p90 == pytest.approx(float(np.percentile(defined, 90)), rel=1e-12, abs=1e-15)


def test_all_undefined_gives_no_statistics_and_infinity_propagates() -> None:
    values = np.array([[math.nan, 1.0], [math.nan, math.inf], [math.nan, 3.0]])
    stats = batch_distributions(values, np.array([0, 2, 1, 0]), np.array([0, 2, 4]))
    assert _as_python(stats[0, 0]) == [None] * 5
    assert _as_python(stats[0, 1]) == [2.0, 1.0, 2.0, pytest.approx(2.8), 3.0]
    assert _as_python(stats[1, 1])[0] == math.inf


def test_batch_distributions_reject_inconsistent_shapes() -> None:
    values = np.zeros((3, 2))
    with pytest.raises(ValueError, match="offsets"):
        batch_distributions(values, np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="members"):
        batch_distributions(values, np.array([0, 5]), np.array([0, 2]))
    with pytest.raises(ValueError, match="items, metrics"):
        batch_distributions(np.zeros(3), np.array([0]), np.array([0, 1]))
