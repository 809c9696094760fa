"""Scripted answers with hesitations at known places, rendered with espeak-ng (voice en-us) and sox.

A script is a sequence of pieces: :class:`Text` (words), :class:`Filler` (a filled pause, "um", "uh" or "er"),
:class:`HeldVowel` (a filler sound lengthened to a given duration: espeak-ng's "uh" time-stretched with sox
``tempo -s``, which keeps the pitch, so it sounds like a held "uhhhh") and :class:`Silence`. Each spoken piece is
rendered on its own, resampled to 16 kHz mono and trimmed of leading and trailing silence with sox (``-R``:
repeatable dither, so the same script gives the same samples on every run); the pieces are
then joined sample by sample (with :attr:`Script.gap_s` of digital silence between consecutive spoken pieces, and
:attr:`Script.pad_s` before the first and after the last), so the start and end of every piece in the final file
are known exactly. Used as ground truth by the fluency tests (``tests/integration/test_fluency_ground_truth.py``)
and the fluency benchmark (``bench.fluency``).

:func:`render` writes one script; :func:`generate_scripts` makes varied scripts from :data:`SENTENCES` with a seeded
random generator (the same seed gives the same scripts).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "SAMPLE_RATE",
    "SENTENCES",
    "FillerForm",
    "Text",
    "Filler",
    "HeldVowel",
    "Silence",
    "Piece",
    "Script",
    "Span",
    "RenderedSpeech",
    "render",
    "generate_scripts",
    "clean_script",
    "FillerScore",
    "filler_events",
    "score_fillers",
    "WordLoss",
    "word_loss",
    "normalise_text",
    "repetitions",
]

SAMPLE_RATE = 16000
"""Sample rate of every rendered file (Hz); the files are 16-bit mono WAV."""

FillerForm = Literal["um", "uh", "er"]

_TRIM = ["silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse"]
"""sox effect chain removing leading and trailing audio below 0.5 % of full scale (first/last 20 ms above it)."""

SENTENCES: tuple[str, ...] = (
    "I usually take the early train to work because it is less crowded",
    "My favourite season is autumn when the leaves turn red and orange",
    "Last year my brother and I repaired an old bicycle in the garage",
    "The museum in the centre of town has a wonderful collection of maps",
    "I think that children should learn to cook simple meals at school",
    "On Sundays we often walk along the river and feed the ducks",
    "Our neighbours planted a small vegetable garden behind their house",
    "When it rains I prefer to stay inside and read a detective story",
    "The best teacher I ever had explained history like a good novel",
    "My sister works as a nurse and she often has night shifts",
    "I would like to visit a country where nobody speaks my language",
    "Public transport in my town is cheap but the buses are often late",
    "We celebrated my grandmother's birthday with a big dinner outside",
    "Playing the piano helps me relax after a long and difficult day",
    "I learned to swim when I was seven years old at a summer camp",
    "The new library has quiet rooms where students can work together",
    "Many people in my street grow tomatoes on their balconies",
    "Yesterday I cooked soup for my friends and they asked for more",
    "A good job gives you time for your family and your hobbies",
    "I am saving money because I want to buy a small boat one day",
    "The mountains near my village are covered with snow in winter",
    "Every morning my dog waits for me at the door with his lead",
)
"""Sentence texts of the generated scripts (no digits or abbreviations: the reference needs no normalisation)."""


@dataclass(frozen=True)
class Text:
    """Words read by espeak-ng (plain text, no SSML); they go into the reference as written."""

    text: str


@dataclass(frozen=True)
class Filler:
    """A filled pause of normal length, espeak-ng reading ``form``; the reference gets ``form``."""

    form: FillerForm = "uh"


@dataclass(frozen=True)
class HeldVowel:
    """A filler sound lengthened to ``duration_s`` seconds (> 0): espeak-ng's ``form``, stretched with sox
    ``tempo -s`` (pitch kept). The reference gets ``form`` once, as a verbatim transcript would write it."""

    duration_s: float
    form: FillerForm = "uh"


@dataclass(frozen=True)
class Silence:
    """``duration_s`` seconds (>= 0) of digital silence (replaces the gap between the neighbouring pieces)."""

    duration_s: float


Piece = Text | Filler | HeldVowel | Silence


@dataclass(frozen=True)
class Script:
    """A scripted answer: its pieces, espeak-ng's speaking rate (words per minute setting), the gap between
    consecutive spoken pieces and the silence before the first and after the last piece (seconds)."""

    name: str
    pieces: tuple[Piece, ...]
    rate_wpm: int = 160
    gap_s: float = 0.12
    pad_s: float = 0.5


@dataclass(frozen=True)
class Span:
    """Where a piece lies in the rendered file: ``start``/``end`` in seconds, ``form`` the filler form ("um",
    "uh", "er"), or ``""`` for a silence."""

    start: float
    end: float
    form: str = ""


@dataclass(frozen=True)
class RenderedSpeech:
    """A rendered script.

    Attributes:
        path: 16 kHz mono 16-bit WAV file.
        reference: the verbatim text a perfect transcript would contain, fillers included (lower case, no
            punctuation; a held vowel counts as one filler word).
        fillers: :class:`Span` of every :class:`Filler`, in time order.
        held_vowels: :class:`Span` of every :class:`HeldVowel`, in time order.
        silences: :class:`Span` of every :class:`Silence` (``form`` ``""``), in time order.
        duration_s: length of the file in seconds.
        script: the script it was rendered from.
    """

    path: Path
    reference: str
    fillers: tuple[Span, ...]
    held_vowels: tuple[Span, ...]
    silences: tuple[Span, ...]
    duration_s: float
    script: Script

    @property
    def hesitations(self) -> tuple[Span, ...]:
        """Fillers and held vowels together, in time order (what a filled-pause detector should find)."""
        return tuple(sorted(self.fillers + self.held_vowels, key=lambda span: span.start))

    @property
    def lexical_reference(self) -> str:
        """:attr:`reference` without the filler words."""
        return " ".join(w for w in self.reference.split() if w not in {"um", "uh", "er"})


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is missing: `make bootstrap` installs Debian's espeak-ng and sox (or apt install it)"
        )
    return path


def _read_wav(path: Path) -> npt.NDArray[np.int16]:
    with wave.open(str(path)) as wav:
        if wav.getframerate() != SAMPLE_RATE or wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise RuntimeError(f"{path}: expected 16 kHz mono 16-bit, sox produced something else")
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)


def _speak(text: str, rate_wpm: int, work: Path, name: str, tempo: float | None = None) -> npt.NDArray[np.int16]:
    """espeak-ng's rendering of ``text``, at 16 kHz, trimmed; time-stretched by ``1 / tempo`` when given."""
    raw, out = work / f"{name}.raw.wav", work / f"{name}.wav"
    subprocess.run(
        [_tool("espeak-ng"), "-v", "en-us", "-s", str(rate_wpm), "-w", str(raw), text], check=True, capture_output=True
    )
    effects = [*_TRIM, "rate", "-v", str(SAMPLE_RATE), "channels", "1"]
    if tempo is not None:
        effects += ["tempo", "-s", f"{tempo:.5f}"]
    subprocess.run([_tool("sox"), "-R", str(raw), "-b", "16", str(out), *effects], check=True, capture_output=True)
    samples = _read_wav(out)
    if samples.size == 0:
        raise RuntimeError(f"espeak-ng rendered nothing audible for {text!r}")
    return samples


