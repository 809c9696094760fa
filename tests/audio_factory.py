"""Builds test audio files with PyAV: re-encodes real speech, silence in any container, bad files."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

__all__ = ["HOTWORDS", "JFK", "JFK_TEXT", "write_audio", "reencode", "silence"]

FIXTURES = Path(__file__).parent / "fixtures" / "audio"
JFK = FIXTURES / "jfk.flac"
HOTWORDS = FIXTURES / "hotwords.mp3"
"""A 4 s MP3 of a speaker naming a software tool (``fixtures/audio/ATTRIBUTION.md``)."""
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def write_audio(
    path: Path, samples: np.ndarray, rate: int, *, container: str | None = None, codec: str = "pcm_s16le"
) -> Path:
    """Encode mono float32 ``samples`` (-1..1) at ``rate`` Hz into ``path`` with ``codec``."""
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame_size = stream.codec_context.frame_size or 1024
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        pts = 0
        for i in range(0, len(pcm), frame_size):
            chunk = pcm[i : i + frame_size]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = pts
            pts += len(chunk)
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def reencode(
    src: Path, dst: Path, *, container: str | None = None, codec: str = "pcm_s16le", rate: int = 16000
) -> Path:
    """Decode ``src`` to mono ``rate`` Hz and encode it again as ``dst`` (container from suffix)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    chunks = []
    with av.open(str(src)) as inp:
        for frame in inp.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
    return write_audio(dst, np.concatenate(chunks), rate, container=container, codec=codec)


def silence(
    path: Path, seconds: float, *, rate: int = 16000, container: str | None = None, codec: str = "pcm_s16le"
) -> Path:
    """``seconds`` of digital silence."""
    return write_audio(path, np.zeros(int(seconds * rate), dtype=np.float32), rate, container=container, codec=codec)
