"""Engine-agnostic speaking metrics computed from a transcript's word timestamps.

This module is plain Python (standard library only): the Bytewax dataflows call it to build metric rows and
``feedback/`` reuses it, so it must never import Bytewax, Kafka or any other engine.

Input is a transcript as a sequence of :class:`TimedWord` (``word``, ``start``, ``end`` in seconds), e.g. the
words of faster-whisper's ``word_timestamps=True`` output (``" country."``, ``" I'm"``).
:func:`compute_metrics` is the one entry point that returns every metric of a submission as a
:class:`SubmissionMetrics`; the smaller functions are public so that other components can compute a single
measure, and :func:`vocabulary_metrics` aggregates lexical diversity over the concatenated tokens of many
transcripts (per-learner windows).

Conventions (part of the metric definitions; a change needs a bump of :data:`METRICS_VERSION`):

* **Tokens.** Each ASR word is normalised with :func:`tokenize` (lower case; punctuation removed; apostrophes
  and hyphens inside a word kept: ``" Don't,"`` -> ``don't``, ``"well-known"`` -> ``well-known``). An ASR word
  that is only punctuation yields no token and is ignored, timing included; an ASR word that yields several
  tokens (rare) counts as several words sharing its timing. Every count of "words" is a count of these tokens.
* **Words, not syllables.** The fluency literature counts syllables (de Jong & Wempe 2009); ASR gives words,
  so all rates here are in words per minute. Filled pauses are counted in the word count and in the runs (the
  measures are *unpruned*); they are reported separately so that pruned figures can be derived, and they are
  left out of the vocabulary measures (they are not lexical items).
* **Times.** Durations are in seconds, rounded to the microsecond; rates are per minute. Timestamps must be
  finite and non-negative with ``end >= start`` (else ``ValueError``). Overlapping or out-of-order words are
  tolerated: a negative gap is simply not a pause, and the speech span runs from the earliest start to the
  latest end.
* **Undefined values.** :func:`compute_metrics` never raises for empty or degenerate input: a measure whose
  denominator is zero (a rate over 0 s, a mean over no pauses, a diversity index over fewer than 50 tokens) is
  ``None``, counts are 0. The single-measure functions instead raise ``ValueError`` where their value is
  undefined.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Protocol, runtime_checkable

from flows.lexicon import (
    EMPHATIC_REDUPLICATIONS,
    I_MEAN_BLOCK_NEXT,
    I_MEAN_BLOCK_PREVIOUS,
    LIKE_BLOCK_PREVIOUS,
    MULTIWORD_DISCOURSE_MARKERS,
    SO_BLOCK_NEXT,
    WELL_BLOCK_NEXT,
    YOU_KNOW_BLOCK_NEXT,
    YOU_KNOW_BLOCK_PREVIOUS,
    filled_pause_form,
)

__all__ = [
    "DEFAULT_PAUSE_THRESHOLD_S",
    "MATTR_WINDOW",
    "METRICS_VERSION",
    "MIN_VOCABULARY_TOKENS",
    "MTLD_THRESHOLD",
    "SubmissionMetrics",
    "TimedWord",
    "VocabularyMetrics",
    "articulation_rate",
    "compute_metrics",
    "count_discourse_markers",
    "count_filled_pauses",
    "find_discourse_markers",
    "find_repetitions",
    "is_filled_pause",
    "mattr",
    "mean_length_of_run",
    "mtld",
    "phonation_time",
    "silent_pauses",
    "speech_rate",
    "tokenize",
    "total_duration",
    "transcript_tokens",
    "vocabulary_metrics",
    "lexical_vocabulary",
    "lexical_tokens",
    "word_count",
]

METRICS_VERSION = 1
"""Version of the metric definitions in this module; every metric row records it. Bump on any change of
meaning."""

DEFAULT_PAUSE_THRESHOLD_S = 0.25
"""Silent-pause threshold in seconds (250 ms: Goldman-Eisler 1968; De Jong & Bosker 2013)."""

MATTR_WINDOW = 50
"""MATTR moving-window size in tokens (Covington & McFall 2010)."""

MTLD_THRESHOLD = 0.72
"""MTLD factor threshold (McCarthy & Jarvis 2010)."""

MIN_VOCABULARY_TOKENS = 50
"""Fewer lexical tokens than this: MATTR and MTLD are not reported (``vocabulary_sufficient=False``)."""

# Timestamps are ms-granular; comparisons with the pause threshold tolerate float noise below a microsecond,
# so that a gap of 0.35 - 0.10 s (= 0.24999999999999997 in binary floating point) counts as a 250 ms pause.
_TIME_EPSILON_S = 1e-6
_TIME_DECIMALS = 6


@runtime_checkable
class TimedWord(Protocol):
    """One recognised word with its timing, e.g. faster-whisper's ``Word``.

    ``word`` is the text as the recogniser emitted it (it may carry a leading space, punctuation and
    capitals); ``start`` and ``end`` are seconds from the beginning of the recording.
    """

    @property
    def word(self) -> str: ...

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...


# ----------------------------------------------------------------------------------------------- tokenisation

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'", "`": "'"})
# Anything but letters, digits, apostrophes and hyphens separates tokens; so do "_" and "--". A period
# between two letters or digits ("U.S.", "3.5") and a comma between two digits ("1,000") stay in the token.
_INNER_PUNCTUATION = re.compile(r"(?<=[^\W_])\.(?=[^\W_])|(?<=\d),(?=\d)")
_PROTECT = {".": "\x00", ",": "\x01"}  # stand-ins that survive the split, restored afterwards
_RESTORE = str.maketrans({"\x00": ".", "\x01": ","})
_SEPARATOR = re.compile(r"[^\w'\x00\x01-]+|_+|-{2,}")
_EDGE_CHARACTERS = "'-"


def tokenize(text: str) -> list[str]:
    """Split text into normalised word tokens.

    Definition: the text is lower-cased, typographic apostrophes become ``'``; every character that is not a
    letter, a digit, an apostrophe or a hyphen separates tokens, except a period between two letters or digits
    and a comma between two digits; apostrophes and hyphens at the edges of a token are removed. So
    ``" Country."`` -> ``["country"]``, ``"I'm"`` -> ``["i'm"]``, ``"'cause"`` -> ``["cause"]``,
    ``"well-known"`` -> ``["well-known"]``, ``"U.S."`` -> ``["u.s"]``, ``"3.5"`` -> ``["3.5"]``, ``"..."`` ->
    ``[]``. Applying it to its own output changes nothing.

    Unlike lexicalrichness's tokenizer, digits are kept and apostrophes, hyphens and periods inside a word do
    not split it; for text without digits, apostrophes, hyphens and inner periods both give the same tokens.
    """
    return list(_tokenize_cached(text))


@functools.lru_cache(maxsize=65536)
def _tokenize_cached(text: str) -> tuple[str, ...]:
    """:func:`tokenize` memoised: transcripts repeat a small vocabulary (the word strings of Whisper)."""
    text = _INNER_PUNCTUATION.sub(lambda match: _PROTECT[match.group()], text.lower().translate(_APOSTROPHES))
    tokens: list[str] = []
    for piece in _SEPARATOR.split(text):
        token = piece.strip(_EDGE_CHARACTERS)
        if token:
            tokens.append(token.translate(_RESTORE))
    return tuple(tokens)


def is_filled_pause(token: str) -> bool:
    """Whether a normalised token is a filled pause (Clark & Fox Tree 2002).

    Whole tokens only: um/umm/uhm, uh/uhh, er/err, erm, hm/hmm, mm/mmm, ah/ahh (see
    :data:`flows.lexicon.FILLED_PAUSE_FORMS`).
    """
    return filled_pause_form(token) is not None


def _check_time(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of seconds, got {value!r}")
    return seconds


def _check_threshold(threshold_s: float) -> float:
    if isinstance(threshold_s, bool) or not isinstance(threshold_s, numbers.Real):
        raise ValueError(f"pause threshold must be a number of seconds, got {threshold_s!r}")
    threshold = float(threshold_s)
    if not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"pause threshold must be a finite, positive number of seconds, got {threshold_s!r}")
    return threshold


def transcript_tokens(words: Sequence[TimedWord]) -> list[str]:
    """The normalised tokens of a transcript, in order (see :func:`tokenize`), filled pauses included.

    Raises ``ValueError`` on invalid timestamps (like every function that takes timed words).
    """
    return list(_timing(words, DEFAULT_PAUSE_THRESHOLD_S).tokens)


# -------------------------------------------------------------------------------------------------- timing


@dataclass(frozen=True, slots=True)
class _Timing:
    threshold_s: float
    word_count: int
    span_s: float
    pauses_s: tuple[float, ...]
    run_starts: frozenset[int]  # token indices that begin a run: the first one and each after a pause
    tokens: tuple[str, ...]

    @property
    def phonation_s(self) -> float:
        return _seconds(max(0.0, self.span_s - sum(self.pauses_s)))


def _seconds(value: float) -> float:
    return round(value, _TIME_DECIMALS)


_INFINITY = math.inf


def _timing(words: Iterable[TimedWord], threshold_s: float) -> _Timing:
    """Tokens, silent pauses, runs and speech span of a transcript in one pass over its words.

    Each word's timestamps are checked (``ValueError`` naming the word, see :func:`_check_time`); a word
    without tokens is ignored, timing included. A pause is the gap between consecutive words with tokens when
    it is ``>= threshold_s`` (sub-microsecond tolerance); the span runs from the earliest start to the latest
    end of those words.
    """
    threshold_s = _check_threshold(threshold_s)
    tokens: list[str] = []
    pauses: list[float] = []
    run_starts = [0]
    seen_one = False
    previous_end = low = high = 0.0
    for index, word in enumerate(words):
        # Plain floats in range (every word of a decoded event) skip the general check.
        start = word.start
        if type(start) is not float or not 0.0 <= start < _INFINITY:
            start = _check_time(start, f"words[{index}].start")
        end = word.end
        if type(end) is not float or not 0.0 <= end < _INFINITY:
            end = _check_time(end, f"words[{index}].end")
        if end < start:
            raise ValueError(f"words[{index}] ends before it starts ({start} > {end})")
        word_tokens = _tokenize_cached(word.word)
        if not word_tokens:
            continue
        if seen_one:
            gap = start - previous_end
            if gap + _TIME_EPSILON_S >= threshold_s:
                pauses.append(round(gap, _TIME_DECIMALS))
                run_starts.append(len(tokens))
            if start < low:
                low = start
            if end > high:
                high = end
        else:
            seen_one, low, high = True, start, end
        previous_end = end
        tokens += word_tokens
    if not seen_one:
        return _Timing(threshold_s, 0, 0.0, (), frozenset(), ())
    return _Timing(threshold_s, len(tokens), _seconds(high - low), tuple(pauses), frozenset(run_starts), tuple(tokens))


def _per_minute(count: float, seconds: float) -> float | None:
    return count * 60.0 / seconds if seconds > 0 else None


def word_count(words: Sequence[TimedWord]) -> int:
    """Number of word tokens in the transcript (filled pauses included; see :func:`tokenize`).

    Raises ``ValueError`` on invalid timestamps.
    """
    return len(transcript_tokens(words))


def total_duration(words: Sequence[TimedWord]) -> float:
    """Total duration of the response in seconds: the speech span, first word's start to last word's end.

    Leading and trailing silence of the recording is not included (the recording's own length is passed to
    :func:`compute_metrics` separately). 0.0 for a transcript without words. Raises ``ValueError`` on invalid
    timestamps.
    """
    return _timing(words, DEFAULT_PAUSE_THRESHOLD_S).span_s


def silent_pauses(words: Sequence[TimedWord], *, threshold_s: float = DEFAULT_PAUSE_THRESHOLD_S) -> list[float]:
    """Lengths in seconds of the silent pauses: gaps between consecutive words ``>= threshold_s``, in order.

    The gap is the next word's start minus the previous word's end. The default threshold of 250 ms follows
    Goldman-Eisler (1968) and De Jong & Bosker (2013), who found 250 ms the best threshold for predicting L2
    fluency. A gap of 249 ms is not a pause, one of 250 ms is (comparison tolerant to sub-microsecond float
    noise). Silence before the first or after the last word is not counted. Raises ``ValueError`` on invalid
    timestamps or a threshold that is not a positive number.
    """
    return list(_timing(words, threshold_s).pauses_s)


def phonation_time(words: Sequence[TimedWord], *, threshold_s: float = DEFAULT_PAUSE_THRESHOLD_S) -> float:
    """Phonation (speaking) time in seconds: the speech span minus the silent pauses ``>= threshold_s``.

    de Jong & Wempe (2009) — phonation time is the total duration without silent pauses; gaps shorter than the
    threshold belong to speaking time. 0.0 for a transcript without words. Raises ``ValueError`` on invalid
    timestamps or threshold.
    """
    return _timing(words, threshold_s).phonation_s


def speech_rate(words: Sequence[TimedWord]) -> float:
    """Speech rate in words per minute: word count / speech span (:func:`total_duration`) x 60.

    de Jong & Wempe (2009) define speech rate as syllables over total duration, pauses included; this is the
    word version over the speech span. Raises ``ValueError`` when it is undefined (no words, or a span of 0 s)
    or on invalid timestamps.
    """
    timing = _timing(words, DEFAULT_PAUSE_THRESHOLD_S)
    rate = _per_minute(timing.word_count, timing.span_s)
    if rate is None:
        raise ValueError("speech rate is undefined for a transcript without words or with a speech span of 0 s")
    return rate


def articulation_rate(words: Sequence[TimedWord], *, threshold_s: float = DEFAULT_PAUSE_THRESHOLD_S) -> float:
    """Articulation rate in words per minute: word count / phonation time (:func:`phonation_time`) x 60.

    de Jong & Wempe (2009): syllables over phonation time, i.e. speed of speaking with silent pauses excluded;
    here in words. Raises ``ValueError`` when undefined (no words, or 0 s of phonation) or on invalid input.
    """
    timing = _timing(words, threshold_s)
    rate = _per_minute(timing.word_count, timing.phonation_s)
    if rate is None:
        raise ValueError("articulation rate is undefined for a transcript without words or 0 s of phonation time")
    return rate


def mean_length_of_run(words: Sequence[TimedWord], *, threshold_s: float = DEFAULT_PAUSE_THRESHOLD_S) -> float:
    """Mean length of run: the mean number of words between silent pauses ``>= threshold_s``.

    Kormos & Dénes (2004); Tavakoli & Skehan (2005) — mean number of syllables (here: words) produced between
    pauses. Equals word count / (number of silent pauses + 1); filled pauses do not end a run and count as
    words. Raises ``ValueError`` for a transcript without words or on invalid input.
    """
    timing = _timing(words, threshold_s)
    if timing.word_count == 0:
        raise ValueError("mean length of run is undefined for a transcript without words")
    return timing.word_count / (len(timing.pauses_s) + 1)


# ---------------------------------------------------------------------------------------------- disfluencies


def count_filled_pauses(tokens: Sequence[str]) -> dict[str, int]:
    """Count filled pauses per canonical form (``{"um": 2, "uh": 1}``); forms that do not occur are absent.

    Clark & Fox Tree (2002): *uh* and *um* (British *er*, *erm*), plus the hesitation vocalisations hmm, mm
    and ah. A token is a filled pause only as a whole token, lengthened spellings included (``umm`` -> ``um``,
    ``uhh`` -> ``uh``); see :data:`flows.lexicon.FILLED_PAUSE_FORMS`. ``tokens`` are normalised tokens
    (:func:`tokenize`).
    """
    return _count_forms([filled_pause_form(token) for token in tokens])


def _count_forms(forms: Iterable[str | None]) -> dict[str, int]:
    """Occurrences of each filled-pause form (``None``: not a filled pause), in order of first occurrence."""
    counts: dict[str, int] = {}
    for form in forms:
        if form is not None:
            counts[form] = counts.get(form, 0) + 1
    return counts


def _neighbour(tokens: Sequence[str], forms: Sequence[str | None], index: int, step: int) -> str | None:
    """The nearest token from ``index`` in direction ``step`` that is not a filled pause (``forms``: the
    tokens' filled-pause forms)."""
    index += step
    while 0 <= index < len(tokens):
        if forms[index] is None:
            return tokens[index]
        index += step
    return None


# Longest sequences first, so that a longer spelling wins.
_MULTIWORD = sorted(MULTIWORD_DISCOURSE_MARKERS.items(), key=lambda item: -len(item[0]))


def find_discourse_markers(
    tokens: Sequence[str], *, run_starts: Collection[int] | None = None
) -> list[tuple[int, str]]:
    """Find discourse markers as ``(index of the marker's first token, canonical marker)`` pairs, in order.

    Markers (Schiffrin 1987; Fung & Carter 2007): *you know* (also *ya know*, *y'know*), *I mean*, *like*,
    *well*, *so*. Multi-word markers are matched as token sequences. Filled pauses are never markers (they are
    counted apart). The rules are conservative — they rather miss a marker than count a verb, a preposition or
    an adverb — and look at the nearest neighbours that are not filled pauses (word lists in
    :mod:`flows.lexicon`):

    * *you know* — not after an auxiliary, modal, complementiser or wh-word ("do you know", "if you know",
      "what you know", "as you know") and not before an object or complement ("you know him", "you know how");
    * *I mean* — not after "what/do/did/if/that/…" ("what I mean") and not before
      "it/to/that/by/for/what/this";
    * *like* — only next to another disfluency: right after a filled pause or a discourse marker ("um like",
      "you know like") or right before a filled pause ("like uh"), and never after a word that makes it a verb
      or preposition ("I like", "would like", "looks like", "something like", "was like"). Bare "like"
      elsewhere is not counted, so its marker use is undercounted by design;
    * *well*, *so* — only at the start of a run (the first word, or the first after a silent pause, skipping
      filled pauses and other markers) or right before a filled pause ("so um"), and not in "so
      much/many/that/…" or "well done/known/as/…".

    ``run_starts`` are the token indices that begin a run (after a silent pause); ``None`` means only the
    first token. :func:`compute_metrics` passes the runs it found.
    """
    starts = {0} if run_starts is None else set(run_starts)
    return _find_markers(tokens, [filled_pause_form(token) for token in tokens], starts)


# The first token of every marker: any other token that is not a filled pause just ends a run's start.
_MARKER_FIRST_TOKENS = frozenset({sequence[0] for sequence in MULTIWORD_DISCOURSE_MARKERS} | {"like", "so", "well"})


def _find_markers(tokens: Sequence[str], forms: Sequence[str | None], starts: Collection[int]) -> list[tuple[int, str]]:
    """:func:`find_discourse_markers` given the tokens' filled-pause forms and the run starts."""
    found: list[tuple[int, str]] = []
    at_run_start = False  # only filled pauses and markers since the start of the run
    after_disfluency = False  # the previous token was a filled pause or ended a marker
    index = 0
    count = len(tokens)
    while index < count:
        if index in starts:
            at_run_start = True
        if forms[index] is not None:
            after_disfluency = True
            index += 1
            continue
        token = tokens[index]
        if token not in _MARKER_FIRST_TOKENS:  # cannot be (the start of) a marker
            at_run_start = False
            after_disfluency = False
            index += 1
            continue
        previous = _neighbour(tokens, forms, index, -1)
        marker: str | None = None
        length = 1
        for sequence, name in _MULTIWORD:
            if tuple(tokens[index : index + len(sequence)]) == sequence:
                following = _neighbour(tokens, forms, index + len(sequence) - 1, +1)
                if name == "you know":
                    accepted = previous not in YOU_KNOW_BLOCK_PREVIOUS and following not in YOU_KNOW_BLOCK_NEXT
                else:  # "i mean"
                    accepted = previous not in I_MEAN_BLOCK_PREVIOUS and following not in I_MEAN_BLOCK_NEXT
                if accepted:
                    marker, length = name, len(sequence)
                break
        if marker is None and token in ("like", "so", "well"):
            before_filled_pause = index + 1 < count and forms[index + 1] is not None
            following = _neighbour(tokens, forms, index, +1)
            if token == "like":
                if previous not in LIKE_BLOCK_PREVIOUS and (after_disfluency or before_filled_pause):
                    marker = "like"
            elif at_run_start or before_filled_pause:
                blocked = SO_BLOCK_NEXT if token == "so" else WELL_BLOCK_NEXT
                if following not in blocked:
                    marker = token
        if marker is not None:
            found.append((index, marker))
            after_disfluency = True
            index += length
            continue
        at_run_start = False
        after_disfluency = False
        index += 1
    return found


def _count_markers(found: Iterable[tuple[int, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, marker in found:
        counts[marker] = counts.get(marker, 0) + 1
    return counts


def count_discourse_markers(tokens: Sequence[str], *, run_starts: Collection[int] | None = None) -> dict[str, int]:
    """Count discourse markers per canonical marker (``{"you know": 2, "i mean": 1}``).

    See :func:`find_discourse_markers` for the list and the rules. Markers that do not occur are absent.
    """
    return _count_markers(find_discourse_markers(tokens, run_starts=run_starts))


def find_repetitions(tokens: Sequence[str]) -> list[str]:
    """Immediate repetitions: each extra copy of a token or a 2-gram repeated right after itself, in order.

    Definition (repetition disfluencies, Kormos & Dénes 2004; Foster, Tonkyn & Wigglesworth 2000): filled
    pauses are removed first, so they neither count nor interrupt a repetition ("I um I think" repeats "i");
    then, left to right, a token equal to the next one is a repetition of that token ("the the" ->
    ``["the"]``, "I I I" -> ``["i", "i"]``), else a 2-gram equal to the next two tokens is a repetition of the
    2-gram ("I think I think" -> ``["i think"]``). Emphatic doublings ("very very", "no no";
    :data:`flows.lexicon.EMPHATIC_REDUPLICATIONS`) are not counted. Grammatical doublings ("had had", "that
    that") cannot be told apart and are counted.
    """
    return _repetitions([token for token in tokens if not is_filled_pause(token)])


def _repetitions(content: Sequence[str]) -> list[str]:
    """:func:`find_repetitions` of the tokens without filled pauses."""
    repetitions: list[str] = []
    index = 0
    count = len(content)
    while index + 1 < count:
        token = content[index]
        if token == content[index + 1]:
            if token not in EMPHATIC_REDUPLICATIONS:
                repetitions.append(token)
            index += 1
        elif index + 3 < count and token == content[index + 2] and content[index + 1] == content[index + 3]:
            repetitions.append(f"{token} {content[index + 1]}")
            index += 2
        else:
            index += 1
    return repetitions


# ------------------------------------------------------------------------------------------------- vocabulary


def mattr(tokens: Sequence[str], *, window_size: int = MATTR_WINDOW) -> float:
    """Moving-average type-token ratio (Covington & McFall 2010), a ratio in (0, 1].

    The mean of the type-token ratios of every window of ``window_size`` consecutive tokens (tokens 1..w,
    2..w+1, ...). Computed on the tokens as given (same definition as ``lexicalrichness``'s ``mattr``). Raises
    ``ValueError`` when ``window_size`` is not a positive integer or exceeds the number of tokens.
    """
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
        raise ValueError(f"window_size must be a positive integer, got {window_size!r}")
    if window_size > len(tokens):
        raise ValueError(f"MATTR needs at least {window_size} tokens, got {len(tokens)}")
    counts: dict[str, int] = {}
    for token in tokens[:window_size]:
        counts[token] = counts.get(token, 0) + 1
    distinct_sum = len(counts)
    for leaving, entering in zip(tokens, tokens[window_size:], strict=False):
        counts[leaving] -= 1
        if counts[leaving] == 0:
            del counts[leaving]
        counts[entering] = counts.get(entering, 0) + 1
        distinct_sum += len(counts)
    windows = len(tokens) - window_size + 1
    return distinct_sum / (window_size * windows)


def _mtld_pass(tokens: Iterable[str], threshold: float) -> float:
    factors = 0.0
    types: set[str] = set()
    length = 0
    ttr = 1.0
    total = 0
    for token in tokens:
        total += 1
        length += 1
        types.add(token)
        ttr = len(types) / length
        if ttr <= threshold:
            factors += 1
            types = set()
            length = 0
    if length > 0:
        factors += (1 - ttr) / (1 - threshold)
    if factors == 0:  # every token distinct: the TTR never fell, one (whole) factor by convention
        factors = 1.0
    return total / factors


def mtld(tokens: Sequence[str], *, threshold: float = MTLD_THRESHOLD) -> float:
    """Measure of textual lexical diversity (McCarthy & Jarvis 2010), in tokens.

    Forward pass: tokens are read in order while the running type-token ratio of the current segment stays
    above ``threshold`` (0.72); when it falls to or below it, one factor is complete and a new segment starts.
    The remainder adds a partial factor ``(1 - TTR) / (1 - threshold)``. MTLD = tokens / factors; the result
    is the mean of the forward and the backward (reversed text) pass. A text whose tokens are all distinct has
    one factor (MTLD = its length). Same definition as ``lexicalrichness``'s ``mtld``. Raises ``ValueError``
    on an empty token list or a threshold outside (0, 1).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"MTLD threshold must be in (0, 1), got {threshold!r}")
    if not tokens:
        raise ValueError("MTLD is undefined for an empty token list")
    return (_mtld_pass(tokens, threshold) + _mtld_pass(reversed(tokens), threshold)) / 2


@functools.lru_cache(maxsize=65536)
def _lexical_of_token(token: str) -> tuple[str, ...]:
    """The lexical tokens :func:`vocabulary_metrics` keeps of one token or ASR word: :func:`tokenize`, filled
    pauses removed (memoised like the tokenizer: transcripts repeat a small vocabulary)."""
    return tuple(normalised for normalised in _tokenize_cached(token) if filled_pause_form(normalised) is None)


@dataclass(frozen=True, slots=True)
class VocabularyMetrics:
    """Lexical diversity of a token stream (one transcript, or a learner's window of transcripts).

    ``token_count`` and ``distinct_words`` count lexical tokens (filled pauses removed). ``mattr`` (ratio,
    50-token window) and ``mtld`` (tokens) are ``None`` and ``sufficient`` is ``False`` below
    :data:`MIN_VOCABULARY_TOKENS` tokens: with so little text the indices are not comparable (plain TTR is
    length-biased, which is why it is not reported at all).
    """

    token_count: int
    distinct_words: int
    mattr: float | None
    mtld: float | None
    sufficient: bool


def vocabulary_metrics(tokens: Sequence[str]) -> VocabularyMetrics:
    """Vocabulary measures of a token stream, e.g. the concatenated tokens of a learner's transcripts.

    ``tokens`` are normalised again with :func:`tokenize` (a no-op for tokens from :func:`transcript_tokens`,
    so raw words are accepted too) and filled pauses are removed. Then: distinct words (number of types),
    MATTR with a 50-token window (Covington & McFall 2010) and bidirectional MTLD with threshold 0.72
    (McCarthy & Jarvis 2010); the last two are ``None`` with ``sufficient=False`` below 50 tokens. Never
    raises on short or empty input.
    """
    return lexical_vocabulary([normalised for token in tokens for normalised in _lexical_of_token(token)])


def lexical_vocabulary(lexical: Sequence[str]) -> VocabularyMetrics:
    """:func:`vocabulary_metrics` of tokens that are already normalised lexical tokens (filled pauses removed,
    e.g. from :func:`flows.metrics.lexical_tokens`): the measures without normalising the tokens again. Never
    raises on short or empty input."""
    sufficient = len(lexical) >= MIN_VOCABULARY_TOKENS
    return VocabularyMetrics(
        token_count=len(lexical),
        distinct_words=len(set(lexical)),
        mattr=mattr(lexical, window_size=MATTR_WINDOW) if sufficient else None,
        mtld=mtld(lexical, threshold=MTLD_THRESHOLD) if sufficient else None,
        sufficient=sufficient,
    )


def lexical_tokens(words: Iterable[str]) -> tuple[str, ...]:
    """The tokens :func:`vocabulary_metrics` counts, from raw ASR words: each word normalised with
    :func:`tokenize`, filled pauses removed (done once per submission by the dataflow, so that windows do not redo
    it for every window a submission is in; :func:`lexical_vocabulary` takes them)."""
    return tuple(chain.from_iterable(map(_lexical_of_token, words)))


# ------------------------------------------------------------------------------------------------ entry point


@dataclass(frozen=True, slots=True)
class SubmissionMetrics:
    """Every metric of one transcript (units in the field names: ``_s`` seconds, ``_wpm`` words per minute).

    ``None`` marks a value that is undefined for this transcript (a rate over 0 s, a mean over nothing, a
    diversity index below 50 tokens). The ASR model is not known here: the caller records it next to these
    values, as it records :attr:`metrics_version`. ``dataclasses.asdict`` turns it into a plain dict.
    """

    metrics_version: int
    pause_threshold_s: float
    # response length
    word_count: int
    total_duration_s: float  # speech span: first word start -> last word end
    recording_duration_s: float | None  # as given by the caller, not derived from the words
    phonation_time_s: float
    # pace
    speech_rate_wpm: float | None
    articulation_rate_wpm: float | None
    # silent pauses
    silent_pause_count: int
    silent_pauses_per_minute: float | None  # over the speech span
    mean_silent_pause_s: float | None
    silent_pause_total_s: float
    silent_pauses_s: tuple[float, ...]
    mean_length_of_run: float | None  # words
    # disfluencies (counted apart)
    filled_pause_count: int
    filled_pauses: dict[str, int]
    discourse_marker_count: int
    discourse_markers: dict[str, int]
    repetition_count: int
    repetitions: tuple[str, ...]
    # vocabulary (filled pauses removed)
    vocabulary_token_count: int
    distinct_words: int
    mattr: float | None
    mtld: float | None
    vocabulary_sufficient: bool


def compute_metrics(
    words: Sequence[TimedWord],
    *,
    pause_threshold_s: float = DEFAULT_PAUSE_THRESHOLD_S,
    recording_duration_s: float | None = None,
) -> SubmissionMetrics:
    """Compute every speaking metric of one transcript (definitions and sources in the functions above).

    * response length: :func:`word_count`, :func:`total_duration` (speech span), :func:`phonation_time`, and
      the recording's own duration when the caller knows it;
    * pace: :func:`speech_rate` and :func:`articulation_rate` (de Jong & Wempe 2009), words per minute;
    * fluency: :func:`silent_pauses` >= ``pause_threshold_s`` (Goldman-Eisler 1968; De Jong & Bosker 2013) as
      a count, per minute of speech span, mean length and list; :func:`mean_length_of_run` (Kormos & Dénes
      2004; Tavakoli & Skehan 2005); filled pauses (Clark & Fox Tree 2002), discourse markers and immediate
      repetitions, each counted apart;
    * vocabulary: :func:`vocabulary_metrics` of the transcript's tokens.

    Empty or degenerate input does not raise: with no words every count is 0, durations are 0.0 and rates,
    means, MATTR and MTLD are ``None`` (``vocabulary_sufficient=False``). Raises ``ValueError`` on invalid
    timestamps (negative, non-finite, ``end < start``), a threshold that is not a positive number of seconds,
    or a negative or non-finite ``recording_duration_s``.
    """
    timing = _timing(words, pause_threshold_s)
    recording = None if recording_duration_s is None else _check_time(recording_duration_s, "recording_duration_s")
    pauses = timing.pauses_s
    tokens = timing.tokens
    forms = list(map(filled_pause_form, tokens))  # the same tokens' forms serve every disfluency measure
    filled = _count_forms(forms)
    markers = _count_markers(_find_markers(tokens, forms, timing.run_starts))
    repetitions = tuple(_repetitions([token for token, form in zip(tokens, forms, strict=True) if form is None]))
    vocabulary = vocabulary_metrics(tokens)
    return SubmissionMetrics(
        metrics_version=METRICS_VERSION,
        pause_threshold_s=timing.threshold_s,
        word_count=timing.word_count,
        total_duration_s=timing.span_s,
        recording_duration_s=recording,
        phonation_time_s=timing.phonation_s,
        speech_rate_wpm=_per_minute(timing.word_count, timing.span_s) if timing.word_count else None,
        articulation_rate_wpm=_per_minute(timing.word_count, timing.phonation_s) if timing.word_count else None,
        silent_pause_count=len(pauses),
        silent_pauses_per_minute=_per_minute(len(pauses), timing.span_s) if timing.word_count else None,
        mean_silent_pause_s=_seconds(sum(pauses) / len(pauses)) if pauses else None,
        silent_pause_total_s=_seconds(sum(pauses)),
        silent_pauses_s=pauses,
        mean_length_of_run=timing.word_count / (len(pauses) + 1) if timing.word_count else None,
        filled_pause_count=sum(filled.values()),
        filled_pauses=filled,
        discourse_marker_count=sum(markers.values()),
        discourse_markers=markers,
        repetition_count=len(repetitions),
        repetitions=repetitions,
        vocabulary_token_count=vocabulary.token_count,
        distinct_words=vocabulary.distinct_words,
        mattr=vocabulary.mattr,
        mtld=vocabulary.mtld,
        vocabulary_sufficient=vocabulary.sufficient,
    )
