"""The failover chain: primary LLM → secondary LLM → rules, with retries, circuit breakers and a concurrency cap.

For each provider in order:

1. its :class:`~feedback.breaker.CircuitBreaker` is asked first; an open circuit is recorded as
   ``skipped_circuit_open`` and the chain moves on without a request;
2. the call runs under a semaphore (``llm_max_concurrency`` concurrent LLM requests at most, across threads);
3. a retryable error (timeout, connection error, 429, 5xx) is retried with tenacity up to ``retry_attempts``
   tries: the wait is the server's ``Retry-After`` when it sent one, else exponential backoff with jitter
   (``retry_initial_wait_s`` doubling, capped at ``retry_max_wait_s``). A ``Retry-After`` longer than
   ``max_retry_after_s`` is not waited for: the chain fails over at once;
4. any other error (malformed completion, 4xx, a bug) fails over at once.

Every try is recorded as a :class:`schemas.events.ProviderAttempt` (provider, outcome, error, latency), so the
event shows the failover taken; an error is masked first (:func:`runtime.redaction.redact_secrets`: a provider may
quote the API key it refused) and cut to 300 characters. The feedback the chain returns is plain text of bounded
length (:func:`feedback.plain_text.plain_text`: no markup, no links), whichever provider wrote it.

The rules provider has no breaker, no semaphore and no retries: it is the
deterministic last resort that makes the chain always answer.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)
from tenacity.stop import stop_base

from feedback import telemetry
from feedback.breaker import BreakerState, CircuitBreaker
from feedback.llm import OpenAIChatProvider
from feedback.plain_text import plain_text
from feedback.providers import (
    RULES_PROVIDER,
    CircuitOpen,
    FeedbackProvider,
    FeedbackRequest,
    ProviderError,
    ProviderResult,
)
from feedback.rules import RulesProvider
from feedback.settings import FeedbackSettings
from runtime.redaction import redact_secrets
from schemas.events import FeedbackPoint, ProviderAttempt

__all__ = ["AllProvidersFailed", "ChainOutcome", "ProviderChain", "build_chain"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChainOutcome:
    """The feedback the chain settled on, every try that led there, and the chain's wall time (ms)."""

    result: ProviderResult
    attempts: tuple[ProviderAttempt, ...]
    latency_ms: float


class AllProvidersFailed(RuntimeError):
    """No provider of the chain gave feedback (only possible when the rules provider is not in it or fails)."""

    def __init__(self, attempts: Sequence[ProviderAttempt]):
        summary = "; ".join(f"{a.provider}: {a.outcome} {a.error or ''}".strip() for a in attempts)
        super().__init__(f"every feedback provider failed ({summary})")
        self.attempts = tuple(attempts)


