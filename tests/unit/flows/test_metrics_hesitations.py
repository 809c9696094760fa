"""Issue 18 item 4: hesitations, merged filled pauses, syllables (definitions in flows.metrics.transcript)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from flows.metrics import compute_metrics, compute_metrics_batch, syllable_count
from schemas.events import HesitationSpan


@dataclass(frozen=True)
class W:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Columns:
    text: list[str]
    start: list[float]
    end: list[float]


@dataclass(frozen=True)
class H:
    start: float
    end: float
    kind: str
    confidence: float = 0.9


def test_no_detector_means_no_hesitation_detection() -> None:
    words = [W(" I", 0.0, 0.2), W(" um", 0.3, 0.5), W(" agree", 0.6, 1.0)]
    assert compute_metrics(words).hesitation_detection is False
    assert compute_metrics(words, hesitations=[]).hesitation_detection is True


def test_lexical_filler_heard_by_the_detector_counts_once() -> None:
    words = [W(" I", 0.0, 0.2), W(" um", 0.6, 0.9), W(" agree", 1.4, 1.8)]
    m = compute_metrics(words, hesitations=[H(0.55, 0.95, "voiced_gap"), H(2.0, 2.2, "voiced_gap", 0.1)])
    assert m.filled_pause_count == 1 and m.filled_pauses == {"um": 1} and m.voiced_hesitation_count == 0


def test_voiced_gap_alone_is_a_filled_pause_and_adjacent_fillers_merge() -> None:
    words = [W(" so", 0.0, 0.3), W(" uh", 0.35, 0.5), W(" uh", 0.55, 0.7), W(" yes", 2.0, 2.4)]
    m = compute_metrics(words, hesitations=[HesitationSpan(start=1.0, end=1.4, kind="voiced_gap", confidence=0.8)])
    assert m.filled_pauses == {"uh": 2}
    assert m.filled_pause_count == 2  # "uh uh" within 0.1 s: one; the voiced gap: another
    assert m.voiced_hesitation_count == 1
    assert m.filled_pauses_per_minute == pytest.approx(2 * 60 / 2.4)
    assert m.filled_pauses_per_100_words == pytest.approx(100 * 2 / 4)


def test_voiced_span_inside_a_gap_splits_the_silent_pause() -> None:
    words = [W(" I", 0.0, 0.5), W(" think", 1.7, 2.0)]
    assert compute_metrics(words).silent_pauses_s == (1.2,)
    m = compute_metrics(words, hesitations=[H(0.8, 1.4, "voiced_gap")])
    assert m.silent_pauses_s == (0.3, 0.3)
    assert m.phonation_time_s == pytest.approx(2.0 - 0.6)
    bridged = compute_metrics(words, hesitations=[H(0.6, 1.6, "voiced_gap")])  # 0.1 s either side: no pause
    assert bridged.silent_pause_count == 0 and bridged.phonation_time_s == pytest.approx(2.0)


def test_held_sound_words_are_not_repetitions() -> None:
    words = [W(" the", 0.0, 0.2), W(" the", 0.2, 0.4), W(" the", 0.4, 0.6), W(" cat", 0.7, 1.0), W(" cat", 1.0, 1.3)]
    assert compute_metrics(words).repetition_count == 3
    m = compute_metrics(words, hesitations=[H(0.0, 0.6, "held_sound")])
    assert m.repetitions == ("cat",) and m.hallucinated_word_count == 3
    assert m.word_count == 5  # still recognised words


def test_syllable_counts_from_the_cmu_dictionary() -> None:
    known = {"the": 1, "beautiful": 3, "really": 2, "comfortable": 4, "university": 5, "um": 1, "hmm": 1}
    assert {word: syllable_count(word) for word in known} == known
    assert syllable_count("well-known") == 2
    assert syllable_count("zzxq") >= 1


def test_syllable_rates() -> None:
    words = [W(" beautiful", 0.0, 0.6), W(" day", 1.0, 1.4)]
    m = compute_metrics(words)
    assert m.syllable_count == 4
    assert m.speech_rate_sps == pytest.approx(4 / 1.4)
    assert m.articulation_rate_sps == pytest.approx(4 / 1.0)
    assert m.mean_length_of_run_syllables == pytest.approx(2.0)


def test_batch_hesitations_length_is_checked_and_bad_spans_only_fail_their_transcript() -> None:
    one = Columns([" hi"], [0.0], [0.3])
    with pytest.raises(ValueError, match="hesitation lists"):
        compute_metrics_batch([one, one], hesitations=[None])
    good, bad = compute_metrics_batch([one, one], hesitations=[None, [H(1.0, 0.5, "voiced_gap")]])
    assert not isinstance(good, ValueError) and isinstance(bad, ValueError)
