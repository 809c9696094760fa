"""Hostile uploads (issue 16, items 1 and 2): one container rule for probe and decoder, real durations.

* An M4A whose sample table (``stts``, ISO/IEC 14496-12 §8.6.1.2) gives each 1,024-sample AAC frame a
  duration of 2 ticks is generated here: its header declares 4 s, its packets hold 40 s. The probe
  rejects it (422 ``duration_mismatch``) and ``decode_audio(max_duration_s=4)`` stops after ~5 s.
* Concat scripts and playlists are refused from their magic bytes by both the probe (415) and the
  decoder (``RefusedContainer``), and FFmpeg is never given a protocol to reach a sibling file.
* Every allowed container (WAV, FLAC, MP3, Ogg/Opus, M4A/AAC, WebM/Opus, ADTS AAC) still passes both.
"""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from ingestion.probe import probe_audio
from ingestion.rejection import Rejected
from runtime.audio_container import (
    ALLOWED_CONTAINERS,
    NO_PROTOCOL,
    UnsupportedContainer,
    decode_limit_s,
    open_audio,
    sniff_container,
)
from tests.audio_factory import write_audio
from transcription.audio import AudioTooLong, RefusedContainer, decode_audio

pytestmark = pytest.mark.unit

LIMITS: dict[str, Any] = {"min_duration_s": 1.0, "max_duration_s": 600.0}
RATE = 16_000


