"""Unit tests of the engine-agnostic metric functions in ``flows.metrics``."""

from __future__ import annotations

import dataclasses
import math
import random
import string
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest

import flows.metrics as metrics_module
from flows.metrics import (
    METRICS_VERSION,
    SubmissionMetrics,
    TimedWord,
    articulation_rate,
    compute_metrics,
    compute_metrics_batch,
    count_discourse_markers,
    count_filled_pauses,
    find_discourse_markers,
    find_repetitions,
    lexical_tokens,
    mattr,
    mean_length_of_run,
    mtld,
    phonation_time,
    silent_pauses,
    speech_rate,
    tokenize,
    total_duration,
    transcript_tokens,
    vocabulary_metrics,
    word_count,
)
from flows.metrics.lexicon import filled_pause_form

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


class WhisperLikeWord(NamedTuple):
    start: float
    end: float
    word: str
    probability: float


def timed(*items: tuple[str, float, float]) -> list[Word]:
    return [Word(text, start, end) for text, start, end in items]


def evenly_timed(text: str, *, word_s: float = 0.3, gap_s: float = 0.05, start_s: float = 0.0) -> list[Word]:
    """Words of ``text`` (split on spaces, kept raw) with fixed durations and short gaps (no silent pauses)."""
    words = []
    t = start_s
    for raw in text.split():
        words.append(Word(" " + raw, round(t, 3), round(t + word_s, 3)))
        t += word_s + gap_s
    return words


def tokens_of(text: str) -> list[str]:
    return tokenize(text)


# --------------------------------------------------------------------------------------------- public API


def test_public_api_is_explicit_and_versioned() -> None:
    assert METRICS_VERSION == 2
    for name in metrics_module.__all__:
        assert hasattr(metrics_module, name), name
    assert {"compute_metrics", "vocabulary_metrics", "TimedWord", "METRICS_VERSION"} <= set(metrics_module.__all__)


def test_module_imports_no_engine() -> None:
    code = (
        "import sys, flows.metrics;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('bytewax', 'confluent_kafka', 'lexicalrichness')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_timed_word_protocol_accepts_dataclasses_and_named_tuples() -> None:
    assert isinstance(Word(" hi", 0.0, 0.2), TimedWord)
    whisper_words = [WhisperLikeWord(0.0, 0.4, " Hello", 0.9), WhisperLikeWord(1.0, 1.4, " there.", 0.8)]
    assert isinstance(whisper_words[0], TimedWord)
    result = compute_metrics(whisper_words)
    assert result.word_count == 2
    assert result.silent_pauses_s == (0.6,)


# ------------------------------------------------------------------------------------------ tokenisation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" country.", ["country"]),
        (" Hello,", ["hello"]),
        ("HELLO!", ["hello"]),
        (" I'm", ["i'm"]),
        (" Don\u2019t", ["don't"]),
        (" 'cause", ["cause"]),
        (" dogs'", ["dogs"]),
        (" well-known", ["well-known"]),
        (" -known", ["known"]),
        (" U.S.", ["u.s"]),
        (" 3.5", ["3.5"]),
        (" 1,000", ["1,000"]),
        (" ...", []),
        (" -", []),
        ("\u2014", []),
        (" wait--what?", ["wait", "what"]),
        ("Caf\u00e9.", ["caf\u00e9"]),
        ("Hello, world. It's ME!", ["hello", "world", "it's", "me"]),
    ],
)
def test_tokenize_normalises_case_and_punctuation(raw: str, expected: list[str]) -> None:
    assert tokenize(raw) == expected
    assert tokenize(" ".join(expected)) == expected  # idempotent


class _Columns(NamedTuple):
    text: list[str]
    start: list[float]
    end: list[float]


_TOKEN_ALPHABET = (
    string.ascii_letters + string.digits + " .,'-_`\u2019\u2018\u02bc\u2032!?;:\"()" + "éÉßİıſKΣσς\u0307\u00b2ǅﬁ"
)


