"""The one rule for which audio containers we accept and how FFmpeg (PyAV) is allowed to open them.

Ingestion (the probe) and transcription (the decoder) both open uploads through :func:`open_audio`, so
what the API accepts is exactly what the worker will read, and no FFmpeg feature that opens *other*
resources is reachable from an upload:

1. **Sniff** the container from its magic bytes (:func:`sniff_container`), never from the file name or
   from FFmpeg's own probing. Anything not on the allow-list is refused with
   :class:`UnsupportedContainer` before FFmpeg sees a byte: concat scripts (``ffconcat``), playlists
   (HLS/m3u, pls), SDP, manifests, images, text, and audio containers we do not take (AIFF, …).
2. **Open** with the demuxer the sniff chose (``av.open(..., format=<demuxer>)``), so FFmpeg never
   runs its format probe and can never pick the ``concat``, ``hls``, ``image2`` … demuxers.
3. **No indirect input**: the file is always handed to FFmpeg as a Python file object (a path is
   opened here first), so the top-level input needs no FFmpeg protocol at all; ``protocol_whitelist``
   is therefore set to :data:`NO_PROTOCOL` (a list naming no protocol — not even ``file``, which is
   what a concat script uses to reach a sibling file; FFmpeg formats documentation, "Format Options",
   and ``ff_copy_whiteblacklists`` passes it on to nested contexts), and PyAV's ``io_open`` hook
   refuses every nested open through ``AVFormatContext.io_open`` (HLS/DASH segments, ``mov`` data
   references, which ``enable_drefs=0`` also keeps off). A demuxer that asks for another resource fails.

Sources: magic numbers from the container specifications — RIFF/WAVE (Microsoft/IBM Multimedia
Programming Interface, 1991; RF64 EBU Tech 3306, BW64 ITU-R BS.2088), FLAC (RFC 9639 §6, ``fLaC``),
MPEG audio frame header (ISO/IEC 11172-3 §2.4.1.3) and ID3v2 (id3.org ID3v2.4 structure §3.1), ADTS
(ISO/IEC 14496-3 §1.A.2.2), Ogg (RFC 3533 §6) with Opus (RFC 7845 §5.1 ``OpusHead``), Vorbis (Vorbis I
spec §4.2.1) or FLAC-in-Ogg (``\\x7fFLAC``), ISO BMFF ``ftyp`` (ISO/IEC 14496-12 §4.3) and EBML /
Matroska (RFC 8794 §8, RFC 9559 DocType ``matroska``/``webm``).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av
import av.container

__all__ = [
    "ALLOWED_CONTAINERS",
    "ALLOWED_LABEL",
    "AllowedContainer",
    "Deadline",
    "NO_PROTOCOL",
    "UnsupportedContainer",
    "decode_limit_s",
    "duration_tolerance_s",
    "ffmpeg_reason",
    "open_audio",
    "sniff_container",
]


@dataclass(frozen=True, slots=True)
class AllowedContainer:
    """One container on the allow-list.

    Attributes:
        key: our short name (``"wav"``, ``"flac"``, ``"mp3"``, ``"aac"``, ``"ogg"``, ``"mp4"``, ``"matroska"``).
        demuxer: the FFmpeg demuxer passed as ``av.open(format=...)``.
        ffmpeg_name: ``container.format.name`` FFmpeg reports for that demuxer (what events carry).
        content_type: MIME type of the container.
        raw_stream: ``True`` for elementary streams (MP3, ADTS AAC) whose "header duration" is only
            FFmpeg's estimate from the bit rate (or an optional Xing/VBRI frame), not an index.
    """

    key: str
    demuxer: str
    ffmpeg_name: str
    content_type: str
    raw_stream: bool = False


ALLOWED_CONTAINERS: dict[str, AllowedContainer] = {
    c.key: c
    for c in (
        AllowedContainer("wav", "wav", "wav", "audio/wav"),
        AllowedContainer("flac", "flac", "flac", "audio/flac"),
        AllowedContainer("mp3", "mp3", "mp3", "audio/mpeg", raw_stream=True),
        AllowedContainer("aac", "aac", "aac", "audio/aac", raw_stream=True),  # ADTS
        AllowedContainer("ogg", "ogg", "ogg", "audio/ogg"),  # Opus, Vorbis or FLAC in Ogg
        AllowedContainer("mp4", "mov", "mov,mp4,m4a,3gp,3g2,mj2", "audio/mp4"),  # M4A / AAC
        AllowedContainer("matroska", "matroska", "matroska,webm", "audio/webm"),
    )
}
"""Our key -> the containers we accept, each with the explicit FFmpeg demuxer that opens it."""

ALLOWED_LABEL = "WAV, FLAC, MP3, AAC (ADTS), OGG (Opus/Vorbis/FLAC), M4A/MP4 (AAC), WebM/Matroska"
"""Human-readable allow-list for error messages."""

#: ISO BMFF brands (ISO/IEC 14496-12 §4.3, mp4ra.org brand registry) of audio-capable MP4/M4A/3GP files.
MP4_BRANDS = frozenset(
    {b"M4A ", b"M4B ", b"M4P ", b"mp41", b"mp42", b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6",
     b"dash", b"3gp4", b"3gp5", b"3gp6", b"3gp7", b"3g2a", b"3g2b", b"3g2c", b"MSNV", b"f4a "}
)  # fmt: skip

#: First bytes of an Ogg stream's first packet (BOS page) for the codecs we accept in Ogg.
OGG_CODECS = {b"OpusHead": "opus", b"\x01vorbis": "vorbis", b"\x7fFLAC": "flac"}

NO_PROTOCOL = "none"
"""``protocol_whitelist`` value that matches no FFmpeg protocol: nested opens fail with
"Protocol 'file' not on whitelist 'none'!"."""

#: Demuxer-private options: keep the mov demuxer from following external data references.
_DEMUXER_OPTIONS: dict[str, dict[str, str]] = {"mov": {"enable_drefs": "0", "use_absolute_path": "0"}}

_HEAD_BYTES = 64
_MAX_ID3_TAGS = 4


class UnsupportedContainer(ValueError):
    """The input is not one of :data:`ALLOWED_CONTAINERS`, or FFmpeg tried to open something indirect.

    Attributes:
        reason: one human-readable sentence (safe to return to the client).
        detected: what the magic bytes look like (``"aiff"``, ``"ffconcat script"``, ``"m3u playlist"``,
            ``"png image"``, ``"text"`` …) or ``None`` when nothing is recognised.
        kind: ``"audio"`` (an audio container, just not one we accept: AIFF, Speex in Ogg …),
            ``"indirect"`` (a script, playlist, manifest or session description that would make FFmpeg
            open other resources, or a demuxer that tried to) or ``"other"`` (not audio, or unknown).
            Ingestion answers 415 in every case (``unsupported_container`` for the first two,
            ``not_audio`` otherwise); the worker dead-letters the message.
    """

    def __init__(self, reason: str, *, detected: str | None = None, kind: str = "other") -> None:
        super().__init__(reason)
        self.reason, self.detected, self.kind = reason, detected, kind


def ffmpeg_reason(exc: av.FFmpegError) -> str:
    """FFmpeg's message of ``exc`` without the file name that ``str(exc)`` appends (a server-side path of the
    spooled upload or blob, which must not reach a client or an event): ``"End of file"``, ``"Invalid data found
    when processing input"``. Never raises."""
    return str(getattr(exc, "strerror", None) or type(exc).__name__)


