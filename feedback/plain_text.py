"""Feedback text as plain text of bounded length: what a learner's app may show without rendering anything.

An LLM's answer can carry markup (Markdown, HTML), links and, when a transcript tries to steer the model,
text meant for someone else. :func:`plain_text` keeps the words and drops the rest, so the app never renders a
link, an image or a tag the platform did not write.
"""

from __future__ import annotations

import html
import re
import unicodedata

__all__ = ["plain_text"]

_TAG = re.compile(r"<[^<>]{0,2000}>")
_IMAGE = re.compile(r"!\[([^\]]{0,500})\]\([^)]{0,2000}\)")
_LINK = re.compile(r"\[([^\]]{0,500})\]\([^)]{0,2000}\)")
_URL = re.compile(r"(?i)\b(?:[a-z][a-z0-9+.\-]*://|www\.)\S+|\b[\w.+-]+@[\w-]+\.[\w.]+\b")
_MARKUP = re.compile(r"(?m)^\s{0,3}(?:#{1,6}\s+|>\s?|[-*+]\s+|\d+[.)]\s+)|[*_`~|]{1,3}")


def plain_text(text: str, max_chars: int) -> str:
    """``text`` without markup, links or control characters, whitespace collapsed, at most ``max_chars``
    characters (cut at a word boundary, ``…`` appended). HTML entities are decoded first so that an encoded tag
    is removed too; Markdown links keep their label, images and bare URLs or e-mail addresses are dropped
    (CommonMark's link and image syntax: https://spec.commonmark.org/0.31.2/#links). Raises ``ValueError`` when
    ``max_chars`` < 2."""
    if max_chars < 2:
        raise ValueError("max_chars must be at least 2")
    text = html.unescape(text)
    text = "".join(" " if unicodedata.category(ch)[0] == "C" and ch != "\n" else ch for ch in text)
    text = _IMAGE.sub(" ", text)
    text = _LINK.sub(r"\1", text)
    text = _TAG.sub(" ", text)
    text = _URL.sub(" ", text)
    text = _MARKUP.sub("", text)
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip(" ,;:") + "…"