def tone(seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("containers")


def rejection(path: Path, **kwargs: Any) -> Rejected:
    with pytest.raises(Rejected) as info:
        probe_audio(path, **{**LIMITS, **kwargs})
    return info.value


# ----------------------------------------------------------------------------- the under-declared M4A
def _boxes(buf: bytearray, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    """ISO BMFF boxes (size:u32, type:4cc, [largesize:u64]) under [start, end): type -> [(offset, size)]."""
    found: dict[bytes, list[tuple[int, int]]] = {}
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", buf[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", buf[pos + 8 : pos + 16])[0]
        elif size == 0:
            size = end - pos
        found.setdefault(kind, []).append((pos, size))
        if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
            for k, v in _boxes(buf, pos + 8, pos + size).items():
                found.setdefault(k, []).extend(v)
        pos += size
    return found


def under_declared_m4a(path: Path, *, real_s: float = 40.0, declared_s: float = 4.0) -> Path:
    """Encode ``real_s`` of AAC in M4A, then rewrite the sample table so every frame lasts 2 ticks.

    ``stts`` (ISO/IEC 14496-12 §8.6.1.2: version/flags u32, entry_count u32, then (sample_count u32,
    sample_delta u32) entries) gets delta 2 everywhere; ``mdhd``'s timescale becomes ticks/declared_s
    so the track declares ``declared_s``; ``mvhd``/``tkhd`` durations follow; ``edts`` is renamed
    ``free`` (ignored by readers) so no edit list contradicts the lie. Sizes do not change.
    """
    write_audio(path, tone(real_s), RATE, codec="aac")
    buf = bytearray(path.read_bytes())
    boxes = _boxes(buf, 0, len(buf))
    (stts, _), = boxes[b"stts"]  # fmt: skip
    entries = struct.unpack(">I", buf[stts + 12 : stts + 16])[0]
    frames = 0
    for i in range(entries):
        at = stts + 16 + 8 * i
        count = struct.unpack(">I", buf[at : at + 4])[0]
        frames += count
        buf[at + 4 : at + 8] = struct.pack(">I", 2)
    ticks = 2 * frames
    timescale = round(ticks / declared_s)
    (mdhd, _), = boxes[b"mdhd"]  # fmt: skip
    assert buf[mdhd + 8] == 0, "version-0 mdhd expected"
    buf[mdhd + 20 : mdhd + 28] = struct.pack(">II", timescale, ticks)  # timescale, duration
    (mvhd, _), = boxes[b"mvhd"]  # fmt: skip
    movie_scale = struct.unpack(">I", buf[mvhd + 20 : mvhd + 24])[0]
    buf[mvhd + 24 : mvhd + 28] = struct.pack(">I", round(declared_s * movie_scale))
    (tkhd, _), = boxes[b"tkhd"]  # fmt: skip
    buf[tkhd + 28 : tkhd + 32] = struct.pack(">I", round(declared_s * movie_scale))
    for edts, _ in boxes.get(b"edts", []):
        buf[edts + 4 : edts + 8] = b"free"
    path.write_bytes(bytes(buf))
    return path


@pytest.fixture(scope="module")
def lying_m4a(audio_dir: Path) -> Path:
    return under_declared_m4a(audio_dir / "lying.m4a")


def test_the_lying_m4a_declares_4_s_and_holds_40_s(lying_m4a: Path) -> None:
    """The attack itself: FFmpeg believes the header, and an unbounded decode yields 10x the audio."""
    with av.open(str(lying_m4a)) as c:
        s = c.streams.audio[0]
        assert s.duration is not None and s.time_base is not None
        assert float(s.duration * s.time_base) == pytest.approx(4.0, abs=0.1)
    assert decode_audio(lying_m4a).duration_s == pytest.approx(40.0, abs=0.2)  # no limit: the whole lie


def test_probe_rejects_the_lying_m4a_from_its_packets(lying_m4a: Path) -> None:
    rej = rejection(lying_m4a)
    assert (rej.status, rej.code) == (422, "duration_mismatch")
    assert "header declares 4.0" in rej.reason


def test_decode_stops_at_the_accepted_duration(lying_m4a: Path) -> None:
    started = time.perf_counter()
    with pytest.raises(AudioTooLong) as info:
        decode_audio(lying_m4a.read_bytes(), max_duration_s=4.0)
    assert info.value.limit_s == pytest.approx(decode_limit_s(4.0)) == pytest.approx(5.0)
    assert "accepted as 4.00 s" in info.value.reason
    assert time.perf_counter() - started < 5.0


def test_decode_within_the_accepted_duration_passes(audio_dir: Path) -> None:
    path = write_audio(audio_dir / "honest.m4a", tone(6.0), RATE, codec="aac")
    decoded = decode_audio(path.read_bytes(), max_duration_s=probe_audio(path, **LIMITS).duration_s)
    assert decoded.duration_s == pytest.approx(6.0, abs=0.15)


# ----------------------------------------------------------------------------- every allowed container
CONTAINERS = [
    ("wav", ".wav", "pcm_s16le", RATE, None, "wav"),
    ("flac", ".flac", "flac", RATE, None, "flac"),
    ("mp3", ".mp3", "libmp3lame", RATE, None, "mp3"),
    ("ogg-opus", ".ogg", "libopus", 48_000, None, "ogg"),
    ("m4a-aac", ".m4a", "aac", RATE, None, "mov,mp4,m4a,3gp,3g2,mj2"),
    ("webm-opus", ".webm", "libopus", 48_000, None, "matroska,webm"),
    ("adts-aac", ".aac", "aac", RATE, "adts", "aac"),
    ("mka-flac", ".mka", "flac", RATE, "matroska", "matroska,webm"),
]


@pytest.mark.parametrize(
    ("name", "suffix", "codec", "rate", "fmt", "container"), CONTAINERS, ids=[c[0] for c in CONTAINERS]
)
def test_allowed_containers_pass_probe_and_bounded_decode(
    audio_dir: Path, name: str, suffix: str, codec: str, rate: int, fmt: str | None, container: str
) -> None:
    path = write_audio(audio_dir / f"{name}{suffix}", tone(3.0, rate), rate, codec=codec, container=fmt)
    probe = probe_audio(path, **LIMITS)
    assert probe.container == container
    assert probe.duration_s == pytest.approx(3.0, abs=0.15)
    decoded = decode_audio(path.read_bytes(), max_duration_s=probe.duration_s)
    assert decoded.container == container
    assert decoded.duration_s == pytest.approx(3.0, abs=0.15)
    with path.open("rb") as fh:
        assert sniff_container(fh).ffmpeg_name == container


# ----------------------------------------------------------------------------- indirect inputs
INDIRECT = {
    "ffconcat": b"ffconcat version 1.0\nfile 'other.wav'\n",
    "m3u": b"#EXTM3U\n#EXTINF:3,other\nother.wav\n",
    "hls": b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:3\n#EXTINF:3.0,\nother.wav\n#EXT-X-ENDLIST\n",
    "pls": b"[playlist]\nFile1=other.wav\nNumberOfEntries=1\n",
    "sdp": b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\n",
    "dash": b'<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"></MPD>\n',
}


@pytest.mark.parametrize("kind", sorted(INDIRECT))
@pytest.mark.parametrize("suffix", [".wav", ".m4a"])
def test_indirect_inputs_are_refused_by_probe_and_decoder(tmp_path: Path, kind: str, suffix: str) -> None:
    write_audio(tmp_path / "other.wav", tone(3.0), RATE)  # the sibling it points at exists and is valid
    path = tmp_path / f"upload{suffix}"
    path.write_bytes(INDIRECT[kind])
    rej = rejection(path)
    assert (rej.status, rej.code) == (415, "unsupported_container")
    assert "indirect input" in rej.reason
    with pytest.raises(RefusedContainer):
        decode_audio(path.read_bytes(), max_duration_s=3.0)
    with pytest.raises(RefusedContainer):
        decode_audio(path)


def test_a_forced_concat_demuxer_still_cannot_reach_the_sibling(tmp_path: Path) -> None:
    """Defence in depth: the protocol list open_audio passes names no protocol, so even FFmpeg's concat
    demuxer (never on the allow-list) cannot open the file its script names."""
    write_audio(tmp_path / "other.wav", tone(3.0), RATE)
    script = tmp_path / "list.ffconcat"
    script.write_bytes(b"ffconcat version 1.0\nfile 'other.wav'\n")
    with script.open("rb") as fh, av.open(fh, "r", format="concat", options={"safe": "0"}) as c:
        assert len(list(c.demux())) > 0  # FFmpeg's default: the sibling is read
    with script.open("rb") as fh, pytest.raises(av.FFmpegError):
        av.open(fh, format="concat", options={"safe": "0", "protocol_whitelist": NO_PROTOCOL})


@pytest.mark.parametrize(
    ("data", "detected", "kind", "code"),
    [
        (b"these are my notes, not audio\n" * 4, "text", "other", "not_audio"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "png image", "other", "not_audio"),
        (b"FORM\0\0\0\x40AIFFCOMM" + b"\0" * 64, "aiff", "audio", "unsupported_container"),
        (b"ID3\x04\0\0\0\0\0\x04" + b"\0\0\0\0" + b"garbage garbage" * 8, "text", "other", "not_audio"),
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64, "ftyp 'heic'", "other", "not_audio"),
        (b"\x1a\x45\xdf\xa3\x84\x42\x82\x81x" + b"\0" * 64, "ebml", "audio", "unsupported_container"),
    ],
    ids=["text", "png", "aiff", "id3-then-garbage", "heic", "ebml-other-doctype"],
)
def test_other_inputs_are_refused_from_their_magic_bytes(
    tmp_path: Path, data: bytes, detected: str | None, kind: str, code: str
) -> None:
    with pytest.raises(UnsupportedContainer) as info:
        sniff_container(io.BytesIO(data))
    assert (info.value.detected, info.value.kind) == (detected, kind)
    path = tmp_path / "upload.wav"
    path.write_bytes(data)
    rej = rejection(path)
    assert (rej.status, rej.code) == (415, code)
    with pytest.raises(RefusedContainer):
        decode_audio(data)


