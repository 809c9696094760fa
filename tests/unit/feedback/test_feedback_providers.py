"""LLM providers and the failover chain against a real local HTTP server speaking the OpenAI protocol.

Scripted faults per request (tests/fake_openai.py): success; timeout → failover; 429 with Retry-After → retry then
success; 500s until the breaker opens → rules; malformed completion → failover. Each test asserts the provider
that answered, the points (values from our metrics, not the model's) and the attempts recorded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from feedback.breaker import BreakerState, CircuitBreaker
from feedback.chain import AllProvidersFailed, ProviderChain, build_chain
from feedback.llm import OpenAIChatProvider, parse_completion_text, parse_retry_after
from feedback.providers import FeedbackRequest, MalformedCompletion
from feedback.rules import RulesProvider
from feedback.settings import FeedbackSettings
from flows.metrics import compute_metrics
from schemas.events import Word
from tests.fake_openai import FakeOpenAI, Fault, Hang, Raw, Reply, feedback_json

pytestmark = pytest.mark.unit

TEXT = (
    "well I think um the best way to learn a language is to uh speak it every day with people who are patient "
    "and to read simple stories aloud so that the sounds become familiar"
)


def transcript(*, detected: bool = True) -> FeedbackRequest:
    """The request of :data:`TEXT`; ``detected``: a hesitation detector ran (heard nothing beyond the words)."""
    words, t = [], 0.0
    for token in TEXT.split():
        words.append(Word(word=f" {token}", start=round(t, 3), end=round(t + 0.3, 3), probability=0.9))
        t += 0.36
    metrics = compute_metrics(words, hesitations=[] if detected else None)
    return FeedbackRequest(transcript=TEXT, metrics=metrics, level="B1", language="en")


REQUEST = transcript()


class FakeClock:
    """Monotonic seconds that only move when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """Records the waits the chain asks for, and really waits (short) so the server sees real gaps."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        threading.Event().wait(min(seconds, 2.0))


def settings(**overrides: object) -> FeedbackSettings:
    base: dict[str, object] = {
        "retry_attempts": 3,
        "retry_initial_wait_s": 0.0,
        "retry_max_wait_s": 0.0,
        "request_timeout_s": 5.0,
        "breaker_failure_threshold": 5,
    }
    base.update(overrides)
    return FeedbackSettings(**base)  # type: ignore[arg-type]


def llm(server: FakeOpenAI, name: str, config: FeedbackSettings, model: str = "fake-gpt") -> OpenAIChatProvider:
    from feedback.settings import LLMEndpoint

    return OpenAIChatProvider(LLMEndpoint(name=name, base_url=server.base_url, model=model, api_key="test-key"), config)


@pytest.fixture
def primary() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def secondary() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def outcomes(attempts: tuple) -> list[tuple[str, str]]:
    return [(a.provider, a.outcome) for a in attempts]


# ------------------------------------------------------------------------------------------------- success


def test_success_uses_the_llm_and_fills_values_from_our_metrics(primary: FakeOpenAI) -> None:
    config = settings()
    chain = ProviderChain([llm(primary, "primary", config), RulesProvider(config)], config)
    outcome = chain.generate(REQUEST)

    result = outcome.result
    assert (result.provider, result.model) == ("primary", "fake-gpt")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (321, 87)
    assert result.text == "Nice work: your pace was easy to follow."
    rate = next(p for p in result.points if p.metric == "speech_rate_wpm")
    assert rate.kind == "went_well" and rate.value == round(REQUEST.metrics.speech_rate_wpm or 0, 3)
    fillers = next(p for p in result.points if p.metric == "filled_pause_count")
    assert fillers.value == float(REQUEST.metrics.filled_pause_count) == 2.0
    assert outcomes(outcome.attempts) == [("primary", "ok")]

    [sent] = primary.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer test-key"
    assert sent.body["model"] == "fake-gpt" and sent.body["response_format"] == {"type": "json_object"}
    prompt = sent.body["messages"][1]["content"]
    assert TEXT in prompt and "Learner's CEFR level: B1" in prompt
    assert json.dumps(round(REQUEST.metrics.speech_rate_wpm or 0, 3)) in prompt
    assert "130-175 words per minute" in prompt


def test_the_openai_client_does_not_retry_by_itself(primary: FakeOpenAI) -> None:
    primary.enqueue(Fault(500))
    config = settings(retry_attempts=1)
    outcome = ProviderChain([llm(primary, "primary", config), RulesProvider(config)], config).generate(REQUEST)
    assert outcome.result.provider == "rules"
    assert len(primary.requests) == 1  # max_retries=0: only tenacity retries, and it was told 1 try
    assert outcomes(outcome.attempts) == [("primary", "error"), ("rules", "ok")]
    assert "HTTP 500" in (outcome.attempts[0].error or "")


# --------------------------------------------------------------------------------------------- timeout


def test_timeout_fails_over_to_the_secondary(primary: FakeOpenAI, secondary: FakeOpenAI) -> None:
    primary.enqueue(Hang(10))
    config = settings(request_timeout_s=0.5, retry_attempts=1)
    chain = ProviderChain(
        [llm(primary, "primary", config), llm(secondary, "secondary", config, model="backup-model"),
         RulesProvider(config)], config,
    )  # fmt: skip
    outcome = chain.generate(REQUEST)
    assert (outcome.result.provider, outcome.result.model) == ("secondary", "backup-model")
    assert outcomes(outcome.attempts) == [("primary", "error"), ("secondary", "ok")]
    assert "timeout" in (outcome.attempts[0].error or "")
    assert len(primary.requests) == 1 and len(secondary.requests) == 1


def test_a_timeout_is_retried_before_failing_over(primary: FakeOpenAI) -> None:
    primary.enqueue(Hang(10))
    config = settings(request_timeout_s=0.5, retry_attempts=2)
    outcome = ProviderChain([llm(primary, "primary", config), RulesProvider(config)], config).generate(REQUEST)
    assert outcome.result.provider == "primary"
    assert outcomes(outcome.attempts) == [("primary", "error"), ("primary", "ok")]


# ---------------------------------------------------------------------------------------- 429 Retry-After


def test_429_with_retry_after_is_retried_after_that_wait(primary: FakeOpenAI) -> None:
    primary.enqueue(Fault(429, headers={"Retry-After": "1"}, message="Rate limit reached"))
    config = settings(retry_initial_wait_s=5.0, retry_max_wait_s=5.0)  # backoff would say 5 s: Retry-After wins
    sleeps = Sleeps()
    chain = ProviderChain([llm(primary, "primary", config), RulesProvider(config)], config, sleep=sleeps)
    outcome = chain.generate(REQUEST)
    assert outcome.result.provider == "primary"
    assert outcomes(outcome.attempts) == [("primary", "error"), ("primary", "ok")]
    assert "HTTP 429" in (outcome.attempts[0].error or "")
    assert sleeps.waits == [1.0]
    assert len(primary.requests) == 2


def test_retry_after_longer_than_allowed_fails_over_at_once(primary: FakeOpenAI) -> None:
    primary.enqueue(Fault(429, headers={"retry-after-ms": "60000"}))
    config = settings(max_retry_after_s=10)
    sleeps = Sleeps()
    outcome = ProviderChain([llm(primary, "primary", config), RulesProvider(config)], config, sleep=sleeps).generate(
        REQUEST
    )
    assert outcome.result.provider == "rules"
    assert sleeps.waits == [] and len(primary.requests) == 1


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": format_datetime(now + timedelta(seconds=7), usegmt=True)}, now) == 7.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


# ----------------------------------------------------------------------------------- 500s → breaker → rules


def test_500s_open_the_breaker_then_rules_answer_without_calling(primary: FakeOpenAI) -> None:
    primary.default = Fault(500)
    clock = FakeClock()
    config = settings(retry_attempts=2, breaker_failure_threshold=3, breaker_reset_timeout_s=30)
    chain = ProviderChain([llm(primary, "primary", config), RulesProvider(config)], config, clock=clock)

    first = chain.generate(REQUEST)  # two tries, two failures
    assert first.result.provider == "rules"
    assert outcomes(first.attempts) == [("primary", "error"), ("primary", "error"), ("rules", "ok")]
    assert chain.breakers["primary"].state is BreakerState.CLOSED

    second = chain.generate(REQUEST)  # third failure opens the circuit; the retry is refused
    assert outcomes(second.attempts) == [("primary", "error"), ("primary", "skipped_circuit_open"), ("rules", "ok")]
    assert chain.breakers["primary"].state is BreakerState.OPEN
    assert len(primary.requests) == 3

    third = chain.generate(REQUEST)  # open: no request at all
    assert outcomes(third.attempts) == [("primary", "skipped_circuit_open"), ("rules", "ok")]
    assert third.result.provider == "rules" and third.result.points
    assert len(primary.requests) == 3

    clock.now += 31  # reset timeout passed: one trial call, which succeeds and closes the circuit
    primary.default = Reply()
    assert chain.breakers["primary"].state is BreakerState.HALF_OPEN
    fourth = chain.generate(REQUEST)
    assert outcomes(fourth.attempts) == [("primary", "ok")]
    assert chain.breakers["primary"].state is BreakerState.CLOSED


def test_failed_half_open_trial_reopens() -> None:
    clock = FakeClock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(
        "p", failure_threshold=2, reset_timeout_s=10, clock=clock, on_change=lambda _n, s: changes.append(s)
    )
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 10
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one trial at a time
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 10
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.consecutive_failures == 0
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN, BreakerState.HALF_OPEN,
                       BreakerState.CLOSED]  # fmt: skip


# ------------------------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    "step",
    [
        Reply(content="Great job! You spoke clearly."),  # not JSON
        Reply(content=feedback_json(points=[{"kind": "work_on", "metric": "charisma", "message": "Smile."}])),
        Reply(content=json.dumps({"summary": "ok", "points": []})),  # no points
        Reply(content=feedback_json(), finish_reason="length"),  # truncated
        Raw(b"<html>502 bad gateway</html>", status=200, content_type="text/html"),
    ],
    ids=["prose", "unknown-metric", "no-points", "truncated", "not-a-completion"],
)
def test_malformed_completion_fails_over_without_retry(
    primary: FakeOpenAI, secondary: FakeOpenAI, step: Reply | Raw
) -> None:
    primary.enqueue(step)
    config = settings()
    chain = ProviderChain(
        [llm(primary, "primary", config), llm(secondary, "secondary", config), RulesProvider(config)], config
    )
    outcome = chain.generate(REQUEST)
    assert outcome.result.provider == "secondary"
    assert outcomes(outcome.attempts) == [("primary", "error"), ("secondary", "ok")]
    assert len(primary.requests) == 1


def test_client_errors_are_not_retried(primary: FakeOpenAI) -> None:
    primary.enqueue(Fault(401, message="Incorrect API key provided"))
    config = settings()
    outcome = ProviderChain([llm(primary, "primary", config), RulesProvider(config)], config).generate(REQUEST)
    assert outcomes(outcome.attempts) == [("primary", "error"), ("rules", "ok")]
    assert "HTTP 401" in (outcome.attempts[0].error or "") and len(primary.requests) == 1


def test_fenced_json_is_accepted_and_values_come_from_metrics() -> None:
    content = "```json\n" + feedback_json(points=[{"kind": "work_on", "metric": "mattr", "message": "Vary."}]) + "\n```"
    text, points = parse_completion_text(content, REQUEST)
    assert text and points[0].metric == "mattr" and points[0].value is None  # < 50 tokens: MATTR undefined
    with pytest.raises(MalformedCompletion):
        parse_completion_text("", REQUEST)


def test_chain_without_rules_can_fail_entirely(primary: FakeOpenAI) -> None:
    primary.default = Fault(503)
    config = settings(retry_attempts=1)
    with pytest.raises(AllProvidersFailed) as failed:
        ProviderChain([llm(primary, "primary", config)], config).generate(REQUEST)
    assert [a.outcome for a in failed.value.attempts] == ["error"]


# ---------------------------------------------------------------------------------------- concurrency cap


def test_concurrent_llm_calls_are_capped_by_the_semaphore(primary: FakeOpenAI) -> None:
    primary.default = Reply(delay_s=0.3)
    config = settings(llm_max_concurrency=2)
    chain = ProviderChain([llm(primary, "primary", config), RulesProvider(config)], config)
    threads = [threading.Thread(target=chain.generate, args=(REQUEST,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(primary.requests) == 6
    assert primary.max_in_flight == 2


def test_build_chain_from_settings(primary: FakeOpenAI, secondary: FakeOpenAI) -> None:
    config = settings(
        providers="primary,secondary",
        primary_base_url=primary.base_url,
        primary_name="openai",
        secondary_base_url=secondary.base_url,
        secondary_name="local-vllm",
        secondary_model="llama",
    )
    primary.enqueue(Fault(400))
    chain = build_chain(config)
    try:
        assert [p.name for p in chain.providers] == ["openai", "local-vllm", "rules"]
        assert set(chain.breakers) == {"openai", "local-vllm"}
        outcome = chain.generate(REQUEST)
    finally:
        chain.close()
    assert (outcome.result.provider, outcome.result.model) == ("local-vllm", "llama")
    assert secondary.requests[0].body["model"] == "llama"


def test_praise_of_a_low_filler_count_is_dropped_from_an_llm_answer() -> None:
    """The recogniser omits most fillers: a model's went_well point about them is not kept (its work_on point is)."""
    answer = {
        "summary": "Good answer.",
        "points": [
            {"kind": "went_well", "metric": "filled_pause_count", "message": "You used no fillers at all!"},
            {"kind": "work_on", "metric": "filled_pause_count", "message": "Fewer fillers, please."},
            {"kind": "went_well", "metric": "speech_rate_wpm", "message": "Nice pace."},
        ],
    }
    _, points = parse_completion_text(json.dumps(answer), REQUEST)
    assert [(p.kind, p.metric) for p in points] == [("work_on", "filled_pause_count"), ("went_well", "speech_rate_wpm")]


def test_without_hesitation_detection_the_llm_gets_no_filler_count_and_its_filler_points_are_dropped() -> None:
    from feedback.providers import metrics_for_prompt

    unheard = transcript(detected=False)
    assert unheard.metrics.filled_pause_count == 2  # the recogniser wrote "um" and "uh": still not a known count
    assert metrics_for_prompt(unheard.metrics)["filled_pause_count"] is None
    assert metrics_for_prompt(REQUEST.metrics)["filled_pause_count"] == 2
    answer = {
        "summary": "Good answer.",
        "points": [
            {"kind": "work_on", "metric": "filled_pause_count", "message": "Fewer fillers, please."},
            {"kind": "went_well", "metric": "speech_rate_wpm", "message": "Nice pace."},
        ],
    }
    _, points = parse_completion_text(json.dumps(answer), unheard)
    assert [(p.kind, p.metric) for p in points] == [("went_well", "speech_rate_wpm")]
