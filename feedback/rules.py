"""The deterministic rules provider: the default, and the last resort of every failover chain.

It never calls out and never fails on valid metrics, so a learner always gets feedback. Each rule looks at one
metric of :func:`flows.metrics.compute_metrics` and yields at most one point naming that metric and its measured
value; thresholds live in :class:`feedback.settings.FeedbackSettings` with their sources (the pace band's default
is :data:`flows.metrics.norms.PACE_BAND`, which the progress summary uses too):

=====================  ==============================  ===============================================
rule                   metric (point)                  work_on when (defaults)
=====================  ==============================  ===============================================
pace                   ``speech_rate_wpm``             < 130 wpm ("speed up") or > 175 wpm ("slow down")
long pauses            ``mean_silent_pause_s``         mean silent pause >= 1.0 s
frequent pauses        ``silent_pauses_per_minute``    > 30 silent pauses (>= 250 ms) per minute
filled pauses          ``filled_pause_count``          more than 4 per 100 words (with detection)
vocabulary             ``mattr``                       MATTR below the learner's CEFR level's minimum
=====================  ==============================  ===============================================

A rule whose metric is within range yields a ``went_well`` point instead, except the filled-pause rule: the speech
recogniser leaves most fillers out, so a low count is never praised (:data:`feedback.providers.NOT_PRAISED`), and
without hesitation detection (``hesitation_detection`` false: no detector listened) the rule says nothing at all,
since the figures are unknown (:func:`flows.metrics.known_filled_pauses`). Pace
and pause rules need at least ``min_words_for_pace`` words (rates over a few words are noise); the vocabulary rule
needs 50 lexical tokens (``vocabulary_sufficient``: below that MATTR is not defined).
"""

from __future__ import annotations

from collections.abc import Iterator

from feedback.providers import RULES_PROVIDER, FeedbackRequest, ProviderResult, metric_value
from feedback.settings import FeedbackSettings
from flows.metrics import FILLED_PAUSE_MEASURES, MIN_VOCABULARY_TOKENS, SubmissionMetrics, known_filled_pauses
from schemas.events import FeedbackPoint

__all__ = ["RulesProvider", "compose_text"]


