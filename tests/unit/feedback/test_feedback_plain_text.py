"""Feedback text is plain text of bounded length; provider errors are masked before they go on events."""

from __future__ import annotations

import pytest

from feedback.chain import ProviderChain
from feedback.plain_text import plain_text
from feedback.providers import FeedbackRequest, ProviderResult
from feedback.settings import FeedbackSettings
from flows.metrics import compute_metrics
from runtime.redaction import redact_secrets
from schemas.events import FeedbackPoint, Word

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("## Good **pace**", "Good pace"),
        ("See [the guide](https://evil.example/a?b=c) today", "See the guide today"),
        ("![tracker](http://img.example/p.png)Keep going", "Keep going"),
        ("<script>alert(1)</script> fine <b>bold</b>", "alert(1) fine bold"),
        ("&lt;iframe src=x&gt; encoded", "encoded"),
        ("mail me@evil.example or visit www.evil.example now", "mail or visit now"),
        ("line\x00one\r\nline\ttwo\u202e", "line one line two"),
        ("> quoted\n- item\n1. first", "quoted item first"),
    ],
)
def test_plain_text_drops_markup_links_and_control_characters(text: str, expected: str) -> None:
    assert plain_text(text, 500) == expected


def test_plain_text_is_cut_at_a_word_boundary() -> None:
    out = plain_text("word " * 100, 42)
    assert len(out) <= 42 and out.endswith("…") and "wor…" not in out
    with pytest.raises(ValueError):
        plain_text("x", 1)


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("Incorrect API key provided: sk-proj-abcdefgh12345678", "Incorrect API key provided: ***"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", "Authorization: Bearer ***"),
        ("token ghp_0123456789abcdefABCDEF", "token ***"),
        ("https://u:pw@llm.example/v1 failed", "https://u:***@llm.example/v1 failed"),
    ],
)
def test_redact_secrets_masks_api_keys_and_tokens(secret: str, shown: str) -> None:
    assert redact_secrets(secret) == shown


class _Leaky:
    name, model = "openai", "gpt-test"

    def generate(self, request: FeedbackRequest) -> ProviderResult:
        raise RuntimeError("401: Incorrect API key provided: sk-live-0123456789abcdef")


class _Marked:
    name, model = "rules", None

    def generate(self, request: FeedbackRequest) -> ProviderResult:
        point = FeedbackPoint(kind="work_on", metric="speech_rate_wpm", value=1.0, message="**Slow** [down](http://x)")
        return ProviderResult("rules", None, "<h1>Hi</h1> " + "very " * 400, (point,))


def test_chain_masks_provider_errors_and_returns_plain_bounded_text() -> None:
    words = [Word(word=" hello", start=0.0, end=0.4, probability=0.9), Word(word=" there", start=0.5, end=0.9,
             probability=0.9)]  # fmt: skip
    request = FeedbackRequest(transcript="hello there", metrics=compute_metrics(words), level="B1")
    chain = ProviderChain([_Leaky(), _Marked()], FeedbackSettings(retry_attempts=1, max_feedback_chars=200))
    outcome = chain.generate(request)
    error = outcome.attempts[0].error or ""
    assert "sk-live" not in error and "***" in error and error.startswith("RuntimeError")
    assert outcome.result.text.startswith("Hi very") and len(outcome.result.text) <= 200
    assert outcome.result.points[0].message == "Slow down"
    rules_only = chain.generate(request, rules_only=True)
    assert [a.provider for a in rules_only.attempts] == ["rules"]