def test_every_token_tokenizes_to_itself() -> None:
    """What lets compute_metrics_batch take a transcript's lexical tokens from its tokens: a token is its own
    tokenization, so lexical_tokens(words) is the transcript's tokens without filled pauses."""
    rnd = random.Random(7)
    texts = ["".join(rnd.choice(_TOKEN_ALPHABET) for _ in range(rnd.randint(1, 12))) for _ in range(20000)]
    tokens = [token for text in texts for token in tokenize(text)]
    assert len(tokens) > 10000
    assert [t for t in tokens if tokenize(t) != [t]] == []
    columns = _Columns(texts[:3000], [float(i) for i in range(3000)], [i + 0.5 for i in range(3000)])
    (scored,) = compute_metrics_batch([columns])
    assert not isinstance(scored, ValueError)
    assert scored.lexical_tokens == lexical_tokens(texts[:3000])


def test_normalisation_in_counts() -> None:
    words = timed((" Hello,", 0.0, 0.3), (" HELLO", 0.35, 0.6), (" hello.", 0.65, 0.9), (" ...", 5.0, 5.5))
    result = compute_metrics(words)
    assert transcript_tokens(words) == ["hello", "hello", "hello"]
    assert result.word_count == 3
    assert result.distinct_words == 1
    # the punctuation-only word is ignored, timing included: the span ends at 0.9 s, no pause before 5.0 s
    assert result.total_duration_s == pytest.approx(0.9)
    assert result.silent_pause_count == 0


# ------------------------------------------------------------------------------------------ timing and pace


def test_rates_durations_and_runs_are_exact() -> None:
    words = timed(
        ("Hello", 0.0, 0.5),
        (" world.", 0.5, 1.0),
        # 1.0 s of silence: a pause
        (" This", 2.0, 2.5),
        (" is", 2.5, 3.0),
        # 0.1 s: not a pause
        (" a", 3.1, 3.4),
        (" test.", 3.4, 6.0),
    )
    result = compute_metrics(words)
    assert result.word_count == 6 == word_count(words)
    assert result.total_duration_s == 6.0 == total_duration(words)
    assert result.phonation_time_s == 5.0 == phonation_time(words)
    assert result.speech_rate_wpm == 60.0 == speech_rate(words)
    assert result.articulation_rate_wpm == 72.0 == articulation_rate(words)
    assert result.silent_pause_count == 1
    assert result.silent_pauses_s == (1.0,)
    assert result.silent_pause_total_s == 1.0
    assert result.mean_silent_pause_s == 1.0
    assert result.silent_pauses_per_minute == 10.0
    assert result.mean_length_of_run == 3.0 == mean_length_of_run(words)
    assert result.recording_duration_s is None
    assert result.pause_threshold_s == 0.25
    assert result.metrics_version == METRICS_VERSION


def test_speech_span_ignores_leading_and_trailing_silence() -> None:
    words = timed((" So", 2.0, 2.4), (" yes", 2.5, 3.0), (" indeed", 3.5, 4.0))
    result = compute_metrics(words, recording_duration_s=10.0)
    assert result.recording_duration_s == 10.0
    assert result.total_duration_s == pytest.approx(2.0)
    assert result.silent_pauses_s == (0.5,)
    assert result.phonation_time_s == pytest.approx(1.5)
    assert result.speech_rate_wpm == pytest.approx(90.0)
    assert result.articulation_rate_wpm == pytest.approx(120.0)


def test_pause_lengths_are_exact_and_mean_is_their_average() -> None:
    words = timed(
        (" one", 0.0, 0.4), (" two", 0.7, 1.0), (" three", 2.5, 3.0), (" four", 3.05, 3.5), (" five", 4.25, 4.6)
    )
    pauses = silent_pauses(words)
    assert pauses == pytest.approx([0.3, 1.5, 0.75])
    result = compute_metrics(words)
    assert result.silent_pause_count == 3
    assert result.silent_pause_total_s == pytest.approx(2.55)
    assert result.mean_silent_pause_s == pytest.approx(0.85)
    assert result.phonation_time_s == pytest.approx(4.6 - 2.55)
    assert result.mean_length_of_run == pytest.approx(5 / 4)
    assert result.silent_pauses_per_minute == pytest.approx(3 / 4.6 * 60)


