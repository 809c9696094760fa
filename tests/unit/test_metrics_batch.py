"""Unit tests of ``flows.metrics_batch``: exactly ``flows.metrics.compute_metrics`` and ``lexical_tokens``."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pytest

import flows.metrics_batch as batch_module
from flows.metrics import METRICS_VERSION, SubmissionMetrics, compute_metrics, lexical_vocabulary
from flows.metrics_batch import ScoredColumns, compute_metrics_batch
from flows.records import lexical_tokens

pytestmark = pytest.mark.unit


class Word(NamedTuple):
    word: str
    start: Any
    end: Any


Transcript = tuple[list[str], list[Any], list[Any], Any]


def reference(transcript: Transcript, threshold: Any = 0.25) -> ScoredColumns | ValueError:
    texts, starts, ends, recording = transcript
    words = [Word(*word) for word in zip(texts, starts, ends, strict=True)]
    try:
        metrics = compute_metrics(words, pause_threshold_s=threshold, recording_duration_s=recording)
    except ValueError as exc:
        return exc
    return ScoredColumns(metrics, lexical_tokens(texts))


def assert_same(got: ScoredColumns | ValueError, expected: ScoredColumns | ValueError, context: object) -> None:
    if isinstance(expected, ValueError):
        assert type(got) is ValueError, (context, got)
        assert str(got) == str(expected), context
        return
    assert isinstance(got, ScoredColumns), (context, got)
    assert got == expected, context
    # repr: float bits (-0.0, every digit), int vs float, dict insertion order, tuple vs list
    assert repr(got) == repr(expected), context
    assert type(got.lexical_tokens) is tuple


def check(transcripts: Sequence[Transcript], threshold: Any = 0.25) -> list[ScoredColumns | ValueError]:
    got = compute_metrics_batch(transcripts, pause_threshold_s=threshold)
    assert len(got) == len(transcripts)
    for index, (item, transcript) in enumerate(zip(got, transcripts, strict=True)):
        assert_same(item, reference(transcript, threshold), (index, transcript))
    return got


# -------------------------------------------------------------------------------------------- random transcripts

PLAIN = (
    "the a and to of it that is was i you we they he she think know mean like so well very really no yes "
    "yeah do did don't what if how as much many done known people look looks would i'd something it's was "
    "language practice because need use every day speak read books weather home work about just to"
).split()
PHRASES = (
    "you know", "ya know", "y'know", "i mean", "do you know", "you know it", "what i mean", "i mean it",
    "um like", "like uh", "i like", "you know like", "so um", "so much", "well done", "well um", "so", "well",
    "like", "um", "uh", "er", "hmm", "umm", "the the", "i i i", "i think i think", "very very", "no no no",
    "i um i", "the um the", "you um know", "i uh mean", "so so", "like like", "well well", "you know you know",
    "i mean i mean", "a b a b a b", "ha ha",
)  # fmt: skip
ODD_WORDS = (
    "...", "-", ",", "—", "?!", "well-known,", "U.S.", "I'm", "3.5", "1,000", "'cause", "Don't,", "so...like",
    "you--know", "like,um", "I,mean", "y’know", "Um,", "UH.", "rock'n'roll", "Café", "naïve", "e.g.", "so-so",
    "well_known", "A.I.", "like.", "So,", "WELL", "You", "Know.", "mean?", "er-", "--", "'", "hmm...", "mm",
)  # fmt: skip
GAPS = (0.0, 0.05, 0.1, 0.2, 0.25, 0.35 - 0.10, 0.2499999, 0.2500001, 0.249999, 0.3, 0.6, 1.2, -0.05, -0.3)


def random_texts(rng: random.Random) -> list[str]:
    size = rng.choice((0, 1, 2, 3, rng.randint(4, 40), rng.randint(40, 60), rng.randint(60, 130)))
    texts: list[str] = []
    while len(texts) < size:
        roll = rng.random()
        if roll < 0.25:
            pieces = rng.choice(PHRASES).split()
        elif roll < 0.35:
            pieces = [rng.choice(ODD_WORDS)]
        else:
            pieces = [rng.choice(PLAIN)]
        for piece in pieces:
            if rng.random() < 0.1:
                piece = piece.capitalize()
            if rng.random() < 0.1:
                piece += rng.choice((".", ",", "?", "!", "..."))
            texts.append((" " if rng.random() < 0.9 else "") + piece)
    return texts[:size]


def random_timing(rng: random.Random, size: int) -> tuple[list[Any], list[Any]]:
    starts: list[Any] = []
    ends: list[Any] = []
    t = rng.choice((0.0, 0.1, 0.35, 2.0))
    for _ in range(size):
        duration = rng.choice((0.0, 0.1, 0.12, 0.3, 0.45, 0.35 - 0.10, round(rng.uniform(0, 0.5), 7)))
        start = max(0.0, t)
        if rng.random() < 0.5:  # ms-granular, or 7 decimals (microsecond rounding ties: 0.0000005)
            start = round(start, rng.choice((2, 3, 7)))
        starts.append(start)
        ends.append(start + duration)
        t = start + duration + rng.choice(GAPS)
    if size > 2 and rng.random() < 0.1:  # out of order
        i, j = rng.sample(range(size), 2)
        starts[i], starts[j] = starts[j], starts[i]
        ends[i], ends[j] = ends[j], ends[i]
    return starts, ends


BAD_TIMES: tuple[Any, ...] = (-0.1, -1e-9, math.nan, math.inf, -math.inf, True, False, None, "1.0", 3, 0, -0.0)
BAD_RECORDINGS: tuple[Any, ...] = (-1.0, math.nan, math.inf, True, 60, 0, "60", -0.0, np.float64(12.5))


def random_transcript(rng: random.Random, *, invalid: float = 0.05) -> Transcript:
    texts = random_texts(rng)
    starts, ends = random_timing(rng, len(texts))
    recording: Any = rng.choice((None, 60.0, 0.0, ends[-1] + 0.3 if ends else 1.0))
    if texts and rng.random() < invalid:
        index = rng.randrange(len(texts))
        kind = rng.randrange(5)
        if kind == 0:
            starts[index] = rng.choice(BAD_TIMES)
        elif kind == 1:
            ends[index] = rng.choice(BAD_TIMES)
        elif kind == 2:  # end before start
            ends[index] = starts[index] - rng.choice((0.1, 1e-9))
        elif kind == 3:
            starts[index] = np.float64(starts[index])
        else:
            starts[index], ends[index] = int(starts[index]), int(starts[index]) + 1
    if rng.random() < invalid:
        recording = rng.choice(BAD_RECORDINGS)
    return texts, starts, ends, recording


@pytest.mark.parametrize("seed", range(6))
def test_random_batches_equal_the_scalar_functions(seed: int) -> None:
    rng = random.Random(seed)
    transcripts = [random_transcript(rng) for _ in range(500)]
    got = check(transcripts)
    assert sum(isinstance(item, ValueError) for item in got) >= 5  # the batch mixed good and bad ones
    assert sum(isinstance(item, ScoredColumns) and item.metrics.vocabulary_sufficient for item in got) >= 64


@pytest.mark.parametrize("threshold", [0.25, 0.2, 0.5, 1e-9, 1, 0.35 - 0.10])
def test_other_thresholds(threshold: float) -> None:
    rng = random.Random(f"threshold {threshold}")
    check([random_transcript(rng) for _ in range(300)], threshold)


@pytest.mark.parametrize("threshold", [0, -0.25, math.nan, math.inf, True, None, "0.25"])
def test_invalid_threshold_gives_each_transcript_the_scalar_error(threshold: Any) -> None:
    rng = random.Random(1)
    transcripts = [random_transcript(rng, invalid=0.0) for _ in range(5)] + [([], [], [], None)]
    got = check(transcripts, threshold)
    assert all(isinstance(item, ValueError) for item in got)
    assert len({id(item) for item in got}) == len(got)  # one exception object each


def test_small_batches() -> None:
    rng = random.Random(7)
    transcripts = [random_transcript(rng) for _ in range(40)]
    for size in (1, 2, 5, 40):
        check(transcripts[:size])


def test_vocabulary_ids_are_compacted_for_a_large_registry() -> None:
    rng = random.Random(8)
    lexical = [tuple(rng.choice(PLAIN) for _ in range(rng.choice((10, 60, 130)))) for _ in range(20)]
    index = {token: number for number, token in enumerate(sorted(set(PLAIN)))}
    ids = np.array([index[token] for tokens in lexical for token in tokens], dtype=np.int32)
    lengths = np.array([len(tokens) for tokens in lexical], dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(lengths)])
    plain = batch_module._vocabulary(ids, lengths, base, lexical, set(), len(index))
    compacted = batch_module._vocabulary(ids + 1_000_000, lengths, base, lexical, set(), 1_000_000 + len(index))
    assert plain == compacted
    assert plain == [
        (len(tokens), len(set(tokens)), measures.mattr, measures.mtld)
        for tokens, measures in ((tokens, lexical_vocabulary(tokens)) for tokens in lexical)
    ]


def test_reference_marker_path_gives_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_module, "_FAST_MARKERS", False)
    rng = random.Random(11)
    check([random_transcript(rng) for _ in range(300)])


def test_results_are_built_like_the_dataclass_builds_them(monkeypatch: pytest.MonkeyPatch) -> None:
    assert batch_module._new_metrics.__name__ == "build"  # the fast path is taken for SubmissionMetrics as it is
    monkeypatch.setattr(
        batch_module,
        "_new_metrics",
        lambda *values: SubmissionMetrics(**dict(zip(batch_module._METRIC_FIELDS, values, strict=True))),
    )
    rng = random.Random(13)
    check([random_transcript(rng) for _ in range(100)])


def test_registry_reset_between_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_module, "_MAX_WORD_TYPES", 10)
    rng = random.Random(12)
    for _ in range(3):
        check([random_transcript(rng) for _ in range(50)])
    assert len(batch_module._REGISTRY.words) < 1000


def test_marker_and_repetition_contexts() -> None:
    """Dense marker / repetition contexts, with silent pauses placed at every position."""
    phrases = [
        "so um you know like i mean well", "well you know so", "you know you know i mean i mean", "i like like",
        "um like uh so much", "do you know what i mean", "you um know it", "so so well well", "like um like",
        "i i think i think i think", "the the the um the", "very very no no yes yes", "ya know y'know like",
        "i mean to so that well done", "like you know like", "well", "so", "like", "you know", "i mean", "",
    ]  # fmt: skip
    transcripts: list[Transcript] = []
    for phrase in phrases:
        words = phrase.split()
        for pause_at in range(len(words) + 1):
            starts = [index * 0.3 + (0.5 if index >= pause_at else 0.0) for index in range(len(words))]
            ends = [start + 0.2 for start in starts]
            transcripts.append(([" " + word for word in words], starts, ends, None))
    got = check(transcripts)
    assert any(isinstance(item, ScoredColumns) and item.metrics.discourse_marker_count >= 3 for item in got)
    assert any(isinstance(item, ScoredColumns) and item.metrics.repetition_count >= 3 for item in got)


def test_microsecond_rounding_is_pythons_round() -> None:
    rng = random.Random(5)
    values = [round(rng.uniform(0, 100), 7) - round(rng.uniform(0, 50), rng.choice((2, 3, 7))) for _ in range(20_000)]
    values += [0.0, -0.0, 0.35 - 0.10, 2.5e-7, 5e-7, -5e-7, 1e11 + 0.5e-6, 1e12, 3e15 + 0.5, 1e300, 1e-300]
    got = batch_module._round6(np.array(values, dtype=np.float64)).tolist()
    assert [repr(value) for value in got] == [repr(round(value, 6)) for value in values]
    assert sum(float(np.round(value, 6)) != round(value, 6) for value in values) > 50  # numpy's would differ


def test_all_distinct_tokens_and_long_transcripts() -> None:
    distinct = [f" w{index}" for index in range(70)]
    long = [f" {word}" for word in (PLAIN * 12)[:700]]
    check(
        [
            (distinct, [i * 0.3 for i in range(70)], [i * 0.3 + 0.2 for i in range(70)], None),
            (long, [i * 0.3 for i in range(700)], [i * 0.3 + 0.2 for i in range(700)], None),
        ]
        * 40
    )


def test_empty_batch_and_degenerate_transcripts() -> None:
    assert compute_metrics_batch([]) == []
    check(
        [([], [], [], None), (["..."], [0.0], [0.5], None), ([" um"], [0.0], [0.0], 1.0), ([" a"], [1.0], [1.0], None)]
    )


def test_errors_and_fallbacks_in_one_batch() -> None:
    good = (
        [" Well,", " you", " know", " I", " I", " think."],
        [0.0, 0.5, 0.7, 1.5, 1.7, 1.9],
        [0.4] + [0.6, 0.9, 1.6, 1.8, 2.3],
        3.0,
    )
    transcripts: list[Transcript] = [
        good,
        ([" a", " b"], [0.0, -1.0], [0.1, 0.2], None),  # negative start
        ([" a", " b"], [0.0, 0.3], [0.1, math.nan], None),  # nan end
        ([" a", " b"], [0.0, 0.5], [0.1, 0.4], None),  # end before start
        ([" a", " b"], [0.0, True], [0.1, 0.4], None),  # bool
        ([" a", " b"], [0, 1], [1, 2], 3),  # ints: valid
        ([" a", " b"], [0.0, 1.0], [0.5, 1.5], -2.0),  # bad recording
        ([" a", " b"], [0.0, -1.0], [0.5, 1.5], -2.0),  # both: the words' error first
        good,
    ]
    got = check(transcripts)
    assert [type(item).__name__ for item in got] == ["ScoredColumns"] + ["ValueError"] * 4 + [
        "ScoredColumns",
        "ValueError",
        "ValueError",
        "ScoredColumns",
    ]
    assert str(got[1]) == "words[1].start must be a finite, non-negative number of seconds, got -1.0"


def test_unequal_columns_and_non_string_texts() -> None:
    got = compute_metrics_batch([([" a", " b"], [0.0], [0.1, 0.2], None), ([" a"], [0.0], [0.1], None)])
    assert isinstance(got[0], ValueError) and "differ in length" in str(got[0])
    assert isinstance(got[1], ScoredColumns)
    with pytest.raises(TypeError):
        compute_metrics_batch([([None], [0.0], [0.1], None)])  # type: ignore[list-item]


def test_hand_computed_values() -> None:
    texts = [" So,", " um", " I", " I", " think", " you", " know", " the", " the", " weather", "...", " is", " nice."]
    starts = [0.0, 0.5, 1.0, 1.3, 1.6, 2.35, 2.6, 3.0, 3.2, 3.4, 3.8, 4.2, 4.4]
    ends = [0.4, 0.8, 1.2, 1.5, 2.0, 2.55, 2.9, 3.1, 3.3, 3.8, 3.8, 4.4, 4.8]
    (result,) = compute_metrics_batch([(texts, starts, ends, 5.0)])
    assert isinstance(result, ScoredColumns)
    m = result.metrics
    # tokens: so um i i think you know the the weather is nice ("..." has none, its timing is ignored)
    assert m.word_count == 12
    assert m.total_duration_s == 4.8
    # gaps >= 0.25 s: 0.5-0.4=0.1 no, 1.0-0.8=0.2 no, 2.35-2.0=0.35 yes, 4.2-3.8=0.4 yes (after the "..." word)
    assert m.silent_pauses_s == (0.35, 0.4)
    assert m.silent_pause_total_s == 0.75
    assert m.mean_silent_pause_s == 0.375
    assert m.phonation_time_s == 4.05
    assert m.speech_rate_wpm == 12 * 60.0 / 4.8
    assert m.articulation_rate_wpm == 12 * 60.0 / 4.05
    assert m.silent_pauses_per_minute == 2 * 60.0 / 4.8
    assert m.mean_length_of_run == 4.0
    assert m.filled_pauses == {"um": 1} and m.filled_pause_count == 1
    # "so" starts the first run, followed by a filled pause; "you know" starts the run after the 0.35 s pause
    assert m.discourse_markers == {"so": 1, "you know": 1} and m.discourse_marker_count == 2
    assert m.repetitions == ("i", "the") and m.repetition_count == 2
    assert result.lexical_tokens == ("so", "i", "i", "think", "you", "know", "the", "the", "weather", "is", "nice")
    assert m.vocabulary_token_count == 11 and m.distinct_words == 9
    assert m.mattr is None and m.mtld is None and m.vocabulary_sufficient is False
    assert m.recording_duration_s == 5.0 and m.pause_threshold_s == 0.25 and m.metrics_version == METRICS_VERSION
    assert isinstance(m, SubmissionMetrics)
    assert_same(result, reference((texts, starts, ends, 5.0)), "hand-computed")
