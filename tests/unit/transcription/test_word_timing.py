"""Energy-based refinement of word boundaries at pauses (transcription.word_timing)."""

import numpy as np
import pytest

from schemas.events import Word
from transcription.word_timing import frame_energy_db, snap_to_silences

pytestmark = pytest.mark.unit
SR = 16000


def W(text: str, start: float, end: float) -> Word:
    return Word(text, start, end, 0.9)


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def gap(seconds: float, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (noise * rng.standard_normal(int(seconds * SR))).astype(np.float32)


@pytest.mark.parametrize("noise", [0.0, 0.003])  # digital silence, and a room at about -50 dB
def test_boundaries_move_onto_the_pause(noise: float) -> None:
    # speech 0.5-1.5 s, pause 1.5-2.3 s, speech 2.3-3.0 s
    audio = np.concatenate([gap(0.5, noise), tone(1.0), gap(0.8, noise), tone(0.7), gap(0.5, noise)])
    whisper = [W("a", 0.30, 1.00), W("b", 1.00, 1.70), W("c", 2.10, 2.60), W("d", 2.60, 3.10)]
    out = snap_to_silences(whisper, audio, SR)
    assert [w.word for w in out] == ["a", "b", "c", "d"]
    assert [w.probability for w in out] == [0.9] * 4
    assert out[0].start == pytest.approx(0.5, abs=0.011)  # utterance onset
    assert out[1].end == pytest.approx(1.5, abs=0.011)
    assert out[2].start == pytest.approx(2.3, abs=0.011)
    assert out[3].end == pytest.approx(3.0, abs=0.011)  # utterance offset
    assert all(w.start <= w.end for w in out)


def test_word_placed_inside_the_silence_moves_to_its_end() -> None:
    audio = np.concatenate([tone(1.0), gap(1.0), tone(1.0)])
    whisper = [W("a", 0.0, 0.9), W("b", 1.2, 1.5), W("c", 1.5, 3.0)]
    out = snap_to_silences(whisper, audio, SR)
    assert out[0].end == pytest.approx(1.0, abs=0.011)
    assert out[1].start == pytest.approx(2.0, abs=0.011)
    assert out[2].start == pytest.approx(2.0, abs=0.011)


def test_short_gaps_and_continuous_speech_are_left_alone() -> None:
    audio = np.concatenate([tone(1.0), gap(0.08), tone(1.0)])  # 80 ms: below min_silence_s
    whisper = [W("a", 0.0, 0.95), W("b", 1.1, 2.08)]
    assert snap_to_silences(whisper, audio, SR)[0].end == 0.95


def test_energy_frames() -> None:
    energy = frame_energy_db(np.concatenate([tone(0.1), gap(0.1)]), SR, 0.01)
    assert energy.shape == (20,)
    assert energy[:10].min() > -20 and energy[10:].max() == pytest.approx(-120.0)
    assert snap_to_silences([], np.zeros(10, dtype=np.float32)) == []
