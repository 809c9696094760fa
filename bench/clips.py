"""The clip set of the transcription benchmark: real speech plus espeak-ng speech at known texts.

* Real: ``tests/fixtures/audio/jfk.flac`` (11 s) and ``tests/fixtures/audio/hotwords.mp3`` (4 s), both from the
  faster-whisper repository (see ``tests/fixtures/audio/ATTRIBUTION.md``).
* Synthesized: ``espeak-ng -v en-us -s <words per minute>`` reading consecutive sentences of :data:`SENTENCES`
  (written for this benchmark, no digits so that WER needs no number normalisation) until the recording reaches a
  target length; targets run from 3 to 60 s and speaking rates from 130 to 190 words per minute.

:func:`build_clips` writes the files and returns :class:`Clip` records with the reference text and the decoded
duration in seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import av

__all__ = ["Clip", "SENTENCES", "SYNTH_PLAN", "build_clips", "REAL_CLIPS"]

REPO_ROOT = Path(__file__).resolve().parent.parent
AUDIO_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "audio"

REAL_CLIPS: tuple[tuple[str, str], ...] = (
    (
        "jfk.flac",
        "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
    ),
    ("hotwords.mp3", "Then you go into your ComfyUI folder again in the ComfyUI."),
)
"""(file under ``tests/fixtures/audio``, reference text)."""

SENTENCES: tuple[str, ...] = (
    "Good morning.",
    "I would like to talk about my favorite place in the city.",
    "It is a small park near the river where people walk their dogs in the evening.",
    "When I was younger, I used to go there with my grandmother every weekend.",
    "She taught me the names of the trees and the birds that lived around the pond.",
    "Now I go there alone when I need some time to think.",
    "Learning a new language takes patience and practice every single day.",
    "At first I was afraid of making mistakes when I spoke with other people.",
    "My teacher told me that mistakes are the fastest way to learn something new.",
    "So I started to record myself and listen to my own voice.",
    "It was strange at the beginning, but it helped me notice my pauses.",
    "Today I feel much more confident when I answer questions in class.",
    "In my opinion, travelling is one of the best ways to understand other cultures.",
    "You meet people who think differently and you learn to be more open.",
    "Last summer I visited a village in the mountains with some friends.",
    "We cooked dinner together and talked until late at night under the stars.",
    "Of course, travelling can be expensive and it is not possible for everyone.",
    "That is why I think schools should organize more exchange programs for students.",
    "Technology has changed the way we work and the way we spend our free time.",
    "Many people now work from home and never meet their colleagues in person.",
    "I believe this has some advantages, but it can also make people feel lonely.",
    "Thank you for listening.",
)
"""Known texts read by espeak-ng; a clip reads consecutive sentences (wrapping around) from its start index."""

SYNTH_PLAN: tuple[tuple[float, int, int], ...] = (
    (3, 160, 21),
    (8, 130, 1),
    (20, 190, 2),
    (45, 160, 7),
    (12, 160, 12),
    (30, 130, 14),
    (5, 190, 11),
    (60, 160, 3),
    (15, 190, 18),
    (25, 160, 9),
    (40, 190, 0),
    (10, 130, 5),
    (35, 160, 16),
    (6, 130, 21),
    (50, 130, 10),
    (18, 160, 19),
)
"""(target seconds, words per minute, first sentence) of each synthesized clip, in the order they are used."""


@dataclass(frozen=True)
class Clip:
    """One benchmark recording.

    Attributes:
        name: short label, e.g. ``"jfk"`` or ``"synth-45s-160wpm"``.
        path: the audio file.
        text: reference transcript.
        duration_s: decoded duration in seconds.
        source: ``"real"`` or ``"espeak-ng"``.
    """

    name: str
    path: Path
    text: str
    duration_s: float
    source: str


def decoded_duration_s(path: Path) -> float:
    """Duration of ``path`` in seconds, counted from decoded samples (PyAV)."""
    samples, rate = 0, 0
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            samples += frame.samples
            rate = frame.sample_rate
    return samples / rate if rate else 0.0


def _espeak(text: str, wpm: int, path: Path) -> float:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(wpm), "-w", str(path), text], check=True)
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def synthesize(target_s: float, wpm: int, first: int, path: Path) -> tuple[str, float]:
    """Read consecutive sentences from ``first`` at ``wpm`` until the file is at least ``target_s - 0.5`` s long.

    Returns ``(reference text, duration in seconds)``. Raises ``FileNotFoundError`` without espeak-ng.
    """
    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError("espeak-ng is not installed (bootstrap installs it)")
    words: list[str] = []
    index = first
    duration = 0.0
    while duration < target_s - 0.5 and len(words) < len(SENTENCES):
        words.append(SENTENCES[index % len(SENTENCES)])
        index += 1
        duration = _espeak(" ".join(words), wpm, path)
    return " ".join(words), duration


def build_clips(count: int, directory: Path) -> list[Clip]:
    """The first ``count`` clips: the real ones, then :data:`SYNTH_PLAN` in order (cycled with other rates if more
    are asked for). Files are written to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    clips: list[Clip] = []
    for file_name, text in REAL_CLIPS[:count]:
        path = AUDIO_FIXTURES / file_name
        clips.append(Clip(Path(file_name).stem, path, text, decoded_duration_s(path), "real"))
    n = 0
    while len(clips) < count:
        target, wpm, first = SYNTH_PLAN[n % len(SYNTH_PLAN)]
        wpm += 10 * (n // len(SYNTH_PLAN))  # later rounds: same texts, a little faster
        name = f"synth-{target:g}s-{wpm}wpm-{n}"
        path = directory / f"{name}.wav"
        text, _ = synthesize(target, wpm, first, path)
        clips.append(Clip(name, path, text, decoded_duration_s(path), "espeak-ng"))
        n += 1
    return clips
