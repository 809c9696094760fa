"""transcription.hesitation on synthetic signals: a harmonic tone is voiced, white noise and silence are not."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.events import Word
from transcription.hesitation import HesitationSettings, find_hesitations, frame_voicing, held_sounds

SR = 16000


def _tone(seconds: float, f0: float = 140.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))).astype(np.float32)


def _clip(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts).astype(np.float32)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def test_tone_is_voiced_noise_and_silence_are_not() -> None:
    voicing = frame_voicing(_clip(_tone(0.5), _noise(0.5), _silence(0.5)), SR)
    tone = voicing.voiced[(voicing.times > 0.05) & (voicing.times < 0.45)]
    noise = voicing.voiced[(voicing.times > 0.55) & (voicing.times < 0.95)]
    silence = voicing.voiced[voicing.times > 1.05]
    assert tone.all() and not noise.any() and not silence.any()


def test_voiced_gap_found_where_no_word_covers_the_voicing() -> None:
    # tone (word) 0.5-1.0, silence, tone (no word) 1.3-1.9, silence, tone (word) 2.2-2.7
    audio = _clip(_silence(0.5), _tone(0.5), _silence(0.3), _tone(0.6), _silence(0.3), _tone(0.5), _silence(0.5))
    words = [Word(" first", 0.5, 1.0, 0.9), Word(" second", 2.2, 2.7, 0.9)]
    spans = find_hesitations(audio, words, [(0.1, 3.1)], sample_rate=SR)
    assert [s.kind for s in spans] == ["voiced_gap"]
    assert abs(spans[0].start - 1.3) <= 0.05 and abs(spans[0].end - 1.9) <= 0.05, spans
    assert 0.0 < spans[0].confidence <= 1.0


_FIRST, _SECOND = Word(" first", 0.5, 1.0, 0.9), Word(" second", 1.8, 2.3, 0.9)


@pytest.mark.parametrize(
    ("audio", "words", "regions"),
    [
        pytest.param(
            _clip(_silence(0.5), _tone(0.5), _silence(0.3), _tone(0.6), _silence(0.5)),
            [_FIRST, Word(" um,", 1.3, 1.9, 0.6)],
            [(0.1, 2.3)],
            id="words-cover-the-voicing",
        ),
        pytest.param(_clip(_silence(0.5), _tone(0.6), _silence(0.5)), [], [(1.2, 1.6)], id="outside-speech-regions"),
        pytest.param(
            _clip(_silence(0.5), _tone(0.5), _silence(0.8), _tone(0.5), _silence(0.5)),
            [_FIRST, _SECOND],
            [(0.1, 2.7)],
            id="silence-between-words",
        ),
        pytest.param(
            _clip(_silence(0.5), _tone(0.5), _noise(0.8), _tone(0.5), _silence(0.5)),
            [_FIRST, _SECOND],
            [(0.1, 2.7)],
            id="noise-between-words",
        ),
        pytest.param(_clip(_silence(0.5), _tone(0.08), _silence(0.5)), [], [(0.0, 1.08)], id="voicing-too-short"),
    ],
)
def test_no_span(audio: np.ndarray, words: list[Word], regions: list[tuple[float, float]]) -> None:
    """Voicing that a word covers, lies outside VAD's speech, is shorter than the minimum, or is not voicing at
    all (silence, white noise) is not a hesitation."""
    assert find_hesitations(audio, words, regions, sample_rate=SR) == []


def test_held_sound_run_of_short_improbable_repeated_words() -> None:
    words = [
        Word(" is", 0.5, 0.8, 0.95),
        Word(" the", 0.9, 1.0, 0.2),
        Word(" the", 1.0, 1.1, 0.2),
        Word(" the,", 1.1, 1.2, 0.2),
        Word(" people", 1.3, 1.7, 0.9),
    ]
    spans = held_sounds(words)
    assert len(spans) == 1 and spans[0].kind == "held_sound"
    assert (spans[0].start, spans[0].end) == (0.9, 1.2)
    assert spans[0].confidence == pytest.approx(0.8)


def test_no_held_sound_for_normal_length_or_probable_words() -> None:
    normal = [Word(" the", 0.9, 1.2, 0.2), Word(" the", 1.2, 1.5, 0.2), Word(" the", 1.5, 1.8, 0.2)]
    probable = [Word(" the", 0.9, 1.0, 0.9), Word(" the", 1.0, 1.1, 0.9)]
    different = [Word(" a", 0.9, 1.0, 0.2), Word(" the", 1.0, 1.1, 0.2)]
    assert held_sounds(normal) == held_sounds(probable) == held_sounds(different) == []


def test_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COACH_HESITATION_MIN_VOICED_GAP_S", "0.3")
    assert HesitationSettings().min_voiced_gap_s == 0.3
    with pytest.raises(ValueError):
        HesitationSettings(min_pitch_hz=300, max_pitch_hz=200)


def test_voiced_gap_next_to_a_misplaced_filler_word_is_that_filler() -> None:
    audio = _clip(_silence(0.5), _tone(0.5), _silence(0.3), _tone(0.6), _silence(0.5))
    # Whisper put "um" (zero length) just after the sound it heard at 1.3-1.9.
    words = [Word(" first", 0.5, 1.0, 0.9), Word(" um,", 2.1, 2.1, 0.2)]
    assert find_hesitations(audio, words, [(0.1, 2.3)], sample_rate=SR) == []
    far = [Word(" first", 0.5, 1.0, 0.9), Word(" um,", 2.3, 2.3, 0.2)]
    assert [s.kind for s in find_hesitations(audio, far, [(0.1, 2.4)], sample_rate=SR)] == ["voiced_gap"]
