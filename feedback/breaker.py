"""A circuit breaker per provider (closed → open → half-open), after Nygard, *Release It!* (2007/2018).

* **closed**: calls go through; ``failure_threshold`` consecutive failures open the circuit.
* **open**: calls are refused at once (the chain records ``skipped_circuit_open`` and fails over) until
  ``reset_timeout_s`` has passed since the circuit opened.
* **half-open**: one trial call is let through (concurrent callers are still refused); its success closes the
  circuit, its failure opens it again for another ``reset_timeout_s``.

A small class rather than ``pybreaker``/``purgatory``: the chain needs to ask for permission and report the
outcome separately (the outcome is known only after tenacity's retries and the response parsing), the clock is
injectable so tests drive the reset timeout without sleeping, and state changes feed a Prometheus gauge.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(StrEnum):
    """Circuit states; the values are the labels exported to Prometheus and logs."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Thread-safe breaker of one provider.

    Use :meth:`allow` before a call (False: do not call) and then exactly one of :meth:`record_success` or
    :meth:`record_failure`. ``clock`` returns seconds (monotonic); ``on_change(name, state)`` is called after
    every state change, outside the lock.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        reset_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_timeout_s <= 0:
            raise ValueError("reset_timeout_s must be positive")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The current state (an open circuit whose timeout has passed reads as half-open)."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_timeout_s:
                return BreakerState.HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success (reset when the circuit closes)."""
        with self._lock:
            return self._failures

    def allow(self) -> bool:
        """Whether a call may be made now. In half-open state only one caller gets True until it reports back."""
        changed: BreakerState | None = None
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.OPEN:
                if self._clock() - self._opened_at < self.reset_timeout_s:
                    return False
                self._state = changed = BreakerState.HALF_OPEN
            if self._trial_in_flight:
                allowed = False
            else:
                self._trial_in_flight = allowed = True
        self._notify(changed)
        return allowed

    def record_success(self) -> None:
        """A call succeeded: the circuit closes and the failure count resets."""
        with self._lock:
            changed = self._state is not BreakerState.CLOSED
            self._state = BreakerState.CLOSED
            self._failures = 0
            self._trial_in_flight = False
        self._notify(BreakerState.CLOSED if changed else None)

    def record_failure(self) -> None:
        """A call failed: counts toward the threshold (closed) or reopens the circuit (half-open)."""
        changed: BreakerState | None = None
        with self._lock:
            self._failures += 1
            self._trial_in_flight = False
            if self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
            ):
                self._state = changed = BreakerState.OPEN
                self._opened_at = self._clock()
        self._notify(changed)

    def _notify(self, state: BreakerState | None) -> None:
        if state is not None and self._on_change is not None:
            self._on_change(self.name, state)
