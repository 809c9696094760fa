"""Tokens: how an ASR word becomes the normalised word tokens that every metric counts.

Part of the metric definitions (a change needs a bump of :data:`flows.metrics.METRICS_VERSION`). Standard library
only. Each ASR word (``" Don't,"``) is normalised with :func:`tokenize`; the vocabulary measures count its
*lexical* tokens, the tokens without filled pauses (:func:`lexical_tokens`). Both are memoised per word string:
transcripts repeat a small vocabulary (the word strings of Whisper), so a transcript costs one cache lookup per
word.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from itertools import chain

from flows.metrics.lexicon import filled_pause_form

__all__ = ["is_filled_pause", "lexical_tokens", "lexical_word_tokens", "tokenize", "word_tokens"]

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
    return list(word_tokens(text))


@functools.lru_cache(maxsize=65536)
def word_tokens(text: str) -> tuple[str, ...]:
    """:func:`tokenize` as a tuple, memoised (what the metrics call for each ASR word)."""
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
    :data:`flows.metrics.lexicon.FILLED_PAUSE_FORMS`).
    """
    return filled_pause_form(token) is not None


@functools.lru_cache(maxsize=65536)
def lexical_word_tokens(text: str) -> tuple[str, ...]:
    """The lexical tokens of one ASR word or token: :func:`tokenize`, filled pauses removed (memoised)."""
    return tuple(token for token in word_tokens(text) if filled_pause_form(token) is None)


def lexical_tokens(words: Iterable[str]) -> tuple[str, ...]:
    """The tokens the vocabulary measures count, from raw ASR words (or tokens): each normalised with
    :func:`tokenize`, filled pauses removed, in order. Computed once per submission by the dataflow, so that the
    windows a submission is in do not redo it (:func:`flows.metrics.batch_vocabulary` takes them)."""
    return tuple(chain.from_iterable(map(lexical_word_tokens, words)))
