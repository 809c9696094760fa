"""Norms: the reference values a learner's metrics are read against (what counts as too slow, too fast...).

A norm is not a metric definition (changing one does not change a stored value, so no ``METRICS_VERSION`` bump),
but every component that judges a metric reads the same one: the feedback rules (``feedback/``, whose settings may
override the defaults for a deployment) and the progress summary (``api/``, which counts a move toward the band as
progress).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["PACE_BAND", "PaceBand"]


@dataclass(frozen=True, slots=True)
class PaceBand:
    """A comfortable speech rate: ``min_wpm`` to ``max_wpm`` words per minute (``speech_rate_wpm``), bounds
    included. Raises ``ValueError`` unless ``0 < min_wpm < max_wpm`` (finite)."""

    min_wpm: float
    max_wpm: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_wpm) and math.isfinite(self.max_wpm) and 0 < self.min_wpm < self.max_wpm):
            raise ValueError(
                f"a pace band needs 0 < min_wpm < max_wpm, got {self.min_wpm!r} and {self.max_wpm!r} "
                "(speech_rate_min_wpm must be below speech_rate_max_wpm)"
            )

    def judge(self, rate_wpm: float) -> Literal["slow", "comfortable", "fast"]:
        """Where a speech rate (words per minute) lies: below the band, in it, or above it."""
        if rate_wpm < self.min_wpm:
            return "slow"
        if rate_wpm > self.max_wpm:
            return "fast"
        return "comfortable"

    def distance(self, rate_wpm: float) -> float:
        """How far a speech rate lies outside the band, words per minute: 0 inside, else the gap to the nearer end."""
        return max(self.min_wpm - rate_wpm, 0.0, rate_wpm - self.max_wpm)

    @property
    def bounds(self) -> tuple[float, float]:
        """``(min_wpm, max_wpm)``."""
        return (self.min_wpm, self.max_wpm)


PACE_BAND = PaceBand(min_wpm=130.0, max_wpm=175.0)
"""The comfortable pace of the platform, 130-175 words per minute.

Lower bound: NCVS (National Center for Voice and Speech) puts average US English conversation at about 150 wpm;
Tauroza & Allison (1990, Applied Linguistics 11(1)) measured about 140 wpm for lectures to non-native listeners
and about 160 wpm for radio monologues; 130 leaves a margin below the slowest of these norms. Upper bound: Tauroza &
Allison (1990) ~160 wpm for radio monologues (~190 interviews, ~210 conversation); broadcast guidance recommends
160-180 wpm for comprehension at first hearing (Rodero 2012, Text & Talk 32(3)); 175 is the upper end of a
presentation pace that learners' listeners follow comfortably."""
