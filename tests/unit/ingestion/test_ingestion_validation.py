"""Upload validation before any full decode: the probe and the streaming multipart reader."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from ingestion.probe import probe_audio
from ingestion.rejection import Rejected
from ingestion.upload import receive_upload
from tests.audio_factory import JFK, reencode, silence

pytestmark = pytest.mark.unit

LIMITS = {"min_duration_s": 1.0, "max_duration_s": 600.0}


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


def rejection(path: Path) -> Rejected:
    with pytest.raises(Rejected) as info:
        probe_audio(path, **LIMITS)
    return info.value


@pytest.mark.parametrize(
    ("suffix", "codec", "rate", "container"),
    [
        (".wav", "pcm_s16le", 16000, "wav"),
        (".flac", "flac", 16000, "flac"),
        (".mp3", "libmp3lame", 16000, "mp3"),
        (".ogg", "libopus", 48000, "ogg"),
        (".m4a", "aac", 16000, "mov,mp4,m4a,3gp,3g2,mj2"),
        (".webm", "libopus", 48000, "matroska,webm"),
    ],
)
def test_allowed_containers_are_accepted(audio_dir: Path, suffix: str, codec: str, rate: int, container: str) -> None:
    path = reencode(JFK, audio_dir / f"jfk{suffix}", codec=codec, rate=rate)
    probe = probe_audio(path, **LIMITS)
    assert probe.container == container
    assert probe.duration_s == pytest.approx(11.0, abs=0.15)


def test_truncated_flac_is_refused(audio_dir: Path) -> None:
    data = JFK.read_bytes()
    path = audio_dir / "truncated.flac"
    path.write_bytes(data[: len(data) // 2])
    rej = rejection(path)
    assert (rej.status, rej.code) == (422, "truncated")
    assert "11.00 s its header declares" in rej.reason


def test_flac_cut_inside_its_header_is_refused_without_the_server_path(audio_dir: Path) -> None:
    """A FLAC file's first 3,000 bytes: the magic bytes are right, but FFmpeg hits the end of the file while it
    opens it. Seen in a trial of `coach run`: 415 with the spooled upload's path in the reason."""
    path = audio_dir / "header-only.flac"
    path.write_bytes(JFK.read_bytes()[:3000])
    rej = rejection(path)
    assert (rej.status, rej.code) == (422, "truncated"), rej.reason
    assert str(audio_dir) not in rej.reason and "header-only" not in rej.reason, rej.reason


def test_truncated_wav_is_refused(audio_dir: Path) -> None:
    full = reencode(JFK, audio_dir / "full.wav")
    path = audio_dir / "truncated.wav"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    rej = rejection(path)
    assert (rej.status, rej.code) == (422, "truncated")


def test_text_renamed_wav_is_refused(audio_dir: Path) -> None:
    path = audio_dir / "notes.wav"
    path.write_text("these are my notes, not audio\n" * 50)
    rej = rejection(path)
    assert (rej.status, rej.code) == (415, "not_audio")


def test_zero_length_is_refused(audio_dir: Path) -> None:
    path = audio_dir / "empty.wav"
    path.write_bytes(b"")
    rej = rejection(path)
    assert (rej.status, rej.code) == (422, "empty")


def test_twenty_minutes_of_silence_is_refused_from_the_header(audio_dir: Path) -> None:
    path = silence(audio_dir / "long.ogg", 20 * 60, codec="libopus", rate=48000)
    assert path.stat().st_size < 2_000_000  # small file, long duration: the header decides
    rej = rejection(path)
    assert (rej.status, rej.code) == (422, "too_long")
    assert "1200.0 s exceeds the 600 s limit" in rej.reason


def test_too_short_is_refused(audio_dir: Path) -> None:
    rej = rejection(silence(audio_dir / "short.wav", 0.3))
    assert (rej.status, rej.code) == (422, "too_short")


def test_unsupported_container_is_refused(audio_dir: Path) -> None:
    rej = rejection(reencode(JFK, audio_dir / "jfk.aiff", codec="pcm_s16be"))
    assert (rej.status, rej.code) == (415, "unsupported_container")
    assert "'aiff'" in rej.reason


# ----------------------------------------------------------------------------- streaming reader
BOUNDARY = "----coachtest"


def multipart(audio: bytes, *, prompt_id: str | None = None, field: str = "audio") -> bytes:
    parts = []
    if prompt_id is not None:
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="prompt_id"\r\n\r\n{prompt_id}\r\n'.encode()
        )
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="a.flac"\r\n'
        f"Content-Type: audio/flac\r\n\r\n".encode()
        + audio
        + b"\r\n"
    )
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


class Chunks:
    """An async body that records how much of it was consumed."""

    def __init__(self, body: bytes, size: int = 4096):
        self.body, self.size, self.consumed = body, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), self.size):
            chunk = self.body[i : i + self.size]
            self.consumed += len(chunk)
            yield chunk


CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def test_reader_spools_audio_and_fields(tmp_path: Path) -> None:
    audio = JFK.read_bytes()
    upload = anyio.run(
        lambda: receive_upload(CTYPE, None, Chunks(multipart(audio, prompt_id="p-7")).__aiter__(),
                               max_bytes=10**7, spool_dir=tmp_path)
    )  # fmt: skip
    assert upload.path is not None and upload.path.read_bytes() == audio
    assert upload.size == len(audio)
    assert upload.fields == {"prompt_id": "p-7"}
    assert upload.filename == "a.flac"
    import hashlib

    assert upload.sha256 == hashlib.sha256(audio).hexdigest()
    upload.discard()
    assert not upload.path.exists()


def test_oversized_body_is_refused_while_streaming(tmp_path: Path) -> None:
    body = Chunks(multipart(b"\0" * 1_000_000), size=16384)
    with pytest.raises(Rejected) as info:
        anyio.run(lambda: receive_upload(CTYPE, None, body.__aiter__(), max_bytes=100_000, spool_dir=tmp_path))
    assert (info.value.status, info.value.code) == (413, "too_large")
    assert body.consumed < 100_000 + 16384 * 2  # stopped right after the limit, not after spooling
    assert list(tmp_path.iterdir()) == []  # temp file removed


def test_declared_oversized_body_is_refused_before_reading(tmp_path: Path) -> None:
    body = Chunks(multipart(b"\0" * 10))
    with pytest.raises(Rejected) as info:
        anyio.run(lambda: receive_upload(CTYPE, "999999999", body.__aiter__(), max_bytes=100_000, spool_dir=tmp_path))
    assert info.value.status == 413
    assert body.consumed == 0


def test_missing_audio_field_and_wrong_content_type(tmp_path: Path) -> None:
    with pytest.raises(Rejected) as info:
        anyio.run(
            lambda: receive_upload(CTYPE, None, Chunks(multipart(b"x", field="file")).__aiter__(),
                                   max_bytes=10**6, spool_dir=tmp_path)
        )  # fmt: skip
    assert (info.value.status, info.value.code) == (422, "missing_audio")
    with pytest.raises(Rejected) as info:
        anyio.run(
            lambda: receive_upload("audio/flac", None, Chunks(b"x").__aiter__(), max_bytes=10, spool_dir=tmp_path)
        )
    assert (info.value.status, info.value.code) == (415, "not_multipart")
