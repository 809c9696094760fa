"""Decoding any audio container to 16 kHz mono float32 samples with PyAV (bundled FFmpeg).

The approach follows faster-whisper's ``faster_whisper/audio.py`` (``decode_audio``): demux the first
audio stream, skip packets FFmpeg reports as invalid, drop frame timestamps and resample every frame
with PyAV's ``AudioResampler`` (FFmpeg's ``aresample`` filter graph). Three things differ: the
resampler emits float32 directly (no detour through int16); channels are averaged in numpy (FFmpeg's
float downmix sums stereo at -3 dB per channel without normalising, so peaks reach 1.41); and a stream
whose sample format, layout or rate changes mid-way (chained Ogg, spliced uploads) gets a fresh
resampler instead of an error.

No FFmpeg binary is needed: PyAV's wheels ship the FFmpeg libraries, so WAV, FLAC, MP3, Ogg/Vorbis,
Ogg/Opus, M4A/AAC and WebM/Matroska (Opus or Vorbis) all decode out of the box.

The input is opened by :func:`runtime.audio_container.open_audio`, the same rule ingestion's probe
uses: the container is sniffed from its magic bytes, opened with an explicit demuxer from the
allow-list and no protocol, so a concat script or playlist is refused (:class:`RefusedContainer`)
instead of making FFmpeg open other files. With ``max_duration_s`` (the duration ingestion accepted)
decoding stops once the decoded audio runs past :func:`runtime.audio_container.decode_limit_s` of it
(:class:`AudioTooLong`), so memory per message is bounded by that duration.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import av
import av.audio.frame
import av.audio.resampler
import av.audio.stream
import av.container
import av.error
import numpy as np
import numpy.typing as npt

from runtime.audio_container import UnsupportedContainer, decode_limit_s, ffmpeg_reason, open_audio

__all__ = [
    "TARGET_SAMPLE_RATE",
    "AudioError",
    "UndecodableAudio",
    "EmptyAudio",
    "RefusedContainer",
    "AudioTooLong",
    "DecodedAudio",
    "decode_audio",
]

TARGET_SAMPLE_RATE = 16_000
"""Sample rate (Hz) Whisper's feature extractor and Silero VAD expect."""

AudioSource = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO
"""Raw container bytes, a filesystem path, or a readable binary file object."""