def duration_tolerance_s(duration_s: float) -> float:
    """How far (seconds) the audio really present may run past an accepted duration of ``duration_s`` seconds.

    ``max(1.0, 0.05 * duration_s)``: encoder padding and priming (AAC 1,024 + 2,112 samples, MP3 1,152,
    Opus pre-skip of 80 ms: RFC 7845 §4.2) and container rounding stay far below it, while a file whose
    packets hold many times what its header declares (the attack) is far above it. The probe rejects
    beyond it (422) and the worker stops decoding beyond it, so both use this one function.
    """
    return max(1.0, 0.05 * duration_s)


def decode_limit_s(accepted_duration_s: float) -> float:
    """Seconds of audio a decoder may produce for a submission accepted with ``accepted_duration_s`` seconds."""
    return accepted_duration_s + duration_tolerance_s(accepted_duration_s)


# ----------------------------------------------------------------------------------------------------- sniffing
def sniff_container(fh: BinaryIO) -> AllowedContainer:
    """Decide the container of a seekable binary file from its magic bytes alone.

    Reads from offset 0 (skipping up to four ID3v2 tags, whose size is a 28-bit syncsafe integer:
    ID3v2.4 structure §3.1) and leaves the file positioned at 0.

    Returns:
        the :class:`AllowedContainer` to open it with.

    Raises:
        UnsupportedContainer: anything else — see the module docstring for the recognised formats.
    """
    try:
        offset = 0
        for _ in range(_MAX_ID3_TAGS + 1):
            fh.seek(offset)
            head = fh.read(_HEAD_BYTES)
            if head[:3] != b"ID3" or len(head) < 10:
                break
            size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
            offset += 10 + size + (10 if head[5] & 0x10 else 0)  # footer flag
        else:
            raise UnsupportedContainer("too many ID3 tags before the audio", detected="id3", kind="other")
        if offset:  # after ID3: MP3, ADTS AAC or FLAC (FFmpeg skips a leading ID3v2 for every demuxer)
            found = _sniff_head(head, id3=True)
        else:
            found = _sniff_head(head, id3=False)
    finally:
        fh.seek(0)
    return found


