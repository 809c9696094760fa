"""transcription.hesitation on synthetic signals: a harmonic tone is voiced, white noise and silence are not."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.events import Word
from transcription.hesitation import (
    HesitationSettings,
    frame_voicing,
    hear,
    held_sounds,
    retime_filled_pauses,
    steady_stretches,
)

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
    # tone (word) 0.5-0.8, silence, tone (no word) 1.1-1.7, silence, tone (word) 2.0-2.3
    audio = _clip(_silence(0.5), _tone(0.3), _silence(0.3), _tone(0.6), _silence(0.3), _tone(0.3), _silence(0.5))
    words = [Word(" first", 0.5, 0.8, 0.9), Word(" next", 2.0, 2.3, 0.9)]
    spans = hear(audio, words, [(0.1, 2.7)], sample_rate=SR).hesitations
    assert [s.kind for s in spans] == ["voiced_gap"]
    assert abs(spans[0].start - 1.1) <= 0.05 and abs(spans[0].end - 1.7) <= 0.05, spans
    assert 0.0 < spans[0].confidence <= 1.0


_FIRST, _SECOND = Word(" first", 0.5, 0.8, 0.9), Word(" next", 1.6, 1.9, 0.9)


@pytest.mark.parametrize(
    ("audio", "words", "regions"),
    [
        pytest.param(
            _clip(_silence(0.5), _tone(0.3), _silence(0.3), _tone(0.6), _silence(0.5)),
            [_FIRST, Word(" um,", 1.1, 1.7, 0.6)],
            [(0.1, 2.1)],
            id="words-cover-the-voicing",
        ),
        pytest.param(_clip(_silence(0.5), _tone(0.6), _silence(0.5)), [], [(1.2, 1.6)], id="outside-speech-regions"),
        pytest.param(
            _clip(_silence(0.5), _tone(0.3), _silence(0.8), _tone(0.3), _silence(0.5)),
            [_FIRST, _SECOND],
            [(0.1, 2.3)],
            id="silence-between-words",
        ),
        pytest.param(
            _clip(_silence(0.5), _tone(0.3), _noise(0.8), _tone(0.3), _silence(0.5)),
            [_FIRST, _SECOND],
            [(0.1, 2.3)],
            id="noise-between-words",
        ),
        pytest.param(_clip(_silence(0.5), _tone(0.08), _silence(0.5)), [], [(0.0, 1.08)], id="voicing-too-short"),
    ],
)
def test_no_span(audio: np.ndarray, words: list[Word], regions: list[tuple[float, float]]) -> None:
    """Voicing that a word covers, lies outside VAD's speech, is shorter than the minimum, or is not voicing at
    all (silence, white noise) is not a hesitation."""
    assert hear(audio, words, regions, sample_rate=SR).hesitations == []


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
    audio = _clip(_silence(0.5), _tone(0.3), _silence(0.3), _tone(0.6), _silence(0.5))
    # Whisper put "um" (zero length) just after the sound it heard at 1.1-1.7: it is moved onto the sound.
    words = [Word(" first", 0.5, 0.8, 0.9), Word(" um,", 1.9, 1.9, 0.2)]
    assert hear(audio, words, [(0.1, 2.2)], sample_rate=SR).hesitations == []
    # Too far away to be that sound (centre to centre beyond filler_search_s, reach beyond filler_reach_s).
    far = [Word(" first", 0.5, 0.8, 0.9), Word(" um,", 2.8, 2.8, 0.2)]
    audio = _clip(audio, _silence(1.0))
    assert [s.kind for s in hear(audio, far, [(0.1, 2.9)], sample_rate=SR).hesitations] == ["voiced_gap"]


def test_a_misplaced_filler_is_moved_onto_its_sound_and_its_neighbours_trimmed() -> None:
    # first 0.5-0.8, "um" 1.1-1.5, next 1.8-2.1; Whisper: "first" runs over the filler, "um" half a second late.
    audio = _clip(_silence(0.5), _tone(0.3), _silence(0.3), _tone(0.4, f0=110.0), _silence(0.3), _tone(0.3))
    words = [Word(" first", 0.5, 1.45, 0.9), Word(" um,", 1.45, 1.75, 0.3), Word(" next", 1.8, 2.1, 0.9)]
    out = retime_filled_pauses(frame_voicing(_clip(audio, _silence(0.5)), SR), words)
    first, um, after = out
    assert [w.word for w in out] == [w.word for w in words]
    assert abs(um.start - 1.1) <= 0.05 and abs(um.end - 1.5) <= 0.05, out
    assert first.start == 0.5 and first.end == um.start and after.start >= um.end, out
    assert all(a.end <= b.start for a, b in zip(out, out[1:], strict=False)), out


def test_a_filler_with_no_steady_sound_near_it_keeps_its_timing() -> None:
    audio = _clip(_silence(0.5), _noise(1.0), _silence(0.5))
    words = [Word(" so", 0.5, 0.7, 0.9), Word(" uh,", 0.8, 1.0, 0.3), Word(" yes", 1.1, 1.4, 0.9)]
    voicing = frame_voicing(audio, SR)
    assert steady_stretches(voicing) == []
    assert retime_filled_pauses(voicing, words) == words
    assert retime_filled_pauses(voicing, words, HesitationSettings(filler_search_s=0.0)) == words


def test_a_short_word_inside_an_isolated_steady_sound_is_that_sound() -> None:
    """An isolated steady sound is a filled pause unless a recognised one-syllable word lies in it ("a"); a long
    word that straddles it is Whisper's stretch over a filler it left out."""
    audio = _clip(_silence(0.5), _tone(0.3), _silence(0.3), _tone(0.3), _silence(0.3), _tone(0.3), _silence(0.5))
    regions = [(0.1, 2.3)]
    said = [Word(" first", 0.5, 0.8, 0.9), Word(" a", 1.1, 1.4, 0.8), Word(" next", 1.7, 2.0, 0.9)]
    assert hear(audio, said, regions, sample_rate=SR).hesitations == []
    stretched = [Word(" first", 0.5, 0.8, 0.9), Word(" tomorrow", 1.0, 1.6, 0.8), Word(" next", 1.7, 2.0, 0.9)]
    spans = hear(audio, stretched, regions, sample_rate=SR).hesitations
    assert [s.kind for s in spans] == ["voiced_gap"] and abs(spans[0].start - 1.1) <= 0.05, spans
    assert spans[0].confidence >= 0.5


def test_hear_gives_the_retimed_words_and_the_spans() -> None:
    audio = _clip(_silence(0.5), _tone(0.3), _silence(0.3), _tone(0.6), _silence(0.5))
    words = [Word(" first", 0.5, 0.8, 0.9), Word(" um,", 1.9, 1.9, 0.2)]
    heard = hear(audio, words, [(0.1, 2.2)], sample_rate=SR)
    assert heard.hesitations == [] and abs(heard.words[1].start - 1.1) <= 0.05, heard