@pytest.mark.parametrize(
    ("previous_end", "next_start", "is_pause"),
    [
        (1.0, 1.249, False),  # 249 ms
        (1.0, 1.25, True),  # 250 ms
        (0.1, 0.35, True),  # 250 ms that is 0.24999999999999997 in floating point
        (0.101, 0.35, False),  # 249 ms
        (2.0, 2.251, True),
    ],
)
def test_threshold_boundary(previous_end: float, next_start: float, is_pause: bool) -> None:
    words = timed((" a", 0.0, previous_end), (" b", next_start, next_start + 0.2))
    assert bool(silent_pauses(words)) is is_pause
    assert compute_metrics(words).silent_pause_count == int(is_pause)


def test_threshold_is_configurable() -> None:
    words = timed((" a", 0.0, 0.2), (" b", 0.6, 0.8), (" c", 1.5, 1.7))  # gaps of 0.4 s and 0.7 s
    assert silent_pauses(words) == pytest.approx([0.4, 0.7])
    assert silent_pauses(words, threshold_s=0.5) == pytest.approx([0.7])
    result = compute_metrics(words, pause_threshold_s=0.5)
    assert result.pause_threshold_s == 0.5
    assert result.silent_pause_count == 1
    assert result.phonation_time_s == pytest.approx(1.0)
    assert result.mean_length_of_run == 1.5


def test_overlapping_words_are_not_pauses() -> None:
    words = timed((" a", 0.0, 0.5), (" b", 0.4, 0.9), (" c", 0.9, 1.2))
    result = compute_metrics(words)
    assert result.silent_pause_count == 0
    assert result.total_duration_s == pytest.approx(1.2)
    assert result.phonation_time_s == pytest.approx(1.2)


# ------------------------------------------------------------------------------------------- disfluencies


def test_filled_pauses_markers_and_repetitions_are_counted_apart() -> None:
    text = "Um, I I think, you know, the the city is uh nice. I mean, it's big."
    result = compute_metrics(evenly_timed(text))
    assert result.word_count == 16
    assert result.filled_pause_count == 2
    assert result.filled_pauses == {"um": 1, "uh": 1}
    assert result.discourse_marker_count == 2
    assert result.discourse_markers == {"you know": 1, "i mean": 1}
    assert result.repetition_count == 2
    assert result.repetitions == ("i", "the")
    # filled pauses are not vocabulary
    assert result.vocabulary_token_count == 14


@pytest.mark.parametrize(
    ("token", "form"),
    [
        ("um", "um"),
        ("umm", "um"),
        ("uhm", "um"),
        ("uh", "uh"),
        ("uhh", "uh"),
        ("er", "er"),
        ("err", "er"),
        ("erm", "erm"),
        ("hmm", "hmm"),
        ("hm", "hmm"),
        ("mm", "mm"),
        ("mmm", "mm"),
        ("ah", "ah"),
        ("ahh", "ah"),
        ("umbrella", None),
        ("summer", None),
        ("hum", None),
        ("m", None),
        ("mhm", None),
        ("her", None),
        ("a", None),
    ],
)
def test_filled_pause_forms(token: str, form: str | None) -> None:
    assert filled_pause_form(token) == form