def _sniff_head(head: bytes, *, id3: bool) -> AllowedContainer:
    a = ALLOWED_CONTAINERS
    if head[:4] == b"fLaC":
        return a["flac"]
    if len(head) >= 4 and head[0] == 0xFF:
        if (head[1] & 0xF6) == 0xF0 and ((head[2] >> 2) & 0x0F) < 13:  # ADTS: 12-bit sync, layer 00
            return a["aac"]
        if _is_mpeg_audio_header(head):
            return a["mp3"]
    if id3:
        raise UnsupportedContainer(
            "an ID3 tag followed by no MP3, AAC or FLAC frame", detected=_describe(head), kind="other"
        )
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return a["wav"]
    if head[:4] == b"OggS":
        codec = _ogg_codec(head)
        if codec is not None:
            return a["ogg"]
        raise UnsupportedContainer(
            "Ogg with a codec other than Opus, Vorbis or FLAC is not accepted",
            detected="ogg (other codec)",
            kind="audio",
        )
    if head[4:8] == b"ftyp":
        brands = [head[8:12]] + [head[i : i + 4] for i in range(16, min(len(head), int.from_bytes(head[:4])), 4)]
        if any(b in MP4_BRANDS for b in brands):
            return a["mp4"]
        major = head[8:12].decode("latin-1")
        raise UnsupportedContainer(
            f"an ISO BMFF file of brand '{major}' (not M4A/MP4 audio) is not accepted", detected=f"ftyp '{major}'"
        )
    if head[:4] == b"\x1a\x45\xdf\xa3":
        doctype = _ebml_doctype(head)
        if doctype in (b"webm", b"matroska"):
            return a["matroska"]
        raise UnsupportedContainer(f"EBML document type {doctype!r} is not accepted", detected="ebml", kind="audio")
    detected = _describe(head)
    if detected in _INDIRECT:
        reason = f"indirect input ({detected}) is not accepted: upload the audio file itself"
        raise UnsupportedContainer(reason, detected=detected, kind="indirect")
    kind = "audio" if detected in _OTHER_AUDIO else "other"
    what = f"container '{detected}' is" if detected else "the file is not a recognised audio container and is"
    raise UnsupportedContainer(f"{what} not accepted (allowed: {ALLOWED_LABEL})", detected=detected, kind=kind)


