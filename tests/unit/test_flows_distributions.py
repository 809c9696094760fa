"""The compiled window distributions (flows.distributions) against their Python definition (flows.aggregate)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from flows.aggregate import distribution
from flows.distributions import _fsum, batch_distributions


def _as_python(stats: np.ndarray) -> list[float | None]:
    return [None if value != value else value for value in stats.tolist()]


def test_fsum_port_equals_math_fsum_exactly() -> None:
    rng = random.Random(11)
    scratch = np.empty(64, dtype=np.float64)
    cases = [
        [1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50],  # cancellations a naive sum gets wrong
        [0.1] * 10,
        [1.0, 1e-16, 1e-16],  # the half-way rounding correction across partials
        [2.0**53, 1.0, -(2.0**-53)],
        [],
    ]
    for _ in range(3000):
        exponent = rng.choice([0, 20, 300])
        cases.append([rng.uniform(-1, 1) * 10.0 ** rng.randint(-exponent, exponent) for _ in range(rng.randint(1, 40))])
    for values in cases:
        array = np.array(values, dtype=np.float64)
        assert _fsum(array, len(values), scratch) == math.fsum(values), values


def test_batch_distributions_equal_the_python_definition_exactly() -> None:
    rng = random.Random(7)
    items = 400
    metrics = 7
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
    stats, computed = batch_distributions(values, np.array(members), np.array(offsets))
    assert stats.shape == (len(windows), metrics, 5)
    assert computed.all()
    for j, chosen in enumerate(windows):
        for m in range(metrics):
            expected = distribution([table[i][m] for i in chosen])
            assert tuple(_as_python(stats[j, m])) == expected, (j, m)  # exactly, floats included


def test_all_undefined_gives_no_statistics_and_infinity_is_left_to_python() -> None:
    values = np.array([[math.nan, 1.0], [math.nan, math.inf], [math.nan, 3.0]])
    stats, computed = batch_distributions(values, np.array([0, 2, 1, 0]), np.array([0, 2, 4]))
    assert _as_python(stats[0, 0]) == [None] * 5
    assert _as_python(stats[0, 1]) == list(distribution([1.0, 3.0]))
    assert computed.tolist() == [True, False]


def test_batch_distributions_reject_inconsistent_shapes() -> None:
    values = np.zeros((3, 2))
    with pytest.raises(ValueError, match="offsets"):
        batch_distributions(values, np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="members"):
        batch_distributions(values, np.array([0, 5]), np.array([0, 2]))
    with pytest.raises(ValueError, match="items, metrics"):
        batch_distributions(np.zeros(3), np.array([0]), np.array([0, 1]))
