"""HTTP content coding of progress responses: gzip for clients that accept it (RFC 9110, section 12.5.3).

Used by the progress route and its fast path alike, so both answer a request with the same bytes and headers:
the body is gzip-compressed when the request's ``Accept-Encoding`` accepts ``gzip`` (a progress body is never
short: the summary alone is ~1.9 KB, so there is no minimum size as in Starlette's ``GZipMiddleware``); every
progress response carries
``Vary: Accept-Encoding`` (a shared cache must not serve one coding to a client asking for the other). Compression
is deterministic (no timestamp in the gzip header), so a body remembered by the progress cache is the body a fresh
compression gives.
"""

from __future__ import annotations

import gzip

__all__ = [
    "GZIP_LEVEL",
    "GZIP_LEVEL_UNREMEMBERED",
    "accepts_gzip",
    "gzip_body",
    "progress_header_map",
    "progress_headers",
]

GZIP_LEVEL = 6
"""zlib level of bodies the progress cache remembers (compressed once per learner and range; ~2 ms for 135 KB
here, ~5-8x smaller)."""
GZIP_LEVEL_UNREMEMBERED = 1
"""zlib level of bodies compressed for one request only (``to`` defaulted to now, so the body is never asked for
again): ~0.3 ms for 135 KB here."""

_MEMO_SIZE, _MEMO_KEY_MAX = 256, 256
_accepts: dict[str, bool] = {}


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header value (several headers joined with ``,``; None: no header) accepts
    gzip: a ``gzip`` or ``x-gzip`` coding with a q-value above 0, or ``*`` above 0 when gzip is not named. Codings
    are case-insensitive; a malformed q-value counts as 0. The answers for short values are remembered."""
    if not accept_encoding:
        return False
    known = _accepts.get(accept_encoding)
    if known is not None:
        return known
    named: float | None = None
    wildcard: float | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if coding in ("gzip", "x-gzip"):
            named = max(named if named is not None else 0.0, quality)
        elif coding == "*":
            wildcard = quality
    accepted = (named > 0) if named is not None else (wildcard is not None and wildcard > 0)
    if len(accept_encoding) <= _MEMO_KEY_MAX:
        if len(_accepts) >= _MEMO_SIZE:
            _accepts.clear()
        _accepts[accept_encoding] = accepted
    return accepted


def gzip_body(body: bytes, level: int = GZIP_LEVEL) -> bytes:
    """``body`` as one gzip member (RFC 1952) at zlib ``level`` (0-9), with mtime 0: the same input gives the same
    bytes."""
    return gzip.compress(body, compresslevel=level, mtime=0)


_VARY = (b"vary", b"Accept-Encoding")
_GZIP = (b"content-encoding", b"gzip")
_JSON = (b"content-type", b"application/json")


def progress_headers(body: bytes, gzipped: bool) -> list[tuple[bytes, bytes]]:
    """The headers of a 200 progress response with ``body`` (lower-case names, in the order Starlette's
    ``Response(body, media_type="application/json", headers=...)`` sends them for :func:`progress_header_map`)."""
    length = (b"content-length", str(len(body)).encode())
    return [_VARY, _GZIP, length, _JSON] if gzipped else [_VARY, length, _JSON]


def progress_header_map(gzipped: bool) -> dict[str, str]:
    """The headers a progress route passes to Starlette's ``Response`` besides the body and media type."""
    return {"vary": "Accept-Encoding", "content-encoding": "gzip"} if gzipped else {"vary": "Accept-Encoding"}