_INDIRECT = frozenset({"ffconcat script", "m3u playlist", "pls playlist", "sdp session description", "xml document"})
_OTHER_AUDIO = frozenset({"aiff", "au", "caf", "amr", "wavpack", "ape", "midi", "asf/wma", "riff (not WAVE)"})


def _is_mpeg_audio_header(h: bytes) -> bool:
    """ISO/IEC 11172-3 §2.4.1.3: 11-bit sync, version != reserved, layer != reserved, valid indices."""
    if h[0] != 0xFF or (h[1] & 0xE0) != 0xE0:
        return False
    version, layer = (h[1] >> 3) & 0x03, (h[1] >> 1) & 0x03
    bitrate, rate = h[2] >> 4, (h[2] >> 2) & 0x03
    return version != 1 and layer != 0 and bitrate != 15 and rate != 3


def _ogg_codec(head: bytes) -> str | None:
    """RFC 3533 §6: 27-byte page header, ``page_segments`` lacing values, then the first packet."""
    if len(head) < 27:
        return None
    start = 27 + head[26]
    packet = head[start : start + 8]
    for magic, codec in OGG_CODECS.items():
        if packet.startswith(magic):
            return codec
    return None


def _ebml_doctype(head: bytes) -> bytes | None:
    """RFC 8794: EBML header element (ID 0x1A45DFA3) holding DocType (ID 0x4282); IDs and sizes are VINTs."""

    def vint(pos: int) -> tuple[int, int]:
        first = head[pos]
        length = 8 - first.bit_length() + 1 if first else 9
        if length > 8 or pos + length > len(head):
            raise ValueError("bad vint")
        value = first & (0xFF >> length)
        for b in head[pos + 1 : pos + length]:
            value = value << 8 | b
        return value, pos + length

    try:
        size, pos = vint(4)
        end = min(len(head), pos + size)
        while pos < end:
            element = head[pos : pos + 2]
            id_len = 8 - head[pos].bit_length() + 1
            size, data = vint(pos + id_len)
            if element == b"\x42\x82":
                return head[data : data + size]
            pos = data + size
    except (ValueError, IndexError):
        return None
    return None


