"""Syllables of a token: how the syllable rates of :mod:`flows.metrics.transcript` count them.

Part of the metric definitions (a change needs a bump of :data:`flows.metrics.METRICS_VERSION`). The fluency
literature measures speech rate, articulation rate and mean length of run in syllables (de Jong & Wempe 2009;
Kormos & Dénes 2004); ASR gives words, so each normalised token (:func:`flows.metrics.tokens.tokenize`) is given
a syllable count by :func:`syllable_count`:

1. a filled pause (``um``, ``uhh``, ``hmm``; :func:`flows.metrics.tokens.is_filled_pause`) is 1 syllable;
2. a token of the CMU Pronouncing Dictionary (Carnegie Mellon University, BSD-2-Clause style licence;
   https://github.com/cmusphinx/cmudict) has the number of vowel phonemes of its first pronunciation (``beautiful``
   B Y UW1 T AH0 F AH0 L -> 3). The dictionary's counts are shipped derived, one number per word, in
   ``flows/metrics/data/cmudict-syllables.tsv.gz`` (how it was built, and the attribution:
   ``flows/metrics/data/README.md``);
3. any other token is split at hyphens, periods and commas (``well-known``, ``u.s``, ``3.5``) and its parts are
   counted by rule 2 where the dictionary has them, else: a part with digits counts one syllable per digit (a
   rough reading of a number: ASR writes most numbers as words), a part of letters by SyllaPy
   (``syllapy.count``, MIT licence, https://github.com/mholtzscher/syllapy: its own list of known words, then a
   vowel-group rule with silent final *e* and syllabic *-le*);
4. every token has at least 1 syllable.

Memoised per token (transcripts repeat a small vocabulary): a transcript costs one cache lookup per token.
"""

from __future__ import annotations

import functools
import gzip
import re
import sys
from importlib.resources import files
from pathlib import Path

import syllapy

from flows.metrics.tokens import is_filled_pause

__all__ = ["CMUDICT_SYLLABLES", "syllable_count"]

CMUDICT_SYLLABLES = "data/cmudict-syllables.tsv.gz"
"""The derived CMU Pronouncing Dictionary table (word TAB syllables), relative to this package."""

_PARTS = re.compile(r"[-.,]+")
_DIGIT = re.compile(r"\d")


@functools.cache
def _dictionary() -> dict[str, int]:
    """The CMU dictionary's syllable count of each head word (loaded once, on first use)."""
    data = files("flows.metrics").joinpath(CMUDICT_SYLLABLES).read_bytes()
    table: dict[str, int] = {}
    for line in gzip.decompress(data).decode("utf-8").splitlines():
        word, _, count = line.partition("\t")
        table[word] = int(count)
    return table


@functools.lru_cache(maxsize=65536)
def syllable_count(token: str) -> int:
    """The number of syllables of one normalised token (rules and sources in the module docstring), at least 1."""
    if is_filled_pause(token):
        return 1
    table = _dictionary()
    known = table.get(token)
    if known is not None:
        return max(1, known)
    total = 0
    for part in _PARTS.split(token):
        if not part:
            continue
        known = table.get(part)
        if known is not None:
            total += known
        elif _DIGIT.search(part):
            total += len(_DIGIT.findall(part))
        else:
            total += max(1, syllapy.count(part))
    return max(1, total)


def build_table(cmudict_path: Path, out_path: Path) -> int:
    """Write the derived table of ``cmudict.dict`` at ``cmudict_path`` to ``out_path`` (see
    ``flows/metrics/data/README.md``); returns the number of words."""
    lines: list[str] = []
    for raw in cmudict_path.read_text(encoding="utf-8").splitlines():
        fields = raw.split("#", 1)[0].split()
        if not fields or "(" in fields[0]:  # a comment, or an alternative pronunciation
            continue
        lines.append(f"{fields[0]}\t{sum(phone[-1].isdigit() for phone in fields[1:])}")
    out_path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), compresslevel=9, mtime=0))
    return len(lines)


if __name__ == "__main__":  # python -m flows.metrics.syllables build <cmudict.dict>
    if len(sys.argv) != 3 or sys.argv[1] != "build":
        raise SystemExit("usage: python -m flows.metrics.syllables build <path to cmudict.dict>")
    target = Path(__file__).parent / CMUDICT_SYLLABLES
    print(f"{build_table(Path(sys.argv[2]), target)} words -> {target}")
