"""Collector tuning of the long-running processes (runtime.garbage_collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from runtime.garbage_collector import raise_young_threshold

pytestmark = pytest.mark.unit


@pytest.fixture
def restored_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*before)


def test_raises_the_young_threshold_and_never_lowers_it(restored_thresholds: tuple[int, int, int]) -> None:
    assert raise_young_threshold(0) == (700, 10, 10)  # 0: left as it is
    assert raise_young_threshold(200_000) == (200_000, 50, 100)
    assert gc.get_threshold() == (200_000, 50, 100)
    assert raise_young_threshold(5_000) == (200_000, 50, 100)  # a lower value does not undo another caller's
    with pytest.raises(ValueError, match=">= 0"):
        raise_young_threshold(-1)