class ProviderChain:
    """Tries ``providers`` in order (see the module docstring). Thread-safe; share one per process.

    ``sleep`` and ``clock`` (monotonic seconds) are injectable for tests; ``breakers`` maps provider name to
    its breaker (the rules provider has none).
    """

    def __init__(
        self,
        providers: Sequence[FeedbackProvider],
        settings: FeedbackSettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not providers:
            raise ValueError("a provider chain needs at least one provider")
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique in a chain: {names}")
        self.settings = settings or FeedbackSettings()
        self.providers = tuple(providers)
        self._sleep = sleep
        self._clock = clock
        self._semaphore = threading.BoundedSemaphore(self.settings.llm_max_concurrency)
        self.breakers: dict[str, CircuitBreaker] = {
            p.name: CircuitBreaker(
                p.name,
                failure_threshold=self.settings.breaker_failure_threshold,
                reset_timeout_s=self.settings.breaker_reset_timeout_s,
                clock=clock,
                on_change=_breaker_changed,
            )
            for p in providers
            if p.name != RULES_PROVIDER
        }
        for name in self.breakers:
            telemetry.BREAKER_STATE.labels(name).set(0)

    def generate(self, request: FeedbackRequest, *, rules_only: bool = False) -> ChainOutcome:
        """Feedback from the first provider that succeeds (``rules_only``: the rules provider alone, e.g. when the
        learner's LLM budget is spent), as plain text. Raises :class:`AllProvidersFailed` when none succeeds."""
        started = self._clock()
        attempts: list[ProviderAttempt] = []
        for provider in self.providers:
            if rules_only and provider.name != RULES_PROVIDER:
                continue
            result = self._try_provider(provider, request, attempts)
            if result is not None:
                latency_ms = round(max(0.0, (self._clock() - started) * 1000), 3)
                telemetry.FEEDBACK_LATENCY.labels(result.provider).observe(latency_ms / 1000)
                return ChainOutcome(self._plain(result), tuple(attempts), latency_ms)
        raise AllProvidersFailed(attempts)

    @property
    def asks_llm(self) -> bool:
        """Whether any provider of the chain is an LLM (not the rules provider)."""
        return any(p.name != RULES_PROVIDER for p in self.providers)

    def _plain(self, result: ProviderResult) -> ProviderResult:
        points = tuple(
            FeedbackPoint(
                kind=p.kind,
                metric=p.metric,
                value=p.value,
                message=plain_text(p.message, self.settings.max_point_chars),
            )
            for p in result.points
        )
        return replace(result, text=plain_text(result.text, self.settings.max_feedback_chars), points=points)

    # ------------------------------------------------------------------------------------------- internals
    def _try_provider(
        self, provider: FeedbackProvider, request: FeedbackRequest, attempts: list[ProviderAttempt]
    ) -> ProviderResult | None:
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.retry_attempts)
            | _StopOnLongRetryAfter(self.settings.max_retry_after_s),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, ProviderError) and exc.retryable),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._call_once(provider, request, attempts)
        except CircuitOpen:
            log.info("feedback provider %s skipped: circuit open", provider.name)
        except ProviderError as exc:
            log.warning("feedback provider %s failed, failing over: %s", provider.name, exc)
        except Exception:  # noqa: BLE001 - a provider bug must not take the worker down: fail over
            log.exception("feedback provider %s raised unexpectedly, failing over", provider.name)
        return None

    def _call_once(
        self, provider: FeedbackProvider, request: FeedbackRequest, attempts: list[ProviderAttempt]
    ) -> ProviderResult:
        breaker = self.breakers.get(provider.name)
        if breaker is not None and not breaker.allow():
            attempts.append(ProviderAttempt(provider=provider.name, outcome="skipped_circuit_open", latency_ms=0.0))
            telemetry.PROVIDER_ATTEMPTS.labels(provider.name, "skipped_circuit_open").inc()
            raise CircuitOpen(f"circuit of {provider.name} is open")
        limit: AbstractContextManager[object] = self._semaphore if breaker is not None else nullcontext()
        started = self._clock()
        try:
            with limit:
                result = provider.generate(request)
        except BaseException as exc:
            latency_ms = round(max(0.0, (self._clock() - started) * 1000), 3)
            if breaker is not None:
                breaker.record_failure()
            error = redact_secrets(" ".join(f"{type(exc).__name__}: {exc}".split()))[:300]
            attempts.append(
                ProviderAttempt(provider=provider.name, outcome="error", error=error, latency_ms=latency_ms)
            )
            telemetry.PROVIDER_ATTEMPTS.labels(provider.name, "error").inc()
            raise
        latency_ms = round(max(0.0, (self._clock() - started) * 1000), 3)
        if breaker is not None:
            breaker.record_success()
        attempts.append(ProviderAttempt(provider=provider.name, outcome="ok", latency_ms=latency_ms))
        telemetry.PROVIDER_ATTEMPTS.labels(provider.name, "ok").inc()
        return result

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderError) and exc.retry_after_s is not None:
            return exc.retry_after_s
        # Exponential backoff (doubling from the initial wait) plus up to one initial wait of random jitter, capped.
        base = self.settings.retry_initial_wait_s * 2 ** (state.attempt_number - 1)
        return min(base + random.uniform(0, self.settings.retry_initial_wait_s), self.settings.retry_max_wait_s)

    def close(self) -> None:
        """Close the providers' HTTP clients."""
        for provider in self.providers:
            close = getattr(provider, "close", None)
            if callable(close):
                close()


class _StopOnLongRetryAfter(stop_base):
    """Stop retrying when the server asks to wait longer than ``max_s`` seconds (fail over instead)."""

    def __init__(self, max_s: float) -> None:
        self.max_s = max_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        return isinstance(exc, ProviderError) and exc.retry_after_s is not None and exc.retry_after_s > self.max_s


def _breaker_changed(name: str, state: BreakerState) -> None:
    telemetry.BREAKER_STATE.labels(name).set(telemetry.BREAKER_STATE_VALUES[state])
    log.warning("circuit breaker of feedback provider %s is now %s", name, state.value)


def build_chain(settings: FeedbackSettings | None = None) -> ProviderChain:
    """The chain ``COACH_FEEDBACK_PROVIDERS`` describes (rules always last)."""
    settings = settings or FeedbackSettings()
    providers: list[FeedbackProvider] = []
    for slot in settings.providers:
        if slot == "rules":
            providers.append(RulesProvider(settings))
        else:
            providers.append(OpenAIChatProvider(settings.endpoint(slot), settings))
    return ProviderChain(providers, settings)
