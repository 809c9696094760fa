"""Audio validation before any full decode: container allow-list, header duration, truncation.

Opens the file with PyAV (FFmpeg's demuxers), checks the container is one we accept, reads the
duration from the header, then seeks to the last seconds and demuxes/decodes only those packets to
detect truncated files (the header promises more than the file holds). The whole file is never
decoded here; the transcription worker does that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from ingestion.rejection import Rejected

__all__ = ["ALLOWED_CONTAINERS", "AudioProbe", "probe_audio"]

ALLOWED_CONTAINERS: dict[str, str] = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",  # Opus, Vorbis (or FLAC) in Ogg
    "mov,mp4,m4a,3gp,3g2,mj2": "audio/mp4",  # M4A / AAC
    "aac": "audio/aac",  # ADTS
    "matroska,webm": "audio/webm",
}
"""FFmpeg demuxer name -> MIME type of the containers we accept."""


@dataclass(frozen=True)
class AudioProbe:
    """What the header says: container, codec, duration (s), sample rate (Hz), channels."""

    container: str
    content_type: str
    codec: str
    duration_s: float
    sample_rate: int | None
    channels: int | None


def probe_audio(path: Path, *, min_duration_s: float, max_duration_s: float) -> AudioProbe:
    """Validate an uploaded file without decoding it whole.

    Raises :class:`Rejected`: 422 ``empty`` (zero bytes), 415 ``not_audio`` (FFmpeg finds no known
    format), 415 ``unsupported_container`` (not in :data:`ALLOWED_CONTAINERS`), 415 ``no_audio_stream``,
    422 ``unknown_duration``, 422 ``too_short`` / ``too_long`` (outside the limits, seconds),
    422 ``truncated`` (the file ends well before the duration its header declares), 422 ``corrupt``.
    """
    if path.stat().st_size == 0:
        raise Rejected(422, "empty", "the audio part is empty (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise Rejected(415, "not_audio", f"not a recognised audio file: {exc}") from exc
    with container:
        fmt = container.format.name
        if fmt not in ALLOWED_CONTAINERS:
            allowed = "WAV, FLAC, MP3, OGG/Opus, M4A/AAC, WebM"
            raise Rejected(415, "unsupported_container", f"container '{fmt}' is not accepted (allowed: {allowed})")
        if not container.streams.audio:
            raise Rejected(415, "no_audio_stream", f"the {fmt} file has no audio stream")
        stream = container.streams.audio[0]
        duration = _header_duration(container, stream)
        if duration is None or duration <= 0:
            raise Rejected(422, "unknown_duration", "the header declares no duration")
        if duration < min_duration_s:
            raise Rejected(422, "too_short", f"duration {duration:.2f} s is below the {min_duration_s:g} s minimum")
        if duration > max_duration_s:
            raise Rejected(422, "too_long", f"duration {duration:.1f} s exceeds the {max_duration_s:g} s limit")
        if fmt == "wav":
            _check_wav_data_chunk(path)
        _check_tail(container, stream, duration)
        return AudioProbe(
            container=fmt,
            content_type=ALLOWED_CONTAINERS[fmt],
            codec=stream.codec_context.name,
            duration_s=duration,
            sample_rate=stream.codec_context.sample_rate or None,
            channels=stream.codec_context.channels or None,
        )


def _check_wav_data_chunk(path: Path) -> None:
    """RIFF/WAVE: the ``data`` chunk's declared size must fit in the file.

    FFmpeg clamps a WAV's duration to the bytes present, so truncation is only visible in the
    header (Microsoft RIFF specification; chunk = 4-byte id, 4-byte little-endian size, payload).
    """
    size = path.stat().st_size
    byte_rate = 0
    with path.open("rb") as fh:
        if fh.read(12)[8:12] != b"WAVE":
            return  # RF64/other variants: rely on the tail check
        while True:
            header = fh.read(8)
            if len(header) < 8:
                return
            chunk_id, chunk_size = header[:4], int.from_bytes(header[4:], "little")
            if chunk_id == b"fmt ":
                fmt = fh.read(chunk_size + (chunk_size & 1))
                byte_rate = int.from_bytes(fmt[8:12], "little")
                continue
            if chunk_id == b"data":
                present = size - fh.tell()
                if chunk_size != 0xFFFFFFFF and present < chunk_size and byte_rate:
                    raise Rejected(
                        422,
                        "truncated",
                        f"the file is truncated: audio stops at {present / byte_rate:.2f} s of the "
                        f"{chunk_size / byte_rate:.2f} s its header declares",
                    )
                return
            fh.seek(chunk_size + (chunk_size & 1), 1)


def _header_duration(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _check_tail(container: av.container.InputContainer, stream: av.AudioStream, duration: float) -> None:
    """Seek to the last ~2 s and decode what is there; the last packet must reach the declared end."""
    tolerance = max(0.5, 0.02 * duration)
    last_end: float | None = None
    decoded = 0
    decode_error: str | None = None
    try:
        container.seek(int(max(0.0, duration - 2.0) / stream.time_base), stream=stream, backward=True)
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            last_end = float((packet.pts + (packet.duration or 0)) * stream.time_base)
            try:
                decoded += len(packet.decode())
            except av.FFmpegError as exc:
                decode_error = str(exc)
    except av.FFmpegError as exc:
        decode_error = decode_error or str(exc)
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    if last_end is None or last_end - start < duration - tolerance:
        reached = 0.0 if last_end is None else max(0.0, last_end - start)
        raise Rejected(
            422,
            "truncated",
            f"the file is truncated: audio stops at {reached:.2f} s of the {duration:.2f} s its header declares",
        )
    if decoded == 0 or decode_error:
        raise Rejected(422, "corrupt", f"the end of the file cannot be decoded: {decode_error or 'no frame'}")
