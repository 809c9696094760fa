"""The rules provider and the feedback settings: each rule names its metric with the measured value."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from feedback.providers import FEEDBACK_METRICS, FeedbackRequest, metric_value
from feedback.rules import RulesProvider
from feedback.settings import FeedbackSettings
from flows.metrics import SubmissionMetrics, compute_metrics
from schemas.events import FeedbackPoint, Word

pytestmark = pytest.mark.unit

VARIED = (
    "yesterday I walked along the river with my sister and we talked about our plans for the summer holiday "
    "she wants to visit mountains in the north while I prefer quiet beaches where reading novels feels relaxing "
    "eventually we agreed to spend one week hiking followed by several lazy days near warm blue water"
).split()


def speak(tokens: list[str], *, wpm: float, pauses: dict[int, float] | None = None) -> list[Word]:
    """Timed words at about ``wpm``: each word fills 90 % of its 60/wpm slot (inner gaps stay under 250 ms);
    ``pauses`` adds silence after the word at that index."""
    slot = 60.0 / wpm
    words, t = [], 0.0
    for i, token in enumerate(tokens):
        words.append(Word(word=f" {token}", start=round(t, 3), end=round(t + 0.9 * slot, 3), probability=0.9))
        t += slot + (pauses or {}).get(i, 0.0)
    return words


def feedback_on(
    words: list[Word], level: str = "B1", *, detected: bool = True, **overrides: object
) -> tuple[SubmissionMetrics, list]:
    """Rules feedback on ``words``; ``detected``: a hesitation detector ran (and heard nothing beyond the words)."""
    metrics = compute_metrics(words, hesitations=[] if detected else None)
    assert metrics.hesitation_detection is detected
    settings = FeedbackSettings(**overrides)  # type: ignore[arg-type]
    result = RulesProvider(settings).generate(
        FeedbackRequest(transcript=" ".join(w.word for w in words), metrics=metrics, level=level)
    )
    assert result.provider == "rules" and result.model is None
    assert result.usage.prompt_tokens == 0 and result.text
    return metrics, list(result.points)


def point(points: list[FeedbackPoint], metric: str) -> FeedbackPoint:
    matching = [p for p in points if p.metric == metric]
    assert len(matching) == 1, f"expected one {metric} point, got {points}"
    return matching[0]


@pytest.mark.parametrize(
    ("wpm", "kind", "phrase"),
    [(90, "work_on", "speed up"), (150, "went_well", "easy to follow"), (240, "work_on", "slow down")],
)
def test_pace_names_speech_rate_with_its_value(wpm: float, kind: str, phrase: str) -> None:
    metrics, points = feedback_on(speak(VARIED[:40], wpm=wpm))
    p = point(points, "speech_rate_wpm")
    assert p.kind == kind and phrase in p.message
    assert metrics.speech_rate_wpm is not None
    assert p.value == round(metrics.speech_rate_wpm, 3)
    assert f"{metrics.speech_rate_wpm:.0f} words per minute" in p.message


def test_pace_thresholds_come_from_settings() -> None:
    words = speak(VARIED[:40], wpm=150)
    _, points = feedback_on(words, speech_rate_min_wpm=160, speech_rate_max_wpm=200)
    assert point(points, "speech_rate_wpm").kind == "work_on"


def test_filled_pauses_above_four_percent() -> None:
    tokens = VARIED[:40]
    with_fillers = [*tokens[:5], "um", *tokens[5:15], "uh", *tokens[15:25], "um", *tokens[25:]]  # 3 in 43 = 7 %
    metrics, points = feedback_on(speak(with_fillers, wpm=150))
    p = point(points, "filled_pause_count")
    assert metrics.filled_pause_count == 3
    assert (p.kind, p.value) == ("work_on", 3.0)
    assert metrics.filled_pauses_per_100_words is not None and metrics.filled_pauses_per_minute is not None
    rate = f"{metrics.filled_pauses_per_100_words:.1f} filled pauses per 100 words"
    assert f"{rate} ({metrics.filled_pauses_per_minute:.1f} per minute)" in p.message
    assert "um, uh" in p.message and "7.0 filled pauses per 100 words" in p.message


def test_no_filled_pause_sentence_at_all_without_hesitation_detection() -> None:
    """No detector ran: the filled-pause figures are unknown, so neither advice nor praise, however many the
    recogniser wrote (here 7 %), and the text does not mention fillers either."""
    tokens = VARIED[:40]
    with_fillers = [*tokens[:5], "um", *tokens[5:15], "uh", *tokens[15:25], "um", *tokens[25:]]
    for words in (with_fillers, tokens):
        metrics, points = feedback_on(speak(words, wpm=150), detected=False)
        assert metrics.word_count >= 40 and not metrics.hesitation_detection
        assert [p for p in points if p.metric == "filled_pause_count"] == []
        assert not any("filled pause" in p.message or "'um'" in p.message for p in points)
        assert len(points) >= 2  # the other rules still speak
    result = RulesProvider().generate(FeedbackRequest(transcript=" ".join(with_fillers), metrics=metrics, level="B1"))
    assert "filled pause" not in result.text


def test_detected_voiced_hesitations_are_named_with_the_rate() -> None:
    """A detector ran and heard fillers the recogniser left out: advice names them and both rates."""
    from schemas.events import HesitationSpan

    words = speak(VARIED[:40], wpm=150, pauses={4: 0.8, 14: 0.8, 24: 0.8})
    spans = [
        HesitationSpan(start=words[i].end + 0.2, end=words[i].end + 0.6, kind="voiced_gap", confidence=0.9)
        for i in (4, 14, 24)
    ]
    metrics = compute_metrics(words, hesitations=spans)
    assert metrics.hesitation_detection and metrics.voiced_hesitation_count == 3 and metrics.filled_pause_count == 3
    points = RulesProvider().generate(FeedbackRequest(transcript="", metrics=metrics, level="B1")).points
    p = point(list(points), "filled_pause_count")
    assert p.kind == "work_on" and "3 heard but not transcribed" in p.message
    assert f"{metrics.filled_pauses_per_100_words:.1f} filled pauses per 100 words" in p.message
    assert f"({metrics.filled_pauses_per_minute:.1f} per minute)" in p.message


def test_few_or_no_fillers_are_never_praised() -> None:
    """Whisper leaves most fillers out: a low count is "not heard", so neither zero nor one filler is praised."""
    tokens = VARIED[:40]
    for words in (tokens, [*tokens[:5], "um", *tokens[5:]]):  # 0, and 1 in 41 = 2.4 %
        metrics, points = feedback_on(speak(words, wpm=150))
        assert metrics.word_count >= 40
        assert [p for p in points if p.metric == "filled_pause_count"] == []
        assert len(points) >= 2  # the other rules still speak


def test_long_pauses_name_the_mean_pause() -> None:
    words = speak(VARIED[:40], wpm=150, pauses={9: 1.6, 19: 1.4, 29: 1.2})
    metrics, points = feedback_on(words)
    p = point(points, "mean_silent_pause_s")
    assert p.kind == "work_on" and metrics.mean_silent_pause_s is not None
    assert p.value == pytest.approx(metrics.mean_silent_pause_s, abs=1e-3)
    assert "3 of them 1 s or more" in p.message


def test_frequent_pauses_name_pauses_per_minute() -> None:
    words = speak(VARIED[:40], wpm=150, pauses={i: 0.3 for i in range(1, 40, 2)})  # a pause every 2 words
    metrics, points = feedback_on(words)
    p = point(points, "silent_pauses_per_minute")
    assert p.kind == "work_on" and metrics.silent_pauses_per_minute is not None
    assert p.value == pytest.approx(metrics.silent_pauses_per_minute, abs=1e-3)
    assert "mean_silent_pause_s" not in {q.metric for q in points}  # 0.3 s pauses are not long

    _, fluent = feedback_on(speak(VARIED[:40], wpm=150))
    assert point(fluent, "silent_pauses_per_minute").kind == "went_well"


def test_vocabulary_threshold_depends_on_the_level() -> None:
    cycle = list(dict.fromkeys(VARIED))[:30]
    words = speak((cycle * 3)[:80], wpm=150)  # 30 distinct words repeating: MATTR = 30/50 = 0.6
    metrics, at_b1 = feedback_on(words, level="B1")
    assert metrics.mattr == pytest.approx(0.6)
    assert (point(at_b1, "mattr").kind, point(at_b1, "mattr").value) == ("work_on", 0.6)
    assert "B1 (0.65)" in point(at_b1, "mattr").message
    _, at_a1 = feedback_on(words, level="a1")
    assert point(at_a1, "mattr").kind == "went_well"


def test_no_vocabulary_point_below_fifty_tokens() -> None:
    metrics, points = feedback_on(speak(VARIED[:40], wpm=150))
    assert not metrics.vocabulary_sufficient
    assert "mattr" not in {p.metric for p in points}


def test_too_short_gives_no_points_and_says_so() -> None:
    words = speak(["hello", "there"], wpm=150)
    metrics = compute_metrics(words)
    result = RulesProvider().generate(FeedbackRequest(transcript="hello there", metrics=metrics, level="B1"))
    assert result.points == ()
    assert "2 words" in result.text


def test_rules_are_deterministic() -> None:
    metrics = compute_metrics(speak(VARIED, wpm=200, pauses={5: 1.5}))
    request = FeedbackRequest(transcript="x", metrics=metrics, level="B2")
    assert RulesProvider().generate(request) == RulesProvider().generate(request)


# ---------------------------------------------------------------------------------------------------- settings


def test_feedback_metrics_are_scalar_fields_of_submission_metrics() -> None:
    fields = {f.name for f in dataclasses.fields(SubmissionMetrics)}
    assert set(FEEDBACK_METRICS) <= fields
    metrics = compute_metrics(speak(VARIED, wpm=150))
    for name in FEEDBACK_METRICS:
        assert metric_value(metrics, name) is None or isinstance(metric_value(metrics, name), float)
    with pytest.raises(KeyError):
        metric_value(metrics, "filled_pauses")


def test_provider_chain_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FeedbackSettings().providers == ("rules",)
    monkeypatch.setenv("COACH_FEEDBACK_PROVIDERS", "primary, secondary")
    monkeypatch.setenv("COACH_FEEDBACK_PRIMARY_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("COACH_FEEDBACK_SECONDARY_BASE_URL", "http://127.0.0.1:2/v1")
    monkeypatch.setenv("COACH_FEEDBACK_PRIMARY_API_KEY", "sk-secret")
    settings = FeedbackSettings()
    assert settings.providers == ("primary", "secondary", "rules")
    assert settings.endpoint("primary").api_key == "sk-secret"
    assert "sk-secret" not in repr(settings.endpoint("primary")) and "sk-secret" not in repr(settings)
    monkeypatch.setenv("COACH_FEEDBACK_PROVIDERS", '["secondary", "rules"]')
    assert FeedbackSettings().providers == ("secondary", "rules")


@pytest.mark.parametrize(
    "overrides",
    [
        {"providers": ("rules", "primary"), "primary_base_url": "http://x/v1"},  # rules must be last
        {"providers": ("primary",)},  # no base URL
        {"providers": ("primary", "primary"), "primary_base_url": "http://x/v1"},
        {"mattr_min_by_level": {"D1": 0.5}},
        {"mattr_min_by_level": {"B1": 1.5}},
        {"speech_rate_min_wpm": 180, "speech_rate_max_wpm": 170},
        {"default_level": "Z9"},
    ],
)
def test_invalid_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FeedbackSettings(**overrides)  # type: ignore[arg-type]
