"""Audio validation before any full decode: container allow-list, real duration, truncation.

1. The container is sniffed from its magic bytes and opened with an explicit demuxer and no protocol
   (:func:`runtime.audio_container.open_audio`, the rule the transcription worker uses too), so a
   concat script, playlist or other indirect input is refused (415) before FFmpeg parses it.
2. The header's duration is checked against the limits.
3. The **real** duration is estimated from the packets, without decoding them (a few are decoded to
   learn a fixed-frame codec's samples per packet): Opus from each packet's TOC byte (RFC 6716 §3.1),
   FLAC from each frame header's block size (RFC 9639 §9.1), PCM from packet bytes, AAC/MP3 from
   samples per packet × packets (ISO/IEC 14496-3: 1,024 samples per AAC raw data block; ISO/IEC 11172-3:
   1,152 per Layer III frame), other codecs by decoding each packet and discarding the samples. A
   container whose sample table under-declares its packets (an MP4 ``stts`` giving each 1,024-sample
   AAC frame 2 ticks: ISO/IEC 14496-12 §8.6.1.2) therefore fails with 422 ``duration_mismatch``.
4. The last seconds are demuxed and decoded to detect truncated files.

Every loop checks a deadline per packet and a packet cap, so a probe that overruns ``timeout_s`` stops
itself (422 ``probe_timeout``) instead of running on in the thread pool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from ingestion.rejection import Rejected
from runtime.audio_container import (
    ALLOWED_CONTAINERS as _ALLOWED,
)
from runtime.audio_container import (
    AllowedContainer,
    Deadline,
    UnsupportedContainer,
    duration_tolerance_s,
    ffmpeg_reason,
    open_audio,
)

__all__ = ["ALLOWED_CONTAINERS", "AudioProbe", "probe_audio", "probe_timeout"]

ALLOWED_CONTAINERS: dict[str, str] = {c.ffmpeg_name: c.content_type for c in _ALLOWED.values()}
"""FFmpeg demuxer name -> MIME type of the containers we accept (from :mod:`runtime.audio_container`)."""

DEFAULT_TIMEOUT_S = 5.0
"""Wall-clock budget of one probe, seconds (``COACH_INGESTION_PROBE_TIMEOUT_S`` default)."""

MAX_PACKETS = 1_000_000
"""Packet cap of one probe: 600 s of 2.5-ms Opus frames is 240,000 packets."""

_CALIBRATION_PACKETS = 8
_FIXED_FRAME_CODECS = frozenset(
    {"aac", "aac_fixed", "mp3", "mp3float", "mp2", "mp2float", "mp1", "mp1float", "ac3", "eac3", "amrnb", "amrwb"}
)
_PCM_BITS = re.compile(r"^pcm_[a-z]*?(\d+)")


@dataclass(frozen=True)
class AudioProbe:
    """What the probe found: container, codec, duration (s), sample rate (Hz), channels.

    ``duration_s`` is the header's duration (checked against the packets), or for elementary streams
    without an index (MP3, ADTS AAC) the duration estimated from the packets.
    """

    container: str
    content_type: str
    codec: str
    duration_s: float
    sample_rate: int | None
    channels: int | None


def probe_audio(
    path: Path,
    *,
    min_duration_s: float,
    max_duration_s: float,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    max_packets: int = MAX_PACKETS,
) -> AudioProbe:
    """Validate an uploaded file without decoding it whole.

    Args:
        path: the spooled upload.
        min_duration_s, max_duration_s: accepted duration range, seconds.
        timeout_s: wall-clock budget, seconds, checked per packet (``None``: no limit).
        max_packets: packets demuxed at most.

    Raises :class:`Rejected`: 422 ``empty`` (zero bytes), 415 ``not_audio`` (the magic bytes are no
    known audio container, or the sniffed demuxer cannot read it), 415 ``unsupported_container`` (an
    audio container not in :data:`ALLOWED_CONTAINERS`, or an indirect input: concat script, playlist,
    SDP, a nested open), 415 ``no_audio_stream``, 422 ``unknown_duration``, 422 ``too_short`` /
    ``too_long`` (outside the limits, seconds), 422 ``duration_mismatch`` (the packets hold more audio
    than the header declares, beyond :func:`runtime.audio_container.duration_tolerance_s`), 422
    ``truncated`` (the file ends well before the duration its header declares), 422 ``corrupt``,
    422 ``probe_timeout`` (``timeout_s`` passed) and 422 ``probe_limit`` (``max_packets`` passed).
    """
    if path.stat().st_size == 0:
        raise Rejected(422, "empty", "the audio part is empty (0 bytes)")
    deadline = Deadline(timeout_s)
    try:
        with open_audio(path, timeout_s=timeout_s) as (container, allowed):
            return _probe_open(path, container, allowed, min_duration_s, max_duration_s, deadline, max_packets)
    except UnsupportedContainer as exc:
        code = "not_audio" if exc.kind == "other" else "unsupported_container"
        raise Rejected(415, code, exc.reason) from exc
    except av.error.EOFError as exc:  # the sniffed container's header or first packets are cut off
        size = path.stat().st_size
        raise Rejected(422, "truncated", f"the file ends ({size} bytes) before its audio can be read") from exc
    except av.FFmpegError as exc:
        if deadline.expired():
            raise probe_timeout(timeout_s) from exc
        raise Rejected(415, "not_audio", f"not a recognised audio file: {ffmpeg_reason(exc)}") from exc


def _probe_open(
    path: Path,
    container: av.container.InputContainer,
    allowed: AllowedContainer,
    min_duration_s: float,
    max_duration_s: float,
    deadline: Deadline,
    max_packets: int,
) -> AudioProbe:
    fmt = allowed.ffmpeg_name
    if not container.streams.audio:
        raise Rejected(415, "no_audio_stream", f"the {fmt} file has no audio stream")
    stream = container.streams.audio[0]
    header = _header_duration(container, stream)
    if not allowed.raw_stream:
        if header is None or header <= 0:
            raise Rejected(422, "unknown_duration", "the header declares no duration")
        _check_limits(header, min_duration_s, max_duration_s)
    if allowed.key == "wav":
        _check_wav_data_chunk(path)
    if allowed.raw_stream:
        limit = max_duration_s + duration_tolerance_s(max_duration_s)
    else:
        assert header is not None
        limit = header + duration_tolerance_s(header)
    estimate = _packet_duration(container, stream, limit=limit, deadline=deadline, max_packets=max_packets)
    if allowed.raw_stream:  # no index: FFmpeg's header duration is a bit-rate estimate, the packets decide
        near = header is not None and header > 0 and abs(estimate - header) <= duration_tolerance_s(header)
        duration = header if near and header is not None else estimate
        _check_limits(duration, min_duration_s, max_duration_s)
    else:
        assert header is not None
        duration = header
        if estimate > limit:
            raise Rejected(
                422,
                "duration_mismatch",
                f"the packets hold at least {estimate:.1f} s of audio but the header declares {header:.2f} s",
            )
    _check_tail(container, stream, duration, deadline, check_end=not allowed.raw_stream)
    return AudioProbe(
        container=fmt,
        content_type=allowed.content_type,
        codec=stream.codec_context.name,
        duration_s=duration,
        sample_rate=stream.codec_context.sample_rate or None,
        channels=stream.codec_context.channels or None,
    )


def _check_limits(duration: float, min_duration_s: float, max_duration_s: float) -> None:
    if duration < min_duration_s:
        raise Rejected(422, "too_short", f"duration {duration:.2f} s is below the {min_duration_s:g} s minimum")
    if duration > max_duration_s:
        raise Rejected(422, "too_long", f"duration {duration:.1f} s exceeds the {max_duration_s:g} s limit")


def probe_timeout(timeout_s: float | None) -> Rejected:
    """422 ``probe_timeout``: probing took over ``timeout_s`` seconds (the probe's own deadline, or the caller's
    backstop)."""
    return Rejected(422, "probe_timeout", f"probing the file took over {timeout_s:g} s")


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


def _check_tail(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    duration: float,
    deadline: Deadline,
    *,
    check_end: bool = True,
) -> None:
    """Seek to the last ~2 s and decode what is there; the last packet must reach the declared end."""
    tolerance = max(0.5, 0.02 * duration)
    time_base = stream.time_base or Fraction(1, av.time_base)
    last_end: float | None = None
    decoded = 0
    decode_error: str | None = None
    try:
        container.seek(int(max(0.0, duration - 2.0) / time_base), stream=stream, backward=True)
        for packet in container.demux(stream):
            if deadline.expired():
                raise probe_timeout(deadline.seconds)
            if packet.pts is None or packet.size == 0:
                continue
            last_end = float((packet.pts + (packet.duration or 0)) * time_base)
            try:
                decoded += len(packet.decode())
            except av.FFmpegError as exc:
                decode_error = ffmpeg_reason(exc)
    except av.FFmpegError as exc:
        decode_error = decode_error or ffmpeg_reason(exc)
    start = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
    if check_end and (last_end is None or last_end - start < duration - tolerance):
        reached = 0.0 if last_end is None else max(0.0, last_end - start)
        raise Rejected(
            422,
            "truncated",
            f"the file is truncated: audio stops at {reached:.2f} s of the {duration:.2f} s its header declares",
        )
    if decoded == 0 or decode_error:
        raise Rejected(422, "corrupt", f"the end of the file cannot be decoded: {decode_error or 'no frame'}")


def _packet_duration(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    *,
    limit: float,
    deadline: Deadline,
    max_packets: int,
) -> float:
    """Seconds of audio the stream's packets hold, demuxed from the start; stops as soon as ``limit`` is passed.

    Packet timestamps and durations come from the container's tables, which is what an attacker
    controls, so they are not used: the samples per packet come from the codec (see the module
    docstring). Raises 422 ``probe_timeout`` / ``probe_limit`` when the deadline or the packet cap passes.
    """
    ctx = stream.codec_context
    codec = ctx.name
    rate = ctx.sample_rate or 0
    channels = ctx.channels or 1
    pcm = _PCM_BITS.match(codec)
    pcm_bits = int(pcm.group(1)) if pcm else (8 if codec in ("pcm_alaw", "pcm_mulaw") else 0)
    fixed = codec in _FIXED_FRAME_CODECS
    per_packet: float | None = None  # seconds per packet of a fixed-frame codec, once calibrated
    calibration: list[tuple[int, int]] = []
    seconds = 0.0
    packets = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        packets += 1
        if packets > max_packets:
            raise Rejected(422, "probe_limit", f"the file holds more than {max_packets} audio packets")
        if deadline.expired():
            raise probe_timeout(deadline.seconds)
        if codec == "opus":
            seconds += _opus_samples(memoryview(packet)[:2].tobytes()) / 48_000
        elif codec == "flac" and rate and (blocksize := _flac_blocksize(memoryview(packet)[:16].tobytes())) is not None:
            seconds += blocksize / rate
        elif pcm_bits and rate:
            seconds += packet.size * 8 // (pcm_bits * channels) / rate
        elif fixed and per_packet is not None:
            seconds += per_packet
        else:  # decode this packet, keep only its sample count
            samples, frame_rate = _decode_samples(packet)
            seconds += samples / frame_rate if frame_rate else 0.0
            if fixed:
                calibration.append((samples, frame_rate))
                if len(calibration) == _CALIBRATION_PACKETS:
                    best = max(calibration)
                    if best[0] and best[1]:
                        per_packet = best[0] / best[1]
                        # the first packets count whole: priming trims their decoded output
                        seconds = per_packet * len(calibration)
        if seconds > limit:
            break
    return seconds


def _decode_samples(packet: av.Packet) -> tuple[int, int]:
    """Samples decoded from one packet and their rate (Hz); ``(0, 0)`` when it does not decode."""
    samples, rate = 0, 0
    try:
        for frame in packet.decode():
            if isinstance(frame, av.AudioFrame):
                samples += frame.samples
                rate = frame.sample_rate or rate
    except av.FFmpegError:
        return 0, 0
    return samples, rate


def _opus_samples(data: bytes) -> int:
    """Samples at 48 kHz in one Opus packet, from its TOC byte (RFC 6716 §3.1, at most 120 ms: 5,760)."""
    if not data:
        return 0
    toc = data[0]
    config = toc >> 3
    if config < 12:  # SILK-only: 10, 20, 40, 60 ms
        frame = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        frame = (480, 960)[config & 1]
    else:  # CELT-only: 2.5, 5, 10, 20 ms
        frame = (120, 240, 480, 960)[config & 3]
    code = toc & 3
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        count = data[1] & 0x3F if len(data) > 1 else 0
    return min(frame * count, 5760)


def _flac_blocksize(data: bytes) -> int | None:
    """Block size (samples per channel) from a FLAC frame header (RFC 9639 §9.1); ``None`` if not a frame."""
    if len(data) < 6 or data[0] != 0xFF or (data[1] & 0xFE) != 0xF8:
        return None
    code = data[2] >> 4
    first = data[4]
    ones = 8 - (~first & 0xFF).bit_length()  # leading 1 bits of the UTF-8-like coded number
    if ones == 1 or ones > 7:
        return None
    pos = 4 + (1 if ones == 0 else ones)
    if code == 0:
        return None
    if code == 1:
        return 192
    if code <= 5:
        return 576 << (code - 2)
    if code == 6:
        return data[pos] + 1 if pos < len(data) else None
    if code == 7:
        return ((data[pos] << 8) | data[pos + 1]) + 1 if pos + 1 < len(data) else None
    return 256 << (code - 8)