class RulesProvider:
    """Feedback from thresholds on the transcript's metrics (see the module docstring). Thread-safe."""

    name = RULES_PROVIDER
    model: str | None = None

    def __init__(self, settings: FeedbackSettings | None = None) -> None:
        self.settings = settings or FeedbackSettings()

    def generate(self, request: FeedbackRequest) -> ProviderResult:
        """Points for pace, pauses, filled pauses and vocabulary, and a text that strings them together.

        Deterministic: the same request gives the same result. Never raises on metrics produced by
        :func:`flows.metrics.compute_metrics`.
        """
        m = request.metrics
        points = [
            *self._pace(m),
            *self._pauses(m),
            *self._filled_pauses(m),
            *self._vocabulary(m, request.level),
        ]
        return ProviderResult(provider=self.name, model=None, text=compose_text(points, m), points=tuple(points))

    # ------------------------------------------------------------------------------------------------ rules
    def _enough_for_rates(self, m: SubmissionMetrics) -> bool:
        return m.word_count >= self.settings.min_words_for_pace and m.speech_rate_wpm is not None

    def _pace(self, m: SubmissionMetrics) -> Iterator[FeedbackPoint]:
        if not self._enough_for_rates(m):
            return
        pace = self.settings.pace_band
        rate = metric_value(m, "speech_rate_wpm")
        assert rate is not None  # checked by _enough_for_rates
        band = f"{pace.min_wpm:.0f}-{pace.max_wpm:.0f}"
        judged = pace.judge(rate)
        if judged == "slow":
            yield _work_on(
                "speech_rate_wpm",
                rate,
                f"Your pace was {rate:.0f} words per minute, slower than the comfortable {band} range: speed up a "
                "little by linking words within a phrase and keeping pauses for the ends of ideas.",
            )
        elif judged == "fast":
            yield _work_on(
                "speech_rate_wpm",
                rate,
                f"Your pace was {rate:.0f} words per minute, faster than the comfortable {band} range: slow down "
                "so that listeners can follow, and pause briefly after each key idea.",
            )
        else:
            yield _went_well(
                "speech_rate_wpm", rate, f"Your pace of {rate:.0f} words per minute is easy to follow ({band} range)."
            )

    def _pauses(self, m: SubmissionMetrics) -> Iterator[FeedbackPoint]:
        if not self._enough_for_rates(m):
            return
        s = self.settings
        mean_pause = metric_value(m, "mean_silent_pause_s")
        per_minute = metric_value(m, "silent_pauses_per_minute")
        flagged = False
        if mean_pause is not None and mean_pause >= s.long_pause_s:
            flagged = True
            long_count = sum(1 for pause in m.silent_pauses_s if pause >= s.long_pause_s)
            yield _work_on(
                "mean_silent_pause_s",
                mean_pause,
                f"Your pauses lasted {mean_pause:.1f} s on average, and {long_count} of them {s.long_pause_s:g} s or "
                "more: plan the next idea while you finish the current one, or bridge with a phrase like 'let me "
                "think' instead of a long silence.",
            )
        if per_minute is not None and per_minute > s.max_pauses_per_minute:
            flagged = True
            run = m.mean_length_of_run or 0.0
            yield _work_on(
                "silent_pauses_per_minute",
                per_minute,
                f"You paused {per_minute:.0f} times per minute, about every {run:.0f} words: try to say whole "
                "phrases in one breath before pausing.",
            )
        if not flagged and per_minute is not None:
            detail = f"only {per_minute:.0f} short pauses per minute" if per_minute >= 0.5 else "no hesitation pauses"
            yield _went_well("silent_pauses_per_minute", per_minute, f"Your speech flowed well, with {detail}.")

    def _filled_pauses(self, m: SubmissionMetrics) -> Iterator[FeedbackPoint]:
        """A ``work_on`` point naming the measured rates (per 100 words and per minute) when fillers pass the
        threshold; never praise (a low count is not evidence: :data:`feedback.providers.NOT_PRAISED`). Nothing at
        all without hesitation detection: the filled-pause figures are then unknown
        (:func:`flows.metrics.known_filled_pauses`)."""
        if m.word_count < self.settings.min_words_for_pace:
            return
        known = known_filled_pauses(
            {name: getattr(m, name) for name in (*FILLED_PAUSE_MEASURES, "hesitation_detection")}
        )
        count, per_100, per_minute = (
            known["filled_pause_count"],
            known["filled_pauses_per_100_words"],
            known["filled_pauses_per_minute"],
        )
        if count is None or per_100 is None:
            return
        if per_100 > 100 * self.settings.filled_pause_max_ratio:
            forms = ", ".join(sorted(m.filled_pauses, key=lambda form: (-m.filled_pauses[form], form)))
            kinds = [forms] if forms else []
            if m.voiced_hesitation_count:
                kinds.append(f"{m.voiced_hesitation_count} heard but not transcribed")
            named = f" ({', and '.join(kinds)})" if kinds else ""
            rate = f"{per_100:.1f} filled pauses per 100 words"
            if per_minute is not None:
                rate += f" ({per_minute:.1f} per minute)"
            yield _work_on(
                "filled_pause_count",
                float(count),
                f"You used {count} filled pauses{named} in {m.word_count} words, {rate}: when you need time to "
                "think, pause silently instead.",
            )

    def _vocabulary(self, m: SubmissionMetrics, level: str) -> Iterator[FeedbackPoint]:
        value = metric_value(m, "mattr")
        if not m.vocabulary_sufficient or value is None:
            return
        minimum = self.settings.mattr_minimum(level)
        if minimum is None:
            return
        shown = (level or self.settings.default_level).upper()
        if value < minimum:
            yield _work_on(
                "mattr",
                value,
                f"Your vocabulary variety (MATTR {value:.2f}) is below what we expect at {shown} ({minimum:.2f}): "
                "avoid repeating the same words, and use synonyms and more precise words.",
            )
        else:
            yield _went_well(
                "mattr", value, f"You used a varied vocabulary (MATTR {value:.2f}, {shown} expects {minimum:.2f})."
            )


def _work_on(metric: str, value: float, message: str) -> FeedbackPoint:
    return FeedbackPoint(kind="work_on", metric=metric, value=round(value, 3), message=message)


def _went_well(metric: str, value: float, message: str) -> FeedbackPoint:
    return FeedbackPoint(kind="went_well", metric=metric, value=round(value, 3), message=message)


def compose_text(points: list[FeedbackPoint] | tuple[FeedbackPoint, ...], metrics: SubmissionMetrics) -> str:
    """A short paragraph from the points: what went well first, then what to work on.

    With no points (an answer too short to judge), says so and how long to speak.
    """
    well = [p.message for p in points if p.kind == "went_well"]
    work = [p.message for p in points if p.kind == "work_on"]
    parts: list[str] = []
    if well:
        parts.append("What went well: " + " ".join(well))
    if work:
        parts.append("What to work on: " + " ".join(work))
    if not parts:
        return (
            f"Your answer had {metrics.word_count} words, too few for detailed feedback: aim for at least "
            f"{MIN_VOCABULARY_TOKENS} words (about 30 seconds) next time."
        )
    if not metrics.vocabulary_sufficient:
        parts.append(f"Speak for at least {MIN_VOCABULARY_TOKENS} words to get feedback on your vocabulary.")
    return "\n".join(parts)
