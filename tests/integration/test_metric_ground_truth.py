"""Metric validity on speech with known ground truth (issue 5): espeak-ng speech at three rates, and
silences of known length inserted between sentences, transcribed by the real engine (faster-whisper).

The truth comes from the audio itself, not from espeak's nominal rate: the text's word count over the speech
span (leading and trailing silence trimmed with sox), and the exact lengths of the silences spliced in.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from flows.metrics import compute_metrics, syllable_count, tokenize
from transcription.audio import decode_audio
from transcription.engine import AudioItem, BatchTranscriber, TranscriptionResult

pytestmark = pytest.mark.integration

TEXT = (
    "Every morning I walk to the station with my neighbour and we talk about the weather, "
    "the news and our plans for the weekend."
)
SENTENCES = ("Every morning I walk to the station.", "We talk about the weather.", "Then we plan the weekend.")
SILENCES_S = (0.8, 1.5)


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make bootstrap` installs Debian's espeak-ng and sox"
    return path


def _speak(text: str, rate: int, target: Path) -> Path:
    """espeak-ng at ``rate``, then leading/trailing silence trimmed with sox: ``target`` is the speech span."""
    raw = target.with_suffix(".raw.wav")
    subprocess.run([_tool("espeak-ng"), "-v", "en-us", "-s", str(rate), "-w", str(raw), text], check=True)
    trim = ["silence", "1", "0.05", "0.5%", "reverse", "silence", "1", "0.05", "0.5%", "reverse"]
    subprocess.run([_tool("sox"), str(raw), str(target), *trim], check=True)
    return target


def _padded(clip: Path, seconds: float = 0.5) -> Path:
    """``clip`` with ``seconds`` of silence on both sides, as a recording has (the span stays the truth)."""
    target = clip.with_suffix(".padded.wav")
    subprocess.run([_tool("sox"), str(clip), str(target), "pad", str(seconds), str(seconds)], check=True)
    return target


def _duration_s(path: Path) -> float:
    return float(subprocess.check_output([_tool("soxi"), "-D", str(path)]).decode())


@pytest.fixture(scope="module")
def engine() -> BatchTranscriber:
    return BatchTranscriber()


def _transcribe(engine: BatchTranscriber, path: Path) -> TranscriptionResult:
    result = engine.transcribe(AudioItem(path.name, decode_audio(path).samples))
    assert isinstance(result, TranscriptionResult), result
    return result


def test_speech_rate_within_5_percent_of_the_audio_truth_and_ordered(engine: BatchTranscriber, tmp_path: Path) -> None:
    """Words per minute and syllables per second (the text's syllables, CMU Pronouncing Dictionary counts via
    ``flows.metrics.syllable_count``) over the speech span, each within 5 % of the truth (issue 18, item 6)."""
    text_syllables = sum(syllable_count(token) for token in tokenize(TEXT))
    measured = []
    for rate in (120, 160, 200):
        clip = _speak(TEXT, rate, tmp_path / f"rate{rate}.wav")
        span_s = _duration_s(clip)
        truth_wpm, truth_sps = len(TEXT.split()) / span_s * 60, text_syllables / span_s
        metrics = compute_metrics(_transcribe(engine, _padded(clip)).words)
        assert metrics.word_count == len(TEXT.split())
        assert metrics.speech_rate_wpm is not None and metrics.speech_rate_sps is not None
        error = abs(metrics.speech_rate_wpm - truth_wpm) / truth_wpm
        assert error <= 0.05, f"-s {rate}: measured {metrics.speech_rate_wpm:.1f} vs truth {truth_wpm:.1f} wpm"
        error = abs(metrics.speech_rate_sps - truth_sps) / truth_sps
        assert error <= 0.05, f"-s {rate}: measured {metrics.speech_rate_sps:.2f} vs truth {truth_sps:.2f} syllables/s"
        measured.append(metrics.speech_rate_wpm)
    assert measured[0] < measured[1] < measured[2], measured


def test_inserted_silences_are_counted_with_their_lengths(engine: BatchTranscriber, tmp_path: Path) -> None:
    parts: list[str] = []
    for i, sentence in enumerate(SENTENCES):
        parts.append(str(_speak(sentence, 160, tmp_path / f"s{i}.wav")))
        if i < len(SILENCES_S):
            gap = tmp_path / f"gap{i}.wav"
            subprocess.run(
                [_tool("sox"), "-n", "-r", "22050", "-c", "1", "-b", "16", str(gap), "trim", "0", str(SILENCES_S[i])],
                check=True,
            )
            parts.append(str(gap))
    joined = tmp_path / "paused.wav"
    subprocess.run([_tool("sox"), *parts, str(joined)], check=True)
    metrics = compute_metrics(_transcribe(engine, _padded(joined)).words)
    assert metrics.silent_pause_count == len(SILENCES_S), metrics.silent_pauses_s
    for measured, truth in zip(metrics.silent_pauses_s, SILENCES_S, strict=True):
        assert abs(measured - truth) <= 0.100, f"pause {measured:.3f} s vs inserted {truth} s"