def test_count_filled_pauses_whole_tokens_only() -> None:
    tokens = tokens_of("Umm, the umbrella, uh, er, erm... hmm. Mm, ahh, the summer.")
    assert count_filled_pauses(tokens) == {"um": 1, "uh": 1, "er": 1, "erm": 1, "hmm": 1, "mm": 1, "ah": 1}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("you know the city is big", {"you know": 1}),
        ("it was you know quite big", {"you know": 1}),
        ("y'know the city is big", {"you know": 1}),
        ("you know it was big", {}),  # could be "you know (that) it was big": not counted
        ("do you know the way", {}),
        ("if you know him", {}),
        ("what you know matters", {}),
        ("you know how to swim", {}),
        ("I mean it's big", {"i mean": 1}),
        ("it is big I mean really big", {"i mean": 1}),
        ("what I mean is this", {}),
        ("I mean it", {}),
        ("I mean to go", {}),
        ("I like pizza", {}),
        ("I would like a tea", {}),
        ("it looks like uh rain", {}),
        ("something like um five", {}),
        ("it was um like huge", {}),
        ("and um like the food was cold", {"like": 1}),
        ("the food was like uh cold", {}),
        ("the food tasted like uh cold", {}),
        ("it was cold and like uh bland", {"like": 1}),
        ("they were like um amazing", {}),
        ("you know like the food was cold", {"you know": 1, "like": 1}),
        ("So I went home", {"so": 1}),
        ("um so I went home", {"so": 1}),
        ("I was so tired", {}),
        ("So much has changed", {}),
        ("we left so um we could rest", {"so": 1}),
        ("Well I think it went well", {"well": 1}),
        ("well done", {}),
        ("I know it well", {}),
        ("Well you know I mean the weather was fine", {"well": 1, "you know": 1, "i mean": 1}),
    ],
)
def test_discourse_markers(text: str, expected: dict[str, int]) -> None:
    assert count_discourse_markers(tokens_of(text)) == expected


def test_discourse_marker_positions() -> None:
    tokens = tokens_of("so um you know the food was um like fine")
    assert find_discourse_markers(tokens) == [(0, "so"), (2, "you know")]
    # "like" after "was" stays a verb/quotative use and is not counted


def test_so_and_well_count_at_the_start_of_a_run_only() -> None:
    # "so" after a silent pause begins a run and is a marker; the same "so" without the pause is not
    with_pause = timed((" I", 0.0, 0.2), (" stayed.", 0.25, 0.6), (" So", 1.6, 1.8), (" then", 1.85, 2.1))
    without = timed((" I", 0.0, 0.2), (" stayed", 0.25, 0.6), (" so", 0.65, 0.8), (" then", 0.85, 1.1))
    assert compute_metrics(with_pause).discourse_markers == {"so": 1}
    assert compute_metrics(without).discourse_markers == {}
    tokens = ["i", "stayed", "so", "then"]
    assert count_discourse_markers(tokens, run_starts={0, 2}) == {"so": 1}
    assert count_discourse_markers(tokens) == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I I think", ["i"]),
        ("the the city", ["the"]),
        ("I I I think", ["i", "i"]),
        ("I um I think", ["i"]),
        ("I think I think so", ["i think"]),
        ("I think I think I think so", ["i think", "i think"]),
        ("in the in the morning", ["in the"]),
        ("um um I think", []),
        ("very very good", []),
        ("no no no", []),
        ("I think it is a good idea", []),
        ("the city the country", []),
    ],
)
def test_repetitions(text: str, expected: list[str]) -> None:
    assert find_repetitions(tokens_of(text)) == expected


def test_repetitions_are_found_across_punctuation_and_case() -> None:
    assert find_repetitions(tokens_of("The, the city. City is big")) == ["the", "city"]


# --------------------------------------------------------------------------------------------- vocabulary

GETTYSBURG = (
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in "
    "Liberty, and dedicated to the proposition that all men are created equal. Now we are engaged in a great "
    "civil war, testing whether that nation, or any nation so conceived and so dedicated, can long endure. We "
    "are met on a great battle field of that war. We have come to dedicate a portion of that field, as a final "
    "resting place for those who here gave their lives that that nation might live. It is altogether fitting "
    "and proper that we should do this. But, in a larger sense, we can not dedicate, we can not consecrate, we "
    "can not hallow this ground. The brave men, living and dead, who struggled here, have consecrated it, far "
    "above our poor power to add or detract."
)

TWO_CITIES = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it "
    "was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything "
    "before us, we had nothing before us, we were all going direct to Heaven, we were all going direct the "
    "other way."
)

PRIDE_AND_PREJUDICE = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
    "want of a wife. However little known the feelings or views of such a man may be on his first entering a "
    "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is "
    "considered the rightful property of some one or other of their daughters. My dear Mr. Bennet, said his "
    "lady to him one day, have you heard that Netherfield Park is let at last? Mr. Bennet replied that he had "
    "not."
)