def _describe(head: bytes) -> str | None:
    """A name for common things that are not accepted, for the error message (``None``: unknown)."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    lower = text.lower()
    checks: list[tuple[bool, str]] = [
        (lower.startswith(b"ffconcat"), "ffconcat script"),
        (lower.startswith(b"#extm3u") or lower.startswith(b"#ext"), "m3u playlist"),
        (lower.startswith(b"[playlist]"), "pls playlist"),
        (text.startswith(b"v=0"), "sdp session description"),
        (lower.startswith(b"<?xml") or lower.startswith(b"<mpd") or lower.startswith(b"<smil"), "xml document"),
        (lower.startswith(b"<"), "markup document"),
        (head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"), "aiff"),
        (head[:4] == b".snd", "au"),
        (head[:4] == b"caff", "caf"),
        (head[:5] == b"#!AMR", "amr"),
        (head[:4] == b"wvpk", "wavpack"),
        (head[:4] == b"MAC ", "ape"),
        (head[:4] == b"MThd", "midi"),
        (head[:4] == b"\x30\x26\xb2\x75", "asf/wma"),
        (head[:4] == b"RIFF", "riff (not WAVE)"),
        (head[:8] == b"\x89PNG\r\n\x1a\n", "png image"),
        (head[:3] == b"\xff\xd8\xff", "jpeg image"),
        (head[:4] == b"GIF8", "gif image"),
        (head[:4] == b"%PDF", "pdf document"),
        (head[:4] == b"PK\x03\x04" or head[:2] == b"\x1f\x8b", "archive"),
        (head[:4] == b"\x7fELF", "executable"),
    ]
    for hit, name in checks:
        if hit:
            return name
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "text"
    return None


# ----------------------------------------------------------------------------------------------------- opening
AudioInput = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO
"""Raw container bytes, a filesystem path, or a readable, seekable binary file object."""


class _RefuseNestedOpen:
    """PyAV ``io_open`` hook: every nested open a demuxer attempts fails (and is remembered)."""

    def __init__(self) -> None:
        self.refused: list[str] = []

    def __call__(self, url: str, flags: int, options: dict[str, Any]) -> BinaryIO:
        self.refused.append(url)
        raise UnsupportedContainer(
            f"the file asks FFmpeg to open another resource ({url!r})", detected="indirect", kind="indirect"
        )


@contextmanager
def open_audio(
    source: AudioInput, *, timeout_s: float | None = None, metadata_errors: str = "ignore"
) -> Iterator[tuple[av.container.InputContainer, AllowedContainer]]:
    """Sniff ``source`` and open it with PyAV under the allow-list; a context manager.

    Args:
        source: container bytes, a path (opened here as a Python file, so FFmpeg resolves no URL), or
            a readable, seekable binary file object (positioned anywhere; it is read from offset 0).
        timeout_s: optional limit (seconds) on FFmpeg blocking inside one open or one read call (PyAV's
            interrupt callback, ``av.open(timeout=...)``); callers that loop over packets should also
            check their own deadline per packet.
        metadata_errors: how PyAV decodes malformed metadata strings (default ``"ignore"``).

    Yields:
        ``(container, allowed)``: the open :class:`av.container.InputContainer` (closed on exit) and the
        allow-list entry it was opened with. ``container.format.name`` is the demuxer requested
        (``"mov"``, ``"matroska"``); report ``allowed.ffmpeg_name`` (FFmpeg's full demuxer name, e.g.
        ``"mov,mp4,m4a,3gp,3g2,mj2"``) as the container.

    Raises:
        UnsupportedContainer: the magic bytes are not on the allow-list, or a demuxer tried a nested open
            (raised when that open happens: at ``av.open`` or later while demuxing).
        av.error.FFmpegError: the sniffed demuxer cannot read the file (corrupt, truncated header …).
        FileNotFoundError: ``source`` is a path that does not exist or is not a regular file.

    Source of the options: FFmpeg formats documentation, "Format Options" (``protocol_whitelist``), and
    the mov demuxer's ``enable_drefs``/``use_absolute_path``; PyAV ``av.open`` (``format``, ``options``,
    ``io_open``, ``timeout``).
    """
    owned: BinaryIO | None = None
    if isinstance(source, bytes | bytearray | memoryview):
        fh: BinaryIO = io.BytesIO(bytes(source))
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"audio file not found: {path}")
        fh = owned = path.open("rb")
    else:
        fh = source
    try:
        allowed = sniff_container(fh)
        guard = _RefuseNestedOpen()
        options = {"protocol_whitelist": NO_PROTOCOL, **_DEMUXER_OPTIONS.get(allowed.demuxer, {})}
        timeout = None if timeout_s is None else (max(0.01, timeout_s), max(0.01, timeout_s))
        try:
            container = av.open(
                fh,
                mode="r",
                format=allowed.demuxer,
                options=options,
                metadata_errors=metadata_errors,
                io_open=guard,
                timeout=timeout,
            )
        except av.error.FFmpegError:
            if guard.refused:
                raise UnsupportedContainer(
                    f"the file asks FFmpeg to open another resource ({guard.refused[0]!r})",
                    detected="indirect",
                    kind="indirect",
                ) from None
            raise
        with container:
            yield container, allowed
        if guard.refused:  # a nested open that a demuxer swallowed instead of failing
            raise UnsupportedContainer(
                f"the file asks FFmpeg to open another resource ({guard.refused[0]!r})",
                detected="indirect",
                kind="indirect",
            )
    finally:
        if owned is not None:
            owned.close()


class Deadline:
    """A monotonic deadline: ``Deadline(5.0).expired()`` after 5 s; ``Deadline(None)`` never expires."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def expired(self) -> bool:
        """``True`` once the deadline has passed."""
        return self.at is not None and time.monotonic() > self.at

    def remaining(self) -> float | None:
        """Seconds left (``>= 0``), or ``None`` without a limit."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())