class AudioError(Exception):
    """Base class of the audio errors below; ``reason`` is a short, human-readable explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UndecodableAudio(AudioError):
    """The input is not audio FFmpeg can demux/decode (unknown container, no audio stream, corrupt)."""


class EmptyAudio(AudioError):
    """The input decoded cleanly but contains zero audio samples."""


class RefusedContainer(UndecodableAudio):
    """The container is not on the allow-list of :mod:`runtime.audio_container` (concat script,
    playlist, AIFF, text …) or a demuxer tried to open another resource; nothing was decoded."""


class AudioTooLong(AudioError):
    """The stream holds more audio than the duration it was accepted with (plus the tolerance);
    decoding stopped there. ``limit_s`` is the decode limit in seconds."""

    def __init__(self, reason: str, limit_s: float) -> None:
        super().__init__(reason)
        self.limit_s = limit_s


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    """Decoded, resampled audio and what the container said about the original stream.

    Attributes:
        samples: float32 array of shape ``(n_samples,)``, mono, ``sample_rate`` Hz, nominally in
            ``[-1.0, 1.0]`` (clipped).
        sample_rate: always :data:`TARGET_SAMPLE_RATE` (16 000 Hz).
        duration_s: ``n_samples / sample_rate`` in seconds: the duration of what was decoded, which is
            the timeline word timestamps refer to.
        container: FFmpeg demuxer name, e.g. ``"flac"``, ``"wav"``, ``"ogg"``, ``"matroska,webm"``.
        codec: FFmpeg decoder name of the audio stream, e.g. ``"flac"``, ``"opus"``, ``"aac"``.
        source_sample_rate: sample rate of the original stream in Hz (``None`` if unknown).
        source_channels: channel count of the original stream (``None`` if unknown).
    """

    samples: npt.NDArray[np.float32]
    sample_rate: int
    duration_s: float
    container: str
    codec: str | None
    source_sample_rate: int | None
    source_channels: int | None


def decode_audio(
    source: AudioSource, *, sample_rate: int = TARGET_SAMPLE_RATE, max_duration_s: float | None = None
) -> DecodedAudio:
    """Decode the first audio stream of an allowed container to mono float32 at ``sample_rate`` Hz.

    Args:
        source: container bytes (``bytes``/``bytearray``/``memoryview``), a path, or a readable, seekable
            binary file object. The container is sniffed from its magic bytes and must be on the
            allow-list of :mod:`runtime.audio_container`; the file name extension is not used.
        sample_rate: output rate in Hz (default 16 000, what Whisper and Silero VAD expect).
        max_duration_s: the duration (seconds) the submission was accepted with (``SubmissionReceived``
            ``payload.duration_s``). Decoding stops with :class:`AudioTooLong` as soon as the decoded
            source samples pass :func:`runtime.audio_container.decode_limit_s` of it, so the memory held
            is at most about ``4 * sample_rate * decode_limit_s(max_duration_s)`` bytes of output.
            ``None``: no limit (trusted local files only).

    Returns:
        :class:`DecodedAudio` with ``samples`` of shape ``(n_samples,)``, dtype float32, channels
        averaged to mono (FFmpeg's downmix) and ``duration_s = n_samples / sample_rate``.

    Raises:
        RefusedContainer: the container is not on the allow-list, or is an indirect input.
        UndecodableAudio: FFmpeg cannot read the sniffed container, there is no audio stream, or every
            packet failed to decode.
        AudioTooLong: more audio than ``max_duration_s`` plus the tolerance.
        EmptyAudio: the stream decoded without errors but holds zero samples.
        FileNotFoundError: ``source`` is a path that does not exist.

    Source: faster-whisper ``audio.decode_audio`` (PyAV resampling loop, invalid-frame skipping).
    """
    limit_s = None if max_duration_s is None else decode_limit_s(max_duration_s)
    try:
        with open_audio(source) as (container, allowed):
            return _decode(container, allowed.ffmpeg_name, sample_rate, max_duration_s, limit_s)
    except UnsupportedContainer as exc:
        raise RefusedContainer(exc.reason) from exc
    except av.error.FFmpegError as exc:
        raise UndecodableAudio(f"not a readable audio container ({ffmpeg_reason(exc)})") from exc


def _decode(
    container: av.container.InputContainer,
    container_name: str,
    sample_rate: int,
    max_duration_s: float | None,
    limit_s: float | None,
) -> DecodedAudio:
    if not container.streams.audio:
        raise UndecodableAudio(f"container '{container_name}' has no audio stream")
    stream = container.streams.audio[0]
    codec_ctx = stream.codec_context
    codec = codec_ctx.name if codec_ctx is not None else None
    source_rate = int(stream.sample_rate) if stream.sample_rate else None
    source_channels = int(stream.channels) if stream.channels else None

    pieces: list[npt.NDArray[np.float32]] = []
    invalid_packets = 0
    decoded_frames = 0
    decoded_s = 0.0  # seconds of source audio decoded so far
    resampler: av.audio.resampler.AudioResampler | None = None
    signature: tuple[str, str, int] | None = None
    try:
        for frame in _frames_skipping_invalid(container, stream):
            if isinstance(frame, _InvalidFrame):
                invalid_packets += 1
                continue
            decoded_frames += 1
            if frame.sample_rate:
                decoded_s += frame.samples / frame.sample_rate
            if limit_s is not None and decoded_s > limit_s:
                raise AudioTooLong(
                    f"the {codec} stream in {container_name} holds more than {limit_s:.1f} s of audio, but it was "
                    f"accepted as {max_duration_s:.2f} s; decoding stopped",
                    limit_s,
                )
            frame_signature = (frame.format.name, frame.layout.name, frame.sample_rate)
            if resampler is None or frame_signature != signature:
                if resampler is not None:  # format change mid-stream: flush, start over
                    pieces.extend(_to_arrays(resampler.resample(None)))
                # Keep the channel layout and average channels in numpy: FFmpeg's own float
                # downmix sums channels at -3 dB each (stereo peaks reach 1.41) while its int16
                # downmix normalises; a plain mean is what Whisper's reference loader does.
                resampler = av.audio.resampler.AudioResampler(format="fltp", layout=frame.layout, rate=sample_rate)
                signature = frame_signature
            frame.pts = None  # ignore timestamp gaps/overlaps, as faster-whisper does
            pieces.extend(_to_arrays(resampler.resample(frame)))
        if resampler is not None:
            pieces.extend(_to_arrays(resampler.resample(None)))
    except av.error.FFmpegError as exc:
        raise UndecodableAudio(f"decoding failed ({ffmpeg_reason(exc)})") from exc

    if decoded_frames == 0 and invalid_packets > 0:
        raise UndecodableAudio(f"all {invalid_packets} audio packets were invalid ({codec})")
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    if samples.size == 0:
        raise EmptyAudio(f"the audio stream ({codec} in {container_name}) has no samples")
    np.clip(samples, -1.0, 1.0, out=samples)
    return DecodedAudio(
        samples=samples,
        sample_rate=sample_rate,
        duration_s=samples.shape[0] / sample_rate,
        container=container_name,
        codec=codec,
        source_sample_rate=source_rate,
        source_channels=source_channels,
    )


class _InvalidFrame:
    """Marker yielded for a packet FFmpeg rejected with AVERROR_INVALIDDATA."""


def _frames_skipping_invalid(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> Iterator[av.audio.frame.AudioFrame | _InvalidFrame]:
    """Yield decoded frames; yield an :class:`_InvalidFrame` marker for each corrupt packet."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            yield _InvalidFrame()


def _to_arrays(frames: list[av.audio.frame.AudioFrame]) -> list[npt.NDArray[np.float32]]:
    # Planar float32 frames come back as shape (channels, n_samples); average them to mono.
    arrays = []
    for f in frames:
        planes = np.asarray(f.to_ndarray(), dtype=np.float32)
        arrays.append(planes[0].copy() if planes.shape[0] == 1 else planes.mean(axis=0, dtype=np.float32))
    return arrays