def render(script: Script, target: Path) -> RenderedSpeech:
    """Render ``script`` to ``target`` (a 16 kHz mono 16-bit WAV; parent directories are created).

    Times in the result are exact to the sample (1/16000 s) for the rendered pieces; where a piece's sound starts
    inside its trimmed rendering is up to espeak-ng (a voiceless onset below 0.5 % of full scale is trimmed away).

    Raises:
        RuntimeError: espeak-ng or sox is missing, or a piece rendered to nothing.
        ValueError: a duration is negative (or a held vowel's is zero) or the script has no spoken piece.
    """
    for piece in script.pieces:
        if isinstance(piece, Silence) and piece.duration_s < 0:
            raise ValueError(f"{script.name}: negative silence {piece.duration_s}")
        if isinstance(piece, HeldVowel) and piece.duration_s <= 0:
            raise ValueError(f"{script.name}: held vowel of {piece.duration_s} s")
    if not any(isinstance(p, Text | Filler | HeldVowel) for p in script.pieces):
        raise ValueError(f"{script.name}: nothing to say")
    target.parent.mkdir(parents=True, exist_ok=True)
    parts: list[npt.NDArray[np.int16]] = []
    words: list[str] = []
    fillers: list[Span] = []
    held: list[Span] = []
    silences: list[Span] = []
    position = 0  # samples written so far
    gap = int(round(script.gap_s * SAMPLE_RATE))

    def add(samples: npt.NDArray[np.int16]) -> tuple[float, float]:
        nonlocal position
        start = position
        parts.append(samples)
        position += samples.size
        return start / SAMPLE_RATE, position / SAMPLE_RATE

    with tempfile.TemporaryDirectory(prefix="synthetic-speech-") as tmp:
        work = Path(tmp)
        add(np.zeros(int(round(script.pad_s * SAMPLE_RATE)), dtype=np.int16))
        previous_spoken = False
        for index, piece in enumerate(script.pieces):
            if isinstance(piece, Silence):
                start, end = add(np.zeros(int(round(piece.duration_s * SAMPLE_RATE)), dtype=np.int16))
                silences.append(Span(round(start, 4), round(end, 4)))
                previous_spoken = False
                continue
            if previous_spoken:
                add(np.zeros(gap, dtype=np.int16))
            if isinstance(piece, Text):
                add(_speak(piece.text, script.rate_wpm, work, f"p{index}"))
                words.extend(piece.text.split())
            elif isinstance(piece, Filler):
                start, end = add(_speak(piece.form, script.rate_wpm, work, f"p{index}"))
                fillers.append(Span(round(start, 4), round(end, 4), piece.form))
                words.append(piece.form)
            else:
                plain = _speak(piece.form, script.rate_wpm, work, f"p{index}-plain")
                tempo = plain.size / (piece.duration_s * SAMPLE_RATE)
                start, end = add(_speak(piece.form, script.rate_wpm, work, f"p{index}", tempo=tempo))
                held.append(Span(round(start, 4), round(end, 4), piece.form))
                words.append(piece.form)
            previous_spoken = True
        add(np.zeros(int(round(script.pad_s * SAMPLE_RATE)), dtype=np.int16))
    audio = np.concatenate(parts)
    with wave.open(str(target), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(audio.tobytes())
    reference = " ".join(_normalise(w) for w in words if _normalise(w))
    return RenderedSpeech(
        path=target,
        reference=reference,
        fillers=tuple(fillers),
        held_vowels=tuple(held),
        silences=tuple(silences),
        duration_s=audio.size / SAMPLE_RATE,
        script=script,
    )


def _normalise(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum() or c == "'").strip("'")


def clean_script(name: str, sentence: str, rate_wpm: int = 160) -> Script:
    """A script of one sentence read without hesitation."""
    return Script(name, (Text(sentence),), rate_wpm=rate_wpm)


def generate_scripts(
    count: int,
    *,
    seed: int = 18,
    kind: Literal["fillers", "held", "clean"] = "fillers",
    held_s: tuple[float, float] = (0.8, 1.2),
    sentences: Sequence[str] = SENTENCES,
) -> list[Script]:
    """``count`` varied scripts made from ``sentences`` by a ``random.Random(seed)`` generator (deterministic).

    * ``"fillers"``: one sentence (sometimes two) with 1 to 3 fillers ("um", "uh", "er") at word boundaries chosen
      at random (never two in a row; at the start sometimes), some followed or preceded by a 0.3-0.8 s silence;
    * ``"held"``: like ``"fillers"`` but one hesitation is a held "uh" or "um" of ``held_s`` seconds (uniform);
    * ``"clean"``: one sentence, no hesitation.

    Speaking rates vary between 140 and 180 words per minute; consecutive scripts start at different sentences.
    """
    rng = random.Random(f"{seed}-{kind}")
    scripts: list[Script] = []
    order = list(range(len(sentences)))
    rng.shuffle(order)
    for n in range(count):
        first = sentences[order[n % len(order)]]
        words = first.split()
        if kind != "clean" and rng.random() < 0.3:
            words += sentences[order[(n + count) % len(order)]].split()
        rate = rng.choice((140, 150, 160, 170, 180))
        if kind == "clean":
            scripts.append(Script(f"clean-{n}", (Text(" ".join(words)),), rate_wpm=rate))
            continue
        n_fillers = rng.randint(1, 3)
        # Boundaries before word i (0 = before the first word); at least two words between fillers.
        candidates = list(range(0, len(words) - 1))
        chosen: list[int] = []
        for boundary in rng.sample(candidates, len(candidates)):
            if boundary == 0 and rng.random() < 0.6:
                continue
            if all(abs(boundary - c) >= 2 for c in chosen):
                chosen.append(boundary)
            if len(chosen) == n_fillers:
                break
        chosen.sort()
        held_at = rng.choice(chosen) if kind == "held" else None
        pieces: list[Piece] = []
        last = 0
        for boundary in chosen:
            if boundary > last:
                pieces.append(Text(" ".join(words[last:boundary])))
            if rng.random() < 0.25 and pieces:
                pieces.append(Silence(round(rng.uniform(0.3, 0.8), 2)))
            form: FillerForm = rng.choice(("um", "uh", "er")) if boundary != held_at else rng.choice(("uh", "um"))
            if boundary == held_at:
                pieces.append(HeldVowel(round(rng.uniform(*held_s), 2), form))
            else:
                pieces.append(Filler(form))
            if rng.random() < 0.25:
                pieces.append(Silence(round(rng.uniform(0.3, 0.8), 2)))
            last = boundary
        pieces.append(Text(" ".join(words[last:])))
        scripts.append(Script(f"{kind}-{n}", tuple(pieces), rate_wpm=rate))
    return scripts


# --------------------------------------------------------------------------- scoring against the truth


@dataclass(frozen=True)
class FillerScore:
    """How the hesitations found in one clip compare with its truth.

    Attributes:
        found: merged filler events (start, end) in seconds: filled-pause words plus detector spans.
        expected: the clip's true hesitations (:attr:`RenderedSpeech.hesitations`).
        matched: ``(truth, event)`` pairs; an event matches a truth span it overlaps (the truth widened by
            ``tolerance_s`` on each side), each event at most once, nearest start first.
        start_errors_s: ``|event.start - truth.start|`` of every matched pair, seconds.
    """

    found: tuple[tuple[float, float], ...]
    expected: tuple[Span, ...]
    matched: tuple[tuple[Span, tuple[float, float]], ...]
    start_errors_s: tuple[float, ...]

    @property
    def count_error(self) -> int:
        """Found events minus expected hesitations."""
        return len(self.found) - len(self.expected)


def filler_events(words: Sequence[object], spans: Sequence[object] = ()) -> list[tuple[float, float]]:
    """Filler events of a transcript: every word that is a filled pause (``flows.metrics.is_filled_pause`` of its
    tokens) and every hesitation span (``start``/``end`` attributes), merged where they overlap or touch.

    ``words`` are ``schemas.events.Word``-like (``word``, ``start``, ``end``); times in seconds.
    """
    from flows.metrics import is_filled_pause, word_tokens

    intervals = [
        (float(w.start), float(w.end))  # type: ignore[attr-defined]
        for w in words
        if (tokens := word_tokens(w.word)) and all(is_filled_pause(t) for t in tokens)  # type: ignore[attr-defined]
    ]
    intervals += [(float(s.start), float(s.end)) for s in spans]  # type: ignore[attr-defined]
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def score_fillers(
    rendered: RenderedSpeech, found: Sequence[tuple[float, float]], *, tolerance_s: float = 0.2
) -> FillerScore:
    """Match ``found`` filler events (:func:`filler_events`) to ``rendered``'s true hesitations."""
    expected = rendered.hesitations
    free = list(found)
    matched: list[tuple[Span, tuple[float, float]]] = []
    for truth in expected:
        near = [e for e in free if e[0] < truth.end + tolerance_s and e[1] > truth.start - tolerance_s]
        if near:
            best = min(near, key=lambda e: abs(e[0] - truth.start))
            free.remove(best)
            matched.append((truth, best))
    errors = tuple(round(abs(e[0] - t.start), 3) for t, e in matched)
    return FillerScore(tuple(found), expected, tuple(matched), errors)


@dataclass(frozen=True, slots=True)
class WordLoss:
    """How the words of a known text fared in a transcript (jiwer's minimum-edit alignment of the normalised texts,
    :func:`normalise_text`). ``reference_words`` counts the text's words; ``deleted`` those the transcript has no
    word for at all (a decode that stops early or skips a phrase loses words this way); ``substituted`` those it
    has a different word for (the recogniser heard something, but not this word)."""

    reference_words: int
    deleted: int
    substituted: int

    @property
    def lost(self) -> float:
        """Share of the text's words with no word in the transcript (deletions / reference words); 0 for an empty
        text."""
        return self.deleted / self.reference_words if self.reference_words else 0.0

    @property
    def unmatched(self) -> float:
        """Share of the text's words the transcript does not reproduce (substitutions plus deletions over the
        reference words, i.e. WER without insertions); 0 for an empty text."""
        return (self.deleted + self.substituted) / self.reference_words if self.reference_words else 0.0


def word_loss(reference: str, hypothesis: str) -> WordLoss:
    """The :class:`WordLoss` of ``hypothesis`` against the known text ``reference`` (both normalised with
    :func:`normalise_text`; jiwer alignment). An empty hypothesis loses every word. Never raises."""
    import jiwer

    ref, hyp = normalise_text(reference), normalise_text(hypothesis)
    words = len(ref.split())
    if not ref:
        return WordLoss(0, 0, 0)
    if not hyp:
        return WordLoss(words, words, 0)
    out = jiwer.process_words(ref, hyp)
    return WordLoss(words, out.deletions, out.substitutions)


def normalise_text(text: str) -> str:
    """Lower case, punctuation removed, single spaces (apostrophes inside words kept)."""
    return " ".join(w for w in (_normalise(t) for t in text.replace("-", " ").split()) if w)


def repetitions(text: str) -> list[str]:
    """Immediate repetitions in ``text`` (``flows.metrics.find_repetitions`` of its tokens, fillers ignored)."""
    from flows.metrics import find_repetitions, tokenize

    return find_repetitions(tokenize(text))