def test_open_audio_names_the_explicit_demuxer(audio_dir: Path) -> None:
    path = write_audio(audio_dir / "demuxer.m4a", tone(2.0), RATE, codec="aac")
    with open_audio(path) as (container, allowed):
        assert allowed is ALLOWED_CONTAINERS["mp4"]
        assert container.format.name == "mov"  # the demuxer we asked for, not FFmpeg's probe
        assert container.file is not None  # a Python file object: FFmpeg resolved no URL


# ----------------------------------------------------------------------------- the probe stops itself
def test_probe_over_its_time_budget_stops_with_422(audio_dir: Path) -> None:
    path = write_audio(audio_dir / "budget.ogg", tone(30.0, 48_000), 48_000, codec="libopus")
    started = time.perf_counter()
    rej = rejection(path, timeout_s=1e-6)
    assert (rej.status, rej.code) == (422, "probe_timeout")
    assert time.perf_counter() - started < 1.0


def test_probe_packet_cap(audio_dir: Path) -> None:
    path = write_audio(audio_dir / "cap.ogg", tone(5.0, 48_000), 48_000, codec="libopus")
    rej = rejection(path, max_packets=100)  # 5 s of 20-ms Opus frames = 250 packets
    assert (rej.status, rej.code) == (422, "probe_limit")
