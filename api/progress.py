"""The headline metrics of the progress views and the change summary (pure functions, no I/O).

The summary compares the learner's first weekly windows (the baseline) with the latest ones: for each metric the
submission-weighted mean over each period, the difference and whether it moved in the direction that counts as
progress (e.g. fewer silent pauses per minute, a higher articulation rate). Definitions of the metrics are in
:mod:`flows.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from api.models import Change, Period, ProgressSummary, WindowPoint
from flows.metrics import PACE_BAND

__all__ = [
    "HEADLINE_METRICS",
    "Metric",
    "PACE_RANGE_WPM",
    "UNCHANGED_FRACTION",
    "compare",
    "distance_to",
    "period_of",
    "summarize",
]

UNCHANGED_FRACTION = 0.02
"""A change smaller than this fraction of the baseline counts as 'unchanged'."""


PACE_RANGE_WPM: tuple[float, float] = PACE_BAND.bounds
"""The comfortable speech rate, words per minute: :data:`flows.metrics.norms.PACE_BAND` (130–175 wpm, with its
sources), the default band of the feedback's pace rule too, so the summary and the feedback agree on which way is
progress."""


@dataclass(frozen=True)
class Metric:
    """A metric of :class:`~api.models.WindowPoint` shown in summaries and charts.

    ``better``: ``"higher"``/``"lower"``, or ``"toward_range"`` when progress means getting closer to ``target``
    (``(low, high)``, in the metric's unit): a learner at 236 wpm who slows to 210 improved.
    """

    name: str
    label: str
    unit: str
    better: Literal["higher", "lower", "toward_range"]
    target: tuple[float, float] | None = None


def distance_to(value: float, target: tuple[float, float]) -> float:
    """How far ``value`` lies outside ``target`` (``(low, high)``): 0 inside, else the gap to the nearer end."""
    low, high = target
    return max(low - value, 0.0, value - high)


HEADLINE_METRICS: tuple[Metric, ...] = (
    Metric("speech_rate_wpm", "Speech rate", "words/min", "toward_range", PACE_RANGE_WPM),
    Metric("articulation_rate_wpm", "Articulation rate", "words/min", "higher"),
    Metric("silent_pauses_per_minute", "Silent pauses", "per min", "lower"),
    Metric("mean_silent_pause_s", "Mean pause length", "s", "lower"),
    Metric("mean_length_of_run", "Mean length of run", "words", "higher"),
    Metric("articulation_rate_sps", "Articulation rate", "syllables/s", "higher"),
    Metric("mean_length_of_run_syllables", "Mean length of run", "syllables", "higher"),
    Metric("filled_pauses_per_100_words", "Filled pauses", "per 100 words", "lower"),
    Metric("filled_pauses_per_minute", "Filled pauses", "per min", "lower"),
    Metric("repetitions_per_100_words", "Repetitions", "per 100 words", "lower"),
    Metric("mattr", "Vocabulary diversity (MATTR)", "ratio", "higher"),
    Metric("mtld", "Vocabulary diversity (MTLD)", "tokens", "higher"),
)
"""Speech rate counts as progress when it moves toward the comfortable band (:data:`PACE_RANGE_WPM`); articulation
rate is 'higher is better' within the range learners reach (it excludes pauses), in words and in syllables per
second; a coach reads them together with the pause metrics. Speech rate in syllables per second has no reference
band yet, so it is charted (:data:`api.charts.CHARTS`) but not judged here. Filled pauses are null (and their
change 'unknown') over windows without hesitation detection."""

_VOCABULARY = {"mattr", "mtld"}


def period_of(windows: Sequence[WindowPoint]) -> Period | None:
    """Submission-weighted means of :data:`HEADLINE_METRICS` over ``windows`` (weekly windows).

    MATTR and MTLD are averaged only over windows with ``vocabulary_sufficient`` (≥ 50 tokens); a metric with no
    value in any window is None. Returns None for no windows.
    """
    if not windows:
        return None
    values: dict[str, float | None] = {}
    for metric in HEADLINE_METRICS:
        total = weight = 0.0
        for w in windows:
            value = getattr(w, metric.name)
            if value is None or (metric.name in _VOCABULARY and not w.vocabulary_sufficient):
                continue
            total += value * w.submissions
            weight += w.submissions
        values[metric.name] = round(total / weight, 4) if weight else None
    return Period(
        weeks=len(windows),
        start=min(w.window_start for w in windows),
        end=max(w.window_end for w in windows),
        submissions=sum(w.submissions for w in windows),
        values=values,
    )


def compare(baseline: Period | None, recent: Period | None) -> list[Change]:
    """One :class:`~api.models.Change` per headline metric from ``baseline`` to ``recent``."""
    changes = []
    for metric in HEADLINE_METRICS:
        before = baseline.values.get(metric.name) if baseline else None
        after = recent.values.get(metric.name) if recent else None
        change = change_pct = None
        direction: Literal["improved", "declined", "unchanged", "unknown"] = "unknown"
        if before is not None and after is not None:
            change = round(after - before, 4)
            change_pct = round(100 * change / before, 2) if before else None
            if metric.better == "toward_range" and metric.target is not None:
                # Progress = a smaller gap to the band; staying inside it (both gaps 0) is 'unchanged'.
                closer = distance_to(before, metric.target) - distance_to(after, metric.target)
                if abs(closer) <= UNCHANGED_FRACTION * abs(before):
                    direction = "unchanged"
                else:
                    direction = "improved" if closer > 0 else "declined"
            elif abs(change) <= UNCHANGED_FRACTION * abs(before):
                direction = "unchanged"
            else:
                up = change > 0
                direction = "improved" if up == (metric.better == "higher") else "declined"
        changes.append(
            Change(
                metric=metric.name,
                label=metric.label,
                unit=metric.unit,
                baseline=before,
                recent=after,
                change=change,
                change_pct=change_pct,
                better=metric.better,
                target=list(metric.target) if metric.target else None,
                direction=direction,
            )
        )
    return changes


def summarize(weekly: Sequence[WindowPoint], *, baseline_weeks: int) -> ProgressSummary:
    """The learner's first ``baseline_weeks`` weekly windows against the last ``baseline_weeks``.

    ``weekly`` is every weekly window of the learner up to the end of the requested range, in any order. With
    fewer than ``2 × baseline_weeks`` windows the two periods split the windows in halves (the baseline gets
    the older half); with one window there is only a baseline.
    """
    ordered = sorted((w for w in weekly if w.submissions > 0), key=lambda w: w.window_start)
    size = min(baseline_weeks, len(ordered) // 2) if len(ordered) > 1 else len(ordered)
    first = ordered[:size]
    last = ordered[-size:] if len(ordered) > 1 and size else []
    baseline, recent = period_of(first), period_of(last)
    return ProgressSummary(baseline=baseline, recent=recent, changes=compare(baseline, recent))