REAL_TEXTS = [GETTYSBURG, TWO_CITIES, PRIDE_AND_PREJUDICE]


@pytest.fixture(scope="module")
def lexical_richness() -> Any:
    return pytest.importorskip("lexicalrichness").LexicalRichness


@pytest.mark.parametrize("text", REAL_TEXTS, ids=["gettysburg", "two_cities", "pride_and_prejudice"])
def test_mattr_and_mtld_match_lexicalrichness_on_real_texts(text: str, lexical_richness: Any) -> None:
    reference = lexical_richness(text)
    tokens = tokenize(text)
    assert tokens == reference.wordlist  # same tokenisation on text without digits, apostrophes, hyphens
    assert len(tokens) >= 50
    result = vocabulary_metrics(tokens)
    assert result.sufficient
    assert result.token_count == reference.words
    assert result.distinct_words == reference.terms
    assert result.mattr == pytest.approx(reference.mattr(window_size=50), abs=1e-9)
    assert result.mtld == pytest.approx(reference.mtld(threshold=0.72), abs=1e-9)


def test_compute_metrics_vocabulary_matches_lexicalrichness(lexical_richness: Any) -> None:
    result = compute_metrics(evenly_timed(GETTYSBURG))
    reference = lexical_richness(GETTYSBURG)
    assert result.vocabulary_sufficient
    assert result.word_count == reference.words
    assert result.mattr == pytest.approx(reference.mattr(window_size=50), abs=1e-9)
    assert result.mtld == pytest.approx(reference.mtld(threshold=0.72), abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_mattr_and_mtld_match_lexicalrichness_on_token_lists(seed: int, lexical_richness: Any) -> None:
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(rng.choice([5, 20, 60, 400]))] + ["don't", "well-known"]
    tokens = [rng.choice(vocabulary) for _ in range(rng.randint(50, 400))]
    reference = lexical_richness(tokens, preprocessor=None, tokenizer=None)
    assert mattr(tokens, window_size=50) == pytest.approx(reference.mattr(window_size=50), abs=1e-9)
    assert mattr(tokens, window_size=7) == pytest.approx(reference.mattr(window_size=7), abs=1e-9)
    assert mtld(tokens) == pytest.approx(reference.mtld(threshold=0.72), abs=1e-9)
    assert mtld(tokens, threshold=0.6) == pytest.approx(reference.mtld(threshold=0.6), abs=1e-9)


def test_mtld_of_all_distinct_tokens_is_their_number(lexical_richness: Any) -> None:
    tokens = [f"w{i}" for i in range(60)]
    assert mtld(tokens) == 60.0
    assert mtld(tokens) == pytest.approx(lexical_richness(tokens, preprocessor=None, tokenizer=None).mtld())
    assert mattr(tokens) == 1.0


def test_mattr_with_window_equal_to_length_is_ttr() -> None:
    tokens = ["a", "b", "a", "c"] * 25
    assert mattr(tokens, window_size=100) == pytest.approx(3 / 100)
    assert mattr(["a", "b", "a", "c"], window_size=2) == 1.0
    assert mattr(["a", "a", "a"], window_size=2) == 0.5


def test_vocabulary_insufficient_below_50_tokens() -> None:
    tokens = tokenize(GETTYSBURG)
    short = vocabulary_metrics(tokens[:49])
    assert short == metrics_module.VocabularyMetrics(
        token_count=49, distinct_words=len(set(tokens[:49])), mattr=None, mtld=None, sufficient=False
    )
    enough = vocabulary_metrics(tokens[:50])
    assert enough.sufficient
    assert enough.mattr == pytest.approx(len(set(tokens[:50])) / 50)
    assert enough.mtld is not None
    result = compute_metrics(evenly_timed(" ".join(tokens[:49])))
    assert result.vocabulary_sufficient is False
    assert result.mattr is None and result.mtld is None
    assert result.distinct_words == len(set(tokens[:49]))


def test_filled_pauses_do_not_count_towards_vocabulary() -> None:
    tokens = tokenize(GETTYSBURG)[:45] + ["um"] * 10
    result = vocabulary_metrics(tokens)
    assert result.token_count == 45
    assert not result.sufficient


