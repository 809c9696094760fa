"""Streaming ``multipart/form-data`` reader with a size cap enforced while the body arrives.

The body is parsed chunk by chunk with python-multipart's ``MultipartParser``; the ``audio`` part is
written to a temporary file and hashed (SHA-256) on the fly; the request is refused with 413 as
soon as the byte count passes the limit, never after spooling the whole body. Text fields (and the
audio part's file name) must be UTF-8 without control characters (422, checked as each part ends, so
a bad field sent before the audio stops the upload early). Whatever ends the read early — a
rejection, a full spool disk, a disconnect — deletes the temporary file before the error propagates.
"""

from __future__ import annotations

import errno
import hashlib
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

from ingestion.rejection import Rejected

__all__ = ["ReceivedUpload", "SPOOL_RETRY_AFTER_S", "check_text", "receive_upload"]

_MAX_TEXT_FIELD = 1024
#: ``Retry-After`` (seconds) of the 503 answered when the spool directory cannot take the upload (disk full).
SPOOL_RETRY_AFTER_S = 30
#: C0 controls, DEL and C1 controls (Unicode category Cc): refused in every text field.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def check_text(name: str, value: str) -> str:
    """Return ``value`` unless it holds a control character (C0, DEL, C1: ``\\x00-\\x1f``, ``\\x7f-\\x9f``).

    Raises :class:`Rejected` 422 ``invalid`` naming the field ``name``.
    """
    if _CONTROL.search(value):
        raise Rejected(422, "invalid", f"{name} contains control characters")
    return value


def _decode(name: str, raw: bytes) -> str:
    try:
        return check_text(name, raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Rejected(422, "invalid", f"{name} is not UTF-8") from exc


def _spool_failed(exc: OSError) -> Rejected:
    """A spool write error as the 503 it is (the server's disk, not the client's body)."""
    code = "storage_full" if exc.errno in _DISK_FULL else "storage_unavailable"
    return Rejected(
        503,
        code,
        f"the upload could not be stored ({errno.errorcode.get(exc.errno or 0, 'error')}); retry later",
        {"Retry-After": str(SPOOL_RETRY_AFTER_S)},
    )


@dataclass
class ReceivedUpload:
    """The spooled ``audio`` part (path, size, SHA-256, client file name) and the text fields."""

    path: Path | None = None
    size: int = 0
    sha256: str = ""
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        """Delete the temporary file."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


async def receive_upload(
    content_type: str | None,
    content_length: str | None,
    body: AsyncIterator[bytes],
    *,
    max_bytes: int,
    spool_dir: Path,
) -> ReceivedUpload:
    """Read a multipart body into a :class:`ReceivedUpload`.

    Raises :class:`Rejected`: 413 ``too_large`` when ``Content-Length`` or the bytes received exceed
    ``max_bytes``; 415 ``not_multipart`` for another content type; 422 ``missing_audio`` when there
    is no ``audio`` part; 422 ``bad_multipart`` on a malformed body; 422 ``invalid`` for a text field
    or file name that is not UTF-8 or holds control characters (:func:`check_text`); 422
    ``field_too_long`` past 1,024 bytes of a text field; 503 ``storage_full`` (``Retry-After``) when
    the spool directory is out of space (``ENOSPC``/``EDQUOT``/``EFBIG``), 503 ``storage_unavailable``
    for another OS error of the spool. No temporary file is left behind on any error.
    """
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise Rejected(415, "not_multipart", "send the audio as multipart/form-data with a field named 'audio'")
    if content_length and content_length.isdigit() and int(content_length) > max_bytes:
        raise Rejected(413, "too_large", f"body of {int(content_length)} bytes exceeds the {max_bytes}-byte limit")

    upload = ReceivedUpload()
    state: dict[str, object] = {"name": None, "filename": None, "header_field": b"", "header_value": b""}
    headers: dict[bytes, bytes] = {}
    text: list[bytes] = []
    digest = hashlib.sha256()
    try:
        spool_dir.mkdir(parents=True, exist_ok=True)
        sink = tempfile.NamedTemporaryFile(dir=spool_dir, prefix="upload-", suffix=".bin", delete=False)
    except OSError as exc:
        raise _spool_failed(exc) from exc
    upload.path = Path(sink.name)
    errors: list[Rejected] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_field"] = bytes(state["header_field"]) + data[start:end]  # type: ignore[arg-type, call-overload]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header_value"] = bytes(state["header_value"]) + data[start:end]  # type: ignore[arg-type, call-overload]

    def on_header_end() -> None:
        headers[bytes(state["header_field"]).lower()] = bytes(state["header_value"])  # type: ignore[arg-type, call-overload]
        state["header_field"], state["header_value"] = b"", b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        state["name"] = options.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        state["filename"] = None
        try:
            state["filename"] = _decode("the file name", raw_filename) if raw_filename is not None else None
        except Rejected as rej:
            errors.append(rej)
        text.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if state["name"] == "audio":
            sink.write(chunk)
            digest.update(chunk)
            upload.size += len(chunk)
        elif sum(map(len, text)) + len(chunk) <= _MAX_TEXT_FIELD:
            text.append(chunk)
        elif not errors:
            errors.append(Rejected(422, "field_too_long", f"form field '{state['name']}' is too long"))

    def on_part_end() -> None:
        if state["name"] == "audio":
            upload.filename = state["filename"]  # type: ignore[assignment]
            upload.fields["__audio_seen__"] = "1"
        elif state["name"]:
            name = str(state["name"])
            try:
                upload.fields[name] = _decode(f"form field {check_text('a form field name', name)!r}", b"".join(text))
            except Rejected as rej:
                errors.append(rej)
        headers.clear()

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    received = 0
    try:
        with sink:
            async for chunk in body:
                received += len(chunk)
                if received > max_bytes:
                    raise Rejected(413, "too_large", f"body exceeds the {max_bytes}-byte limit")
                try:
                    parser.write(chunk)
                except OSError:
                    raise  # the spool file's write (a callback), not the body: 503 below
                except Exception as exc:  # python-multipart raises its own parse errors
                    raise Rejected(422, "bad_multipart", f"malformed multipart body: {exc}") from exc
                if errors:
                    raise errors[0]
            parser.finalize()
            if errors:
                raise errors[0]
    except OSError as exc:  # ENOSPC while writing or flushing the spool file
        upload.discard()
        raise _spool_failed(exc) from exc
    except BaseException:
        upload.discard()
        raise
    if "__audio_seen__" not in upload.fields:
        upload.discard()
        raise Rejected(422, "missing_audio", "no form field named 'audio' in the body")
    del upload.fields["__audio_seen__"]
    upload.sha256 = digest.hexdigest()
    return upload
