"""Synthetic ``TranscriptCreated`` events for the dataflow's tests and benchmarks (deterministic per seed).

Not metric ground truth (that comes from real speech, see the transcription tests): the words are drawn from a
small vocabulary with filled pauses and plausible timings, so that every metric has a value and the windows
have something to aggregate.
"""

from __future__ import annotations

import random
from datetime import datetime
from uuid import UUID

from schemas.envelope import new_event_id
from schemas.events import StageTimings, TranscriptCreated, TranscriptCreatedPayload, TranscriptWords, Word

__all__ = ["synthetic_transcript"]

_VOCABULARY = (
    "i think that the most important thing about learning a language is practice because you need to use it "
    "every day with people who speak it and also read books watch films listen to music write short texts talk "
    "about your plans for the weekend describe a place you visited last summer explain why you like your job "
    "compare two cities tell a story about your family friends travel food weather sport school work home"
).split()
_FILLERS = ("um", "uh", "er")


def synthetic_transcript(
    user_id: str,
    occurred_at: datetime,
    *,
    words: int = 120,
    seed: int = 0,
    submission_id: UUID | None = None,
    asr_model: str = "faster-whisper/tiny.en",
) -> TranscriptCreated:
    """A valid ``TranscriptCreated`` of ``words`` words spoken at ``occurred_at`` by ``user_id``.

    About 5 % of the words are filled pauses, a few are repeated, and gaps between words vary from 50 ms to
    900 ms (some are silent pauses). The same arguments give the same words and timings.
    """
    rng = random.Random(f"{user_id}|{occurred_at.isoformat()}|{seed}")
    t = round(rng.uniform(0.2, 0.8), 2)
    timed: list[Word] = []
    previous = ""
    for index in range(words):
        roll = rng.random()
        if roll < 0.05:
            text = rng.choice(_FILLERS)
        elif roll < 0.07 and previous:
            text = previous
        else:
            text = rng.choice(_VOCABULARY)
        word = f" {text.capitalize() if index == 0 else text}{'.' if rng.random() < 0.08 else ''}"
        duration = round(rng.uniform(0.12, 0.45), 2)
        timed.append(Word(word, t, round(t + duration, 2), 0.9))
        t = round(t + duration + rng.choice((0.05, 0.08, 0.12, 0.2, 0.35, 0.6, 0.9)), 2)
        previous = text
    correlation = new_event_id()
    payload = TranscriptCreatedPayload(
        text="".join(w.word for w in timed).strip(),
        language="en",
        language_probability=0.99,
        duration_s=round(t + 0.3, 2),
        segments=[],
        words=TranscriptWords.of(timed),
        asr_model=asr_model,
        compute_type="int8",
        device="cpu",
        timings=StageTimings(
            queue_wait_ms=10.0, fetch_ms=1.0, decode_ms=5.0, vad_ms=3.0, inference_ms=200.0, batch_size=4
        ),
    )
    return TranscriptCreated(
        occurred_at=occurred_at,
        user_id=user_id,
        submission_id=submission_id or UUID(int=rng.getrandbits(128), version=4),
        producer="synthetic",
        correlation_id=correlation,
        causation_id=correlation,
        payload=payload,
    )