def test_vocabulary_over_concatenated_transcripts() -> None:
    first = evenly_timed(GETTYSBURG[:200])
    second = evenly_timed(TWO_CITIES[:200])
    window_tokens = transcript_tokens(first) + transcript_tokens(second)
    assert compute_metrics(first).vocabulary_sufficient is False
    combined = vocabulary_metrics(window_tokens)
    assert combined.sufficient
    assert combined == vocabulary_metrics(tokenize(GETTYSBURG[:200] + " " + TWO_CITIES[:200]))
    # raw words are normalised the same way
    assert vocabulary_metrics([w.word for w in first + second]) == combined


def test_vocabulary_functions_reject_undefined_input() -> None:
    with pytest.raises(ValueError):
        mattr(["a"] * 49, window_size=50)
    with pytest.raises(ValueError):
        mattr(["a"] * 10, window_size=0)
    with pytest.raises(ValueError):
        mtld([])
    with pytest.raises(ValueError):
        mtld(["a", "b"], threshold=1.0)
    assert vocabulary_metrics([]) == metrics_module.VocabularyMetrics(0, 0, None, None, False)


# ------------------------------------------------------------------------------------------- edge cases


def _assert_empty(result: SubmissionMetrics) -> None:
    assert result.word_count == 0
    assert result.total_duration_s == 0.0
    assert result.phonation_time_s == 0.0
    assert result.speech_rate_wpm is None
    assert result.articulation_rate_wpm is None
    assert result.silent_pause_count == 0
    assert result.silent_pauses_per_minute is None
    assert result.mean_silent_pause_s is None
    assert result.silent_pause_total_s == 0.0
    assert result.silent_pauses_s == ()
    assert result.mean_length_of_run is None
    assert result.filled_pause_count == 0 and result.filled_pauses == {}
    assert result.discourse_marker_count == 0 and result.discourse_markers == {}
    assert result.repetition_count == 0 and result.repetitions == ()
    assert result.vocabulary_token_count == 0
    assert result.distinct_words == 0
    assert result.mattr is None and result.mtld is None
    assert result.vocabulary_sufficient is False
    assert result.metrics_version == METRICS_VERSION


@pytest.mark.parametrize("words", [[], timed((" ...", 0.0, 0.5), (" -", 1.0, 1.2))], ids=["empty", "no-tokens"])
def test_empty_input_gives_zeros_and_none(words: list[Word]) -> None:
    _assert_empty(compute_metrics(words, recording_duration_s=3.0))
    assert word_count(words) == 0
    assert total_duration(words) == 0.0
    assert phonation_time(words) == 0.0
    assert silent_pauses(words) == []
    for undefined in (speech_rate, articulation_rate, mean_length_of_run):
        with pytest.raises(ValueError):
            undefined(words)


def test_zero_length_single_word_has_undefined_rates() -> None:
    result = compute_metrics(timed((" hi", 1.0, 1.0)))
    assert result.word_count == 1
    assert result.total_duration_s == 0.0
    assert result.speech_rate_wpm is None
    assert result.articulation_rate_wpm is None
    assert result.silent_pauses_per_minute is None
    assert result.mean_length_of_run == 1.0
    with pytest.raises(ValueError):
        speech_rate(timed((" hi", 1.0, 1.0)))


@pytest.mark.parametrize(
    "words",
    [
        timed((" a", 1.0, 0.5)),
        timed((" a", -0.1, 0.5)),
        timed((" a", 0.0, math.nan)),
        timed((" a", 0.0, math.inf)),
        [Word(" a", "0.0", 1.0)],  # type: ignore[arg-type]
    ],
)
def test_invalid_timestamps_raise(words: Iterable[Word]) -> None:
    with pytest.raises(ValueError):
        compute_metrics(list(words))


