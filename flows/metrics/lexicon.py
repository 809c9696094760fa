"""Word lists behind the fluency metrics in :mod:`flows.metrics.transcript`.

Everything here is data (plus one tiny predicate): the lists are kept apart from the metric code so that a
change of definition is easy to review. Any change to a list changes what a metric means, so it must come with
a bump of ``flows.metrics.METRICS_VERSION``.

All entries are in the normalised token form produced by :func:`flows.metrics.tokens.tokenize` (lower case, no
surrounding punctuation, inner apostrophes kept as ``'``).

Sources:

* Filled pauses: Clark, H. H. & Fox Tree, J. E. (2002). Using *uh* and *um* in spontaneous speaking.
  *Cognition* 84(1), 73-111 — *uh*/*um* and their British spellings *er*/*erm*; we add the hesitation
  vocalisations *hmm*, *mm* and *ah* and lengthened spellings of all of them (``umm``, ``uhh``, ``hmmm``),
  which is how ASR transcribes them.
* Discourse markers: Schiffrin, D. (1987). *Discourse Markers*. Cambridge University Press (*well*, *so*,
  *I mean*, *y'know*); Fung, L. & Carter, R. (2007). Discourse markers and spoken English: native and learner
  use in pedagogic settings. *Applied Linguistics* 28(3), 410-439 (*like*, *you know*, *I mean*, *well*,
  *so*). Of those lists we keep the five markers that learners overuse as fillers and that can be told apart
  from their propositional uses ("I like tea", "very well", "so much") with the token-context rules below; the
  rules prefer missing a marker to counting a verb or a preposition.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "DISCOURSE_MARKERS",
    "EMPHATIC_REDUPLICATIONS",
    "FILLED_PAUSE_FORMS",
    "I_MEAN_BLOCK_NEXT",
    "I_MEAN_BLOCK_PREVIOUS",
    "LIKE_BLOCK_PREVIOUS",
    "MULTIWORD_DISCOURSE_MARKERS",
    "SO_BLOCK_NEXT",
    "WELL_BLOCK_NEXT",
    "YOU_KNOW_BLOCK_NEXT",
    "YOU_KNOW_BLOCK_PREVIOUS",
    "filled_pause_form",
]

# Canonical filled-pause form -> the regular expression (full match) of its spellings.
FILLED_PAUSE_FORMS: dict[str, re.Pattern[str]] = {
    "um": re.compile(r"u+h*m+"),  # um, umm, uhm, uhmm
    "uh": re.compile(r"u+h+"),  # uh, uhh
    "er": re.compile(r"e+r+"),  # er, err, errr
    "erm": re.compile(r"e+r+m+"),  # erm, errm
    "hmm": re.compile(r"h+m+"),  # hm, hmm, hmmm
    "mm": re.compile(r"m{2,}"),  # mm, mmm (not "m", not the backchannel "mhm")
    "ah": re.compile(r"a+h+"),  # ah, ahh, aah
}


@functools.lru_cache(maxsize=65536)
def filled_pause_form(token: str) -> str | None:
    """Return the canonical filled-pause form of a normalised token (``"umm"`` -> ``"um"``), or ``None``.

    Only whole tokens match: ``"umbrella"`` and ``"summer"`` are not filled pauses.
    """
    for form, pattern in FILLED_PAUSE_FORMS.items():
        if pattern.fullmatch(token):
            return form
    return None


# Canonical discourse markers (the keys of the per-marker counts).
DISCOURSE_MARKERS: tuple[str, ...] = ("you know", "i mean", "like", "well", "so")

# Token sequences that spell a multi-word marker -> its canonical name.
MULTIWORD_DISCOURSE_MARKERS: dict[tuple[str, ...], str] = {
    ("you", "know"): "you know",
    ("ya", "know"): "you know",
    ("y'know",): "you know",
    ("i", "mean"): "i mean",
}

# "you know" is a verb phrase, not a marker, after an auxiliary, a modal, a complementiser or a wh-word
# ("do you know", "if you know", "what you know", "as you know") ...
YOU_KNOW_BLOCK_PREVIOUS: frozenset[str] = frozenset(
    {
        "do", "does", "did", "don't", "doesn't", "didn't",
        "would", "could", "can", "will", "should", "might", "may", "must",
        "wouldn't", "couldn't", "can't", "won't", "shouldn't",
        "if", "whether", "that", "which", "who", "what", "how", "where", "when", "why", "as",
    }
)  # fmt: skip
# ... and before an object pronoun or a complement ("you know him", "you know how to", "you know about it").
YOU_KNOW_BLOCK_NEXT: frozenset[str] = frozenset(
    {
        "it", "that", "him", "her", "them", "me", "us", "how", "about", "why", "where", "when", "whether",
        "anything", "something", "nothing", "everything", "anyone", "someone", "everyone", "nobody",
    }
)  # fmt: skip

# "I mean" is the verb in "what I mean", "do I mean", "if I mean" and in "I mean it", "I mean to".
I_MEAN_BLOCK_PREVIOUS: frozenset[str] = frozenset(
    {"what", "do", "did", "don't", "didn't", "if", "that", "which", "whether", "how"}
)
I_MEAN_BLOCK_NEXT: frozenset[str] = frozenset({"it", "to", "that", "by", "for", "what", "this"})

# "like" is a verb or a preposition after these ("I like", "would like", "looks like", "something like").
LIKE_BLOCK_PREVIOUS: frozenset[str] = frozenset(
    {
        "i", "you", "we", "they", "he", "she", "it", "who", "people",
        "would", "i'd", "you'd", "we'd", "they'd", "he'd", "she'd",
        "do", "does", "did", "don't", "doesn't", "didn't", "not", "to", "really", "also", "just",
        "look", "looks", "looked", "looking", "feel", "feels", "felt", "feeling",
        "seem", "seems", "seemed", "sound", "sounds", "sounded", "taste", "tastes", "tasted",
        "smell", "smells", "smelled", "something", "anything", "nothing", "things", "more", "much", "exactly",
        "is", "was", "are", "were", "am", "be", "been", "it's", "that's",
    }
)  # fmt: skip

# "so" is an intensifier or a purpose conjunction before these ("so much", "so that").
SO_BLOCK_NEXT: frozenset[str] = frozenset({"much", "many", "far", "that", "long", "few", "little"})
# "well" is an adverb/adjective before these ("well done", "as well as").
WELL_BLOCK_NEXT: frozenset[str] = frozenset({"done", "known", "as", "being", "off"})

# Doublings that are emphasis rather than disfluency ("very very", "no no no"); not counted as repetitions.
EMPHATIC_REDUPLICATIONS: frozenset[str] = frozenset({"very", "really", "no", "yes", "yeah", "bye", "ha"})
