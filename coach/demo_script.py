"""The learners and answers of ``coach demo``: synthesized speech (espeak-ng) of known pace, pauses and fillers.

Each learner has a speaking style (espeak words-per-minute setting, pauses inserted with SSML
``<break>``), and answers on several days spread over the last weeks (``recorded_at``).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DemoLearner", "DemoAnswer", "LEARNERS", "synthesize"]


@dataclass(frozen=True)
class DemoAnswer:
    """One recorded answer: text (SSML allowed), days before today, espeak rate (words per minute setting)."""

    prompt_id: str
    ssml: str
    days_ago: int
    rate: int


@dataclass(frozen=True)
class DemoLearner:
    """A learner profile and the answers they record."""

    user_id: str
    display_name: str
    timezone: str
    target_level: str
    cohort: str
    answers: tuple[DemoAnswer, ...]
    bundled_clip: bool = False


_P = '<break time="{ms}ms"/>'

LEARNERS: tuple[DemoLearner, ...] = (
    DemoLearner(
        "ana", "Ana", "Europe/Madrid", "B2", "spring-cohort",
        (
            DemoAnswer("weekend", "Last weekend I visited my grandparents in the countryside and we cooked "
                       "a huge lunch together with the whole family.", 20, 210),
            DemoAnswer("city", "My city is famous for its old cathedral, its narrow streets and the markets "
                       "that open every Saturday morning near the river.", 13, 200),
            DemoAnswer("work", "At work I coordinate a small team of designers and I spend most of my day in "
                       "meetings, reviewing drafts and answering questions.", 6, 185),
            DemoAnswer("goals", "This year I want to speak more calmly in meetings, so I practise reading aloud "
                       "every evening and I record myself to listen back.", 1, 170),
        ),
    ),
    DemoLearner(
        "ben", "Ben", "America/New_York", "B1", "spring-cohort",
        (
            DemoAnswer("weekend", f"Last weekend {_P.format(ms=1200)} I stayed at home {_P.format(ms=900)} and I "
                       f"read a book {_P.format(ms=1100)} about the history of trains.", 19, 110),
            DemoAnswer("city", f"My city is quite small {_P.format(ms=1000)} but it has a beautiful park "
                       f"{_P.format(ms=800)} where people walk their dogs.", 12, 120),
            DemoAnswer("work", f"I work in a hospital {_P.format(ms=700)} and I help the nurses "
                       f"{_P.format(ms=600)} with the schedules of the patients.", 5, 135),
            DemoAnswer("goals", f"My goal is to talk {_P.format(ms=400)} without long pauses and to find "
                       "the right words faster when I speak with colleagues.", 0, 150),
        ),
        bundled_clip=True,
    ),
    DemoLearner(
        "chen", "Chen", "Asia/Tokyo", "A2", "autumn-cohort",
        (
            DemoAnswer("weekend", "Um, last weekend I, I went to the the cinema with my friends and, uh, we "
                       "watched a funny movie.", 18, 150),
            DemoAnswer("city", "Uh, my city is big and, um, it has many many shops and, uh, restaurants.", 11, 150),
            DemoAnswer("work", "I am a student and, um, I study engineering at the university near my house.", 4, 155),
        ),
    ),
)  # fmt: skip


def synthesize(answer: DemoAnswer, target: Path) -> Path:
    """Render ``answer`` to a 16-bit WAV with espeak-ng (voice en-us). Raises RuntimeError without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is missing: run `make bootstrap` (installs Debian's espeak-ng) or apt install it")
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-m", "-s", str(answer.rate), "-w", str(target), f"<speak>{answer.ssml}</speak>"],
        check=True,
        capture_output=True,
    )
    return target