@pytest.mark.parametrize("threshold", [0, -0.25, math.nan, math.inf])
def test_invalid_threshold_raises(threshold: float) -> None:
    with pytest.raises(ValueError):
        compute_metrics(timed((" a", 0.0, 0.5)), pause_threshold_s=threshold)
    with pytest.raises(ValueError):
        silent_pauses(timed((" a", 0.0, 0.5)), threshold_s=threshold)


@pytest.mark.parametrize("recording", [-1.0, math.nan])
def test_invalid_recording_duration_raises(recording: float) -> None:
    with pytest.raises(ValueError):
        compute_metrics(timed((" a", 0.0, 0.5)), recording_duration_s=recording)


def test_result_is_frozen_and_serialisable() -> None:
    result = compute_metrics(evenly_timed("Um I I think so"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.word_count = 3  # type: ignore[misc]
    row = dataclasses.asdict(result)
    assert row["metrics_version"] == METRICS_VERSION
    assert row["filled_pauses"] == {"um": 1}
    assert set(row) == {f.name for f in dataclasses.fields(SubmissionMetrics)}


# ------------------------------------------------------------------------------ batched vocabulary (numpy)


def _random_windows(rng: random.Random, count: int) -> list[list[tuple[str, ...]]]:
    """Windows as pieces (a submission's tokens each), lengths around the 50-token boundary and up to ~1,500."""
    vocabulary = [f"w{i}" for i in range(rng.choice([3, 20, 120, 3000]))] + ["don't", "well-known"]
    windows = []
    for _ in range(count):
        pieces = []
        for _ in range(rng.choice([1, 1, 2, 7, 13])):
            size = rng.choice([0, 1, 20, 49, 50, 51, 114])
            pieces.append(tuple(rng.choice(vocabulary) for _ in range(size)))
        windows.append(pieces)
    windows.append([tuple(f"u{i}" for i in range(120))])  # all distinct: one factor, MTLD = length
    return windows


@pytest.mark.parametrize("seed", range(6))
def test_batched_vocabulary_equals_mattr_and_mtld_exactly(seed: int) -> None:
    from flows.metrics import batch_vocabulary
    from flows.metrics import lexical_vocabulary as window_vocabulary

    rng = random.Random(seed)
    for count in (0, 1, 63, 200):  # the compiled kernel walks any number of windows in one call
        windows = _random_windows(rng, count)
        expected = [window_vocabulary([token for piece in pieces for token in piece]) for pieces in windows]
        assert batch_vocabulary(windows) == expected  # floats equal, not approximately


def test_batched_vocabulary_matches_lexicalrichness(lexical_richness: Any) -> None:
    from flows.metrics import batch_vocabulary

    rng = random.Random(99)
    windows = [w for w in _random_windows(rng, 128) if sum(map(len, w)) >= 50]
    assert len(windows) >= 64
    for pieces, result in zip(windows, batch_vocabulary(windows), strict=True):
        tokens = [token for piece in pieces for token in piece]
        reference = lexical_richness(tokens, preprocessor=None, tokenizer=None)
        assert result.mattr == pytest.approx(reference.mattr(window_size=50), abs=1e-9)
        assert result.mtld == pytest.approx(reference.mtld(threshold=0.72), abs=1e-9)


def test_pauses_are_rounded_to_the_microsecond_as_python_rounds() -> None:
    """Durations are rounded with Python's round(x, 6), including ties and values far from a microsecond."""
    rng = random.Random(4)
    gaps = [0.0000005, 0.0000015, 0.2500005, 1e7 + 0.0000005, 2.675e-1, 1234567.1234565]
    gaps += [
        rng.choice([rng.uniform(0.25, 3.0), round(rng.uniform(0.25, 3.0), 3), rng.uniform(0.25, 1e9)])
        for _ in range(3000)
    ]
    words, t = [], 0.0
    for gap in gaps:
        words.append(Word(" a", t, t + 0.1))
        t = t + 0.1 + gap
    expected = [round(b.start - a.end, 6) for a, b in zip(words, words[1:], strict=False)]
    expected = [
        gap
        for gap, (a, b) in zip(expected, zip(words, words[1:], strict=False), strict=True)
        if (b.start - a.end) + 1e-6 >= 0.25
    ]
    assert silent_pauses(words) == expected
